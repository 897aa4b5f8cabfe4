//! `replay` and `watch`: a capture or a live AMI session, printed as events, calls or the
//! activities they would create.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use ami_zoho_bridge::ami::replay::Replay;
use ami_zoho_bridge::ami::{AmiClient, ClientConfig, SourceEvent};
use ami_zoho_bridge::calls::{self, Micros, Output, Tracker};
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::pipeline::Pipeline;

use super::load_config;
use super::{Emit, UsageError};

pub(crate) fn replay(file: &Path, config: Option<&Path>, emit: Emit) -> anyhow::Result<()> {
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
            (SourceEvent::Resync { items }, Emit::Events) => {
                for m in &items {
                    writeln!(out, "{}", m.to_json())?;
                }
            }
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
pub(crate) fn write_outputs(
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
