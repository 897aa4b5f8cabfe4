//! `config check`: everything `run` checks before it connects anywhere, and more: unknown keys,
//! templates rendered on sample calls, trigger fields, secrets in the environment. Every
//! problem is listed (file or environment variable, key, what is wrong); exit 2 if any.

use std::io::Write;
use std::path::Path;

use ami_zoho_bridge::config::check;

use super::UsageError;

pub(crate) fn config_check(file: &Path) -> anyhow::Result<()> {
    if !file.is_file() {
        return Err(UsageError(format!(
            "configuration file {} does not exist",
            file.display()
        ))
        .into());
    }
    let report = check::check(file);
    if !report.problems.is_empty() {
        let mut err = std::io::stderr().lock();
        for f in &report.problems {
            writeln!(err, "{f}")?;
        }
        return Err(UsageError(format!(
            "{}: {} problem(s); nothing was started",
            file.display(),
            report.problems.len()
        ))
        .into());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: valid", file.display())?;
    if let Some(cfg) = &report.config {
        writeln!(
            out,
            "  {} PBX(s), {} Zoho account(s), {} configuration(s), {} trigger(s), store {}",
            cfg.pbx.len(),
            cfg.zoho.accounts.len(),
            cfg.zoho.configurations.len(),
            cfg.triggers.len(),
            ami_zoho_bridge::store::redact_url(&cfg.store.url)
        )?;
        if cfg.pbx.is_empty() {
            writeln!(out, "  note: no [[pbx]]: `run` has nothing to read")?;
        }
    }
    for n in &report.notes {
        writeln!(out, "  note: {n}")?;
    }
    Ok(())
}
