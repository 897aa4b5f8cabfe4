//! `phonebridge enable|disable|users`: the org's Zoho PhoneBridge integration.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::zoho::oauth::OAuth;
use ami_zoho_bridge::zoho::phonebridge::PhoneBridge;

use super::UsageError;

#[derive(clap::Subcommand)]
pub(crate) enum PhoneBridgeCommand {
    /// Enable the bridge as the org's PhoneBridge provider (`/phonebridge/v3/integrate`).
    Enable {
        #[arg(long, default_value = super::DEFAULT_CONFIG)]
        config: std::path::PathBuf,
    },
    /// Disable it.
    Disable {
        #[arg(long, default_value = super::DEFAULT_CONFIG)]
        config: std::path::PathBuf,
    },
    /// Zoho's PhoneBridge users beside the agents the bridge knows, matched by e-mail.
    Users {
        #[arg(long, default_value = super::DEFAULT_CONFIG)]
        config: std::path::PathBuf,
    },
}

impl PhoneBridgeCommand {
    pub(crate) fn config(&self) -> &std::path::Path {
        match self {
            PhoneBridgeCommand::Enable { config }
            | PhoneBridgeCommand::Disable { config }
            | PhoneBridgeCommand::Users { config } => config,
        }
    }
}

fn client(cfg: &Config) -> anyhow::Result<PhoneBridge> {
    let pb = cfg.zoho.phonebridge.as_ref().ok_or_else(|| {
        UsageError(
            "key zoho.phonebridge: no [zoho.phonebridge] section in the configuration".into(),
        )
    })?;
    let acc = super::zoho::account(cfg, &pb.account)?;
    let http = super::zoho::http_client(pb.timeout_seconds)?;
    let oauth =
        Arc::new(OAuth::new(&pb.account, acc, http).map_err(|e| UsageError(e.to_string()))?);
    Ok(PhoneBridge::new(
        oauth,
        Duration::from_secs_f64(pb.timeout_seconds.max(1.0)),
    )?)
}

pub(crate) async fn phonebridge(cfg: &Config, command: PhoneBridgeCommand) -> anyhow::Result<()> {
    let pb = client(cfg)?;
    let mut out = std::io::stdout().lock();
    match command {
        PhoneBridgeCommand::Enable { .. } => {
            pb.integrate(true).await?;
            writeln!(out, "PhoneBridge enabled for the org")?;
        }
        PhoneBridgeCommand::Disable { .. } => {
            pb.integrate(false).await?;
            writeln!(out, "PhoneBridge disabled for the org")?;
        }
        PhoneBridgeCommand::Users { .. } => {
            let users = pb.users().await?;
            let overrides = cfg
                .zoho
                .phonebridge
                .as_ref()
                .map(|p| p.users.clone())
                .unwrap_or_default();
            // Agents by e-mail: several extensions (or member names) may share one.
            let mut agents: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for (k, email) in &cfg.agents {
                agents
                    .entry(email.to_ascii_lowercase())
                    .or_default()
                    .push(k.clone());
            }
            writeln!(out, "zohouser\temail\tname\tagents")?;
            let mut seen = std::collections::BTreeSet::new();
            for u in &users {
                let email = u.email.to_ascii_lowercase();
                seen.insert(email.clone());
                let id = overrides
                    .get(&u.email)
                    .cloned()
                    .unwrap_or_else(|| u.zohouser.clone());
                let who = agents
                    .get(&email)
                    .map(|v| v.join(","))
                    .unwrap_or_else(|| "-".into());
                writeln!(out, "{id}\t{}\t{}\t{who}", u.email, u.username)?;
            }
            for (email, keys) in &agents {
                if !seen.contains(email) {
                    let id = overrides.get(email).cloned().unwrap_or_else(|| "-".into());
                    writeln!(
                        out,
                        "{id}\t{email}\t(no PhoneBridge user: no pop-ups)\t{}",
                        keys.join(",")
                    )?;
                }
            }
        }
    }
    Ok(())
}
