//! Schema migrations: numbered, applied once each, in a transaction.
//!
//! The statements are written once with two placeholders for what the two databases spell
//! differently; PostgreSQL takes an advisory lock so two bridges starting together do not race.

use sqlx::Executor;

use super::{Backend, Store, StoreError};

/// `(version, statements)`; `{id}` is the auto-increment primary key, `{int}` a 64-bit integer.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE interactions (
            id {id},
            pbx TEXT NOT NULL,
            linkedid TEXT NOT NULL,
            direction TEXT NOT NULL,
            status TEXT NOT NULL,
            caller TEXT,
            caller_name TEXT,
            callee TEXT,
            remote_number TEXT,
            remote_e164 TEXT,
            queue TEXT,
            agent TEXT,
            agent_email TEXT,
            outbound_route TEXT,
            started_at {int} NOT NULL,
            answered_at {int},
            ended_at {int} NOT NULL,
            ring_seconds {int},
            talk_seconds {int} NOT NULL,
            incomplete {int} NOT NULL,
            call_json TEXT NOT NULL,
            contact_id TEXT,
            lead_id TEXT,
            owner_id TEXT,
            user_email TEXT,
            activity_id TEXT,
            created_at {int} NOT NULL,
            UNIQUE (pbx, linkedid)
        )",
            "CREATE INDEX interactions_remote ON interactions (remote_e164, ended_at)",
            "CREATE INDEX interactions_user ON interactions (user_email, ended_at)",
            "CREATE INDEX interactions_agent_email ON interactions (agent_email, ended_at)",
            "CREATE INDEX interactions_ended ON interactions (ended_at)",
            "CREATE TABLE outbox (
            id {id},
            unique_key TEXT NOT NULL UNIQUE,
            pbx TEXT NOT NULL,
            linkedid TEXT NOT NULL,
            trigger_name TEXT NOT NULL,
            module TEXT NOT NULL,
            configuration TEXT NOT NULL,
            account TEXT NOT NULL,
            payload TEXT NOT NULL,
            workflows TEXT,
            agent_email TEXT,
            remote_number TEXT,
            state TEXT NOT NULL,
            attempts {int} NOT NULL,
            next_attempt_at {int} NOT NULL,
            lease_owner TEXT,
            lease_until {int},
            unknown_outcome {int} NOT NULL,
            zoho_id TEXT,
            last_error TEXT,
            created_at {int} NOT NULL,
            finalised_at {int} NOT NULL,
            first_request_at {int},
            delivered_at {int}
        )",
            "CREATE INDEX outbox_due ON outbox (state, next_attempt_at)",
            "CREATE INDEX outbox_call ON outbox (pbx, linkedid)",
        ],
    ),
    // What the call tracker knows of live calls, one row per PBX and bridge instance, so that a
    // restarted bridge carries on with the calls that were up (see `store::live`).
    (
        2,
        &["CREATE TABLE live_state (
            pbx TEXT NOT NULL,
            instance TEXT NOT NULL,
            saved_at {int} NOT NULL,
            state TEXT NOT NULL,
            PRIMARY KEY (pbx, instance)
        )"],
    ),
    // A record the configuration could not render is parked with the call's snapshot, to be rendered again after the fix (`outbox retry`).
    (3, &["ALTER TABLE outbox ADD COLUMN render_input TEXT"]),
];

fn spell(sql: &str, backend: Backend) -> String {
    let (id, int) = match backend {
        Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER"),
        Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BIGINT"),
    };
    sql.replace("{id}", id).replace("{int}", int)
}

pub(super) async fn run(store: &Store) -> Result<(), StoreError> {
    let mut tx = store.pool.begin().await?;
    if store.backend == Backend::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(74110538)").await?;
    }
    tx.execute(
        "CREATE TABLE IF NOT EXISTS azb_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM azb_schema")
        .fetch_all(&mut *tx)
        .await?;
    for (version, statements) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for sql in *statements {
            tx.execute(spell(sql, store.backend).as_str()).await?;
        }
        sqlx::query("INSERT INTO azb_schema (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(super::now_micros())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, "store schema migrated");
    }
    if let Some(newest) = applied.iter().max() {
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if *newest > known {
            return Err(StoreError::Data(format!(
                "the store has schema version {newest}, newer than this bridge knows ({known}): upgrade the bridge"
            )));
        }
    }
    tx.commit().await?;
    Ok(())
}
