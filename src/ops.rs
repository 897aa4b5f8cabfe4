//! What operators watch: readiness (is each PBX connected, can each Zoho account get a token,
//! is the outbox moving) and Prometheus metrics.
//!
//! Metrics go through the `metrics` facade, so the stages only count; the Prometheus text is
//! rendered by `metrics-exporter-prometheus` when `/metrics` is scraped. Outbox gauges are
//! read from the store at scrape time, so several bridges sharing a store report the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::store::Store;
use crate::zoho::api::ZohoApi;

/// A store write in progress for longer than this makes the bridge not ready.
pub const STORE_STALLED_AFTER_SECONDS: f64 = 3.0;

/// Due rows older than this make the bridge not ready: deliveries are stuck.
pub const STUCK_AFTER_SECONDS: f64 = 300.0;

/// Live state the daemon updates and the HTTP side reads.
#[derive(Default)]
pub struct Health {
    /// PBX name → AMI session up.
    pbx: Mutex<BTreeMap<String, bool>>,
    /// Why the store cannot write now (None: the last write went through).
    store_error: Mutex<Option<String>>,
    /// Finished calls waiting in memory for the store.
    store_queue: AtomicUsize,
    /// When the write in progress began (None: no write in progress).
    store_writing_since: Mutex<Option<std::time::Instant>>,
    /// Long-running task → panics so far; a task listed in `dead` is not running.
    panics: Mutex<BTreeMap<String, u64>>,
    dead: Mutex<BTreeMap<String, String>>,
}

impl Health {
    pub fn set_pbx(&self, name: &str, connected: bool) {
        if let Ok(mut m) = self.pbx.lock() {
            m.insert(name.to_string(), connected);
        }
    }

    fn pbx(&self) -> BTreeMap<String, bool> {
        self.pbx.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The store failed to write (`Some(reason)`) or wrote (`None`).
    pub fn set_store_error(&self, error: Option<String>) {
        if let Ok(mut e) = self.store_error.lock() {
            *e = error;
        }
    }

    pub fn store_error(&self) -> Option<String> {
        self.store_error.lock().ok().and_then(|e| e.clone())
    }

    /// A write began (`true`) or ended (`false`).
    pub fn set_store_writing(&self, writing: bool) {
        if let Ok(mut w) = self.store_writing_since.lock() {
            *w = writing.then(|| w.unwrap_or_else(std::time::Instant::now));
        }
    }

    /// How long the write in progress has taken, if one is.
    pub fn store_writing_for(&self) -> Option<Duration> {
        self.store_writing_since
            .lock()
            .ok()
            .and_then(|w| w.map(|t| t.elapsed()))
    }

    pub fn set_store_queue(&self, calls: usize) {
        self.store_queue.store(calls, Ordering::Relaxed);
        metrics::gauge!("azb_store_queue_calls").set(calls as f64);
    }

    pub fn store_queue(&self) -> usize {
        self.store_queue.load(Ordering::Relaxed)
    }

    /// A supervised task panicked: logged by the supervisor, counted here and in
    /// `azb_task_panics_total`.
    pub fn task_panicked(&self, task: &str) {
        metrics::counter!("azb_task_panics_total", "task" => task.to_string()).increment(1);
        if let Ok(mut p) = self.panics.lock() {
            *p.entry(task.to_string()).or_default() += 1;
        }
    }

    pub fn panics(&self) -> BTreeMap<String, u64> {
        self.panics.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// A task is down (`Some(why)`) or running again (`None`): `/readyz` says not ready
    /// while any is down.
    pub fn set_task_down(&self, task: &str, why: Option<String>) {
        if let Ok(mut d) = self.dead.lock() {
            match why {
                Some(w) => d.insert(task.to_string(), w),
                None => d.remove(task),
            };
        }
    }

    pub fn tasks_down(&self) -> BTreeMap<String, String> {
        self.dead.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// Longest duration a configured number of seconds becomes: far past any sensible setting,
/// short enough that `Instant::now() + d` cannot overflow.
pub const MAX_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

/// A configured number of seconds as a `Duration`, whatever the value: NaN, infinite or
/// negative gives `fallback`, and anything past [`MAX_SECONDS`] is capped (never a panic,
/// unlike `Duration::from_secs_f64`). `config check` refuses such values; this is the runtime's
/// second line.
pub fn seconds(value: f64, fallback: Duration) -> Duration {
    if !value.is_finite() || value < 0.0 {
        return fallback;
    }
    Duration::try_from_secs_f64(value.min(MAX_SECONDS)).unwrap_or(fallback)
}

/// Parses `watch --idle-exit SECONDS`: a finite, non-negative number of seconds (at most
/// [`MAX_SECONDS`]). For clap: `#[arg(value_parser = ops::parse_idle_seconds)]`.
pub fn parse_idle_seconds(text: &str) -> Result<Duration, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
        return Err(format!(
            "'{text}': seconds must be between 0 and {MAX_SECONDS}"
        ));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("'{text}': {e}"))
}

/// Text from the PBX or the CRM made safe for a terminal: control characters (ESC, BEL,
/// backspace, carriage return, C1 controls such as CSI) and Unicode bidirectional overrides
/// are shown as `\u{..}` escapes, so a caller name cannot move the cursor, rewrite a line,
/// set the window title or hide text. Tabs stay; newlines become `\n`.
pub fn sanitize_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Installs the process-wide Prometheus recorder (once; later calls get None).
pub fn install_metrics() -> Option<PrometheusHandle> {
    let buckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("azb_zoho_request_seconds".into()),
            &buckets,
        )
        .ok()?
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
        .ok()
}

/// Everything `/readyz` and `/metrics` need.
pub struct Ops {
    pub health: Arc<Health>,
    pub metrics: Option<PrometheusHandle>,
    pub apis: HashMap<String, Arc<ZohoApi>>,
}

impl Ops {
    /// `(ready, details)`: every PBX connected, every account with a token, outbox moving.
    pub async fn readiness(&self, store: &Store) -> (bool, serde_json::Value) {
        let pbx = self.health.pbx();
        let mut zoho = BTreeMap::new();
        for (name, api) in &self.apis {
            zoho.insert(name.clone(), api.oauth().access().await.is_ok());
        }
        let outbox = store.outbox_stats().await;
        let moving = outbox
            .as_ref()
            .is_ok_and(|s| s.oldest_due_seconds < STUCK_AFTER_SECONDS);
        // A write that takes this long is a stuck store (locked, or a disk that hangs) even
        // before it fails.
        let store_error = self.health.store_error().or_else(|| {
            self.health
                .store_writing_for()
                .filter(|d| d.as_secs_f64() > STORE_STALLED_AFTER_SECONDS)
                .map(|d| format!("a write has been waiting for {} s", d.as_secs()))
        });
        let down = self.health.tasks_down();
        let ready = !pbx.is_empty()
            && pbx.values().all(|up| *up)
            && zoho.values().all(|ok| *ok)
            && moving
            && store_error.is_none()
            && down.is_empty();
        // The first reason, for people and for a details-free answer.
        let reason = if let Some(e) = &store_error {
            Some(format!("the store cannot write: {e}"))
        } else if let Some((task, why)) = down.iter().next() {
            Some(format!("task {task} is down: {why}"))
        } else if pbx.is_empty() || !pbx.values().all(|up| *up) {
            Some("a PBX is not connected".to_string())
        } else if !zoho.values().all(|ok| *ok) {
            Some("a Zoho account has no token".to_string())
        } else if !moving {
            Some("the outbox is not moving".to_string())
        } else {
            None
        };
        let outbox = match outbox {
            Ok(s) => json!(s),
            Err(e) => json!({ "error": e.to_string() }),
        };
        (
            ready,
            json!({ "ready": ready, "reason": reason, "pbx": pbx, "zoho": zoho, "outbox": outbox,
                    "outbox_stuck_after_seconds": STUCK_AFTER_SECONDS,
                    "store": { "error": store_error, "queued_calls": self.health.store_queue() },
                    "tasks_down": down, "task_panics": self.health.panics() }),
        )
    }

    /// Prometheus text, with the outbox gauges read now.
    pub async fn metrics_text(&self, store: &Store) -> String {
        if let Ok(s) = store.outbox_stats().await {
            metrics::gauge!("azb_outbox_rows", "state" => "pending").set(s.pending as f64);
            metrics::gauge!("azb_outbox_rows", "state" => "delivered").set(s.delivered as f64);
            metrics::gauge!("azb_outbox_rows", "state" => "failed").set(s.failed as f64);
            metrics::gauge!("azb_outbox_oldest_due_seconds").set(s.oldest_due_seconds);
        }
        for (name, up) in self.health.pbx() {
            metrics::gauge!("azb_ami_connected", "pbx" => name).set(if up { 1.0 } else { 0.0 });
        }
        self.metrics
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_is_neutralised() {
        let hostile = "Bob\x1b]0;pwned\x07\x1b[2J\r\u{9b}31m\u{202e}evil\tok\nnext";
        let clean = sanitize_terminal(hostile);
        assert!(
            !clean.chars().any(|c| c.is_control() && c != '\t'),
            "{clean:?}"
        );
        assert_eq!(
            clean,
            "Bob\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}\\u{9b}31m\\u{202e}evil\tok\\nnext"
        );
        assert!(matches!(
            sanitize_terminal("Zoë Müller"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn seconds_never_panic() {
        let fb = Duration::from_secs(7);
        assert_eq!(seconds(1e300, fb), Duration::from_secs_f64(MAX_SECONDS));
        assert_eq!(seconds(f64::NAN, fb), fb);
        assert_eq!(seconds(f64::INFINITY, fb), fb);
        assert_eq!(seconds(-1.0, fb), fb);
        assert_eq!(seconds(1.5, fb), Duration::from_millis(1500));
        // The capped value still adds to an Instant.
        let _ = std::time::Instant::now() + seconds(1e300, fb);
    }

    #[test]
    fn idle_exit_is_range_checked() {
        assert!(parse_idle_seconds("-1").is_err());
        assert!(parse_idle_seconds("1e300").is_err());
        assert!(parse_idle_seconds("NaN").is_err());
        assert!(parse_idle_seconds("x").is_err());
        assert_eq!(parse_idle_seconds("2.5"), Ok(Duration::from_millis(2500)));
    }
}
