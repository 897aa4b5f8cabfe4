//! Real TCP AMI servers for tests, deliberately independent of the crate's parser (actions
//! are read line by line, capture messages split on blank lines).
//!
//! - [`AmiServer`]: sends a banner, answers `Challenge` and `Login` (plain or MD5) like
//!   Asterisk, answers `Ping`, `CoreShowChannels` and `QueueStatus`, and streams the events of
//!   a recorded capture at once. It can cut the first connection in the middle of a frame and
//!   resume from the start of that frame on the next one, as a PBX that keeps running would.
//! - [`LiveServer`]: a PBX replaying a capture at its recorded pace (optionally faster, with
//!   times scaled) with every `Timestamp:` rewritten to now (plus an optional PBX clock skew).
//!   It drops the session at chosen moments and *loses* the events of the gap, holds re-logins
//!   until the gap is over, and answers the lists from the channels and queue callers alive at
//!   that point of the capture ([`PbxModel`]). A bridge killed -9 just loses its socket: the
//!   PBX plays on and the restarted bridge logs in and gets the lists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct ServerConfig {
    pub username: String,
    pub secret: String,
    /// Bytes streamed after a successful login (whole messages).
    pub body: Vec<u8>,
    pub answer_ping: bool,
    /// Cut the first connection after this many body bytes.
    pub cut_at: Option<usize>,
    /// Stream the body to the first connection only, as a live PBX does not repeat what a
    /// client missed while it was away (a restarted bridge gets nothing old).
    pub once: bool,
}

#[derive(Default)]
pub struct ServerState {
    pub connections: usize,
    pub logins_ok: usize,
    pub logins_failed: usize,
    pub actions: Vec<HashMap<String, String>>,
    /// Where the next connection starts streaming the body.
    resume_at: usize,
    cut_done: bool,
}

pub struct AmiServer {
    pub port: u16,
    pub state: Arc<Mutex<ServerState>>,
}

/// The messages of a capture after its banner and its own Login response.
pub fn capture_body(capture: &[u8]) -> Vec<u8> {
    let after_banner = capture
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    let rest = &capture[after_banner..];
    let end_of_login = rest
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(0);
    rest[end_of_login..].to_vec()
}

/// Start offsets of the messages in `body` (each after a blank line).
pub fn message_starts(body: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, w) in body.windows(4).enumerate() {
        if w == b"\r\n\r\n" && i + 4 < body.len() {
            starts.push(i + 4);
        }
    }
    starts
}

impl AmiServer {
    pub async fn start(cfg: ServerConfig) -> AmiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                st.lock().unwrap().connections += 1;
                tokio::spawn(serve(sock, cfg.clone(), st.clone()));
            }
        });
        AmiServer { port, state }
    }
}

async fn read_action(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Option<HashMap<String, String>> {
    let mut fields = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if fields.is_empty() {
                continue;
            }
            return Some(fields);
        }
        let (k, v) = line.split_once(':')?;
        fields.insert(k.trim().to_ascii_lowercase(), v.trim_start().to_string());
    }
}

fn response(id: &str, lines: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (k, v) in lines {
        out.push_str(&format!("{k}: {v}\r\n"));
        if *k == "Response" {
            out.push_str(&format!("ActionID: {id}\r\n"));
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

async fn serve(sock: TcpStream, cfg: ServerConfig, state: Arc<Mutex<ServerState>>) {
    let (r, mut w) = sock.into_split();
    let mut reader = BufReader::new(r);
    if w.write_all(b"Asterisk Call Manager/11.0.0\r\n")
        .await
        .is_err()
    {
        return;
    }
    let challenge = "471234567";
    // Login phase.
    loop {
        let Some(a) = read_action(&mut reader).await else {
            return;
        };
        state.lock().unwrap().actions.push(a.clone());
        let id = a.get("actionid").cloned().unwrap_or_default();
        match a.get("action").map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("challenge") => {
                let _ = w
                    .write_all(&response(
                        &id,
                        &[("Response", "Success"), ("Challenge", challenge)],
                    ))
                    .await;
            }
            Some("login") => {
                let ok_user = a.get("username") == Some(&cfg.username);
                let ok_secret = match a.get("authtype").map(|s| s.to_ascii_lowercase()).as_deref() {
                    Some("md5") => {
                        let digest = Md5::digest(format!("{challenge}{}", cfg.secret).as_bytes());
                        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                        a.get("key") == Some(&hex)
                    }
                    _ => a.get("secret") == Some(&cfg.secret),
                };
                if ok_user && ok_secret {
                    state.lock().unwrap().logins_ok += 1;
                    let _ = w
                        .write_all(&response(
                            &id,
                            &[
                                ("Response", "Success"),
                                ("Message", "Authentication accepted"),
                            ],
                        ))
                        .await;
                    break;
                }
                state.lock().unwrap().logins_failed += 1;
                let _ = w
                    .write_all(&response(
                        &id,
                        &[("Response", "Error"), ("Message", "Authentication failed")],
                    ))
                    .await;
                return;
            }
            _ => {
                let _ = w
                    .write_all(&response(
                        &id,
                        &[("Response", "Error"), ("Message", "Permission denied")],
                    ))
                    .await;
            }
        }
    }
    // Logged in: one writer for the body and the answers, so they interleave as on a real PBX.
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let writer = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            match item {
                Some(bytes) => {
                    if w.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = w.shutdown().await;
                    return;
                }
            }
        }
    });
    let (from, cut) = {
        let mut st = state.lock().unwrap();
        let from = st.resume_at;
        let cut = match cfg.cut_at {
            Some(c) if !st.cut_done && c > from => {
                st.cut_done = true;
                // The next connection resumes at the start of the frame that is cut.
                st.resume_at = message_starts(&cfg.body)
                    .into_iter()
                    .rfind(|&s| s <= c)
                    .unwrap_or(0);
                Some(c)
            }
            _ => None,
        };
        if cfg.once && cut.is_none() {
            st.resume_at = cfg.body.len();
        }
        (from, cut)
    };
    match cut {
        Some(c) => {
            let _ = tx.send(Some(cfg.body[from..c].to_vec()));
            let _ = tx.send(None);
            let _ = writer.await;
            return;
        }
        None => {
            let _ = tx.send(Some(cfg.body[from..].to_vec()));
        }
    }
    while let Some(a) = read_action(&mut reader).await {
        state.lock().unwrap().actions.push(a.clone());
        let id = a.get("actionid").cloned().unwrap_or_default();
        let answer = match a.get("action").map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("ping") if cfg.answer_ping => Some(response(
                &id,
                &[
                    ("Response", "Success"),
                    ("Ping", "Pong"),
                    ("Timestamp", "1763928000.000001"),
                ],
            )),
            Some("ping") => None,
            // The PBX's state after everything streamed so far (the whole body here).
            Some("coreshowchannels") => {
                let (model, now) = model_at(&cfg.body);
                Some(model.core_show_channels(&id, now))
            }
            Some("queuestatus") => {
                let (model, now) = model_at(&cfg.body);
                Some(model.queue_status(&id, now))
            }
            _ => Some(response(
                &id,
                &[
                    ("Response", "Error"),
                    ("Message", "Invalid/unknown command"),
                ],
            )),
        };
        if let Some(bytes) = answer {
            if tx.send(Some(bytes)).is_err() {
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The model after every message of `body`, and the last recorded time in it.
fn model_at(body: &[u8]) -> (PbxModel, f64) {
    let mut model = PbxModel::default();
    let mut now = 0.0;
    for m in body_msgs(body) {
        now = m.timestamp().unwrap_or(now);
        model.apply(&m, now);
    }
    (model, now)
}

// ---------------------------------------------------------------------------------------------
// The PBX's state at a point of a capture, for `CoreShowChannels` and `QueueStatus`.
// ---------------------------------------------------------------------------------------------

/// One message of a capture: its header lines in order.
#[derive(Clone, Debug)]
pub struct Msg {
    pub lines: Vec<(String, String)>,
}

impl Msg {
    pub fn parse(text: &[u8]) -> Msg {
        let text = String::from_utf8_lossy(text);
        let lines = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()))
            .collect();
        Msg { lines }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// The recorded `Timestamp:` in seconds.
    pub fn timestamp(&self) -> Option<f64> {
        self.get("Timestamp").and_then(|t| t.parse().ok())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for (k, v) in &self.lines {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// The messages of a capture body (see [`capture_body`]), the client's own Logoff answer left out.
pub fn body_msgs(body: &[u8]) -> Vec<Msg> {
    let starts = message_starts(body);
    let mut out = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(body.len());
        let m = Msg::parse(&body[s..e]);
        if m.lines.is_empty() || m.get("Response") == Some("Goodbye") {
            continue;
        }
        out.push(m);
    }
    out
}

/// The channel snapshot fields Asterisk puts in every channel event and in `CoreShowChannel`.
const SNAPSHOT: [&str; 14] = [
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
];

#[derive(Clone, Debug, Default)]
struct LiveChannel {
    fields: HashMap<&'static str, String>,
    application: String,
    app_data: String,
    bridge: String,
    /// When the channel was created (PBX seconds, as served).
    created: f64,
}

#[derive(Clone, Debug)]
struct QueueCaller {
    queue: String,
    uniqueid: String,
    fields: HashMap<&'static str, String>,
    joined: f64,
    order: u64,
}

/// What a PBX would list at one point of a capture: its live channels, its queues' waiting
/// callers and members. Fed the capture's messages in order, whether or not anybody was
/// listening (a PBX keeps running while a client is away).
#[derive(Clone, Debug, Default)]
pub struct PbxModel {
    channels: HashMap<String, LiveChannel>,
    callers: HashMap<String, QueueCaller>,
    /// (queue, interface) → the last QueueMemberStatus/Added fields.
    members: std::collections::BTreeMap<(String, String), Vec<(String, String)>>,
    queues: std::collections::BTreeSet<String>,
    joins: u64,
}

impl PbxModel {
    /// Applies one message that happened at `at` (PBX seconds, as served).
    pub fn apply(&mut self, m: &Msg, at: f64) {
        let Some(event) = m.event() else { return };
        if let Some(q) = m.get("Queue") {
            self.queues.insert(q.to_string());
        }
        let uid = m.get("Uniqueid").map(str::to_string);
        match event {
            "Newchannel" => {
                if let Some(uid) = &uid {
                    let mut ch = LiveChannel {
                        created: at,
                        ..LiveChannel::default()
                    };
                    for k in SNAPSHOT {
                        ch.fields
                            .insert(k, m.get(k).unwrap_or_default().to_string());
                    }
                    self.channels.insert(uid.clone(), ch);
                }
            }
            "Hangup" => {
                if let Some(uid) = &uid {
                    self.channels.remove(uid);
                    self.callers.remove(uid);
                }
                return;
            }
            "QueueCallerJoin" => {
                if let Some(uid) = &uid {
                    let mut fields = HashMap::new();
                    for k in [
                        "Channel",
                        "CallerIDNum",
                        "CallerIDName",
                        "ConnectedLineNum",
                        "ConnectedLineName",
                    ] {
                        fields.insert(k, m.get(k).unwrap_or_default().to_string());
                    }
                    self.joins += 1;
                    self.callers.insert(
                        uid.clone(),
                        QueueCaller {
                            queue: m.get("Queue").unwrap_or_default().to_string(),
                            uniqueid: uid.clone(),
                            fields,
                            joined: at,
                            order: self.joins,
                        },
                    );
                }
            }
            "QueueCallerLeave" | "QueueCallerAbandon" => {
                if let Some(uid) = &uid {
                    self.callers.remove(uid);
                }
            }
            "QueueMemberStatus" | "QueueMemberAdded" => {
                if let (Some(q), Some(i)) = (m.get("Queue"), m.get("Interface")) {
                    self.members.insert(
                        (q.to_string(), i.to_string()),
                        m.lines
                            .iter()
                            .filter(|(k, _)| {
                                !matches!(k.as_str(), "Event" | "Privilege" | "Timestamp")
                            })
                            .cloned()
                            .collect(),
                    );
                }
            }
            "QueueMemberRemoved" => {
                if let (Some(q), Some(i)) = (m.get("Queue"), m.get("Interface")) {
                    self.members.remove(&(q.to_string(), i.to_string()));
                }
            }
            "DialBegin" | "AgentCalled" => {
                // The dialled leg runs no dialplan of its own: it shows the dialling app.
                if let Some(dest) = m.get("DestUniqueid").and_then(|d| self.channels.get_mut(d)) {
                    if event == "AgentCalled" || dest.application.is_empty() {
                        dest.application = if event == "AgentCalled" {
                            "AppQueue"
                        } else {
                            "AppDial"
                        }
                        .into();
                        dest.app_data = "(Outgoing Line)".into();
                    }
                }
            }
            "BridgeEnter" => {
                if let Some(ch) = uid.as_ref().and_then(|u| self.channels.get_mut(u)) {
                    ch.bridge = m.get("BridgeUniqueid").unwrap_or_default().to_string();
                }
            }
            "BridgeLeave" => {
                if let Some(ch) = uid.as_ref().and_then(|u| self.channels.get_mut(u)) {
                    ch.bridge.clear();
                }
            }
            "Newexten" => {
                if let Some(ch) = uid.as_ref().and_then(|u| self.channels.get_mut(u)) {
                    ch.application = m.get("Application").unwrap_or_default().to_string();
                    ch.app_data = m.get("AppData").unwrap_or_default().to_string();
                }
            }
            _ => {}
        }
        // Every channel event carries the channel's snapshot: the latest one wins.
        if let Some(ch) = uid.as_ref().and_then(|u| self.channels.get_mut(u)) {
            for k in SNAPSHOT {
                if let Some(v) = m.get(k) {
                    ch.fields.insert(k, v.to_string());
                }
            }
        }
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The answer to `CoreShowChannels` at `now`, as Asterisk 22 sends it (ActionID second,
    /// no Privilege, no Timestamp, Duration HH:MM:SS, BridgeId, a Complete with ListItems).
    pub fn core_show_channels(&self, id: &str, now: f64) -> Vec<u8> {
        let mut out = response(
            id,
            &[
                ("Response", "Success"),
                ("EventList", "start"),
                ("Message", "Channels will follow"),
            ],
        );
        for ch in self.channels.values() {
            let mut lines = vec![
                ("Event".to_string(), "CoreShowChannel".to_string()),
                ("ActionID".to_string(), id.to_string()),
            ];
            for k in SNAPSHOT {
                lines.push((k.to_string(), ch.fields.get(k).cloned().unwrap_or_default()));
            }
            let secs = (now - ch.created).max(0.0) as u64;
            lines.push(("Application".into(), ch.application.clone()));
            lines.push(("ApplicationData".into(), ch.app_data.clone()));
            lines.push((
                "Duration".into(),
                format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            ));
            lines.push(("BridgeId".into(), ch.bridge.clone()));
            out.extend(Msg { lines }.to_bytes());
        }
        out.extend(
            format!(
                "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {}\r\n\r\n",
                self.channels.len()
            )
            .into_bytes(),
        );
        out
    }

    /// The answer to `QueueStatus` at `now`: per queue its QueueParams, QueueMember and the
    /// callers still waiting (QueueEntry, Wait in seconds), ActionID last, no Privilege.
    pub fn queue_status(&self, id: &str, now: f64) -> Vec<u8> {
        let mut out = response(
            id,
            &[
                ("Response", "Success"),
                ("EventList", "start"),
                ("Message", "Queue status will follow"),
            ],
        );
        let mut items = 0;
        for q in &self.queues {
            let mut waiting: Vec<&QueueCaller> =
                self.callers.values().filter(|c| &c.queue == q).collect();
            waiting.sort_by_key(|c| c.order);
            out.extend(
                format!(
                    "Event: QueueParams\r\nQueue: {q}\r\nMax: 0\r\nStrategy: ringall\r\nCalls: {}\r\nHoldtime: 0\r\nTalkTime: 0\r\nCompleted: 0\r\nAbandoned: 0\r\nServiceLevel: 0\r\nServicelevelPerf: 0.0\r\nServicelevelPerf2: 0.0\r\nWeight: 0\r\nActionID: {id}\r\n\r\n",
                    waiting.len()
                )
                .into_bytes(),
            );
            items += 1;
            for ((mq, _), fields) in &self.members {
                if mq != q {
                    continue;
                }
                let get = |k: &str| {
                    fields
                        .iter()
                        .find(|(f, _)| f == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let mut lines = vec![
                    ("Event".to_string(), "QueueMember".to_string()),
                    ("Queue".to_string(), q.clone()),
                    ("Name".to_string(), get("MemberName")),
                    ("Location".to_string(), get("Interface")),
                ];
                for k in [
                    "StateInterface",
                    "Membership",
                    "Penalty",
                    "CallsTaken",
                    "LastCall",
                    "LastPause",
                    "LoginTime",
                    "InCall",
                    "Status",
                    "Paused",
                    "PausedReason",
                    "Wrapuptime",
                ] {
                    lines.push((k.to_string(), get(k)));
                }
                lines.push(("ActionID".into(), id.to_string()));
                out.extend(Msg { lines }.to_bytes());
                items += 1;
            }
            for (pos, c) in waiting.iter().enumerate() {
                let f = |k: &str| c.fields.get(k).cloned().unwrap_or_default();
                out.extend(
                    format!(
                        "Event: QueueEntry\r\nQueue: {q}\r\nPosition: {}\r\nChannel: {}\r\nUniqueid: {}\r\nCallerIDNum: {}\r\nCallerIDName: {}\r\nConnectedLineNum: {}\r\nConnectedLineName: {}\r\nWait: {}\r\nPriority: 0\r\nActionID: {id}\r\n\r\n",
                        pos + 1,
                        f("Channel"),
                        c.uniqueid,
                        f("CallerIDNum"),
                        f("CallerIDName"),
                        f("ConnectedLineNum"),
                        f("ConnectedLineName"),
                        (now - c.joined).max(0.0) as u64,
                    )
                    .into_bytes(),
                );
                items += 1;
            }
        }
        out.extend(
            format!(
                "Event: QueueStatusComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {items}\r\n\r\n"
            )
            .into_bytes(),
        );
        out
    }
}

// ---------------------------------------------------------------------------------------------
// A live PBX: the capture at its recorded pace, sessions dropped, lists answered.
// ---------------------------------------------------------------------------------------------

/// Now, in seconds since the epoch.
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn sleep_until_epoch(at: f64) {
    let wait = at - epoch_now();
    if wait > 0.0 {
        tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
    }
}

/// A session drop: at `at` seconds of capture time after its first event, the session is
/// closed, and for `seconds` of wall time nobody can log in; what happens meanwhile is lost.
#[derive(Clone, Copy, Debug)]
pub struct Gap {
    pub at: f64,
    pub seconds: f64,
}

#[derive(Clone)]
pub struct LiveConfig {
    pub username: String,
    pub secret: String,
    /// The capture's messages after its banner and Login response ([`capture_body`]).
    pub body: Vec<u8>,
    /// 1.0: recorded pace; 4.0: four times faster, every time and duration divided by 4.
    pub speed: f64,
    /// The PBX's clock minus the host's, in seconds (rewritten `Timestamp:`s and lists).
    pub skew_seconds: f64,
    pub gaps: Vec<Gap>,
    /// Wall seconds from start to the capture's first event (time for the bridge to log in).
    pub lead_in: f64,
}

enum Out {
    Bytes(Vec<u8>),
    Close,
}

/// What the live server did, for the test's assertions.
#[derive(Default)]
pub struct LiveState {
    model: PbxModel,
    sessions: Vec<mpsc::UnboundedSender<Out>>,
    /// Logins are held until this wall time (a gap in progress).
    gap_until: f64,
    pub connections: usize,
    pub logins_ok: usize,
    /// When each login succeeded (wall epoch seconds).
    pub login_times: Vec<f64>,
    /// Each gap as (wall start, wall end of the hold).
    pub drops: Vec<(f64, f64)>,
    /// Messages played while no session was logged in (lost for the bridge).
    pub lost: usize,
    pub sent: usize,
    pub lists_answered: usize,
    pub finished: bool,
}

pub struct LiveServer {
    pub port: u16,
    pub state: Arc<Mutex<LiveState>>,
    /// Wall time at which the capture's first event is played.
    pub t0_wall: f64,
    /// The capture's first recorded `Timestamp:`.
    pub ts0: f64,
    pub speed: f64,
    pub skew: f64,
    /// The capture's last recorded `Timestamp:`.
    pub ts_end: f64,
}

impl LiveServer {
    pub async fn start(cfg: LiveConfig) -> LiveServer {
        let msgs = body_msgs(&cfg.body);
        let ts0 = msgs
            .iter()
            .find_map(Msg::timestamp)
            .expect("a capture with Timestamps");
        let ts_end = msgs.iter().rev().find_map(Msg::timestamp).unwrap_or(ts0);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(LiveState::default()));
        let t0_wall = epoch_now() + cfg.lead_in;
        let st = state.clone();
        let c = cfg.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                st.lock().unwrap().connections += 1;
                tokio::spawn(serve_live(sock, c.clone(), st.clone()));
            }
        });
        tokio::spawn(play(msgs, cfg.clone(), t0_wall, ts0, state.clone()));
        LiveServer {
            port,
            state,
            t0_wall,
            ts0,
            speed: cfg.speed,
            skew: cfg.skew_seconds,
            ts_end,
        }
    }

    /// When a recorded moment is played (host wall clock, epoch seconds).
    pub fn wall_time(&self, recorded: f64) -> f64 {
        self.t0_wall + (recorded - self.ts0) / self.speed
    }

    /// The PBX time a recorded moment is served as (its rewritten `Timestamp:`).
    pub fn pbx_time(&self, recorded: f64) -> f64 {
        self.wall_time(recorded) + self.skew
    }

    /// A recorded duration as served.
    pub fn scaled(&self, seconds: f64) -> f64 {
        seconds / self.speed
    }

    pub fn finished(&self) -> bool {
        self.state.lock().unwrap().finished
    }
}

/// A recorded message as served: `Timestamp:` = `at`, durations divided by `speed`.
fn rewrite(m: &Msg, at: f64, speed: f64) -> Vec<u8> {
    let mut m = m.clone();
    for (k, v) in m.lines.iter_mut() {
        match k.as_str() {
            "Timestamp" => *v = format!("{at:.6}"),
            "TalkTime" | "HoldTime" | "RingTime" | "Duration" | "BillableSeconds"
                if speed != 1.0 =>
            {
                if let Ok(n) = v.parse::<f64>() {
                    *v = format!("{}", (n / speed).round() as i64);
                }
            }
            _ => {}
        }
    }
    m.to_bytes()
}

async fn play(
    msgs: Vec<Msg>,
    cfg: LiveConfig,
    t0_wall: f64,
    ts0: f64,
    state: Arc<Mutex<LiveState>>,
) {
    let mut gaps = cfg.gaps.clone();
    gaps.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut gaps = gaps.into_iter().peekable();
    let mut last = ts0;
    for m in msgs {
        let ts = m.timestamp().unwrap_or(last).max(last);
        last = ts;
        while let Some(g) = gaps.next_if(|g| ts0 + g.at <= ts) {
            let at = t0_wall + g.at / cfg.speed;
            sleep_until_epoch(at).await;
            let mut st = state.lock().unwrap();
            let until = epoch_now() + g.seconds;
            st.gap_until = until;
            st.drops.push((epoch_now(), until));
            for s in st.sessions.drain(..) {
                let _ = s.send(Out::Close);
            }
        }
        let wall = t0_wall + (ts - ts0) / cfg.speed;
        sleep_until_epoch(wall).await;
        let pbx = wall + cfg.skew_seconds;
        let bytes = rewrite(&m, pbx, cfg.speed);
        let mut st = state.lock().unwrap();
        st.model.apply(&m, pbx);
        st.sessions
            .retain(|s| s.send(Out::Bytes(bytes.clone())).is_ok());
        if st.sessions.is_empty() {
            st.lost += 1;
        } else {
            st.sent += 1;
        }
    }
    state.lock().unwrap().finished = true;
}

/// The Login exchange, as in [`serve`]; true when the client is in.
async fn live_login(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    cfg: &LiveConfig,
) -> bool {
    let challenge = "471234567";
    loop {
        let Some(a) = read_action(reader).await else {
            return false;
        };
        let id = a.get("actionid").cloned().unwrap_or_default();
        match a.get("action").map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("challenge") => {
                let answer = response(&id, &[("Response", "Success"), ("Challenge", challenge)]);
                if w.write_all(&answer).await.is_err() {
                    return false;
                }
            }
            Some("login") => {
                let ok_secret = match a.get("authtype").map(|s| s.to_ascii_lowercase()).as_deref() {
                    Some("md5") => {
                        let digest = Md5::digest(format!("{challenge}{}", cfg.secret).as_bytes());
                        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                        a.get("key") == Some(&hex)
                    }
                    _ => a.get("secret") == Some(&cfg.secret),
                };
                let ok = ok_secret && a.get("username") == Some(&cfg.username);
                let answer = if ok {
                    response(
                        &id,
                        &[
                            ("Response", "Success"),
                            ("Message", "Authentication accepted"),
                        ],
                    )
                } else {
                    response(
                        &id,
                        &[("Response", "Error"), ("Message", "Authentication failed")],
                    )
                };
                return w.write_all(&answer).await.is_ok() && ok;
            }
            _ => {
                let answer = response(
                    &id,
                    &[("Response", "Error"), ("Message", "Permission denied")],
                );
                if w.write_all(&answer).await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn serve_live(sock: TcpStream, cfg: LiveConfig, state: Arc<Mutex<LiveState>>) {
    // The network is down during a gap: the connection waits for it to end.
    loop {
        let until = state.lock().unwrap().gap_until;
        if epoch_now() >= until {
            break;
        }
        sleep_until_epoch(until).await;
    }
    let (r, mut w) = sock.into_split();
    let mut reader = BufReader::new(r);
    if w.write_all(b"Asterisk Call Manager/11.0.0\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !live_login(&mut reader, &mut w, &cfg).await {
        return;
    }
    // As Asterisk 22 after a login: FullyBooted (no Timestamp), then the session's own
    // SuccessfulAuth (with one).
    let now = epoch_now() + cfg.skew_seconds;
    let hello = format!(
        "Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 600\r\nLastReload: 600\r\nStatus: Fully Booted\r\n\r\n\
         Event: SuccessfulAuth\r\nPrivilege: security,all\r\nTimestamp: {now:.6}\r\nSeverity: Informational\r\nService: AMI\r\nEventVersion: 1\r\nAccountID: {}\r\nSessionID: 0x1\r\nLocalAddress: IPV4/TCP/127.0.0.1/5038\r\nRemoteAddress: IPV4/TCP/127.0.0.1/40000\r\nUsingPassword: 0\r\n\r\n",
        cfg.username
    );
    if w.write_all(hello.as_bytes()).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    {
        let mut st = state.lock().unwrap();
        st.logins_ok += 1;
        st.login_times.push(epoch_now());
        st.sessions.push(tx.clone());
    }
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Bytes(b) => {
                    if w.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Out::Close => {
                    let _ = w.shutdown().await;
                    return;
                }
            }
        }
    });
    while let Some(a) = read_action(&mut reader).await {
        let id = a.get("actionid").cloned().unwrap_or_default();
        let mut st = state.lock().unwrap();
        let now = epoch_now() + cfg.skew_seconds;
        let answer = match a.get("action").map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("ping") => response(
                &id,
                &[
                    ("Response", "Success"),
                    ("Ping", "Pong"),
                    ("Timestamp", &format!("{now:.6}")),
                ],
            ),
            Some("coreshowchannels") => {
                st.lists_answered += 1;
                st.model.core_show_channels(&id, now)
            }
            Some("queuestatus") => {
                st.lists_answered += 1;
                st.model.queue_status(&id, now)
            }
            Some("logoff") => {
                let _ = tx.send(Out::Bytes(response(
                    &id,
                    &[
                        ("Response", "Goodbye"),
                        ("Message", "Thanks for all the fish."),
                    ],
                )));
                let _ = tx.send(Out::Close);
                break;
            }
            _ => response(
                &id,
                &[
                    ("Response", "Error"),
                    ("Message", "Invalid/unknown command"),
                ],
            ),
        };
        // Under the lock, so the answer sits in the stream where the model was read.
        if tx.send(Out::Bytes(answer)).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
