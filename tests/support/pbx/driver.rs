//! The harness's own AMI session: it places calls the way people make them happen and watches
//! what Asterisk really did, on an account of its own (`driver`, `read = all`).
//!
//! Deliberately independent of the crate under test: it reads AMI line by line, so a bug in the
//! bridge's parser or client cannot hide itself by also being in the judge.
//!
//! Every call is an AMI `Originate` of a Local channel whose `;1` half is the person's device
//! (it runs `Wait(<seconds>)`: the person hangs up when that ends) and whose `;2` half runs the
//! dialplan of `tests/pbx/extensions.conf`. The behaviour of everybody else on the call comes
//! from inherited `LAB_*` channel variables (see the top of `extensions.conf`). The Originate
//! gives the `;1` half a known Uniqueid (`ChannelId`), which is the Linkedid of the whole call,
//! so the driver knows each call's id before Asterisk says anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

/// At most this many messages are kept (a busy hour of 30 calls is about 10 000).
const MAX_EVENTS: usize = 500_000;

/// One AMI message: its headers in order.
#[derive(Clone, Debug, Default)]
pub struct Msg {
    pub headers: Vec<(String, String)>,
}

impl Msg {
    /// The first value of `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// True for the event `name`.
    pub fn is(&self, name: &str) -> bool {
        self.get("Event")
            .is_some_and(|e| e.eq_ignore_ascii_case(name))
    }
}

#[derive(Default)]
struct Shared {
    events: Mutex<Vec<Msg>>,
    dropped: AtomicU64,
    notify: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<Msg>>>,
    closed: std::sync::atomic::AtomicBool,
}

/// An AMI session of the harness. Cheap to share behind an `Arc`.
pub struct Driver {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    reader: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    next: AtomicU64,
    /// Uniqueids the driver gives to its calls: `<id_epoch>.<n>`, shaped like Asterisk's own.
    id_epoch: u64,
}

impl Driver {
    /// Connects, reads the banner and logs in (plain); events flow from then on.
    pub async fn connect(port: u16, user: &str, secret: &str) -> Result<Driver, String> {
        let sock = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let (read, write) = sock.into_split();
        let mut reader = BufReader::new(read);
        let mut banner = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            reader.read_until(b'\n', &mut banner),
        )
        .await
        .map_err(|_| "no banner".to_string())?
        .map_err(|e| e.to_string())?;
        if !banner.starts_with(b"Asterisk Call Manager/") {
            return Err(format!(
                "not an AMI banner: {:?}",
                String::from_utf8_lossy(&banner)
            ));
        }
        let shared = Arc::new(Shared::default());
        let reader = tokio::spawn(read_loop(reader, shared.clone()));
        let id_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let driver = Driver {
            writer: tokio::sync::Mutex::new(write),
            reader,
            shared,
            next: AtomicU64::new(1),
            id_epoch,
        };
        let r = driver
            .action(&[("Action", "Login"), ("Username", user), ("Secret", secret)])
            .await?;
        if r.get("Response") != Some("Success") {
            return Err(format!("login refused: {:?}", r.get("Message")));
        }
        Ok(driver)
    }

    /// Sends an action (an `ActionID` is added) and waits up to 10 s for its response.
    pub async fn action(&self, headers: &[(&str, &str)]) -> Result<Msg, String> {
        let id = format!("drv-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let mut text = String::new();
        for (k, v) in headers {
            assert!(
                !v.contains('\r') && !v.contains('\n'),
                "CR/LF in an action value"
            );
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str(&format!("ActionID: {id}\r\n\r\n"));
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx);
        self.writer
            .lock()
            .await
            .write_all(text.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err("session closed".into()),
            Err(_) => Err(format!("no response to {headers:?} in 10 s")),
        }
    }

    /// How many events arrived so far (an index for [`Driver::wait_event`]).
    pub fn seen(&self) -> usize {
        self.shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// A copy of the events from index `from` on.
    pub fn events_since(&self, from: usize) -> Vec<Msg> {
        let ev = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        ev.get(from..).map(<[Msg]>::to_vec).unwrap_or_default()
    }

    /// True once Asterisk closed the session.
    pub fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// The first event from index `from` on that matches, with its index; `None` after
    /// `timeout` or when the session closed.
    pub async fn wait_event(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Option<(usize, Msg)> {
        let until = Instant::now() + timeout;
        let mut at = from;
        loop {
            let notified = self.shared.notify.notified();
            {
                let ev = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
                while at < ev.len() {
                    if pred(&ev[at]) {
                        return Some((at, ev[at].clone()));
                    }
                    at += 1;
                }
            }
            if self.closed() {
                return None;
            }
            let left = until.checked_duration_since(Instant::now())?;
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// Waits until the AMI user `user` logged in (the `SuccessfulAuth` security event) after
    /// event index `from`; panics after `timeout`.
    pub async fn wait_logged_in(&self, user: &str, from: usize, timeout: Duration) -> usize {
        self.wait_event(from, timeout, |m| {
            m.is("SuccessfulAuth") && m.get("AccountID") == Some(user)
        })
        .await
        .unwrap_or_else(|| panic!("{user} did not log in within {timeout:?}"))
        .0
    }

    fn ids(&self) -> (String, String) {
        // One counter for every driver of the process: a second session on the same PBX (after
        // a restart, say) never hands out an id twice.
        static CALLS: AtomicU64 = AtomicU64::new(900_000);
        let n = CALLS.fetch_add(2, Ordering::Relaxed);
        (
            format!("{}.{}", self.id_epoch, n),
            format!("{}.{}", self.id_epoch, n + 1),
        )
    }

    /// Places one call now and returns its Linkedid and expected truth. Transfers in the plan
    /// are carried out by [`Driver::run`], not here.
    pub async fn place(&self, plan: &CallPlan) -> Placed {
        let (uid1, uid2) = self.ids();
        let o = plan.originate();
        let mut headers: Vec<(String, String)> = vec![
            ("Action".into(), "Originate".into()),
            ("Channel".into(), o.channel.clone()),
            ("Application".into(), "Wait".into()),
            ("Data".into(), o.wait.to_string()),
            ("CallerID".into(), o.caller_id.clone()),
            ("Async".into(), "true".into()),
            ("Timeout".into(), (o.timeout_s * 1000).to_string()),
            ("ChannelId".into(), uid1.clone()),
            ("OtherChannelId".into(), uid2),
        ];
        let id = format!("{}-{}", plan.kind(), uid1.replace('.', "-"));
        headers.push(("Variable".into(), format!("__LAB_ID={id}")));
        for (k, v) in &o.vars {
            headers.push(("Variable".into(), format!("__{k}={v}")));
        }
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = self
            .action(&refs)
            .await
            .unwrap_or_else(|e| panic!("Originate {id}: {e}"));
        assert_eq!(r.get("Response"), Some("Success"), "Originate {id}: {r:?}");
        Placed {
            id,
            linkedid: uid1.clone(),
            placed_at: Instant::now(),
            placed_epoch: epoch_now(),
            expected: plan.expected(&uid1),
        }
    }

    /// True once every channel of the call that Asterisk announced has hung up.
    pub fn ended(&self, linkedid: &str) -> bool {
        let ev = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut live: i64 = 0;
        let mut seen = false;
        for m in ev.iter() {
            if m.get("Linkedid") != Some(linkedid) {
                continue;
            }
            if m.is("Newchannel") {
                live += 1;
                seen = true;
            } else if m.is("Hangup") {
                live -= 1;
            }
        }
        seen && live <= 0
    }

    /// The `Timestamp` of the call's last Hangup, once it ended.
    pub fn ended_epoch(&self, linkedid: &str) -> Option<f64> {
        if !self.ended(linkedid) {
            return None;
        }
        let ev = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        ev.iter()
            .filter(|m| m.is("Hangup") && m.get("Linkedid") == Some(linkedid))
            .filter_map(|m| m.get("Timestamp").and_then(|t| t.parse::<f64>().ok()))
            .reduce(f64::max)
    }

    /// The `Timestamp`s of every login of AMI user `user` seen so far.
    pub fn logins(&self, user: &str) -> Vec<f64> {
        let ev = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        ev.iter()
            .filter(|m| m.is("SuccessfulAuth") && m.get("AccountID") == Some(user))
            .filter_map(|m| m.get("Timestamp").and_then(|t| t.parse::<f64>().ok()))
            .collect()
    }

    /// Waits until the call ended (every channel hung up); panics after `timeout`.
    pub async fn wait_ended(&self, linkedid: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        while !self.ended(linkedid) {
            assert!(
                Instant::now() < until,
                "call {linkedid} still up after {timeout:?}"
            );
            if self.closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The member channel (`Local/<ext>@agents-…;1`) that answered the inbound call.
    async fn member_channel(&self, linkedid: &str, timeout: Duration) -> Option<String> {
        self.wait_event(0, timeout, |m| {
            m.is("AgentConnect") && m.get("Linkedid") == Some(linkedid)
        })
        .await
        .and_then(|(_, m)| m.get("DestChannel").map(str::to_string))
    }

    /// Carries out the transfer of a placed call, as the agent would press the keys.
    async fn transfer(&self, placed: &Placed, t: &Transfer) {
        let Some(member) = self
            .member_channel(&placed.linkedid, Duration::from_secs(40))
            .await
        else {
            panic!("{}: no agent answered, nothing to transfer", placed.id);
        };
        tokio::time::sleep(Duration::from_secs_f64(t.after)).await;
        let to = t.to.as_str();
        match t.kind {
            TransferKind::Blind => {
                let r = self
                    .action(&[
                        ("Action", "BlindTransfer"),
                        ("Channel", &member),
                        ("Exten", to),
                        ("Context", "agents-transfer"),
                    ])
                    .await;
                eprintln!("{}: BlindTransfer to {to}: {r:?}", placed.id);
            }
            TransferKind::Attended => {
                let r = self
                    .action(&[
                        ("Action", "Atxfer"),
                        ("Channel", &member),
                        ("Exten", to),
                        ("Context", "agents-transfer"),
                    ])
                    .await;
                eprintln!("{}: Atxfer to {to}: {r:?}", placed.id);
                // The feature collects the digits until its 3 s timeout, the target rings and
                // answers, they talk; then the first agent hangs up its phone to complete.
                let consult = ATXFER_DIGIT_WAIT + t.ring + t.consult;
                tokio::time::sleep(Duration::from_secs_f64(consult)).await;
                let phone = member.replace(";1", ";2");
                let r = self
                    .action(&[("Action", "Hangup"), ("Channel", &phone)])
                    .await;
                eprintln!("{}: first agent hangs up {phone}: {r:?}", placed.id);
            }
        }
    }

    /// Runs a schedule: each call is placed at its offset from now (later if `max_live` calls
    /// are already up), transfers are carried out, and it returns once every call ended
    /// (panics after `timeout`).
    pub async fn run(
        self: &Arc<Self>,
        schedule: &[(f64, CallPlan)],
        max_live: usize,
        timeout: Duration,
    ) -> Vec<Placed> {
        let start = Instant::now();
        let until = start + timeout;
        let mut placed: Vec<Placed> = Vec::new();
        let mut tasks = Vec::new();
        let mut peak = 0;
        for (at, plan) in schedule {
            let due = start + Duration::from_secs_f64(*at);
            tokio::time::sleep_until(due.into()).await;
            loop {
                let live = placed.iter().filter(|p| !self.ended(&p.linkedid)).count();
                if live < max_live {
                    peak = peak.max(live + 1);
                    break;
                }
                assert!(Instant::now() < until, "calls do not end");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let p = self.place(plan).await;
            if let Some(t) = plan.transfer() {
                let me = self.clone();
                let p2 = p.clone();
                let t = t.clone();
                tasks.push(tokio::spawn(async move { me.transfer(&p2, &t).await }));
            }
            placed.push(p);
        }
        for t in tasks {
            t.await.expect("transfer task");
        }
        for p in &placed {
            let left = until.saturating_duration_since(Instant::now());
            self.wait_ended(&p.linkedid, left).await;
        }
        eprintln!(
            "driver: {} calls placed in {:.1} s, at most {peak} at once",
            placed.len(),
            start.elapsed().as_secs_f64()
        );
        placed
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The session ends with its owner: no reader left buffering a PBX's events.
        self.reader.abort();
    }
}

/// Seconds the `atxfer` feature waits for more digits before dialling (`transferdigittimeout`).
const ATXFER_DIGIT_WAIT: f64 = 3.0;

async fn read_loop(mut reader: BufReader<tokio::net::tcp::OwnedReadHalf>, shared: Arc<Shared>) {
    let mut msg = Msg::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if !text.is_empty() {
            let (k, v) = text.split_once(':').unwrap_or((text, ""));
            msg.headers
                .push((k.trim().to_string(), v.trim_start().to_string()));
            continue;
        }
        if msg.headers.is_empty() {
            continue;
        }
        let m = std::mem::take(&mut msg);
        let waiter = m.get("ActionID").and_then(|id| {
            if m.get("Response").is_some() {
                shared
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id)
            } else {
                None
            }
        });
        match waiter {
            Some(tx) => {
                let _ = tx.send(m);
            }
            None => {
                let mut ev = shared.events.lock().unwrap_or_else(|e| e.into_inner());
                if ev.len() < MAX_EVENTS {
                    ev.push(m);
                } else {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        shared.notify.notify_waiters();
    }
    shared.closed.store(true, Ordering::Relaxed);
    shared
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    shared.notify.notify_waiters();
}

/// A call the driver placed.
#[derive(Clone, Debug)]
pub struct Placed {
    /// The driver's id (`LAB_ID`, also the recording's file name).
    pub id: String,
    pub linkedid: String,
    pub placed_at: Instant,
    /// When it was placed, in seconds since the epoch (the PBX's clock is the host's here).
    pub placed_epoch: f64,
    pub expected: Expected,
}

/// Seconds since the epoch, now.
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the bridge must report for a call: the plan's truth, never the bridge's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub linkedid: String,
    pub direction: &'static str,
    pub status: &'static str,
    pub caller: String,
    pub callee: String,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub outbound_route: Option<String>,
}

/// The inbound queues of the lab and their DIDs (`fixtures/ami-real/README.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// ringall, 15 s member timeout, Agents 1001-1005.
    Support,
    /// rrmemory, 8 s member timeout, Agents 1005-1008.
    Sales,
    /// ringall, 6 s, Agents 1011-1012 who never answer; the queue times out after 20 s.
    Helpdesk,
    /// linear, 8 s: Agent 1013 always rings first, then Agent 1014.
    Billing,
}

impl Queue {
    pub fn did(self) -> &'static str {
        match self {
            Queue::Support => "0699990001",
            Queue::Sales => "0699990002",
            Queue::Helpdesk => "0699990003",
            Queue::Billing => "0699990004",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Queue::Support => "support",
            Queue::Sales => "sales",
            Queue::Helpdesk => "helpdesk",
            Queue::Billing => "billing",
        }
    }

    /// Seconds from the call's start until member `ext` starts ringing, at the latest: the
    /// welcome prompt (1 s), then for linear/rrmemory queues a full ring of every member tried
    /// before (member timeout + 1 s retry).
    fn latest_ring_start(self, ext: &str) -> f64 {
        let ivr = 2.0;
        match self {
            Queue::Support | Queue::Helpdesk => ivr,
            Queue::Billing if ext == "1014" => ivr + 8.0 + 1.5,
            Queue::Billing => ivr,
            // Round robin with memory: up to three others before this one.
            Queue::Sales => ivr + 3.0 * 9.5,
        }
    }
}

/// Who ends an answered call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HangupBy {
    /// The caller (inbound) or the calling agent (outbound, internal).
    Caller,
    /// The agent who answered (inbound), the far end (outbound), the callee (internal).
    Callee,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferKind {
    Blind,
    Attended,
}

/// A transfer by the agent who answered, `after` seconds into the conversation, to agent `to`,
/// who rings `ring` seconds and talks `talk` seconds (after `consult` seconds of consultation,
/// for an attended one).
#[derive(Clone, Debug)]
pub struct Transfer {
    pub kind: TransferKind,
    pub to: String,
    pub after: f64,
    pub ring: f64,
    pub consult: f64,
    pub talk: f64,
}

/// The far end of an outbound call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pstn {
    /// Rings `ring` s, answers, talks `talk` s (unless the agent hangs up first).
    Answer {
        ring: f64,
        talk: f64,
    },
    Busy,
    Congestion,
    /// Rings until the route's Dial timeout (`dial_timeout` s).
    NoAnswer {
        dial_timeout: u32,
    },
    /// Rejects before answering (cause 21).
    Reject,
}

impl Pstn {
    pub fn answer(ring: f64, talk: f64) -> Pstn {
        Pstn::Answer { ring, talk }
    }
}

/// One call as a person makes it happen.
#[derive(Clone, Debug)]
pub enum CallPlan {
    /// A caller dials a DID: IVR, queue, agents.
    Inbound {
        queue: Queue,
        caller_num: String,
        caller_name: String,
        /// The agent who answers and after how many seconds of ringing; `None`: nobody does.
        answer: Option<(String, f64)>,
        /// Seconds of conversation before `hangup_by` hangs up.
        talk: f64,
        hangup_by: HangupBy,
        /// Unanswered calls: the caller hangs up after this many seconds (`None`: waits as
        /// long as the PBX lets them).
        patience: Option<f64>,
        transfer: Option<Transfer>,
        record: bool,
    },
    /// Agent `agent` (20xx) dials `number` through the outbound routes.
    Outbound {
        agent: String,
        number: String,
        pstn: Pstn,
        /// Answered calls: who hangs up after the far end's talk time.
        hangup_by: HangupBy,
        /// The agent gives up after this many seconds of ringing (a cancelled call).
        give_up: Option<f64>,
    },
    /// Agent `agent` (20xx) calls agent `target`, who answers after `ring` s.
    Internal {
        agent: String,
        target: String,
        ring: f64,
        talk: f64,
        hangup_by: HangupBy,
    },
}

/// How a plan becomes an Originate.
struct Originate {
    channel: String,
    caller_id: String,
    /// Seconds the `;1` half (the person) stays once answered.
    wait: u32,
    /// Originate `Timeout`: how long the person waits for an answer.
    timeout_s: u32,
    vars: Vec<(&'static str, String)>,
}

fn secs(x: f64) -> String {
    format!("{x:.1}")
}

impl CallPlan {
    /// An inbound call to `queue` that `agent` answers after `ring` s; they talk `talk` s and
    /// `hangup_by` ends it.
    pub fn inbound_answered(
        queue: Queue,
        caller: (&str, &str),
        agent: &str,
        ring: f64,
        talk: f64,
        hangup_by: HangupBy,
    ) -> CallPlan {
        CallPlan::Inbound {
            queue,
            caller_num: caller.0.into(),
            caller_name: caller.1.into(),
            answer: Some((agent.into(), ring)),
            talk,
            hangup_by,
            patience: None,
            transfer: None,
            record: false,
        }
    }

    /// An inbound call nobody answers; the caller hangs up after `patience` s (`None`: the
    /// queue times out first).
    pub fn inbound_unanswered(
        queue: Queue,
        caller: (&str, &str),
        patience: Option<f64>,
    ) -> CallPlan {
        CallPlan::Inbound {
            queue,
            caller_num: caller.0.into(),
            caller_name: caller.1.into(),
            answer: None,
            talk: 0.0,
            hangup_by: HangupBy::Caller,
            patience,
            transfer: None,
            record: false,
        }
    }

    pub fn outbound(agent: &str, number: &str, pstn: Pstn) -> CallPlan {
        CallPlan::Outbound {
            agent: agent.into(),
            number: number.into(),
            pstn,
            hangup_by: HangupBy::Callee,
            give_up: None,
        }
    }

    pub fn internal(agent: &str, target: &str, ring: f64, talk: f64) -> CallPlan {
        CallPlan::Internal {
            agent: agent.into(),
            target: target.into(),
            ring,
            talk,
            hangup_by: HangupBy::Callee,
        }
    }

    /// Who hangs up an answered call.
    pub fn hangup_by(mut self, by: HangupBy) -> CallPlan {
        match &mut self {
            CallPlan::Inbound { hangup_by, .. }
            | CallPlan::Outbound { hangup_by, .. }
            | CallPlan::Internal { hangup_by, .. } => *hangup_by = by,
        }
        self
    }

    /// Outbound: the agent gives up after `after` s of ringing.
    pub fn give_up(mut self, after: f64) -> CallPlan {
        if let CallPlan::Outbound { give_up, .. } = &mut self {
            *give_up = Some(after);
        }
        self
    }

    /// Inbound answered: the agent transfers the caller.
    pub fn transfer(&self) -> Option<&Transfer> {
        match self {
            CallPlan::Inbound { transfer, .. } => transfer.as_ref(),
            _ => None,
        }
    }

    pub fn with_transfer(mut self, t: Transfer) -> CallPlan {
        if let CallPlan::Inbound { transfer, .. } = &mut self {
            *transfer = Some(t);
        }
        self
    }

    /// Inbound: MixMonitor records the call into the PBX's `recordings/<id>.wav`.
    pub fn record(mut self) -> CallPlan {
        if let CallPlan::Inbound { record, .. } = &mut self {
            *record = true;
        }
        self
    }

    fn kind(&self) -> &'static str {
        match self {
            CallPlan::Inbound { .. } => "in",
            CallPlan::Outbound { .. } => "out",
            CallPlan::Internal { .. } => "int",
        }
    }

    /// About how long the call lasts, in seconds (for schedules).
    pub fn duration(&self) -> f64 {
        match self {
            CallPlan::Inbound {
                queue,
                answer,
                talk,
                patience,
                transfer,
                ..
            } => match answer {
                Some((ext, ring)) => {
                    let t = transfer
                        .as_ref()
                        .map(|t| t.after + t.ring + t.consult + t.talk + ATXFER_DIGIT_WAIT)
                        .unwrap_or(*talk);
                    queue.latest_ring_start(ext) + ring + t
                }
                None => patience.unwrap_or(26.0),
            },
            CallPlan::Outbound { pstn, give_up, .. } => match (pstn, give_up) {
                (_, Some(g)) => *g,
                (Pstn::Answer { ring, talk }, _) => ring + talk,
                (Pstn::NoAnswer { dial_timeout }, _) => f64::from(*dial_timeout),
                (Pstn::Reject, _) => 1.0,
                _ => 0.5,
            },
            CallPlan::Internal { ring, talk, .. } => ring + talk,
        }
    }

    fn originate(&self) -> Originate {
        match self {
            CallPlan::Inbound {
                queue,
                caller_num,
                caller_name,
                answer,
                talk,
                hangup_by,
                patience,
                transfer,
                record,
            } => {
                let mut vars = Vec::new();
                let wait = match answer {
                    Some((ext, ring)) => {
                        vars.push(("LAB_ANSWER", ext.clone()));
                        vars.push(("LAB_RING", secs(*ring)));
                        let latest_answer = queue.latest_ring_start(ext) + ring;
                        match (transfer, hangup_by) {
                            (Some(t), _) => {
                                // The agents hang up: the first by transferring, the target
                                // after its talk time; the caller stays on the line.
                                vars.push(("LAB_TALK", "3600".into()));
                                vars.push(("LAB_XRING", secs(t.ring)));
                                vars.push(("LAB_XTALK", secs(t.talk)));
                                3600
                            }
                            (None, HangupBy::Callee) => {
                                vars.push(("LAB_TALK", secs(*talk)));
                                3600
                            }
                            (None, HangupBy::Caller) => {
                                // Patience counts from the start: the latest answer plus the
                                // talk time, so the call is answered whatever the queue does.
                                vars.push(("LAB_TALK", "3600".into()));
                                (latest_answer + talk).ceil() as u32
                            }
                        }
                    }
                    None => {
                        vars.push(("LAB_ANSWER", "nobody".into()));
                        patience.map(|p| p.ceil() as u32).unwrap_or(3600)
                    }
                };
                if *record {
                    vars.push(("LAB_RECORD", "1".into()));
                }
                Originate {
                    channel: format!("Local/{}@from-trunk", queue.did()),
                    caller_id: format!("\"{caller_name}\" <{caller_num}>"),
                    wait,
                    timeout_s: 30,
                    vars,
                }
            }
            CallPlan::Outbound {
                agent,
                number,
                pstn,
                hangup_by,
                give_up,
            } => {
                let mut vars = Vec::new();
                let mut wait = 3600;
                match pstn {
                    Pstn::Answer { ring, talk } => {
                        vars.push(("LAB_PSTN", "answer".to_string()));
                        vars.push(("LAB_PRING", secs(*ring)));
                        match hangup_by {
                            HangupBy::Callee => vars.push(("LAB_PTALK", secs(*talk))),
                            HangupBy::Caller => {
                                vars.push(("LAB_PTALK", "3600".into()));
                                wait = talk.ceil() as u32;
                            }
                        }
                    }
                    Pstn::Busy => vars.push(("LAB_PSTN", "busy".into())),
                    Pstn::Congestion => vars.push(("LAB_PSTN", "congestion".into())),
                    Pstn::NoAnswer { dial_timeout } => {
                        vars.push(("LAB_PSTN", "noanswer".into()));
                        vars.push(("LAB_DIAL_TIMEOUT", dial_timeout.to_string()));
                    }
                    Pstn::Reject => vars.push(("LAB_PSTN", "reject".into())),
                }
                Originate {
                    channel: format!("Local/{number}@from-agents"),
                    caller_id: format!("\"Agent {agent}\" <{agent}>"),
                    wait,
                    // The agent's patience while it rings: a cancel, or longer than any ring.
                    timeout_s: give_up.map(|g| g.ceil() as u32).unwrap_or(60),
                    vars,
                }
            }
            CallPlan::Internal {
                agent,
                target,
                ring,
                talk,
                hangup_by,
            } => {
                let mut vars = vec![("LAB_ANSWER", target.clone()), ("LAB_RING", secs(*ring))];
                let wait = match hangup_by {
                    HangupBy::Callee => {
                        vars.push(("LAB_TALK", secs(*talk)));
                        3600
                    }
                    HangupBy::Caller => {
                        vars.push(("LAB_TALK", "3600".into()));
                        talk.ceil() as u32
                    }
                };
                Originate {
                    channel: format!("Local/{target}@from-agents"),
                    caller_id: format!("\"Agent {agent}\" <{agent}>"),
                    wait,
                    timeout_s: 60,
                    vars,
                }
            }
        }
    }

    /// The truth of the call as planned (the lab's rules: `fixtures/ami-real/README.md`).
    pub fn expected(&self, linkedid: &str) -> Expected {
        match self {
            CallPlan::Inbound {
                queue,
                caller_num,
                answer,
                patience,
                ..
            } => Expected {
                linkedid: linkedid.into(),
                direction: "inbound",
                status: match (answer, patience) {
                    (Some(_), _) => "answered",
                    (None, Some(_)) => "abandoned",
                    (None, None) => "timeout",
                },
                caller: caller_num.clone(),
                callee: queue.did().into(),
                queue: Some(queue.name().into()),
                agent: answer.as_ref().map(|(ext, _)| format!("Agent {ext}")),
                outbound_route: None,
            },
            CallPlan::Outbound {
                agent,
                number,
                pstn,
                give_up,
                ..
            } => {
                let route = if number.starts_with("00") {
                    "route-international"
                } else if number.starts_with('3') {
                    "route-mobile"
                } else {
                    "route-italy"
                };
                let status = if route == "route-international" {
                    "failed"
                } else {
                    match (pstn, give_up) {
                        (Pstn::Answer { ring, .. }, Some(g)) if g <= ring => "cancelled",
                        (Pstn::NoAnswer { .. }, Some(_)) => "cancelled",
                        (Pstn::Answer { .. }, _) => "answered",
                        (Pstn::Busy, _) => "busy",
                        (Pstn::Congestion, _) => "congestion",
                        (Pstn::NoAnswer { .. }, None) => "noanswer",
                        (Pstn::Reject, _) => "failed",
                    }
                };
                Expected {
                    linkedid: linkedid.into(),
                    direction: "outbound",
                    status,
                    caller: agent.clone(),
                    callee: number.clone(),
                    queue: None,
                    agent: Some(format!("Agent {agent}")),
                    outbound_route: Some(route.into()),
                }
            }
            CallPlan::Internal { agent, target, .. } => Expected {
                linkedid: linkedid.into(),
                direction: "internal",
                status: "answered",
                caller: agent.clone(),
                callee: target.clone(),
                queue: None,
                agent: Some(format!("Agent {agent}")),
                outbound_route: None,
            },
        }
    }
}
