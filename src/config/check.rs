//! `config check`: every problem of a configuration at once, each with where it comes from.
//!
//! `Config::load` stops at what makes the bridge unable to start. An admin editing a file wants
//! more, and all of it in one go: keys that are misspelt (and would silently be ignored or fall
//! back to a default), templates that parse but fail on a real call (an unknown filter only
//! fails when rendered), trigger fields that match nothing, secrets missing from the
//! environment. So the check reads the file three ways: as raw TOML (unknown keys, with a "did
//! you mean"), section by section through figment (one type error per section rather than one
//! in all, and an `AZB_…` variable blamed as such), and as a whole configuration whose
//! templates are rendered on sample calls of every direction (recorded from a real PBX).

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde_json::Value;

use super::{Config, Problem};

/// Where a problem's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    /// An `AZB_…` environment variable (its name).
    Env(String),
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub origin: Origin,
    pub problem: Problem,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origin {
            Origin::File(p) => write!(f, "{}: {}", p.display(), self.problem),
            Origin::Env(var) => write!(f, "environment variable {var}: {}", self.problem),
        }
    }
}

/// What `config check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Finding>,
    /// Worth knowing, not wrong (e.g. a sample call that makes two Call records).
    pub notes: Vec<String>,
    /// The configuration, when it could be read at all.
    pub config: Option<Config>,
}

/// Trigger fields the call itself has (anything else is a FastAGI tag).
pub const TRIGGER_FIELDS: &[&str] = &[
    "queue",
    "status",
    "direction",
    "outbound_route",
    "route",
    "agent",
    "agent_email",
    "agent_extension",
    "caller",
    "callee",
];
const STATUSES: &[&str] = &[
    "answered",
    "abandoned",
    "timeout",
    "busy",
    "noanswer",
    "cancelled",
    "congestion",
    "failed",
];
const DIRECTIONS: &[&str] = &["inbound", "outbound", "internal"];

/// `name@domain.tld`, no spaces: what Zoho will match a user's e-mail against.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

pub fn is_http_url(s: &str) -> bool {
    reqwest::Url::parse(s)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

/// The closest of `known` to `word`, if close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(word, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn unknown_message(what: &str, word: &str, known: &[String]) -> String {
    match did_you_mean(word, known.iter().map(String::as_str)) {
        Some(k) => format!("unknown {what} '{word}' (did you mean '{k}'?)"),
        None => format!("unknown {what} '{word}' (known: {})", known.join(", ")),
    }
}

/// The keys a section may hold, from the serialised defaults of its type.
fn keys_of<T: serde::Serialize>(v: &T) -> Vec<String> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Sections whose keys are names the admin chooses, and what each entry holds.
enum Shape {
    /// A fixed set of keys; `nested` gives the shape of some of them.
    Keys(Vec<String>, fn(&str) -> Option<Shape>),
    /// Names chosen by the admin, each entry of this shape (`None`: any value).
    Map(Option<fn() -> Shape>),
    /// An array of tables of this shape.
    Tables(fn() -> Shape),
    Any,
}

fn top() -> Shape {
    Shape::Keys(keys_of(&Config::default()), |k| {
        Some(match k {
            "calls" => Shape::Keys(keys_of(&super::CallsConfig::default()), |k| {
                (k == "routes").then_some(Shape::Map(None))
            }),
            "agents" => Shape::Map(None),
            "zoho" => Shape::Keys(keys_of(&super::ZohoConfig::default()), |k| match k {
                "accounts" => Some(Shape::Map(Some(|| {
                    Shape::Keys(keys_of(&super::AccountConfig::default()), |_| None)
                }))),
                "configurations" => Some(Shape::Map(Some(|| {
                    Shape::Keys(keys_of(&super::ActivityConfig::default()), |k| {
                        (k == "fields").then_some(Shape::Map(None))
                    })
                }))),
                _ => None,
            }),
            "pbx" => Shape::Tables(|| Shape::Keys(keys_of(&super::PbxConfig::default()), |_| None)),
            "triggers" => Shape::Tables(|| {
                Shape::Keys(
                    ["name", "on", "all", "any", "actions"]
                        .map(String::from)
                        .to_vec(),
                    |k| match k {
                        "all" | "any" => Some(Shape::Tables(|| {
                            Shape::Keys(["field", "op", "value"].map(String::from).to_vec(), |_| {
                                None
                            })
                        })),
                        "actions" => Some(Shape::Tables(|| {
                            Shape::Keys(
                                ["zoho_call", "zoho_task"].map(String::from).to_vec(),
                                |_| None,
                            )
                        })),
                        _ => None,
                    },
                )
            }),
            "store" => Shape::Keys(keys_of(&super::StoreConfig::default()), |_| None),
            "delivery" => Shape::Keys(keys_of(&super::DeliveryConfig::default()), |_| None),
            "http" => Shape::Keys(keys_of(&super::HttpConfig::default()), |_| None),
            "agi" => Shape::Keys(keys_of(&super::AgiConfig::default()), |_| None),
            "limits" => Shape::Keys(keys_of(&super::LimitsConfig::default()), |_| None),
            "recordings" => Shape::Keys(keys_of(&super::RecordingsConfig::default()), |_| None),
            _ => Shape::Any,
        })
    })
}

/// Unknown keys under `value` (of `shape`), as problems at `path`; they are taken out of
/// `value`, so that one misspelt key does not stop the rest of its section being checked.
fn walk(value: &mut toml::Value, shape: &Shape, path: &str, out: &mut Vec<Problem>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (shape, value) {
        (Shape::Keys(known, nested), toml::Value::Table(t)) => {
            let unknown: Vec<String> = t
                .keys()
                .filter(|k| !known.iter().any(|x| x == *k))
                .cloned()
                .collect();
            for k in unknown {
                let what = if path.is_empty() { "section" } else { "key" };
                out.push(Problem {
                    key: join(&k),
                    message: unknown_message(what, &k, known),
                });
                t.remove(&k);
            }
            for (k, v) in t.iter_mut() {
                if let Some(inner) = nested(k) {
                    walk(v, &inner, &join(k), out);
                }
            }
        }
        (Shape::Map(Some(entry)), toml::Value::Table(t)) => {
            for (k, v) in t.iter_mut() {
                walk(v, &entry(), &join(k), out);
            }
        }
        (Shape::Tables(entry), toml::Value::Array(items)) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, &entry(), &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The figment `Config::load` reads (defaults < file < environment), the file's text
/// given without its unknown keys.
fn figment(toml_text: &str) -> Figment {
    Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(toml_text))
        .merge(Env::prefixed("AZB_").split("__"))
}

/// Where the value at `key` (`delivery.poll_seconds`, `pbx[0].name`) came from.
fn origin(fig: &Figment, file: &Path, key: &str) -> Origin {
    let path: Vec<&str> = key
        .split('.')
        .map(|k| k.split('[').next().unwrap_or(k).trim_matches('"'))
        .collect();
    // The deepest part of the key that figment knows a source for.
    for n in (1..=path.len()).rev() {
        let dotted = path[..n].join(".");
        if let Some(md) = fig.find_metadata(&dotted) {
            if md.name.contains("environment") {
                return Origin::Env(env_name(&path[..n]));
            }
            return Origin::File(file.to_path_buf());
        }
    }
    Origin::File(file.to_path_buf())
}

/// `AZB_CALLS__GRACE_SECONDS` for `["calls", "grace_seconds"]`.
fn env_name(path: &[&str]) -> String {
    let parts: Vec<String> = path.iter().map(|p| p.to_ascii_uppercase()).collect();
    format!("AZB_{}", parts.join("__"))
}

/// `["pbx", "0", "port"]` → `pbx[0].port`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for p in path {
        if p.parse::<usize>().is_ok() {
            out.push_str(&format!("[{p}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p);
        }
    }
    out
}

/// figment's errors for `section` as findings, the environment variable named when it was one.
fn extraction_findings(e: figment::Error, section: &str, file: &Path) -> Vec<Finding> {
    e.into_iter()
        .map(|err| {
            // extract_inner puts the section's name last; the key reads section first.
            let mut path: Vec<String> = err.path.clone();
            if !section.is_empty() && path.last().map(String::as_str) == Some(section) {
                path.pop();
            }
            if !section.is_empty() {
                path.insert(0, section.to_string());
            }
            let key = if path.is_empty() {
                "(top level)".to_string()
            } else {
                dotted(&path)
            };
            let origin = match &err.metadata {
                Some(md) if md.name.contains("environment") => {
                    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
                    Origin::Env(env_name(&parts))
                }
                _ => Origin::File(file.to_path_buf()),
            };
            Finding {
                origin,
                problem: Problem {
                    key,
                    message: err.kind.to_string(),
                },
            }
        })
        .collect()
}

/// Checks `file` (and the `AZB_…` environment) and reports every problem found.
pub fn check(file: &Path) -> Report {
    let mut report = Report::default();
    let in_file = |key: String, message: String| Finding {
        origin: Origin::File(file.to_path_buf()),
        problem: Problem { key, message },
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            report.problems.push(in_file(
                "(file)".into(),
                format!("cannot read the file: {e}"),
            ));
            return report;
        }
    };
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            report
                .problems
                .push(in_file("(file)".into(), format!("not TOML: {message}")));
            return report;
        }
    };
    if table.is_empty() {
        report.problems.push(in_file(
            "(file)".into(),
            "the file is empty: nothing is configured (start from config/ami-zoho-bridge.example.toml)".into(),
        ));
    }
    let mut unknown = Vec::new();
    let mut known_only = toml::Value::Table(table);
    walk(&mut known_only, &top(), "", &mut unknown);
    let known_text = toml::to_string(&known_only).unwrap_or_default();
    // Declared tags, even when [calls] has another problem and is read as its defaults.
    let raw_tags: Vec<String> = known_only
        .get("calls")
        .and_then(|c| c.get("tags"))
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    report
        .problems
        .extend(unknown.into_iter().map(|p| in_file(p.key, p.message)));
    // `AZB_SECTION__KEY` variables under a known section, checked as the file's keys are.
    // (Variables without `__`, such as AZB_HTTP_TOKEN, are secrets named by *_env keys.)
    let sections = keys_of(&Config::default());
    let mut env_unknown: Vec<String> = Vec::new();
    for (var, _) in std::env::vars() {
        let Some(rest) = var.strip_prefix("AZB_") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.len() < 2 || !sections.contains(&path[0]) {
            continue;
        }
        let mut value = toml::Value::String(String::new());
        for part in path.iter().rev() {
            let mut t = toml::Table::new();
            t.insert(part.clone(), value);
            value = toml::Value::Table(t);
        }
        let mut found = Vec::new();
        walk(&mut value, &top(), "", &mut found);
        for p in found {
            env_unknown.push(var.clone());
            report.problems.push(Finding {
                origin: Origin::Env(var.clone()),
                problem: p,
            });
        }
    }

    // Section by section: a type error in one leaves the others checked.
    let fig = figment(&known_text);
    let mut errors = Vec::new();
    let mut cfg = Config::default();
    macro_rules! section {
        ($field:ident, $name:literal) => {
            match fig.extract_inner($name) {
                Ok(v) => cfg.$field = v,
                Err(e) => errors.extend(extraction_findings(e, $name, file)),
            }
        };
    }
    section!(calls, "calls");
    section!(agents, "agents");
    section!(zoho, "zoho");
    section!(triggers, "triggers");
    section!(pbx, "pbx");
    section!(store, "store");
    section!(delivery, "delivery");
    section!(http, "http");
    section!(agi, "agi");
    section!(limits, "limits");
    section!(recordings, "recordings");
    section!(click_to_dial, "click_to_dial");
    if errors.is_empty() {
        // Sections this check does not know one by one (added since) are read with the rest.
        match fig.extract::<Config>() {
            Ok(whole) => cfg = whole,
            Err(e) => errors.extend(extraction_findings(e, "", file)),
        }
    }
    // An unknown variable is reported once, by the check above.
    errors.retain(|f| !matches!(&f.origin, Origin::Env(v) if env_unknown.contains(v)));
    let read_whole = errors.is_empty();
    report.problems.extend(errors);
    cfg.calls.agents = cfg.agents.clone();
    let mut tags = cfg.calls.tags.clone();
    tags.extend(raw_tags);
    for p in cfg.problems() {
        report.problems.push(Finding {
            origin: origin(&fig, file, &p.key),
            problem: p,
        });
    }
    for p in deeper_problems(&cfg, &tags, &mut report.notes) {
        report.problems.push(Finding {
            origin: origin(&fig, file, &p.key),
            problem: p,
        });
    }
    if read_whole {
        report.config = Some(cfg);
    }
    report
}

/// What `run` would only find out later: secrets, owners, trigger fields, templates on calls.
fn deeper_problems(cfg: &Config, tags: &[String], notes: &mut Vec<String>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |key: String, message: String| out.push(Problem { key, message });
    for (i, p) in cfg.pbx.iter().enumerate() {
        if let Err(e) = p.secret(i) {
            let (key, message) = e
                .trim_start_matches("key ")
                .split_once(": ")
                .map(|(k, m)| (k.to_string(), m.to_string()))
                .unwrap_or((format!("pbx[{i}].secret_env"), e.clone()));
            add(key, message);
        }
    }
    for (name, acc) in &cfg.zoho.accounts {
        let key = format!("zoho.accounts.{name}");
        if acc.admin_email.is_none() {
            add(
                format!("{key}.admin_email"),
                "missing: the owner of activities whose agent has no Zoho user".into(),
            );
        }
        if let Err(e) = crate::zoho::oauth::client_secret(name, acc) {
            let text = e.to_string();
            let message = text
                .split_once(": ")
                .map(|(_, m)| m.to_string())
                .unwrap_or(text);
            let message = message
                .split_once(": ")
                .filter(|(k, _)| k.starts_with("zoho.accounts"))
                .map(|(_, m)| m.to_string())
                .unwrap_or(message);
            add(format!("{key}.client_secret_env"), message);
        }
    }
    if !cfg.http.listen.is_empty() {
        let token = cfg.http.token.as_ref().filter(|t| !t.is_empty()).is_some()
            || cfg
                .http
                .token_env
                .as_ref()
                .is_some_and(|v| std::env::var(v).is_ok_and(|t| !t.is_empty()));
        if !token {
            let message = match &cfg.http.token_env {
                Some(v) => format!(
                    "environment variable {v} is not set: the page and API need a token (or set http.listen = \"\")"
                ),
                None => "no token: set token_env (or http.listen = \"\")".into(),
            };
            add("http.token_env".into(), message);
        }
    }
    // Trigger fields, and the values of status and direction conditions.
    let mut names = std::collections::HashSet::new();
    for (i, t) in cfg.triggers.iter().enumerate() {
        let base = format!("triggers[{i}]");
        if !names.insert(t.name.as_str()) {
            add(
                format!("{base}.name"),
                format!(
                    "'{}' is used twice: a trigger's name keys its records",
                    t.name
                ),
            );
        }
        if t.actions.is_empty() {
            add(
                format!("{base}.actions"),
                "no actions: the trigger does nothing".into(),
            );
        }
        for (group, conds) in [("all", &t.all), ("any", &t.any)] {
            for (j, c) in conds.iter().enumerate() {
                let key = format!("{base}.{group}[{j}]");
                let field = c.field.as_str();
                let tag = field.strip_prefix("tags.");
                let known = TRIGGER_FIELDS.contains(&field)
                    || tag.is_some()
                    || tags.iter().any(|t| t == field);
                if !known {
                    let mut all: Vec<&str> = TRIGGER_FIELDS.to_vec();
                    all.extend(tags.iter().map(String::as_str));
                    let hint = match did_you_mean(field, all.iter().copied()) {
                        Some(k) => format!("did you mean '{k}'? "),
                        None => String::new(),
                    };
                    add(
                        format!("{key}.field"),
                        format!(
                            "unknown field '{field}' ({hint}fields: {}; a FastAGI tag is written tags.{field} or listed in calls.tags)",
                            TRIGGER_FIELDS.join(", ")
                        ),
                    );
                }
                let allowed: &[&str] = match field {
                    "status" => STATUSES,
                    "direction" => DIRECTIONS,
                    _ => continue,
                };
                if !matches!(c.op.as_str(), "equals" | "not_equals" | "in") {
                    continue;
                }
                let values: Vec<String> = match &c.value {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        .collect(),
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(other) => vec![other.to_string()],
                    None => Vec::new(),
                };
                for v in values {
                    if !allowed.contains(&v.as_str()) {
                        let hint = did_you_mean(&v, allowed.iter().copied())
                            .map(|k| format!("did you mean '{k}'? "))
                            .unwrap_or_default();
                        add(
                            format!("{key}.value"),
                            format!("'{v}' is no {field} ({hint}{})", allowed.join(", ")),
                        );
                    }
                }
            }
        }
    }
    // Every template, on recorded calls of each direction and several outcomes.
    if let Ok(pipeline) = crate::pipeline::Pipeline::new(cfg) {
        let mut seen = std::collections::HashSet::new();
        for call in sample_calls() {
            let label = format!("{} {}", call.direction.as_str(), call.status.as_str());
            for name in cfg.zoho.configurations.keys() {
                for kind in [
                    crate::pipeline::RecordKind::Call,
                    crate::pipeline::RecordKind::Task,
                ] {
                    let snap = crate::zoho::activity::CallSnapshot::of(&call, "config check");
                    if let Err(e) = pipeline.render(kind, name, &snap, "check") {
                        let (key, message) = e
                            .split_once(": ")
                            .map(|(k, m)| (k.to_string(), m.to_string()))
                            .unwrap_or((format!("zoho.configurations.{name}"), e.clone()));
                        if seen.insert(key.clone()) {
                            add(key, format!("fails on a sample {label} call: {message}"));
                        }
                    }
                }
            }
            let records = pipeline.records("check", &call, crate::triggers::On::End);
            let calls: Vec<&str> = records
                .iter()
                .filter(|r| r.module == "Calls")
                .map(|r| r.trigger.as_str())
                .collect();
            if calls.len() > 1 {
                notes.push(format!(
                    "a sample {label} call makes {} Call records (triggers {}): one call, several activities in Zoho",
                    calls.len(),
                    calls.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if cfg.triggers.is_empty() {
            notes.push("no [[triggers]]: no call becomes a Zoho record".into());
        }
    }
    out
}

/// Calls recorded from a real Asterisk (the chan_sip lab's mixed capture: inbound answered and
/// abandoned, outbound answered and busy, internal), with a tag, for rendering templates.
pub fn sample_calls() -> Vec<crate::calls::Call> {
    use crate::ami::replay::Replay;
    use crate::calls::{Micros, Output, Tracker};
    const CAPTURE: &[u8] = include_bytes!("../../fixtures/ami-sip/mixed-small.ami");
    let lab = super::CallsConfig {
        trunk_contexts: vec!["from-trunk".into()],
        trunk_channels: vec!["SIP/carrier".into()],
        agent_contexts: vec!["from-agents".into(), "agents-transfer".into()],
        ..super::CallsConfig::default()
    };
    let mut tracker = Tracker::new(lab);
    let mut out = Vec::new();
    for ev in Replay::new(CAPTURE).flatten() {
        tracker.feed(&ev, Micros(0), &mut out);
    }
    tracker.finish(&mut out);
    out.into_iter()
        .filter_map(|o| match o {
            Output::Finished(mut c) => {
                c.tags.insert("sample".into(), "yes".into());
                Some(*c)
            }
            Output::Moment(..) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_calls_cover_every_direction() {
        let calls = sample_calls();
        // mixed-small.truth.json: inbound answered, outbound answered, inbound abandoned,
        // outbound busy, internal answered.
        assert_eq!(calls.len(), 5);
        for d in DIRECTIONS {
            assert!(calls.iter().any(|c| c.direction.as_str() == *d), "{d}");
        }
    }

    #[test]
    fn emails_and_urls() {
        assert!(is_email("mario.rossi@example.com"));
        for bad in [
            "mario.rossi",
            "a@b",
            "@example.com",
            "a b@example.com",
            "a@@b.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(is_http_url("https://accounts.zoho.eu"));
        assert!(!is_http_url("accounts.zoho.eu"));
        assert!(!is_http_url("ftp://x.example.com"));
    }

    #[test]
    fn typos_find_their_key() {
        assert_eq!(
            did_you_mean("delivry", ["delivery", "calls"]),
            Some("delivery")
        );
        assert_eq!(
            did_you_mean("queu", TRIGGER_FIELDS.iter().copied()),
            Some("queue")
        );
        assert_eq!(did_you_mean("zzz", ["delivery"]), None);
    }
}
