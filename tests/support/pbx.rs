//! A real Asterisk 22 for tests: the other real half of the product, run the way the PBX of
//! `fixtures/ami-real/` was (Local channels for every phone and trunk, real queues, real CDR and
//! CEL over AMI), so the bridge can be tested against what Asterisk really says and does, not
//! against what a hand-written server believes it says.
//!
//! * [`Pbx::start`] finds the Asterisk build (or builds it once with
//!   `../shared/asterisk/build.sh`), writes a scratch configuration from the templates in
//!   `tests/pbx/`, starts `asterisk -f` as a child process on a free loopback port, waits for the
//!   AMI banner and stops it on drop. Every instance has its own folder, port, control socket
//!   and secrets, so tests run several side by side. Without Asterisk (no build, no shared
//!   folder) it prints `SKIPPED: …` and returns `None`, like [`super::pg_url`]; with
//!   `AZB_REQUIRE_ASTERISK=1` (CI) that is a failure instead.
//! * [`driver::Driver`] is the harness's own AMI session (user `driver`): it places calls the way
//!   people make them happen ([`plan::CallPlan`]: inbound through `from-trunk` into a queue,
//!   agents that answer after N seconds or never, outbound through the routes to a fake PSTN
//!   that answers, is busy, congested or never answers, internal calls, blind and attended
//!   transfers, MixMonitor recordings) and says what it asked for ([`plan::Expected`]), so a
//!   test states its truth without reading the bridge's output.
//! * [`proxy::Proxy`] sits between the bridge and Asterisk and cuts the bridge's session for N
//!   seconds (what happens meanwhile is lost, as in a real network blip).
//! * [`bridge::BridgeRig`] runs the real `ami-zoho-bridge run` against a PBX, delivering into the
//!   Zoho simulator with a SQLite store, with `fixtures/ami-real/bridge.toml` as its config.
//!
//! Where things come from: `AZB_ASTERISK_PREFIX` (default
//! `~/.cache/ami-zoho-bridge/asterisk-22.10.1`) holds the build; `AZB_SHARED_DIR` (default
//! `../shared` beside the repository) holds `asterisk/build.sh` and the source it builds.
//!
//! A new live test is a few lines. Click-to-dial against a real `Originate`, for example:
//!
//! ```ignore
//! use support::pbx::{bridge::{BridgeRig, RigOptions}, plan::{CallPlan, Pstn}, Pbx};
//! let Some(pbx) = Pbx::start().await else { return };   // prints SKIPPED without Asterisk
//! let driver = pbx.driver().await;                       // the harness's own AMI session
//! let mut rig = BridgeRig::start(&pbx, pbx.ami_port(), RigOptions::default()).await;
//! let mut bridge = rig.spawn();                          // `ami-zoho-bridge run`
//! driver.wait_logged_in("bridge", 0, Duration::from_secs(30)).await;
//! // ... ask the bridge to dial, then check on the driver's session that Asterisk did:
//! let (_, resp) = driver
//!     .wait_event(0, Duration::from_secs(40), |m| m.is("OriginateResponse"))
//!     .await
//!     .expect("an Originate reached the PBX");
//! // Or place a call as a person would and check what the bridge made of it:
//! let plan = CallPlan::outbound("2001", "0612345678", Pstn::answer(2.0, 3.0));
//! let call = driver.place(&plan).await;
//! driver.wait_ended(&call.linkedid, Duration::from_secs(30)).await;
//! assert!(rig.wait_records(1, Duration::from_secs(30)).await);
//! rig.check(&[call.expected]).assert_all_right();
//! support::pbx::bridge::terminate(&mut bridge);
//! ```
//!
//! Resync against a real `CoreShowChannels`: put a [`proxy::Proxy`] between the rig and the
//! PBX (`BridgeRig::start(&pbx, proxy.port, ..)`), place a long call, `proxy.cut_for(..)` while
//! it talks, and compare (`busy_hour_with` in `tests/live.rs` does this for a whole busy hour).
//! Recordings: `CallPlan::record()` makes the PBX write a real MixMonitor file to
//! `pbx.recordings().join(format!("{}.wav", placed.id))`. A schedule of many calls with at most
//! N up at once, transfers included: `Arc::new(driver).run(&schedule, N, timeout)`.

pub mod bridge;
pub mod driver;
pub mod plan;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Asterisk version the captures were recorded with, and the one built here.
pub const ASTERISK_VERSION: &str = "22.10.1";

/// How long Asterisk may take to show its AMI banner after start (or restart).
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the Asterisk build lives: `AZB_ASTERISK_PREFIX`, else the per-machine cache.
pub fn asterisk_prefix() -> PathBuf {
    if let Some(p) = std::env::var_os("AZB_ASTERISK_PREFIX").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(format!(
        ".cache/ami-zoho-bridge/asterisk-{ASTERISK_VERSION}"
    ))
}

/// The shared folder (`asterisk/build.sh` and the source): `AZB_SHARED_DIR`, else `../shared`
/// beside the repository.
pub fn shared_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("AZB_SHARED_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    super::root().join("../shared")
}

fn has_version(bin: &Path) -> bool {
    Command::new(bin)
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(ASTERISK_VERSION))
        .unwrap_or(false)
}

/// The `asterisk` binary, built first if needed (once per test process). `Err` says why there
/// is none.
fn find_or_build() -> Result<PathBuf, String> {
    static BUILT: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);
    let mut slot = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = slot.as_ref() {
        return r.clone();
    }
    let prefix = asterisk_prefix();
    let bin = prefix.join("sbin/asterisk");
    let result = if has_version(&bin) {
        Ok(bin)
    } else {
        let script = shared_dir().join("asterisk/build.sh");
        if !script.exists() {
            Err(format!(
                "no Asterisk {ASTERISK_VERSION} in {} and no {} to build it",
                prefix.display(),
                script.display()
            ))
        } else {
            eprintln!(
                "building Asterisk {ASTERISK_VERSION} into {} (once per machine, 1-3 minutes)",
                prefix.display()
            );
            // In a session of its own: without a terminal, a `sudo` in the script fails at
            // once instead of waiting for a password on the tester's terminal.
            let mut build = if Path::new("/usr/bin/setsid").exists() {
                let mut c = Command::new("/usr/bin/setsid");
                c.arg("bash");
                c
            } else {
                Command::new("bash")
            };
            match build
                .arg(&script)
                .arg(&prefix)
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) if out.status.success() && has_version(&bin) => Ok(bin),
                Ok(out) => Err(format!(
                    "{} failed ({}): {}{}",
                    script.display(),
                    out.status,
                    tail_text(&String::from_utf8_lossy(&out.stdout), 10),
                    tail_text(&String::from_utf8_lossy(&out.stderr), 10)
                )),
                Err(e) => Err(format!("{}: {e}", script.display())),
            }
        }
    };
    *slot = Some(result.clone());
    result
}

/// The Asterisk binary, or `None` after printing why the live tests are skipped; a failure
/// instead when `AZB_REQUIRE_ASTERISK=1`.
pub fn asterisk() -> Option<PathBuf> {
    match find_or_build() {
        Ok(bin) => Some(bin),
        Err(why) => {
            assert!(
                std::env::var("AZB_REQUIRE_ASTERISK").as_deref() != Ok("1"),
                "AZB_REQUIRE_ASTERISK=1 but there is no Asterisk: {why}"
            );
            eprintln!("SKIPPED: no Asterisk {ASTERISK_VERSION} ({why}); set AZB_ASTERISK_PREFIX or AZB_SHARED_DIR");
            None
        }
    }
}

fn tail_text(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A random-enough token for secrets and ids (no crate needed: time, pid and a counter).
pub fn token(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{tag}{:x}{:x}{}",
        nanos,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One running Asterisk with its scratch folder; stopped (and the folder removed) on drop.
pub struct Pbx {
    bin: PathBuf,
    prefix: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    bridge_secret: String,
    driver_secret: String,
}

impl Pbx {
    /// Starts a PBX, or `None` when there is no Asterisk (see [`asterisk`]).
    pub async fn start() -> Option<Pbx> {
        let bin = asterisk()?;
        let prefix = bin
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(asterisk_prefix);
        let bridge_secret = token("b");
        let driver_secret = token("d");
        // A free port is picked, then handed to Asterisk: another process may take it in
        // between, so a start that does not come up with *our* secrets is tried again.
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("azb-pbx-")
                .tempdir()
                .expect("scratch folder");
            let port = free_port();
            let mut pbx = Pbx {
                bin: bin.clone(),
                prefix: prefix.clone(),
                dir,
                child: None,
                port,
                bridge_secret: bridge_secret.clone(),
                driver_secret: driver_secret.clone(),
            };
            pbx.write_config();
            match pbx.boot().await {
                Ok(()) => return Some(pbx),
                Err(e) => last_error = e,
            }
        }
        panic!("Asterisk did not start: {last_error}");
    }

    /// The AMI port on 127.0.0.1.
    pub fn ami_port(&self) -> u16 {
        self.port
    }

    /// The bridge's AMI account: user name and secret.
    pub fn bridge_login(&self) -> (&str, &str) {
        ("bridge", &self.bridge_secret)
    }

    /// The scratch folder (configuration in `etc/`, logs in `log/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where MixMonitor writes `<LAB_ID>.wav`.
    pub fn recordings(&self) -> PathBuf {
        self.dir().join("recordings")
    }

    /// A new driver session (see [`driver::Driver`]).
    pub async fn driver(&self) -> driver::Driver {
        driver::Driver::connect(self.port, "driver", &self.driver_secret)
            .await
            .unwrap_or_else(|e| panic!("driver login: {e}\n{}", self.log_tail()))
    }

    fn conf(&self) -> PathBuf {
        self.dir().join("etc/asterisk.conf")
    }

    /// The templates of `tests/pbx/` with this instance's folder, port and secrets, plus the
    /// few data files the dialplan plays (one second of silence each: no sounds are built).
    fn write_config(&self) {
        let dir = self.dir();
        for sub in [
            "etc",
            "db",
            "keys",
            "agi-bin",
            "spool",
            "run",
            "log",
            "recordings",
            "data/moh",
            "data/sounds/en/custom",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("scratch folders");
        }
        let docs = self.prefix.join("var/lib/asterisk/documentation");
        if docs.exists() {
            let _ = std::os::unix::fs::symlink(docs, dir.join("data/documentation"));
        }
        let silence = vec![0u8; 16000]; // 1 s of 8 kHz 16-bit signed linear
        for f in [
            "data/moh/silence.sln",
            "data/sounds/en/custom/welcome.sln",
            "data/sounds/en/custom/goodbye.sln",
            "data/sounds/en/pbx-transfer.sln",
            "data/sounds/en/beep.sln",
        ] {
            std::fs::write(dir.join(f), &silence).expect("sound file");
        }
        let templates = super::root().join("tests/pbx");
        let entries = std::fs::read_dir(&templates).expect("tests/pbx");
        for entry in entries {
            let path = entry.expect("template").path();
            if path.extension().is_none_or(|e| e != "conf") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("template text");
            let text = self.fill(&text);
            let name = path.file_name().expect("file name");
            std::fs::write(dir.join("etc").join(name), text).expect("write config");
        }
    }

    fn fill(&self, text: &str) -> String {
        text.replace("@DIR@", &self.dir().display().to_string())
            .replace("@PREFIX@", &self.prefix.display().to_string())
            .replace("@AMI_PORT@", &self.port.to_string())
            .replace("@BRIDGE_SECRET@", &self.bridge_secret)
            .replace("@DRIVER_SECRET@", &self.driver_secret)
            .replace("@INSTANCE@", &self.dir().display().to_string())
    }

    /// Starts the process and waits until the AMI answers with our secrets.
    async fn boot(&mut self) -> Result<(), String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("log/console.log"))
            .map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .arg("-C")
            .arg(self.conf())
            .args(["-f", "-n", "-q"])
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.bin.display()))?;
        self.child = Some(child);
        match self.wait_ami_up().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }

    /// Waits for the banner and a driver login (bounded), checking the process is alive.
    pub async fn wait_ami_up(&mut self) -> Result<(), String> {
        let until = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("asterisk exited ({status})\n{}", self.log_tail()));
                }
            }
            if let Ok(d) = driver::Driver::connect(self.port, "driver", &self.driver_secret).await {
                // FullyBooted comes right after the login once every module is loaded.
                if d.wait_event(0, Duration::from_secs(5), |m| m.is("FullyBooted"))
                    .await
                    .is_some()
                {
                    return Ok(());
                }
            }
            if Instant::now() > until {
                return Err(format!(
                    "no AMI on 127.0.0.1:{} after {BOOT_TIMEOUT:?}\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a CLI command on the running PBX (`asterisk -rx`), bounded in time; its output.
    pub fn cli(&self, command: &str) -> String {
        let mut child = match Command::new(&self.bin)
            .arg("-C")
            .arg(self.conf())
            .args(["-rx", command])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return format!("cannot run asterisk -rx: {e}"),
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    break;
                }
            }
        }
        match child.wait_with_output() {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => e.to_string(),
        }
    }

    /// How many AMI sessions of `user` are logged in now (`manager show connected`).
    pub fn ami_sessions(&self, user: &str) -> usize {
        self.cli("manager show connected")
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(user))
            .count()
    }

    /// Waits until `user` has an AMI session (whenever it logged in); panics after `timeout`.
    pub async fn wait_ami_session(&self, user: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.ami_sessions(user) == 0 {
            assert!(
                Instant::now() < until,
                "no AMI session of {user} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `core restart now`: calls are torn down, every AMI session ends, the same process
    /// starts again. Returns when the AMI answers again.
    pub async fn restart_now(&mut self) {
        self.cli("core restart now");
        // The old AMI may answer for a moment: wait for the port to close first.
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until
            && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_ami_up()
            .await
            .unwrap_or_else(|e| panic!("after core restart: {e}"));
    }

    /// SIGKILL: the TCP streams just end, nothing is said.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the PBX again (after [`Pbx::kill9`]) on the same port and configuration.
    pub async fn start_again(&mut self) {
        self.boot()
            .await
            .unwrap_or_else(|e| panic!("start again: {e}"));
    }

    /// Changes the bridge user's secret in `manager.conf` and reloads the manager.
    pub fn set_bridge_secret(&mut self, secret: &str) {
        let path = self.dir().join("etc/manager.conf");
        let text = std::fs::read_to_string(&path).expect("manager.conf");
        let text = text.replace(
            &format!("secret = {}", self.bridge_secret),
            &format!("secret = {secret}"),
        );
        std::fs::write(&path, text).expect("manager.conf");
        self.bridge_secret = secret.to_string();
        self.cli("manager reload");
    }

    /// The last lines of Asterisk's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        for f in ["log/console.log", "log/messages"] {
            let body = std::fs::read_to_string(self.dir().join(f)).unwrap_or_default();
            text.push_str(&format!("--- {f}\n{}\n", tail_text(&body, 20)));
        }
        text
    }

    /// Stops Asterisk: `core stop now` over the control socket, then SIGKILL if it lingers.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            self.cli("core stop now");
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() || std::env::var_os("AZB_KEEP_PBX").is_some() {
            // Keep the scratch folder of a failed test: its logs say what Asterisk saw.
            let kept = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("placeholder folder"),
            );
            eprintln!("PBX folder kept: {}", kept.keep().display());
        }
    }
}

/// A port nobody listens on right now (the kernel's pick).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
