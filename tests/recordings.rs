//! Call recordings: on the `ami-sip` captures with MixMonitor, every recorded call's Call
//! activity carries a signed link to its file and the others carry none; the bridge's
//! `/recordings` route (served on a real TCP port) returns the bytes of files the test
//! creates at the recorded paths, serves ranges, and refuses altered or expired signatures,
//! `..` and absolute paths. Which calls are recorded is read from the capture's own
//! `VarSet MIXMONITOR_FILENAME` events, not from the code under test.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ami_zoho_bridge::config::RecordingsConfig;
use ami_zoho_bridge::recordings::{router, Links};
use ami_zoho_bridge::secret::Secret;
use serde_json::Value;

const SECRET: &str = "test-recording-link-secret";
const PBX_DIR: &str = "/var/spool/asterisk20/monitor";

/// Linkedid → MIXMONITOR_FILENAME, first per call, straight from the capture's text.
fn recorded_in(capture: &str) -> BTreeMap<String, String> {
    let text = String::from_utf8(support::read_capture(&support::root().join(capture)))
        .expect("utf-8 capture");
    let mut out = BTreeMap::new();
    for block in text.split("\r\n\r\n").flat_map(|b| b.split("\n\n")) {
        let get = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .map(|v| v.trim().to_string())
        };
        if get("Event").as_deref() == Some("VarSet")
            && get("Variable").as_deref() == Some("MIXMONITOR_FILENAME")
        {
            if let (Some(l), Some(v)) = (get("Linkedid"), get("Value")) {
                out.entry(l).or_insert(v);
            }
        }
    }
    out
}

async fn serve(root: &std::path::Path) -> (String, Links) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let links = Links::from_config(&RecordingsConfig {
        root: Some(root.to_path_buf()),
        pbx_dir: PBX_DIR.into(),
        public_url: base.clone(),
        link_secret: Some(Secret::new(SECRET)),
        link_secret_env: None,
        link_ttl_seconds: 3600,
    })
    .expect("config")
    .expect("links");
    let app = router(links.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, links)
}

/// `replay --emit activities` with the lab's config plus `[recordings]`.
fn activities(capture: &str, dir: &std::path::Path, public_url: &str) -> Vec<Value> {
    let base = std::fs::read_to_string(support::root().join("fixtures/ami-sip/bridge.toml"))
        .expect("bridge.toml");
    let cfg = dir.join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            "{base}\n[recordings]\nroot = \"{}\"\npbx_dir = \"{PBX_DIR}\"\npublic_url = \"{public_url}\"\nlink_secret = \"{SECRET}\"\n",
            dir.join("rec").display()
        ),
    )
    .expect("write config");
    let out = support::bridge()
        .args(["replay"])
        .arg(support::root().join(capture))
        .args(["--emit", "activities", "--config"])
        .arg(&cfg)
        .output()
        .expect("run replay");
    support::success_stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[tokio::test]
async fn every_recorded_call_links_its_file_and_the_link_serves_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rec");
    std::fs::create_dir_all(&root).expect("root");
    let (base, _links) = serve(&root).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut checked = 0;
    for capture in [
        "fixtures/ami-sip/inbound-answered-agent-hangup.ami",
        "fixtures/ami-sip/inbound-transfer.ami",
        "fixtures/ami-sip/mixed-small.ami",
    ] {
        let recorded = recorded_in(capture);
        assert!(!recorded.is_empty(), "{capture} has MixMonitor events");
        let acts = activities(capture, dir.path(), &base);
        assert!(!acts.is_empty(), "{capture}");
        for a in &acts {
            let linkedid = a["linkedid"].as_str().expect("linkedid");
            let url = a["record"]["Voice_Recording__s"].as_str();
            let Some(file) = recorded.get(linkedid) else {
                assert_eq!(url, None, "{capture} {linkedid}: not recorded, no field");
                continue;
            };
            let url = url.unwrap_or_else(|| panic!("{capture} {linkedid}: no recording link"));
            // 404 until MixMonitor has written the file.
            let r = http.get(url).send().await.expect("get");
            assert_eq!(r.status().as_u16(), 404, "{url}");
            let rel = file
                .strip_prefix(&format!("{PBX_DIR}/"))
                .expect("under the monitor dir");
            let body: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(root.join(rel), &body).expect("write recording");
            let r = http.get(url).send().await.expect("get");
            assert_eq!(r.status().as_u16(), 200, "{url}");
            assert_eq!(
                r.headers()["content-type"].to_str().expect("type"),
                "audio/wav"
            );
            assert_eq!(r.bytes().await.expect("body").as_ref(), &body[..]);
            let r = http
                .get(url)
                .header("Range", "bytes=100-199")
                .send()
                .await
                .expect("range");
            assert_eq!(r.status().as_u16(), 206);
            assert_eq!(
                r.headers()["content-range"].to_str().expect("range"),
                "bytes 100-199/5000"
            );
            assert_eq!(r.bytes().await.expect("body").as_ref(), &body[100..200]);
            let r = http
                .get(url)
                .header("Range", "bytes=-10")
                .send()
                .await
                .expect("suffix");
            assert_eq!(r.bytes().await.expect("body").as_ref(), &body[4990..]);
            // One character of the signature changed: refused.
            let (head, sig) = url.rsplit_once("sig=").expect("sig");
            let mut altered: Vec<char> = sig.chars().collect();
            altered[0] = if altered[0] == 'A' { 'B' } else { 'A' };
            let bad = format!("{head}sig={}", altered.iter().collect::<String>());
            assert_eq!(
                http.get(&bad).send().await.expect("get").status().as_u16(),
                403
            );
            // Another file with this file's signature: refused.
            let other = url.replacen(".wav?", "x.wav?", 1);
            assert_eq!(
                http.get(&other)
                    .send()
                    .await
                    .expect("get")
                    .status()
                    .as_u16(),
                403
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "recorded calls checked: {checked}");
}

#[tokio::test]
async fn expired_links_dot_dot_and_absolute_paths_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rec");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(dir.path().join("secret.txt"), "outside").expect("outside");
    std::fs::write(root.join("a.mp3"), "abc").expect("file");
    let (base, links) = serve(&root).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // A link made two hours ago with a one-hour life.
    let now = jiff::Timestamp::now().as_second() as u64;
    let old = links.url("a.mp3", now - 7200).expect("url");
    assert_eq!(
        http.get(&old).send().await.expect("get").status().as_u16(),
        403
    );
    let fresh = links.url("a.mp3", now).expect("url");
    let r = http.get(&fresh).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    // No link is ever made for paths outside the root ...
    assert_eq!(links.url("../secret.txt", now), None);
    assert_eq!(links.url("/etc/passwd", now), None);
    // ... and the route refuses them even with a signature that would match.
    let q = fresh.split_once('?').expect("query").1;
    for path in [
        "/recordings/../secret.txt",
        "/recordings/%2E%2E/secret.txt",
        "/recordings//etc/passwd",
        "/recordings/%2Fetc%2Fpasswd",
    ] {
        let r = http
            .get(format!("{base}{path}?{q}"))
            .send()
            .await
            .expect("get");
        let s = r.status().as_u16();
        assert!(s == 400 || s == 403 || s == 404, "{path}: {s}");
        assert_ne!(r.text().await.expect("text"), "outside", "{path}");
    }
    // A symbolic link inside the root that leads out of it.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.wav"))
            .expect("symlink");
        let u = links.url("link.wav", now).expect("url");
        assert_eq!(
            http.get(&u).send().await.expect("get").status().as_u16(),
            403
        );
    }
}
