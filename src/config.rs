//! Configuration: built-in defaults < TOML file < environment (`AZB_…`, `__` between levels).
//!
//! Section and key names follow `ARCHITECTURE.md` and are a contract: tools and tests write
//! such files. Errors name the key and the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod check;

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
    pub limits: LimitsConfig,
    pub click_to_dial: crate::dial::config::ClickToDialConfig,
    /// `[agent_page]`: the bridge's own agent screen (see `notify::config`).
    pub agent_page: Option<crate::notify::config::AgentPageConfig>,
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
    #[serde(flatten)]
    pub originate: crate::dial::config::OriginateConfig,
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
            originate: Default::default(),
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
    /// This bridge's name for what it saves of live calls (one row per PBX and instance, so
    /// the two bridges of an HA pair on one PostgreSQL keep theirs apart). It must stay the
    /// same across restarts. Default: the host name.
    pub instance: Option<String>,
}

/// The bridge's state directory (store, Zoho tokens): absolute, so a command run from any
/// directory (or by systemd) finds the same files. The package creates it, owned by the
/// service user.
pub const STATE_DIR: &str = "/var/lib/ami-zoho-bridge";

/// Where an account's tokens are kept when `token_file` is not set.
pub fn default_token_file(account: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("zoho-{account}.json"))
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: format!("sqlite://{STATE_DIR}/bridge.db"),
            instance: None,
        }
    }
}

impl StoreConfig {
    /// [`StoreConfig::instance`], or the host name when it is not set.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .filter(|i| !i.trim().is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "bridge".into())
    }
}

/// `[limits]`: the bounds that keep memory finite when something downstream is slow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// AMI events buffered between a PBX session and its call tracker. When full for longer
    /// than `ami_queue_wait_ms`, the session is dropped and re-established (calls that span
    /// the gap are marked incomplete) rather than stalling Asterisk's writes.
    pub ami_queue_events: usize,
    pub ami_queue_wait_ms: u64,
    /// Finished calls waiting in memory while the store cannot write; when full, reading the
    /// PBX waits (and the AMI queue above takes over).
    pub store_queue_calls: usize,
    /// Live calls one tracker may hold before `azb_live_calls_over_cap_total` counts and a
    /// warning is logged.
    pub max_live_calls: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            ami_queue_events: 100_000,
            ami_queue_wait_ms: 50,
            store_queue_calls: 10_000,
            max_live_calls: 20_000,
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
    /// Connections served at once; more are accepted and closed at once (counted), so idle
    /// sockets cannot use up the file descriptors the PBX sessions and FastAGI need.
    pub max_connections: usize,
    /// A request's headers must arrive within this. The same timer runs while a keep-alive
    /// connection waits for its next request, so it is the idle timeout too.
    pub header_timeout_seconds: f64,
    /// Mark the session cookie `Secure` (set it when a TLS proxy is in front).
    pub secure_cookie: bool,
    /// How long a sign-in lasts.
    pub session_hours: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8089".into(),
            token: None,
            token_env: Some("AZB_HTTP_TOKEN".into()),
            max_connections: 4096,
            header_timeout_seconds: 10.0,
            secure_cookie: false,
            session_hours: 12.0,
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
    /// Peer networks allowed to connect (`10.0.0.5/32`, `192.168.1.0/24`); others are
    /// closed at once. Default: loopback only.
    pub allow: Vec<String>,
    /// Sessions one peer address may hold at once.
    pub max_per_peer: usize,
    /// The `agi_*` header must arrive within this (Asterisk sends it at once).
    pub header_timeout_seconds: f64,
}

impl Default for AgiConfig {
    fn default() -> Self {
        AgiConfig {
            listen: "127.0.0.1:4573".into(),
            account: None,
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            max_per_peer: 16,
            header_timeout_seconds: 2.0,
        }
    }
}

/// `[zoho]`: accounts (OAuth clients) and configurations (what a Call activity looks like).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZohoConfig {
    pub accounts: BTreeMap<String, AccountConfig>,
    pub configurations: BTreeMap<String, ActivityConfig>,
    /// `[zoho.phonebridge]`: Zoho PhoneBridge v3 pop-ups (see `notify::config`).
    pub phonebridge: Option<crate::notify::config::PhoneBridgeConfig>,
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
    /// Tags the dialplan sets over FastAGI (`tag`), so triggers may name them bare
    /// (`field = "vip"`); `tags.vip` works without declaring. `config check` uses the list.
    pub tags: Vec<String>,
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
            tags: Vec::new(),
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
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// Every problem `run` refuses to start with, each naming its key. (`config check` adds
    /// what needs the environment or a closer look: see [`check`].)
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        let c = &self.calls;
        p.range("calls.grace_seconds", c.grace_seconds, 0.0, 600.0);
        p.range(
            "calls.max_call_age_seconds",
            c.max_call_age_seconds,
            60.0,
            7.0 * 86400.0,
        );
        for (key, zone) in [("timezone", &c.timezone), ("pbx_timezone", &c.pbx_timezone)] {
            if zone != "UTC" && jiff::tz::TimeZone::get(zone).is_err() {
                p.add(
                    format!("calls.{key}"),
                    format!("unknown time zone '{zone}' (an IANA name like Europe/Rome)"),
                );
            }
        }
        if crate::phone::country(&c.default_country).is_none() || c.default_country.len() != 2 {
            p.add(
                "calls.default_country",
                format!(
                    "'{}' is not a country code: two letters, ISO 3166 (IT, DE, GB, US)",
                    c.default_country
                ),
            );
        }
        for (agent, email) in &self.agents {
            if !check::is_email(email) {
                p.add(
                    format!("agents.\"{agent}\""),
                    format!("'{email}' is not an e-mail address"),
                );
            }
        }
        for (name, account) in &self.zoho.accounts {
            let key = format!("zoho.accounts.{name}");
            if let Some(dc) = &account.dc {
                if dc.parse::<crate::zoho::DataCenter>().is_err() {
                    p.add(
                        format!("{key}.dc"),
                        format!("unknown data center '{dc}' (com, eu, in, com.au, jp, com.cn, ca, sa, uk)"),
                    );
                }
            } else if account.accounts_url.is_none() || account.api_domain.is_none() {
                p.add(key.clone(), "set dc, or both accounts_url and api_domain");
            }
            for (k, url) in [
                ("accounts_url", &account.accounts_url),
                ("api_domain", &account.api_domain),
            ] {
                if let Some(url) = url {
                    if !check::is_http_url(url) {
                        p.add(
                            format!("{key}.{k}"),
                            format!("'{url}' is not an http(s) URL"),
                        );
                    }
                }
            }
            if account.client_id.is_empty() {
                p.add(format!("{key}.client_id"), "missing");
            }
            if let Some(email) = &account.admin_email {
                if !check::is_email(email) {
                    p.add(
                        format!("{key}.admin_email"),
                        format!("'{email}' is not an e-mail address"),
                    );
                }
            }
            if !account.api_version.starts_with('v')
                || account.api_version[1..].parse::<u8>().is_err()
            {
                p.add(
                    format!("{key}.api_version"),
                    format!("'{}' is not a version like v8", account.api_version),
                );
            }
            p.range(
                format!("{key}.timeout_seconds"),
                account.timeout_seconds,
                1.0,
                300.0,
            );
            p.count(
                format!("{key}.max_in_flight"),
                account.max_in_flight as u64,
                1,
                100,
            );
            p.count(
                format!("{key}.users_cache_seconds"),
                account.users_cache_seconds,
                0,
                30 * 86400,
            );
            p.count(
                format!("{key}.phone_cache_seconds"),
                account.phone_cache_seconds,
                0,
                30 * 86400,
            );
            p.count(
                format!("{key}.match_last_digits"),
                account.match_last_digits as u64,
                0,
                15,
            );
            p.count(
                format!("{key}.phone_index_refresh_seconds"),
                account.phone_index_refresh_seconds,
                0,
                30 * 86400,
            );
            p.count(
                format!("{key}.phone_index_rebuild_seconds"),
                account.phone_index_rebuild_seconds,
                0,
                30 * 86400,
            );
        }
        for (name, conf) in &self.zoho.configurations {
            let key = format!("zoho.configurations.{name}");
            if !self.zoho.accounts.contains_key(&conf.account) {
                p.add(
                    format!("{key}.account"),
                    format!("no account '{}' under [zoho.accounts]", conf.account),
                );
            }
            if let Err(e) = crate::zoho::activity::Templates::compile(conf) {
                p.add_raw(format!("{key}.{e}"));
            }
            p.count(
                format!("{key}.task_due_days"),
                u64::from(conf.task_due_days),
                0,
                365,
            );
        }
        if let Err(e) = crate::triggers::validate(&self.triggers, &self.zoho) {
            p.add_raw(e.trim_start_matches("key ").to_string());
        }
        if let Err(e) = crate::dial::config::validate(self) {
            p.add_raw(e.trim_start_matches("key ").to_string());
        }
        if let Err(e) = crate::notify::config::validate(self) {
            p.add_raw(e.trim_start_matches("key ").to_string());
        }
        for e in [self.validate_credits(), self.validate_recordings()]
            .into_iter()
            .filter_map(Result::err)
        {
            p.add_raw(e.trim_start_matches("key ").to_string());
        }
        self.runtime_problems(&mut p);
        p.0
    }

    /// Batching and the Zoho budget: `delivery.linger_seconds`, and per account
    /// `daily_credits`, `credits_warn_share` (`max_in_flight` is range-checked with the rest).
    fn validate_credits(&self) -> Result<(), String> {
        let linger = self.delivery.linger_seconds;
        if !(linger.is_finite() && (0.0..=300.0).contains(&linger)) {
            return Err("key delivery.linger_seconds: between 0 and 300".into());
        }
        for (name, a) in &self.zoho.accounts {
            let key = format!("zoho.accounts.{name}");
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

    fn runtime_problems(&self, p: &mut Problems) {
        let mut names = std::collections::HashSet::new();
        for (i, pbx) in self.pbx.iter().enumerate() {
            if pbx.name.trim().is_empty() || !names.insert(pbx.name.as_str()) {
                p.add(
                    format!("pbx[{i}].name"),
                    format!("empty or used twice ('{}')", pbx.name),
                );
            }
            if pbx.host.trim().is_empty() {
                p.add(format!("pbx[{i}].host"), "missing");
            }
            if pbx.port == 0 {
                p.add(format!("pbx[{i}].port"), "must be between 1 and 65535");
            }
            if pbx.username.is_empty() {
                p.add(format!("pbx[{i}].username"), "missing");
            }
            p.range(
                format!("pbx[{i}].ping_seconds"),
                pbx.ping_seconds,
                1.0,
                300.0,
            );
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            p.add(
                "store.url",
                format!(
                    "'{}' is neither sqlite://PATH nor postgres://...",
                    crate::store::redact_url(url)
                ),
            );
        }
        let d = &self.delivery;
        p.count("delivery.workers", d.workers as u64, 1, 64);
        if d.batch_size == 0 || d.batch_size > 100 {
            p.add(
                "delivery.batch_size",
                "between 1 and 100 (Zoho's limit per insert)",
            );
        }
        p.count("delivery.max_attempts", u64::from(d.max_attempts), 0, 1000);
        p.range("delivery.lease_seconds", d.lease_seconds, 1.0, 3600.0);
        p.range(
            "delivery.backoff_initial_seconds",
            d.backoff_initial_seconds,
            0.01,
            3600.0,
        );
        p.range(
            "delivery.backoff_max_seconds",
            d.backoff_max_seconds,
            0.01,
            86400.0,
        );
        p.range("delivery.poll_seconds", d.poll_seconds, 0.05, 3600.0);
        if d.backoff_max_seconds < d.backoff_initial_seconds {
            p.add(
                "delivery.backoff_max_seconds",
                format!(
                    "{} s is shorter than delivery.backoff_initial_seconds ({} s)",
                    d.backoff_max_seconds, d.backoff_initial_seconds
                ),
            );
        }
        for (name, a) in &self.zoho.accounts {
            // A held lease must outlive any request made under it, or a second worker could
            // send the same record while the first request is still in flight.
            if d.lease_seconds <= a.timeout_seconds {
                p.add("delivery.lease_seconds", format!(
                    "{} s must be longer than zoho.accounts.{name}.timeout_seconds ({} s); three times as long is comfortable",
                    d.lease_seconds, a.timeout_seconds
                ));
            }
        }
        for (key, listen) in [
            ("http.listen", &self.http.listen),
            ("agi.listen", &self.agi.listen),
        ] {
            if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
                p.add(
                    key,
                    format!("'{listen}' is not an address like 127.0.0.1:8089"),
                );
            }
        }
        if let Some(a) = &self.agi.account {
            if !self.zoho.accounts.contains_key(a) {
                p.add(
                    "agi.account",
                    format!("no account '{a}' under [zoho.accounts]"),
                );
            }
        }
    }
}

/// One thing wrong with a configuration: the key (`delivery.poll_seconds`, `pbx[0].name`) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {}: {}", self.key, self.message)
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// `"key: message"` from the checks that name their key themselves.
    fn add_raw(&mut self, text: String) {
        match text.split_once(": ") {
            Some((key, message)) => self.add(key.trim(), message.trim()),
            None => self.add("(configuration)", text),
        }
    }

    /// A duration or rate: finite and within `[min, max]` (1e300, NaN, negatives refused).
    fn range(&mut self, key: impl Into<String>, v: f64, min: f64, max: f64) {
        if !(v.is_finite() && v >= min && v <= max) {
            let shown = if v.is_finite() && v.abs() >= 1e9 {
                format!("{v:e}")
            } else {
                v.to_string()
            };
            self.add(
                key,
                format!("{shown} is out of range: between {min} and {max}"),
            );
        }
    }

    fn count(&mut self, key: impl Into<String>, v: u64, min: u64, max: u64) {
        if v < min || v > max {
            self.add(key, format!("{v} is out of range: between {min} and {max}"));
        }
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
