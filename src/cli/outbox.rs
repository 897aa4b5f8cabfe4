//! `outbox list|show|retry`: what is waiting, delivered or parked, and sending parked rows again.

use std::io::{self, Write};

use ami_zoho_bridge::config::Config;

use super::{OutboxCommand, StateArg, UsageError};

pub(crate) async fn outbox(cfg: &Config, command: OutboxCommand) -> anyhow::Result<()> {
    use ami_zoho_bridge::store::{OutboxState, Store};
    let store = Store::open_existing(&cfg.store.url).await?;
    let mut out = io::stdout().lock();
    match command {
        OutboxCommand::List { state, limit, json } => {
            let state = state.map(|s| match s {
                StateArg::Pending => OutboxState::Pending,
                StateArg::Delivered => OutboxState::Delivered,
                StateArg::Failed => OutboxState::Failed,
            });
            let rows = store.outbox_list(state, limit).await?;
            if json {
                for r in &rows {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                }
            } else {
                writeln!(
                    out,
                    "{:>6}  {:<9}  {:>3}  {:<22}  {:<24}  {:<20}  last error",
                    "id", "state", "try", "linkedid", "trigger", "zoho id"
                )?;
                for r in &rows {
                    writeln!(
                        out,
                        "{:>6}  {:<9}  {:>3}  {:<22}  {:<24}  {:<20}  {}",
                        r.id,
                        r.state,
                        r.attempts,
                        r.linkedid,
                        r.trigger,
                        r.zoho_id.as_deref().unwrap_or("-"),
                        r.last_error.as_deref().unwrap_or("")
                    )?;
                }
            }
        }
        OutboxCommand::Show { id } => match store.outbox_show(id).await? {
            Some(r) => writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?,
            None => return Err(UsageError(format!("no outbox row {id}")).into()),
        },
        OutboxCommand::Retry { id, all_failed } => {
            // Rows the old configuration could not render are rendered with this one.
            let pipeline = ami_zoho_bridge::pipeline::Pipeline::new(cfg)
                .map_err(|e| UsageError(format!("configuration: {e}")))?;
            let r = ami_zoho_bridge::requeue::retry_failed(
                &store,
                &pipeline,
                if all_failed { None } else { id },
            )
            .await?;
            writeln!(
                out,
                "{} row(s) queued again ({} rendered with this configuration)",
                r.queued, r.rendered
            )?;
            for (id, reason) in &r.still_failing {
                writeln!(out, "row {id} still cannot be rendered: {reason}")?;
            }
            if !r.still_failing.is_empty() {
                store.close().await;
                anyhow::bail!(
                    "{} row(s) still cannot be rendered: fix the configuration and retry",
                    r.still_failing.len()
                );
            }
        }
    }
    store.close().await;
    Ok(())
}
