//! A live PBX for the real-time path's tests: it plays a capture's events at a multiple of
//! their recorded pace, with their times moved to the present (a live PBX's clock is now),
//! and answers Login, Ping and the resync lists. Included with `#[path]` by the tests that
//! need it (kept apart from `support/ami_server.rs`, which streams as fast as it can).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const AMI_SECRET: &str = "lab-ami-secret";

/// A small AMI server that plays a capture's events at `speed` times their recorded pace
/// (by their `Timestamp:`), answers Login, Ping and the resync lists with empty answers.
pub async fn paced_ami(body: Vec<u8>, speed: f64) -> u16 {
    paced_ami_gated(body, speed, None).await
}

/// [`paced_ami`], playing only once `gate` is notified (after the client logged in).
pub async fn paced_ami_gated(
    body: Vec<u8>,
    speed: f64,
    gate: Option<Arc<tokio::sync::Notify>>,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let body = Arc::new(body);
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((sock, _)) = listener.accept().await {
            // A live PBX does not replay what a reconnecting client missed.
            let play = std::mem::take(&mut first);
            tokio::spawn(serve(sock, body.clone(), speed, play, gate.clone()));
        }
    });
    port
}

async fn serve(
    sock: tokio::net::TcpStream,
    body: Arc<Vec<u8>>,
    speed: f64,
    play: bool,
    gate: Option<Arc<tokio::sync::Notify>>,
) {
    // The PBX's clock is the capture's: answers carry the stream time as their Timestamp, as
    // a PBX with timestampevents does on its events (the bridge never mixes in its own clock).
    let stream_time = Arc::new(std::sync::Mutex::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    ));
    let (r, w) = sock.into_split();
    let w = Arc::new(tokio::sync::Mutex::new(w));
    let mut reader = BufReader::new(r);
    if w.lock()
        .await
        .write_all(b"Asterisk Call Manager/9.0.0\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut playing = false;
    loop {
        let mut fields = BTreeMap::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                if fields.is_empty() {
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let id = fields.get("actionid").cloned().unwrap_or_default();
        let now = *stream_time.lock().unwrap();
        let id = format!("{id}\r\nTimestamp: {now:.6}");
        let action = fields
            .get("action")
            .cloned()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let answer = match action.as_str() {
            "login" if fields.get("secret").map(String::as_str) == Some(AMI_SECRET) => {
                format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")
            }
            "login" => {
                format!("Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n")
            }
            "coreshowchannels" => format!(
                "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\nEvent: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
            ),
            "queuestatus" => format!(
                "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Queue status will follow\r\n\r\nEvent: QueueStatusComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
            ),
            "ping" => format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"),
            _ => format!("Response: Success\r\nActionID: {id}\r\n\r\n"),
        };
        if w.lock().await.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if action == "login" && play && !playing {
            playing = true;
            let w = w.clone();
            let body = body.clone();
            let stream_time = stream_time.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                if let Some(g) = gate {
                    g.notified().await;
                }
                let start = Instant::now();
                // A live PBX's clock is now: the capture's times are moved to the present
                // (same offset for every event, so every duration is kept), and the events
                // are sent at `speed` times their recorded pace.
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let mut first_ts: Option<f64> = None;
                for msg in body.split_inclusive_blank() {
                    let ts = timestamp(msg);
                    let shifted = match ts {
                        Some(ts) => {
                            let t0 = *first_ts.get_or_insert(ts);
                            let due = Duration::from_secs_f64(((ts - t0) / speed).max(0.0));
                            let now = start.elapsed();
                            if due > now {
                                tokio::time::sleep(due - now).await;
                            }
                            let at = wall + (ts - t0);
                            *stream_time.lock().unwrap() = at;
                            restamp(msg, at)
                        }
                        // FullyBooted, the one event without a Timestamp (README of the set),
                        // gets the stream time.
                        None => {
                            let now = (*stream_time.lock().unwrap()).max(wall);
                            [
                                &msg[..msg.len().saturating_sub(2)],
                                format!("Timestamp: {now:.6}\r\n\r\n").as_bytes(),
                            ]
                            .concat()
                        }
                    };
                    if w.lock().await.write_all(&shifted).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}

trait SplitMessages {
    fn split_inclusive_blank(&self) -> Vec<&[u8]>;
}

impl SplitMessages for Vec<u8> {
    /// The messages of an AMI byte stream, each with its ending blank line.
    fn split_inclusive_blank(&self) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i + 4 <= self.len() {
            if &self[i..i + 4] == b"\r\n\r\n" {
                out.push(&self[start..i + 4]);
                start = i + 4;
                i += 4;
            } else {
                i += 1;
            }
        }
        if start < self.len() {
            out.push(&self[start..]);
        }
        out
    }
}

/// The message with its `Timestamp:` value replaced.
fn restamp(msg: &[u8], at: f64) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(msg) else {
        return msg.to_vec();
    };
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive("\r\n") {
        if line.starts_with("Timestamp: ") {
            out.push_str(&format!("Timestamp: {at:.6}\r\n"));
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

fn timestamp(msg: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(msg).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Timestamp: "))
        .and_then(|v| v.trim().parse().ok())
}
