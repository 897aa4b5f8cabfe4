//! `replay` and `watch`: a capture or a live AMI session, printed as events, calls or the
//! activities they would create.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use ami_zoho_bridge::ami::replay::Replay;
use ami_zoho_bridge::ami::{AmiClient, ClientConfig, SourceEvent};
use ami_zoho_bridge::calls::{self, Micros, Output, Tracker};
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::pipeline::Pipeline;

use super::load_config;
use super::{Emit, UsageError};

/// Messages held back until the input shows it is AMI (a banner, or a message with an
/// `Event` or `Response` header); past this many without one it is not a capture.
const PROBE_MESSAGES: usize = 256;

pub(crate) fn replay(file: &Path, config: Option<&Path>, emit: Emit) -> anyhow::Result<()> {
    if emit == Emit::Activities && config.is_none() {
        return Err(UsageError(
            "--emit activities needs --config FILE: the triggers and templates come from it".into(),
        )
        .into());
    }
    let cfg = load_config(config)?;
    if file.is_dir() {
        anyhow::bail!("{} is a directory, not a capture file", file.display());
    }
    let gz = file.extension().is_some_and(|e| e == "gz");
    // The cause once: the reader's error already says what went wrong.
    let read_error = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "reading capture {}{}: {e}",
            file.display(),
            if gz { " (gzip data)" } else { "" }
        )
    };
    let mut replay = Replay::open(file).map_err(|e| read_error(&e))?;
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
    let mut counts = Counts::default();
    // Until the input proves to be AMI, nothing is printed.
    let mut held: Vec<SourceEvent> = Vec::new();
    let mut is_ami = false;
    for event in replay {
        let event = event.map_err(|e| match e {
            ami_zoho_bridge::ami::AmiError::Io(io) => read_error(&io),
            other => read_error(&other),
        })?;
        if !is_ami {
            is_ami = match &event {
                SourceEvent::Connected { banner } => banner.starts_with("Asterisk Call Manager"),
                SourceEvent::Message(m) => m.get("Event").is_some() || m.get("Response").is_some(),
                _ => false,
            };
            held.push(event);
            if !is_ami {
                if held.len() > PROBE_MESSAGES {
                    break;
                }
                continue;
            }
            for ev in held.drain(..) {
                counts.feed(ev, emit, &mut tracker, &mut outputs, &mut out)?;
                counts.calls += write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
            }
            continue;
        }
        counts.feed(event, emit, &mut tracker, &mut outputs, &mut out)?;
        counts.calls += write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
    }
    if !is_ami {
        let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if bytes == 0 {
            anyhow::bail!("{} is empty: no AMI capture to replay", file.display());
        }
        anyhow::bail!(
            "{} is not an AMI capture: no 'Asterisk Call Manager' banner and no message with an Event or Response header",
            file.display()
        );
    }
    if emit != Emit::Events {
        tracker.finish(&mut outputs);
        counts.calls += write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
    }
    out.flush()?;
    let what = match emit {
        Emit::Events => format!("{} events", counts.events),
        _ => format!("{} events, {} calls", counts.events, counts.calls),
    };
    if counts.events == 0 {
        eprintln!("warning: {} holds a banner and 0 events", file.display());
    } else {
        eprintln!("replayed {}: {what}", file.display());
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    events: u64,
    calls: usize,
}

impl Counts {
    fn feed(
        &mut self,
        event: SourceEvent,
        emit: Emit,
        tracker: &mut Tracker,
        outputs: &mut Vec<Output>,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        if matches!(event, SourceEvent::Message(_)) {
            self.events += 1;
        }
        match (event, emit) {
            (SourceEvent::Message(m), Emit::Events) => writeln!(out, "{}", m.to_json())?,
            // The resync lists are messages of the stream too: `events` prints every one.
            (SourceEvent::Resync { items }, Emit::Events) => {
                for m in &items {
                    writeln!(out, "{}", m.to_json())?;
                }
            }
            (_, Emit::Events) => {}
            (ev, _) => tracker.feed(&ev, Micros(0), outputs),
        }
        Ok(())
    }
}

/// Finished calls as JSON lines, or with a renderer, the activities they would create.
pub(crate) fn write_outputs(
    out: &mut impl Write,
    outputs: &mut Vec<Output>,
    renderer: Option<&Pipeline>,
) -> anyhow::Result<usize> {
    let mut calls = 0;
    for o in outputs.drain(..) {
        if let Output::Finished(call) = o {
            calls += 1;
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
    Ok(calls)
}

pub(crate) async fn watch(
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
    // PBX time for what has no Timestamp: wall time plus the offset the stream shows.
    let mut clock = ami_zoho_bridge::daemon::StreamClock::default();
    // A call is finished a grace period after its last hang-up: on a quiet PBX no event comes
    // to say so, so the tracker is ticked on the PBX's clock, as the daemon does.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_traffic = tokio::time::Instant::now();
    loop {
        let idle = async {
            match idle_exit {
                Some(idle) => tokio::time::sleep_until(last_traffic + idle).await,
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
            _ = tick.tick(), if emit != Emit::Events && clock.is_known() => {
                tracker.tick(clock.now(), &mut outputs);
                write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
                out.flush()?;
                continue;
            }
        };
        last_traffic = tokio::time::Instant::now();
        match next {
            None => return Ok(()),
            Some(SourceEvent::Message(m)) if emit == Emit::Events => {
                writeln!(out, "{}", m.to_json())?;
                out.flush()?;
            }
            Some(ev) => {
                match &ev {
                    SourceEvent::Message(m) => clock.observe(m),
                    SourceEvent::Resync { items } => {
                        tracing::info!(items = items.len(), "AMI resync lists")
                    }
                    other => tracing::info!(?other, "AMI session"),
                }
                if emit != Emit::Events {
                    tracker.feed(&ev, clock.now(), &mut outputs);
                    write_outputs(&mut out, &mut outputs, renderer.as_ref())?;
                    out.flush()?;
                }
            }
        }
    }
}
