//! The CLI's HTTP client: how every `troupe` command that talks to a node
//! sends requests and reads replies.
//!
//! One place sets the bearer token (nodes with `[auth] required` refuse
//! requests without one), the timeout, and turns an error reply — the API's
//! `{error, detail, field}` body — into a [`ClientError`] that prints as
//! `422 invalid_field: input.ms: …`, with a hint on 401 and 403 saying how
//! to get a token.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use troupe_protocol::ErrorBody;

use crate::config::{ClusterConfig, Role};

/// How long a CLI request may take unless a command says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a token minted for a command's own nodes (chaos, bench) lasts.
const MINTED_TTL_SECS: u64 = 24 * 3600;

/// Why a request did not give the reply asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP reply at all (connection refused, timeout, DNS).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The node answered with an error status.
    #[error("{}", refused(*status, body.as_ref(), text))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's error body, when the reply had one.
        body: Option<ErrorBody>,
        /// The raw reply, for replies without that body.
        text: String,
    },
    /// A success reply that is not what the API promises.
    #[error("unreadable reply from {url}: {reason}")]
    Unreadable {
        /// What was asked.
        url: String,
        /// What did not parse.
        reason: String,
    },
}

/// `422 invalid_field: input.ms: "ms" is a required property`, and how to
/// get a token after a 401 or 403.
fn refused(status: u16, body: Option<&ErrorBody>, text: &str) -> String {
    let mut out = match body {
        Some(ErrorBody {
            error,
            detail,
            field: Some(field),
        }) => format!("{status} {error}: {field}: {detail}"),
        Some(ErrorBody { error, detail, .. }) => format!("{status} {error}: {detail}"),
        None if text.trim().is_empty() => format!("{status} (no body)"),
        None => format!("{status}: {}", text.trim()),
    };
    match status {
        401 => out.push_str(
            "\nhint: the node requires a token: pass --token or set TROUPE_TOKEN; \
             `troupe token --config <cluster.toml>` mints one",
        ),
        403 => out.push_str(
            "\nhint: this token may only read; \
             `troupe token --role admin --config <cluster.toml>` mints one that may change things",
        ),
        _ => {}
    }
    out
}

/// A node's HTTP API, as this CLI calls it.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// The node at `base` (`http://host:port`, or `host:port`), sending
    /// `token` with every request.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Self {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        Self {
            base,
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
            token,
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self.agent.request(method, &self.url(path));
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// Any reply's status and body; Err only when there was no reply.
    fn finish(
        &self,
        path: &str,
        sent: Result<ureq::Response, ureq::Error>,
    ) -> Result<(u16, String), ClientError> {
        let response = match sent {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(e) => {
                return Err(ClientError::Unreachable {
                    url: self.url(path),
                    reason: e.to_string(),
                })
            }
        };
        let status = response.status();
        let text = response
            .into_string()
            .map_err(|e| ClientError::Unreadable {
                url: self.url(path),
                reason: e.to_string(),
            })?;
        Ok((status, text))
    }

    /// A success reply parsed as `T`, or the error reply.
    fn parse<T: DeserializeOwned>(
        &self,
        path: &str,
        (status, text): (u16, String),
    ) -> Result<T, ClientError> {
        if !(200..300).contains(&status) {
            return Err(ClientError::Refused {
                status,
                body: serde_json::from_str(&text).ok(),
                text,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Unreadable {
            url: self.url(path),
            reason: e.to_string(),
        })
    }

    /// `GET path`, whatever the status (for `/ready`, whose 503 has a body).
    pub fn get_raw(&self, path: &str) -> Result<(u16, String), ClientError> {
        self.finish(path, self.request("GET", path).call())
    }

    /// `GET path`, parsed.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let reply = self.get_raw(path)?;
        self.parse(path, reply)
    }

    /// `POST path` with a body of `content_type`, parsed.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Result<T, ClientError> {
        let sent = self
            .request("POST", path)
            .set("Content-Type", content_type)
            .send_string(body);
        let reply = self.finish(path, sent)?;
        self.parse(path, reply)
    }

    /// `POST path` with a body read as it is sent (for bodies too large to
    /// hold), parsed.
    pub fn post_reader<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: impl std::io::Read,
    ) -> Result<T, ClientError> {
        let sent = self
            .request("POST", path)
            .set("Content-Type", content_type)
            .send(body);
        let reply = self.finish(path, sent)?;
        self.parse(path, reply)
    }

    /// `DELETE path`, parsed.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let reply = self.finish(path, self.request("DELETE", path).call())?;
        self.parse(path, reply)
    }
}

/// The token for the nodes of `config` that this command starts itself:
/// the one given (`--token`), else, when `[auth] required`, an admin token
/// minted with the config's secret; none when the nodes need none.
pub fn token_for(config: &ClusterConfig, given: Option<&str>) -> anyhow::Result<Option<String>> {
    if let Some(token) = given {
        return Ok(Some(token.to_owned()));
    }
    if !config.auth.required {
        return Ok(None);
    }
    crate::http::access::mint(
        &config.cluster.secret,
        "troupe-cli",
        Role::Admin,
        MINTED_TTL_SECS,
    )
    .map(Some)
    .map_err(|e| anyhow::anyhow!("minting a token for the cluster's nodes: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_names_status_code_field_and_detail_and_hints_at_tokens() {
        let body = ErrorBody {
            error: "invalid_field".into(),
            detail: "\"ms\" is a required property".into(),
            field: Some("input.ms".into()),
        };
        assert_eq!(
            refused(422, Some(&body), ""),
            "422 invalid_field: input.ms: \"ms\" is a required property"
        );
        let unauthorized = ErrorBody {
            error: "unauthorized".into(),
            detail: "POST /v1/tasks needs a bearer token".into(),
            field: None,
        };
        let text = refused(401, Some(&unauthorized), "");
        assert!(
            text.starts_with("401 unauthorized: POST /v1/tasks needs a bearer token\nhint: "),
            "{text}"
        );
        assert!(text.contains("TROUPE_TOKEN"), "{text}");
        assert_eq!(refused(502, None, "bad gateway\n"), "502: bad gateway");
    }

    #[test]
    fn a_base_without_a_scheme_is_http() {
        let client = Client::new("127.0.0.1:8401/", None, DEFAULT_TIMEOUT);
        assert_eq!(client.base(), "http://127.0.0.1:8401");
    }
}
