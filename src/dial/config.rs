//! The click-to-dial keys: `[click_to_dial]` (guard rails, who may dial what, how often) and the
//! `originate_*` keys of each `[[pbx]]` (how that PBX places the call).
//!
//! They live here rather than in `config.rs` so the dial module owns its knobs and their
//! validation; `config.rs` only hooks them in. Every error names the key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// `[click_to_dial]`: guard rails for every click source (Zoho PhoneBridge, the agent page,
/// the `dial` command).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickToDialConfig {
    /// Regexes over the E.164 number (`+390612345678`); one must match. Empty: the PBX's own
    /// country (`calls.default_country`) only.
    pub allow: Vec<String>,
    /// Regexes over the E.164 number; none may match (checked before `allow`).
    pub deny: Vec<String>,
    /// Refuse the number kinds libphonenumber marks premium-rate, shared-cost, UAN, personal,
    /// pager and voicemail-access (the toll-fraud favourites), whatever `allow` says.
    pub deny_premium: bool,
    /// Clicks one agent may make per minute (a burst of this size, then one per 60/n s).
    pub per_agent_per_minute: u32,
    /// Clicks the whole bridge may make per minute.
    pub global_per_minute: u32,
    /// Which `[[pbx]]` places the calls (by name); default the first.
    pub pbx: Option<String>,
    /// Channel variable set on the Originate with the click's id: the tracker reads its
    /// `VarSet` to link the call to the click.
    pub variable: String,
    /// Caller id presented on the trunk leg (the company number), handed to the dialplan in
    /// the channel variable `outbound_caller_id_variable`; absent: the dialplan decides.
    pub outbound_caller_id: Option<String>,
    pub outbound_caller_id_variable: String,
    /// How the number goes into `Exten`: `national` (`0612345678`, foreign numbers as
    /// `international_prefix` + digits), `e164` (`+390612345678`) or `digits` (`390612345678`).
    pub dial_format: DialFormat,
    pub international_prefix: String,
    /// Agent e-mail → extension, for agents whose `[agents]` keys are not plain extensions.
    pub extensions: BTreeMap<String, String>,
    /// Zoho PhoneBridge user id (`zohouser`) → agent e-mail, until the PhoneBridge user list
    /// provides it.
    pub zoho_users: BTreeMap<String, String>,
    /// Name of the header or parameter registered as `authorizationparam` with Zoho.
    pub authorization_name: String,
    /// Its value (inline, for tests) or the environment variable holding it.
    pub authorization_secret: Option<Secret>,
    pub authorization_secret_env: Option<String>,
    /// How long after the agent answered the far end may ring before the click is closed
    /// as unknown (the dialplan's own Dial timeout is normally much shorter).
    pub far_end_timeout_seconds: f64,
}

impl Default for ClickToDialConfig {
    fn default() -> Self {
        ClickToDialConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            deny_premium: true,
            per_agent_per_minute: 6,
            global_per_minute: 60,
            pbx: None,
            variable: "CTD_ID".into(),
            outbound_caller_id: None,
            outbound_caller_id_variable: "CTD_OUTBOUND_CID".into(),
            dial_format: DialFormat::National,
            international_prefix: "00".into(),
            extensions: BTreeMap::new(),
            zoho_users: BTreeMap::new(),
            authorization_name: "X-Azb-Click-Token".into(),
            authorization_secret: None,
            authorization_secret_env: Some("AZB_CLICK_SECRET".into()),
            far_end_timeout_seconds: 300.0,
        }
    }
}

/// How the dialled number is written into the Originate's `Exten`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialFormat {
    National,
    E164,
    Digits,
}

/// The `originate_*` keys of one `[[pbx]]` (flattened into it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OriginateConfig {
    /// The agent's phone, `{ext}` replaced: `Local/{ext}@from-internal` (FreePBX),
    /// `PJSIP/{ext}`, `SIP/{ext}`.
    pub originate_channel: String,
    /// Where the answered agent leg goes to dial the number.
    pub originate_context: String,
    /// How long the agent's phone rings before the click fails (Asterisk's default is 30).
    pub originate_timeout_seconds: f64,
    /// Extra channel variables on the Originate (`NAME=VALUE`), e.g. an auto-answer header
    /// for the agent's device type: `__SIPADDHEADER51=Call-Info: answer-after=0` (chan_sip,
    /// FreePBX), `PJSIP_HEADER(add,Call-Info)=answer-after=0` (PJSIP).
    pub originate_variables: Vec<String>,
}

impl Default for OriginateConfig {
    fn default() -> Self {
        OriginateConfig {
            originate_channel: "Local/{ext}@from-internal".into(),
            originate_context: "from-internal".into(),
            originate_timeout_seconds: 30.0,
            originate_variables: Vec::new(),
        }
    }
}

impl ClickToDialConfig {
    /// The `authorizationparam` secret, if one is configured.
    pub fn authorization_secret(&self) -> Result<Option<Secret>, String> {
        if let Some(s) = self.authorization_secret.as_ref().filter(|s| !s.is_empty()) {
            return Ok(Some(s.clone()));
        }
        match &self.authorization_secret_env {
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }
}

/// AMI header values may not carry line breaks (they would start a new header).
fn one_line(key: &str, value: &str) -> Result<(), String> {
    if value.contains(['\r', '\n']) {
        return Err(format!("key {key}: must be one line"));
    }
    Ok(())
}

/// Checks `[click_to_dial]` and the `originate_*` keys of every `[[pbx]]`.
pub fn validate(cfg: &crate::config::Config) -> Result<(), String> {
    let c = &cfg.click_to_dial;
    for (key, list) in [("allow", &c.allow), ("deny", &c.deny)] {
        for (i, p) in list.iter().enumerate() {
            regex::Regex::new(p)
                .map_err(|e| format!("key click_to_dial.{key}[{i}]: bad regex '{p}': {e}"))?;
        }
    }
    if c.per_agent_per_minute == 0 || c.per_agent_per_minute > 600 {
        return Err("key click_to_dial.per_agent_per_minute: between 1 and 600".into());
    }
    if c.global_per_minute == 0 || c.global_per_minute > 6000 {
        return Err("key click_to_dial.global_per_minute: between 1 and 6000".into());
    }
    if let Some(name) = &c.pbx {
        if !cfg.pbx.iter().any(|p| &p.name == name) {
            return Err(format!("key click_to_dial.pbx: no [[pbx]] named '{name}'"));
        }
    }
    let var_name = regex::Regex::new("^_{0,2}[A-Za-z][A-Za-z0-9_]*$").expect("static regex");
    for (key, v) in [
        ("variable", &c.variable),
        (
            "outbound_caller_id_variable",
            &c.outbound_caller_id_variable,
        ),
    ] {
        if !var_name.is_match(v) {
            return Err(format!(
                "key click_to_dial.{key}: '{v}' is not a channel variable name"
            ));
        }
    }
    if let Some(cid) = &c.outbound_caller_id {
        if cid.is_empty()
            || cid.len() > 32
            || !cid.chars().all(|ch| ch.is_ascii_digit() || ch == '+')
        {
            return Err(format!(
                "key click_to_dial.outbound_caller_id: '{cid}' is not a number (digits and +)"
            ));
        }
    }
    if !c.international_prefix.chars().all(|ch| ch.is_ascii_digit()) {
        return Err("key click_to_dial.international_prefix: digits only".into());
    }
    for (email, ext) in &c.extensions {
        if !is_extension(ext) {
            return Err(format!(
                "key click_to_dial.extensions.\"{email}\": '{ext}' is not an extension"
            ));
        }
    }
    one_line("click_to_dial.authorization_name", &c.authorization_name)?;
    if c.authorization_name.is_empty() {
        return Err("key click_to_dial.authorization_name: empty".into());
    }
    if !(c.far_end_timeout_seconds.is_finite() && c.far_end_timeout_seconds > 0.0) {
        return Err("key click_to_dial.far_end_timeout_seconds: must be positive".into());
    }
    for (i, p) in cfg.pbx.iter().enumerate() {
        let o = &p.originate;
        let key = |k: &str| format!("pbx[{i}].{k}");
        one_line(&key("originate_channel"), &o.originate_channel)?;
        if !o.originate_channel.contains("{ext}") || !o.originate_channel.contains('/') {
            return Err(format!(
                "key {}: '{}' needs a technology and {{ext}}, like Local/{{ext}}@from-internal",
                key("originate_channel"),
                o.originate_channel
            ));
        }
        one_line(&key("originate_context"), &o.originate_context)?;
        if o.originate_context.trim().is_empty() {
            return Err(format!("key {}: empty", key("originate_context")));
        }
        if !(o.originate_timeout_seconds.is_finite()
            && (1.0..=600.0).contains(&o.originate_timeout_seconds))
        {
            return Err(format!(
                "key {}: between 1 and 600 seconds",
                key("originate_timeout_seconds")
            ));
        }
        for (j, v) in o.originate_variables.iter().enumerate() {
            one_line(&format!("{}[{j}]", key("originate_variables")), v)?;
            if v.split_once('=').is_none_or(|(n, _)| n.trim().is_empty()) {
                return Err(format!(
                    "key {}[{j}]: '{v}' is not NAME=VALUE",
                    key("originate_variables")
                ));
            }
        }
    }
    Ok(())
}

/// What may stand for `{ext}` in a channel template: no `/`, `@`, `&`, `,` or blanks, so a
/// configured extension can never turn into a second device or another context.
pub fn is_extension(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '*' | '#'))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path)).map_err(|e| e.to_string())
    }

    const PBX: &str = "[[pbx]]\nname = \"motion-1\"\nusername = \"bridge\"\nsecret = \"s\"\n";

    #[test]
    fn originate_keys_sit_in_pbx_and_typos_are_still_refused() {
        let cfg = load(&format!(
            "{PBX}originate_channel = \"PJSIP/{{ext}}\"\noriginate_context = \"from-agents\"\noriginate_timeout_seconds = 20\n[click_to_dial]\nallow = [\"^\\\\+39\"]\nper_agent_per_minute = 3\n"
        ))
        .unwrap();
        assert_eq!(cfg.pbx[0].originate.originate_channel, "PJSIP/{ext}");
        assert_eq!(cfg.pbx[0].originate.originate_context, "from-agents");
        assert_eq!(cfg.pbx[0].originate.originate_timeout_seconds, 20.0);
        assert_eq!(cfg.click_to_dial.per_agent_per_minute, 3);
        // Defaults when absent.
        let cfg = load(PBX).unwrap();
        assert_eq!(
            cfg.pbx[0].originate.originate_channel,
            "Local/{ext}@from-internal"
        );
        let err = load(&format!("{PBX}originate_chanel = \"x\"\n")).unwrap_err();
        assert!(err.contains("originate_chanel"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                format!("{PBX}originate_channel = \"Local/2002\"\n"),
                "pbx[0].originate_channel",
            ),
            (
                format!("{PBX}originate_timeout_seconds = 0\n"),
                "pbx[0].originate_timeout_seconds",
            ),
            (
                format!("{PBX}originate_variables = [\"novalue\"]\n"),
                "pbx[0].originate_variables[0]",
            ),
            (
                format!("{PBX}[click_to_dial]\nallow = [\"(\"]\n"),
                "click_to_dial.allow[0]",
            ),
            (
                format!("{PBX}[click_to_dial]\nper_agent_per_minute = 0\n"),
                "click_to_dial.per_agent_per_minute",
            ),
            (
                format!("{PBX}[click_to_dial]\npbx = \"other\"\n"),
                "click_to_dial.pbx",
            ),
            (
                format!("{PBX}[click_to_dial]\noutbound_caller_id = \"06 1234\"\n"),
                "click_to_dial.outbound_caller_id",
            ),
            (
                format!("{PBX}[click_to_dial]\nvariable = \"CTD ID\"\n"),
                "click_to_dial.variable",
            ),
            (
                format!("{PBX}[click_to_dial.extensions]\n\"a@b.c\" = \"2002@evil\"\n"),
                "click_to_dial.extensions",
            ),
        ] {
            let err = load(&text).unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
            assert!(err.contains("bridge.toml"), "{err}");
        }
    }
}
