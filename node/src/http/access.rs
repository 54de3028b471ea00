//! Client authentication (`[auth]`): bearer tokens on the HTTP API.
//!
//! A token is either a JWT signed with the cluster secret (HS256, claims
//! `sub`, `role`, `exp`; `troupe token` mints one) or a static token from
//! the config. No token, or one that does not verify, is a 401 with
//! `WWW-Authenticate: Bearer`; a read-only token on a request that
//! changes something is a 403. Both carry the usual error body.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::web;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::config::{AuthSection, Role, StaticToken};

/// Whether `path` never needs a token: the probes, and the dashboard page
/// (it holds no data; it asks for a token when its stream needs one). The
/// OpenAPI document reads this too.
pub(super) fn is_open(path: &str) -> bool {
    path == "/" || super::PROBES.contains(&path)
}

/// A JWT's claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Who holds it.
    pub sub: String,
    /// What it allows.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Mints a JWT for `subject` with `role`, valid `ttl_secs`, signed with
/// the cluster `secret`.
pub fn mint(secret: &str, subject: &str, role: Role, ttl_secs: u64) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        sub: subject.to_owned(),
        role,
        exp: now.saturating_add(ttl_secs),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// The node's token check, when `[auth] required`.
pub struct Access {
    key: DecodingKey,
    validation: Validation,
    tokens: Vec<StaticToken>,
    protect_reads: bool,
}

impl Access {
    /// From `[auth]` and the cluster secret; `None` when not required.
    pub fn from_config(section: &AuthSection, secret: &str) -> Option<Self> {
        section.required.then(|| Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation: Validation::new(Algorithm::HS256),
            tokens: section.tokens.clone(),
            protect_reads: section.protect_reads,
        })
    }

    /// Who holds `token` and what it allows.
    fn identify(&self, token: &str) -> Result<(String, Role), String> {
        if let Some(known) = self.tokens.iter().find(|t| t.token == token) {
            return Ok((known.name.clone(), known.role));
        }
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| (data.claims.sub, data.claims.role))
            .map_err(|e| format!("invalid token: {e}"))
    }

    /// Lets `req` through, or says why not.
    fn check(&self, req: &ServiceRequest) -> Result<(), ApiError> {
        let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
        if is_open(req.path()) || !(writes || self.protect_reads) {
            return Ok(());
        }
        let what = format!("{} {}", req.method(), req.path());
        let token = req
            .headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized(format!("{what} needs a bearer token")))?;
        let (holder, role) = self
            .identify(token.trim())
            .map_err(|reason| ApiError::unauthorized(format!("{what}: {reason}")))?;
        if writes && role == Role::Read {
            return Err(ApiError::forbidden(format!(
                "{what}: the token of {holder} may only read"
            )));
        }
        Ok(())
    }
}

/// Middleware: answers 401/403 before routing when a token is missing,
/// invalid or not enough.
pub fn authorize<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let refused = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.access.as_ref())
        .and_then(|access| access.check(&req).err());
    super::refuse_or_call(req, srv, refused)
}
