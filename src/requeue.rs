//! Sending parked outbox rows again (`outbox retry`, the page's retry button).
//!
//! Two kinds of rows are parked `failed`: records Zoho refused (their record is stored and is
//! simply queued again), and records the configuration could not render (no record yet, only
//! the call's snapshot). The second kind is rendered here with the configuration in force —
//! the fixed one — and only then queued; a row that still cannot be rendered stays parked with
//! the newest reason. So a call is never lost to configuration, and never sent twice: each row
//! keeps its idempotency key whatever happens to it.

use crate::pipeline::{Pipeline, RecordKind};
use crate::store::{Store, StoreError};
use crate::zoho::activity::CallSnapshot;

/// What a retry did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Requeued {
    /// Rows queued for delivery again.
    pub queued: u64,
    /// Of those, rows rendered now for the first time.
    pub rendered: u64,
    /// Rows that still cannot be rendered: (id, reason).
    pub still_failing: Vec<(i64, String)>,
}

/// Queues failed row `id` (or every failed row with `None`), rendering first those that never
/// were, with `pipeline`'s configuration.
pub async fn retry_failed(
    store: &Store,
    pipeline: &Pipeline,
    id: Option<i64>,
) -> Result<Requeued, StoreError> {
    let mut out = Requeued::default();
    for row in store.outbox_unrendered(id).await? {
        let rendered = serde_json::from_str::<CallSnapshot>(&row.snapshot)
            .map_err(|e| format!("the stored call cannot be read: {e}"))
            .and_then(|snap| {
                let kind = RecordKind::of_module(&row.module)
                    .ok_or_else(|| format!("unknown module '{}'", row.module))?;
                pipeline.render(kind, &row.configuration, &snap, &row.unique_key)
            });
        match rendered {
            Ok(r) => {
                if store
                    .outbox_rendered(row.id, &r.account, &r.payload, r.workflows.as_deref())
                    .await?
                {
                    out.queued += 1;
                    out.rendered += 1;
                }
            }
            Err(reason) => {
                let reason = format!("cannot render: {reason}");
                store.outbox_render_failed(row.id, &reason).await?;
                out.still_failing.push((row.id, reason));
            }
        }
    }
    out.queued += store.outbox_retry(id).await?;
    Ok(out)
}

/// One error line per record that could not be rendered (it is stored parked, not lost).
pub fn log_unrendered(records: &[crate::store::NewActivity]) {
    for r in records {
        if let Some(u) = &r.unrendered {
            metrics::counter!("azb_records_unrendered_total").increment(1);
            tracing::error!(trigger = %r.trigger, module = %r.module, error = %u.reason,
                "record stored as failed: fix the configuration, restart, then `ami-zoho-bridge outbox retry --all-failed`");
        }
    }
}
