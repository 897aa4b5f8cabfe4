//! Triggers, modelled on XCALLY Motion's voice triggers (Tools → Triggers) and a superset:
//! a moment (`on`), conditions on the call combined with `all` (AND) and `any` (OR), and the
//! Zoho actions to run. Pure logic: no I/O.

use serde::{Deserialize, Serialize};

use crate::calls::{Call, Moment};
use crate::config::ZohoConfig;

/// When a trigger fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum On {
    Ring,
    Answer,
    Hangup,
    Reject,
    /// The call is finished, with its final status (the default).
    #[default]
    End,
}

impl On {
    pub fn of(moment: Moment) -> On {
        match moment {
            Moment::Ring => On::Ring,
            Moment::Answer => On::Answer,
            Moment::Hangup => On::Hangup,
            Moment::Reject => On::Reject,
        }
    }
}

/// `{ field = "queue", op = "equals", value = "support" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: String,
    /// equals, not_equals, in, matches, exists
    pub op: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

/// What a trigger does: a Call activity and/or a follow-up Task, from a Zoho configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoho_call: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoho_task: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub name: String,
    #[serde(default)]
    pub on: On,
    #[serde(default)]
    pub all: Vec<Condition>,
    #[serde(default)]
    pub any: Vec<Condition>,
    #[serde(default)]
    pub actions: Vec<Action>,
}

/// A condition ready to evaluate.
#[derive(Debug, Clone)]
enum Test {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    Matches(regex::Regex),
    Exists(bool),
}

#[derive(Debug, Clone)]
struct Compiled {
    field: String,
    test: Test,
}

/// Validated, compiled triggers.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    triggers: Vec<(Trigger, Vec<Compiled>, Vec<Compiled>)>,
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn compile(c: &Condition, at: &str) -> Result<Compiled, String> {
    let need_value = || {
        c.value
            .as_ref()
            .ok_or_else(|| format!("{at}.value: operator '{}' needs a value", c.op))
    };
    let test = match c.op.as_str() {
        "equals" => Test::Equals(value_text(need_value()?)),
        "not_equals" => Test::NotEquals(value_text(need_value()?)),
        "in" => match need_value()? {
            serde_json::Value::Array(items) => Test::In(items.iter().map(value_text).collect()),
            other => Test::In(vec![value_text(other)]),
        },
        "matches" => {
            let pattern = value_text(need_value()?);
            Test::Matches(
                regex::Regex::new(&pattern)
                    .map_err(|e| format!("{at}.value: bad regular expression: {e}"))?,
            )
        }
        "exists" => Test::Exists(
            c.value
                .as_ref()
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(true),
        ),
        other => {
            return Err(format!(
                "{at}.op: unknown operator '{other}' (equals, not_equals, in, matches, exists)"
            ))
        }
    };
    if c.field.trim().is_empty() {
        return Err(format!("{at}.field: empty"));
    }
    Ok(Compiled {
        field: c.field.clone(),
        test,
    })
}

/// Checks every trigger; errors name the trigger and the key.
pub fn validate(triggers: &[Trigger], zoho: &ZohoConfig) -> Result<(), String> {
    Rules::new(triggers, Some(zoho)).map(|_| ())
}

impl Rules {
    /// Compiles triggers; with `zoho`, also checks that actions name existing configurations.
    pub fn new(triggers: &[Trigger], zoho: Option<&ZohoConfig>) -> Result<Rules, String> {
        let mut out = Vec::new();
        for (i, t) in triggers.iter().enumerate() {
            let base = format!("key triggers[{i}] (trigger '{}')", t.name);
            let all = t
                .all
                .iter()
                .enumerate()
                .map(|(j, c)| compile(c, &format!("{base}.all[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let any = t
                .any
                .iter()
                .enumerate()
                .map(|(j, c)| compile(c, &format!("{base}.any[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(z) = zoho {
                for (j, a) in t.actions.iter().enumerate() {
                    for name in [&a.zoho_call, &a.zoho_task].into_iter().flatten() {
                        if !z.configurations.contains_key(name) {
                            return Err(format!(
                                "{base}.actions[{j}]: no Zoho configuration '{name}' under [zoho.configurations]"
                            ));
                        }
                    }
                    if a.zoho_call.is_none() && a.zoho_task.is_none() {
                        return Err(format!("{base}.actions[{j}]: give zoho_call or zoho_task"));
                    }
                }
            }
            out.push((t.clone(), all, any));
        }
        Ok(Rules { triggers: out })
    }

    /// The triggers that fire for `call` at `on`, each with its actions.
    pub fn fire<'a>(&'a self, call: &Call, on: On) -> impl Iterator<Item = &'a Trigger> + 'a {
        let values = CallValues::of(call);
        let hits: Vec<&Trigger> = self
            .triggers
            .iter()
            .filter(|(t, all, any)| {
                t.on == on
                    && all.iter().all(|c| holds(c, &values))
                    && (any.is_empty() || any.iter().any(|c| holds(c, &values)))
            })
            .map(|(t, _, _)| t)
            .collect();
        hits.into_iter()
    }

    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }
}

/// The call's fields as text, for conditions.
struct CallValues<'c> {
    call: &'c Call,
}

impl<'c> CallValues<'c> {
    fn of(call: &'c Call) -> Self {
        CallValues { call }
    }

    fn get(&self, field: &str) -> Option<String> {
        let c = self.call;
        match field {
            "queue" => c.queue.clone(),
            "status" => Some(c.status.as_str().to_string()),
            "direction" => Some(c.direction.as_str().to_string()),
            "outbound_route" | "route" => c.outbound_route.clone(),
            "agent" => c.agent.clone(),
            "agent_email" => c.agent_email.clone(),
            "agent_extension" => c.agent_extension.clone(),
            "caller" => c.caller.clone(),
            "callee" => c.callee.clone(),
            other => c
                .tags
                .get(other.strip_prefix("tags.").unwrap_or(other))
                .cloned(),
        }
    }
}

fn holds(c: &Compiled, values: &CallValues) -> bool {
    let v = values.get(&c.field);
    match &c.test {
        Test::Equals(x) => v.as_deref() == Some(x.as_str()),
        Test::NotEquals(x) => v.as_deref() != Some(x.as_str()),
        Test::In(xs) => v.is_some_and(|v| xs.contains(&v)),
        Test::Matches(re) => v.is_some_and(|v| re.is_match(&v)),
        Test::Exists(want) => v.is_some_and(|v| !v.is_empty()) == *want,
    }
}
