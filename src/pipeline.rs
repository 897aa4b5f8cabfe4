//! Calls → triggers → records to send: the pure step between the call tracker and the outbox.
//!
//! For a finished call (or a live moment) it finds the triggers that fire, renders each
//! action's record from its Zoho configuration, and gives every record an idempotency key
//! (PBX, Linkedid, trigger, module): the outbox stores a key once, so a call fires a trigger
//! at most once per moment however often it is seen.
//!
//! Nothing here can lose a call: a record the configuration cannot render comes back with the
//! reason and a snapshot of the call, and is stored parked (`failed`); [`crate::requeue`]
//! renders it again with the configuration in force when the admin has fixed it.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::calls::Call;
use crate::config::Config;
use crate::store::{remote_number, NewActivity, Unrendered};
use crate::triggers::{On, Rules};
use crate::zoho::activity::{
    self, render_call_snapshot, render_task_snapshot, CallSnapshot, Templates,
};

/// Rules and templates, checked once at start.
pub struct Pipeline {
    rules: Rules,
    templates: BTreeMap<String, Templates>,
    tz: jiff::tz::TimeZone,
    country: Option<phonenumber::country::Id>,
    cfg: Config,
    links: Option<crate::recordings::Links>,
}

/// A rendered record and where it goes.
pub struct Rendered {
    pub account: String,
    pub payload: Map<String, Value>,
    pub workflows: Option<Vec<String>>,
}

/// The Zoho module a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Call,
    Task,
}

impl RecordKind {
    pub fn module(self) -> &'static str {
        match self {
            RecordKind::Call => "Calls",
            RecordKind::Task => "Tasks",
        }
    }

    /// The kind of a stored row's module.
    pub fn of_module(module: &str) -> Option<RecordKind> {
        match module {
            "Calls" => Some(RecordKind::Call),
            "Tasks" => Some(RecordKind::Task),
            _ => None,
        }
    }
}

impl Pipeline {
    /// Errors name the key (`key triggers[0] ...`, `key zoho.configurations.x.subject ...`).
    pub fn new(cfg: &Config) -> Result<Pipeline, String> {
        let rules = Rules::new(&cfg.triggers, Some(&cfg.zoho))?;
        let mut templates = BTreeMap::new();
        for (name, conf) in &cfg.zoho.configurations {
            let t = Templates::compile(conf)
                .map_err(|e| format!("key zoho.configurations.{name}.{e}"))?;
            templates.insert(name.clone(), t);
        }
        let tz = jiff::tz::TimeZone::get(&cfg.calls.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        Ok(Pipeline {
            rules,
            templates,
            tz,
            country: crate::phone::country(&cfg.calls.default_country),
            cfg: cfg.clone(),
            links: crate::recordings::Links::from_config(&cfg.recordings)?,
        })
    }

    /// The far party's number in E.164, for the interaction log's phone search.
    pub fn remote_e164(&self, call: &Call) -> Option<String> {
        remote_number(call).and_then(|n| self.normalise(n))
    }

    /// A number in E.164 as the bridge stores it (`None` if it is not a phone number).
    pub fn normalise(&self, number: &str) -> Option<String> {
        crate::phone::forms(number, self.country, 0).e164
    }

    /// Every record the triggers firing at `on` make for `call`, in trigger order. Never fails:
    /// a record that cannot be rendered (a template error at run time, a configuration that is
    /// gone) comes back [`Unrendered`], to be stored parked with the reason and the call's
    /// snapshot, so no call is lost to configuration.
    pub fn records(&self, pbx: &str, call: &Call, on: On) -> Vec<NewActivity> {
        let mut out = Vec::new();
        for trigger in self.rules.fire(call, on) {
            for action in &trigger.actions {
                for (kind, name) in [
                    (RecordKind::Call, &action.zoho_call),
                    (RecordKind::Task, &action.zoho_task),
                ] {
                    let Some(name) = name else { continue };
                    let snapshot = CallSnapshot::of(call, &trigger.name);
                    let unique_key =
                        format!("{pbx}/{}/{}/{}", call.linkedid, trigger.name, kind.module());
                    let mut record = NewActivity {
                        unique_key,
                        trigger: trigger.name.clone(),
                        module: kind.module().into(),
                        configuration: name.clone(),
                        account: String::new(),
                        payload: Map::new(),
                        workflows: None,
                        agent_email: call.agent_email.clone(),
                        remote_number: remote_number(call).map(str::to_string),
                        unrendered: None,
                    };
                    match self.render(kind, name, &snapshot, &record.unique_key) {
                        Ok(r) => {
                            record.account = r.account;
                            record.payload = r.payload;
                            record.workflows = r.workflows;
                        }
                        Err(reason) => {
                            record.account = self
                                .cfg
                                .zoho
                                .configurations
                                .get(name)
                                .map(|c| c.account.clone())
                                .unwrap_or_default();
                            record.unrendered = Some(Unrendered {
                                reason: format!("cannot render: {reason}"),
                                snapshot: serde_json::to_string(&snapshot).unwrap_or_default(),
                            });
                        }
                    }
                    out.push(record);
                }
            }
        }
        out
    }

    /// Renders one record of `configuration` for a call's snapshot; the error names the key.
    pub fn render(
        &self,
        kind: RecordKind,
        configuration: &str,
        snapshot: &CallSnapshot,
        unique_key: &str,
    ) -> Result<Rendered, String> {
        let (Some(conf), Some(t)) = (
            self.cfg.zoho.configurations.get(configuration),
            self.templates.get(configuration),
        ) else {
            return Err(format!(
                "no [zoho.configurations.{configuration}] in the configuration"
            ));
        };
        let style = activity::Renderer {
            conf,
            templates: t,
            tz: &self.tz,
            links: self.links.as_ref(),
        };
        let mut payload = match kind {
            RecordKind::Call => render_call_snapshot(style, snapshot, None),
            RecordKind::Task => render_task_snapshot(style, snapshot, None),
        }
        .map_err(|e| format!("zoho.configurations.{configuration}.{e}"))?;
        if let (RecordKind::Call, Some(field)) = (kind, &conf.unique_field) {
            payload.insert(field.clone(), json!(unique_key));
        }
        Ok(Rendered {
            account: conf.account.clone(),
            payload,
            workflows: conf.workflows.clone(),
        })
    }

    /// The dry-run lines of `replay --emit activities`: what the end triggers would send,
    /// without the fields that need a Zoho lookup. A record that cannot be rendered is an
    /// error naming the call and the key.
    pub fn dry_run(&self, call: &Call) -> Result<Vec<Value>, String> {
        self.records("replay", call, On::End)
            .into_iter()
            .map(|a| match a.unrendered {
                Some(u) => Err(format!("call {}: {}", call.linkedid, u.reason)),
                None => Ok(json!({ "linkedid": call.linkedid, "trigger": a.trigger, "module": a.module, "record": a.payload })),
            })
            .collect()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}
