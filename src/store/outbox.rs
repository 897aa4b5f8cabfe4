//! The outbox: one row per Zoho record to create, leased by delivery workers.
//!
//! States: `pending` (due at `next_attempt_at`, maybe leased), `delivered` (with the Zoho id),
//! `failed` (parked with the reason; `outbox retry` sends it again). A lease is a row's
//! `lease_owner` and `lease_until`: a worker that dies gives its rows up when the lease runs
//! out, and a row leased again while an earlier lease never completed is marked
//! `unknown_outcome`, so the next attempt first asks Zoho whether the record exists.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_micros, Backend, Store, StoreError};
use crate::calls::Call;

/// A record to create for a call.
#[derive(Debug, Clone)]
pub struct NewActivity {
    /// Idempotency key of the row: PBX, call, trigger and module.
    pub unique_key: String,
    pub trigger: String,
    /// `Calls` or `Tasks`.
    pub module: String,
    pub configuration: String,
    pub account: String,
    /// The rendered record without what needs Zoho (owner, Contact/Lead).
    pub payload: Map<String, Value>,
    pub workflows: Option<Vec<String>>,
    pub agent_email: Option<String>,
    /// The far party's number, for the Contact/Lead lookup.
    pub remote_number: Option<String>,
    /// Set when the record could not be rendered: the row is stored `failed` with the reason
    /// (and an empty payload), never sent, until `outbox retry` renders it again.
    pub unrendered: Option<Unrendered>,
}

/// Why a record could not be rendered, and what rendering it again needs.
#[derive(Debug, Clone)]
pub struct Unrendered {
    pub reason: String,
    /// The call as rendering sees it (`zoho::activity::CallSnapshot` as JSON).
    pub snapshot: String,
}

/// A parked row waiting to be rendered again (see [`Unrendered`]).
#[derive(Debug, Clone)]
pub struct UnrenderedRow {
    pub id: i64,
    pub unique_key: String,
    pub pbx: String,
    pub linkedid: String,
    pub trigger: String,
    pub module: String,
    pub configuration: String,
    pub snapshot: String,
}

/// A row a worker holds: the record as it was stored, and the delivery state around it.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: i64,
    pub pbx: String,
    pub linkedid: String,
    pub record: NewActivity,
    pub attempts: i64,
    pub unknown_outcome: bool,
    pub finalised_at: i64,
}

/// What Zoho made of a row, for the interaction log.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub zoho_id: String,
    pub owner_id: Option<String>,
    pub user_email: Option<String>,
    pub contact_id: Option<String>,
    pub lead_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxState {
    Pending,
    Delivered,
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxState> {
        match s {
            "pending" => Some(OutboxState::Pending),
            "delivered" => Some(OutboxState::Delivered),
            "failed" => Some(OutboxState::Failed),
            _ => None,
        }
    }
}

/// A row as operators see it (`outbox list|show`).
#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub unique_key: String,
    pub pbx: String,
    pub linkedid: String,
    pub trigger: String,
    pub module: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub lease_owner: Option<String>,
    pub unknown_outcome: bool,
    pub zoho_id: Option<String>,
    pub last_error: Option<String>,
    /// Parked because the record could not be rendered (`outbox retry` renders it again).
    pub unrendered: bool,
    pub created_at: Option<String>,
    pub delivered_at: Option<String>,
    pub payload: Value,
}

/// Counts for health and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxStats {
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
    /// Age in seconds of the oldest pending row that is due.
    pub oldest_due_seconds: f64,
}

/// Row ids for an `IN (...)` list: integers, so nothing to escape.
fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

fn opt_text(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

pub(super) const COLUMNS: &str = "id, unique_key, pbx, linkedid, trigger_name, module, configuration, account, payload, workflows, agent_email, remote_number, attempts, unknown_outcome, finalised_at";

pub(super) fn leased(row: &AnyRow) -> Result<Leased, StoreError> {
    let payload: String = row.try_get("payload")?;
    let payload: Map<String, Value> = serde_json::from_str(&payload)
        .map_err(|e| StoreError::Data(format!("outbox payload: {e}")))?;
    let workflows: Option<String> = row.try_get("workflows")?;
    Ok(Leased {
        id: row.try_get("id")?,
        pbx: row.try_get("pbx")?,
        linkedid: row.try_get("linkedid")?,
        record: NewActivity {
            unique_key: row.try_get("unique_key")?,
            trigger: row.try_get("trigger_name")?,
            module: row.try_get("module")?,
            configuration: row.try_get("configuration")?,
            account: row.try_get("account")?,
            payload,
            workflows: workflows.and_then(|w| serde_json::from_str(&w).ok()),
            agent_email: row.try_get("agent_email")?,
            remote_number: row.try_get("remote_number")?,
            unrendered: None,
        },
        attempts: row.try_get("attempts")?,
        unknown_outcome: row.try_get::<i64, _>("unknown_outcome")? != 0,
        finalised_at: row.try_get("finalised_at")?,
    })
}

impl Store {
    /// Stores a finished call and the records its triggers make, in one transaction. A call
    /// or row already stored (same PBX and Linkedid, same key) is left as it is. Returns how
    /// many outbox rows were new.
    pub async fn record_call(
        &self,
        pbx: &str,
        call: &Call,
        remote_e164: Option<&str>,
        activities: &[NewActivity],
        finalised_at: i64,
    ) -> Result<usize, StoreError> {
        let linkedid = &call.linkedid.0;
        self.record(
            pbx,
            linkedid,
            Some((call, remote_e164)),
            activities,
            finalised_at,
        )
        .await
    }

    /// Stores the records of a live moment (ring, answer ...), before the call is finished.
    pub async fn record_moment(
        &self,
        pbx: &str,
        linkedid: &str,
        activities: &[NewActivity],
        at: i64,
    ) -> Result<usize, StoreError> {
        self.record(pbx, linkedid, None, activities, at).await
    }

    async fn record(
        &self,
        pbx: &str,
        linkedid: &str,
        call: Option<(&Call, Option<&str>)>,
        activities: &[NewActivity],
        at: i64,
    ) -> Result<usize, StoreError> {
        // The connection is taken from the pool explicitly so that a failed transaction can
        // be rolled back *and* the connection thrown away: after SQLITE_FULL (or a broken
        // PostgreSQL session) a connection can stay inside a half-open transaction and lock
        // every other one out. Nothing is reported stored before `commit` returned Ok.
        let mut conn = self.pool.acquire().await?;
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let written = async {
                if let Some((call, remote_e164)) = call {
                    super::interactions::insert(&mut tx, pbx, call, remote_e164).await?;
                }
                let mut added = 0;
                for a in activities {
                    added += insert_activity(&mut tx, pbx, linkedid, a, at).await?;
                }
                Ok::<usize, StoreError>(added)
            }
            .await;
            match written {
                Ok(added) => {
                    tx.commit().await?;
                    Ok(added)
                }
                Err(e) => {
                    if let Err(rb) = tx.rollback().await {
                        tracing::warn!(error = %rb, "rolling back a failed store transaction");
                    }
                    Err(e)
                }
            }
        }
        .await;
        if result.is_err() {
            conn.close_on_drop();
            metrics::counter!("azb_store_write_errors_total").increment(1);
        }
        result
    }

    /// Leases up to `limit` due rows for `owner` until `lease_micros` from now.
    pub async fn lease(
        &self,
        owner: &str,
        limit: usize,
        lease_micros: i64,
    ) -> Result<Vec<Leased>, StoreError> {
        let now = now_micros();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            // SQLite has one writer at a time: the UPDATE itself is the lock.
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET
                unknown_outcome = CASE WHEN lease_owner IS NOT NULL THEN 1 ELSE unknown_outcome END,
                lease_owner = $1, lease_until = $2, attempts = attempts + 1
             WHERE id IN (SELECT id FROM outbox
                WHERE state = 'pending' AND next_attempt_at <= $3 AND render_input IS NULL
                  AND (lease_until IS NULL OR lease_until < $3)
                ORDER BY next_attempt_at, id LIMIT $4{lock})
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease_micros)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows.iter().map(leased).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|l| l.id);
        Ok(out)
    }

    /// Extends `owner`'s lease on `ids` just before they are sent, and returns those it still
    /// holds. A row whose lease ran out (another worker may have it now) must not be sent:
    /// with the lease longer than the request timeout, no one else can send a held row.
    pub async fn renew(
        &self,
        ids: &[i64],
        owner: &str,
        lease_micros: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_micros();
        let held: Vec<i64> = sqlx::query_scalar(&format!(
            "UPDATE outbox SET lease_until = $1
             WHERE id IN ({}) AND lease_owner = $2 AND lease_until > $3 AND state = 'pending'
             RETURNING id",
            id_list(ids)
        ))
        .bind(now + lease_micros)
        .bind(owner)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(held)
    }

    /// Notes when the first request for these rows started (for the latency benchmark).
    pub async fn mark_requested(&self, ids: &[i64], at: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "UPDATE outbox SET first_request_at = $1 WHERE id IN ({}) AND first_request_at IS NULL",
            id_list(ids)
        ))
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The record exists in Zoho: the row is done, and the interaction learns the ids.
    /// Returns false when the lease was lost (another worker owns the row now).
    pub async fn delivered(
        &self,
        row: &Leased,
        owner: &str,
        d: &Delivered,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE outbox SET state = 'delivered', zoho_id = $1, delivered_at = $2,
                lease_owner = NULL, lease_until = NULL, last_error = NULL
             WHERE id = $3 AND lease_owner = $4 AND state = 'pending'",
        )
        .bind(&d.zoho_id)
        .bind(now_micros())
        .bind(row.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            let activity = (row.record.module == "Calls").then_some(d.zoho_id.as_str());
            sqlx::query(
                "UPDATE interactions SET
                    contact_id = COALESCE($1, contact_id), lead_id = COALESCE($2, lead_id),
                    owner_id = COALESCE($3, owner_id), user_email = COALESCE($4, user_email),
                    activity_id = COALESCE($5, activity_id)
                 WHERE pbx = $6 AND linkedid = $7",
            )
            .bind(opt_text(&d.contact_id))
            .bind(opt_text(&d.lead_id))
            .bind(opt_text(&d.owner_id))
            .bind(opt_text(&d.user_email))
            .bind(activity)
            .bind(&row.pbx)
            .bind(&row.linkedid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Try again at `next_at`; `unknown`: the request may have reached Zoho.
    pub async fn retry_later(
        &self,
        row: &Leased,
        owner: &str,
        next_at: i64,
        error: &str,
        unknown: bool,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1, last_error = $2,
                unknown_outcome = CASE WHEN $3 = 1 THEN 1 ELSE unknown_outcome END,
                lease_owner = NULL, lease_until = NULL
             WHERE id = $4 AND lease_owner = $5 AND state = 'pending'",
        )
        .bind(next_at)
        .bind(error)
        .bind(i64::from(unknown))
        .bind(row.id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Park the row: retrying cannot help.
    pub async fn fail(&self, row: &Leased, owner: &str, error: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE outbox SET state = 'failed', last_error = $1, lease_owner = NULL, lease_until = NULL
             WHERE id = $2 AND lease_owner = $3 AND state = 'pending'",
        )
        .bind(error)
        .bind(row.id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Rows for operators, newest first; `state` filters.
    pub async fn outbox_list(
        &self,
        state: Option<OutboxState>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM outbox WHERE ($1 = '' OR state = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(state.map_or("", OutboxState::as_str))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(operator_row).collect()
    }

    pub async fn outbox_show(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(operator_row).transpose()
    }

    /// Sends failed rows again (one, or all with `None`); returns how many. Rows that were never
    /// rendered stay parked: they need [`Store::outbox_rendered`] first.
    pub async fn outbox_retry(&self, id: Option<i64>) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1,
                lease_owner = NULL, lease_until = NULL
             WHERE state = 'failed' AND render_input IS NULL AND ($2 < 0 OR id = $2)",
        )
        .bind(now_micros())
        .bind(id.unwrap_or(-1))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Parked rows whose record was never rendered (one, or all with `None`), oldest first.
    pub async fn outbox_unrendered(
        &self,
        id: Option<i64>,
    ) -> Result<Vec<UnrenderedRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, unique_key, pbx, linkedid, trigger_name, module, configuration, render_input FROM outbox
             WHERE state = 'failed' AND render_input IS NOT NULL AND ($1 < 0 OR id = $1)
             ORDER BY id",
        )
        .bind(id.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnrenderedRow {
                    id: r.try_get("id")?,
                    unique_key: r.try_get("unique_key")?,
                    pbx: r.try_get("pbx")?,
                    linkedid: r.try_get("linkedid")?,
                    trigger: r.try_get("trigger_name")?,
                    module: r.try_get("module")?,
                    configuration: r.try_get("configuration")?,
                    snapshot: r.try_get("render_input")?,
                })
            })
            .collect()
    }

    /// A parked row now rendered: it gets its record and is queued. False if the row was not
    /// (or no longer) waiting for rendering.
    pub async fn outbox_rendered(
        &self,
        id: i64,
        account: &str,
        payload: &Map<String, Value>,
        workflows: Option<&[String]>,
    ) -> Result<bool, StoreError> {
        let workflows = workflows.map(|w| serde_json::to_string(w).unwrap_or_default());
        let n = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1,
                lease_owner = NULL, lease_until = NULL, last_error = NULL, render_input = NULL,
                payload = $2, account = $3, workflows = $4
             WHERE id = $5 AND state = 'failed' AND render_input IS NOT NULL",
        )
        .bind(now_micros())
        .bind(Value::Object(payload.clone()).to_string())
        .bind(account)
        .bind(workflows)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A parked row that still cannot be rendered: the newest reason.
    pub async fn outbox_render_failed(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET last_error = $1 WHERE id = $2 AND state = 'failed' AND render_input IS NOT NULL",
        )
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let now = now_micros();
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut s = OutboxStats::default();
        for r in &rows {
            let n: i64 = r.try_get("n")?;
            match r.try_get::<String, _>("state")?.as_str() {
                "pending" => s.pending = n,
                "delivered" => s.delivered = n,
                "failed" => s.failed = n,
                _ => {}
            }
        }
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(created_at) FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        s.oldest_due_seconds = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1e6);
        Ok(s)
    }

    /// `(finalised_at, first_request_at)` of delivered rows, for the latency benchmark.
    pub async fn request_latencies(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT finalised_at, first_request_at FROM outbox WHERE first_request_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("finalised_at")?, r.try_get("first_request_at")?)))
            .collect()
    }
}

async fn insert_activity(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    pbx: &str,
    linkedid: &str,
    a: &NewActivity,
    finalised_at: i64,
) -> Result<usize, StoreError> {
    let now = now_micros();
    let payload = Value::Object(a.payload.clone()).to_string();
    let workflows = a
        .workflows
        .as_ref()
        .map(|w| serde_json::to_string(w).unwrap_or_default());
    let (state, last_error, render_input) = match &a.unrendered {
        Some(u) => ("failed", Some(u.reason.as_str()), Some(u.snapshot.as_str())),
        None => ("pending", None, None),
    };
    let n = sqlx::query(
        "INSERT INTO outbox (unique_key, pbx, linkedid, trigger_name, module, configuration, account,
            payload, workflows, agent_email, remote_number, state, attempts, next_attempt_at,
            unknown_outcome, created_at, finalised_at, last_error, render_input)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, 0, $14, $15, $16, $17)
         ON CONFLICT (unique_key) DO NOTHING",
    )
    .bind(&a.unique_key)
    .bind(pbx)
    .bind(linkedid)
    .bind(&a.trigger)
    .bind(&a.module)
    .bind(&a.configuration)
    .bind(&a.account)
    .bind(payload)
    .bind(workflows)
    .bind(a.agent_email.as_deref())
    .bind(a.remote_number.as_deref())
    .bind(state)
    .bind(now)
    .bind(now)
    .bind(finalised_at)
    .bind(last_error)
    .bind(render_input)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n as usize)
}

fn operator_row(r: &AnyRow) -> Result<OutboxRow, StoreError> {
    let payload: String = r.try_get("payload")?;
    Ok(OutboxRow {
        id: r.try_get("id")?,
        unique_key: r.try_get("unique_key")?,
        pbx: r.try_get("pbx")?,
        linkedid: r.try_get("linkedid")?,
        trigger: r.try_get("trigger_name")?,
        module: r.try_get("module")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: super::rfc3339(r.try_get("next_attempt_at")?),
        lease_owner: r.try_get("lease_owner")?,
        unknown_outcome: r.try_get::<i64, _>("unknown_outcome")? != 0,
        zoho_id: r.try_get("zoho_id")?,
        last_error: r.try_get("last_error")?,
        unrendered: r.try_get::<Option<String>, _>("render_input")?.is_some(),
        created_at: super::rfc3339(r.try_get("created_at")?),
        delivered_at: super::rfc3339(r.try_get("delivered_at")?),
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
    })
}
