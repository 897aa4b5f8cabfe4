//! `demo`: the whole bridge on a bundled busy hour against a local Zoho, with no PBX and no
//! Zoho account.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::zoho::oauth::OAuth;
use ami_zoho_bridge::zoho::sim::{self, SimHandle, SimLimits};

use super::deliver::{daemon_error, drain, replay_into};
use super::zoho::http_client;
use super::UsageError;

/// The capture and lab configuration `demo` runs, built into the binary so it works anywhere.
pub(crate) const DEMO_CAPTURE: &[u8] =
    include_bytes!("../../fixtures/ami-sip/busyhour-seed11.ami.gz");
pub(crate) const DEMO_CONFIG: &str = include_str!("../../fixtures/ami-sip/bridge.toml");
/// The client secret of the simulated Self Clients of `demo` and `bench-deliver`.
pub(crate) const SIM_CLIENT_SECRET: &str = "simulated-client-secret";

/// The demo org: the simulator's sample users, contacts and leads, plus a few callers of the
/// bundled busy hour, written the way people type numbers.
pub(crate) fn demo_org() -> sim::Seed {
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
pub(crate) async fn attach_to_simulator(
    cfg: &mut Config,
    sim: &SimHandle,
    dir: &Path,
) -> anyhow::Result<()> {
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

/// Removes the demo's temporary folder when the demo ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

pub(crate) async fn demo(
    dir: Option<PathBuf>,
    listen: SocketAddr,
    serve: bool,
) -> anyhow::Result<()> {
    use ami_zoho_bridge::daemon::Bridge;
    use ami_zoho_bridge::secret::Secret;
    use tokio_util::sync::CancellationToken;

    // The page's port first: a busy one is found before the hour is replayed, not after.
    let listener = if serve {
        Some(tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            UsageError(format!(
                "cannot listen on {listen} for the search page: {e}; pick another address with --listen 127.0.0.1:8099 (or --no-serve)"
            ))
        })?)
    } else {
        None
    };
    // A folder of our own is removed when the demo ends; one given with --dir is kept.
    let _cleanup;
    let owned = dir.is_none();
    let dir = match dir {
        Some(d) => d,
        None => {
            let d =
                std::env::temp_dir().join(format!("ami-zoho-bridge-demo-{}", std::process::id()));
            _cleanup = RemoveOnDrop(d.clone());
            d
        }
    };
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
        "Zoho simulator: http://{} (an org with sample users, contacts and leads; Self Client {} / {SIM_CLIENT_SECRET})",
        sim.addr,
        cfg.zoho.accounts.values().map(|a| a.client_id.as_str()).next().unwrap_or("-")
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
    let Some(listener) = listener else {
        bridge.store.close().await;
        return Ok(());
    };
    let router =
        ami_zoho_bridge::http::router(&cfg, bridge.store.clone(), None).map_err(UsageError)?;
    say!(
        "Search page: http://{}/  (sign in with the token {token})",
        listener.local_addr()?
    );
    say!(
        "Try a phone search for 333 158 8952 (a Contact) or 02 977 0838 (a Lead). Ctrl-C to stop."
    );
    if owned {
        say!(
            "The demo's folder {} is removed when it stops (--dir DIR keeps one).",
            dir.display()
        );
    }
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
