//! The click-to-dial service itself: guard rails, the one `Originate`, the click book fed by
//! the AMI stream, outcomes to audit, metrics and the reporter, call control.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;

use super::book::{self, Click, ClickBook, Outcome, Phase, Update};
use super::guard::{self, AgentDirectory, NumberRefusal, NumberRules, RateLimiter};
use super::report::{ClickReport, ClickReporter};
use super::{
    Accepted, Audit, ClickInfo, ClickRequest, ClickSource, Control, ControlError, DialSettings,
    Progress, Refusal,
};
use crate::ami::originate::{self, ActionSink, Originate};
use crate::ami::{Kind, Message};

const MAX_IN_FLIGHT: usize = 10_000;
const MAX_AUDIT: usize = 1_000;
/// How long after the agent's ring timeout the OriginateResponse may still come.
const RESPONSE_GRACE: Duration = Duration::from_secs(15);

/// The click-to-dial service. Cheap to clone.
#[derive(Clone)]
pub struct DialService {
    inner: Arc<Inner>,
}

struct Inner {
    settings: DialSettings,
    rules: NumberRules,
    agents: AgentDirectory,
    limiter: Mutex<RateLimiter>,
    book: Mutex<ClickBook>,
    progress: Mutex<HashMap<String, mpsc::Sender<Progress>>>,
    audit: Mutex<VecDeque<Audit>>,
    pbx: Arc<dyn ActionSink>,
    reporter: Arc<dyn ClickReporter>,
}

impl DialService {
    /// A service placing calls through `pbx`. Must run inside a tokio runtime (a timer
    /// closes clicks the PBX never answers).
    pub fn new(
        settings: DialSettings,
        pbx: Arc<dyn ActionSink>,
        reporter: Arc<dyn ClickReporter>,
    ) -> Result<DialService, String> {
        let rules = NumberRules::new(&settings.click, &settings.default_country)?;
        let agents = AgentDirectory::new(&settings.agents, &settings.click.extensions);
        let now = Instant::now();
        let inner = Arc::new(Inner {
            limiter: Mutex::new(RateLimiter::new(
                settings.click.per_agent_per_minute,
                settings.click.global_per_minute,
                now,
            )),
            book: Mutex::new(ClickBook::new(
                &settings.click.variable,
                Duration::from_secs_f64(settings.click.far_end_timeout_seconds),
                MAX_IN_FLIGHT,
            )),
            progress: Mutex::new(HashMap::new()),
            audit: Mutex::new(VecDeque::new()),
            settings,
            rules,
            agents,
            pbx,
            reporter,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(Arc::downgrade(&inner)));
        }
        Ok(DialService { inner })
    }

    /// The agent's extension, if the bridge knows the agent.
    pub fn agent_extension(&self, email: &str) -> Option<String> {
        self.inner.agents.extension(email).map(str::to_string)
    }

    /// Runs the guard rails, then sends the one `Originate`. Refusals are audited, counted
    /// and (except for an unknown agent) reported.
    pub async fn click(&self, req: ClickRequest) -> Result<Accepted, Refusal> {
        let inner = &self.inner;
        let refuse = |refusal: Refusal, to: &str, ext: Option<&str>, id: Option<&str>| {
            inner.record_audit(Audit {
                click_id: id.map(str::to_string),
                source: Some(req.source.as_str()),
                agent: req.agent_email.clone(),
                number: to.to_string(),
                result: refusal.kind().into(),
                reason: refusal.to_string(),
            });
            metrics::counter!("azb_clicks_total", "source" => req.source.as_str(), "result" => refusal.kind())
                .increment(1);
            if let (Some(code), Some(ext)) = (refusal.code(), ext) {
                inner.reporter.report(ClickReport {
                    click_id: id.map(str::to_string),
                    zohouser: req.zohouser.clone(),
                    agent_email: req.agent_email.clone(),
                    from: ext.to_string(),
                    to: to.to_string(),
                    code,
                    message: refusal.to_string(),
                });
            }
            refusal
        };
        let shown = guard::printable(&req.number);
        let Some(ext) = inner.agents.extension(&req.agent_email).map(str::to_string) else {
            return Err(refuse(
                Refusal::UnknownAgent(guard::printable(&req.agent_email)),
                &shown,
                None,
                None,
            ));
        };
        let dialable = match inner.rules.check(&req.number) {
            Ok(d) => d,
            Err(e) => {
                let to = match &e {
                    NumberRefusal::Invalid(_) => shown.clone(),
                    NumberRefusal::Denied { e164, .. }
                    | NumberRefusal::Premium { e164, .. }
                    | NumberRefusal::NotAllowed { e164, .. } => e164.clone(),
                };
                return Err(refuse(e.into(), &to, Some(&ext), None));
            }
        };
        let taken = inner
            .limiter
            .lock()
            .map_err(|_| Refusal::Busy)
            .and_then(|mut l| l.take(&ext, Instant::now()).map_err(Refusal::from));
        if let Err(e) = taken {
            return Err(refuse(e, &dialable.e164, Some(&ext), None));
        }
        let id = new_click_id();
        let o = &inner.settings.originate;
        let c = &inner.settings.click;
        let mut variables = vec![(c.variable.clone(), id.clone())];
        if let Some(cid) = &c.outbound_caller_id {
            variables.push((c.outbound_caller_id_variable.clone(), cid.clone()));
        }
        for v in &o.originate_variables {
            if let Some((name, value)) = v.split_once('=') {
                variables.push((name.trim().to_string(), value.to_string()));
            }
        }
        let originate = Originate {
            channel: o.originate_channel.replace("{ext}", &ext),
            context: o.originate_context.clone(),
            exten: dialable.exten.clone(),
            caller_id: ext.clone(),
            timeout_ms: (o.originate_timeout_seconds * 1000.0) as u64,
            variables,
            action_id: id.clone(),
        };
        let action = match originate.action() {
            Ok(a) => a,
            Err(e) => {
                return Err(refuse(
                    Refusal::Pbx(e.to_string()),
                    &dialable.e164,
                    Some(&ext),
                    Some(&id),
                ))
            }
        };
        // At most two steps follow a click: room for both, so sending never waits or drops.
        let (tx, rx) = mpsc::channel(4);
        let deadline =
            Instant::now() + Duration::from_secs_f64(o.originate_timeout_seconds) + RESPONSE_GRACE;
        let inserted = inner
            .book
            .lock()
            .map_err(|_| book::Full(0))
            .and_then(|mut b| {
                b.insert(Click {
                    id: id.clone(),
                    agent_email: req.agent_email.trim().to_ascii_lowercase(),
                    agent_ext: ext.clone(),
                    zohouser: req.zohouser.clone(),
                    e164: dialable.e164.clone(),
                    record: req.record.clone(),
                    channel: None,
                    uniqueid: None,
                    phase: Phase::Queued,
                    deadline,
                })
            });
        if inserted.is_err() {
            return Err(refuse(Refusal::Busy, &dialable.e164, Some(&ext), Some(&id)));
        }
        if let Ok(mut p) = inner.progress.lock() {
            p.insert(id.clone(), tx);
        }
        let answer = inner.pbx.send_action(action).await;
        let refused = match answer {
            Ok(m) if is_success(&m) => None,
            Ok(m) => Some(
                m.get_str("Message")
                    .map(|s| s.into_owned())
                    .unwrap_or_else(|| "Response: Error".into()),
            ),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = refused {
            inner.forget(&id);
            return Err(refuse(
                Refusal::Pbx(why),
                &dialable.e164,
                Some(&ext),
                Some(&id),
            ));
        }
        inner.record_audit(Audit {
            click_id: Some(id.clone()),
            source: Some(req.source.as_str()),
            agent: req.agent_email.clone(),
            number: dialable.e164.clone(),
            result: "originated".into(),
            reason: format!(
                "Originate queued: {} rings, then {} dials {}",
                originate.channel, originate.context, originate.exten
            ),
        });
        metrics::counter!("azb_clicks_total", "source" => req.source.as_str(), "result" => "originated")
            .increment(1);
        Ok(Accepted {
            click_id: id,
            e164: dialable.e164,
            exten: dialable.exten,
            agent_extension: ext,
            progress: rx,
        })
    }

    /// Feeds one message of the PBX's event stream (call it for every message, in order).
    pub fn observe(&self, m: &Message) {
        if !matches!(m.kind(), Kind::Event(e) if matches!(e, b"VarSet" | b"OriginateResponse" | b"DialEnd" | b"Hangup"))
        {
            return;
        }
        let mut out = Vec::new();
        if let Ok(mut b) = self.inner.book.lock() {
            b.on_message(m, Instant::now(), &mut out);
        }
        self.inner.apply(out);
    }

    /// The tags that link a call to its click, from the `VarSet` of the tagging variable
    /// (`CTD_ID`) on one of the call's channels: `(uniqueid, key, value)` for the tracker's
    /// `tag` (as FastAGI tags are applied): `ctd_id`, `ctd_agent` (e-mail), `ctd_number`
    /// (E.164), `ctd_zohouser` and `ctd_record` (`Contacts/…`) when known. Empty for any
    /// other message or a click this service does not know.
    pub fn call_tags(&self, m: &Message) -> Vec<(String, String, String)> {
        if !m.is_event("VarSet") {
            return Vec::new();
        }
        let ours = m.get_str("Variable").is_some_and(|v| {
            v.trim_start_matches('_')
                .eq_ignore_ascii_case(self.inner.settings.click.variable.trim_start_matches('_'))
        });
        let (Some(value), Some(uid)) = (m.get_str("Value"), m.get_str("Uniqueid")) else {
            return Vec::new();
        };
        if !ours {
            return Vec::new();
        }
        let Some(info) = self.click_info(value.trim()) else {
            return Vec::new();
        };
        let mut tags = vec![
            ("ctd_id", Some(info.click_id)),
            ("ctd_agent", Some(info.agent_email)),
            ("ctd_number", Some(info.e164)),
            ("ctd_zohouser", info.zohouser),
            ("ctd_record", info.record),
        ];
        tags.retain(|(_, v)| v.is_some());
        tags.into_iter()
            .filter_map(|(k, v)| Some((uid.to_string(), k.to_string(), v?)))
            .collect()
    }

    /// The session to the PBX dropped: outcomes of clicks still waiting will never be seen.
    pub fn session_lost(&self) {
        let mut out = Vec::new();
        if let Ok(mut b) = self.inner.book.lock() {
            b.drain_unknown(
                "the AMI session dropped before the outcome was known",
                &mut out,
            );
        }
        self.inner.apply(out);
    }

    /// What is known of a click by its id (the value of the `CTD_ID` channel variable).
    pub fn click_info(&self, click_id: &str) -> Option<ClickInfo> {
        let b = self.inner.book.lock().ok()?;
        let c = b.get(click_id)?;
        Some(ClickInfo {
            click_id: c.id.clone(),
            agent_email: c.agent_email.clone(),
            agent_extension: c.agent_ext.clone(),
            zohouser: c.zohouser.clone(),
            e164: c.e164.clone(),
            record: c.record.clone(),
            channel: c.channel.clone(),
            uniqueid: c.uniqueid.clone(),
        })
    }

    /// Call control on a click-to-dial call: `callref` is the click id or the call's
    /// Uniqueid / Linkedid; `agent_email`, when given, must be the agent who clicked. Only
    /// the channel the click created is touched.
    pub async fn control(
        &self,
        callref: &str,
        agent_email: Option<&str>,
        what: Control,
    ) -> Result<String, ControlError> {
        let shown = guard::printable(callref);
        let (id, agent, channel) = {
            let b = self
                .inner
                .book
                .lock()
                .map_err(|_| ControlError::NotFound(shown.clone()))?;
            let c = b
                .find(callref)
                .ok_or_else(|| ControlError::NotFound(shown.clone()))?;
            if let Some(a) = agent_email {
                if !a.trim().eq_ignore_ascii_case(&c.agent_email) {
                    return Err(ControlError::NotYours(shown));
                }
            }
            let ch = c
                .channel
                .clone()
                .ok_or_else(|| ControlError::NoChannel(shown.clone()))?;
            (c.id.clone(), c.agent_email.clone(), ch)
        };
        let action_id = format!("{id}-{}", what.as_str());
        let action = match what {
            Control::Hangup => originate::hangup(&channel, &action_id),
            Control::Mute => originate::mute(&channel, true, &action_id),
            Control::Unmute => originate::mute(&channel, false, &action_id),
        }
        .map_err(|e| ControlError::Pbx(e.to_string()))?;
        let result = match self.inner.pbx.send_action(action).await {
            Ok(m) if is_success(&m) => Ok(channel.clone()),
            Ok(m) => Err(ControlError::Pbx(
                m.get_str("Message")
                    .map(|s| s.into_owned())
                    .unwrap_or_else(|| "Response: Error".into()),
            )),
            Err(e) => Err(ControlError::Pbx(e.to_string())),
        };
        let label = if result.is_ok() { "done" } else { "failed" };
        self.inner.record_audit(Audit {
            click_id: Some(id),
            source: None,
            agent,
            number: String::new(),
            result: format!("{}_{label}", what.as_str()),
            reason: match &result {
                Ok(ch) => format!("{} on {ch}", what.as_str()),
                Err(e) => e.to_string(),
            },
        });
        metrics::counter!("azb_call_control_total", "action" => what.as_str(), "result" => label)
            .increment(1);
        result
    }

    /// Audits a request refused before it became a click (wrong secret, unknown Zoho user):
    /// the same audit line and counter as every other refusal.
    pub fn refuse_request(
        &self,
        source: ClickSource,
        who: &str,
        number: &str,
        result: &str,
        reason: &str,
    ) {
        self.inner.record_audit(Audit {
            click_id: None,
            source: Some(source.as_str()),
            agent: guard::printable(who),
            number: guard::printable(number),
            result: result.to_string(),
            reason: reason.to_string(),
        });
        metrics::counter!("azb_clicks_total", "source" => source.as_str(), "result" => result.to_string())
            .increment(1);
    }

    /// The latest audit records, oldest first (bounded).
    pub fn audit(&self) -> Vec<Audit> {
        self.inner
            .audit
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Clicks in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.book.lock().map(|b| b.len()).unwrap_or(0)
    }
}

impl Inner {
    fn record_audit(&self, a: Audit) {
        tracing::info!(
            target: "azb::audit",
            click_id = a.click_id.as_deref().unwrap_or("-"),
            source = a.source.unwrap_or("-"),
            agent = %a.agent,
            number = %a.number,
            result = %a.result,
            reason = %a.reason,
            "click-to-dial"
        );
        if let Ok(mut q) = self.audit.lock() {
            if q.len() >= MAX_AUDIT {
                q.pop_front();
            }
            q.push_back(a);
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut b) = self.book.lock() {
            b.remove(id);
        }
        if let Ok(mut p) = self.progress.lock() {
            p.remove(id);
        }
    }

    fn apply(&self, updates: Vec<Update>) {
        for u in updates {
            match u {
                Update::AgentAnswered { id, channel } => {
                    if let Ok(p) = self.progress.lock() {
                        if let Some(tx) = p.get(&id) {
                            let _ = tx.try_send(Progress::AgentAnswered { channel });
                        }
                    }
                }
                Update::Finished { click, outcome } => self.finish(&click, outcome),
            }
        }
    }

    fn finish(&self, click: &Click, outcome: Outcome) {
        // A connected click stays in the book (call control) until its channel hangs up;
        // any other outcome has already left it.
        if outcome == Outcome::Connected {
            if let Ok(mut b) = self.book.lock() {
                b.keep_connected(&click.id, Instant::now());
            }
        }
        let pending = self
            .progress
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&click.id));
        let reason = match &outcome {
            Outcome::Connected => "the far end answered".to_string(),
            Outcome::Failed { code, reason } => format!("{code}: {reason}"),
            Outcome::Cancelled { reason } | Outcome::Unknown { reason } => reason.clone(),
        };
        metrics::counter!("azb_click_outcomes_total", "outcome" => outcome.label()).increment(1);
        self.record_audit(Audit {
            click_id: Some(click.id.clone()),
            source: None,
            agent: click.agent_email.clone(),
            number: click.e164.clone(),
            result: outcome.label().into(),
            reason,
        });
        if let Outcome::Failed { code, reason } = &outcome {
            self.reporter.report(ClickReport {
                click_id: Some(click.id.clone()),
                zohouser: click.zohouser.clone(),
                agent_email: click.agent_email.clone(),
                from: click.agent_ext.clone(),
                to: click.e164.clone(),
                code: *code,
                message: reason.clone(),
            });
        }
        if let Some(tx) = pending {
            let _ = tx.try_send(Progress::Done(outcome));
        }
    }
}

fn is_success(m: &Message) -> bool {
    matches!(m.kind(), Kind::Response(r) if r.eq_ignore_ascii_case(b"Success"))
}

/// `c2d-` and 16 random hex digits: unguessable, so a call-control request cannot name
/// someone else's call by counting.
fn new_click_id() -> String {
    let n: u64 = rand::rng().random();
    format!("c2d-{n:016x}")
}

/// Closes overdue clicks once a second, for as long as the service exists.
async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let mut out = Vec::new();
        if let Ok(mut b) = inner.book.lock() {
            b.tick(Instant::now(), &mut out);
        }
        inner.apply(out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{ClickToDialConfig, OriginateConfig};
    use super::super::report;
    use super::*;
    use crate::ami::AmiError;
    use futures::future::BoxFuture;

    /// Answers every action `Response: Success` and keeps it.
    #[derive(Default)]
    struct Accepting(Mutex<Vec<crate::ami::Action>>);

    impl ActionSink for Accepting {
        fn send_action(
            &self,
            action: crate::ami::Action,
        ) -> BoxFuture<'_, Result<Message, AmiError>> {
            let id = action.action_id().unwrap_or_default().to_string();
            if let Ok(mut a) = self.0.lock() {
                a.push(action);
            }
            Box::pin(async move {
                Ok(Message::from_pairs(&[
                    ("Response", "Success"),
                    ("ActionID", id.as_str()),
                ]))
            })
        }
    }

    fn service() -> (DialService, Arc<Accepting>) {
        let mut agents = std::collections::BTreeMap::new();
        agents.insert("2002".to_string(), "agent2002@example.com".to_string());
        let settings = DialSettings {
            click: ClickToDialConfig::default(),
            originate: OriginateConfig::default(),
            default_country: "IT".into(),
            agents,
        };
        let sink = Arc::new(Accepting::default());
        let s = DialService::new(
            settings,
            sink.clone(),
            Arc::new(report::MemoryReporter::default()),
        )
        .unwrap();
        (s, sink)
    }

    #[tokio::test]
    async fn the_varset_of_the_click_id_tags_the_call() {
        let (s, sink) = service();
        let a = s
            .click(ClickRequest {
                source: ClickSource::AgentPage,
                agent_email: "Agent2002@example.com".into(),
                zohouser: None,
                number: "02 9876 5432".into(),
                record: Some("Contacts/4150868000000224005".into()),
            })
            .await
            .unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        // As ctd-busy.ami shows it on the originated channel.
        let varset = |var: &str, value: &str| {
            Message::from_pairs(&[
                ("Event", "VarSet"),
                ("Channel", "Local/2002@from-internal-00000026;1"),
                ("Uniqueid", "1795985816.76"),
                ("Linkedid", "1795985816.76"),
                ("Variable", var),
                ("Value", value),
            ])
        };
        let tags = s.call_tags(&varset("CTD_ID", &a.click_id));
        let want: Vec<(String, String, String)> = [
            ("ctd_id", a.click_id.as_str()),
            ("ctd_agent", "agent2002@example.com"),
            ("ctd_number", "+390298765432"),
            ("ctd_record", "Contacts/4150868000000224005"),
        ]
        .into_iter()
        .map(|(k, v)| ("1795985816.76".to_string(), k.to_string(), v.to_string()))
        .collect();
        assert_eq!(tags, want);
        assert!(s.call_tags(&varset("CTD_ID", "c2d-unknown")).is_empty());
        assert!(s.call_tags(&varset("OTHER", &a.click_id)).is_empty());
        // The observe path learns the channel from the same event.
        s.observe(&varset("CTD_ID", &a.click_id));
        assert_eq!(
            s.click_info(&a.click_id).and_then(|c| c.channel).as_deref(),
            Some("Local/2002@from-internal-00000026;1")
        );
    }

    #[test]
    fn clicks_and_outcomes_are_counted_for_metrics() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (s, _) = service();
                let click = |number: &str| ClickRequest {
                    source: ClickSource::Cli,
                    agent_email: "agent2002@example.com".into(),
                    zohouser: None,
                    number: number.into(),
                    record: None,
                };
                let a = s.click(click("0298765432")).await.unwrap();
                assert!(s.click(click("+442079460000")).await.is_err());
                assert!(s.click(click("not a number")).await.is_err());
                // The agent's phone is never answered (ctd-agent-noanswer.ami).
                s.observe(&Message::from_pairs(&[
                    ("Event", "OriginateResponse"),
                    ("ActionID", a.click_id.as_str()),
                    ("Response", "Failure"),
                    ("Channel", "Local/2002@from-internal"),
                    ("Reason", "3"),
                    ("Uniqueid", "<unknown>"),
                ]));
            });
        });
        let text = handle.render();
        for line in [
            r#"azb_clicks_total{source="cli",result="originated"} 1"#,
            r#"azb_clicks_total{source="cli",result="blocked_number"} 1"#,
            r#"azb_clicks_total{source="cli",result="invalid_number"} 1"#,
            r#"azb_click_outcomes_total{outcome="failed"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
