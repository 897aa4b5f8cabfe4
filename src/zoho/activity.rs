//! Rendering a finished call into a Zoho CRM Call record (pure: no I/O).
//!
//! What the record says comes from a "Zoho configuration" as in XCALLY Motion: Subject,
//! Description and extra Fields, as minijinja templates over the call's variables
//! (`{{ caller }}`, `{{ queue }}`, `{{ talk_seconds }}` ...). The fixed parts follow Zoho's
//! rules: `Call_Type` from direction and status, `Call_Start_Time` in ISO 8601 with the
//! offset of the configured time zone, `Call_Duration` as `MM:SS` and never zero on
//! Inbound/Outbound, `Outgoing_Call_Status: Completed` on outbound calls.

use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::calls::{Call, Direction, Status};
use crate::config::ActivityConfig;

/// Zoho's `Call_Type` picklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    Inbound,
    Outbound,
    Missed,
}

impl CallType {
    pub fn of(call: &Call) -> CallType {
        match (call.direction, call.status) {
            (Direction::Inbound, Status::Answered) => CallType::Inbound,
            (Direction::Inbound, _) => CallType::Missed,
            // Outbound and internal calls are placed by an agent: Zoho logs them as Outbound.
            _ => CallType::Outbound,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Inbound => "Inbound",
            CallType::Outbound => "Outbound",
            CallType::Missed => "Missed",
        }
    }
}

/// What only Zoho can tell: filled by the delivery stage, absent in a dry run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookups {
    pub owner_id: Option<String>,
    pub contact_id: Option<String>,
    pub lead_id: Option<String>,
}

/// A configuration's templates, parsed once.
pub struct Templates {
    env: Environment<'static>,
    fields: Vec<String>,
}

const SUBJECT: &str = "subject";
const DESCRIPTION: &str = "description";
const RECORDING: &str = "recording_url";
const TASK_SUBJECT: &str = "task_subject";

impl Templates {
    /// Parses every template of `conf`; the error names the key (`subject: ...`).
    pub fn compile(conf: &ActivityConfig) -> Result<Templates, String> {
        let mut env = Environment::new();
        let mut add = |name: String, source: String| {
            env.add_template_owned(name.clone(), source)
                .map_err(|e| format!("{name}: template error: {e}"))
        };
        add(SUBJECT.into(), conf.subject.clone())?;
        add(DESCRIPTION.into(), conf.description.clone())?;
        add(TASK_SUBJECT.into(), conf.task_subject.clone())?;
        if let Some(r) = &conf.recording_url {
            add(RECORDING.into(), r.clone())?;
        }
        let mut fields = Vec::new();
        for (name, value) in &conf.fields {
            if let Value::String(s) = value {
                add(format!("fields.{name}"), s.clone())?;
                fields.push(name.clone());
            }
        }
        Ok(Templates { env, fields })
    }

    fn render(&self, name: &str, ctx: &Value) -> Result<String, String> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| format!("{name}: {e}"))?;
        t.render(ctx).map_err(|e| format!("{name}: {e}"))
    }
}

/// `MM:SS`, minutes unbounded (`75:30`).
pub fn duration_mmss(seconds: u32) -> String {
    format!("{:02}:{:02}", seconds / 60, seconds % 60)
}

/// ISO 8601 with the zone's offset and no fraction: `2026-11-23T21:20:13+01:00`.
pub fn zoho_time(call_time: crate::calls::Micros, tz: &jiff::tz::TimeZone) -> Option<String> {
    let ts = jiff::Timestamp::from_second(call_time.0.div_euclid(1_000_000)).ok()?;
    Some(
        ts.to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    )
}

/// The variables templates can use: the call's JSON plus a few conveniences.
pub fn template_context(call: &Call, trigger: &str, tz: &jiff::tz::TimeZone) -> Value {
    CallSnapshot::of(call, trigger).context(tz)
}

/// What a configuration needs to render records: its settings, its parsed templates, and the
/// time zone of the times sent to Zoho.
#[derive(Clone, Copy)]
pub struct Renderer<'a> {
    pub conf: &'a ActivityConfig,
    pub templates: &'a Templates,
    pub tz: &'a jiff::tz::TimeZone,
    /// Signed links to recordings the bridge serves (`[recordings]`), when configured.
    pub links: Option<&'a crate::recordings::Links>,
}

/// Everything rendering needs from a call, as plain data. A record that cannot be rendered
/// (a template the configuration in force cannot render) is stored with its snapshot, so the
/// admin can fix the configuration and render it again (`outbox retry`) long after the call's
/// tracker state is gone. Times are kept as UTC microseconds: the zone is the configuration's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSnapshot {
    /// The template variables (the call's JSON, `trigger`, `duration`, `call_type`).
    pub vars: Value,
    pub call_type: String,
    pub answered: bool,
    pub started_at: i64,
    pub ended_at: i64,
    pub talk_seconds: u32,
    pub caller: Option<String>,
    pub callee: Option<String>,
}

impl CallSnapshot {
    pub fn of(call: &Call, trigger: &str) -> CallSnapshot {
        let mut vars = serde_json::to_value(call).unwrap_or_else(|_| json!({}));
        if let Value::Object(map) = &mut vars {
            map.insert("trigger".into(), json!(trigger));
            map.insert("duration".into(), json!(duration_mmss(call.talk_seconds)));
            map.insert("call_type".into(), json!(CallType::of(call).as_str()));
            map.remove("channels");
        }
        CallSnapshot {
            vars,
            call_type: CallType::of(call).as_str().into(),
            answered: call.status == Status::Answered,
            started_at: call.started_at.0,
            ended_at: call.ended_at.0,
            talk_seconds: call.talk_seconds,
            caller: call.caller.clone(),
            callee: call.callee.clone(),
        }
    }

    fn call_type(&self) -> CallType {
        match self.call_type.as_str() {
            "Inbound" => CallType::Inbound,
            "Missed" => CallType::Missed,
            _ => CallType::Outbound,
        }
    }

    /// The template variables with the start in the configured zone.
    fn context(&self, tz: &jiff::tz::TimeZone) -> Value {
        let mut ctx = self.vars.clone();
        if let Value::Object(map) = &mut ctx {
            map.insert(
                "start_local".into(),
                json!(zoho_time(crate::calls::Micros(self.started_at), tz)),
            );
        }
        ctx
    }
}

/// The template variables and a record holding the rendered subject (Zoho's 255-char cap).
fn begin(
    templates: &Templates,
    snap: &CallSnapshot,
    tz: &jiff::tz::TimeZone,
    subject: &str,
) -> Result<(Value, Map<String, Value>), String> {
    let ctx = snap.context(tz);
    let mut r = Map::new();
    r.insert(
        "Subject".into(),
        json!(truncate(&templates.render(subject, &ctx)?, 255)),
    );
    Ok((ctx, r))
}

/// The Call record for `call` as fired by `trigger`.
pub fn render_call(
    r: Renderer<'_>,
    call: &Call,
    trigger: &str,
    lookups: Option<&Lookups>,
) -> Result<Map<String, Value>, String> {
    render_call_snapshot(r, &CallSnapshot::of(call, trigger), lookups)
}

/// The Call record of a snapshot (a call rendered again after its configuration was fixed).
pub fn render_call_snapshot(
    r: Renderer<'_>,
    snap: &CallSnapshot,
    lookups: Option<&Lookups>,
) -> Result<Map<String, Value>, String> {
    let Renderer {
        conf,
        templates,
        tz,
        links,
    } = r;
    let (ctx, mut r) = begin(templates, snap, tz, SUBJECT)?;
    let call_type = snap.call_type();
    r.insert("Call_Type".into(), json!(call_type.as_str()));
    let start = zoho_time(crate::calls::Micros(snap.started_at), tz)
        .ok_or("the call's start time is out of range")?;
    r.insert("Call_Start_Time".into(), json!(start));
    match call_type {
        CallType::Missed => {}
        CallType::Inbound | CallType::Outbound => {
            // Zoho refuses a zero duration on these types; an unanswered outbound call is
            // logged with its ring time.
            let secs = if snap.answered {
                snap.talk_seconds
            } else {
                ((snap.ended_at - snap.started_at) as f64 / 1e6)
                    .round()
                    .max(0.0) as u32
            };
            r.insert("Call_Duration".into(), json!(duration_mmss(secs.max(1))));
        }
    }
    if call_type == CallType::Outbound {
        r.insert("Outgoing_Call_Status".into(), json!("Completed"));
    }
    r.insert(
        "Description".into(),
        json!(templates.render(DESCRIPTION, &ctx)?),
    );
    if let Some(n) = &snap.caller {
        r.insert("Caller_ID".into(), json!(n));
    }
    if let Some(n) = &snap.callee {
        r.insert("Dialled_Number".into(), json!(n));
    }
    // The configured template (which sees `tags.recording`), else the bridge's own signed
    // link to the call's MixMonitor file; a call without a recording gets no field.
    let recorded = snap
        .vars
        .get("tags")
        .and_then(|t| t.get(crate::recordings::RECORDING_TAG))
        .and_then(Value::as_str);
    let url = match (&conf.recording_url, links, recorded) {
        (Some(_), _, _) => Some(templates.render(RECORDING, &ctx)?),
        (None, Some(l), Some(file)) => {
            l.url(file, jiff::Timestamp::now().as_second().max(0) as u64)
        }
        _ => None,
    };
    if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
        r.insert("Voice_Recording__s".into(), json!(url));
    }
    for (name, value) in &conf.fields {
        let v = if templates.fields.contains(name) {
            json!(templates.render(&format!("fields.{name}"), &ctx)?)
        } else {
            value.clone()
        };
        r.insert(name.clone(), v);
    }
    if let Some(l) = lookups {
        link(&mut r, l);
    }
    Ok(r)
}

/// The follow-up Task (e.g. call back an abandoned caller) for `call`.
pub fn render_task(
    r: Renderer<'_>,
    call: &Call,
    trigger: &str,
    lookups: Option<&Lookups>,
) -> Result<Map<String, Value>, String> {
    render_task_snapshot(r, &CallSnapshot::of(call, trigger), lookups)
}

/// The follow-up Task of a snapshot.
pub fn render_task_snapshot(
    r: Renderer<'_>,
    snap: &CallSnapshot,
    lookups: Option<&Lookups>,
) -> Result<Map<String, Value>, String> {
    let Renderer {
        conf,
        templates,
        tz,
        links: _,
    } = r;
    let (ctx, mut r) = begin(templates, snap, tz, TASK_SUBJECT)?;
    let due_secs = snap.ended_at.div_euclid(1_000_000) + i64::from(conf.task_due_days) * 86_400;
    let due = jiff::Timestamp::from_second(due_secs)
        .map_err(|e| e.to_string())?
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d")
        .to_string();
    r.insert("Due_Date".into(), json!(due));
    r.insert("Status".into(), json!("Not Started"));
    r.insert(
        "Description".into(),
        json!(templates.render(DESCRIPTION, &ctx)?),
    );
    if let Some(l) = lookups {
        link(&mut r, l);
    }
    Ok(r)
}

/// Owner, and the Contact (`Who_Id`) or Lead (`What_Id` + `$se_module`).
pub fn link(r: &mut Map<String, Value>, l: &Lookups) {
    if let Some(id) = &l.owner_id {
        r.insert("Owner".into(), json!({ "id": id }));
    }
    if let Some(id) = &l.contact_id {
        r.insert("Who_Id".into(), json!({ "id": id }));
    } else if let Some(id) = &l.lead_id {
        r.insert("What_Id".into(), json!({ "id": id }));
        r.insert("$se_module".into(), json!("Leads"));
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_mmss(0), "00:00");
        assert_eq!(duration_mmss(252), "04:12");
        assert_eq!(duration_mmss(4530), "75:30");
    }

    #[test]
    fn zoho_time_has_the_zone_offset_and_no_fraction() {
        let tz = jiff::tz::TimeZone::get("Europe/Rome").unwrap();
        // 2026-11-23T20:20:13.224Z is 21:20:13 in Rome (CET, +01:00).
        let t = crate::calls::Micros(1_795_465_213_224_000);
        assert_eq!(
            zoho_time(t, &tz).as_deref(),
            Some("2026-11-23T21:20:13+01:00")
        );
    }

    #[test]
    fn template_errors_name_the_key() {
        let conf = ActivityConfig {
            subject: "{{ caller ".into(),
            ..ActivityConfig::default()
        };
        let err = Templates::compile(&conf).err().unwrap_or_default();
        assert!(err.starts_with("subject:"), "{err}");
    }
}
