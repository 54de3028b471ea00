//! `GET /openapi.json`: the API's OpenAPI 3.1 document, generated from the
//! handlers' `#[utoipa::path]` attributes as they are registered.
//!
//! Registering a handler and documenting it are one call ([`Routes::add`]
//! takes only handlers that carry both an actix route macro and
//! `#[utoipa::path]`), so the document cannot list a route that is not
//! served nor miss one that is. What applies to every route rather than to
//! one handler — bearer tokens when `[auth] required`, the per-client
//! rate limit — is added here from the same rules the middlewares use
//! ([`super::access`], [`super::limits`]). Error responses are named sets
//! ([`Unavailable`], [`BodyErrors`] …) so each handler lists what it can
//! answer in one line, all with the one error body, [`ErrorBody`]. Each
//! create links to the operations that take the id it answers ([`LINKS`]),
//! which is what lets a stateful fuzzer (`scripts/fuzz-api`) go past it.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use actix_web::dev::HttpServiceFactory;
use actix_web::{get, HttpResponse};
use troupe_protocol::ErrorBody;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Header, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::{AppExt, OpenApiFactory};

use super::ApiError;

/// The name of the bearer-token security scheme.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Troupe",
        description = "A Troupe cluster node's HTTP API. Every error answers with the body \
                       `ErrorBody` (`{error, detail, field?}`); listings that take \
                       `Accept: application/x-ndjson` stream one item per line.",
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// Registers handlers; only ones that document themselves are taken.
pub(super) struct Routes<'a, 'b> {
    config: &'a mut ServiceConfig<'b>,
    added: usize,
}

impl<'a, 'b> Routes<'a, 'b> {
    pub(super) fn new(config: &'a mut ServiceConfig<'b>) -> Self {
        Self { config, added: 0 }
    }

    /// Serves `handler` and adds it to the document.
    pub(super) fn add<H: HttpServiceFactory + OpenApiFactory + 'static>(
        &mut self,
        handler: H,
    ) -> &mut Self {
        self.added += 1;
        self.config.service(handler);
        self
    }

    /// Handlers registered so far.
    pub(super) fn added(&self) -> usize {
        self.added
    }
}

/// The document, built by registering every route into a throwaway app;
/// and how many handlers were registered.
pub(super) fn document() -> (utoipa::openapi::OpenApi, usize) {
    let mut added = 0;
    let (_, mut doc) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(|config| {
            let mut routes = Routes::new(config);
            super::register(&mut routes);
            added = routes.added();
        })
        .split_for_parts();
    Access.modify(&mut doc);
    (doc, added)
}

/// The document as served, and the methods of every path, for the 405s.
struct Served {
    json: Result<String, String>,
    methods: HashMap<String, String>,
}

/// Built once: it depends only on the code.
static SERVED: LazyLock<Served> = LazyLock::new(|| {
    let (mut doc, _) = document();
    let methods = doc
        .paths
        .paths
        .iter_mut()
        .map(|(path, item)| {
            let names: Vec<&str> = operations(item)
                .into_iter()
                .map(|(name, ..)| name)
                .collect();
            (path.clone(), names.join(", "))
        })
        .collect();
    Served {
        json: linked(&doc).and_then(|json| serde_json::to_string(&json).map_err(|e| e.to_string())),
        methods,
    }
});

/// The methods served at an actix route pattern (`/v1/tasks/{id}`,
/// `/v1/actors/{path:.+}/crash`), as for an `Allow` header.
pub(super) fn methods_at(pattern: &str) -> Option<&'static str> {
    SERVED.methods.get(&doc_path(pattern)).map(String::as_str)
}

/// An actix pattern as OpenAPI writes it: `{path:.+}` is `{path}`.
fn doc_path(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let (mut in_name, mut in_regex) = (false, false);
    for c in pattern.chars() {
        match c {
            '{' if !in_regex => in_name = true,
            ':' if in_name => (in_name, in_regex) = (false, true),
            '}' => (in_name, in_regex) = (false, false),
            _ => {}
        }
        if !in_regex {
            out.push(c);
        }
    }
    out
}

/// This document.
#[utoipa::path(
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.",
               content_type = "application/json"))
)]
#[get("/openapi.json")]
pub(super) async fn openapi_json() -> Result<HttpResponse, ApiError> {
    let document = SERVED.json.as_ref().map_err(|e| {
        ApiError::unavailable(format!("the OpenAPI document does not serialize: {e}"))
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(document.as_str()))
}

/// Adds the bearer scheme; to every operation but those `[auth]` leaves
/// open its statuses (401 and, for a change, 403), and to every one
/// `[limits]` applies to its 429.
struct Access;

impl Modify for Access {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT minted by `troupe token`, or a static token from `[auth] tokens`. \
                         Needed only when the node has `[auth] required`: then on every \
                         request that changes something, and on reads with `protect_reads`.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let needs_token = !super::access::is_open(path);
            let limited = !super::PROBES.contains(&path.as_str());
            for (_, writes, operation) in operations(item) {
                let mut extra = Vec::new();
                if needs_token {
                    // Either no token (auth off) or a bearer token.
                    operation.security = Some(vec![
                        SecurityRequirement::default(),
                        SecurityRequirement::new(BEARER, Vec::<String>::new()),
                    ]);
                    extra.push(401);
                    if writes {
                        extra.push(403);
                    }
                }
                if limited {
                    extra.push(429);
                }
                for status in extra {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_response(status));
                }
            }
        }
    }
}

/// What a create answers, and where in it the new thing's id is: the
/// operations that take that id are linked from the answer, so a reader
/// (and a stateful fuzzer) can follow a create to its reads and deletes.
const LINKS: &[(&str, &str, &str, &[&str])] = &[
    (
        "create_schedule",
        "201",
        "/id",
        &["get_schedule", "delete_schedule"],
    ),
    (
        "create_pipeline",
        "201",
        "/spec/id",
        &[
            "start_pipeline",
            "stop_pipeline",
            "pipeline_stats",
            "late_events",
        ],
    ),
    // One task submitted alone; an array answers an array.
    ("submit_tasks", "202", "/id", &["get_task", "cancel_task"]),
];

/// `doc` as served: JSON with [`LINKS`] added (by hand: utoipa 5 writes
/// a link's `operationId` as `operation_id`).
pub(super) fn linked(doc: &utoipa::openapi::OpenApi) -> Result<serde_json::Value, String> {
    let mut json = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    let operations = json
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(&(_, status, pointer, targets)) = LINKS
            .iter()
            .find(|(id, ..)| operation["operationId"] == *id)
        else {
            continue;
        };
        // Every target takes the id as its path parameter `id`.
        let links: serde_json::Map<String, serde_json::Value> = targets
            .iter()
            .map(|target| {
                let link = serde_json::json!({
                    "operationId": target,
                    "parameters": {"id": format!("$response.body#{pointer}")},
                });
                ((*target).to_owned(), link)
            })
            .collect();
        if let Some(response) = operation
            .pointer_mut(&format!("/responses/{status}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            response.insert("links".into(), serde_json::Value::Object(links));
        }
    }
    Ok(json)
}

/// An item's operations, each with its method's name and whether it
/// changes something (the rule of [`super::access`]: anything but GET and
/// HEAD).
fn operations(item: &mut PathItem) -> Vec<(&'static str, bool, &mut Operation)> {
    [
        ("GET", false, item.get.as_mut()),
        ("HEAD", false, item.head.as_mut()),
        ("POST", true, item.post.as_mut()),
        ("PUT", true, item.put.as_mut()),
        ("DELETE", true, item.delete.as_mut()),
        ("PATCH", true, item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(name, writes, op)| op.map(|op| (name, writes, op)))
    .collect()
}

/// The response for an error status: the one error body, and the headers
/// [`super::ApiError`] sends with it.
fn error_response(status: u16) -> RefOr<Response> {
    let description = match status {
        400 => "Malformed: the body or query is not well-formed.",
        401 => "No bearer token, or one that does not verify (only with `[auth] required`).",
        403 => "Not allowed: a read-only token on a change, or fault injection is off.",
        404 => "Not found.",
        409 => "The target's state does not allow this now.",
        413 => "The body is over the limit.",
        422 => "Well-formed, but a field is wrong; `field` names it.",
        429 => "Too many requests: over this client's rate (`[limits]`) or the node is saturated.",
        503 => "A part of the node is not available now; retrying later can help.",
        _ => "Error.",
    };
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    let integer = || {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .build()
    };
    if matches!(status, 429 | 503) {
        let mut header = Header::new(integer());
        header.description = Some("Seconds to wait before retrying.".into());
        response = response.header("Retry-After", header);
    }
    if status == 401 {
        let mut header = Header::new(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .build(),
        );
        header.description = Some("`Bearer`.".into());
        response = response.header("WWW-Authenticate", header);
    }
    response.build().into()
}

/// Declares named sets of error statuses for `responses(...)`.
macro_rules! error_sets {
    ($($(#[$doc:meta])* $name:ident => [$($status:literal),+];)+) => {$(
        $(#[$doc])*
        pub(super) struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$($status),+]
                    .into_iter()
                    .map(|status: u16| (status.to_string(), error_response(status)))
                    .collect()
            }
        }
    )+};
}

error_sets! {
    /// 503: an actor or the store did not answer.
    Unavailable => [503];
    /// A JSON body that is malformed (400), too large (413) or wrong (422).
    BodyErrors => [400, 413, 422];
    /// A query that does not decode (400) or has a bad or unknown parameter (422).
    QueryErrors => [400, 422];
    /// 404.
    NotFound => [404];
    /// 409.
    Conflict => [409];
    /// 429: too many ingestion requests at once.
    Saturated => [429];
    /// 403.
    Forbidden => [403];
}

/// A body that is one item or a JSON array of them (documentation only:
/// handlers tell the two apart by the first byte).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Never built: it only describes a body.
pub(super) enum OneOrMany<T> {
    /// One item.
    One(T),
    /// An array.
    Many(Vec<T>),
}

/// `cursor` and `limit` of a paged listing (documentation only: handlers
/// read the query themselves, to name an unknown parameter in a 422).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Never built: it only describes a query.
pub(super) struct PageQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}
