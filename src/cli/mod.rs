//! The `ami-zoho-bridge` command line: the clap definitions and the dispatch here, one file per
//! command group beside it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use ami_zoho_bridge::ami::{AuthMethod, ClientConfig};
use ami_zoho_bridge::calls::{self};
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::secret::Secret;

/// Where the package (and the README's manual install) puts the configuration.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/ami-zoho-bridge/bridge.toml";

mod agent;
mod bench;
mod bench_notify;
mod config;
mod deliver;
mod demo;
mod dial;
mod outbox;
mod phonebridge;
mod replay;
mod search;
mod zoho;

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
pub(crate) enum Emit {
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
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print an agent's personal link to the agent page (signed, expiring).
    AgentLink {
        /// The agent's e-mail (as in [agents]).
        email: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Zoho PhoneBridge: enable or disable the integration, list its users.
    Phonebridge {
        #[command(subcommand)]
        command: phonebridge::PhoneBridgeCommand,
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
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Inspect and retry the outbox (the records waiting for, sent to or refused by Zoho).
    Outbox {
        #[arg(long, default_value = DEFAULT_CONFIG, global = true)]
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
        #[arg(long, value_name = "SECS", value_parser = ami_zoho_bridge::ops::parse_idle_seconds)]
        idle_exit: Option<Duration>,
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
    /// Click-to-dial from the command line: the agent's phone rings, then NUMBER is dialled.
    /// Every guard rail applies; prints one JSON line per step; exit 0 when the far end answered.
    Dial {
        /// The agent's e-mail (known through [agents] or [click_to_dial] extensions).
        #[arg(long)]
        agent: String,
        /// The number to call, in any written form.
        number: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
        /// The simulated Zoho's time to answer each CRM request, in milliseconds.
        #[arg(long, default_value_t = 0)]
        zoho_latency_ms: u64,
        /// Up to this many milliseconds more, at random.
        #[arg(long, default_value_t = 0)]
        zoho_jitter_ms: u64,
        /// The simulated edition's cap on requests in flight (429 past it).
        #[arg(long)]
        zoho_concurrency: Option<usize>,
    },
    /// A capture replayed live into a local PhoneBridge: AMI event → notification latency.
    BenchNotify {
        file: PathBuf,
        #[arg(long)]
        config: PathBuf,
        /// Multiple of the recorded pace.
        #[arg(long, default_value_t = 1.0)]
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
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check an account: token, administrator, users, and every endpoint the bridge uses.
    Test {
        #[arg(long)]
        account: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file: every key, template and trigger; exit 2 naming the key.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
pub(crate) enum OutboxCommand {
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
pub(crate) enum StateArg {
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
pub(crate) struct UsageError(pub(crate) String);

pub fn main() -> ExitCode {
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
            runtime.block_on(deliver::replay_deliver(&file, cfg, speed, wait))
        }
        Command::Replay {
            file, config, emit, ..
        } => replay::replay(&file, config.as_deref(), emit),
        Command::Run { config } => {
            let cfg = load_config(Some(&config))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime
                .block_on(ami_zoho_bridge::daemon::run(cfg))
                .map_err(deliver::daemon_error)
        }
        Command::Demo {
            dir,
            listen,
            no_serve,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(demo::demo(dir, listen, !no_serve))
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config::config_check(&file),
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
            runtime.block_on(search::search(&cfg, &filters, json))
        }
        Command::Outbox { config, command } => {
            let cfg = load_config(Some(&config))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(outbox::outbox(&cfg, command))
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
                    runtime.block_on(zoho::authorize(&cfg, &account, &code))
                }
                ZohoCommand::Test { account, config } => {
                    let cfg = load_config(Some(&config))?;
                    runtime.block_on(zoho::test(&cfg, &account))
                }
            }
        }
        Command::AgentLink { email, config } => {
            let cfg = load_config(Some(&config))?;
            agent::agent_link(&cfg, &email)
        }
        Command::Phonebridge { command } => {
            let cfg = load_config(Some(command.config()))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(phonebridge::phonebridge(&cfg, command))
        }
        Command::ZohoSim { listen, seed } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(zoho::run_sim(listen, seed.as_deref()))
        }
        Command::Dial {
            agent,
            number,
            config,
        } => {
            let cfg = load_config(Some(&config))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(dial::dial(&cfg, &agent, &number))
        }
        Command::BenchPipeline {
            file,
            config,
            rounds,
        } => bench::bench_pipeline(&file, config.as_deref(), rounds),
        Command::BenchDeliver {
            file,
            config,
            speed,
            zoho_latency_ms,
            zoho_jitter_ms,
            zoho_concurrency,
        } => {
            let cfg = load_config(Some(&config))?;
            let load = bench::ZohoLoad {
                latency_ms: zoho_latency_ms,
                jitter_ms: zoho_jitter_ms,
                concurrency: zoho_concurrency,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(bench::bench_deliver(&file, cfg, speed, load))
        }
        Command::BenchNotify {
            file,
            config,
            speed,
        } => {
            let cfg = load_config(Some(&config))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(bench_notify::bench_notify(&file, cfg, speed))
        }
        Command::BenchParse {
            file,
            rounds,
            baseline,
        } => bench::bench_parse(&file, rounds, baseline),
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
                // Calls are rebuilt across logins from the PBX's own channel and queue lists.
                cfg.resync = true;
            }
            cfg.auth = match auth {
                AuthArg::Plain => AuthMethod::Plain,
                AuthArg::Md5 => AuthMethod::Md5,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(replay::watch(cfg, &bridge, emit, idle_exit))
        }
    }
}

pub(crate) fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| UsageError(e.to_string()).into())
}
