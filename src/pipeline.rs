//! Calls → triggers → records to send: the pure step between the call tracker and the outbox.
//!
//! For a finished call (or a live moment) it finds the triggers that fire, renders each
//! action's record from its Zoho configuration, and gives every record an idempotency key
//! (PBX, Linkedid, trigger, module): the outbox stores a key once, so a call fires a trigger
//! at most once per moment however often it is seen.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::calls::Call;
use crate::config::Config;
use crate::store::{remote_number, NewActivity};
use crate::triggers::{On, Rules};
use crate::zoho::activity::{self, render_call, render_task, Templates};

/// Rules and templates, checked once at start.
pub struct Pipeline {
    rules: Rules,
    templates: BTreeMap<String, Templates>,
    tz: jiff::tz::TimeZone,
    country: Option<phonenumber::country::Id>,
    cfg: Config,
    links: Option<crate::recordings::Links>,
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

    /// Every record the triggers firing at `on` make for `call`, in trigger order.
    pub fn records(&self, pbx: &str, call: &Call, on: On) -> Result<Vec<NewActivity>, String> {
        let mut out = Vec::new();
        for trigger in self.rules.fire(call, on) {
            for action in &trigger.actions {
                for (kind, name) in [
                    (RecordKind::Call, &action.zoho_call),
                    (RecordKind::Task, &action.zoho_task),
                ] {
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
                        links: self.links.as_ref(),
                    };
                    let mut payload = match kind {
                        RecordKind::Call => render_call(style, call, &trigger.name, None),
                        RecordKind::Task => render_task(style, call, &trigger.name, None),
                    }
                    .map_err(|e| {
                        format!(
                            "rendering zoho.configurations.{name} for call {}: {e}",
                            call.linkedid
                        )
                    })?;
                    let unique_key =
                        format!("{pbx}/{}/{}/{}", call.linkedid, trigger.name, kind.module());
                    if let (RecordKind::Call, Some(field)) = (kind, &conf.unique_field) {
                        payload.insert(field.clone(), json!(unique_key));
                    }
                    out.push(NewActivity {
                        unique_key,
                        trigger: trigger.name.clone(),
                        module: kind.module().into(),
                        configuration: name.clone(),
                        account: conf.account.clone(),
                        payload,
                        workflows: conf.workflows.clone(),
                        agent_email: call.agent_email.clone(),
                        remote_number: remote_number(call).map(str::to_string),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The dry-run lines of `replay --emit activities`: what the end triggers would send,
    /// without the fields that need a Zoho lookup.
    pub fn dry_run(&self, call: &Call) -> Result<Vec<Value>, String> {
        Ok(self
            .records("replay", call, On::End)?
            .into_iter()
            .map(|a| {
                json!({ "linkedid": call.linkedid, "trigger": a.trigger, "module": a.module, "record": a.payload })
            })
            .collect())
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}
