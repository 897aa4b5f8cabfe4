//! What the call tracker knows of live calls, saved so that a bridge that stops (an upgrade,
//! a crash, kill -9) carries on with the calls that were up instead of logging fragments.
//!
//! One row per PBX and bridge instance, replaced in one small statement each time: the row is
//! a snapshot, not a journal, so it never grows with the day's traffic. The two bridges of an
//! HA pair on one PostgreSQL have a row each (their own view of the same calls); the calls
//! they finish are still stored once, by the interactions' unique key.

use sqlx::Row;

use super::{Store, StoreError};

/// A saved snapshot: the tracker's state as JSON and when it was written (µs since the epoch,
/// this host's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedLive {
    pub saved_at: i64,
    pub state: String,
}

impl Store {
    /// Replaces this instance's snapshot for `pbx`.
    pub async fn save_live(
        &self,
        pbx: &str,
        instance: &str,
        saved_at: i64,
        state: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO live_state (pbx, instance, saved_at, state) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pbx, instance) DO UPDATE SET saved_at = excluded.saved_at, state = excluded.state",
        )
        .bind(pbx)
        .bind(instance)
        .bind(saved_at)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// This instance's last snapshot for `pbx`, if it ever saved one.
    pub async fn load_live(
        &self,
        pbx: &str,
        instance: &str,
    ) -> Result<Option<SavedLive>, StoreError> {
        let row =
            sqlx::query("SELECT saved_at, state FROM live_state WHERE pbx = $1 AND instance = $2")
                .bind(pbx)
                .bind(instance)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(SavedLive {
                saved_at: r.try_get("saved_at")?,
                state: r.try_get("state")?,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real SQLite file: one row per (pbx, instance), replaced in place, kept apart per
    /// instance, and still there after the store is closed and opened again (a restart).
    #[tokio::test]
    async fn snapshots_replace_per_instance_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("live.db").display());
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.load_live("pbx1", "a").await.unwrap(), None);
        store.save_live("pbx1", "a", 1, r#"{"v":1}"#).await.unwrap();
        store.save_live("pbx1", "a", 2, r#"{"v":2}"#).await.unwrap();
        store.save_live("pbx1", "b", 3, r#"{"v":3}"#).await.unwrap();
        store.close().await;
        let store = Store::open(&url).await.unwrap();
        let a = store.load_live("pbx1", "a").await.unwrap().unwrap();
        assert_eq!((a.saved_at, a.state.as_str()), (2, r#"{"v":2}"#));
        let b = store.load_live("pbx1", "b").await.unwrap().unwrap();
        assert_eq!(b.state, r#"{"v":3}"#);
        assert_eq!(store.load_live("pbx2", "a").await.unwrap(), None);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM live_state")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        store.close().await;
    }
}
