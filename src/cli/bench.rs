//! The `bench-*` commands: figures for the parser, the pipeline and delivery, printed on a last
//! line that scripts read.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use ami_zoho_bridge::ami::replay::Replay;
use ami_zoho_bridge::ami::AmiCodec;
use ami_zoho_bridge::calls::{self, Micros, Tracker};
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::zoho::sim::{self, SimHandle, SimLimits};

use super::deliver::{daemon_error, drain, replay_into};
use super::demo::attach_to_simulator;
use super::load_config;

pub(crate) fn bench_pipeline(
    file: &Path,
    config: Option<&Path>,
    rounds: u32,
) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let data = Replay::read_all(file).with_context(|| format!("reading {}", file.display()))?;
    let (last, seconds) = time_rounds(rounds, || pipeline_once(&data, &cfg))?;
    println!(
        "events={} calls={} seconds={seconds:.6} events_per_sec={:.0} peak_live_calls={}",
        last.events,
        last.calls,
        last.events as f64 / seconds,
        last.peak_live_calls
    );
    Ok(())
}

#[derive(Default)]
pub(crate) struct PipelineCount {
    events: u64,
    calls: u64,
    peak_live_calls: usize,
}

/// Codec and tracker over a capture in memory, fed 64 KiB at a time as a socket would.
pub(crate) fn pipeline_once(data: &[u8], cfg: &Config) -> anyhow::Result<PipelineCount> {
    let mut tracker = Tracker::new(cfg.calls.clone());
    let mut outputs = Vec::new();
    let mut count = PipelineCount::default();
    // As the daemon reads a PBX: events the tracker does not read are skimmed.
    each_message(data, calls::tracker_codec(), |m| {
        count.events += u64::from(m.event().is_some());
        tracker.on_message(m, Micros(0), &mut outputs);
        count.calls += super::deliver::finished_count(&outputs) as u64;
        outputs.clear();
    })?;
    tracker.finish(&mut outputs);
    count.calls += super::deliver::finished_count(&outputs) as u64;
    count.peak_live_calls = tracker.peak_live_calls();
    Ok(count)
}

/// Runs `work` once to warm up, then `rounds` times, and prints the spread of the rounds.
/// Returns the last result and the fastest round's seconds: on a shared machine other tenants
/// only ever add time to a round, so the fastest is the best estimate of what one core does;
/// the median and the slowest are printed beside it so the noise is visible.
pub(crate) fn time_rounds<T>(
    rounds: u32,
    mut work: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(T, f64)> {
    let mut result = work()?;
    let mut times = Vec::new();
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        result = work()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let (fastest, median, slowest) = (times[0], times[times.len() / 2], times[times.len() - 1]);
    println!(
        "rounds={} fastest_seconds={fastest:.6} median_seconds={median:.6} slowest_seconds={slowest:.6}",
        times.len()
    );
    Ok((result, fastest))
}

/// Feeds a capture in memory to `codec` 64 KiB at a time, as socket reads would, and hands
/// each message to `f`: what the benchmarks time is copying into the read buffer, framing
/// and parsing (and `f`), not the disk.
pub(crate) fn each_message(
    data: &[u8],
    mut codec: AmiCodec,
    mut f: impl FnMut(&ami_zoho_bridge::ami::Message),
) -> anyhow::Result<()> {
    use ami_zoho_bridge::ami::Frame;
    use tokio_util::codec::Decoder;
    let mut buf = bytes::BytesMut::with_capacity(128 * 1024);
    for chunk in data.chunks(64 * 1024) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf)? {
            if let Frame::Message(m) = frame {
                f(&m);
            }
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        if let Frame::Message(m) = frame {
            f(&m);
        }
    }
    Ok(())
}

pub(crate) fn bench_parse(file: &Path, rounds: u32, baseline: bool) -> anyhow::Result<()> {
    let data = Replay::read_all(file).with_context(|| format!("reading {}", file.display()))?;
    // The codec a live session uses, without skimming: every header of every message parsed.
    let count = |data: &[u8]| -> anyhow::Result<u64> {
        let mut events = 0u64;
        each_message(data, AmiCodec::default(), |m| {
            events += u64::from(m.event().is_some());
        })?;
        Ok(events)
    };
    let (events, seconds) = time_rounds(rounds, || count(&data))?;
    if baseline {
        // Reference point measured in the same run: split lines and count blank ones, no
        // parsing, no allocation. The parser's rate is best read relative to it.
        let mut best = f64::MAX;
        let mut blocks = 0u64;
        for _ in 0..rounds {
            let start = Instant::now();
            let mut last = 0usize;
            blocks = 0;
            for nl in memchr::memchr_iter(b'\n', &data) {
                let line = &data[last..nl];
                blocks += u64::from(line.is_empty() || line == b"\r");
                last = nl + 1;
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "baseline line-split loop: blocks={blocks} seconds={best:.6} blocks_per_sec={:.0}",
            blocks as f64 / best
        );
    }
    println!(
        "events={} bytes={} seconds={:.6} events_per_sec={:.0}",
        events,
        data.len(),
        seconds,
        events as f64 / seconds
    );
    Ok(())
}

/// How the simulated Zoho behaves in `bench-deliver`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ZohoLoad {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub concurrency: Option<usize>,
}

/// The `p` quantile of sorted values (0 when empty).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Milliseconds between pairs of µs timestamps, sorted.
fn spans_ms(pairs: Vec<(i64, i64)>) -> Vec<f64> {
    let mut v: Vec<f64> = pairs
        .into_iter()
        .map(|(a, b)| (b - a) as f64 / 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Call records in the simulator that are copies of another (same subject, start time and
/// description): what "delivered once" rules out.
fn duplicate_records(records: &[serde_json::Value]) -> usize {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|r| {
            let key = ["Subject", "Call_Start_Time", "Description", "Caller_ID"]
                .map(|k| r.get(k).map(ToString::to_string).unwrap_or_default());
            !seen.insert(key)
        })
        .count()
}

/// `bench-deliver`: the whole pipeline on a capture replayed at `speed` × its recorded pace,
/// into a local simulator (answering after `load`'s latency, with its concurrency cap) and a
/// scratch SQLite store. Prints, on its last line, the time from a call's finalisation to the
/// start of its Zoho request and to its record being stored (p50, p99), Zoho requests and
/// credits per activity, the 429s seen, and how many records Zoho holds and how many twice.
pub(crate) async fn bench_deliver(
    file: &Path,
    mut cfg: Config,
    speed: f64,
    load: ZohoLoad,
) -> anyhow::Result<()> {
    use ami_zoho_bridge::daemon::Bridge;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    let dir = std::env::temp_dir().join(format!("azb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let limits = SimLimits {
        latency: Duration::from_millis(load.latency_ms),
        jitter: Duration::from_millis(load.jitter_ms),
        concurrency: load.concurrency,
        ..SimLimits::default()
    };
    let sim = SimHandle::start("127.0.0.1:0".parse()?, sim::demo_seed(), limits).await?;
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
    let to_request = spans_ms(bridge.store.request_latencies().await?);
    let to_stored = spans_ms(bridge.store.delivery_latencies().await?);
    let apis = bridge.delivery.apis();
    let requests: u64 = apis.values().map(|a| a.requests_made()).sum();
    let credits: u64 = apis.values().map(|a| a.credits_spent()).sum();
    let throttled: u64 = apis.values().map(|a| a.throttled_seen()).sum();
    let sim_stats = sim.stats();
    let sizes = &sim_stats.insert_sizes;
    let insert_credits: u64 = sizes
        .iter()
        .map(|n| ami_zoho_bridge::zoho::credits::insert_cost(*n))
        .sum();
    let records = sim.records("Calls");
    let activities = stats.delivered.max(1) as f64;
    bridge.store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "calls={calls} activities={} failed={} pending={} seconds={elapsed:.1} speed={speed} finalisation_to_request_ms_p50={:.2} p99={:.2} max={:.2} zoho_requests={requests} requests_per_activity={:.2} finalisation_to_stored_ms_p50={:.2} finalisation_to_stored_ms_p99={:.2} finalisation_to_stored_ms_max={:.2} credits={credits} credits_per_activity={:.3} insert_credits={insert_credits} insert_credits_per_activity={:.3} zoho_credits={} inserts={} mean_insert_records={:.2} throttled_429={throttled} sim_429_concurrency={} sim_max_in_flight={} zoho_latency_ms={} zoho_concurrency={} zoho_records={} duplicates={}",
        stats.delivered,
        stats.failed,
        stats.pending,
        quantile(&to_request, 0.50),
        quantile(&to_request, 0.99),
        to_request.last().copied().unwrap_or(0.0),
        requests as f64 / activities,
        quantile(&to_stored, 0.50),
        quantile(&to_stored, 0.99),
        to_stored.last().copied().unwrap_or(0.0),
        credits as f64 / activities,
        insert_credits as f64 / activities,
        sim_stats.credits,
        sizes.len(),
        sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64,
        sim_stats.throttled_concurrency,
        sim_stats.max_in_flight,
        load.latency_ms,
        load.concurrency.map_or("none".to_string(), |c| c.to_string()),
        records.len(),
        duplicate_records(&records),
    );
    Ok(())
}
