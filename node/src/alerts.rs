//! Delivers alert notifications to their rules' webhooks: a JSON POST of
//! the [`AlertEvent`], retried with backoff, on a blocking thread so the
//! alerts actor never waits on a receiver.

use std::sync::Arc;
use std::time::Duration;

use troupe_actors::alerts::Deliver;
use troupe_protocol::alerts::AlertEvent;

/// Tries per notification.
const ATTEMPTS: u32 = 3;
/// Wait before the second try; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest a receiver may take to answer one try.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The webhook deliverer: true once a receiver answered 2xx.
pub fn webhook() -> Deliver {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    Arc::new(move |url: String, event: AlertEvent| {
        let agent = agent.clone();
        Box::pin(async move {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                let (agent, url_now, body) = (agent.clone(), url.clone(), event.clone());
                let sent = tokio::task::spawn_blocking(move || {
                    agent
                        .post(&url_now)
                        .send_json(&body)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await;
                match sent {
                    Ok(Ok(())) => return true,
                    Ok(Err(e)) => {
                        tracing::warn!(rule = %event.rule, %url, attempt, "alert webhook failed: {e}")
                    }
                    Err(e) => tracing::warn!(rule = %event.rule, %url, "alert webhook task: {e}"),
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            false
        })
    })
}
