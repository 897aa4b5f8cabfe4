//! What is due, grouped by account and module, and leasing one group's rows: the store side
//! of batching inserts so that one Zoho credit pays for ten records (the plan itself, which
//! group and how many, is pure logic in `delivery::batching`).

use sqlx::Row;

use super::outbox::{leased, COLUMNS};
use super::{now_micros, Backend, Leased, Store, StoreError};

/// Due, unleased rows of one account and module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueGroup {
    pub account: String,
    pub module: String,
    pub rows: usize,
    /// The earliest `next_attempt_at` among them (µs since the epoch).
    pub oldest_due: i64,
}

impl Store {
    /// Due rows nobody holds, per account and module, as of `now`.
    pub async fn due_groups(&self, now: i64) -> Result<Vec<DueGroup>, StoreError> {
        let rows = sqlx::query(
            "SELECT account, module, COUNT(*) AS n, MIN(next_attempt_at) AS oldest FROM outbox
             WHERE state = 'pending' AND next_attempt_at <= $1
               AND (lease_until IS NULL OR lease_until < $1)
             GROUP BY account, module",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueGroup {
                    account: r.try_get("account")?,
                    module: r.try_get("module")?,
                    rows: r.try_get::<i64, _>("n")?.max(0) as usize,
                    oldest_due: r.try_get("oldest")?,
                })
            })
            .collect()
    }

    /// The earliest `next_attempt_at` of pending rows not yet due (a retry waiting), so an
    /// idle worker knows when to look again.
    pub async fn next_due(&self, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND next_attempt_at > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    /// As [`Store::lease`], restricted to one account and module: up to `limit` of its due
    /// rows, oldest first.
    pub async fn lease_group(
        &self,
        owner: &str,
        account: &str,
        module: &str,
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
                WHERE state = 'pending' AND next_attempt_at <= $3
                  AND (lease_until IS NULL OR lease_until < $3)
                  AND account = $5 AND module = $6
                ORDER BY next_attempt_at, id LIMIT $4{lock})
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease_micros)
            .bind(now)
            .bind(limit as i64)
            .bind(account)
            .bind(module)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows.iter().map(leased).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|l| l.id);
        Ok(out)
    }

    /// `(finalised_at, delivered_at)` of delivered rows, for the benchmark's
    /// finalisation → stored figure.
    pub async fn delivery_latencies(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT finalised_at, delivered_at FROM outbox
             WHERE state = 'delivered' AND delivered_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("finalised_at")?, r.try_get("delivered_at")?)))
            .collect()
    }
}
