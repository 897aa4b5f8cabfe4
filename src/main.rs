//! The `ami-zoho-bridge` command line.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use ami_zoho_bridge::ami::replay::Replay;
use ami_zoho_bridge::ami::{AmiClient, AmiCodec, AuthMethod, ClientConfig, SourceEvent};
use ami_zoho_bridge::calls::{self, Micros, Output, Tracker};
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::pipeline::Pipeline;
use ami_zoho_bridge::secret::Secret;

mod commands;

#[derive(Parser)]
#[command(
    name = "ami-zoho-bridge",
    version,
    about = "Asterisk calls (AMI) in, Zoho CRM Call activities out"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Emit {
    /// One JSON object per AMI message: {"event": name, "headers": [[k, v], ...]}.
    Events,
    /// One JSON object per finished call, in end order.
    Calls,
    /// One JSON object per Zoho record a matching trigger would send (dry run, no Zoho).
    Activities,
}

#[derive(Subcommand)]
enum Command {
    /// The one-command demo: a local Zoho, a recorded busy hour through the whole pipeline
    /// into SQLite, a summary, then the search page until Ctrl-C. No PBX or Zoho account.
    Demo {
        /// Where the demo's database and files go (default: a new temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Address of the search page.
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: std::net::SocketAddr,
        /// Print the summary and exit instead of serving the page.
        #[arg(long)]
        no_serve: bool,
    },
    /// Replay a recorded AMI capture (raw bytes, banner included) through the pipeline.
    Replay {
        /// The capture file (raw bytes, or .gz).
        file: PathBuf,
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// What to print, one JSON object per line.
        #[arg(long, value_enum, default_value_t = Emit::Events)]
        emit: Emit,
        /// Run the full pipeline instead: store (store.url), triggers, delivery to Zoho.
        #[arg(long, requires = "config")]
        deliver: bool,
        /// With --deliver: replay at this multiple of the recorded pace (default: as fast as possible).
        #[arg(long, value_name = "X")]
        speed: Option<f64>,
        /// With --deliver: after the capture, wait at most this long for the outbox to drain.
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        wait: f64,
    },
    /// Run the bridge: read every [[pbx]], store calls, deliver to Zoho, until SIGTERM/SIGINT.
    Run {
        #[arg(long, default_value = "ami-zoho-bridge.toml")]
        config: PathBuf,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Find stored calls by the Contact's or Lead's phone (any written form) or the user's e-mail.
    Search {
        /// Calls linked to a Contact with this number.
        #[arg(long)]
        contact_phone: Option<String>,
        /// Calls linked to a Lead with this number.
        #[arg(long)]
        lead_phone: Option<String>,
        /// Calls owned by this Zoho user (or handled by this agent's e-mail).
        #[arg(long)]
        user_email: Option<String>,
        /// Calls with this far-end number, linked or not.
        #[arg(long)]
        phone: Option<String>,
        /// Ended at or after (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Ended before the end of (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// One JSON object per call instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "ami-zoho-bridge.toml")]
        config: PathBuf,
    },
    /// Inspect and retry the outbox (the records waiting for, sent to or refused by Zoho).
    Outbox {
        #[arg(long, default_value = "ami-zoho-bridge.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Connect to a live AMI and print what arrives, across reconnects. Secret from AMI_SECRET.
    Watch {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 5038)]
        port: u16,
        #[arg(long)]
        username: String,
        /// Login method.
        #[arg(long, value_enum, default_value_t = AuthArg::Md5)]
        auth: AuthArg,
        #[arg(long, value_enum, default_value_t = Emit::Events)]
        emit: Emit,
        /// Exit after this many seconds without traffic.
        #[arg(long, value_name = "SECS")]
        idle_exit: Option<f64>,
        /// Configuration for `--emit calls` (trunk and agent contexts, routes ...).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Zoho account commands (Self Client authorisation, account check).
    Zoho {
        #[command(subcommand)]
        command: ZohoCommand,
    },
    /// Run the local Zoho simulator (OAuth + CRM), for demos and manual trials.
    ZohoSim {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// Org data (users, contacts, leads, clients) as JSON; a demo org by default.
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// Run a capture through parser and call tracker as fast as possible and print the rate.
    BenchPipeline {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run the capture this many times (after one warm-up pass); the fastest round gives
        /// the rate, the median and slowest are printed too.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Replay a capture at a multiple of its pace through the whole pipeline into a local
    /// Zoho simulator and a scratch store; print delivery latency and requests per activity.
    BenchDeliver {
        file: PathBuf,
        #[arg(long)]
        config: PathBuf,
        /// Multiple of the recorded pace.
        #[arg(long, default_value_t = 10.0)]
        speed: f64,
    },
    /// Parse a capture as fast as possible and print the rate (a benchmark, not a test).
    BenchParse {
        file: PathBuf,
        /// Parse the file this many times (after one warm-up pass); the fastest round gives
        /// the rate, the median and slowest are printed too.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Also time a plain line-splitting loop over the same bytes, for reference.
        #[arg(long)]
        baseline: bool,
    },
}

#[derive(Subcommand)]
enum ZohoCommand {
    /// Exchange a Self Client grant code for a refresh token and store it.
    Authorize {
        #[arg(long)]
        account: String,
        /// The one-time grant code from the Self Client's "Generate Code" tab.
        #[arg(long)]
        code: String,
        #[arg(long, default_value = "ami-zoho-bridge.toml")]
        config: PathBuf,
    },
    /// Check an account: token, administrator, users, and every endpoint the bridge uses.
    Test {
        #[arg(long)]
        account: String,
        #[arg(long, default_value = "ami-zoho-bridge.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file: every key, template and trigger; exit 2 naming the key.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Rows, newest first.
    List {
        /// Only rows in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per row instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One row in full, with the record that is (or was) sent.
    Show { id: i64 },
    /// Send failed rows again: one by id, or all with --all-failed.
    Retry {
        #[arg(required_unless_present = "all_failed")]
        id: Option<i64>,
        #[arg(long)]
        all_failed: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    Pending,
    Delivered,
    Failed,
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthArg {
    Plain,
    Md5,
}

/// A usage or configuration problem: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its story on stdout; per-call log lines would drown it.
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.log_format, default_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay {
            file,
            config,
            deliver: true,
            speed,
            wait,
            ..
        } => {
            let cfg = load_config(config.as_deref())?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(commands::replay_deliver(&file, cfg, speed, wait))
        }
        Command::Replay {
            file, config, emit, ..
        } => replay(&file, config.as_deref(), emit),
        Command::Run { config } => {
            let cfg = load_config(Some(&config))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime
                .block_on(ami_zoho_bridge::daemon::run(cfg))
                .map_err(commands::daemon_error)
        }
        Command::Demo {
            dir,
            listen,
            no_serve,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(commands::demo(dir, listen, !no_serve))
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => commands::config_check(&file),
        Command::Search {
            contact_phone,
            lead_phone,
            user_email,
            phone,
            from,
            to,
            page,
            json,
            config,
        } => {
            let cfg = load_config(Some(&config))?;
            let filters = ami_zoho_bridge::http::Filters {
                contact_phone,
                lead_phone,
                user_email,
                phone,
                from,
                to,
                page: Some(page),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(commands::search(&cfg, &filters, json))
        }
        Command::Outbox { config, command } => {
            let cfg = load_config(Some(&config))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(outbox(&cfg, command))
        }
        Command::Zoho { command } => {
            let runtime = tokio::runtime::Runtime::new()?;
            match command {
                ZohoCommand::Authorize {
                    account,
                    code,
                    config,
                } => {
                    let cfg = load_config(Some(&config))?;
                    runtime.block_on(commands::authorize(&cfg, &account, &code))
                }
                ZohoCommand::Test { account, config } => {
                    let cfg = load_config(Some(&config))?;
                    runtime.block_on(commands::test(&cfg, &account))
                }
            }
        }
        Command::ZohoSim { listen, seed } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(commands::run_sim(listen, seed.as_deref()))
        }
        Command::BenchPipeline {
            file,
            config,
            rounds,
        } => bench_pipeline(&file, config.as_deref(), rounds),
        Command::BenchDeliver {
            file,
            config,
            speed,
        } => {
            let cfg = load_config(Some(&config))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(commands::bench_deliver(&file, cfg, speed))
        }
        Command::BenchParse {
            file,
            rounds,
            baseline,
        } => bench_parse(&file, rounds, baseline),
        Command::Watch {
            host,
            port,
            username,
            auth,
            emit,
            idle_exit,
            config,
        } => {
            let bridge = load_config(config.as_deref())?;
            let secret = std::env::var("AMI_SECRET").map_err(|_| {
                UsageError("set the AMI secret in the environment variable AMI_SECRET".into())
            })?;
            let mut cfg = ClientConfig::new(host, port, username, Secret::new(secret));
            if emit != Emit::Events {
                cfg.skim = Some(calls::skimmable);
            }
            cfg.auth = match auth {
                AuthArg::Plain => AuthMethod::Plain,
                AuthArg::Md5 => AuthMethod::Md5,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(watch(
                cfg,
                &bridge,
                emit,
                idle_exit.map(Duration::from_secs_f64),
            ))
        }
    }
}

async fn outbox(cfg: &Config, command: OutboxCommand) -> anyhow::Result<()> {
    use ami_zoho_bridge::store::{OutboxState, Store};
    let store = Store::open(&cfg.store.url).await?;
    let mut out = io::stdout().lock();
    match command {
        OutboxCommand::List { state, limit, json } => {
            let state = state.map(|s| match s {
                StateArg::Pending => OutboxState::Pending,
                StateArg::Delivered => OutboxState::Delivered,
                StateArg::Failed => OutboxState::Failed,
            });
            let rows = store.outbox_list(state, limit).await?;
            if json {
                for r in &rows {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                }
            } else {
                writeln!(
                    out,
                    "{:>6}  {:<9}  {:>3}  {:<22}  {:<24}  {:<20}  last error",
                    "id", "state", "try", "linkedid", "trigger", "zoho id"
                )?;
                for r in &rows {
                    writeln!(
                        out,
                        "{:>6}  {:<9}  {:>3}  {:<22}  {:<24}  {:<20}  {}",
                        r.id,
                        r.state,
                        r.attempts,
                        r.linkedid,
                        r.trigger,
                        r.zoho_id.as_deref().unwrap_or("-"),
                        r.last_error.as_deref().unwrap_or("")
                    )?;
                }
            }
        }
        OutboxCommand::Show { id } => match store.outbox_show(id).await? {
            Some(r) => writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?,
            None => return Err(UsageError(format!("no outbox row {id}")).into()),
        },
        OutboxCommand::Retry { id, all_failed } => {
            let n = store
                .outbox_retry(if all_failed { None } else { id })
                .await?;
            writeln!(out, "{n} row(s) queued again")?;
        }
    }
    store.close().await;
    Ok(())
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| UsageError(e.to_string()).into())
}

fn replay(file: &Path, config: Option<&Path>, emit: Emit) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let mut replay =
        Replay::open(file).with_context(|| format!("opening capture {}", file.display()))?;
    if emit != Emit::Events {
        // Calls and activities come from the tracker alone: skim what it does not read.
        replay = replay.with_codec(calls::tracker_codec());
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut tracker = Tracker::new(cfg.calls.clone());
    let renderer = match emit {
        Emit::Activities => Some(Pipeline::new(&cfg).map_err(UsageError)?),
        _ => None,
    };
    let mut outputs = Vec::new();
    for event in replay {
        match (event?, emit) {
            (SourceEvent::Message(m), Emit::Events) => writeln!(out, "{}", m.to_json())?,
            (_, Emit::Events) => {}
            (ev, _) => tracker.feed(&ev, Micros(0), &mut outputs),
        }
        write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
    }
    if emit != Emit::Events {
        tracker.finish(&mut outputs);
        write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
    }
    out.flush()?;
    Ok(())
}

/// Finished calls as JSON lines, or with a renderer, the activities they would create.
fn write_outputs(
    out: &mut impl Write,
    outputs: &mut Vec<Output>,
    renderer: Option<&Pipeline>,
) -> anyhow::Result<()> {
    for o in outputs.drain(..) {
        if let Output::Finished(call) = o {
            match renderer {
                None => writeln!(out, "{}", serde_json::to_string(&call)?)?,
                Some(r) => {
                    for line in r.dry_run(&call).map_err(anyhow::Error::msg)? {
                        writeln!(out, "{line}")?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn bench_pipeline(file: &Path, config: Option<&Path>, rounds: u32) -> anyhow::Result<()> {
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
struct PipelineCount {
    events: u64,
    calls: u64,
    peak_live_calls: usize,
}

/// Codec and tracker over a capture in memory, fed 64 KiB at a time as a socket would.
fn pipeline_once(data: &[u8], cfg: &Config) -> anyhow::Result<PipelineCount> {
    let mut tracker = Tracker::new(cfg.calls.clone());
    let mut outputs = Vec::new();
    let mut count = PipelineCount::default();
    // As the daemon reads a PBX: events the tracker does not read are skimmed.
    each_message(data, calls::tracker_codec(), |m| {
        count.events += u64::from(m.event().is_some());
        tracker.on_message(m, Micros(0), &mut outputs);
        count.calls += commands::finished_count(&outputs) as u64;
        outputs.clear();
    })?;
    tracker.finish(&mut outputs);
    count.calls += commands::finished_count(&outputs) as u64;
    count.peak_live_calls = tracker.peak_live_calls();
    Ok(count)
}

async fn watch(
    cfg: ClientConfig,
    bridge: &Config,
    emit: Emit,
    idle_exit: Option<Duration>,
) -> anyhow::Result<()> {
    let (_client, mut events) = AmiClient::connect(cfg).await?;
    let mut out = io::stdout();
    let mut tracker = Tracker::new(bridge.calls.clone());
    let renderer = match emit {
        Emit::Activities => Some(Pipeline::new(bridge).map_err(UsageError)?),
        _ => None,
    };
    let mut outputs = Vec::new();
    // A call is finished a grace period after its last hang-up: on a quiet PBX no event comes
    // to say so, so the tracker is ticked on the PBX's clock (the last event's Timestamp plus
    // the wall time since), as the daemon does.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pbx_clock: Option<(Micros, Instant)> = None;
    let mut last_traffic = Instant::now();
    loop {
        let idle = async {
            match idle_exit {
                Some(idle) => tokio::time::sleep_until((last_traffic + idle).into()).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            e = events.recv() => e,
            _ = idle => {
                let idle = idle_exit.unwrap_or_default();
                tracing::info!(idle_seconds = idle.as_secs_f64(), "no AMI traffic: exiting");
                return Ok(());
            }
            _ = tick.tick(), if emit != Emit::Events => {
                let now = match pbx_clock {
                    Some((ts, at)) => {
                        let elapsed = i64::try_from(at.elapsed().as_micros()).unwrap_or(i64::MAX);
                        Micros(ts.0.saturating_add(elapsed))
                    }
                    // Without `timestampevents` the tracker runs on arrival times.
                    None => Micros(jiff::Timestamp::now().as_microsecond()),
                };
                tracker.tick(now, &mut outputs);
                write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
                out.flush()?;
                continue;
            }
        };
        last_traffic = Instant::now();
        if let Some(SourceEvent::Message(m)) = &next {
            if let Some(ts) = m.get("Timestamp").and_then(Micros::parse_epoch) {
                pbx_clock = Some((ts, Instant::now()));
            }
        }
        match next {
            None => return Ok(()),
            Some(SourceEvent::Message(m)) if emit == Emit::Events => {
                writeln!(out, "{}", m.to_json())?;
                out.flush()?;
            }
            Some(ev) => {
                if !matches!(ev, SourceEvent::Message(_)) {
                    tracing::info!(?ev, "AMI session");
                }
                if emit != Emit::Events {
                    let now = Micros(jiff::Timestamp::now().as_microsecond());
                    tracker.feed(&ev, now, &mut outputs);
                    write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
                    out.flush()?;
                }
            }
        }
    }
}

/// Runs `work` once to warm up, then `rounds` times, and prints the spread of the rounds.
/// Returns the last result and the fastest round's seconds: on a shared machine other tenants
/// only ever add time to a round, so the fastest is the best estimate of what one core does;
/// the median and the slowest are printed beside it so the noise is visible.
fn time_rounds<T>(
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
fn each_message(
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

fn bench_parse(file: &Path, rounds: u32, baseline: bool) -> anyhow::Result<()> {
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
