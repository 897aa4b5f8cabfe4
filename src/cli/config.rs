//! `config check`: everything `run` checks before it connects anywhere.

use std::io::Write;
use std::path::Path;

use ami_zoho_bridge::config::Config;

use super::UsageError;

/// `config check`: everything `run` checks before it connects anywhere. Secrets that are not
/// in the environment are reported (this may not be the machine that runs the bridge).
pub(crate) fn config_check(file: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(Some(file)).map_err(|e| UsageError(e.to_string()))?;
    ami_zoho_bridge::pipeline::Pipeline::new(&cfg)
        .map_err(|e| UsageError(format!("configuration {}: {e}", file.display())))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: valid", file.display())?;
    writeln!(
        out,
        "  {} PBX(s), {} Zoho account(s), {} configuration(s), {} trigger(s), store {}",
        cfg.pbx.len(),
        cfg.zoho.accounts.len(),
        cfg.zoho.configurations.len(),
        cfg.triggers.len(),
        ami_zoho_bridge::store::redact_url(&cfg.store.url)
    )?;
    for (i, p) in cfg.pbx.iter().enumerate() {
        if let Err(e) = p.secret(i) {
            writeln!(out, "  note: {e} (needed by `run`)")?;
        }
    }
    for (name, acc) in &cfg.zoho.accounts {
        if let Err(e) = ami_zoho_bridge::zoho::oauth::client_secret(name, acc) {
            writeln!(out, "  note: {e} (needed by `run` and `zoho` commands)")?;
        }
    }
    if cfg.pbx.is_empty() {
        writeln!(out, "  note: no [[pbx]]: `run` has nothing to read")?;
    }
    Ok(())
}
