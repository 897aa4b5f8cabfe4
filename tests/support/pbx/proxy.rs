//! A TCP proxy between the bridge and Asterisk that can cut the bridge's AMI session for a
//! while, as a network blip or a firewall would: the open connections are dropped at once, and
//! during the cut new ones are refused (accepted and closed before the banner) or held (kept
//! waiting, then joined to Asterisk when the cut ends). Asterisk keeps running, and what it
//! said meanwhile is lost to the bridge.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What happens to a connection attempted during a cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Accepted and closed at once: the client sees the connection end before any banner.
    Refuse,
    /// Kept waiting without a byte until the cut ends, then joined to Asterisk.
    Hold,
}

struct State {
    upstream: u16,
    cut_until: Mutex<Option<(Instant, CutMode)>>,
    /// Bumped by every cut: connections of an older generation end.
    generation: watch::Sender<u64>,
    connections: AtomicUsize,
    refused: AtomicUsize,
}

/// A running proxy; it stops with the test's runtime.
pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (generation, _) = watch::channel(0);
        let state = Arc::new(State {
            upstream,
            cut_until: Mutex::new(None),
            generation,
            connections: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        Proxy { port, state }
    }

    /// Drops every open connection now and refuses new ones for `d` (see [`CutMode`]).
    pub fn cut_for(&self, d: Duration, mode: CutMode) {
        *self
            .state
            .cut_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now() + d, mode));
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Connections joined to Asterisk so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Connections refused during cuts so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::Relaxed)
    }
}

fn current_cut(state: &State) -> Option<(Instant, CutMode)> {
    let cut = *state.cut_until.lock().unwrap_or_else(|e| e.into_inner());
    cut.filter(|(until, _)| Instant::now() < *until)
}

async fn serve(mut client: TcpStream, state: Arc<State>) {
    while let Some((until, mode)) = current_cut(&state) {
        match mode {
            CutMode::Refuse => {
                state.refused.fetch_add(1, Ordering::Relaxed);
                return; // dropping the socket closes it
            }
            CutMode::Hold => tokio::time::sleep_until(until.into()).await,
        }
    }
    let mut generation = state.generation.subscribe();
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", state.upstream)).await else {
        return;
    };
    state.connections.fetch_add(1, Ordering::Relaxed);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = generation.changed() => {}
        // A bound on a test's connection, whatever happens.
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
}
