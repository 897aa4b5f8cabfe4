//! A live PBX for tests: a capture at its recorded pace, sessions dropped, lists answered (see
//! [`LiveServer`]); independent of the crate's parser.

use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::ami_server::{read_action, response};
use super::pbx_model::{body_msgs, Msg, PbxModel};

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
