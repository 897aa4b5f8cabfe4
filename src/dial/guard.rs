//! The guard rails every click passes before the PBX is asked to dial anything. Pure: no I/O,
//! the clock is a parameter, so every rule is unit-tested.
//!
//! An HTTP endpoint that makes a PBX dial is a toll-fraud target, so the rules refuse by
//! default: a number must be a valid number of the PBX's own country (or match a configured
//! `allow` pattern), must not match `deny`, must not be a premium-rate kind of number, and
//! an agent and the bridge as a whole may only click so often.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use phonenumber::country::Id;
use phonenumber::{Mode, Type};
use regex::Regex;

use super::config::{is_extension, ClickToDialConfig, DialFormat};

/// Longest number text accepted (after URL decoding): anything longer is not a number.
pub const MAX_NUMBER_LEN: usize = 40;

/// A number that passed the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialable {
    /// `+390612345678`: audit, metrics, Zoho.
    pub e164: String,
    /// What goes into the Originate's `Exten`: digits (and a leading `+` in `e164` format).
    pub exten: String,
}

/// Why a number is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberRefusal {
    #[error("'{0}' is not a valid phone number")]
    Invalid(String),
    #[error("{e164} matches the deny pattern '{pattern}'")]
    Denied { e164: String, pattern: String },
    #[error("{e164} is a {kind:?} number (click_to_dial.deny_premium)")]
    Premium { e164: String, kind: Type },
    #[error("{e164} matches no allow pattern ({allowed})")]
    NotAllowed { e164: String, allowed: String },
}

/// The number rules of `[click_to_dial]`, compiled.
#[derive(Debug, Clone)]
pub struct NumberRules {
    allow: Vec<Regex>,
    deny: Vec<Regex>,
    deny_premium: bool,
    country: Option<Id>,
    country_code: Option<u16>,
    format: DialFormat,
    international_prefix: String,
}

impl NumberRules {
    /// Compiles the patterns; with no `allow`, the default country's `+CC` only.
    pub fn new(cfg: &ClickToDialConfig, default_country: &str) -> Result<NumberRules, String> {
        let country = crate::phone::country(default_country);
        let country_code = country.and_then(|id| {
            phonenumber::metadata::DATABASE
                .by_id(id.as_ref())
                .map(|m| m.country_code())
        });
        let compile = |key: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, p)| {
                    Regex::new(p).map_err(|e| format!("key click_to_dial.{key}[{i}]: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut allow = compile("allow", &cfg.allow)?;
        if allow.is_empty() {
            let Some(cc) = country_code else {
                return Err(format!(
                    "key click_to_dial.allow: empty, and calls.default_country '{default_country}' is not a country to default to"
                ));
            };
            allow.push(Regex::new(&format!(r"^\+{cc}[0-9]+$")).map_err(|e| e.to_string())?);
        }
        Ok(NumberRules {
            allow,
            deny: compile("deny", &cfg.deny)?,
            deny_premium: cfg.deny_premium,
            country,
            country_code,
            format: cfg.dial_format,
            international_prefix: cfg.international_prefix.clone(),
        })
    }

    /// Normalises `raw` to E.164 and applies deny, premium and allow, in that order.
    pub fn check(&self, raw: &str) -> Result<Dialable, NumberRefusal> {
        let invalid = || NumberRefusal::Invalid(printable(raw));
        let text = raw.trim();
        // Only what people write in numbers; letters, controls and line breaks are refused
        // rather than dropped, so nothing else can ride along into an AMI header.
        if text.is_empty()
            || text.len() > MAX_NUMBER_LEN
            || !text
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')' | '/'))
            || text.rfind('+').is_some_and(|i| i != 0)
        {
            return Err(invalid());
        }
        let compact: String = text
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect();
        let for_parse = match compact.strip_prefix(self.international_prefix.as_str()) {
            Some(rest) if !compact.starts_with('+') && !self.international_prefix.is_empty() => {
                format!("+{rest}")
            }
            _ => compact,
        };
        let number = phonenumber::parse(self.country, &for_parse).map_err(|_| invalid())?;
        if !phonenumber::is_valid(&number) {
            return Err(invalid());
        }
        let e164 = number.format().mode(Mode::E164).to_string();
        if let Some(p) = self.deny.iter().find(|p| p.is_match(&e164)) {
            return Err(NumberRefusal::Denied {
                e164,
                pattern: p.as_str().to_string(),
            });
        }
        if self.deny_premium {
            let kind = number.number_type(&phonenumber::metadata::DATABASE);
            if matches!(
                kind,
                Type::PremiumRate
                    | Type::SharedCost
                    | Type::Uan
                    | Type::PersonalNumber
                    | Type::Pager
                    | Type::Voicemail
            ) {
                return Err(NumberRefusal::Premium { e164, kind });
            }
        }
        if !self.allow.iter().any(|p| p.is_match(&e164)) {
            let allowed = self
                .allow
                .iter()
                .map(Regex::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(NumberRefusal::NotAllowed { e164, allowed });
        }
        let digits = e164.trim_start_matches('+');
        let exten = match self.format {
            DialFormat::E164 => e164.clone(),
            DialFormat::Digits => digits.to_string(),
            DialFormat::National if Some(number.code().value()) == self.country_code => number
                .format()
                .mode(Mode::National)
                .to_string()
                .chars()
                .filter(char::is_ascii_digit)
                .collect(),
            DialFormat::National => format!("{}{digits}", self.international_prefix),
        };
        // The formats above only ever give digits (and `+`); checked again because this
        // string becomes an AMI header value.
        if exten.is_empty() || !exten.chars().all(|c| c.is_ascii_digit() || c == '+') {
            return Err(invalid());
        }
        Ok(Dialable { e164, exten })
    }
}

/// Input shown in an error or audit line: bounded, control characters escaped.
pub fn printable(raw: &str) -> String {
    let mut s: String = raw.chars().take(60).flat_map(char::escape_debug).collect();
    if raw.chars().count() > 60 {
        s.push('…');
    }
    s
}

/// Agent e-mail → the extension whose phone rings first.
#[derive(Debug, Clone, Default)]
pub struct AgentDirectory {
    by_email: HashMap<String, String>,
}

impl AgentDirectory {
    /// From `[agents]` (member name, extension or interface → e-mail), where only keys that
    /// are plain extensions count (digits preferred), and `[click_to_dial] extensions`, which
    /// wins.
    pub fn new(
        agents: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> AgentDirectory {
        let mut by_email: HashMap<String, String> = HashMap::new();
        for (key, email) in agents {
            if !is_extension(key) {
                continue;
            }
            let email = email.trim().to_ascii_lowercase();
            let digits = key.chars().all(|c| c.is_ascii_digit());
            match by_email.get(&email) {
                Some(old) if old.chars().all(|c| c.is_ascii_digit()) || !digits => {}
                _ => {
                    by_email.insert(email, key.clone());
                }
            }
        }
        for (email, ext) in overrides {
            if is_extension(ext) {
                by_email.insert(email.trim().to_ascii_lowercase(), ext.clone());
            }
        }
        AgentDirectory { by_email }
    }

    /// The agent's extension, if the bridge knows the agent.
    pub fn extension(&self, email: &str) -> Option<&str> {
        self.by_email
            .get(&email.trim().to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The e-mail of the agent at `ext`.
    pub fn email_of(&self, ext: &str) -> Option<&str> {
        self.by_email
            .iter()
            .find(|(_, e)| e.as_str() == ext)
            .map(|(m, _)| m.as_str())
    }
}

/// Refused by the rate limit: who is over it, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("over the {scope} click limit; retry in {} s", retry_after.as_secs().max(1))]
pub struct RateRefusal {
    pub scope: &'static str,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            at: now,
        }
    }

    /// Tokens now (refilled at `capacity` per minute, capped at `capacity`).
    fn level(&self, capacity: f64, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + dt * capacity / 60.0).min(capacity)
    }

    fn wait_for_one(level: f64, capacity: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - level) * 60.0 / capacity).max(0.0))
    }
}

/// Token buckets: one per agent, one for the bridge. A click takes a token from both or from
/// neither. Buckets of agents who have not clicked for a minute are full again and are
/// dropped, so the map stays as small as the set of recently active agents.
#[derive(Debug)]
pub struct RateLimiter {
    per_agent: f64,
    global: f64,
    agents: HashMap<String, Bucket>,
    all: Bucket,
}

impl RateLimiter {
    pub fn new(per_agent_per_minute: u32, global_per_minute: u32, now: Instant) -> RateLimiter {
        let global = f64::from(global_per_minute.max(1));
        RateLimiter {
            per_agent: f64::from(per_agent_per_minute.max(1)),
            global,
            agents: HashMap::new(),
            all: Bucket::full(global, now),
        }
    }

    /// Takes one click for `agent`, or says which limit refuses it.
    pub fn take(&mut self, agent: &str, now: Instant) -> Result<(), RateRefusal> {
        let agent_bucket = self
            .agents
            .get(agent)
            .copied()
            .unwrap_or_else(|| Bucket::full(self.per_agent, now));
        let mine = agent_bucket.level(self.per_agent, now);
        if mine < 1.0 {
            return Err(RateRefusal {
                scope: "per-agent",
                retry_after: Bucket::wait_for_one(mine, self.per_agent),
            });
        }
        let all = self.all.level(self.global, now);
        if all < 1.0 {
            return Err(RateRefusal {
                scope: "global",
                retry_after: Bucket::wait_for_one(all, self.global),
            });
        }
        self.all = Bucket {
            tokens: all - 1.0,
            at: now,
        };
        self.agents.insert(
            agent.to_string(),
            Bucket {
                tokens: mine - 1.0,
                at: now,
            },
        );
        let cap = self.per_agent;
        self.agents
            .retain(|_, b| b.level(cap, now) < cap || b.at == now);
        Ok(())
    }

    /// Agents with a bucket that is not full.
    pub fn tracked_agents(&self) -> usize {
        self.agents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(cfg: ClickToDialConfig) -> NumberRules {
        NumberRules::new(&cfg, "IT").unwrap()
    }

    #[test]
    fn written_forms_become_one_e164_and_the_national_exten() {
        let r = rules(ClickToDialConfig::default());
        for raw in [
            "+390298765432",
            "+39 02 9876 5432",
            "0039 02 98765432",
            "02-9876-5432",
            "(02) 9876 5432",
        ] {
            let d = r.check(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(d.e164, "+390298765432", "{raw}");
            // The recorded click-to-dial captures dial the national form.
            assert_eq!(d.exten, "0298765432", "{raw}");
        }
        assert_eq!(r.check("3471239876").unwrap().exten, "3471239876");
    }

    #[test]
    fn other_formats() {
        let r = rules(ClickToDialConfig {
            dial_format: DialFormat::E164,
            ..Default::default()
        });
        assert_eq!(r.check("0612345678").unwrap().exten, "+390612345678");
        let r = rules(ClickToDialConfig {
            dial_format: DialFormat::Digits,
            ..Default::default()
        });
        assert_eq!(r.check("0612345678").unwrap().exten, "390612345678");
        // A foreign number allowed by pattern goes out with the international prefix.
        let r = rules(ClickToDialConfig {
            allow: vec![r"^\+(39|44)".into()],
            ..Default::default()
        });
        let d = r.check("+44 20 7946 0000").unwrap();
        assert_eq!(d.exten, "00442079460000");
    }

    #[test]
    fn by_default_only_the_own_country_and_no_premium_rate() {
        let r = rules(ClickToDialConfig::default());
        assert!(matches!(
            r.check("+44 20 7946 0000"),
            Err(NumberRefusal::NotAllowed { .. })
        ));
        // 899 numbers are Italian premium-rate lines (libphonenumber metadata).
        match r.check("899 123456") {
            Err(NumberRefusal::Premium { e164, .. }) => assert_eq!(e164, "+39899123456"),
            other => panic!("{other:?}"),
        }
        let r = rules(ClickToDialConfig {
            deny: vec![r"^\+3906".into()],
            ..Default::default()
        });
        assert!(matches!(
            r.check("0612345678"),
            Err(NumberRefusal::Denied { .. })
        ));
        assert!(r.check("0298765432").is_ok());
    }

    #[test]
    fn anything_but_a_number_is_invalid_not_cleaned() {
        let r = rules(ClickToDialConfig::default());
        for raw in [
            "",
            "   ",
            "abc",
            "0612345678\r\nAction: Hangup",
            "0612345678\nChannel: x",
            "06123456;78",
            "0612+345678",
            "061234567890123456789012345678901234567890",
            "12",
            "+",
            "0612345678@from-internal",
        ] {
            assert!(
                matches!(r.check(raw), Err(NumberRefusal::Invalid(_))),
                "{raw:?}"
            );
        }
        // Shown escaped in errors and audit lines.
        let e = r.check("06\r\n12").unwrap_err().to_string();
        assert!(e.contains("\\r\\n"), "{e}");
    }

    #[test]
    fn agents_by_email_prefer_plain_extensions() {
        let agents: BTreeMap<String, String> = [
            ("Agent 2002", "mario@example.com"),
            ("PJSIP/2002", "mario@example.com"),
            ("2002", "Mario@Example.com"),
            ("Agent 2003", "anna@example.com"),
            ("sip-2004", "luca@example.com"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let overrides: BTreeMap<String, String> =
            [("anna@example.com".to_string(), "2003".to_string())].into();
        let d = AgentDirectory::new(&agents, &overrides);
        assert_eq!(d.extension("mario@example.com"), Some("2002"));
        assert_eq!(d.extension(" MARIO@example.com "), Some("2002"));
        assert_eq!(d.extension("anna@example.com"), Some("2003"));
        assert_eq!(d.extension("luca@example.com"), Some("sip-2004"));
        assert_eq!(d.extension("nobody@example.com"), None);
        assert_eq!(d.email_of("2003"), Some("anna@example.com"));
    }

    #[test]
    fn rate_limit_per_agent_then_global_and_refill() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(3, 5, t0);
        for _ in 0..3 {
            l.take("a", t0).unwrap();
        }
        let e = l.take("a", t0).unwrap_err();
        assert_eq!(e.scope, "per-agent");
        // One token comes back every 60/3 = 20 s.
        assert_eq!(e.retry_after, Duration::from_secs(20));
        l.take("b", t0).unwrap();
        l.take("b", t0).unwrap();
        let e = l.take("c", t0).unwrap_err();
        assert_eq!(e.scope, "global");
        assert_eq!(e.retry_after, Duration::from_secs(12));
        // A refused click takes nothing: after 20 s agent a has exactly one click again.
        let t1 = t0 + Duration::from_secs(20);
        l.take("a", t1).unwrap();
        assert_eq!(l.take("a", t1).unwrap_err().scope, "per-agent");
        // After a quiet minute every bucket is full and forgotten.
        let t2 = t1 + Duration::from_secs(61);
        l.take("z", t2).unwrap();
        assert_eq!(l.tracked_agents(), 1);
    }
}
