//! What keeps the HTTP side safe to put on a network: signed session cookies, a brake on
//! failed sign-ins, a token comparison that leaks nothing through timing, browser security
//! headers, and a connection loop with a cap and a header-read deadline.
//!
//! Why a signed session rather than the token in the cookie: a cookie is stored by the
//! browser and sent on every request; if it leaks (a shared machine, a proxy log) the raw
//! token would give the API for good, while a session expires and can be signed out. The
//! signing key is drawn at start and lives only in memory, so a restart signs everyone out;
//! that is the price of keeping no session state on disk.
//!
//! Why our own accept loop rather than `axum::serve`: `axum::serve` has neither a connection
//! cap nor a header-read timeout, and 1 100 idle sockets used up the file descriptors of the
//! whole process (FastAGI and the PBX sessions included).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Request};
use axum::response::Response;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// Constant-time comparison of a given credential with the expected one. Both are hashed
/// first, so neither the length nor the first differing byte shows in the time taken.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

type HmacSha256 = Hmac<Sha256>;

/// Issues and checks session cookies: `EXPIRY.NONCE.MAC`, the MAC (HMAC-SHA256 under a key
/// drawn at start) over `EXPIRY.NONCE`. Signed-out sessions are remembered until they expire.
pub struct Sessions {
    key: [u8; 32],
    lifetime: Duration,
    revoked: Mutex<HashMap<String, i64>>,
}

/// Signed-out sessions remembered at most (oldest expiry forgotten first past this).
const MAX_REVOKED: usize = 4096;

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Sessions {
            key,
            lifetime,
            revoked: Mutex::new(HashMap::new()),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn mac(&self, body: &str) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(body.as_bytes());
        mac
    }

    /// A new session value.
    pub fn issue(&self) -> String {
        use rand::RngCore;
        let expiry =
            now_secs().saturating_add(i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX));
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let body = format!("{expiry}.{}", hex(&nonce));
        let tag = hex(&self.mac(&body).finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// Whether `value` is a session this process issued, not expired, not signed out.
    pub fn valid(&self, value: &str) -> bool {
        let Some((body, tag)) = value.rsplit_once('.') else {
            return false;
        };
        let Some(tag) = unhex(tag) else {
            return false;
        };
        if self.mac(body).verify_slice(&tag).is_err() {
            return false;
        }
        let Some(expiry) = body.split('.').next().and_then(|e| e.parse::<i64>().ok()) else {
            return false;
        };
        if expiry <= now_secs() {
            return false;
        }
        !self
            .revoked
            .lock()
            .map(|r| r.contains_key(body))
            .unwrap_or(true)
    }

    /// Signs a session out (until it would have expired anyway).
    pub fn revoke(&self, value: &str) {
        if !self.valid(value) {
            return;
        }
        let Some((body, _)) = value.rsplit_once('.') else {
            return;
        };
        let expiry = body
            .split('.')
            .next()
            .and_then(|e| e.parse::<i64>().ok())
            .unwrap_or(0);
        if let Ok(mut r) = self.revoked.lock() {
            let now = now_secs();
            r.retain(|_, until| *until > now);
            if r.len() >= MAX_REVOKED {
                if let Some(oldest) = r.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone()) {
                    r.remove(&oldest);
                }
            }
            r.insert(body.to_string(), expiry);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Failed sign-ins allowed per peer address within [`SIGNIN_WINDOW`]; past that, sign-ins
/// from the address are refused (429) until the window has passed.
pub const SIGNIN_FAILURES: u32 = 5;
pub const SIGNIN_WINDOW: Duration = Duration::from_secs(60);
/// Peers tracked at most; past this every peer shares one budget (still a brake).
const MAX_TRACKED_PEERS: usize = 10_000;

/// Counts failed sign-ins per peer address.
#[derive(Default)]
pub struct SignInBrake {
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl SignInBrake {
    /// `Err(seconds to wait)` when `peer` has failed too often lately.
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), u64> {
        let Ok(f) = self.failures.lock() else {
            return Ok(());
        };
        let key = if f.len() >= MAX_TRACKED_PEERS && !f.contains_key(&peer) {
            None
        } else {
            peer
        };
        match f.get(&key) {
            Some((since, n)) if *n >= SIGNIN_FAILURES && since.elapsed() < SIGNIN_WINDOW => {
                Err((SIGNIN_WINDOW - since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// A failed sign-in from `peer`; returns the failures in the current window.
    pub fn failed(&self, peer: Option<IpAddr>) -> u32 {
        let Ok(mut f) = self.failures.lock() else {
            return 0;
        };
        if f.len() >= MAX_TRACKED_PEERS {
            f.retain(|_, (since, _)| since.elapsed() < SIGNIN_WINDOW);
        }
        let key = if f.len() >= MAX_TRACKED_PEERS && !f.contains_key(&peer) {
            None
        } else {
            peer
        };
        let entry = f.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= SIGNIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }

    pub fn succeeded(&self, peer: Option<IpAddr>) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&peer);
        }
    }
}

/// The peer of the connection a request came on (set by [`serve`]).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Headers every answer carries: no framing (clickjacking), no caching of call data, no
/// content sniffing, no referrer with query strings (phone numbers) to Zoho links, and a
/// content policy that allows only the page's own inline style and forms to itself.
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// Bounds of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once; one more is accepted and closed at once.
    pub max_connections: usize,
    /// Headers of a request (and the next request on a keep-alive connection) must arrive
    /// within this.
    pub header_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
        }
    }
}

impl ServeLimits {
    pub fn from_config(cfg: &crate::config::HttpConfig) -> ServeLimits {
        ServeLimits {
            max_connections: cfg.max_connections.max(1),
            header_timeout: crate::ops::seconds(
                cfg.header_timeout_seconds,
                Duration::from_secs(10),
            )
            .max(Duration::from_millis(100)),
        }
    }
}

/// Waits after a failed `accept` (out of file descriptors, most often): doubling from 10 ms
/// to 1 s, and one log line per streak rather than one per attempt.
pub struct AcceptBackoff {
    wait: Duration,
    failures: u64,
    what: &'static str,
}

impl AcceptBackoff {
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            wait: Duration::from_millis(10),
            failures: 0,
            what,
        }
    }

    pub async fn failed(&mut self, e: &std::io::Error) {
        self.failures += 1;
        metrics::counter!("azb_accept_errors_total", "listener" => self.what).increment(1);
        if self.failures == 1 {
            tracing::warn!(listener = self.what, error = %e, "accept failed; backing off (logged once until it works again)");
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_secs(1));
    }

    pub fn ok(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                listener = self.what,
                failures = self.failures,
                "accepting again"
            );
        }
        self.failures = 0;
        self.wait = Duration::from_millis(10);
    }
}

/// Serves `router` until `stop`, within `limits`. Each request carries its [`Peer`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let refused = metrics::counter!("azb_http_connections_refused_total");
    let mut backoff = AcceptBackoff::new("http");
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (sock, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => match a {
                Ok(a) => { backoff.ok(); a }
                Err(e) => { backoff.failed(&e).await; continue; }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            drop(sock);
            continue;
        };
        let router = router.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    router.clone().oneshot(req.map(axum::body::Body::new))
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(sock), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    // In-flight requests get their graceful-shutdown window (bounded above).
    while conns.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", "abc"));
    }

    #[test]
    fn sessions_are_signed_expire_and_sign_out() {
        let s = Sessions::new(Duration::from_secs(3600));
        let v = s.issue();
        assert!(s.valid(&v));
        // Another process's key does not accept it.
        assert!(!Sessions::new(Duration::from_secs(3600)).valid(&v));
        // Any change to the expiry breaks the MAC.
        let (exp, rest) = v.split_once('.').unwrap();
        let later = format!("{}.{rest}", exp.parse::<i64>().unwrap() + 100_000);
        assert!(!s.valid(&later));
        assert!(!s.valid("garbage"));
        assert!(!s.valid(""));
        s.revoke(&v);
        assert!(!s.valid(&v));
        // Expired.
        let short = Sessions::new(Duration::from_secs(0));
        assert!(!short.valid(&short.issue()));
    }

    #[test]
    fn sign_in_brake() {
        let b = SignInBrake::default();
        let peer = Some("10.0.0.9".parse().unwrap());
        for _ in 0..SIGNIN_FAILURES {
            assert!(b.check(peer).is_ok());
            b.failed(peer);
        }
        assert!(b.check(peer).is_err());
        assert!(b.check(Some("10.0.0.10".parse().unwrap())).is_ok());
        b.succeeded(peer);
        assert!(b.check(peer).is_ok());
    }
}
