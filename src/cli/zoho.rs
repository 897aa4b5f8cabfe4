//! `zoho authorize|test` and `zoho-sim`: the Zoho account as the bridge sees it, and a local
//! simulator of it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::zoho::api::ZohoApi;
use ami_zoho_bridge::zoho::oauth::OAuth;
use ami_zoho_bridge::zoho::sim::{self, SimHandle, SimLimits};

use super::UsageError;

pub(crate) fn http_client(timeout: f64) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(timeout.max(1.0)))
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

pub(crate) fn account<'c>(
    cfg: &'c Config,
    name: &str,
) -> anyhow::Result<&'c ami_zoho_bridge::config::AccountConfig> {
    cfg.zoho.accounts.get(name).ok_or_else(|| {
        UsageError(format!(
            "no account '{name}' under [zoho.accounts] in the configuration"
        ))
        .into()
    })
}

/// `zoho authorize`: exchange a Self Client grant code and store the refresh token.
pub(crate) async fn authorize(cfg: &Config, name: &str, code: &str) -> anyhow::Result<()> {
    let acc = account(cfg, name)?;
    let oauth = OAuth::new(name, acc, http_client(acc.timeout_seconds)?)
        .map_err(|e| UsageError(e.to_string()))?;
    let tokens = oauth.exchange_code(code.trim()).await?;
    println!(
        "account '{name}' authorized: refresh token stored in {} (scopes: {})",
        oauth.token_file().path().display(),
        tokens.scope.as_deref().unwrap_or("not reported")
    );
    Ok(())
}

/// `zoho test`: token, administrator, users, and each endpoint the bridge uses.
pub(crate) async fn test(cfg: &Config, name: &str) -> anyhow::Result<()> {
    let acc = account(cfg, name)?;
    let http = http_client(acc.timeout_seconds)?;
    let oauth =
        Arc::new(OAuth::new(name, acc, http.clone()).map_err(|e| UsageError(e.to_string()))?);
    let api = ZohoApi::new(oauth.clone(), acc, &cfg.calls.default_country, http);
    let mut problems = Vec::new();
    let mut out = std::io::stdout();
    // A fresh token every time: it proves the configured client secret, which a cached
    // access token would not.
    match oauth.refresh_now().await {
        Ok(a) => writeln!(
            out,
            "ok    token refreshed with the configured client secret (API domain {})",
            a.api_domain
        )?,
        Err(e) => {
            writeln!(out, "FAIL  access token: {e}")?;
            anyhow::bail!("account '{name}' cannot get an access token");
        }
    }
    match api.admin().await {
        Ok(u) => writeln!(
            out,
            "ok    administrator: {} <{}> ({})",
            u.full_name, u.email, u.id
        )?,
        Err(e) => {
            writeln!(out, "FAIL  administrator: {e}")?;
            problems.push("administrator".to_string());
        }
    }
    match api.active_users().await {
        Ok(users) => {
            writeln!(out, "ok    {} active users", users.len())?;
            for u in &users {
                writeln!(out, "        {} <{}>", u.full_name, u.email)?;
            }
        }
        Err(e) => writeln!(out, "FAIL  active users: {e}")?,
    }
    for (endpoint, scope, result) in api.probe().await {
        match result {
            Ok(()) => writeln!(out, "ok    {endpoint}")?,
            Err(e) if e.code() == Some("OAUTH_SCOPE_MISMATCH") => {
                writeln!(out, "FAIL  {endpoint}: missing OAuth scope {scope}")?;
                problems.push(format!("missing scope {scope}"));
            }
            Err(e) => {
                writeln!(out, "FAIL  {endpoint}: {e}")?;
                problems.push(endpoint.to_string());
            }
        }
    }
    // Follow-up Tasks need their own scope: probed when a trigger of this account makes one.
    let needs_tasks = cfg.triggers.iter().any(|t| {
        t.actions.iter().any(|a| {
            a.zoho_task
                .as_ref()
                .and_then(|c| cfg.zoho.configurations.get(c))
                .is_some_and(|c| c.account == name)
        })
    });
    if needs_tasks {
        let scope = "ZohoCRM.modules.tasks.CREATE";
        match api.probe_insert("Tasks").await {
            Ok(()) => writeln!(out, "ok    tasks insert (a trigger makes follow-up Tasks)")?,
            Err(e) if e.code() == Some("OAUTH_SCOPE_MISMATCH") => {
                writeln!(out, "FAIL  tasks insert: missing OAuth scope {scope} (a trigger makes follow-up Tasks)")?;
                problems.push(format!("missing scope {scope}"));
            }
            Err(e) => {
                writeln!(out, "FAIL  tasks insert: {e}")?;
                problems.push("tasks insert".into());
            }
        }
    }
    if problems.is_empty() {
        writeln!(out, "account '{name}' is ready")?;
        Ok(())
    } else {
        anyhow::bail!("account '{name}': {}", problems.join(", "))
    }
}

/// `zoho-sim`: the simulator on `listen`, until interrupted.
pub(crate) async fn run_sim(listen: SocketAddr, seed: Option<&Path>) -> anyhow::Result<()> {
    let seed = match seed {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading seed {}", p.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| UsageError(format!("seed file {}: {e}", p.display())))?
        }
        None => sim::demo_seed(),
    };
    let handle = SimHandle::start(listen, seed, SimLimits::default()).await?;
    println!(
        "Zoho simulator on http://{} (data center X at http://{}/X)",
        handle.addr, handle.addr
    );
    println!(
        "grant codes: POST http://{}/sim/codes {{\"client_id\", \"dc\", \"scopes\"}}",
        handle.addr
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
