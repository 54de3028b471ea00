//! `http.webhook`: calls an HTTP endpoint and returns its answer.
//!
//! Notifying another system, or fetching something it knows, is the
//! most common step a pipeline needs that is not computation. The call
//! uses the node's shared HTTP client (resource [`HTTP`]), so
//! connections are pooled across tasks. ureq is blocking: the request
//! runs on a blocking thread, raced against the task's cancellation
//! (a cancelled task returns at once; the thread ends when the request's
//! own timeout does).
//!
//! A 2xx answer is the task's result (`status` and `body`, parsed as
//! JSON when it is JSON); any other status fails the task, naming it
//! and the URL.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe_plugin::{register_plugin, Context, Invalid, Plugin, PluginError};

use crate::resources::HTTP;

/// Request timeout when the input does not give one.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Longest request timeout accepted.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Largest response body read.
pub const MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// How much of an error response's body its error quotes.
const QUOTED_BODY_CHARS: usize = 200;

/// The HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `POST` (the default).
    #[default]
    Post,
    /// `PUT`.
    Put,
    /// `GET`.
    Get,
    /// `DELETE`.
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Get => "GET",
            Self::Delete => "DELETE",
        }
    }
}

/// Input of `http.webhook`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where to send the request: an `http://` or `https://` URL.
    pub url: String,
    /// The HTTP method (default `POST`).
    #[serde(default)]
    pub method: Method,
    /// Request headers, by name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON sent as the request body (`Content-Type: application/json`
    /// unless `headers` says otherwise); no body when absent.
    #[serde(default)]
    pub body: Option<Value>,
    /// How long the whole request may take, in milliseconds (default
    /// 10000).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    pub timeout_ms: Option<u64>,
}

/// Output of `http.webhook`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WebhookOutput {
    /// The response status (2xx).
    pub status: u16,
    /// The response body: its JSON when it parses as JSON, else its text.
    pub body: Value,
}

/// `http.webhook`: sends one HTTP request.
#[derive(Debug, Default)]
pub struct Webhook;

impl Plugin for Webhook {
    const NAME: &'static str = "http.webhook";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str =
        "Sends an HTTP request to `url` and returns the status and body; a non-2xx status fails.";
    const RESOURCES: &'static [&'static str] = &[HTTP];
    type Input = WebhookInput;
    type Output = WebhookOutput;

    fn validate(&self, input: &WebhookInput) -> Result<(), Invalid> {
        match input.url.split_once("://") {
            Some((scheme, rest))
                if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
            {
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(Invalid::new("url", "has no host"));
                }
            }
            _ => return Err(Invalid::new("url", "must start with http:// or https://")),
        }
        if let Some(ms) = input.timeout_ms {
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                return Err(Invalid::new(
                    "timeout_ms",
                    format!("must be 1 to {MAX_TIMEOUT_MS}"),
                ));
            }
        }
        for (name, value) in &input.headers {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(Invalid::new(
                    format!("headers.{name}"),
                    "is not a valid header name",
                ));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(Invalid::new(
                    format!("headers.{name}"),
                    "must not contain line breaks",
                ));
            }
        }
        Ok(())
    }

    async fn process(
        &self,
        input: WebhookInput,
        cx: &Context,
    ) -> Result<WebhookOutput, PluginError> {
        // The node decodes but does not validate again before running.
        self.validate(&input).map_err(PluginError::new)?;
        let agent = cx.resource::<ureq::Agent>(HTTP)?.clone();
        let call = tokio::task::spawn_blocking(move || send(&agent, input));
        tokio::select! {
            joined = call => joined
                .map_err(|e| PluginError::new(format!("the request's thread failed: {e}")))?,
            () = cx.cancelled().cancelled() => Err(PluginError::new("cancelled while the request ran")),
        }
    }
}

register_plugin!(Webhook);

/// A byte allowed in a header name (an RFC 9110 token).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Sends the request and reads the answer; blocking.
fn send(agent: &ureq::Agent, input: WebhookInput) -> Result<WebhookOutput, PluginError> {
    let method = input.method.as_str();
    let url = input.url;
    let timeout = Duration::from_millis(input.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
    let mut request = agent.request(method, &url).timeout(timeout);
    for (name, value) in &input.headers {
        request = request.set(name, value);
    }
    let sent = match &input.body {
        Some(body) => {
            if request.header("Content-Type").is_none() {
                request = request.set("Content-Type", "application/json");
            }
            let bytes = serde_json::to_vec(body)
                .map_err(|e| PluginError::new(format!("body is not JSON: {e}")))?;
            request.send_bytes(&bytes)
        }
        None => request.call(),
    };
    match sent {
        Ok(response) => {
            let status = response.status();
            let body = read_body(response, &url)?;
            if (200..300).contains(&status) {
                Ok(WebhookOutput {
                    status,
                    body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
                })
            } else {
                Err(status_error(method, &url, status, &body))
            }
        }
        Err(ureq::Error::Status(status, response)) => {
            let body = read_body(response, &url).unwrap_or_default();
            Err(status_error(method, &url, status, &body))
        }
        Err(ureq::Error::Transport(e)) => {
            Err(PluginError::new(format!("{method} {url} failed: {e}")))
        }
    }
}

/// The response body as text (invalid UTF-8 replaced), up to
/// [`MAX_BODY_BYTES`].
fn read_body(response: ureq::Response, url: &str) -> Result<String, PluginError> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PluginError::new(format!("reading the answer from {url}: {e}")))?;
    if bytes.len() as u64 > MAX_BODY_BYTES {
        return Err(PluginError::new(format!(
            "the answer from {url} is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A non-2xx answer as the task's error, quoting the start of its body.
fn status_error(method: &str, url: &str, status: u16, body: &str) -> PluginError {
    let mut message = format!("{method} {url} returned status {status}");
    let body = body.trim();
    if !body.is_empty() {
        let quoted: String = body.chars().take(QUOTED_BODY_CHARS).collect();
        let more = if quoted.len() < body.len() { "…" } else { "" };
        message.push_str(&format!(": {quoted}{more}"));
    }
    PluginError::new(message)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::{mpsc, Arc};
    use std::thread;
    use std::time::Instant;

    use serde_json::json;
    use tokio_util::sync::CancellationToken;
    use troupe_plugin::{LoadedPlugin, Plugins, Scope};

    use super::*;
    use crate::resources::http_client;

    /// Answers one request on a local port with `status` and whatever
    /// `reply` makes of the request's body; reports the raw request.
    fn serve(
        status: &'static str,
        reply: impl FnOnce(&str) -> String + Send + 'static,
    ) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let url = format!("http://{}/hook?x=1", listener.local_addr().expect("bound"));
        let (report, received) = mpsc::channel();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("a request");
            let request = read_request(&mut stream);
            let body = reply(request.split("\r\n\r\n").nth(1).unwrap_or_default());
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).expect("answered");
            report.send(request).expect("the test listens");
        });
        (url, received)
    }

    /// Reads the head and, by its Content-Length, the body.
    fn read_request(stream: &mut TcpStream) -> String {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).expect("readable");
            bytes.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .map_or(0, |v| v.parse::<usize>().expect("a length"));
                if body.len() >= length {
                    return text;
                }
            }
            if n == 0 {
                return text;
            }
        }
    }

    async fn http_scope() -> Arc<Scope> {
        Arc::new(
            http_client(Scope::builder())
                .acquire()
                .await
                .expect("an agent"),
        )
    }

    fn plugin() -> Arc<LoadedPlugin> {
        let plugins = Plugins::load(&[HTTP]).expect("plugins load");
        Arc::clone(plugins.get(Webhook::NAME).expect("offered with http"))
    }

    async fn call(input: Value) -> Result<Value, PluginError> {
        let cx = Context::new(CancellationToken::new(), Some(http_scope().await));
        plugin().process(input, &cx).await
    }

    #[tokio::test]
    async fn posts_json_with_headers_and_returns_the_json_answer() {
        let (url, received) = serve("200 OK", |body| format!(r#"{{"echo": {body}}}"#));
        let output = call(json!({
            "url": url,
            "headers": {"X-Token": "secret"},
            "body": {"event": "done", "n": 3},
        }))
        .await
        .expect("200");
        assert_eq!(
            output,
            json!({"status": 200, "body": {"echo": {"event": "done", "n": 3}}})
        );
        let request = received.recv().expect("the server saw it");
        assert!(
            request.starts_with("POST /hook?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        let head = request.to_ascii_lowercase();
        assert!(head.contains("\r\nx-token: secret\r\n"), "{request}");
        assert!(
            head.contains("\r\ncontent-type: application/json\r\n"),
            "{request}"
        );
        assert!(request.ends_with(r#"{"event":"done","n":3}"#), "{request}");
    }

    #[tokio::test]
    async fn a_text_answer_is_returned_as_a_string() {
        let (url, received) = serve("201 Created", |_| "stored, thanks".to_owned());
        let output = call(json!({"url": url, "method": "GET"}))
            .await
            .expect("201");
        assert_eq!(output, json!({"status": 201, "body": "stored, thanks"}));
        let request = received.recv().expect("the server saw it");
        assert!(request.starts_with("GET /hook?x=1 "), "{request}");
        assert!(
            !request.to_ascii_lowercase().contains("content-type"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn an_error_status_fails_naming_it_and_the_url() {
        let (url, _received) = serve("500 Internal Server Error", |_| {
            "database is down".to_owned()
        });
        let e = call(json!({"url": url, "method": "PUT", "body": [1]}))
            .await
            .expect_err("500");
        assert_eq!(
            e.0,
            format!("PUT {url} returned status 500: database is down")
        );
    }

    #[tokio::test]
    async fn an_unreachable_host_fails_with_the_cause() {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("bound")
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let e = call(json!({"url": url}))
            .await
            .expect_err("nothing listens");
        assert!(e.0.starts_with(&format!("POST {url} failed: ")), "{e}");
    }

    #[tokio::test]
    async fn cancellation_returns_without_waiting_for_the_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let url = format!("http://{}/slow", listener.local_addr().expect("bound"));
        thread::spawn(move || {
            // Accept, then never answer: the request times out.
            let held = listener.accept();
            thread::sleep(Duration::from_secs(3));
            drop(held);
        });
        let cancel = CancellationToken::new();
        let cx = Context::new(cancel.clone(), Some(http_scope().await));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let e = plugin()
            .process(json!({"url": url, "timeout_ms": 1000}), &cx)
            .await
            .expect_err("cancelled");
        assert_eq!(e.0, "cancelled while the request ran");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "returned at once"
        );
    }

    #[test]
    fn bad_input_is_refused_at_submission() {
        let p = plugin();
        let check = |input: Value| p.check(&input).expect_err("invalid");
        assert!(p.check(&json!({"url": "https://example.com/x"})).is_ok());
        let e = check(json!({"url": "ftp://x"}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("input.url", "must start with http:// or https://")
        );
        assert_eq!(check(json!({"url": "http://"})).field, "input.url");
        assert_eq!(check(json!({"body": {}})).field, "input.url");
        assert_eq!(
            check(json!({"url": "http://h", "method": "PATCH"})).field,
            "input.method"
        );
        assert_eq!(
            check(json!({"url": "http://h", "timeout_ms": 0})).field,
            "input.timeout_ms"
        );
        assert_eq!(
            check(json!({"url": "http://h", "timeout_ms": MAX_TIMEOUT_MS + 1})).field,
            "input.timeout_ms"
        );
        assert_eq!(
            check(json!({"url": "http://h", "headers": {"Bad Name": "v"}})).field,
            "input.headers.Bad Name"
        );
        assert_eq!(
            check(json!({"url": "http://h", "headers": {"X-A": "v\r\nX-B: injected"}})).field,
            "input.headers.X-A"
        );
        assert_eq!(
            check(json!({"url": "http://h", "verb": "GET"})).field,
            "input.verb"
        );
    }

    #[tokio::test]
    async fn without_the_http_resource_it_is_not_offered_and_cannot_run() {
        assert!(Plugins::load(&[])
            .expect("load")
            .get(Webhook::NAME)
            .is_none());
        let cx = Context::new(CancellationToken::new(), None);
        let e = plugin()
            .process(json!({"url": "http://127.0.0.1:1/"}), &cx)
            .await
            .expect_err("no scope");
        assert!(e.0.starts_with("resource http"), "{e}");
    }
}
