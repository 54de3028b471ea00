//! One error type for every endpoint, rendered as `{error, detail, field?}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use troupe_protocol::ErrorBody;

/// An HTTP error with its status and body.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<String>,
    /// Seconds for `Retry-After` (sent with 429 and 503).
    retry_after_secs: u64,
    /// The methods for `Allow` (sent with 405).
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
            retry_after_secs: 1,
            allow: None,
        }
    }

    /// 400: the body is not well-formed.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", detail)
    }

    /// 422: well-formed, but `field` is wrong.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail)
        }
    }

    /// 413: the body is over the limit.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 405: the path is served, with the methods in `allow`.
    pub fn method_not_allowed(detail: impl Into<String>, allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail)
        }
    }

    /// 401: no credentials, or ones that do not verify.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 409: the target is in a state that does not allow this now.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 429: the node is saturated; retry after a second.
    pub fn saturated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "saturated", detail)
    }

    /// 429: this client is over its request rate; retry after `secs`.
    pub fn rate_limited(detail: impl Into<String>, secs: u64) -> Self {
        Self {
            retry_after_secs: secs.max(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
        }
    }

    /// 503: a part of the node is not available; retrying later can help.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
}

impl ApiError {
    /// The same error with `context` put before its detail.
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.detail = format!("{context}: {}", self.detail);
        self
    }

    /// The status and body, to send to a peer that asked on a client's behalf.
    pub fn to_parts(&self) -> (u16, ErrorBody) {
        (
            self.status.as_u16(),
            ErrorBody {
                error: self.code.to_owned(),
                detail: self.detail.clone(),
                field: self.field.clone(),
            },
        )
    }

    /// An error a peer answered with, passed on unchanged.
    pub fn from_parts(status: u16, body: ErrorBody) -> Self {
        let code = match body.error.as_str() {
            "malformed" => "malformed",
            "invalid_field" => "invalid_field",
            "not_found" => "not_found",
            "forbidden" => "forbidden",
            "unauthorized" => "unauthorized",
            "conflict" => "conflict",
            "too_large" => "too_large",
            "saturated" => "saturated",
            _ => "unavailable",
        };
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            code,
            detail: body.detail,
            field: body.field,
            retry_after_secs: 1,
            allow: None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response.insert_header(("Retry-After", self.retry_after_secs.to_string()));
        }
        if let Some(allow) = self.allow {
            response.insert_header(("Allow", allow));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(self.to_parts().1)
    }
}

/// Fallback for what no handler takes: a 405 naming the methods when the
/// path is served with others, else a 404; both in the one error shape.
pub(super) async fn no_route(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    let what = format!("{} {}", req.method(), req.path());
    match req
        .match_pattern()
        .and_then(|pattern| super::openapi::methods_at(&pattern))
    {
        Some(allow) => Err(ApiError::method_not_allowed(
            format!("{what}: this path takes {allow}"),
            allow,
        )),
        None => Err(ApiError::not_found(format!("no route for {what}"))),
    }
}
