//! Call recordings for Zoho: signed, expiring links to MixMonitor files, and the route that
//! serves them.
//!
//! Zoho fetches `Voice_Recording__s` (and PhoneBridge's `voiceuri`) later, with no
//! credentials of its own, so the link itself is the credential: an HMAC-SHA256 over the
//! file's path under the recordings root and an expiry time. The route refuses a bad or
//! expired signature (403), any path that is not a plain relative one (`..`, absolute,
//! empty segments: 400), and anything that resolves outside the root through a symbolic link;
//! it answers 404 until the file exists (MixMonitor writes it when the call ends), serves
//! byte ranges (players seek), names the content type by extension, and logs every access.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::config::RecordingsConfig;
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The tag the call tracker gives a call's `MIXMONITOR_FILENAME`.
pub const RECORDING_TAG: &str = "recording";

/// Makes and checks the links.
#[derive(Clone)]
pub struct Links {
    root: PathBuf,
    pbx_dir: String,
    public_url: String,
    secret: Secret,
    ttl: u64,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("root", &self.root)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// A plain relative path (normal segments only), or None.
pub fn clean_relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return None;
    }
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty() && path.split('/').all(|s| !s.is_empty())).then_some(out)
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters pass).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Links {
    /// From `[recordings]`; None when no root is configured. Errors name the key.
    pub fn from_config(cfg: &RecordingsConfig) -> Result<Option<Links>, String> {
        let Some(root) = &cfg.root else {
            return Ok(None);
        };
        let secret = match (&cfg.link_secret, &cfg.link_secret_env) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, Some(var)) => std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new)
                .ok_or_else(|| {
                    format!("key recordings.link_secret_env: the variable {var} is not set")
                })?,
            _ => return Err("key recordings.link_secret: missing".into()),
        };
        Ok(Some(Links {
            root: root.clone(),
            pbx_dir: cfg.pbx_dir.trim_end_matches('/').to_string(),
            public_url: cfg.public_url.trim_end_matches('/').to_string(),
            secret,
            ttl: cfg.link_ttl_seconds,
        }))
    }

    /// The path under the root of a file the PBX named: what follows its monitor directory
    /// (or the root), else a relative name as it is; None for anything else.
    pub fn relative(&self, recorded: &str) -> Option<PathBuf> {
        let root = self.root.to_string_lossy();
        let rel = [self.pbx_dir.as_str(), root.trim_end_matches('/')]
            .iter()
            .filter(|d| !d.is_empty())
            .find_map(|d| recorded.strip_prefix(d)?.strip_prefix('/'))
            .unwrap_or(recorded);
        clean_relative(rel)
    }

    fn signature(&self, rel: &str, exp: u64) -> HmacSha256 {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(self.secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(rel.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// The signed URL of a recording the PBX named, valid `link_ttl_seconds` from `now`.
    pub fn url(&self, recorded: &str, now: u64) -> Option<String> {
        let rel = self.relative(recorded)?;
        let rel = rel.to_str()?;
        let exp = now + self.ttl;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.signature(rel, exp).finalize().into_bytes());
        let path = rel
            .split('/')
            .map(encode_segment)
            .collect::<Vec<_>>()
            .join("/");
        Some(format!(
            "{}/recordings/{path}?exp={exp}&sig={sig}",
            self.public_url
        ))
    }

    /// Checks a link's signature and expiry (in constant time for the signature).
    pub fn verify(&self, rel: &str, exp: u64, sig: &str, now: u64) -> bool {
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        exp >= now && self.signature(rel, exp).verify_slice(&raw).is_ok()
    }
}

/// Content type by extension (the formats MixMonitor writes).
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "wav" | "wav49" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "gsm" => "audio/gsm",
        "flac" => "audio/flac",
        "m4a" => "audio/mp4",
        _ => "application/octet-stream",
    }
}

/// A single `bytes=` range against a file of `len` bytes: `Ok(None)` for the whole file,
/// `Err(())` when unsatisfiable (416).
#[allow(clippy::result_unit_err)]
pub fn parse_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else {
        return Ok(None);
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    // Several ranges: served whole, as RFC 9110 allows.
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.checked_sub(1).ok_or(())?
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

#[derive(serde::Deserialize)]
struct LinkQuery {
    exp: Option<u64>,
    sig: Option<String>,
}

fn unix_now() -> u64 {
    jiff::Timestamp::now().as_second().max(0) as u64
}

/// The `/recordings/...` route, for the HTTP server to merge.
pub fn router(links: Links) -> Router {
    Router::new()
        .route("/recordings/{*path}", get(serve))
        .with_state(Arc::new(links))
}

fn status(code: StatusCode, why: &'static str) -> Response {
    (code, why).into_response()
}

async fn serve(
    State(links): State<Arc<Links>>,
    UrlPath(path): UrlPath<String>,
    Query(q): Query<LinkQuery>,
    headers: HeaderMap,
) -> Response {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (resp, bytes) = answer(&links, &path, &q, range).await;
    tracing::info!(
        target: "access",
        path = %path,
        status = resp.status().as_u16(),
        bytes,
        range = range.unwrap_or(""),
        "recording request"
    );
    resp
}

async fn answer(links: &Links, path: &str, q: &LinkQuery, range: Option<&str>) -> (Response, u64) {
    let Some(rel) = clean_relative(path) else {
        return (status(StatusCode::BAD_REQUEST, "not a recording path\n"), 0);
    };
    let (Some(exp), Some(sig)) = (q.exp, q.sig.as_deref()) else {
        return (status(StatusCode::FORBIDDEN, "unsigned link\n"), 0);
    };
    if !links.verify(path, exp, sig, unix_now()) {
        return (
            status(StatusCode::FORBIDDEN, "bad or expired signature\n"),
            0,
        );
    }
    let full = links.root.join(&rel);
    // A symbolic link must not lead out of the root.
    let (Ok(root), Ok(real)) = (
        tokio::fs::canonicalize(&links.root).await,
        tokio::fs::canonicalize(&full).await,
    ) else {
        return (
            status(StatusCode::NOT_FOUND, "no such recording (yet)\n"),
            0,
        );
    };
    if !real.starts_with(&root) {
        return (status(StatusCode::FORBIDDEN, "outside the recordings\n"), 0);
    }
    let Ok(mut file) = tokio::fs::File::open(&real).await else {
        return (
            status(StatusCode::NOT_FOUND, "no such recording (yet)\n"),
            0,
        );
    };
    let len = match file.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return (status(StatusCode::NOT_FOUND, "no such recording\n"), 0),
    };
    let ctype = HeaderValue::from_static(content_type(&rel));
    let (code, start, end) = match parse_range(range, len) {
        Ok(None) => (StatusCode::OK, 0, len),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        Err(()) => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE, "");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return (r, 0);
        }
    };
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return (
            status(StatusCode::INTERNAL_SERVER_ERROR, "reading the recording\n"),
            0,
        );
    }
    let n = end - start;
    // Read and sent 64 KiB at a time: a long recording is never held in memory.
    let stream = futures::stream::unfold(file.take(n), |mut f| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(k) => {
                buf.truncate(k);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, ctype);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&n.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if code == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    (r, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        Links {
            root: PathBuf::from("/srv/rec"),
            pbx_dir: "/var/spool/asterisk20/monitor".into(),
            public_url: "https://bridge.example.com".into(),
            secret: Secret::new("k"),
            ttl: 3600,
        }
    }

    #[test]
    fn only_plain_relative_paths() {
        assert_eq!(clean_relative("a/b.wav"), Some(PathBuf::from("a/b.wav")));
        for bad in [
            "",
            "/etc/passwd",
            "../x.wav",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
        ] {
            assert_eq!(clean_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn links_sign_the_path_under_the_root_and_expire() {
        let l = links();
        let url = l
            .url("/var/spool/asterisk20/monitor/1795465627.34.wav", 1000)
            .expect("url");
        assert_eq!(
            url.split('?').next(),
            Some("https://bridge.example.com/recordings/1795465627.34.wav")
        );
        let q = url.split_once('?').expect("query").1;
        let sig = q.split("sig=").nth(1).expect("sig");
        assert!(q.starts_with("exp=4600&"), "{q}");
        assert!(l.verify("1795465627.34.wav", 4600, sig, 1000));
        assert!(!l.verify("1795465627.34.wav", 4600, sig, 4601), "expired");
        assert!(
            !l.verify("1795465627.35.wav", 4600, sig, 1000),
            "other file"
        );
        assert!(
            !l.verify("1795465627.34.wav", 4601, sig, 1000),
            "other expiry"
        );
        // A path outside both directories keeps only a plain relative name.
        assert_eq!(l.relative("/etc/passwd"), None);
        assert_eq!(l.relative("day/x.wav"), Some(PathBuf::from("day/x.wav")));
    }

    #[test]
    fn ranges_as_rfc_9110_words_them() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Ok(Some((4, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(content_type(Path::new("a.WAV")), "audio/wav");
        assert_eq!(content_type(Path::new("a.mp3")), "audio/mpeg");
    }
}
