//! `search`: stored calls by phone or user, from the command line.

use std::io::Write;

use ami_zoho_bridge::config::Config;

use super::UsageError;

/// `search`: stored calls by phone or user, newest first.
pub(crate) async fn search(
    cfg: &Config,
    filters: &ami_zoho_bridge::http::Filters,
    json: bool,
) -> anyhow::Result<()> {
    let country = ami_zoho_bridge::phone::country(&cfg.calls.default_country);
    let search = filters
        .search(country)
        .map_err(|e| UsageError(format!("--{}", e.to_string().replace('_', "-"))))?;
    let store = ami_zoho_bridge::store::Store::open_existing(&cfg.store.url).await?;
    let (rows, total) = store.search(&search).await?;
    store.close().await;
    let mut out = std::io::stdout().lock();
    if json {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<20}  {:<8}  {:<10}  {:<16}  {:<10}  {:<12}  {:<28}  {:<9}  zoho id",
        "ended (UTC)", "dir", "status", "number", "queue", "agent", "user", "delivery"
    )?;
    for r in &rows {
        let ended: String = r
            .ended_at
            .as_deref()
            .unwrap_or("")
            .replace('T', " ")
            .chars()
            .take(19)
            .collect();
        writeln!(
            out,
            "{:<20}  {:<8}  {:<10}  {:<16}  {:<10}  {:<12}  {:<28}  {:<9}  {}",
            ended,
            r.direction,
            r.status,
            clean(r.remote_number.as_deref()),
            clean(r.queue.as_deref()),
            clean(r.agent.as_deref()),
            clean(r.user_email.as_deref().or(r.agent_email.as_deref())),
            r.delivery,
            clean(r.activity_id.as_deref())
        )?;
    }
    writeln!(
        out,
        "{} of {total} call(s), page {}",
        rows.len(),
        search.page
    )?;
    Ok(())
}

/// A stored value for the terminal: caller names and queues come from the PBX and Zoho, so
/// control and escape characters are neutralised before they reach it.
fn clean(v: Option<&str>) -> String {
    ami_zoho_bridge::ops::sanitize_terminal(v.unwrap_or("-")).into_owned()
}
