//! Configuration: built-in defaults < TOML file < environment (`AZB_…`, `__` between levels).
//!
//! Section and key names follow `ARCHITECTURE.md` and are a contract: tools and tests write
//! such files. Errors name the key and the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole configuration. Sections not described here are accepted and ignored, so one
/// file can serve every version of the bridge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub calls: CallsConfig,
    /// Agent (member name, extension or interface) → e-mail.
    pub agents: BTreeMap<String, String>,
    pub zoho: ZohoConfig,
    pub triggers: Vec<crate::triggers::Trigger>,
    /// `[[pbx]]`: the Asterisk servers to read, one AMI session each.
    pub pbx: Vec<PbxConfig>,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub http: HttpConfig,
    pub agi: AgiConfig,
    /// `[recordings]`: the bridge serving call recordings to Zoho by signed links.
    pub recordings: RecordingsConfig,
}

/// `[recordings]`: MixMonitor files served by the bridge under signed, expiring URLs, for
/// `Voice_Recording__s` (when the configuration has no `recording_url` template).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingsConfig {
    /// Where the bridge reads the recordings (e.g. a mount of the PBX's monitor directory).
    /// Absent: the bridge serves none.
    pub root: Option<PathBuf>,
    /// The PBX's own directory in `MIXMONITOR_FILENAME` paths; what follows it is looked
    /// up under `root`.
    pub pbx_dir: String,
    /// How Zoho reaches the bridge (`https://bridge.example.com`), TLS or a proxy in front.
    pub public_url: String,
    /// The key signing the links (inline for tests) or the variable holding it.
    pub link_secret: Option<crate::secret::Secret>,
    pub link_secret_env: Option<String>,
    /// How long a link works (Zoho fetches the file later).
    pub link_ttl_seconds: u64,
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        RecordingsConfig {
            root: None,
            pbx_dir: "/var/spool/asterisk/monitor".into(),
            public_url: String::new(),
            link_secret: None,
            link_secret_env: Some("AZB_RECORDING_LINK_SECRET".into()),
            link_ttl_seconds: 30 * 24 * 3600,
        }
    }
}

/// `[[pbx]]`: one Asterisk Manager Interface to read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PbxConfig {
    /// Names the PBX in the store (calls are keyed by PBX and Linkedid).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub secret: Option<crate::secret::Secret>,
    /// Name of the environment variable holding the AMI secret.
    pub secret_env: Option<String>,
    /// md5 (challenge, the secret never crosses the wire) or plain.
    pub auth: crate::ami::AuthMethod,
    /// Seconds between keepalive `Ping`s.
    pub ping_seconds: f64,
}

impl Default for PbxConfig {
    fn default() -> Self {
        PbxConfig {
            name: "pbx".into(),
            host: "127.0.0.1".into(),
            port: 5038,
            username: String::new(),
            secret: None,
            secret_env: None,
            auth: crate::ami::AuthMethod::Md5,
            ping_seconds: 20.0,
        }
    }
}

impl PbxConfig {
    /// The AMI secret: inline, or from the environment variable `secret_env` names.
    pub fn secret(&self, index: usize) -> Result<crate::secret::Secret, String> {
        if let Some(s) = &self.secret {
            return Ok(s.clone());
        }
        let Some(var) = &self.secret_env else {
            return Err(format!(
                "key pbx[{index}].secret_env: give secret_env (or secret)"
            ));
        };
        std::env::var(var)
            .map(crate::secret::Secret::new)
            .map_err(|_| {
                format!("key pbx[{index}].secret_env: environment variable {var} is not set")
            })
    }
}

/// `[store]`: where calls and the outbox live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created on first run) or `postgres://user@host/db`.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://ami-zoho-bridge.db".into(),
        }
    }
}

/// `[delivery]`: how the outbox is worked off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Concurrent delivery workers in this process.
    pub workers: usize,
    /// Rows one worker leases at a time (sent in one insert of up to 100 records).
    pub batch_size: usize,
    /// How long a lease holds: a bridge that dies holding rows gives them up after this.
    pub lease_seconds: f64,
    /// First retry delay; doubled each attempt up to `backoff_max_seconds`, with jitter.
    pub backoff_initial_seconds: f64,
    pub backoff_max_seconds: f64,
    /// After this many attempts a row is parked as failed (0: never).
    pub max_attempts: u32,
    /// How often idle workers look for due rows written by other bridges.
    pub poll_seconds: f64,
    /// This bridge's name in leases (default: host name and process id).
    pub instance: Option<String>,
    /// How long a due row may wait for others to fill its insert to ten records (one Zoho
    /// credit pays for ten): a busy PBX fills batches at once, a quiet one's calls wait at
    /// most this long. 0 sends every due row at once.
    pub linger_seconds: f64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            workers: 2,
            batch_size: 50,
            lease_seconds: 60.0,
            backoff_initial_seconds: 1.0,
            backoff_max_seconds: 300.0,
            max_attempts: 0,
            poll_seconds: 1.0,
            instance: None,
            linger_seconds: 2.0,
        }
    }
}

/// `[http]`: health, metrics, the search API and page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to serve on; empty turns the server off.
    pub listen: String,
    /// Bearer token for the API and page (inline, for tests) or from `token_env`.
    pub token: Option<crate::secret::Secret>,
    pub token_env: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8089".into(),
            token: None,
            token_env: Some("AZB_HTTP_TOKEN".into()),
        }
    }
}

/// `[agi]`: the FastAGI server for the dialplan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgiConfig {
    /// Address to serve on; empty turns the server off.
    pub listen: String,
    /// The account used for caller lookups.
    pub account: Option<String>,
}

impl Default for AgiConfig {
    fn default() -> Self {
        AgiConfig {
            listen: "127.0.0.1:4573".into(),
            account: None,
        }
    }
}

/// `[zoho]`: accounts (OAuth clients) and configurations (what a Call activity looks like).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZohoConfig {
    pub accounts: BTreeMap<String, AccountConfig>,
    pub configurations: BTreeMap<String, ActivityConfig>,
}

/// `[zoho.accounts.NAME]`: one Self Client on one data center.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    /// Data center: com (us), eu, in, com.au, jp, com.cn, ca, sa, uk.
    pub dc: Option<String>,
    /// Overrides for the accounts server and API domain (tests, proxies, new data centers).
    pub accounts_url: Option<String>,
    pub api_domain: Option<String>,
    pub client_id: String,
    pub client_secret: Option<crate::secret::Secret>,
    /// Name of the environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// The fallback owner of activities whose agent has no Zoho user.
    pub admin_email: Option<String>,
    /// Where the refresh and access tokens are kept (owner-only permissions).
    pub token_file: Option<PathBuf>,
    /// CRM API version in the path.
    pub api_version: String,
    /// Requests in flight at once to this account (Zoho's cap is 10 to 25 by edition; a
    /// 429 lowers it for a while).
    pub max_in_flight: usize,
    /// The org's daily API credits (Standard: 50 000 + 250 a user ...), for the warning.
    pub daily_credits: Option<u64>,
    /// Warn when the day's projected use passes this share of `daily_credits`.
    pub credits_warn_share: f64,
    /// How long the e-mail → user map is trusted.
    pub users_cache_seconds: u64,
    /// How long a phone lookup result is trusted.
    pub phone_cache_seconds: u64,
    /// Trailing digits used for the last-resort phone match (0 turns it off).
    pub match_last_digits: usize,
    /// Keep a local index of Contacts' and Leads' numbers (read 200 at a time, refreshed with
    /// If-Modified-Since) instead of searching Zoho for every new caller.
    pub phone_index: bool,
    /// How often the index asks Zoho for changed records.
    pub phone_index_refresh_seconds: u64,
    /// How often the index is read in full again (deleted records leave it then).
    pub phone_index_rebuild_seconds: u64,
    /// Per-request timeout.
    pub timeout_seconds: f64,
}

impl Default for AccountConfig {
    fn default() -> Self {
        AccountConfig {
            dc: None,
            accounts_url: None,
            api_domain: None,
            client_id: String::new(),
            client_secret: None,
            client_secret_env: None,
            admin_email: None,
            token_file: None,
            api_version: "v8".into(),
            max_in_flight: 8,
            daily_credits: None,
            credits_warn_share: 0.8,
            users_cache_seconds: 900,
            phone_cache_seconds: 600,
            match_last_digits: 9,
            phone_index: true,
            phone_index_refresh_seconds: 300,
            phone_index_rebuild_seconds: 6 * 3600,
            timeout_seconds: 20.0,
        }
    }
}

/// `[zoho.configurations.NAME]`: as in XCALLY Motion, Subject, Description and Fields of the
/// Call activity, as templates over the call's variables (`{{ caller }}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityConfig {
    pub account: String,
    pub subject: String,
    pub description: String,
    /// Extra fields: fixed values or templates (strings are rendered).
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Template of a recording URL for `Voice_Recording__s`.
    pub recording_url: Option<String>,
    /// Custom field that receives the bridge's unique key of the activity (for idempotency).
    pub unique_field: Option<String>,
    /// Zoho `trigger` list: which automations the insert runs. Absent = Zoho's default (all).
    pub workflows: Option<Vec<String>>,
    /// Subject and due time of `zoho_task` follow-ups.
    pub task_subject: String,
    pub task_due_days: u32,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        ActivityConfig {
            account: "main".into(),
            subject: "{{ direction | capitalize }} call {{ caller }} -> {{ callee }} ({{ status }})".into(),
            description: "Queue: {{ queue or '-' }}\nAgent: {{ agent or '-' }}\nRoute: {{ outbound_route or '-' }}\nStatus: {{ status }}\nLinkedid: {{ linkedid }}".into(),
            fields: BTreeMap::new(),
            recording_url: None,
            unique_field: None,
            workflows: None,
            task_subject: "Call back {{ caller }}".into(),
            task_due_days: 1,
        }
    }
}

/// What differs between PBXs: which contexts and channels are trunks, agents, routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// Contexts where inbound calls enter (a call whose first channel starts here is inbound).
    pub trunk_contexts: Vec<String>,
    /// Channel-name prefixes of trunk peers (`SIP/carrier`, `PJSIP/trunk`).
    pub trunk_channels: Vec<String>,
    /// Contexts of agents' and extensions' channels.
    pub agent_contexts: Vec<String>,
    /// Contexts of outbound far-end legs, when they differ from the trunk contexts.
    pub outbound_contexts: Vec<String>,
    /// Channel variable naming the outbound route (leading `_` are ignored).
    pub route_variable: String,
    /// A context starting with one of these names an outbound route.
    pub route_context_prefixes: Vec<String>,
    /// Context → route name, for dialplans without a route variable.
    pub routes: BTreeMap<String, String>,
    /// Channel variable carrying the agent's e-mail.
    pub agent_email_variable: String,
    /// Seconds to wait after the last hangup for late events (AgentComplete, Cdr).
    pub grace_seconds: f64,
    /// A call with no event for this long is closed as incomplete (bounded memory).
    pub max_call_age_seconds: f64,
    /// Time zone for Zoho times.
    pub timezone: String,
    /// The PBX's own zone, for times it writes without one (CEL `EventTime`) when events carry
    /// no `Timestamp:` (manager.conf without `timestampevents = yes`).
    pub pbx_timezone: String,
    /// Country for phone normalisation (ISO 3166 alpha-2).
    pub default_country: String,
    /// Emit live moments (ring, answer, hangup, reject) as well as finished calls.
    pub emit_moments: bool,
    /// Filled from `[agents]` at load time.
    #[serde(skip)]
    pub agents: BTreeMap<String, String>,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            // FreePBX: from-trunk / from-pstn; XCALLY Motion: from-sip-trunk style names vary.
            trunk_contexts: vec!["from-trunk".into(), "from-pstn".into()],
            trunk_channels: Vec::new(),
            agent_contexts: vec![
                "from-internal".into(),
                "agents".into(),
                "from-agents".into(),
            ],
            outbound_contexts: Vec::new(),
            route_variable: "OUTBOUND_ROUTE".into(),
            // FreePBX names its route contexts outrt-N; Motion-style labs use route-<name>.
            route_context_prefixes: vec!["route-".into(), "outrt-".into()],
            routes: BTreeMap::new(),
            agent_email_variable: "AGENT_EMAIL".into(),
            grace_seconds: 2.0,
            max_call_age_seconds: 12.0 * 3600.0,
            timezone: "UTC".into(),
            pbx_timezone: "UTC".into(),
            default_country: "IT".into(),
            emit_moments: false,
            agents: BTreeMap::new(),
        }
    }
}

/// A configuration that cannot be used; the message names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("configuration {file}: {message}")]
    Invalid { file: String, message: String },
}

impl Config {
    /// Loads defaults, then `file` (if given), then `AZB_…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("AZB_").split("__"));
        let file_name = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(defaults)".into());
        let mut cfg: Config = figment.extract().map_err(|e| ConfigError::Invalid {
            file: file_name.clone(),
            message: describe(&e),
        })?;
        cfg.calls.agents = cfg.agents.clone();
        cfg.validate().map_err(|message| ConfigError::Invalid {
            file: file_name,
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let c = &self.calls;
        if !(c.grace_seconds.is_finite() && (0.0..=600.0).contains(&c.grace_seconds)) {
            return Err("key calls.grace_seconds: must be between 0 and 600".into());
        }
        if !(c.max_call_age_seconds.is_finite() && c.max_call_age_seconds > 0.0) {
            return Err("key calls.max_call_age_seconds: must be positive".into());
        }
        for (key, zone) in [("timezone", &c.timezone), ("pbx_timezone", &c.pbx_timezone)] {
            if zone != "UTC" && jiff::tz::TimeZone::get(zone).is_err() {
                return Err(format!("key calls.{key}: unknown time zone '{zone}'"));
            }
        }
        for (name, account) in &self.zoho.accounts {
            let key = format!("zoho.accounts.{name}");
            if let Some(dc) = &account.dc {
                if dc.parse::<crate::zoho::DataCenter>().is_err() {
                    return Err(format!(
                        "key {key}.dc: unknown data center '{dc}' (com, eu, in, com.au, jp, com.cn, ca, sa, uk)"
                    ));
                }
            } else if account.accounts_url.is_none() || account.api_domain.is_none() {
                return Err(format!(
                    "key {key}: set dc, or both accounts_url and api_domain"
                ));
            }
            if account.client_id.is_empty() {
                return Err(format!("key {key}.client_id: missing"));
            }
        }
        for (name, conf) in &self.zoho.configurations {
            let key = format!("zoho.configurations.{name}");
            if !self.zoho.accounts.contains_key(&conf.account) {
                return Err(format!(
                    "key {key}.account: no account '{}' under [zoho.accounts]",
                    conf.account
                ));
            }
            crate::zoho::activity::Templates::compile(conf)
                .map_err(|e| format!("key {key}.{e}"))?;
        }
        crate::triggers::validate(&self.triggers, &self.zoho)?;
        self.validate_credits()?;
        self.validate_recordings()?;
        self.validate_runtime()
    }

    /// Batching and the Zoho budget: `delivery.linger_seconds`, and per account
    /// `max_in_flight`, `daily_credits`, `credits_warn_share`.
    fn validate_credits(&self) -> Result<(), String> {
        let linger = self.delivery.linger_seconds;
        if !(linger.is_finite() && (0.0..=300.0).contains(&linger)) {
            return Err("key delivery.linger_seconds: between 0 and 300".into());
        }
        for (name, a) in &self.zoho.accounts {
            let key = format!("zoho.accounts.{name}");
            if a.max_in_flight == 0 || a.max_in_flight > 100 {
                return Err(format!(
                    "key {key}.max_in_flight: between 1 and 100 (Zoho allows 10 to 25 by edition)"
                ));
            }
            if a.daily_credits == Some(0) {
                return Err(format!("key {key}.daily_credits: must be positive"));
            }
            let share = a.credits_warn_share;
            if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                return Err(format!(
                    "key {key}.credits_warn_share: a share above 0 and at most 1"
                ));
            }
        }
        Ok(())
    }

    /// `[recordings]`: with a root, a public URL and a link secret are needed.
    fn validate_recordings(&self) -> Result<(), String> {
        let r = &self.recordings;
        if r.root.is_none() {
            return Ok(());
        }
        if !(r.public_url.starts_with("https://") || r.public_url.starts_with("http://")) {
            return Err(
                "key recordings.public_url: the http(s) URL Zoho reaches the bridge at".into(),
            );
        }
        if r.link_ttl_seconds == 0 {
            return Err("key recordings.link_ttl_seconds: must be positive".into());
        }
        if r.link_secret.as_ref().is_none_or(|s| s.is_empty()) && r.link_secret_env.is_none() {
            return Err("key recordings.link_secret_env: a secret signs the links".into());
        }
        Ok(())
    }

    fn validate_runtime(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.pbx.iter().enumerate() {
            if p.name.trim().is_empty() || !names.insert(p.name.as_str()) {
                return Err(format!(
                    "key pbx[{i}].name: empty or used twice ('{}')",
                    p.name
                ));
            }
            if p.username.is_empty() {
                return Err(format!("key pbx[{i}].username: missing"));
            }
            if !(p.ping_seconds.is_finite() && p.ping_seconds > 0.0) {
                return Err(format!("key pbx[{i}].ping_seconds: must be positive"));
            }
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(format!(
                "key store.url: '{}' is neither sqlite://PATH nor postgres://...",
                crate::store::redact_url(url)
            ));
        }
        let d = &self.delivery;
        if d.workers == 0 || d.workers > 64 {
            return Err("key delivery.workers: between 1 and 64".into());
        }
        if d.batch_size == 0 || d.batch_size > 100 {
            return Err(
                "key delivery.batch_size: between 1 and 100 (Zoho's limit per insert)".into(),
            );
        }
        for (key, v) in [
            ("lease_seconds", d.lease_seconds),
            ("backoff_initial_seconds", d.backoff_initial_seconds),
            ("backoff_max_seconds", d.backoff_max_seconds),
            ("poll_seconds", d.poll_seconds),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "key delivery.{key}: must be a positive number of seconds"
                ));
            }
        }
        for (name, a) in &self.zoho.accounts {
            // A held lease must outlive any request made under it, or a second worker could
            // send the same record while the first request is still in flight.
            if d.lease_seconds <= a.timeout_seconds {
                return Err(format!(
                    "key delivery.lease_seconds: {} s must be longer than zoho.accounts.{name}.timeout_seconds ({} s); three times as long is comfortable",
                    d.lease_seconds, a.timeout_seconds
                ));
            }
        }
        for (key, listen) in [
            ("http.listen", &self.http.listen),
            ("agi.listen", &self.agi.listen),
        ] {
            if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "key {key}: '{listen}' is not an address like 127.0.0.1:8089"
                ));
            }
        }
        if let Some(a) = &self.agi.account {
            if !self.zoho.accounts.contains_key(a) {
                return Err(format!(
                    "key agi.account: no account '{a}' under [zoho.accounts]"
                ));
            }
        }
        Ok(())
    }
}

/// figment's errors, one line each, with the key path first.
fn describe(e: &figment::Error) -> String {
    e.clone()
        .into_iter()
        .map(|err| {
            let key = if err.path.is_empty() {
                "(top level)".to_string()
            } else {
                err.path.join(".")
            };
            format!("key {key}: {}", err.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, "[calls]\ngrace_seconds = \"soon\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("calls.grace_seconds"), "{err}");
        assert!(err.contains("bridge.toml"), "{err}");
        std::fs::write(&path, "[calls]\ntrunk_contxts = []\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("trunk_contxts"), "{err}");
        std::fs::write(&path, "[calls]\ntimezone = \"Mars/Olympus\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("calls.timezone"), "{err}");
        assert!(Config::load(Some(&dir.path().join("nope.toml"))).is_err());
    }

    #[test]
    fn agents_map_reaches_the_call_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "[agents]\n\"1001\" = \"mario@example.com\"\n[future_section]\nignored = 1\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        assert_eq!(
            cfg.calls.agents.get("1001").map(String::as_str),
            Some("mario@example.com")
        );
    }
}
