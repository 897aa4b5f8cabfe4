//! The configuration of the real-time path: `[zoho.phonebridge]` and `[agent_page]`.
//!
//! Kept here, not in `config.rs`, so the real-time path's keys and their checks live beside
//! the code that reads them; `config.rs` holds the structs in its tree and calls [`validate`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[zoho.phonebridge]`: Zoho PhoneBridge v3 (pop-ups and call logs inside Zoho).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhoneBridgeConfig {
    /// The `[zoho.accounts.NAME]` holding the PhoneBridge provider's OAuth client (the
    /// authorization-code grant with the `PhoneBridge.*` scopes, not the CRM Self Client).
    pub account: String,
    /// true: Zoho's own PhoneBridge call log is the Call record of notified calls (the bridge
    /// sends the end notifications and writes no REST Call for them); false: the bridge's REST
    /// Call activity is the record and PhoneBridge only pops (no end notification that Zoho
    /// would log).
    pub log_calls: bool,
    /// How Zoho reaches the click-to-dial / call-control URLs (reserved for click-to-dial).
    pub public_url: Option<String>,
    /// The listener for Zoho's callbacks (reserved for click-to-dial).
    pub listen: Option<String>,
    /// The agent's number Zoho shows (`to` of an inbound call, `from` of an outbound one), in
    /// E.164, with `{ext}` for the agent's extension: `"+39069999{ext}"`.
    pub agent_number: String,
    /// E-mail → PhoneBridge user id (`zohouser`), over what `/phonebridge/v3/users` says.
    pub users: BTreeMap<String, String>,
    /// A `ringing` not sent within this many seconds of the ring is dropped (a late pop-up is
    /// worse than none).
    pub ring_deadline_seconds: f64,
    /// Notifications waiting to be sent; past this the newest `ringing` is dropped (end
    /// notifications go to the store first and are not lost).
    pub queue: usize,
    /// Per-request timeout.
    pub timeout_seconds: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Default for PhoneBridgeConfig {
    fn default() -> Self {
        PhoneBridgeConfig {
            account: String::new(),
            log_calls: false,
            public_url: None,
            listen: None,
            agent_number: String::new(),
            users: BTreeMap::new(),
            ring_deadline_seconds: 3.0,
            queue: 1024,
            timeout_seconds: 5.0,
            concurrency: 8,
        }
    }
}

/// `[agent_page]`: the bridge's own agent screen on the HTTP server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentPageConfig {
    /// Environment variable holding the secret that signs agents' links.
    pub link_secret_env: Option<String>,
    /// The secret inline (tests only).
    pub link_secret: Option<crate::secret::Secret>,
    /// How long a link is valid, in hours.
    pub link_hours: Option<u64>,
    /// The page's public base URL in links (default: `http://{http.listen}`).
    pub base_url: Option<String>,
}

/// Renders the agent's number from the template; `None` when the template gives no E.164.
pub fn agent_number(template: &str, ext: &str) -> Option<String> {
    let n = template.replace("{ext}", ext);
    crate::notify::e164_ok(&n).then_some(n)
}

/// Checks `[zoho.phonebridge]` and `[agent_page]`; the message names the key.
pub fn validate(cfg: &crate::config::Config) -> Result<(), String> {
    if let Some(pb) = &cfg.zoho.phonebridge {
        let key = "zoho.phonebridge";
        if pb.account.is_empty() {
            return Err(format!(
                "key {key}.account: name the [zoho.accounts.NAME] of the PhoneBridge client"
            ));
        }
        if !cfg.zoho.accounts.contains_key(&pb.account) {
            return Err(format!(
                "key {key}.account: no account '{}' under [zoho.accounts]",
                pb.account
            ));
        }
        if cfg
            .zoho
            .configurations
            .values()
            .any(|c| c.account == pb.account)
        {
            return Err(format!(
                "key {key}.account: '{}' is also a CRM account of [zoho.configurations]: the PhoneBridge provider's client is a different OAuth client, keep the two apart",
                pb.account
            ));
        }
        if !pb.agent_number.contains("{ext}") || agent_number(&pb.agent_number, "1001").is_none() {
            return Err(format!(
                "key {key}.agent_number: '{}' must give an E.164 number with {{ext}} for the extension, e.g. \"+39069999{{ext}}\"",
                pb.agent_number
            ));
        }
        if !(pb.ring_deadline_seconds.is_finite()
            && (0.1..=60.0).contains(&pb.ring_deadline_seconds))
        {
            return Err(format!(
                "key {key}.ring_deadline_seconds: between 0.1 and 60"
            ));
        }
        if pb.queue == 0 || pb.queue > 1_000_000 {
            return Err(format!("key {key}.queue: between 1 and 1000000"));
        }
        if pb.concurrency == 0 || pb.concurrency > 64 {
            return Err(format!("key {key}.concurrency: between 1 and 64"));
        }
        if !(pb.timeout_seconds.is_finite() && pb.timeout_seconds > 0.0) {
            return Err(format!("key {key}.timeout_seconds: must be positive"));
        }
        if let Some(l) = &pb.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "key {key}.listen: '{l}' is not an address like 127.0.0.1:8091"
                ));
            }
        }
        for (email, user) in &pb.users {
            if !email.contains('@') || user.trim().is_empty() {
                return Err(format!(
                    "key {key}.users: '{email}' = '{user}': an e-mail and a PhoneBridge user id"
                ));
            }
        }
    }
    if let Some(page) = &cfg.agent_page {
        if page.link_secret.is_none() && page.link_secret_env.is_none() {
            return Err(
                "key agent_page.link_secret_env: name the environment variable holding the link secret"
                    .into(),
            );
        }
        if page.link_hours == Some(0) {
            return Err("key agent_page.link_hours: at least 1".into());
        }
    }
    Ok(())
}
