//! What operators watch: readiness (is each PBX connected, can each Zoho account get a token,
//! is the outbox moving) and Prometheus metrics.
//!
//! Metrics go through the `metrics` facade, so the stages only count; the Prometheus text is
//! rendered by `metrics-exporter-prometheus` when `/metrics` is scraped. Outbox gauges are
//! read from the store at scrape time, so several bridges sharing a store report the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::store::Store;
use crate::zoho::api::ZohoApi;

/// Due rows older than this make the bridge not ready: deliveries are stuck.
pub const STUCK_AFTER_SECONDS: f64 = 300.0;

/// Live state the daemon updates and the HTTP side reads.
#[derive(Default)]
pub struct Health {
    /// PBX name → AMI session up.
    pbx: Mutex<BTreeMap<String, bool>>,
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
        let ready =
            !pbx.is_empty() && pbx.values().all(|up| *up) && zoho.values().all(|ok| *ok) && moving;
        let outbox = match outbox {
            Ok(s) => json!(s),
            Err(e) => json!({ "error": e.to_string() }),
        };
        (
            ready,
            json!({ "ready": ready, "pbx": pbx, "zoho": zoho, "outbox": outbox, "outbox_stuck_after_seconds": STUCK_AFTER_SECONDS }),
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
