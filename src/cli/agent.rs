//! `agent-link EMAIL`: an agent's personal, signed, expiring link to the agent page.

use ami_zoho_bridge::config::Config;

use super::UsageError;

pub(crate) fn agent_link(cfg: &Config, email: &str) -> anyhow::Result<()> {
    if !email.contains('@') {
        return Err(UsageError(format!("'{email}' is not an e-mail address")).into());
    }
    if cfg.agent_page.is_some() && cfg.http.listen.is_empty() {
        return Err(UsageError(
            "key http.listen: the agent page is served by the HTTP server, which is off".into(),
        )
        .into());
    }
    let link = ami_zoho_bridge::agent_page::link(cfg, email).map_err(UsageError)?;
    println!("{link}");
    Ok(())
}
