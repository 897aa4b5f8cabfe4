//! The durable side of the bridge: the interaction log and the outbox.
//!
//! SQLite by default (one file, WAL), PostgreSQL when several bridges share the work. Both sit
//! behind sqlx's `Any` driver so every query is written once; the few places where the two
//! differ (leasing with `FOR UPDATE SKIP LOCKED`, id columns) branch on [`Backend`].
//!
//! A finished call's interaction row and its outbox rows are written in one transaction, and
//! both carry unique keys, so a call seen twice (a restart, two bridges on one PBX) is stored
//! once and delivered once.

mod due;
mod interactions;
mod migrate;
mod outbox;

pub use due::DueGroup;
pub use interactions::{remote_number, Interaction, Search};
pub use outbox::{Delivered, Leased, NewActivity, OutboxRow, OutboxState, OutboxStats};

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Store failures. Never carries a password: URLs are shown redacted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {url}: {message}")]
    Open { url: String, message: String },
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: {0}")]
    Data(String),
}

/// The interaction log and outbox.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A stored time (microseconds since the epoch) as RFC 3339, for people and JSON.
fn rfc3339(micros: Option<i64>) -> Option<String> {
    micros
        .and_then(|m| jiff::Timestamp::from_microsecond(m).ok())
        .map(|t| t.to_string())
}

/// Now, in microseconds since the epoch (the unit of every time column).
pub fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

impl Store {
    /// Opens (and for SQLite creates) the store at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let fail = |message: String| StoreError::Open {
            url: shown.clone(),
            message,
        };
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if path.is_empty() {
                return Err(fail("no file path after sqlite://".into()));
            }
            let full = if path.contains('?') {
                format!("sqlite://{path}")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Backend::Sqlite, full)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(fail("use sqlite://PATH or postgres://USER@HOST/DB".into()));
        };
        let options = AnyConnectOptions::from_str(&url).map_err(|e| fail(e.to_string()))?;
        // One direct connection first: a wrong host or password is reported at once, not
        // after the pool has retried for its whole acquire timeout.
        let probe = sqlx::AnyConnection::connect_with(&options)
            .await
            .map_err(|e| fail(e.to_string()))?;
        probe.close().await.map_err(|e| fail(e.to_string()))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer; NORMAL is durable across a
                        // killed process (only an OS crash can lose the last commits).
                        // busy_timeout: several pool connections take turns writing.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let store = Store { pool, backend };
        migrate::run(&store)
            .await
            .map_err(|e| fail(format!("schema migration: {e}")))?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (after in-flight queries end).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
