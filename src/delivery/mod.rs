//! Delivery workers: the outbox → Zoho stage.
//!
//! A worker leases due rows, looks up the owner (the Zoho user with the agent's e-mail, else
//! the administrator) and the Contact or Lead of the far party's number (both cached by
//! [`ZohoApi`]), sends the records in one insert per account and module, and records each
//! outcome. Transient failures come back later with exponential backoff and jitter (a 429's
//! `Retry-After` honoured); permanent ones are parked as `failed` with Zoho's reason. A row
//! whose earlier attempt may have reached Zoho (timeout after sending, a lease that ran out)
//! is first looked up in Zoho, by the configured unique field or by subject and time, so it
//! is never created twice.

mod batching;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{ActivityConfig, Config, DeliveryConfig};
use crate::store::{now_micros, Delivered, Leased, Store};
use crate::zoho::activity::{link, Lookups};
use crate::zoho::api::{Module, RecordOutcome, ZohoApi};
use crate::zoho::oauth::OAuth;
use crate::zoho::{Retry, ZohoError};

/// The outbox workers of one bridge process.
pub struct Delivery {
    store: Store,
    apis: HashMap<String, Arc<ZohoApi>>,
    confs: BTreeMap<String, ActivityConfig>,
    cfg: DeliveryConfig,
    instance: String,
    wake: Notify,
    /// One plan-and-lease at a time in this process, so two workers do not split a batch.
    planning: tokio::sync::Mutex<()>,
}

/// Rows sent in one insert: same account, module and workflow list.
type Group = (String, String, Option<Vec<String>>, Vec<Leased>);

/// A row ready to send, or already in Zoho.
enum Prepared {
    Send(Map<String, Value>, Delivered),
    Exists(Delivered),
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bridge".into());
    format!("{host}:{}", std::process::id())
}

/// One Zoho client per account, sharing caches between workers.
pub fn zoho_clients(cfg: &Config) -> Result<HashMap<String, Arc<ZohoApi>>, ZohoError> {
    let mut apis = HashMap::new();
    for (name, acc) in &cfg.zoho.accounts {
        let http = reqwest::Client::builder()
            .timeout(crate::ops::seconds(
                acc.timeout_seconds.max(1.0),
                Duration::from_secs(30),
            ))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ZohoError::Config(format!("HTTP client: {e}")))?;
        let oauth = Arc::new(OAuth::new(name, acc, http.clone())?);
        apis.insert(
            name.clone(),
            Arc::new(ZohoApi::new(oauth, acc, &cfg.calls.default_country, http)),
        );
    }
    Ok(apis)
}

/// Errors about the account rather than the record: the operator fixes the account and the
/// rows go through, so they wait instead of being parked.
fn account_level(e: &ZohoError) -> bool {
    match e {
        ZohoError::OAuth { .. }
        | ZohoError::NotAuthorized { .. }
        | ZohoError::Store { .. }
        | ZohoError::Config(_) => true,
        ZohoError::Api { status, code, .. } => {
            matches!(status, 401 | 403)
                || matches!(code.as_str(), "OAUTH_SCOPE_MISMATCH" | "INVALID_TOKEN")
        }
        _ => false,
    }
}

impl Delivery {
    pub fn new(cfg: &Config, store: Store, apis: HashMap<String, Arc<ZohoApi>>) -> Delivery {
        Delivery {
            store,
            apis,
            confs: cfg.zoho.configurations.clone(),
            cfg: cfg.delivery.clone(),
            instance: cfg
                .delivery
                .instance
                .clone()
                .unwrap_or_else(default_instance),
            wake: Notify::new(),
            planning: tokio::sync::Mutex::new(()),
        }
    }

    /// New rows are in the outbox: a sleeping worker looks now rather than at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn apis(&self) -> &HashMap<String, Arc<ZohoApi>> {
        &self.apis
    }

    /// Starts the workers; they stop leasing when `stop` is cancelled and end after the
    /// deliveries in flight.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.spawn_supervised(stop, Arc::new(crate::ops::Health::default()))
    }

    /// [`Delivery::spawn`], with panics counted and shown in `health`. A bug that panics a
    /// worker must not stop delivery silently: its leases run out, and a fresh worker takes
    /// its place (see [`crate::supervise`]).
    pub fn spawn_supervised(
        self: &Arc<Self>,
        stop: CancellationToken,
        health: Arc<crate::ops::Health>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        // The phone indexes are refreshed here, off the delivery path.
        for api in self.apis.values() {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    api.keep_index().await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            });
        }
        (0..self.cfg.workers)
            .map(|i| {
                let me = self.clone();
                let st = stop.clone();
                tokio::spawn(crate::supervise::restart_on_panic(
                    format!("delivery#{i}"),
                    health.clone(),
                    stop.clone(),
                    move || {
                        let (w, st) = (me.clone(), st.clone());
                        async move { w.work(i, st).await }
                    },
                ))
            })
            .collect()
    }

    async fn work(&self, index: usize, stop: CancellationToken) {
        let owner = format!("{}#{index}", self.instance);
        crate::supervise::test_panic("delivery");
        let poll = crate::ops::seconds(self.cfg.poll_seconds, Duration::from_secs(5));
        while !stop.is_cancelled() {
            let mut sleep = poll;
            match self.lease_batch(&owner).await {
                Ok((rows, _)) if !rows.is_empty() => {
                    self.deliver(&owner, rows).await;
                    // More may be due at once: wake a sibling.
                    self.wake.notify_one();
                    continue;
                }
                Ok((_, Some(wake_at))) => {
                    let wait = (wake_at - now_micros()).max(1000) as u64;
                    sleep = sleep.min(Duration::from_micros(wait));
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "leasing outbox rows"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.cancelled() => {}
            }
        }
    }

    /// Leases the rows to send now, per [`batching::plan`]: a group of ten (or tens) at once,
    /// fewer once the oldest has lingered. Also returns when to look again if a group is
    /// waiting for company or a retry is due.
    async fn lease_batch(
        &self,
        owner: &str,
    ) -> Result<(Vec<Leased>, Option<i64>), crate::store::StoreError> {
        let lease = (self.cfg.lease_seconds * 1e6) as i64;
        let linger = (self.cfg.linger_seconds * 1e6) as i64;
        let _planning = self.planning.lock().await;
        let now = now_micros();
        let groups = self.store.due_groups(now).await?;
        let plan = batching::plan(&groups, now, linger, self.cfg.batch_size);
        let next_retry = self.store.next_due(now).await?;
        let wake_at = match (plan.wake_at, next_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some((i, n)) = plan.take else {
            return Ok((Vec::new(), wake_at));
        };
        let g = &groups[i];
        let rows = self
            .store
            .lease_group(owner, &g.account, &g.module, n, lease)
            .await?;
        if !rows.is_empty() {
            metrics::histogram!("azb_delivery_batch_rows").record(rows.len() as f64);
        }
        Ok((rows, wake_at))
    }

    /// Sends leased rows, one insert per (account, module, workflow list).
    pub async fn deliver(&self, owner: &str, rows: Vec<Leased>) {
        let mut groups: Vec<Group> = Vec::new();
        for row in rows {
            match groups.iter_mut().find(|g| {
                g.0 == row.record.account && g.1 == row.record.module && g.2 == row.record.workflows
            }) {
                Some(g) => g.3.push(row),
                None => groups.push((
                    row.record.account.clone(),
                    row.record.module.clone(),
                    row.record.workflows.clone(),
                    vec![row],
                )),
            }
        }
        for (account, module, workflows, rows) in groups {
            self.deliver_group(owner, &account, &module, workflows.as_deref(), rows)
                .await;
        }
    }

    async fn deliver_group(
        &self,
        owner: &str,
        account: &str,
        module: &str,
        workflows: Option<&[String]>,
        rows: Vec<Leased>,
    ) {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        if let Err(e) = self.store.mark_requested(&ids, now_micros()).await {
            tracing::warn!(error = %e, "noting request time");
        }
        let Some(api) = self.apis.get(account) else {
            for row in &rows {
                let why = format!("no Zoho account '{account}' in the configuration");
                self.settle_fail(row, owner, &why).await;
            }
            return;
        };
        let mut ready = Vec::new();
        for row in rows {
            let span = tracing::info_span!("deliver", linkedid = %row.linkedid, row = row.id);
            match self.prepare(api, &row).instrument(span).await {
                Ok(Prepared::Exists(d)) => {
                    tracing::info!(zoho_id = %d.zoho_id, "the record was already in Zoho: not sent again");
                    self.settle_delivered(&row, owner, &d).await;
                }
                Ok(Prepared::Send(record, d)) => ready.push((row, record, d)),
                Err(e) => self.settle_error(&row, owner, &e).await,
            }
        }
        let lease = (self.cfg.lease_seconds * 1e6) as i64;
        let ids: Vec<i64> = ready.iter().map(|r| r.0.id).collect();
        let held = match self.store.renew(&ids, owner, lease).await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "renewing leases; not sending (the rows come back when the leases end)");
                return;
            }
        };
        ready.retain(|(row, _, _)| {
            let ok = held.contains(&row.id);
            if !ok {
                tracing::warn!(linkedid = %row.linkedid, row = row.id, "lease ran out during lookups: another worker has the row, not sending");
            }
            ok
        });
        if ready.is_empty() {
            return;
        }
        let records: Vec<Map<String, Value>> = ready.iter().map(|r| r.1.clone()).collect();
        let result = api.insert(module, &records, workflows).await;
        match result {
            Ok(outcomes) => {
                for ((row, _, mut d), outcome) in ready.into_iter().zip(outcomes) {
                    match outcome {
                        RecordOutcome::Created { id } => {
                            d.zoho_id = id;
                            self.settle_delivered(&row, owner, &d).await;
                        }
                        RecordOutcome::Duplicate { id, field } => {
                            tracing::info!(linkedid = %row.linkedid, %field, zoho_id = %id, "Zoho already has this record (unique field): not created twice");
                            d.zoho_id = id;
                            self.settle_delivered(&row, owner, &d).await;
                        }
                        RecordOutcome::Failed(e) => self.settle_error(&row, owner, &e).await,
                    }
                }
            }
            Err(e) => {
                for (row, _, _) in &ready {
                    self.settle_error(row, owner, &e).await;
                }
            }
        }
    }

    /// Owner and Contact/Lead lookups (cached), and for a row of unknown outcome, whether
    /// Zoho already has it.
    async fn prepare(&self, api: &ZohoApi, row: &Leased) -> Result<Prepared, ZohoError> {
        let owner = api.owner_for(row.record.agent_email.as_deref()).await?;
        let user_email = if owner.fallback {
            Some(api.admin().await?.email)
        } else {
            row.record.agent_email.clone()
        };
        let person = match row.record.remote_number.as_deref() {
            Some(n) => api.find_by_phone(n).await?,
            None => None,
        };
        let (contact_id, lead_id) = match &person {
            Some(p) if p.module == Module::Contacts => (Some(p.id.clone()), None),
            Some(p) => (None, Some(p.id.clone())),
            None => (None, None),
        };
        let mut d = Delivered {
            zoho_id: String::new(),
            owner_id: Some(owner.id.clone()),
            user_email,
            contact_id: contact_id.clone(),
            lead_id: lead_id.clone(),
        };
        if row.unknown_outcome {
            if let Some(id) = self.find_existing(api, row).await? {
                d.zoho_id = id;
                return Ok(Prepared::Exists(d));
            }
        }
        let mut record = row.record.payload.clone();
        link(
            &mut record,
            &Lookups {
                owner_id: Some(owner.id),
                contact_id,
                lead_id,
            },
        );
        Ok(Prepared::Send(record, d))
    }

    /// Looks the row's record up in Zoho: by the unique field when configured, else by the
    /// fields that make it distinct (subject and start time; subject and due date for tasks).
    async fn find_existing(
        &self,
        api: &ZohoApi,
        row: &Leased,
    ) -> Result<Option<String>, ZohoError> {
        let text = |k: &str| {
            row.record
                .payload
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let unique = self
            .confs
            .get(&row.record.configuration)
            .and_then(|c| c.unique_field.clone())
            .filter(|_| row.record.module == "Calls");
        let mut equals: Vec<(String, String)> = Vec::new();
        if let Some(field) = unique {
            if let Some(v) = text(&field) {
                equals.push((field, v));
            }
        }
        if equals.is_empty() {
            let second = if row.record.module == "Calls" {
                "Call_Start_Time"
            } else {
                "Due_Date"
            };
            for k in ["Subject", second] {
                if let Some(v) = text(k) {
                    equals.push((k.to_string(), v));
                }
            }
        }
        if equals.is_empty() {
            return Ok(None);
        }
        let pairs: Vec<(&str, &str)> = equals
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        tracing::info!(linkedid = %row.linkedid, "an earlier attempt may have reached Zoho: checking before sending again");
        api.find_record(&row.record.module, &pairs).await
    }

    async fn settle_delivered(&self, row: &Leased, owner: &str, d: &Delivered) {
        match self.store.delivered(row, owner, d).await {
            Ok(true) => {
                metrics::counter!("azb_activities_delivered_total").increment(1);
                tracing::info!(linkedid = %row.linkedid, trigger = %row.record.trigger, module = %row.record.module, zoho_id = %d.zoho_id, "delivered");
            }
            Ok(false) => {
                tracing::warn!(linkedid = %row.linkedid, "lease lost before the outcome was stored; the next holder checks Zoho first")
            }
            Err(e) => {
                tracing::error!(linkedid = %row.linkedid, error = %e, "storing a delivery; the row will be checked against Zoho when its lease ends")
            }
        }
    }

    async fn settle_fail(&self, row: &Leased, owner: &str, why: &str) {
        metrics::counter!("azb_activities_failed_total").increment(1);
        tracing::error!(linkedid = %row.linkedid, trigger = %row.record.trigger, error = %why, "delivery failed for good; `ami-zoho-bridge outbox retry` sends it again");
        if let Err(e) = self.store.fail(row, owner, why).await {
            tracing::error!(error = %e, "parking an outbox row");
        }
    }

    async fn settle_error(&self, row: &Leased, owner: &str, e: &ZohoError) {
        let retry = e.retry();
        let give_up = self.cfg.max_attempts > 0 && row.attempts >= i64::from(self.cfg.max_attempts);
        if retry == Retry::Permanent && !account_level(e) || give_up {
            return self.settle_fail(row, owner, &e.to_string()).await;
        }
        let mut delay = self.backoff(row.attempts);
        if account_level(e) {
            delay = crate::ops::seconds(
                self.cfg.backoff_max_seconds.min(60.0),
                Duration::from_secs(60),
            );
        }
        if let ZohoError::Throttled {
            retry_after_seconds: Some(s),
            ..
        } = e
        {
            delay = delay.max(Duration::from_secs((*s).min(MAX_RETRY_AFTER_SECONDS)));
        }
        tracing::warn!(linkedid = %row.linkedid, attempt = row.attempts, retry_in_ms = delay.as_millis() as u64, error = %e, "delivery will be retried");
        metrics::counter!("azb_delivery_retries_total").increment(1);
        let next = retry_at(now_micros(), delay);
        if let Err(err) = self
            .store
            .retry_later(row, owner, next, &e.to_string(), retry == Retry::Unknown)
            .await
        {
            tracing::error!(error = %err, "rescheduling an outbox row; its lease will run out and it will be checked first");
        }
    }

    /// `initial × 2^(attempt-1)`, capped, with "equal jitter": half fixed, half random, so
    /// bridges that failed together do not retry together.
    fn backoff(&self, attempts: i64) -> Duration {
        use rand::Rng;
        let exp = attempts.clamp(1, 30) as i32 - 1;
        let base =
            (self.cfg.backoff_initial_seconds * 2f64.powi(exp)).min(self.cfg.backoff_max_seconds);
        let jitter = rand::rng().random_range(0.0..=0.5);
        crate::ops::seconds(base * (0.5 + jitter), Duration::from_secs(60))
    }
}

/// A `Retry-After` longer than this is taken as this: a day is already far past any real
/// throttle, and a larger value (up to `u64::MAX`) must not overflow the time arithmetic.
pub const MAX_RETRY_AFTER_SECONDS: u64 = 24 * 3600;

/// `now + delay` in microseconds, saturating instead of wrapping however large `delay` is.
pub fn retry_at(now_micros: i64, delay: Duration) -> i64 {
    let delay = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
    now_micros.saturating_add(delay)
}

#[cfg(test)]
mod hardening_tests {
    use super::*;

    #[test]
    fn retry_time_saturates() {
        assert_eq!(retry_at(1_000, Duration::from_secs(u64::MAX)), i64::MAX);
        assert_eq!(retry_at(1_000, Duration::from_secs(2)), 2_001_000);
        assert_eq!(retry_at(i64::MAX - 1, Duration::from_secs(1)), i64::MAX);
    }
}
