//! Commands of the binary that talk to Zoho or render activities.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use ami_zoho_bridge::calls::Call;
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::triggers::{On, Rules};
use ami_zoho_bridge::zoho::activity::{self, render_call, render_task, Templates};
use ami_zoho_bridge::zoho::api::ZohoApi;
use ami_zoho_bridge::zoho::oauth::OAuth;
use ami_zoho_bridge::zoho::sim::{self, SimHandle, SimLimits};

use crate::UsageError;

/// Everything needed to turn finished calls into records, checked once.
pub struct Renderer {
    rules: Rules,
    templates: BTreeMap<String, Templates>,
    tz: jiff::tz::TimeZone,
    cfg: Config,
}

impl Renderer {
    pub fn new(cfg: &Config) -> anyhow::Result<Renderer> {
        let rules = Rules::new(&cfg.triggers, Some(&cfg.zoho)).map_err(UsageError)?;
        let mut templates = BTreeMap::new();
        for (name, conf) in &cfg.zoho.configurations {
            let t = Templates::compile(conf)
                .map_err(|e| UsageError(format!("key zoho.configurations.{name}.{e}")))?;
            templates.insert(name.clone(), t);
        }
        let tz = jiff::tz::TimeZone::get(&cfg.calls.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        Ok(Renderer {
            rules,
            templates,
            tz,
            cfg: cfg.clone(),
        })
    }

    /// The dry-run lines for one finished call: every record its end triggers would send,
    /// without the fields that need a Zoho lookup.
    pub fn dry_run(&self, call: &Call) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for trigger in self.rules.fire(call, On::End) {
            for action in &trigger.actions {
                for (module, name) in [("Calls", &action.zoho_call), ("Tasks", &action.zoho_task)] {
                    let Some(name) = name else { continue };
                    let (Some(conf), Some(t)) = (
                        self.cfg.zoho.configurations.get(name),
                        self.templates.get(name),
                    ) else {
                        continue;
                    };
                    let style = activity::Renderer {
                        conf,
                        templates: t,
                        tz: &self.tz,
                    };
                    let record = if module == "Calls" {
                        render_call(style, call, &trigger.name, None)
                    } else {
                        render_task(style, call, &trigger.name, None)
                    }
                    .map_err(|e| anyhow::anyhow!("rendering {name} for {}: {e}", call.linkedid))?;
                    out.push(json!({ "linkedid": call.linkedid, "trigger": trigger.name, "module": module, "record": record }));
                }
            }
        }
        Ok(out)
    }
}

fn http_client(timeout: f64) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(timeout.max(1.0)))
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

fn account<'c>(
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
pub async fn authorize(cfg: &Config, name: &str, code: &str) -> anyhow::Result<()> {
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
pub async fn test(cfg: &Config, name: &str) -> anyhow::Result<()> {
    let acc = account(cfg, name)?;
    let http = http_client(acc.timeout_seconds)?;
    let oauth =
        Arc::new(OAuth::new(name, acc, http.clone()).map_err(|e| UsageError(e.to_string()))?);
    let api = ZohoApi::new(oauth.clone(), acc, &cfg.calls.default_country, http);
    let mut problems = Vec::new();
    let mut out = std::io::stdout();
    match oauth.access().await {
        Ok(a) => writeln!(
            out,
            "ok    access token valid (API domain {})",
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
    if problems.is_empty() {
        writeln!(out, "account '{name}' is ready")?;
        Ok(())
    } else {
        anyhow::bail!("account '{name}': {}", problems.join(", "))
    }
}

/// `zoho-sim`: the simulator on `listen`, until interrupted.
pub async fn run_sim(listen: SocketAddr, seed: Option<&Path>) -> anyhow::Result<()> {
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
