//! Real TCP AMI servers for tests, deliberately independent of the crate's parser (actions
//! are read line by line, capture messages split on blank lines).
//!
//! - [`AmiServer`]: sends a banner, answers `Challenge` and `Login` (plain or MD5) like
//!   Asterisk, answers `Ping`, `CoreShowChannels` and `QueueStatus`, and streams the events of
//!   a recorded capture at once. It can cut the first connection in the middle of a frame and
//!   resume from the start of that frame on the next one, as a PBX that keeps running would.
//! - [`LiveServer`](super::live_pbx::LiveServer): a PBX replaying a capture at its recorded
//!   pace (optionally faster, with times scaled) with every `Timestamp:` rewritten to now
//!   (plus an optional PBX clock skew). It drops the session at chosen moments and *loses* the
//!   events of the gap, holds re-logins until the gap is over, and answers the lists from the
//!   channels and queue callers alive at that point of the capture
//!   ([`PbxModel`](super::pbx_model::PbxModel)). A bridge killed -9 just loses its socket: the
//!   PBX plays on and the restarted bridge logs in and gets the lists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::pbx_model::{body_msgs, PbxModel};

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

pub(crate) async fn read_action(
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

pub(crate) fn response(id: &str, lines: &[(&str, &str)]) -> Vec<u8> {
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
            // Keep reading what the client sends (its resync actions) until it closes: a socket
            // closed with unread input is reset, and a reset throws away what the client has
            // not read yet, which no PBX dropping a session would do to the bytes it sent.
            while read_action(&mut reader).await.is_some() {}
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
