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
mod live;
mod migrate;
mod outbox;

pub use due::DueGroup;
pub use interactions::{remote_number, Interaction, Search};
pub use live::SavedLive;
pub use outbox::{
    Delivered, Leased, NewActivity, OutboxRow, OutboxState, OutboxStats, Unrendered, UnrenderedRow,
};

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

/// libpq credential parameters the sqlx driver does not understand (it would log their
/// values as it ignores them): refused with a clear error instead.
const UNSUPPORTED_PG_PARAMS: &[&str] = &["sslpassword", "passfile"];

/// Query or key-value parameters whose value is a credential (or says where one is).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "sslpassword",
    "passfile",
    "sslkey",
    "secret",
    "token",
    "access_token",
    "auth_token",
    "api_key",
    "apikey",
];

/// A store URL fit to print: `postgres://user:secret@host/db?sslpassword=x` →
/// `postgres://user:***@host/db?sslpassword=***`. Hides the password of the user-info part and
/// the value of every credential parameter (query string, or a libpq `key=value` string).
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((auth, host)) => match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://{auth}@{host}"),
            },
            None => head.to_string(),
        },
        // libpq's `host=… password=…` form: the same parameters, separated by spaces.
        None => redact_params(head, ' '),
    };
    match query {
        Some(q) => format!("{head}?{}", redact_params(q, '&')),
        None => head,
    }
}

fn redact_params(text: &str, sep: char) -> String {
    text.split(sep)
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

fn is_secret_param(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    let key = key.trim_start_matches(';');
    SECRET_PARAMS.contains(&key)
}

/// The database holds phone numbers and names: it and its WAL/SHM files are owner-only
/// (0600). The file is created 0600 before SQLite opens it, because SQLite gives the WAL and
/// SHM files the mode of the database file; files left 0644 by an older version are fixed.
fn restrict_sqlite_files(path: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if path == ":memory:" || path.starts_with(":memory:") {
            return Ok(());
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // A missing directory and the like: SQLite reports it with the path.
            Err(_) => return Ok(()),
        }
        for file in [
            path.to_string(),
            format!("{path}-wal"),
            format!("{path}-shm"),
        ] {
            match std::fs::metadata(&file) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                }
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
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
            restrict_sqlite_files(path.split('?').next().unwrap_or(path))
                .map_err(|e| fail(format!("cannot make the database file owner-only: {e}")))?;
            let full = if path.contains('?') {
                format!("sqlite://{path}")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Backend::Sqlite, full)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // libpq knows these, sqlx does not: it would ignore them and log their values.
            if let Some(query) = url.split_once('?').map(|q| q.1) {
                for (k, _) in form_urlencoded::parse(query.as_bytes()) {
                    if UNSUPPORTED_PG_PARAMS.contains(&k.to_ascii_lowercase().as_str()) {
                        return Err(fail(format!(
                            "the '{k}' parameter is not supported by this PostgreSQL driver (put the password in the URL or in PGPASSWORD)"
                        )));
                    }
                }
            }
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

    /// Opens a store that must already exist: read-only commands (`outbox`, `search`) never
    /// create an empty SQLite file where the bridge's store is not.
    pub async fn open_existing(url: &str) -> Result<Store, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            if !path.is_empty() && !std::path::Path::new(path).is_file() {
                return Err(StoreError::Open {
                    url: redact_url(url),
                    message: format!(
                        "no store at {path}: nothing recorded there yet, or not the store.url the bridge uses"
                    ),
                });
            }
        }
        Store::open(url).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (after in-flight queries end).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn every_credential_form_is_hidden() {
        for (url, shown) in [
            ("postgres://azb:hunter2@db/azb", "postgres://azb:***@db/azb"),
            (
                "postgres://azb@db/azb?password=hunter2&sslmode=require",
                "postgres://azb@db/azb?password=***&sslmode=require",
            ),
            (
                "postgresql://db/azb?user=azb&sslpassword=hunter2&passfile=/etc/pw&PASSWORD=hunter2",
                "postgresql://db/azb?user=azb&sslpassword=***&passfile=***&PASSWORD=***",
            ),
            (
                "postgres://u:p@ss:w@rd@db/x?password=a@b",
                "postgres://u:***@db/x?password=***",
            ),
            ("host=db user=azb password=hunter2", "host=db user=azb password=***"),
            ("sqlite:///var/lib/azb/azb.db", "sqlite:///var/lib/azb/azb.db"),
        ] {
            let r = redact_url(url);
            assert_eq!(r, shown);
            assert!(!r.contains("hunter2") && !r.contains("rd@") && !r.contains("/etc/pw"));
        }
    }
}
