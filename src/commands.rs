//! Commands of the binary that talk to Zoho or render activities.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::zoho::api::ZohoApi;
use ami_zoho_bridge::zoho::oauth::OAuth;
use ami_zoho_bridge::zoho::sim::{self, SimHandle, SimLimits};

use crate::UsageError;

fn http_client(timeout: f64) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(timeout.max(1.0)))
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

fn account<'c>(
    cfg: &'c Config,
    name: &str,
) -> anyhow::Result<&'c ami_zoho_bridge::config::AccountConfig> {
    cfg.zoho.accounts.get(name).ok_or_else(|| {
        UsageError(format!(
            "no account '{name}' under [zoho.accounts] in the configuration"
        ))
        .into()
    })
}

/// `zoho authorize`: exchange a Self Client grant code and store the refresh token.
pub async fn authorize(cfg: &Config, name: &str, code: &str) -> anyhow::Result<()> {
    let acc = account(cfg, name)?;
    let oauth = OAuth::new(name, acc, http_client(acc.timeout_seconds)?)
        .map_err(|e| UsageError(e.to_string()))?;
    let tokens = oauth.exchange_code(code.trim()).await?;
    println!(
        "account '{name}' authorized: refresh token stored in {} (scopes: {})",
        oauth.token_file().path().display(),
        tokens.scope.as_deref().unwrap_or("not reported")
    );
    Ok(())
}

/// `zoho test`: token, administrator, users, and each endpoint the bridge uses.
pub async fn test(cfg: &Config, name: &str) -> anyhow::Result<()> {
    let acc = account(cfg, name)?;
    let http = http_client(acc.timeout_seconds)?;
    let oauth =
        Arc::new(OAuth::new(name, acc, http.clone()).map_err(|e| UsageError(e.to_string()))?);
    let api = ZohoApi::new(oauth.clone(), acc, &cfg.calls.default_country, http);
    let mut problems = Vec::new();
    let mut out = std::io::stdout();
    match oauth.access().await {
        Ok(a) => writeln!(
            out,
            "ok    access token valid (API domain {})",
            a.api_domain
        )?,
        Err(e) => {
            writeln!(out, "FAIL  access token: {e}")?;
            anyhow::bail!("account '{name}' cannot get an access token");
        }
    }
    match api.admin().await {
        Ok(u) => writeln!(
            out,
            "ok    administrator: {} <{}> ({})",
            u.full_name, u.email, u.id
        )?,
        Err(e) => {
            writeln!(out, "FAIL  administrator: {e}")?;
            problems.push("administrator".to_string());
        }
    }
    match api.active_users().await {
        Ok(users) => {
            writeln!(out, "ok    {} active users", users.len())?;
            for u in &users {
                writeln!(out, "        {} <{}>", u.full_name, u.email)?;
            }
        }
        Err(e) => writeln!(out, "FAIL  active users: {e}")?,
    }
    for (endpoint, scope, result) in api.probe().await {
        match result {
            Ok(()) => writeln!(out, "ok    {endpoint}")?,
            Err(e) if e.code() == Some("OAUTH_SCOPE_MISMATCH") => {
                writeln!(out, "FAIL  {endpoint}: missing OAuth scope {scope}")?;
                problems.push(format!("missing scope {scope}"));
            }
            Err(e) => {
                writeln!(out, "FAIL  {endpoint}: {e}")?;
                problems.push(endpoint.to_string());
            }
        }
    }
    if problems.is_empty() {
        writeln!(out, "account '{name}' is ready")?;
        Ok(())
    } else {
        anyhow::bail!("account '{name}': {}", problems.join(", "))
    }
}

/// `zoho-sim`: the simulator on `listen`, until interrupted.
pub async fn run_sim(listen: SocketAddr, seed: Option<&Path>) -> anyhow::Result<()> {
    let seed = match seed {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading seed {}", p.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| UsageError(format!("seed file {}: {e}", p.display())))?
        }
        None => sim::demo_seed(),
    };
    let handle = SimHandle::start(listen, seed, SimLimits::default()).await?;
    println!(
        "Zoho simulator on http://{} (data center X at http://{}/X)",
        handle.addr, handle.addr
    );
    println!(
        "grant codes: POST http://{}/sim/codes {{\"client_id\", \"dc\", \"scopes\"}}",
        handle.addr
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// `replay FILE --deliver`: the daemon's stages on a recorded capture, then wait for the
/// outbox to drain and print a summary line.
pub async fn replay_deliver(
    file: &Path,
    cfg: Config,
    speed: Option<f64>,
    wait: f64,
) -> anyhow::Result<()> {
    use ami_zoho_bridge::daemon::Bridge;
    use tokio_util::sync::CancellationToken;

    let bridge = Bridge::start(&cfg).await.map_err(daemon_error)?;
    let stop = CancellationToken::new();
    let workers = bridge.delivery.spawn(stop.clone());
    let calls = replay_into(&bridge, &cfg, file, speed).await?;
    let stats = drain(&bridge, wait).await?;
    stop.cancel();
    futures::future::join_all(workers).await;
    bridge.store.close().await;
    println!(
        "{}",
        serde_json::json!({
            "calls": calls,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "pending": stats.pending,
        })
    );
    if stats.pending > 0 {
        anyhow::bail!(
            "{} record(s) still pending after {wait} s (they stay in the outbox)",
            stats.pending
        );
    }
    Ok(())
}

/// Configuration problems found when the bridge starts exit with code 2, like a bad file.
pub fn daemon_error(e: ami_zoho_bridge::daemon::DaemonError) -> anyhow::Error {
    match e {
        ami_zoho_bridge::daemon::DaemonError::Config(m) => UsageError(m).into(),
        other => other.into(),
    }
}

/// How many of `outputs` are finished calls.
pub fn finished_count(outputs: &[ami_zoho_bridge::calls::Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, ami_zoho_bridge::calls::Output::Finished(_)))
        .count()
}

/// Feeds a capture through tracker and triggers into the store, at `speed` × the recorded
/// pace (as fast as possible without). Returns the number of finished calls.
async fn replay_into(
    bridge: &ami_zoho_bridge::daemon::Bridge,
    cfg: &Config,
    file: &Path,
    speed: Option<f64>,
) -> anyhow::Result<usize> {
    use ami_zoho_bridge::ami::replay::Replay;
    use ami_zoho_bridge::ami::SourceEvent;
    use ami_zoho_bridge::calls::Micros;
    use ami_zoho_bridge::daemon::tracker_for;
    use tokio_util::sync::CancellationToken;

    let replay = Replay::open(file)
        .with_context(|| format!("opening capture {}", file.display()))?
        .with_codec(ami_zoho_bridge::calls::tracker_codec());
    let mut tracker = tracker_for(cfg);
    let mut outputs = Vec::new();
    let never = CancellationToken::new();
    let pace = speed.filter(|s| s.is_finite() && *s > 0.0);
    let started = std::time::Instant::now();
    let mut first_ts: Option<i64> = None;
    let mut calls = 0usize;
    for event in replay {
        let event = event?;
        if let SourceEvent::Message(m) = &event {
            let ts = m.get("Timestamp").and_then(Micros::parse_epoch);
            if let (Some(x), Some(ts)) = (pace, ts) {
                let t0 = *first_ts.get_or_insert(ts.0);
                let due = Duration::from_secs_f64(((ts.0 - t0).max(0) as f64 / 1e6) / x);
                if let Some(sleep) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(sleep).await;
                }
            }
        }
        tracker.feed(&event, Micros(0), &mut outputs);
        calls += finished_count(&outputs);
        bridge.handle("replay", &mut outputs, &never).await;
    }
    tracker.finish(&mut outputs);
    calls += finished_count(&outputs);
    bridge.handle("replay", &mut outputs, &never).await;
    Ok(calls)
}

/// Waits until nothing is pending (or `wait` seconds pass) and returns the outbox counts.
async fn drain(
    bridge: &ami_zoho_bridge::daemon::Bridge,
    wait: f64,
) -> anyhow::Result<ami_zoho_bridge::store::OutboxStats> {
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(wait.max(0.0));
    loop {
        let s = bridge.store.outbox_stats().await?;
        if s.pending == 0 || std::time::Instant::now() >= deadline {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `bench-deliver`: the whole pipeline on a capture replayed at `speed` × its recorded pace,
/// into a local simulator answering at once and a scratch SQLite store. Prints the time from
/// a call's finalisation to the start of its Zoho request (p50, p99) and Zoho requests per
/// activity.
pub async fn bench_deliver(file: &Path, mut cfg: Config, speed: f64) -> anyhow::Result<()> {
    use ami_zoho_bridge::daemon::Bridge;
    use tokio_util::sync::CancellationToken;

    let dir = std::env::temp_dir().join(format!("azb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sim = SimHandle::start(
        "127.0.0.1:0".parse()?,
        sim::demo_seed(),
        SimLimits::default(),
    )
    .await?;
    attach_to_simulator(&mut cfg, &sim, &dir).await?;
    cfg.store.url = format!("sqlite://{}", dir.join("bench.db").display());
    let bridge = Bridge::start(&cfg).await.map_err(daemon_error)?;
    let stop = CancellationToken::new();
    let workers = bridge.delivery.spawn(stop.clone());
    let started = std::time::Instant::now();
    let calls = replay_into(&bridge, &cfg, file, Some(speed)).await?;
    let stats = drain(&bridge, 60.0).await?;
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    futures::future::join_all(workers).await;
    let mut lat: Vec<f64> = bridge
        .store
        .request_latencies()
        .await?
        .into_iter()
        .map(|(fin, req)| (req - fin) as f64 / 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    let requests: u64 = bridge
        .delivery
        .apis()
        .values()
        .map(|a| a.requests_made())
        .sum();
    let activities = stats.delivered.max(1) as f64;
    bridge.store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "calls={calls} activities={} failed={} pending={} seconds={elapsed:.1} speed={speed} finalisation_to_request_ms_p50={:.2} p99={:.2} max={:.2} zoho_requests={requests} requests_per_activity={:.2}",
        stats.delivered,
        stats.failed,
        stats.pending,
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0),
        requests as f64 / activities
    );
    Ok(())
}

/// `search`: stored calls by phone or user, newest first.
pub async fn search(
    cfg: &Config,
    filters: &ami_zoho_bridge::http::Filters,
    json: bool,
) -> anyhow::Result<()> {
    let country = ami_zoho_bridge::phone::country(&cfg.calls.default_country);
    let search = filters
        .search(country)
        .map_err(|e| UsageError(format!("--{}", e.to_string().replace('_', "-"))))?;
    let store = ami_zoho_bridge::store::Store::open(&cfg.store.url).await?;
    let (rows, total) = store.search(&search).await?;
    store.close().await;
    let mut out = std::io::stdout().lock();
    if json {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<20}  {:<8}  {:<10}  {:<16}  {:<10}  {:<12}  {:<28}  {:<9}  zoho id",
        "ended (UTC)", "dir", "status", "number", "queue", "agent", "user", "delivery"
    )?;
    for r in &rows {
        let ended: String = r
            .ended_at
            .as_deref()
            .unwrap_or("")
            .replace('T', " ")
            .chars()
            .take(19)
            .collect();
        writeln!(
            out,
            "{:<20}  {:<8}  {:<10}  {:<16}  {:<10}  {:<12}  {:<28}  {:<9}  {}",
            ended,
            r.direction,
            r.status,
            r.remote_number.as_deref().unwrap_or("-"),
            r.queue.as_deref().unwrap_or("-"),
            r.agent.as_deref().unwrap_or("-"),
            r.user_email
                .as_deref()
                .or(r.agent_email.as_deref())
                .unwrap_or("-"),
            r.delivery,
            r.activity_id.as_deref().unwrap_or("-")
        )?;
    }
    writeln!(
        out,
        "{} of {total} call(s), page {}",
        rows.len(),
        search.page
    )?;
    Ok(())
}

/// `config check`: everything `run` checks before it connects anywhere. Secrets that are not
/// in the environment are reported (this may not be the machine that runs the bridge).
pub fn config_check(file: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(Some(file)).map_err(|e| UsageError(e.to_string()))?;
    ami_zoho_bridge::pipeline::Pipeline::new(&cfg)
        .map_err(|e| UsageError(format!("configuration {}: {e}", file.display())))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: valid", file.display())?;
    writeln!(
        out,
        "  {} PBX(s), {} Zoho account(s), {} configuration(s), {} trigger(s), store {}",
        cfg.pbx.len(),
        cfg.zoho.accounts.len(),
        cfg.zoho.configurations.len(),
        cfg.triggers.len(),
        ami_zoho_bridge::store::redact_url(&cfg.store.url)
    )?;
    for (i, p) in cfg.pbx.iter().enumerate() {
        if let Err(e) = p.secret(i) {
            writeln!(out, "  note: {e} (needed by `run`)")?;
        }
    }
    for (name, acc) in &cfg.zoho.accounts {
        if let Err(e) = ami_zoho_bridge::zoho::oauth::client_secret(name, acc) {
            writeln!(out, "  note: {e} (needed by `run` and `zoho` commands)")?;
        }
    }
    if cfg.pbx.is_empty() {
        writeln!(out, "  note: no [[pbx]]: `run` has nothing to read")?;
    }
    Ok(())
}

/// The capture and lab configuration `demo` runs, built into the binary so it works anywhere.
const DEMO_CAPTURE: &[u8] = include_bytes!("../fixtures/ami-sip/busyhour-seed11.ami.gz");
const DEMO_CONFIG: &str = include_str!("../fixtures/ami-sip/bridge.toml");
/// The client secret of the simulated Self Clients of `demo` and `bench-deliver`.
const SIM_CLIENT_SECRET: &str = "simulated-client-secret";

/// The demo org: the simulator's sample users, contacts and leads, plus a few callers of the
/// bundled busy hour, written the way people type numbers.
fn demo_org() -> sim::Seed {
    let mut seed = sim::demo_seed();
    let person = |id: &str, name: &str, field: &str, phone: &str| sim::SimPerson {
        id: id.into(),
        full_name: name.into(),
        phones: [(field.to_string(), phone.to_string())].into(),
        owner_email: None,
    };
    seed.contacts.extend([
        person(
            "5725767000000512101",
            "Silvia Gallo",
            "Phone",
            "+44 20 7307 1718",
        ),
        person(
            "5725767000000512102",
            "Roberto Bruno",
            "Mobile",
            "333 158 8952",
        ),
        person(
            "5725767000000512103",
            "Studio Ferri",
            "Phone",
            "06 3139 4492",
        ),
    ]);
    seed.leads.push(person(
        "5725767000000513101",
        "Francesca Greco",
        "Phone",
        "02 977 0838",
    ));
    seed
}

/// Points every account of `cfg` at the simulator and authorises it with a fresh grant code,
/// as `zoho authorize` does: what `demo` and `bench-deliver` run against.
async fn attach_to_simulator(cfg: &mut Config, sim: &SimHandle, dir: &Path) -> anyhow::Result<()> {
    use ami_zoho_bridge::secret::Secret;
    for (name, acc) in cfg.zoho.accounts.iter_mut() {
        let dc = acc.dc.clone().unwrap_or_else(|| "com".into());
        sim.add_client(&acc.client_id, SIM_CLIENT_SECRET);
        acc.accounts_url = Some(sim.url(&dc));
        acc.api_domain = Some(sim.url(&dc));
        acc.token_file = Some(dir.join(format!("zoho-{name}.json")));
        acc.client_secret = Some(Secret::new(SIM_CLIENT_SECRET));
        acc.client_secret_env = None;
        let oauth = OAuth::new(name, acc, http_client(acc.timeout_seconds)?)?;
        oauth
            .exchange_code(&sim.grant_code(&acc.client_id, &dc, sim::BRIDGE_SCOPES, None))
            .await?;
    }
    Ok(())
}

/// `demo`: a local Zoho, the bundled busy hour through the whole pipeline into SQLite, a
/// summary of what was created, then the search page until Ctrl-C (or at once with
/// `serve = false`).
/// Prints a line of the demo's report. A closed stdout (`demo | head`) must not take the
/// search page down with a panic, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub async fn demo(dir: Option<PathBuf>, listen: SocketAddr, serve: bool) -> anyhow::Result<()> {
    use ami_zoho_bridge::daemon::Bridge;
    use ami_zoho_bridge::secret::Secret;
    use tokio_util::sync::CancellationToken;

    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ami-zoho-bridge-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let capture = dir.join("busyhour-seed11.ami.gz");
    std::fs::write(&capture, DEMO_CAPTURE)?;
    let config_path = dir.join("bridge.toml");
    std::fs::write(&config_path, DEMO_CONFIG)?;
    let mut cfg = Config::load(Some(&config_path)).map_err(|e| UsageError(e.to_string()))?;

    let sim = SimHandle::start("127.0.0.1:0".parse()?, demo_org(), SimLimits::default()).await?;
    attach_to_simulator(&mut cfg, &sim, &dir).await?;
    cfg.store.url = format!("sqlite://{}", dir.join("bridge.db").display());
    let token = std::env::var("AZB_HTTP_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| format!("demo-{:08x}", rand::random::<u32>()));
    cfg.http.token = Some(Secret::new(token.clone()));

    say!(
        "Zoho simulator: http://{} (an org with sample users, contacts and leads)",
        sim.addr
    );
    say!(
        "Replaying a recorded busy hour of an Asterisk 20 PBX (121 calls) into {}",
        dir.display()
    );
    let bridge = Bridge::start(&cfg).await.map_err(daemon_error)?;
    let stop = CancellationToken::new();
    let workers = bridge.delivery.spawn(stop.clone());
    let calls = replay_into(&bridge, &cfg, &capture, None).await?;
    let stats = drain(&bridge, 60.0).await?;
    stop.cancel();
    futures::future::join_all(workers).await;

    let records = sim.records("Calls");
    let linked = |k: &str| records.iter().filter(|r| r.get(k).is_some()).count();
    say!(
        "{calls} calls → {} Call activities created in Zoho ({} linked to a Contact, {} to a Lead), {} failed, {} pending",
        records.len(),
        linked("Who_Id"),
        linked("What_Id"),
        stats.failed,
        stats.pending
    );
    for r in records
        .iter()
        .filter(|r| r.get("Who_Id").is_some() || r.get("What_Id").is_some())
        .take(8)
    {
        say!(
            "  {:<58} {:<8} {}",
            r["Subject"].as_str().unwrap_or(""),
            r["Call_Type"].as_str().unwrap_or(""),
            r["Call_Start_Time"].as_str().unwrap_or("")
        );
    }
    if !serve {
        bridge.store.close().await;
        return Ok(());
    }
    let router =
        ami_zoho_bridge::http::router(&cfg, bridge.store.clone(), None).map_err(UsageError)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    say!(
        "Search page: http://{}/  (sign in with the token {token})",
        listener.local_addr()?
    );
    say!("Try a phone search for 333 158 8952 or 02 977 0838. Ctrl-C to stop.");
    let stop_http = CancellationToken::new();
    let server = tokio::spawn(ami_zoho_bridge::http::serve(
        listener,
        router,
        stop_http.clone(),
    ));
    ami_zoho_bridge::daemon::shutdown_signal().await;
    stop_http.cancel();
    let _ = server.await;
    bridge.store.close().await;
    Ok(())
}
