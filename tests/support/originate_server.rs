//! A TCP AMI server that answers `Originate` by playing the recorded click-to-dial capture of
//! the number dialled (`fixtures/ami-real/ctd-*`), as the real Asterisk 22 did for the
//! recorded session: the `Response` (queued), then every event of the call, with the
//! recorded click id replaced by the one received (it is both the ActionID and the value of
//! `CTD_ID`). It can stop after a given message until a `Hangup` arrives, to test call
//! control mid-call. It keeps every action received, headers in wire order.
//!
//! Independent of the crate's parser: it reads actions line by line.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One recorded click: the bytes to play and the Originate its session sent.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub name: String,
    /// The Originate's headers from `<name>.sent`, in order.
    pub originate: Vec<(String, String)>,
    /// The ActionID / CTD_ID the recorded session used.
    pub click_id: String,
    /// From the Originate's `Response` to just before the Logoff's `Goodbye`.
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn load(dir: &Path, name: &str) -> Recorded {
        let sent = std::fs::read_to_string(dir.join(format!("{name}.sent"))).expect("sent");
        let originate: Vec<(String, String)> = sent
            .split("\r\n\r\n")
            .find(|block| block.starts_with("Action: Originate"))
            .expect("an Originate in the .sent file")
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let click_id = originate
            .iter()
            .find(|(k, _)| k == "ActionID")
            .map(|(_, v)| v.clone())
            .expect("ActionID");
        let ami = std::fs::read(dir.join(format!("{name}.ami"))).expect("ami");
        let start_marker = format!("Response: Success\r\nActionID: {click_id}\r\n");
        let start = find(&ami, start_marker.as_bytes()).expect("the Originate's Response");
        let end = find(&ami, b"Response: Goodbye").expect("the Logoff's Goodbye");
        Recorded {
            name: name.to_string(),
            originate,
            click_id,
            body: ami[start..end].to_vec(),
        }
    }

    /// The recorded `Exten` (the number as dialled).
    pub fn exten(&self) -> &str {
        self.originate
            .iter()
            .find(|(k, _)| k == "Exten")
            .map(|(_, v)| v.as_str())
            .expect("Exten")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[derive(Clone, Default)]
pub struct OriginateServerConfig {
    pub username: String,
    pub secret: String,
    /// Recorded clicks by the `Exten` they dialled.
    pub calls: HashMap<String, Recorded>,
    /// Stop playing after the first message containing this text, until a `Hangup` comes.
    pub pause_after: Option<String>,
    /// Answer every Originate with `Response: Error` and this message.
    pub refuse_originate: Option<String>,
}

/// One action as received: headers in wire order, and its raw text.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub raw: String,
}

impl Received {
    pub fn name(&self) -> String {
        self.get("Action").unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Default)]
pub struct OriginateServerState {
    pub connections: usize,
    /// Every action after login.
    pub actions: Vec<Received>,
    /// Bytes that were not a well-formed `Name: Value` line.
    pub garbage_lines: Vec<String>,
}

impl OriginateServerState {
    pub fn named(&self, action: &str) -> Vec<Received> {
        self.actions
            .iter()
            .filter(|a| a.name().eq_ignore_ascii_case(action))
            .cloned()
            .collect()
    }
}

pub struct OriginateServer {
    pub port: u16,
    pub state: Arc<Mutex<OriginateServerState>>,
}

impl OriginateServer {
    pub async fn start(cfg: OriginateServerConfig) -> OriginateServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(OriginateServerState::default()));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                st.lock().unwrap().connections += 1;
                tokio::spawn(serve(sock, cfg.clone(), st.clone()));
            }
        });
        OriginateServer { port, state }
    }

    pub fn actions(&self, name: &str) -> Vec<Received> {
        self.state.lock().unwrap().named(name)
    }

    pub fn all_actions(&self) -> Vec<Received> {
        self.state.lock().unwrap().actions.clone()
    }
}

async fn read_action(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    state: &Mutex<OriginateServerState>,
) -> Option<Received> {
    let mut headers = Vec::new();
    let mut raw = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        raw.push_str(&line);
        let text = line.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if headers.is_empty() {
                continue;
            }
            return Some(Received { headers, raw });
        }
        match text.split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_string(), v.trim_start().to_string())),
            None => state.lock().unwrap().garbage_lines.push(text.to_string()),
        }
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

async fn serve(
    sock: TcpStream,
    cfg: OriginateServerConfig,
    state: Arc<Mutex<OriginateServerState>>,
) {
    let (r, mut w) = sock.into_split();
    let mut reader = BufReader::new(r);
    if w.write_all(b"Asterisk Call Manager/11.0.0\r\n")
        .await
        .is_err()
    {
        return;
    }
    let challenge = "471234567";
    loop {
        let Some(a) = read_action(&mut reader, &state).await else {
            return;
        };
        let id = a.get("ActionID").unwrap_or_default();
        match a.name().to_ascii_lowercase().as_str() {
            "challenge" => {
                let _ = w
                    .write_all(&response(
                        &id,
                        &[("Response", "Success"), ("Challenge", challenge)],
                    ))
                    .await;
            }
            "login" => {
                let ok_secret = match a.get("AuthType").map(|s| s.to_ascii_lowercase()).as_deref() {
                    Some("md5") => {
                        let digest = Md5::digest(format!("{challenge}{}", cfg.secret).as_bytes());
                        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                        a.get("Key") == Some(hex)
                    }
                    _ => a.get("Secret") == Some(cfg.secret.clone()),
                };
                if a.get("Username") == Some(cfg.username.clone()) && ok_secret {
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
                let _ = w
                    .write_all(&response(
                        &id,
                        &[("Response", "Error"), ("Message", "Authentication failed")],
                    ))
                    .await;
                return;
            }
            _ => return,
        }
    }
    // One writer, so playback and answers interleave as on a real PBX.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if w.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    // The rest of a paused playback, released by a Hangup.
    let mut held: Option<Vec<u8>> = None;
    while let Some(a) = read_action(&mut reader, &state).await {
        state.lock().unwrap().actions.push(a.clone());
        let id = a.get("ActionID").unwrap_or_default();
        let out = match a.name().to_ascii_lowercase().as_str() {
            "ping" => response(&id, &[("Response", "Success"), ("Ping", "Pong")]),
            "logoff" => response(
                &id,
                &[
                    ("Response", "Goodbye"),
                    ("Message", "Thanks for all the fish."),
                ],
            ),
            "originate" => {
                if let Some(msg) = &cfg.refuse_originate {
                    response(&id, &[("Response", "Error"), ("Message", msg)])
                } else {
                    match a.get("Exten").and_then(|e| cfg.calls.get(&e)) {
                        None => response(
                            &id,
                            &[
                                ("Response", "Error"),
                                ("Message", "Extension does not exist."),
                            ],
                        ),
                        Some(rec) => {
                            let body = replace(&rec.body, rec.click_id.as_bytes(), id.as_bytes());
                            match cfg
                                .pause_after
                                .as_ref()
                                .and_then(|p| find(&body, p.as_bytes()))
                                .and_then(|at| find(&body[at..], b"\r\n\r\n").map(|e| at + e + 4))
                            {
                                Some(cut) => {
                                    held = Some(body[cut..].to_vec());
                                    body[..cut].to_vec()
                                }
                                None => body,
                            }
                        }
                    }
                }
            }
            "hangup" => {
                let mut out = response(
                    &id,
                    &[("Response", "Success"), ("Message", "Channel Hungup")],
                );
                if let Some(rest) = held.take() {
                    out.extend(rest);
                }
                out
            }
            "muteaudio" => response(&id, &[("Response", "Success"), ("Message", "Audio muted")]),
            _ => response(
                &id,
                &[
                    ("Response", "Error"),
                    ("Message", "Invalid/unknown command"),
                ],
            ),
        };
        if tx.send(out).is_err() {
            break;
        }
    }
}
