//! Per-client request rate limits (`[limits]`), by the governor crate's
//! GCRA: a client (an IP address) may make `requests_per_second`
//! sustained, `burst` at once; beyond that it gets a 429 whose
//! Retry-After says when the next request will be let through. Probes
//! (`/health`, `/ready`, `/metrics`) are never limited, so an orchestrator
//! or Prometheus is not starved by a busy client.

use std::net::IpAddr;
use std::num::NonZeroU32;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::web;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{ApiError, AppState};
use crate::config::LimitsSection;

/// Clients remembered before those not seen lately are forgotten.
const CLIENTS_KEPT: usize = 10_000;

/// The node's per-client limiter.
pub struct ClientLimits {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    per_second: u32,
}

impl ClientLimits {
    /// Limits from `[limits]`; `None` when off.
    pub fn from_config(section: &LimitsSection) -> Option<Self> {
        let per_second = NonZeroU32::new(section.requests_per_second)?;
        let burst = section
            .burst
            .and_then(NonZeroU32::new)
            .unwrap_or(per_second);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            per_second: per_second.get(),
        })
    }

    /// Lets a request from `client` through, or says how long to wait.
    fn admit(&self, client: IpAddr) -> Result<(), ApiError> {
        if self.limiter.len() > CLIENTS_KEPT {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::rate_limited(
                format!(
                    "more than {} requests per second from {client}; retry in {secs} s",
                    self.per_second
                ),
                secs,
            )
        })
    }
}

/// Middleware: answers 429 for a client over its rate, before routing.
pub fn limit_rate<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let refused = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.limits.as_ref())
        .filter(|_| !super::PROBES.contains(&req.path()))
        .zip(req.peer_addr())
        .and_then(|(limits, peer)| limits.admit(peer.ip()).err());
    if refused.is_some() {
        metrics::counter!("troupe_http_rate_limited_total").increment(1);
    }
    super::refuse_or_call(req, srv, refused)
}
