//! End to end in a real browser: `ami-zoho-bridge demo` serves the search page, headless
//! Chromium (Debian's `chromium` and `chromium-driver`, driven over W3C WebDriver) signs in,
//! filters by a phone number and must see exactly the calls of that number. A screenshot is
//! kept at `target/browser-search.png`.
//!
//! Skipped (with a message) when Chromium is not installed, unless `AZB_REQUIRE_BROWSER=1`
//! (CI installs it).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Driver {
    http: reqwest::blocking::Client,
    base: String,
}

impl Driver {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().expect("webdriver request");
        let v: Value = resp.json().expect("webdriver json");
        assert!(v["value"]["error"].is_null(), "{path}: {v}");
        v["value"].clone()
    }

    fn find_all(&self, session: &str, css: &str) -> Vec<String> {
        let found = self.call(
            reqwest::Method::POST,
            &format!("/session/{session}/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    fn find(&self, session: &str, css: &str) -> String {
        self.find_all(session, css)
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                let source = self.call(
                    reqwest::Method::GET,
                    &format!("/session/{session}/source"),
                    None,
                );
                panic!("no element {css} in {source}")
            })
    }

    fn text(&self, session: &str, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/session/{session}/element/{element}/text"),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    fn type_into(&self, session: &str, css: &str, text: &str) {
        let e = self.find(session, css);
        self.call(
            reqwest::Method::POST,
            &format!("/session/{session}/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, session: &str, css: &str) {
        let e = self.find(session, css);
        self.call(
            reqwest::Method::POST,
            &format!("/session/{session}/element/{e}/click"),
            Some(json!({})),
        );
    }
}

impl Driver {
    /// A form submit starts a navigation that WebDriver's click does not wait for: poll until
    /// the browser is on a page whose URL passes `url_ok`, that has finished loading and that
    /// shows `css`.
    fn wait_for_page(&self, session: &str, url_ok: impl Fn(&str) -> bool, css: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let url = self.call(
                reqwest::Method::GET,
                &format!("/session/{session}/url"),
                None,
            );
            let state = self.call(
                reqwest::Method::POST,
                &format!("/session/{session}/execute/sync"),
                Some(json!({ "script": "return document.readyState", "args": [] })),
            );
            if url.as_str().is_some_and(&url_ok)
                && state == "complete"
                && !self.find_all(session, css).is_empty()
            {
                return;
            }
            assert!(Instant::now() < until, "page never loaded: {url} {state}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn search_page_in_headless_chromium() {
    if !(std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(DRIVER).exists()) {
        assert!(
            std::env::var("AZB_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "AZB_REQUIRE_BROWSER=1 but {CHROMIUM} or {DRIVER} is missing"
        );
        eprintln!("SKIPPED: no Chromium (apt-get install chromium chromium-driver)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 0: the demo says where it listens (a port picked here could be taken meanwhile).
    let mut demo = support::bridge()
        .args(["demo", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path().join("demo"))
        .env("AZB_HTTP_TOKEN", "browser-test-token")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = demo.stdout.take().expect("stdout");
    let _demo = Killed(demo);
    let mut summary = String::new();
    let mut page = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("demo output");
        summary.push_str(&line);
        summary.push('\n');
        if let Some(rest) = line.strip_prefix("Search page: ") {
            page = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    // Keep reading what the demo prints next: a closed pipe would fail its next write.
    std::thread::spawn(move || lines.for_each(drop));
    assert!(
        summary.contains("121 calls → 121 Call activities"),
        "{summary}"
    );

    let driver_port = free_port();
    let driver = Command::new(DRIVER)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let _driver = Killed(driver);
    wait_for_port(driver_port);
    let d = Driver {
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client"),
        base: format!("http://127.0.0.1:{driver_port}"),
    };
    let profile = dir.path().join("chromium-profile");
    let session = d.call(
        reqwest::Method::POST,
        "/session",
        Some(json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1500,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}})),
    );
    let sid = session["sessionId"]
        .as_str()
        .expect("session id")
        .to_string();
    let page = page.unwrap_or_else(|| panic!("the demo serves its page: {summary}"));
    d.call(
        reqwest::Method::POST,
        &format!("/session/{sid}/url"),
        Some(json!({ "url": page })),
    );
    d.type_into(&sid, "input[name=token]", "browser-test-token");
    d.click(&sid, "button[type=submit]");
    d.wait_for_page(&sid, |url| !url.contains("/login"), "#filters");
    // Signed in: the newest calls of the busy hour, a page of 50.
    assert_eq!(d.find_all(&sid, "tr.row").len(), 50);
    d.type_into(&sid, "input[name=phone]", "333 158 8952");
    d.click(&sid, "#search");
    d.wait_for_page(&sid, |url| url.contains("phone="), "#filters");
    let rows = d.find_all(&sid, "tr.row");
    // Truth (ami-sip/busyhour-seed11): one call from +393331588952, Roberto Bruno, answered by
    // Agent 1001 in queue support; the demo org has him as a Contact at "333 158 8952".
    assert_eq!(rows.len(), 1, "exactly the calls of that number");
    let cells: Vec<String> = d
        .find_all(&sid, "tr.row td")
        .iter()
        .map(|e| d.text(&sid, e))
        .collect();
    for want in [
        "inbound",
        "answered",
        "+393331588952",
        "Contact",
        "support",
        "Agent 1001",
        "delivered",
        "open",
    ] {
        assert!(cells.iter().any(|c| c == want), "{want} in {cells:?}");
    }
    let shot = d.call(
        reqwest::Method::GET,
        &format!("/session/{sid}/screenshot"),
        None,
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().expect("screenshot"))
        .expect("base64");
    let target = support::root().join("target");
    std::fs::create_dir_all(&target).expect("target dir");
    std::fs::write(target.join("browser-search.png"), png).expect("screenshot file");
    d.call(reqwest::Method::DELETE, &format!("/session/{sid}"), None);
}
