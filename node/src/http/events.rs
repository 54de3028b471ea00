//! `POST /v1/events` (one event, a JSON array, or an NDJSON stream),
//! `GET /v1/events` (paged), `GET /stats`, and the webhook aliases
//! `POST /webhook/ingest` (one event) and `POST /webhook/batch` (an array).
//!
//! A JSON document is validated whole before anything is written: one bad
//! event in an array is a 422 naming it (`[3].source`) and nothing is
//! applied. An NDJSON body is parsed line by line as it arrives, in chunks
//! of [`CHUNK`] events, so memory does not grow with the body: a bad line
//! ends the request with 400 (malformed JSON: line and byte offset) or 422
//! (a bad event: line and field), and the events before it are kept — the
//! error says how many — so a client resends from the line after. Either
//! way, what the reply counts as accepted is flushed to the event log
//! before the reply.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use futures::StreamExt;
use tokio::sync::oneshot;
use troupe_actors::ingest::{admit, Admitted};
use troupe_actors::ingestor::IngestorMsg;
use troupe_actors::store::{EventFilter, StoreError};
use troupe_actors::tree::INGESTOR;
use troupe_protocol::{now_ms, Event, EventIn, EventPage, IngestReply, IngestStats, Retention};

use super::json::{parse, read_body};
use super::openapi::{BodyErrors, OneOrMany, PageQuery, QueryErrors, Saturated, Unavailable};
use super::{
    ndjson_pages, offset_cursor, page_limit, store_work, wants_ndjson, ApiError, AppState,
};

/// Events handed to the ingestor at a time while an NDJSON body streams.
pub const CHUNK: usize = 2_048;
/// Largest JSON (not NDJSON) document: it is parsed whole.
const MAX_JSON_DOCUMENT: usize = 64 << 20;
/// How long the ingestor may take to answer.
const INGESTOR_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest page of `GET /v1/events`.
const MAX_PAGE: usize = 1_000;

/// A message sent to the ingestor, its answer still to come.
struct Pending<T>(oneshot::Receiver<T>);

/// Sends the ingestor a message without waiting for the answer.
fn send<T: Send + 'static>(
    state: &AppState,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> IngestorMsg,
) -> Result<Pending<T>, ApiError> {
    let ingestor = state
        .directory
        .get::<IngestorMsg>(INGESTOR)
        .ok_or_else(|| ApiError::unavailable("the ingestor is restarting"))?;
    let (port, answer) = oneshot::channel();
    ingestor
        .cast(build(port.into()))
        .map_err(|_| ApiError::unavailable("the ingestor is restarting"))?;
    Ok(Pending(answer))
}

impl<T> Pending<T> {
    async fn answer(self) -> Result<T, ApiError> {
        match tokio::time::timeout(INGESTOR_TIMEOUT, self.0).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(ApiError::unavailable("the ingestor did not answer")),
        }
    }
}

async fn ask<T: Send + 'static>(
    state: &AppState,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> IngestorMsg,
) -> Result<T, ApiError> {
    send(state, build)?.answer().await
}

/// A batch handed to the ingestor (none for an empty batch).
type Appending = Option<Pending<Result<IngestReply, StoreError>>>;

/// Hands a batch to the ingestor (appended all or nothing, not yet
/// flushed) without waiting, so that an NDJSON body's next chunk is
/// parsed while this one is written.
fn dispatch(state: &AppState, batch: Vec<Admitted>) -> Result<Appending, ApiError> {
    if batch.is_empty() {
        return Ok(None);
    }
    send(state, |reply| IngestorMsg::Append(batch, reply)).map(Some)
}

/// What the ingestor made of a batch.
async fn appended(appending: Appending) -> Result<IngestReply, ApiError> {
    match appending {
        None => Ok(IngestReply::default()),
        Some(pending) => pending
            .answer()
            .await?
            .map_err(|e| ApiError::unavailable(e.to_string())),
    }
}

/// Appends a batch (all or nothing); not yet flushed.
async fn append(state: &AppState, batch: Vec<Admitted>) -> Result<IngestReply, ApiError> {
    appended(dispatch(state, batch)?).await
}

/// Makes what was appended to the event log durable.
async fn flush(state: &AppState) -> Result<(), ApiError> {
    let log = std::sync::Arc::clone(&state.events);
    store_work(move || log.flush()).await
}

fn admitted(input: EventIn, now: u64, at: &str) -> Result<Admitted, ApiError> {
    admit(input, now).map_err(|(field, reason)| ApiError::invalid(format!("{at}{field}"), reason))
}

/// The document shapes an endpoint takes.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    One,
    Many,
    Either,
}

/// A place among the ingestion requests served at once (counted in
/// `troupe_ingest_requests_in_flight` while held).
struct Slot<'a>(#[allow(dead_code)] tokio::sync::SemaphorePermit<'a>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        metrics::gauge!("troupe_ingest_requests_in_flight").decrement(1.0);
    }
}

/// A place among the ingestion requests served at once, or 429.
fn slot(state: &AppState) -> Result<Slot<'_>, ApiError> {
    let permit = state.ingest_slots.try_acquire().map_err(|_| {
        metrics::counter!("troupe_ingest_saturated_total").increment(1);
        ApiError::saturated("too many ingestion requests at once; nothing was written, retry")
    })?;
    metrics::gauge!("troupe_ingest_requests_in_flight").increment(1.0);
    Ok(Slot(permit))
}

async fn document(
    state: &AppState,
    payload: web::Payload,
    shape: Shape,
) -> Result<HttpResponse, ApiError> {
    let _slot = slot(state)?;
    let body = read_body(payload, state.ingest_limit.min(MAX_JSON_DOCUMENT)).await?;
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let now = now_ms();
    let batch = match (is_array, shape) {
        (true, Shape::One) => {
            return Err(ApiError::invalid(
                "(body)",
                "one event here; send arrays to /webhook/batch",
            ))
        }
        (false, Shape::Many) => return Err(ApiError::invalid("(body)", "an array of events here")),
        (true, _) => {
            let inputs: Vec<EventIn> = parse(&body)?;
            if inputs.is_empty() {
                return Err(ApiError::invalid("(body)", "the batch is empty"));
            }
            inputs
                .into_iter()
                .enumerate()
                .map(|(i, input)| admitted(input, now, &format!("[{i}].")))
                .collect::<Result<Vec<_>, _>>()?
        }
        (false, _) => vec![admitted(parse(&body)?, now, "")?],
    };
    let reply = append(state, batch).await?;
    flush(state).await?;
    Ok(HttpResponse::Accepted().json(reply))
}

/// Parses and checks one NDJSON line (1-based `line`, starting at byte `at`).
fn ndjson_line(bytes: &[u8], line: u64, at: u64, now: u64) -> Result<Option<Admitted>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // Named only on error: formatting it for every line cost 1.4% of
    // ingestion.
    let place = || format!("line {line} (byte offset {at})");
    let input: EventIn = parse(bytes).map_err(|e| e.context(place()))?;
    admit(input, now)
        .map(Some)
        .map_err(|(field, reason)| ApiError::invalid(field, format!("{}: {reason}", place())))
}

async fn ndjson(state: &AppState, mut payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let _slot = slot(state)?;
    let limit = state.ingest_limit as u64;
    let mut reply = IngestReply::default();
    let mut pending: Vec<Admitted> = Vec::with_capacity(CHUNK);
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_at: u64 = 0;
    let mut line: u64 = 0;
    let mut received: u64 = 0;
    let mut failure: Option<ApiError> = None;
    let mut in_flight: Appending = None;
    'body: loop {
        let next = payload.next().await;
        let last = next.is_none();
        match next {
            Some(Ok(bytes)) => {
                received += bytes.len() as u64;
                if received > limit {
                    failure = Some(ApiError::too_large(format!("body over {limit} bytes")));
                    break;
                }
                carry.extend_from_slice(&bytes);
            }
            Some(Err(e)) => {
                failure = Some(ApiError::malformed(format!("could not read the body: {e}")));
                break;
            }
            None => {}
        }
        let now = now_ms();
        let mut start = 0;
        loop {
            let end = match memchr::memchr(b'\n', &carry[start..]) {
                Some(n) => start + n,
                None if last && start < carry.len() => carry.len(),
                None => break,
            };
            line += 1;
            match ndjson_line(&carry[start..end], line, carry_at + start as u64, now) {
                Ok(Some(event)) => pending.push(event),
                Ok(None) => {}
                Err(e) => {
                    failure = Some(e);
                    break 'body;
                }
            }
            start = (end + 1).min(carry.len());
            if pending.len() >= CHUNK {
                // One chunk in the ingestor while the next is parsed; in
                // order, so the log keeps the body's order.
                let previous = std::mem::replace(
                    &mut in_flight,
                    dispatch(state, std::mem::take(&mut pending))?,
                );
                reply.absorb(appended(previous).await?);
            }
        }
        carry.drain(..start);
        carry_at += start as u64;
        if last {
            break;
        }
    }
    // What came before a bad line is kept: the client resends after it.
    reply.absorb(appended(in_flight).await?);
    reply.absorb(append(state, pending).await?);
    flush(state).await?;
    match failure {
        Some(error) => Err(error.context(format!(
            "{} events before it were accepted ({} duplicates)",
            reply.accepted, reply.duplicate
        ))),
        None => Ok(HttpResponse::Accepted().json(reply)),
    }
}

fn is_ndjson(req: &HttpRequest) -> bool {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"))
}

/// Ingests one event, a JSON array of events (all or nothing), or an
/// NDJSON stream (`Content-Type: application/x-ndjson`, one event a line;
/// a bad line ends the request and the events before it are kept).
#[utoipa::path(
    tag = "events",
    operation_id = "ingest_events",
    request_body(content(
        (OneOrMany<EventIn> = "application/json"),
        (EventIn = "application/x-ndjson"),
    )),
    responses((status = 202, description = "Written and flushed.", body = IngestReply),
              BodyErrors, Saturated, Unavailable)
)]
#[post("/v1/events")]
pub(super) async fn ingest(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if is_ndjson(&req) {
        return ndjson(&state, payload).await;
    }
    document(&state, payload, Shape::Either).await
}

/// Ingests one event (a webhook's body).
#[utoipa::path(
    tag = "events",
    operation_id = "webhook_ingest",
    request_body = EventIn,
    responses((status = 202, description = "Written and flushed.", body = IngestReply),
              BodyErrors, Saturated, Unavailable)
)]
#[post("/webhook/ingest")]
pub(super) async fn webhook_one(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    document(&state, payload, Shape::One).await
}

/// Ingests a JSON array of events, all or nothing.
#[utoipa::path(
    tag = "events",
    operation_id = "webhook_batch",
    request_body = Vec<EventIn>,
    responses((status = 202, description = "Written and flushed.", body = IngestReply),
              BodyErrors, Saturated, Unavailable)
)]
#[post("/webhook/batch")]
pub(super) async fn webhook_batch(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    document(&state, payload, Shape::Many).await
}

/// A duration like `30d`, `12h`, `15m`, `45s` or `500ms`.
fn duration(field: &str, value: &str) -> Result<u64, ApiError> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| unit_ms > 0)
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or_else(|| ApiError::invalid(field, "a duration such as 30d, 12h, 15m or 45s"))
}

/// `DELETE /v1/events?older_than=30d`: retention by event time.
#[utoipa::path(
    tag = "events",
    operation_id = "retain_events",
    params(("older_than" = String, Query, pattern = "^[0-9]+(ms|s|m|h|d)$",
            description = "Deletes events older than this: `30d`, `12h`, `15m`, `45s`, `500ms`.")),
    responses((status = 200, description = "Deleted.", body = Retention),
              QueryErrors, Unavailable)
)]
#[delete("/v1/events")]
pub(super) async fn retain(
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let mut older_than = None;
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "older_than" => older_than = Some(duration("older_than", &value)?),
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    let age = older_than.ok_or_else(|| ApiError::invalid("older_than", "is required"))?;
    let cutoff = now_ms().saturating_sub(age);
    let deleted = ask(&state, |reply| IngestorMsg::Retain(cutoff, reply))
        .await?
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    flush(&state).await?;
    Ok(HttpResponse::Ok().json(Retention {
        deleted,
        cutoff_ms: cutoff,
    }))
}

/// What this node ingested.
#[utoipa::path(
    tag = "events",
    operation_id = "ingest_stats",
    responses((status = 200, description = "Counts.", body = IngestStats), Unavailable)
)]
#[get("/stats")]
pub(super) async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = ask(&state, IngestorMsg::Stats)
        .await?
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(stats))
}

/// A time bound: ms since the epoch or RFC 3339.
pub(super) fn time_bound(field: &str, value: &str) -> Result<u64, ApiError> {
    value
        .parse::<u64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(value)
                .ok()
                .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        })
        .ok_or_else(|| ApiError::invalid(field, "must be ms since the Unix epoch or RFC 3339"))
}

/// A page of this node's event log; with `Accept: application/x-ndjson`,
/// everything from the cursor on, one event a line.
#[utoipa::path(
    tag = "events",
    operation_id = "list_events",
    params(
        ("source" = Option<String>, Query, description = "Only events from this source."),
        ("from" = Option<String>, Query, description = "Event time at or after: ms since the Unix epoch or RFC 3339."),
        ("to" = Option<String>, Query, description = "Event time before: ms since the Unix epoch or RFC 3339."),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page, or an NDJSON stream of events.", content(
            (EventPage = "application/json"),
            (Event = "application/x-ndjson"),
        )),
        QueryErrors, Unavailable,
    )
)]
#[get("/v1/events")]
pub(super) async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let mut filter = EventFilter::default();
    let mut after = 0;
    let mut limit = 100;
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "source" => filter.source = Some(value),
            "from" => filter.from_ms = Some(time_bound("from", &value)?),
            "to" => filter.to_ms = Some(time_bound("to", &value)?),
            "cursor" => after = offset_cursor(&value)?,
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    if wants_ndjson(&req) {
        // Everything from the cursor on, a page at a time.
        return Ok(ndjson_pages(after, move |after| {
            let state = state.clone();
            let filter = filter.clone();
            async move {
                let page = events_page(&state, after, filter, MAX_PAGE).await?;
                let next = page.next_cursor.and_then(|c| c.parse().ok());
                Ok((page.events, next))
            }
        }));
    }
    Ok(HttpResponse::Ok().json(events_page(&state, after, filter, limit).await?))
}

async fn events_page(
    state: &AppState,
    after: u64,
    filter: EventFilter,
    limit: usize,
) -> Result<EventPage, ApiError> {
    ask(state, |reply| IngestorMsg::Page {
        after,
        filter,
        limit,
        reply,
    })
    .await?
    .map_err(|e| ApiError::unavailable(e.to_string()))
}
