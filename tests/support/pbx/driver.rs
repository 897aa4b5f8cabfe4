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

use super::plan::{CallPlan, Expected, Transfer, TransferKind, ATXFER_DIGIT_WAIT};

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
