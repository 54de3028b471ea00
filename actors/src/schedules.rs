//! Recurring tasks: the schedules this node holds, and firing them.
//!
//! A schedule is stored on R nodes (its `holders`, in rendezvous order of
//! its id). The first live holder fires it; when that node dies or leaves,
//! the next one takes over at the following tick of this actor, with no
//! hand-over. Each tick submits one task under the idempotency key
//! `schedule:<id>:<tick ms>`, so a tick fired twice — two holders that
//! briefly disagree about who is alive, or a new owner catching up — is
//! still one task cluster-wide. A holder that takes a schedule over first
//! fires the ticks of the last [`CATCH_UP`] it may have missed (none from
//! before the schedule was created), so the ticks due while the old owner
//! was being declared dead are not lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use troupe_protocol::{now_ms, ScheduleRecord, ScheduleStatus};

use crate::store::{ScheduleStore, Storage, StoreError};

/// How often due ticks are looked for.
const TICK: Duration = Duration::from_millis(200);
/// How far back a holder that takes a schedule over looks for missed ticks.
pub const CATCH_UP: Duration = Duration::from_secs(10);
/// Most ticks fired for one schedule in one round (a per-second schedule
/// catching up fires at most this many).
const MAX_FIRES_PER_ROUND: usize = 20;

/// Submits the task of `schedule` for the tick at `tick_ms`, without waiting.
pub type FireFn = Arc<dyn Fn(&ScheduleRecord, u64) + Send + Sync>;

/// Parses a cron expression of five fields (minute first) or six (second
/// first); the error says what is wrong with it.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    Cron::new(expression)
        .with_seconds_optional()
        .parse()
        .map_err(|e| e.to_string())
}

/// The first tick strictly after `after_ms`.
fn next_tick(cron: &Cron, after_ms: u64) -> Option<u64> {
    // Whole seconds: the next match is at least one second later.
    let seconds = i64::try_from(after_ms / 1000).ok()?;
    let after: DateTime<Utc> = Utc.timestamp_opt(seconds, 0).single()?;
    let next = cron.find_next_occurrence(&after, false).ok()?;
    u64::try_from(next.timestamp_millis()).ok()
}

/// Messages of the schedules actor.
pub enum SchedulesMsg {
    /// Hold this schedule (durably before the reply).
    Put(Box<ScheduleRecord>, RpcReplyPort<Result<(), StoreError>>),
    /// Forget a schedule; whether it was held.
    Delete(String, RpcReplyPort<Result<bool, StoreError>>),
    /// Every schedule held, with who fires it and when.
    List(RpcReplyPort<Vec<ScheduleStatus>>),
    /// Fire what is due.
    Tick,
    /// Panic with this reason.
    InjectedFault(String),
}

crate::fault_injection!(SchedulesMsg);

/// The schedules actor (`node/schedules`).
#[derive(Clone)]
pub struct Schedules {
    /// This node.
    pub node_id: Arc<str>,
    /// Where schedules are kept.
    pub storage: Arc<dyn Storage>,
    /// Live node ids, from membership (empty until it has a view).
    pub live: tokio::sync::watch::Receiver<Vec<String>>,
    /// Submits a tick's task.
    pub fire: FireFn,
}

struct Held {
    record: ScheduleRecord,
    cron: Cron,
    /// Ticks up to here are done (fired or not ours); `None` while another
    /// node fires it.
    fired_through: Option<u64>,
    last_fired: Option<u64>,
}

/// State: the store and every schedule held.
pub struct SchedulesState {
    store: Arc<dyn ScheduleStore>,
    held: HashMap<String, Held>,
}

impl Schedules {
    /// The holder that fires `record` given who is alive.
    fn owner<'a>(record: &'a ScheduleRecord, live: &[String]) -> Option<&'a str> {
        record
            .holders
            .iter()
            .find(|h| live.contains(h))
            .map(String::as_str)
    }

    fn hold(state: &mut SchedulesState, record: ScheduleRecord) {
        match parse_cron(&record.cron) {
            Ok(cron) => {
                state.held.insert(
                    record.id.clone(),
                    Held {
                        record,
                        cron,
                        fired_through: None,
                        last_fired: None,
                    },
                );
            }
            Err(e) => tracing::error!(schedule = %record.id, "stored cron does not parse: {e}"),
        }
    }

    fn tick(&self, state: &mut SchedulesState) {
        let live = self.live.borrow().clone();
        if live.is_empty() {
            return;
        }
        let now = now_ms();
        for held in state.held.values_mut() {
            if Self::owner(&held.record, &live) != Some(&*self.node_id) {
                held.fired_through = None;
                continue;
            }
            let mut cursor = *held.fired_through.get_or_insert_with(|| {
                tracing::info!(schedule = %held.record.id, "firing this schedule from now on");
                now.saturating_sub(CATCH_UP.as_millis() as u64)
                    .max(held.record.created_at_ms)
            });
            for _ in 0..MAX_FIRES_PER_ROUND {
                match next_tick(&held.cron, cursor) {
                    Some(tick) if tick <= now => {
                        (self.fire)(&held.record, tick);
                        metrics::counter!("troupe_schedule_fires_total").increment(1);
                        held.last_fired = Some(tick);
                        cursor = tick;
                    }
                    _ => break,
                }
            }
            held.fired_through = Some(cursor);
        }
    }

    fn list(&self, state: &SchedulesState) -> Vec<ScheduleStatus> {
        let live = self.live.borrow().clone();
        let now = now_ms();
        let mut out: Vec<ScheduleStatus> = state
            .held
            .values()
            .map(|held| ScheduleStatus {
                record: held.record.clone(),
                owner: Self::owner(&held.record, &live).map(str::to_owned),
                next_fire_ms: next_tick(&held.cron, held.fired_through.unwrap_or(now).max(now)),
                last_fired_ms: held.last_fired,
            })
            .collect();
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        out
    }
}

impl Actor for Schedules {
    type Msg = SchedulesMsg;
    type State = SchedulesState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = self.storage.schedules()?;
        let mut state = SchedulesState {
            store: Arc::clone(&store),
            held: HashMap::new(),
        };
        for record in store.all()? {
            Self::hold(&mut state, record);
        }
        myself.send_interval(TICK, || SchedulesMsg::Tick);
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulesMsg::Put(record, reply) => {
                let stored = state.store.put(&record);
                if stored.is_ok() {
                    Self::hold(state, *record);
                }
                let _ = reply.send(stored);
            }
            SchedulesMsg::Delete(id, reply) => {
                state.held.remove(&id);
                let _ = reply.send(state.store.delete(&id));
            }
            SchedulesMsg::List(reply) => {
                let _ = reply.send(self.list(state));
            }
            SchedulesMsg::Tick => self.tick(state),
            SchedulesMsg::InjectedFault(reason) => panic!("injected fault: {reason}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_expressions_parse_and_bad_ones_say_why() {
        let every_5_min = parse_cron("*/5 * * * *").expect("five fields");
        // 2026-01-01T00:02:30Z → 00:05:00Z.
        let at = 1_767_225_750_000;
        assert_eq!(next_tick(&every_5_min, at), Some(1_767_225_900_000));
        let every_2_s = parse_cron("*/2 * * * * *").expect("six fields");
        assert_eq!(next_tick(&every_2_s, at), Some(at + 2_000));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("every minute").is_err());
    }

    #[test]
    fn the_first_live_holder_fires() {
        let record = ScheduleRecord {
            id: "s".into(),
            name: None,
            cron: "* * * * *".into(),
            task: troupe_protocol::SubmitTask::default(),
            holders: vec!["n2".into(), "n1".into()],
            created_at_ms: 0,
        };
        let live = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            Schedules::owner(&record, &live(&["n1", "n2", "n3"])),
            Some("n2")
        );
        assert_eq!(Schedules::owner(&record, &live(&["n1", "n3"])), Some("n1"));
        assert_eq!(Schedules::owner(&record, &live(&["n3"])), None);
    }
}
