//! FastAGI server: the dialplan calls the bridge with `AGI(agi://HOST:4573/SCRIPT)`.
//!
//! Scripts:
//! - `zoho-lookup`: finds the caller (`agi_callerid`, or the first AGI argument) among Zoho
//!   Contacts and Leads and sets `ZOHO_LOOKUP` (found / none / error), `ZOHO_CONTACT_NAME`,
//!   `ZOHO_RECORD_ID`, `ZOHO_MODULE` and `ZOHO_OWNER_EMAIL`, so the dialplan can set
//!   `CALLERID(name)` or route to the owner.
//! - `tag?key=value&...`: attaches tags to the live call of the channel (`agi_uniqueid`);
//!   triggers and templates read them (`{{ tags.campaign }}`, condition field `campaign`).
//!
//! The dialplan waits while a session is open, so every session has a deadline, the Zoho
//! lookup its own shorter one, and the server answers `HANGUP` at any time by closing.
//! Garbage or oversize input is logged and the connection closed; other sessions go on.
//!
//! A caller waits in the dialplan while its lookup runs, so nobody else may make it wait:
//! peers outside `agi.allow` are closed at once, one address holds at most
//! `agi.max_per_peer` connections, the header must come within 2 s, and a connection takes
//! one of the session slots only once its header is in (slow or silent clients only hold a
//! cheap header-read task). A failed `accept` (out of file descriptors) backs off up to 1 s
//! and logs once per streak.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::zoho::api::ZohoApi;

/// Longest line accepted from Asterisk (header or reply).
pub const MAX_LINE: usize = 8 * 1024;
/// Most header lines accepted.
const MAX_HEADER_LINES: usize = 128;
/// Sessions running a script at once; more wait for a slot. A connection takes a slot only
/// once its header is in, so clients that connect and send nothing cannot hold the slots
/// real dialplan lookups need.
const MAX_SESSIONS: usize = 64;
/// Connections still sending their header, at most; more are closed at once.
const MAX_PENDING: usize = 1024;

/// Deadlines of one session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header: Duration,
    pub command: Duration,
    pub lookup: Duration,
    pub session: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Asterisk sends the whole header at once: a client still sending after 2 s is
            // not a dialplan.
            header: Duration::from_secs(2),
            command: Duration::from_secs(5),
            lookup: Duration::from_millis(1500),
            session: Duration::from_secs(30),
        }
    }
}

/// Who may connect, and how much of the server one peer may take.
#[derive(Debug, Clone)]
pub struct Access {
    /// Peer networks allowed; others are closed at once (logged once a minute at most).
    pub allow: Vec<ipnet::IpNet>,
    /// Connections one peer address may hold at once (header phase and session).
    pub max_per_peer: usize,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            allow: vec![
                ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).unwrap_or_default(),
                ),
                ipnet::IpNet::V6(
                    ipnet::Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128).unwrap_or_default(),
                ),
            ],
            max_per_peer: 16,
        }
    }
}

impl Access {
    /// From `[agi]`; a bad network names the key.
    pub fn from_config(cfg: &crate::config::AgiConfig) -> Result<Access, String> {
        let mut allow = Vec::new();
        for (i, a) in cfg.allow.iter().enumerate() {
            let net = a
                .parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("key agi.allow[{i}]: '{a}' is not an address or network (10.0.0.0/8, ::1/128)"))?;
            allow.push(net);
        }
        Ok(Access {
            allow,
            max_per_peer: cfg.max_per_peer.max(1),
        })
    }

    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Connections per peer address; a [`PeerSlot`] gives its place back when dropped.
#[derive(Default)]
struct PeerCounts(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: std::net::IpAddr,
}

impl PeerCounts {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<PeerSlot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.counts.0.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

/// A tag for the live call of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub uniqueid: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgiError {
    #[error("AGI I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("AGI: the channel hung up")]
    HungUp,
    #[error("AGI: {0}")]
    Protocol(String),
    #[error("AGI: no answer within {0:?}")]
    Timeout(Duration),
}

/// A reply line: `200 result=1 (data) key=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub result: Option<i64>,
    /// What is between the first `(` after the result and the last `)`.
    pub data: Option<String>,
    pub line: String,
}

/// Parses one reply line (without its newline). Pure, for tests.
pub fn parse_reply(line: &str) -> Result<Reply, AgiError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || AgiError::Protocol(format!("not a reply: {:?}", truncate(line)));
    let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let rest = &line[3..];
    let (result, data) = match rest.trim_start().strip_prefix("result=") {
        Some(r) => {
            let end = r
                .find(|c: char| c != '-' && !c.is_ascii_digit())
                .unwrap_or(r.len());
            let result = r[..end].parse().ok();
            let after = &r[end..];
            let data = match (after.find('('), after.rfind(')')) {
                (Some(a), Some(b)) if b > a => Some(after[a + 1..b].to_string()),
                _ => None,
            };
            (result, data)
        }
        None => (None, None),
    };
    Ok(Reply {
        code,
        result,
        data,
        line: line.to_string(),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// `"value"` with `"` and `\` escaped, newlines dropped (one command is one line).
pub fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One AGI session: the request header, then commands and their replies.
pub struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pub env: BTreeMap<String, String>,
    limits: Limits,
    hung_up: bool,
}

/// Reads a line of at most `MAX_LINE` bytes; `None` at EOF.
async fn read_line(r: &mut BufReader<OwnedReadHalf>) -> Result<Option<String>, AgiError> {
    let mut buf = Vec::new();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok((!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned()));
        }
        match memchr::memchr(b'\n', chunk) {
            Some(i) => {
                buf.extend_from_slice(&chunk[..i]);
                r.consume(i + 1);
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
            }
            None => {
                let n = chunk.len();
                buf.extend_from_slice(chunk);
                r.consume(n);
            }
        }
        if buf.len() > MAX_LINE {
            return Err(AgiError::Protocol(format!(
                "a line longer than {MAX_LINE} bytes"
            )));
        }
    }
}

impl Session {
    /// Reads the `agi_*` header up to its empty line.
    pub async fn open(sock: TcpStream, limits: Limits) -> Result<Session, AgiError> {
        let (r, w) = sock.into_split();
        let mut reader = BufReader::new(r);
        let mut env = BTreeMap::new();
        let header = async {
            loop {
                let Some(line) = read_line(&mut reader).await? else {
                    return Err(AgiError::Protocol(
                        "connection closed inside the header".into(),
                    ));
                };
                if line.is_empty() {
                    return Ok(());
                }
                if env.len() >= MAX_HEADER_LINES {
                    return Err(AgiError::Protocol("header too long".into()));
                }
                let Some((k, v)) = line.split_once(':') else {
                    return Err(AgiError::Protocol(format!(
                        "not a header line: {:?}",
                        truncate(&line)
                    )));
                };
                let k = k.trim();
                if !k.starts_with("agi_") {
                    return Err(AgiError::Protocol(format!(
                        "not an AGI header: {:?}",
                        truncate(k)
                    )));
                }
                env.insert(k.to_string(), v.trim().to_string());
            }
        };
        tokio::time::timeout(limits.header, header)
            .await
            .map_err(|_| AgiError::Timeout(limits.header))??;
        Ok(Session {
            reader,
            writer: w,
            env,
            limits,
            hung_up: false,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && *v != "unknown")
    }

    /// Sends one command and waits for its final reply (past `100 Trying`, over the lines of a
    /// `520-` usage text). `HANGUP` at any point ends the session.
    pub async fn command(&mut self, cmd: &str) -> Result<Reply, AgiError> {
        if self.hung_up {
            return Err(AgiError::HungUp);
        }
        self.writer.write_all(cmd.as_bytes()).await?;
        self.writer.write_all(b"\n").await?;
        let limit = self.limits.command;
        let reply = async {
            loop {
                let Some(line) = read_line(&mut self.reader).await? else {
                    return Err(AgiError::HungUp);
                };
                if line.trim() == "HANGUP" {
                    self.hung_up = true;
                    return Err(AgiError::HungUp);
                }
                if line.starts_with("520-") {
                    // Usage text follows, up to "520 End of proper usage."
                    loop {
                        match read_line(&mut self.reader).await? {
                            Some(l) if l.starts_with("520 ") => return parse_reply(&l),
                            Some(_) => continue,
                            None => return Err(AgiError::HungUp),
                        }
                    }
                }
                let r = parse_reply(&line)?;
                if r.code == 100 {
                    continue;
                }
                return Ok(r);
            }
        };
        tokio::time::timeout(limit, reply)
            .await
            .map_err(|_| AgiError::Timeout(limit))?
    }

    /// `SET VARIABLE name "value"`; a refusal (5xx) is logged, not fatal.
    pub async fn set(&mut self, name: &str, value: &str) -> Result<(), AgiError> {
        let r = self
            .command(&format!("SET VARIABLE {name} {}", quote(value)))
            .await?;
        if r.code != 200 {
            tracing::warn!(reply = %r.line, variable = name, "Asterisk refused SET VARIABLE");
        }
        Ok(())
    }

    pub async fn verbose(&mut self, message: &str) -> Result<(), AgiError> {
        self.command(&format!("VERBOSE {} 3", quote(message)))
            .await
            .map(|_| ())
    }

    async fn close(mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// What the scripts need.
pub struct Handler {
    /// For `zoho-lookup`; absent: lookups answer `ZOHO_LOOKUP=error`.
    pub zoho: Option<Arc<ZohoApi>>,
    /// Where tags go: every PBX's call tracker (the one that knows the channel keeps it).
    pub tags: broadcast::Sender<Tag>,
    pub limits: Limits,
}

impl Handler {
    async fn run(&self, s: &mut Session) -> Result<(), AgiError> {
        let script = s
            .get("agi_network_script")
            .or_else(|| {
                s.get("agi_request")
                    .and_then(|r| r.split_once("://")?.1.split_once('/').map(|x| x.1))
            })
            .unwrap_or("")
            .to_string();
        let (path, query) = script.split_once('?').unwrap_or((&script, ""));
        match path.trim_matches('/') {
            "zoho-lookup" => self.lookup(s).await,
            "tag" => self.tag(s, query).await,
            other => {
                tracing::warn!(script = other, "unknown FastAGI script");
                s.verbose(&format!(
                    "ami-zoho-bridge: unknown script '{other}' (zoho-lookup, tag)"
                ))
                .await
            }
        }
    }

    async fn lookup(&self, s: &mut Session) -> Result<(), AgiError> {
        let number = s
            .get("agi_arg_1")
            .or_else(|| s.get("agi_callerid"))
            .map(str::to_string);
        let Some(number) = number else {
            return s.set("ZOHO_LOOKUP", "none").await;
        };
        let Some(zoho) = &self.zoho else {
            return s.set("ZOHO_LOOKUP", "error").await;
        };
        // A slow CRM must not hold the call: past the deadline the dialplan goes on.
        let found = tokio::time::timeout(self.limits.lookup, zoho.find_by_phone(&number)).await;
        match found {
            Ok(Ok(Some(m))) => {
                s.set("ZOHO_LOOKUP", "found").await?;
                s.set("ZOHO_RECORD_ID", &m.id).await?;
                s.set("ZOHO_MODULE", m.module.as_str()).await?;
                s.set("ZOHO_CONTACT_NAME", m.name.as_deref().unwrap_or(""))
                    .await?;
                s.set("ZOHO_OWNER_EMAIL", m.owner_email.as_deref().unwrap_or(""))
                    .await
            }
            Ok(Ok(None)) => s.set("ZOHO_LOOKUP", "none").await,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "zoho-lookup");
                s.set("ZOHO_LOOKUP", "error").await
            }
            Err(_) => {
                tracing::warn!(number = %number, "zoho-lookup took too long; the call goes on without it");
                s.set("ZOHO_LOOKUP", "timeout").await
            }
        }
    }

    async fn tag(&self, s: &mut Session, query: &str) -> Result<(), AgiError> {
        let Some(uniqueid) = s.get("agi_uniqueid").map(str::to_string) else {
            return s.verbose("ami-zoho-bridge: tag needs agi_uniqueid").await;
        };
        let mut n = 0;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if k.is_empty() {
                continue;
            }
            let _ = self.tags.send(Tag {
                uniqueid: uniqueid.clone(),
                key: k.into_owned(),
                value: v.into_owned(),
            });
            n += 1;
        }
        s.set("ZOHO_TAGGED", &n.to_string()).await
    }
}

/// Serves sessions until `stop` with the default [`Access`] (loopback only).
pub async fn serve(listener: TcpListener, handler: Arc<Handler>, stop: CancellationToken) {
    serve_with(listener, handler, Access::default(), stop).await
}

/// Serves sessions until `stop`; each session is bounded in time and isolated from others.
/// The accept loop never waits for a session slot: a connection from outside `access.allow`,
/// past its peer's share, or past [`MAX_PENDING`] header reads is closed at once and counted.
pub async fn serve_with(
    listener: TcpListener,
    handler: Arc<Handler>,
    access: Access,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_SESSIONS));
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let peers = Arc::new(PeerCounts::default());
    let refused = |why: &'static str| {
        metrics::counter!("azb_agi_refused_total", "reason" => why).increment(1);
    };
    let mut backoff = crate::websec::AcceptBackoff::new("agi");
    let mut last_denied_log: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (sock, peer) = match accepted {
            Ok(a) => {
                backoff.ok();
                a
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        if !access.allows(peer.ip()) {
            refused("not_allowed");
            if last_denied_log.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(%peer, "FastAGI connection from outside agi.allow: closed (logged once a minute)");
                last_denied_log = Some(std::time::Instant::now());
            }
            continue;
        }
        let Some(peer_slot) = peers.take(peer.ip().to_canonical(), access.max_per_peer) else {
            refused("per_peer");
            continue;
        };
        let Ok(header_slot) = pending.clone().try_acquire_owned() else {
            refused("pending");
            continue;
        };
        let handler = handler.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let _peer_slot = peer_slot;
            let limits = handler.limits;
            let work = async {
                let mut s = Session::open(sock, limits).await?;
                drop(header_slot);
                let Ok(_slot) = slots.acquire_owned().await else {
                    return Ok(());
                };
                let uniqueid = s.get("agi_uniqueid").unwrap_or("").to_string();
                let span = tracing::info_span!("agi", %peer, uniqueid);
                let result = tracing::Instrument::instrument(handler.run(&mut s), span).await;
                s.close().await;
                result
            };
            match tokio::time::timeout(limits.session, work).await {
                Ok(Ok(())) | Ok(Err(AgiError::HungUp)) => {}
                Ok(Err(e)) => tracing::warn!(%peer, error = %e, "FastAGI session closed"),
                Err(_) => tracing::warn!(%peer, "FastAGI session over its deadline: closed"),
            }
        });
    }
}

#[cfg(test)]
mod access_tests {
    use super::*;

    #[test]
    fn allow_list() {
        let cfg = crate::config::AgiConfig {
            allow: vec!["10.1.0.0/16".into(), "192.168.1.5".into(), "::1/128".into()],
            ..Default::default()
        };
        let a = Access::from_config(&cfg).expect("valid");
        for (ip, ok) in [
            ("10.1.200.3", true),
            ("10.2.0.1", false),
            ("192.168.1.5", true),
            ("192.168.1.6", false),
            ("::1", true),
            ("::ffff:10.1.0.1", true),
            ("127.0.0.1", false),
        ] {
            assert_eq!(a.allows(ip.parse().unwrap()), ok, "{ip}");
        }
        let bad = crate::config::AgiConfig {
            allow: vec!["10.0.0.0/8".into(), "nope".into()],
            ..Default::default()
        };
        let e = Access::from_config(&bad).unwrap_err();
        assert!(e.contains("agi.allow[1]"), "{e}");
        assert!(Access::default().allows("127.0.0.9".parse().unwrap()));
        assert!(!Access::default().allows("10.0.0.1".parse().unwrap()));
    }
}
