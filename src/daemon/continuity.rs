//! The daemon's side of continuity: one PBX clock, live calls saved across restarts, and the
//! gap metrics.
//!
//! - [`StreamClock`]: the tracker runs on PBX time only. The offset between the PBX's clock and
//!   this host's is learned from every `Timestamp:` and applied to wall time for whatever has
//!   none (`FullyBooted`, the resync lists, the timer). It is saved with the live calls, so a
//!   restarted bridge uses the PBX's clock from its first event, not its own.
//! - [`LiveSaver`]: what the tracker knows of live calls goes to the store four times a second
//!   when it changed (a background writer that only ever keeps the latest snapshot, so the
//!   event loop never waits on the database) and once more at shutdown. [`restore`] loads it
//!   before the first session; the login's resync then reconciles it with the PBX.
//! - [`GapMeter`]: how many gaps, how many seconds of stream were lost, how many calls were
//!   recovered after a restart; [`count_resynced`]: how many finished calls lived through a gap
//!   (their `gaps` were reconciled from the PBX's lists).

use std::time::Instant;

use tokio::sync::watch;

use crate::ami::Message;
use crate::calls::{LiveState, Micros, Output, Tracker};
use crate::store::{now_micros, Store};

/// PBX time from wall time: `wall + offset`, the offset learned from the last `Timestamp:`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamClock {
    offset: Option<i64>,
}

impl StreamClock {
    /// A clock with an offset known from before (a saved state), or none yet.
    pub fn new(offset: Option<i64>) -> StreamClock {
        StreamClock { offset }
    }

    /// Learns the offset from a message's `Timestamp:` (if it has one).
    pub fn observe(&mut self, m: &Message) {
        if let Some(ts) = m.get("Timestamp").and_then(Micros::parse_epoch) {
            self.offset = Some(ts.0 - now_micros());
        } else if self.offset.is_none()
            && m.get("Privilege").is_some()
            && m.event().is_some_and(|e| e != b"FullyBooted")
        {
            // An event the PBX classed (it has `Privilege:`) without a `Timestamp:`: the PBX
            // runs without `timestampevents`, so its own time will never be known and the
            // arrival time is the only estimate there is (FullyBooted, which never carries
            // one, and list items, which have no Privilege, say nothing about that).
            self.offset = Some(0);
        }
    }

    /// The PBX's time now; `Micros(0)` while no offset is known, which the tracker reads as
    /// "the last stream time seen" (this host's clock is never used as the PBX's).
    pub fn now(&self) -> Micros {
        match self.offset {
            Some(o) => Micros(now_micros() + o),
            None => Micros(0),
        }
    }

    /// Whether the PBX's time is known (a Timestamp seen, now or in a saved state).
    pub fn is_known(&self) -> bool {
        self.offset.is_some()
    }

    pub fn offset(&self) -> Option<i64> {
        self.offset
    }
}

/// What is saved per PBX and instance: the tracker's live state and the clock's offset.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LiveRecord {
    pub clock_offset: Option<i64>,
    pub tracker: LiveState,
}

/// What [`restore`] found.
#[derive(Debug, Default)]
pub struct Restored {
    pub clock: StreamClock,
    /// Live calls the tracker holds after the restore.
    pub calls: usize,
    /// When the snapshot was written (this host's clock, µs), if there was one.
    pub saved_at: Option<i64>,
}

/// Loads this instance's saved live state into `tracker` (before the first session). A store
/// that cannot be read or a snapshot that does not parse (another version) is logged and the
/// bridge starts empty: the resync still finds the calls that are up, only less precisely.
pub async fn restore(store: &Store, pbx: &str, instance: &str, tracker: &mut Tracker) -> Restored {
    let saved = match store.load_live(pbx, instance).await {
        Ok(Some(s)) => s,
        Ok(None) => return Restored::default(),
        Err(e) => {
            tracing::error!(pbx, error = %e, "cannot read the saved live calls; starting without them");
            return Restored::default();
        }
    };
    match serde_json::from_str::<LiveRecord>(&saved.state) {
        Ok(record) => {
            tracker.restore_live(record.tracker);
            let calls = tracker.live_calls();
            tracing::info!(
                pbx,
                instance,
                live_calls = calls,
                saved_seconds_ago = (now_micros() - saved.saved_at) as f64 / 1e6,
                "live calls restored from the store"
            );
            Restored {
                clock: StreamClock::new(record.clock_offset),
                calls,
                saved_at: Some(saved.saved_at),
            }
        }
        Err(e) => {
            tracing::warn!(pbx, instance, error = %e, "the saved live calls do not parse (another version?); starting without them");
            Restored::default()
        }
    }
}

/// Saves the tracker's live state when it changed (the daemon offers it every 250 ms), without
/// making the event loop wait: a writer task takes the latest snapshot from a watch channel.
pub struct LiveSaver {
    store: Store,
    pbx: String,
    instance: String,
    last: String,
    latest: watch::Sender<Option<(i64, String)>>,
    writer: tokio::task::JoinHandle<()>,
}

impl LiveSaver {
    pub fn start(store: Store, pbx: &str, instance: &str) -> LiveSaver {
        let (latest, mut rx) = watch::channel::<Option<(i64, String)>>(None);
        let (s, p, i) = (store.clone(), pbx.to_string(), instance.to_string());
        let writer = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let snapshot = rx.borrow_and_update().clone();
                if let Some((at, state)) = snapshot {
                    if let Err(e) = s.save_live(&p, &i, at, &state).await {
                        tracing::error!(pbx = %p, error = %e, "saving the live calls; retried with the next change");
                    }
                }
            }
        });
        LiveSaver {
            store,
            pbx: pbx.to_string(),
            instance: instance.to_string(),
            last: String::new(),
            latest,
            writer,
        }
    }

    fn snapshot(tracker: &Tracker, clock: &StreamClock) -> Option<String> {
        let record = LiveRecord {
            clock_offset: clock.offset(),
            tracker: tracker.save_live(),
        };
        match serde_json::to_string(&record) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise the live calls");
                None
            }
        }
    }

    /// Hands the current state to the writer if it changed since the last one.
    pub fn offer(&mut self, tracker: &Tracker, clock: &StreamClock) {
        let Some(state) = Self::snapshot(tracker, clock) else {
            return;
        };
        if state != self.last {
            self.last = state.clone();
            let _ = self.latest.send(Some((now_micros(), state)));
        }
    }

    /// Stops the writer and saves the final state itself (shutdown).
    pub async fn finish(self, tracker: &Tracker, clock: &StreamClock) {
        let LiveSaver {
            store,
            pbx,
            instance,
            latest,
            writer,
            ..
        } = self;
        drop(latest);
        let _ = writer.await;
        if let Some(state) = Self::snapshot(tracker, clock) {
            match store.save_live(&pbx, &instance, now_micros(), &state).await {
                Ok(()) => {
                    tracing::info!(pbx = %pbx, live_calls = tracker.live_calls(), "live calls saved for the next start")
                }
                Err(e) => {
                    tracing::error!(pbx = %pbx, error = %e, "cannot save the live calls at shutdown: the next start finds them with the resync only")
                }
            }
        }
    }
}

/// Gap metrics of one PBX: a gap runs from a lost session (or this process's last save before
/// a restart) to the next login.
pub struct GapMeter {
    pbx: String,
    since: Option<Instant>,
    /// Seconds of a gap that began before this process started (restart).
    restart_gap: Option<f64>,
}

impl GapMeter {
    pub fn new(pbx: &str, restored: &Restored) -> GapMeter {
        if restored.calls > 0 {
            metrics::counter!("azb_calls_recovered_total", "pbx" => pbx.to_string())
                .increment(restored.calls as u64);
        }
        GapMeter {
            pbx: pbx.to_string(),
            since: None,
            restart_gap: restored
                .saved_at
                .map(|at| ((now_micros() - at) as f64 / 1e6).max(0.0)),
        }
    }

    pub fn disconnected(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// A session is up: the gap before it (if any) is over.
    pub fn connected(&mut self) {
        let seconds = match (self.since.take(), self.restart_gap.take()) {
            (Some(at), _) => at.elapsed().as_secs_f64(),
            (None, Some(s)) => s,
            (None, None) => return,
        };
        metrics::counter!("azb_ami_gaps_total", "pbx" => self.pbx.clone()).increment(1);
        // A gauge only ever increased: the metrics facade's counters are whole numbers, and a
        // 0.4 s gap must not round away.
        metrics::gauge!("azb_ami_gap_seconds_total", "pbx" => self.pbx.clone()).increment(seconds);
        tracing::info!(pbx = %self.pbx, gap_seconds = seconds, "AMI stream gap over");
    }
}

/// Counts the finished calls that lived through a gap (`azb_calls_resynced_total`).
pub fn count_resynced(pbx: &str, outputs: &[Output]) {
    let n = outputs
        .iter()
        .filter(|o| matches!(o, Output::Finished(c) if !c.gaps.is_empty()))
        .count();
    if n > 0 {
        metrics::counter!("azb_calls_resynced_total", "pbx" => pbx.to_string()).increment(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timestamp(ts: &str) -> Message {
        Message::from_pairs(&[("Event", "Newchannel"), ("Timestamp", ts)])
    }

    /// A PBX 90 s ahead of this host: the estimate follows the PBX, not this host's clock.
    #[test]
    fn the_clock_is_the_pbxs_once_a_timestamp_is_seen() {
        let mut clock = StreamClock::default();
        assert!(!clock.is_known());
        assert_eq!(
            clock.now(),
            Micros(0),
            "no estimate before the PBX's time is known"
        );
        let pbx = now_micros() + 90_000_000;
        clock.observe(&with_timestamp(&format!(
            "{}.{:06}",
            pbx / 1_000_000,
            pbx % 1_000_000
        )));
        assert!(clock.is_known());
        let ahead = clock.now().0 - now_micros();
        assert!((89_000_000..=91_000_000).contains(&ahead), "{ahead}");
        // A message without a Timestamp changes nothing; the offset survives a restart.
        clock.observe(&Message::from_pairs(&[("Event", "FullyBooted")]));
        let again = StreamClock::new(clock.offset());
        let ahead = again.now().0 - now_micros();
        assert!((89_000_000..=91_000_000).contains(&ahead), "{ahead}");
    }

    #[test]
    fn a_saved_record_round_trips_through_json() {
        let record = LiveRecord {
            clock_offset: Some(-90_000_000),
            tracker: LiveState::default(),
        };
        let text = serde_json::to_string(&record).unwrap();
        let back: LiveRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.clock_offset, Some(-90_000_000));
        assert_eq!(back.tracker, record.tracker);
    }
}
