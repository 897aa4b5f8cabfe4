//! A live AMI session that survives its server.
//!
//! One task owns the socket's read half and does nothing but frame messages and route them:
//! responses to our own actions go to whoever is waiting, everything else goes into a
//! bounded channel (`queue_events`). It never waits long on downstream work, because Asterisk
//! drops a manager session whose writes stall (`writetimeout`, 100 ms by default). Writes go
//! through a separate writer task for the same reason.
//!
//! When the channel is full for longer than `queue_wait` (well under Asterisk's write stall;
//! the kernel's socket buffers absorb Asterisk's writes meanwhile), the session is dropped
//! on purpose and re-established once the consumer has caught up: memory stays bounded, and
//! the usual [`SourceEvent::Reconnected`] marker tells the tracker that calls spanning the gap
//! are incomplete. Dropping events one by one instead would corrupt calls silently; waiting
//! would make Asterisk drop us anyway, at a moment of its choosing. Counted in
//! `azb_ami_queue_full_total` (each time the channel was full) and
//! `azb_ami_queue_overflows_total` (each session dropped for it).
//!
//! After any drop the task reconnects with exponential backoff and jitter, logs in again and
//! puts a [`SourceEvent::Reconnected`] marker into the stream, so later stages know events
//! were lost and can resynchronise.
//!
//! With [`ClientConfig::resync`] on, every login (the first one too: a bridge that starts while
//! calls are up has missed their beginning) is followed by `CoreShowChannels` and `QueueStatus`.
//! Their list items are collected by the reader task itself, never awaited, and handed on as one
//! [`SourceEvent::Resync`] at the point of the stream where the last list completed: the events
//! read before that point happened before the snapshot, those after it after. A list that fails
//! or does not finish in time is logged and simply missing from the items (no `…Complete`), so
//! the tracker knows it is unknown rather than empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use rand::Rng;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::codec::{AmiCodec, Frame};
use super::message::{Action, Kind, Message};
use super::{AmiError, SourceEvent};
use crate::secret::Secret;

/// How to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// `Secret:` in the Login action.
    Plain,
    /// `Action: Challenge`, then `Key: md5(challenge + secret)`: the secret never crosses the wire.
    #[default]
    Md5,
}

/// Connection settings of one manager session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub secret: Secret,
    pub auth: AuthMethod,
    /// `Events:` of the Login action (`on`, or a class list).
    pub events: String,
    pub connect_timeout: Duration,
    pub action_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_message: usize,
    /// Events the consumer reads nothing of but their time (see [`AmiCodec::with_skim`]).
    pub skim: Option<super::message::SkimFilter>,
    /// After every login, list the PBX's channels and queue entries and hand them on as one
    /// [`SourceEvent::Resync`] (the daemon and `watch --emit calls` turn it on).
    pub resync: bool,
    /// How long the resync lists may take before what arrived is handed on as it is.
    pub resync_timeout: Duration,
    /// The most list items kept for one resync (a bound on memory; the rest is dropped, loudly).
    pub resync_max_items: usize,
    /// Events buffered for the consumer; see the module doc for what happens when full.
    pub queue_events: usize,
    /// How long the reader waits for room in a full queue before dropping the session.
    pub queue_wait: Duration,
}

impl ClientConfig {
    /// Sane defaults for `host:port` and a user.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        username: impl Into<String>,
        secret: Secret,
    ) -> Self {
        ClientConfig {
            host: host.into(),
            port,
            username: username.into(),
            secret,
            auth: AuthMethod::Md5,
            events: "on".into(),
            connect_timeout: Duration::from_secs(10),
            action_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_message: super::parse::DEFAULT_MAX_MESSAGE,
            skim: None,
            resync: false,
            resync_timeout: Duration::from_secs(10),
            resync_max_items: 100_000,
            queue_events: 100_000,
            queue_wait: Duration::from_millis(50),
        }
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The answer to an action: its `Response`, and for event-list actions every list item up to
/// the `…Complete` event (which is included last).
#[derive(Debug, Clone)]
pub struct ActionResult {
    pub response: Message,
    pub events: Vec<Message>,
}

impl ActionResult {
    /// Whether the response said `Success` (or `Follows`/`Goodbye`).
    pub fn is_success(&self) -> bool {
        !matches!(self.response.kind(), Kind::Response(r) if r.eq_ignore_ascii_case(b"Error"))
    }
}

enum Command {
    Send {
        action: Action,
        list: bool,
        reply: oneshot::Sender<Result<ActionResult, AmiError>>,
    },
}

/// Handle to a running session. Cloning is cheap; dropping every handle ends the session.
#[derive(Clone)]
pub struct AmiClient {
    commands: mpsc::UnboundedSender<Command>,
    ids: Arc<ActionIds>,
    action_timeout: Duration,
}

/// `ActionID`s unique per process and session: `<prefix>-<counter>`.
struct ActionIds {
    prefix: String,
    next: AtomicU64,
}

impl ActionIds {
    fn new() -> ActionIds {
        let tag: u32 = rand::rng().random();
        ActionIds {
            prefix: format!("azb-{}-{tag:08x}", std::process::id()),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl AmiClient {
    /// Connects and logs in once (so a wrong password is an error here, not a retry loop),
    /// then keeps the session alive in the background. Messages arrive on the receiver.
    pub async fn connect(
        cfg: ClientConfig,
    ) -> Result<(AmiClient, mpsc::Receiver<SourceEvent>), AmiError> {
        let ids = Arc::new(ActionIds::new());
        let session = Session::open(&cfg, &ids).await?;
        let (events_tx, events_rx) = mpsc::channel(cfg.queue_events.max(16));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let client = AmiClient {
            commands: cmd_tx,
            ids: ids.clone(),
            action_timeout: cfg.action_timeout,
        };
        tokio::spawn(run(cfg, ids, session, cmd_rx, events_tx));
        Ok((client, events_rx))
    }

    /// Sends an action and waits for its `Response`.
    pub async fn send(&self, action: Action) -> Result<Message, AmiError> {
        Ok(self.request(action, false).await?.response)
    }

    /// Sends an event-list action (`CoreShowChannels`, `QueueStatus` ...) and collects its items.
    pub async fn send_list(&self, action: Action) -> Result<ActionResult, AmiError> {
        self.request(action, true).await
    }

    async fn request(&self, mut action: Action, list: bool) -> Result<ActionResult, AmiError> {
        if action.action_id().is_none() {
            action = action.header("ActionID", self.ids.next());
        }
        let name = action.name.clone();
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Send {
                action,
                list,
                reply: tx,
            })
            .map_err(|_| AmiError::Closed)?;
        match timeout(self.action_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AmiError::Closed),
            Err(_) => Err(AmiError::ActionTimeout {
                action: name,
                seconds: self.action_timeout.as_secs(),
            }),
        }
    }
}

type Reader = FramedRead<ReadHalf<TcpStream>, AmiCodec>;
type Writer = FramedWrite<WriteHalf<TcpStream>, AmiCodec>;

/// A logged-in connection.
struct Session {
    reader: Reader,
    writer: Writer,
    banner: String,
}

impl Session {
    async fn open(cfg: &ClientConfig, ids: &ActionIds) -> Result<Session, AmiError> {
        let addr = cfg.addr();
        let stream = match timeout(cfg.connect_timeout, TcpStream::connect(&addr)).await {
            Err(_) => {
                return Err(AmiError::ConnectTimeout {
                    addr,
                    seconds: cfg.connect_timeout.as_secs(),
                })
            }
            Ok(Err(source)) => return Err(AmiError::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        stream.set_nodelay(true)?;
        let (r, w) = tokio::io::split(stream);
        let mut session = Session {
            reader: FramedRead::new(r, reader_codec(cfg)),
            writer: FramedWrite::new(w, AmiCodec::new(cfg.max_message)),
            banner: String::new(),
        };
        let deadline = Instant::now() + cfg.connect_timeout;
        session.banner = session.read_banner(&addr, deadline).await?;
        session.login(cfg, ids, deadline).await?;
        Ok(session)
    }

    async fn read_banner(&mut self, addr: &str, deadline: Instant) -> Result<String, AmiError> {
        match tokio::time::timeout_at(deadline, self.reader.next()).await {
            Ok(Some(Ok(Frame::Banner(b)))) => Ok(b),
            Ok(Some(Ok(Frame::Message(m)))) => Err(AmiError::NoBanner {
                addr: addr.into(),
                got: format!("{m:?}"),
            }),
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Err(AmiError::NoBanner {
                addr: addr.into(),
                got: "connection closed".into(),
            }),
            Err(_) => Err(AmiError::NoBanner {
                addr: addr.into(),
                got: "nothing before the timeout".into(),
            }),
        }
    }

    async fn login(
        &mut self,
        cfg: &ClientConfig,
        ids: &ActionIds,
        deadline: Instant,
    ) -> Result<(), AmiError> {
        let fail = |message: String| AmiError::LoginFailed {
            addr: cfg.addr(),
            username: cfg.username.clone(),
            message,
        };
        let mut login = Action::new("Login").header("Username", &cfg.username);
        match cfg.auth {
            AuthMethod::Plain => login = login.header("Secret", cfg.secret.expose()),
            AuthMethod::Md5 => {
                let challenge = Action::new("Challenge")
                    .header("ActionID", ids.next())
                    .header("AuthType", "MD5");
                let answer = self.call(&challenge, deadline).await?;
                let Some(ch) = answer.get_str("Challenge").filter(|_| is_success(&answer)) else {
                    return Err(fail(format!(
                        "Challenge refused: {}",
                        message_text(&answer)
                    )));
                };
                let key = md5_key(&ch, cfg.secret.expose());
                login = login.header("AuthType", "MD5").header("Key", key);
            }
        }
        let login = login
            .header("Events", &cfg.events)
            .header("ActionID", ids.next());
        let answer = self.call(&login, deadline).await?;
        if is_success(&answer) {
            Ok(())
        } else {
            Err(fail(message_text(&answer)))
        }
    }

    /// Sends one action and waits for the response with its ActionID (login phase only).
    async fn call(&mut self, action: &Action, deadline: Instant) -> Result<Message, AmiError> {
        let id = action.action_id().unwrap_or_default().to_string();
        let started = Instant::now();
        self.writer.send(action).await?;
        loop {
            match tokio::time::timeout_at(deadline, self.reader.next()).await {
                Err(_) => {
                    // The time really waited (not the time left, which is 0 by now).
                    return Err(AmiError::ActionTimeout {
                        action: action.name.clone(),
                        seconds: started.elapsed().as_secs_f64().round() as u64,
                    });
                }
                Ok(None) => return Err(AmiError::Closed),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(Frame::Message(m)))) if m.action_id() == Some(id.as_bytes()) => {
                    return Ok(m)
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// `md5(challenge + secret)` in lower-case hex, as the MD5 login wants it.
pub fn md5_key(challenge: &str, secret: &str) -> String {
    let digest = Md5::new_with_prefix(challenge.as_bytes())
        .chain_update(secret.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_success(m: &Message) -> bool {
    matches!(m.kind(), Kind::Response(r) if r.eq_ignore_ascii_case(b"Success"))
}

fn message_text(m: &Message) -> String {
    m.get_str("Message")
        .map(|s| s.into_owned())
        .unwrap_or_else(|| "no message".into())
}

/// The background task: run sessions one after the other until every handle is dropped.
async fn run(
    cfg: ClientConfig,
    ids: Arc<ActionIds>,
    first: Session,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<SourceEvent>,
) {
    let mut session = Some(first);
    let mut reconnect = false;
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    loop {
        let current = match session.take() {
            Some(s) => s,
            None => match Session::open(&cfg, &ids).await {
                Ok(s) => s,
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "AMI reconnect failed");
                    if wait_or_closed(wait, &mut commands).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let banner = current.banner.clone();
        tracing::info!(addr = %cfg.addr(), %banner, reconnect, "AMI session up");
        let marker = if reconnect {
            SourceEvent::Reconnected { banner }
        } else {
            SourceEvent::Connected { banner }
        };
        if events.send(marker).await.is_err() {
            return;
        }
        let started = Instant::now();
        match drive(&cfg, &ids, current, &mut commands, &events).await {
            End::Shutdown => return,
            End::Dropped(reason) => {
                tracing::warn!(addr = %cfg.addr(), %reason, "AMI session dropped");
                if events
                    .send(SourceEvent::Disconnected { reason })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if started.elapsed() > cfg.backoff_max {
            backoff.reset();
        }
        reconnect = true;
        if wait_or_closed(backoff.next_delay(), &mut commands).await {
            return;
        }
    }
}

/// Sleeps, failing any action sent meanwhile; true when every handle is gone.
async fn wait_or_closed(wait: Duration, commands: &mut mpsc::UnboundedReceiver<Command>) -> bool {
    let until = sleep(wait);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => return false,
            cmd = commands.recv() => match cmd {
                None => return true,
                Some(Command::Send { reply, .. }) => { let _ = reply.send(Err(AmiError::Closed)); }
            },
        }
    }
}

enum End {
    Shutdown,
    Dropped(String),
}

struct Pending {
    list: bool,
    response: Option<Message>,
    events: Vec<Message>,
    reply: oneshot::Sender<Result<ActionResult, AmiError>>,
}

/// Runs one logged-in session until it drops or the handles are gone.
async fn drive(
    cfg: &ClientConfig,
    ids: &ActionIds,
    session: Session,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    events: &mpsc::Sender<SourceEvent>,
) -> End {
    let Session {
        mut reader, writer, ..
    } = session;
    let (write_tx, write_rx) = mpsc::unbounded_channel::<Action>();
    let writer_task = tokio::spawn(write_loop(writer, write_rx));
    let mut resync = None;
    if cfg.resync {
        let (lists, actions) = ResyncLists::start(ids, cfg.resync_timeout, cfg.resync_max_items);
        for a in actions {
            if write_tx.send(a).is_err() {
                writer_task.abort();
                return End::Dropped("writer stopped".into());
            }
        }
        resync = Some(lists);
    }
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut ping = tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    let mut ping_sent: Option<(String, Instant)> = None;
    let end = loop {
        tokio::select! {
            frame = reader.next() => match frame {
                Some(Ok(Frame::Message(m))) => {
                    if resync.as_mut().is_some_and(|l| l.take(&m)) {
                        if resync.as_ref().is_some_and(ResyncLists::is_done) {
                            if let Some(ev) = resync.take().map(|l| l.finish(false)) {
                                if let Err(end) = hand_on(cfg, events, ev).await {
                                    break end;
                                }
                            }
                        }
                    } else if ping_sent.as_ref().is_some_and(|(id, _)| m.action_id() == Some(id.as_bytes())) {
                        ping_sent = None;
                    } else if !route_reply(&mut pending, &m) {
                        match hand_on(cfg, events, SourceEvent::Message(m)).await {
                            Ok(()) => {}
                            Err(end) => break end,
                        }
                    }
                }
                Some(Ok(Frame::Banner(_))) => {}
                Some(Err(e)) => break End::Dropped(e.to_string()),
                None => break End::Dropped("connection closed by the server".into()),
            },
            cmd = commands.recv() => match cmd {
                None => break End::Shutdown,
                Some(Command::Send { action, list, reply }) => {
                    let id = action.action_id().unwrap_or_default().to_string();
                    if write_tx.send(action).is_err() {
                        let _ = reply.send(Err(AmiError::Closed));
                        break End::Dropped("writer stopped".into());
                    }
                    pending.insert(id, Pending { list, response: None, events: Vec::new(), reply });
                }
            },
            _ = ping.tick() => {
                if let Some((_, at)) = &ping_sent {
                    if at.elapsed() >= cfg.ping_timeout {
                        break End::Dropped(AmiError::KeepaliveTimeout { addr: cfg.addr(), seconds: cfg.ping_timeout.as_secs() }.to_string());
                    }
                } else {
                    let id = ids.next();
                    if write_tx.send(Action::new("Ping").header("ActionID", &id)).is_err() {
                        break End::Dropped("writer stopped".into());
                    }
                    ping_sent = Some((id, Instant::now()));
                }
                pending.retain(|_, p| !p.reply.is_closed());
            },
            _ = resync_deadline(&resync) => {
                if let Some(ev) = resync.take().map(|l| l.finish(true)) {
                    if let Err(end) = hand_on(cfg, events, ev).await {
                        break end;
                    }
                }
            },
            _ = keepalive_deadline(&ping_sent, cfg.ping_timeout) => {
                break End::Dropped(AmiError::KeepaliveTimeout { addr: cfg.addr(), seconds: cfg.ping_timeout.as_secs() }.to_string());
            },
        }
    };
    writer_task.abort();
    for (_, p) in pending.drain() {
        let _ = p.reply.send(Err(AmiError::Closed));
    }
    end
}

/// The state lists asked for after a login, collected as they arrive on the reader task.
struct ResyncLists {
    /// (action, ActionID, finished) per list, in the order they were sent.
    lists: Vec<(&'static str, String, bool)>,
    items: Vec<Message>,
    deadline: Instant,
    max_items: usize,
    dropped: usize,
}

/// The actions whose answers make a resync: every channel, and every queue's waiting callers.
const RESYNC_ACTIONS: [&str; 2] = ["CoreShowChannels", "QueueStatus"];

impl ResyncLists {
    fn start(ids: &ActionIds, limit: Duration, max_items: usize) -> (ResyncLists, Vec<Action>) {
        let lists: Vec<_> = RESYNC_ACTIONS
            .iter()
            .map(|name| (*name, ids.next(), false))
            .collect();
        let actions = lists
            .iter()
            .map(|(name, id, _)| Action::new(*name).header("ActionID", id))
            .collect();
        let resync = ResyncLists {
            lists,
            items: Vec::new(),
            deadline: Instant::now() + limit,
            max_items,
            dropped: 0,
        };
        (resync, actions)
    }

    /// Keeps `m` if it answers one of the lists; false for any other message.
    fn take(&mut self, m: &Message) -> bool {
        let Some(id) = m.action_id() else {
            return false;
        };
        let Some(list) = self
            .lists
            .iter_mut()
            .find(|(_, want, done)| !done && want.as_bytes() == id)
        else {
            return false;
        };
        match m.kind() {
            Kind::Response(r) => {
                let starts_list = m
                    .get("EventList")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"start"));
                if r.eq_ignore_ascii_case(b"Error") || !starts_list {
                    // Typically `Permission denied`: the manager user lacks the class the action
                    // needs (see config/manager.conf.example). The list counts as unknown.
                    tracing::warn!(action = list.0, message = %message_text(m), "AMI resync list refused; live calls are reconciled without it");
                    list.2 = true;
                }
            }
            _ => {
                let complete = m
                    .get("EventList")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"Complete"))
                    || m.event().is_some_and(|e| e.ends_with(b"Complete"));
                if complete {
                    list.2 = true;
                }
                if self.items.len() < self.max_items || complete {
                    self.items.push(m.clone());
                } else {
                    self.dropped += 1;
                }
            }
        }
        true
    }

    fn is_done(&self) -> bool {
        self.lists.iter().all(|(_, _, done)| *done)
    }

    /// The resync event, with whatever arrived; what is missing is said in the log.
    fn finish(self, timed_out: bool) -> SourceEvent {
        let missing: Vec<&str> = self
            .lists
            .iter()
            .filter(|(_, _, done)| !done)
            .map(|(name, _, _)| *name)
            .collect();
        if timed_out && !missing.is_empty() {
            tracing::warn!(lists = ?missing, items = self.items.len(), "AMI resync lists did not finish in time; handing on what arrived (the rest counts as unknown)");
        }
        if self.dropped > 0 {
            tracing::warn!(
                dropped = self.dropped,
                kept = self.items.len(),
                "AMI resync list longer than resync_max_items; items past the limit dropped"
            );
        }
        tracing::info!(items = self.items.len(), "AMI resync lists received");
        SourceEvent::Resync { items: self.items }
    }
}

/// Resolves when the resync lists have waited past their limit; never while none is out.
async fn resync_deadline(lists: &Option<ResyncLists>) {
    match lists {
        Some(l) => tokio::time::sleep_until(l.deadline).await,
        None => std::future::pending().await,
    }
}

/// Puts a live-stream message into the bounded queue, waiting at most `queue_wait` for room.
/// `Err` ends the session: the consumer is gone, or it is so far behind that the session is
/// dropped and re-established (see the module doc).
async fn hand_on(
    cfg: &ClientConfig,
    events: &mpsc::Sender<SourceEvent>,
    ev: SourceEvent,
) -> Result<(), End> {
    use mpsc::error::TrySendError;
    match events.try_send(ev) {
        Ok(()) => Ok(()),
        Err(TrySendError::Closed(_)) => Err(End::Shutdown),
        Err(TrySendError::Full(ev)) => {
            metrics::counter!("azb_ami_queue_full_total").increment(1);
            match timeout(cfg.queue_wait, events.send(ev)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Shutdown),
                Err(_) => {
                    metrics::counter!("azb_ami_queue_overflows_total").increment(1);
                    Err(End::Dropped(format!(
                        "the event queue ({} events) stayed full for {} ms: the consumer is behind; dropping the session to resynchronise",
                        events.max_capacity(),
                        cfg.queue_wait.as_millis()
                    )))
                }
            }
        }
    }
}

fn reader_codec(cfg: &ClientConfig) -> AmiCodec {
    let codec = AmiCodec::new(cfg.max_message);
    match cfg.skim {
        Some(skim) => codec.with_skim(skim),
        None => codec,
    }
}

/// Resolves when an outstanding Ping has waited past its timeout; never while none is out.
async fn keepalive_deadline(ping_sent: &Option<(String, Instant)>, limit: Duration) {
    match ping_sent {
        Some((_, at)) => tokio::time::sleep_until(*at + limit).await,
        None => std::future::pending().await,
    }
}

async fn write_loop(mut writer: Writer, mut actions: mpsc::UnboundedReceiver<Action>) {
    while let Some(action) = actions.recv().await {
        if let Err(e) = writer.send(&action).await {
            tracing::warn!(error = %e, action = %action.name, "AMI write failed");
            return;
        }
    }
}

/// Hands a message to the action waiting for it. Returns false for messages that belong to
/// the live stream (no ActionID of ours).
fn route_reply(pending: &mut HashMap<String, Pending>, m: &Message) -> bool {
    let Some(id) = m.action_id().map(String::from_utf8_lossy) else {
        return false;
    };
    let Some(p) = pending.get_mut(id.as_ref()) else {
        return false;
    };
    let done = match m.kind() {
        Kind::Response(r) => {
            let starts_list = m
                .get("EventList")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"start"));
            p.response = Some(m.clone());
            !(p.list && starts_list && !r.eq_ignore_ascii_case(b"Error"))
        }
        _ => {
            p.events.push(m.clone());
            let complete = m
                .get("EventList")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"Complete"))
                || m.event().is_some_and(|e| e.ends_with(b"Complete"));
            complete && p.response.is_some()
        }
    };
    if done {
        if let Some(p) = pending.remove(id.as_ref()) {
            if let Some(response) = p.response {
                let _ = p.reply.send(Ok(ActionResult {
                    response,
                    events: p.events,
                }));
            }
        }
    }
    true
}

/// Exponential backoff with ±25 % jitter, so many bridges do not reconnect in lockstep.
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter: f64 = rand::rng().random_range(0.75..1.25);
        base.mul_f64(jitter).min(self.max)
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_is_lowercase_hex_of_challenge_then_secret() {
        // md5("12345" + "mysecret"), computed independently with coreutils md5sum.
        assert_eq!(
            md5_key("12345", "mysecret"),
            "f9fead0d6328e1be5f206c49dab985a1"
        );
    }

    fn msg(lines: &[(&str, &str)]) -> Message {
        Message::from_pairs(lines)
    }

    /// The shape Asterisk 22 answers in (fixtures/ami-real resync-gap-3s): a `Response` with
    /// `EventList: start`, items with the ActionID, a `…Complete` event with `ListItems`.
    #[test]
    fn resync_collects_both_lists_and_ignores_the_stream() {
        let ids = ActionIds::new();
        let (mut lists, actions) = ResyncLists::start(&ids, Duration::from_secs(5), 10);
        assert_eq!(actions.len(), 2);
        let ch = actions[0].action_id().unwrap().to_string();
        let qs = actions[1].action_id().unwrap().to_string();
        assert!(!lists.take(&msg(&[("Event", "Newchannel"), ("Channel", "x")])));
        assert!(lists.take(&msg(&[
            ("Response", "Success"),
            ("ActionID", &ch),
            ("EventList", "start")
        ])));
        assert!(lists.take(&msg(&[
            ("Event", "CoreShowChannel"),
            ("ActionID", &ch),
            ("Channel", "a")
        ])));
        assert!(lists.take(&msg(&[
            ("Event", "CoreShowChannelsComplete"),
            ("ActionID", &ch),
            ("EventList", "Complete"),
            ("ListItems", "1")
        ])));
        assert!(!lists.is_done());
        assert!(lists.take(&msg(&[
            ("Response", "Success"),
            ("ActionID", &qs),
            ("EventList", "start")
        ])));
        assert!(lists.take(&msg(&[
            ("Event", "QueueEntry"),
            ("Queue", "sales"),
            ("ActionID", &qs)
        ])));
        assert!(lists.take(&msg(&[
            ("Event", "QueueStatusComplete"),
            ("ActionID", &qs),
            ("EventList", "Complete"),
            ("ListItems", "1")
        ])));
        assert!(lists.is_done());
        let SourceEvent::Resync { items } = lists.finish(false) else {
            panic!("not a resync")
        };
        let names: Vec<_> = items.iter().filter_map(|m| m.get_str("Event")).collect();
        assert_eq!(
            names,
            [
                "CoreShowChannel",
                "CoreShowChannelsComplete",
                "QueueEntry",
                "QueueStatusComplete"
            ]
        );
    }

    #[test]
    fn a_refused_list_is_done_and_missing_from_the_items() {
        let ids = ActionIds::new();
        let (mut lists, actions) = ResyncLists::start(&ids, Duration::from_secs(5), 10);
        let ch = actions[0].action_id().unwrap().to_string();
        let qs = actions[1].action_id().unwrap().to_string();
        assert!(lists.take(&msg(&[
            ("Response", "Error"),
            ("ActionID", &ch),
            ("Message", "Permission denied")
        ])));
        assert!(lists.take(&msg(&[
            ("Response", "Success"),
            ("ActionID", &qs),
            ("EventList", "start")
        ])));
        assert!(lists.take(&msg(&[
            ("Event", "QueueStatusComplete"),
            ("ActionID", &qs),
            ("EventList", "Complete")
        ])));
        assert!(lists.is_done());
        let SourceEvent::Resync { items } = lists.finish(false) else {
            panic!("not a resync")
        };
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn resync_items_past_the_limit_are_dropped_but_complete_is_kept() {
        let ids = ActionIds::new();
        let (mut lists, actions) = ResyncLists::start(&ids, Duration::from_secs(5), 2);
        let ch = actions[0].action_id().unwrap().to_string();
        for _ in 0..5 {
            lists.take(&msg(&[("Event", "CoreShowChannel"), ("ActionID", &ch)]));
        }
        lists.take(&msg(&[
            ("Event", "CoreShowChannelsComplete"),
            ("ActionID", &ch),
        ]));
        assert_eq!(lists.dropped, 3);
        let SourceEvent::Resync { items } = lists.finish(true) else {
            panic!("not a resync")
        };
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(125));
        assert!(delays[7] <= Duration::from_secs(1));
        assert!(delays[7] >= Duration::from_millis(750));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
