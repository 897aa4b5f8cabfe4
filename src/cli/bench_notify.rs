//! `bench-notify`: a capture replayed live (at `--speed` × its recorded pace) through the
//! tracker and the real-time path into a local simulator's PhoneBridge. Prints, on its last
//! line, the time from an AMI event's arrival to its notification leaving the bridge (the
//! PhoneBridge request sent and answered: an upper bound), p50, p99 and max.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use ami_zoho_bridge::config::{AccountConfig, Config};
use ami_zoho_bridge::notify::config::PhoneBridgeConfig;
use ami_zoho_bridge::secret::Secret;
use ami_zoho_bridge::zoho::oauth::OAuth;
use ami_zoho_bridge::zoho::phonebridge::{PhoneBridge, PHONEBRIDGE_SCOPES};
use ami_zoho_bridge::zoho::sim::{self, SimClient, SimHandle, SimLimits, SimUser};

const CLIENT: &str = "1000.BENCHPHONEBRIDGE";
const SECRET: &str = "bench-phonebridge-secret";

pub(crate) async fn bench_notify(file: &Path, mut cfg: Config, speed: f64) -> anyhow::Result<()> {
    use ami_zoho_bridge::ami::replay::Replay;
    use ami_zoho_bridge::ami::SourceEvent;
    use ami_zoho_bridge::calls::{Micros, Output};

    let dir = std::env::temp_dir().join(format!("azb-bench-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Every agent of the configuration is a PhoneBridge user of the simulated org.
    let mut seed = sim::demo_seed();
    let mut emails: Vec<String> = cfg
        .agents
        .values()
        .map(|e| e.to_ascii_lowercase())
        .collect();
    emails.sort();
    emails.dedup();
    for (i, email) in emails.iter().enumerate() {
        if !seed
            .users
            .iter()
            .any(|u| u.email.eq_ignore_ascii_case(email))
        {
            seed.users.push(SimUser {
                id: format!("57257670000009{:05}", i),
                email: email.clone(),
                full_name: email.clone(),
                active: true,
            });
        }
    }
    seed.clients.push(SimClient {
        client_id: CLIENT.into(),
        client_secret: SECRET.into(),
    });
    let sim = SimHandle::start("127.0.0.1:0".parse()?, seed, SimLimits::default()).await?;
    let acc = AccountConfig {
        accounts_url: Some(sim.url("eu")),
        api_domain: Some(sim.url("eu")),
        client_id: CLIENT.into(),
        client_secret: Some(Secret::new(SECRET)),
        token_file: Some(dir.join("pb-tokens.json")),
        phone_index: false,
        ..AccountConfig::default()
    };
    let oauth = Arc::new(OAuth::new("bench-pb", &acc, reqwest::Client::new())?);
    oauth
        .exchange_code(&sim.grant_code(CLIENT, "eu", PHONEBRIDGE_SCOPES, None))
        .await?;
    PhoneBridge::new(oauth, Duration::from_secs(5))?
        .integrate(true)
        .await?;
    let mut pb = cfg
        .zoho
        .phonebridge
        .clone()
        .unwrap_or_else(|| PhoneBridgeConfig {
            agent_number: "+39069999{ext}".into(),
            ..PhoneBridgeConfig::default()
        });
    pb.account = "bench-pb".into();
    pb.log_calls = true;
    cfg.zoho.accounts.insert("bench-pb".into(), acc);
    cfg.zoho.phonebridge = Some(pb);
    let stop = tokio_util::sync::CancellationToken::new();
    let notify = ami_zoho_bridge::notify::from_config(&cfg, stop.clone())?;
    // Let the worker read the user list first (it does at start), as a running bridge has.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut live = ami_zoho_bridge::notify::Live::new(notify.clone());
    let replay = Replay::open(file)
        .with_context(|| format!("opening capture {}", file.display()))?
        .with_codec(ami_zoho_bridge::calls::tracker_codec());
    let mut tracker = ami_zoho_bridge::daemon::tracker_for(&cfg);
    let mut outputs = Vec::new();
    let pace = Some(speed).filter(|s| s.is_finite() && *s > 0.0);
    let started = Instant::now();
    let mut first_ts: Option<i64> = None;
    let mut calls = 0usize;
    let count = |o: &[Output]| {
        o.iter()
            .filter(|o| matches!(o, Output::Finished(_)))
            .count()
    };
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
            tracker.feed(&event, Micros(0), &mut outputs);
            live.message(m, &outputs);
        } else {
            tracker.feed(&event, Micros(0), &mut outputs);
        }
        live.finished(&outputs);
        calls += count(&outputs);
        outputs.clear();
    }
    tracker.finish(&mut outputs);
    live.finished(&outputs);
    calls += count(&outputs);
    // The last notifications leave.
    let until = Instant::now() + Duration::from_secs(60);
    while !notify.idle() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let (mut lat, sent, dropped, failed, lost) = {
        let s = notify
            .stats
            .lock()
            .map_err(|_| anyhow::anyhow!("statistics poisoned"))?;
        (
            s.latencies_ms.clone(),
            s.sent,
            s.dropped_ringing,
            s.failed,
            s.lost,
        )
    };
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "calls={calls} speed={speed} seconds={:.1} sent={sent} dropped_ringing={dropped} failed={failed} lost={lost} notifications_per_call={:.2} zoho_phonebridge_requests={}",
        started.elapsed().as_secs_f64(),
        sent as f64 / calls.max(1) as f64,
        sim.phonebridge_requests()
    );
    println!(
        "notifications={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
