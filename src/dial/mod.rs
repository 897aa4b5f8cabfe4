//! Click-to-dial and call control: one service every click source goes through (Zoho
//! PhoneBridge's callback in [`http`], the agent page, the `dial` command).
//!
//! A click passes the guard rails of [`guard`] (a known agent, a number that normalises to
//! E.164 and passes allow / deny / premium-rate, the per-agent and global rate limits), then
//! becomes exactly one AMI `Originate` (`Async: true`): the agent's phone rings first, and
//! once it answers the PBX dials the number in the configured context. Every click leaves
//! one audit line (`target: "azb::audit"`) with who, what number and the result, and its
//! outcome a second one; `/metrics` counts both.
//!
//! The outcome is read from the AMI stream by [`book`]: the daemon (or the `dial` command)
//! hands every message to [`DialService::observe`]. Failures (the agent's phone not answered
//! or busy, the far end busy or not answering, the PBX refusing) go to a
//! [`ClickReporter`](report::ClickReporter), which for Zoho posts `clicktodialerror`.
//! Nothing is ever retried on its own: a second ring is the agent's call.
//!
//! The call this creates carries the channel variable `[click_to_dial] variable` (`CTD_ID`)
//! with the click id; the tracker reads its `VarSet` to link the call to the click
//! ([`DialService::click_info`]: agent, number, Zoho user and record;
//! [`DialService::call_tags`] gives them as tracker tags).
//!
//! Wiring into the daemon (per the PBX of [`DialSettings::from_config`]): build the service
//! with that session's `AmiClient` and the PhoneBridge [`ClickReporter`](report::ClickReporter);
//! in the session's event loop call [`DialService::observe`] and apply
//! [`DialService::call_tags`] for every message, and [`DialService::session_lost`] on a
//! disconnect; serve [`http::router`] on `[zoho.phonebridge] listen`.

pub mod book;
pub mod config;
pub mod guard;
pub mod http;
pub mod report;
mod service;

pub use service::DialService;

use tokio::sync::mpsc;

use book::Outcome;
use config::{ClickToDialConfig, OriginateConfig};
use guard::{NumberRefusal, RateRefusal};
use report::ClickErrorCode;

/// Where a click came from (audit lines and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickSource {
    PhoneBridge,
    AgentPage,
    Cli,
}

impl ClickSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ClickSource::PhoneBridge => "phonebridge",
            ClickSource::AgentPage => "agent_page",
            ClickSource::Cli => "cli",
        }
    }
}

/// One click.
#[derive(Debug, Clone)]
pub struct ClickRequest {
    pub source: ClickSource,
    pub agent_email: String,
    pub zohouser: Option<String>,
    /// As given: the service normalises it.
    pub number: String,
    /// The Zoho record clicked (`Contacts/4150868000000224005`), when known.
    pub record: Option<String>,
}

/// Why a click was refused before (or instead of) reaching the PBX.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("unknown agent '{0}': not in [agents] or [click_to_dial] extensions")]
    UnknownAgent(String),
    #[error("{0}")]
    Number(#[from] NumberRefusal),
    #[error("{0}")]
    RateLimited(#[from] RateRefusal),
    #[error("the PBX did not take the Originate: {0}")]
    Pbx(String),
    #[error("too many clicks in flight")]
    Busy,
}

impl Refusal {
    /// The one word of audit lines and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::UnknownAgent(_) => "unknown_agent",
            Refusal::Number(NumberRefusal::Invalid(_)) => "invalid_number",
            Refusal::Number(_) => "blocked_number",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::Pbx(_) => "pbx_error",
            Refusal::Busy => "overloaded",
        }
    }

    /// The PhoneBridge code, when the refusal is reported at all.
    pub fn code(&self) -> Option<ClickErrorCode> {
        match self {
            Refusal::UnknownAgent(_) => None,
            Refusal::Number(NumberRefusal::Invalid(_)) => Some(ClickErrorCode::Invalid),
            Refusal::Number(_) | Refusal::RateLimited(_) => Some(ClickErrorCode::Blocked),
            Refusal::Pbx(_) | Refusal::Busy => Some(ClickErrorCode::NotAvailable),
        }
    }
}

/// Where a click stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The agent answered; the number is being dialled.
    AgentAnswered {
        channel: String,
    },
    Done(Outcome),
}

/// A click the PBX took.
#[derive(Debug)]
pub struct Accepted {
    pub click_id: String,
    pub e164: String,
    pub exten: String,
    pub agent_extension: String,
    /// Every step, in order (`AgentAnswered`, then `Done`); closed after `Done`.
    pub progress: mpsc::Receiver<Progress>,
}

/// What the tracker and the notifier may learn of a click from its id (the `CTD_ID` value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClickInfo {
    pub click_id: String,
    pub agent_email: String,
    pub agent_extension: String,
    pub zohouser: Option<String>,
    pub e164: String,
    pub record: Option<String>,
    pub channel: Option<String>,
    pub uniqueid: Option<String>,
}

/// One audit record (also logged).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Audit {
    pub click_id: Option<String>,
    pub source: Option<&'static str>,
    pub agent: String,
    pub number: String,
    pub result: String,
    pub reason: String,
}

/// A call-control request that cannot be carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    #[error("no click-to-dial call '{0}' (ended, or never ours)")]
    NotFound(String),
    #[error("call '{0}' belongs to another agent")]
    NotYours(String),
    #[error("call '{0}' has no channel yet")]
    NoChannel(String),
    #[error("the PBX refused: {0}")]
    Pbx(String),
}

/// Call-control actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Hangup,
    Mute,
    Unmute,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Hangup => "hangup",
            Control::Mute => "mute",
            Control::Unmute => "unmute",
        }
    }
}

/// Everything the service needs, from the configuration.
#[derive(Debug, Clone)]
pub struct DialSettings {
    pub click: ClickToDialConfig,
    pub originate: OriginateConfig,
    pub default_country: String,
    pub agents: std::collections::BTreeMap<String, String>,
}

impl DialSettings {
    /// From the whole configuration: `[click_to_dial]`, its `pbx` (or the first `[[pbx]]`),
    /// `calls.default_country`, `[agents]`. Also says which PBX.
    pub fn from_config(cfg: &crate::config::Config) -> Result<(DialSettings, usize), String> {
        let index = match &cfg.click_to_dial.pbx {
            Some(name) => cfg
                .pbx
                .iter()
                .position(|p| &p.name == name)
                .ok_or_else(|| format!("key click_to_dial.pbx: no [[pbx]] named '{name}'"))?,
            None if cfg.pbx.is_empty() => {
                return Err("key pbx: no [[pbx]] section: no PBX to dial through".into())
            }
            None => 0,
        };
        Ok((
            DialSettings {
                click: cfg.click_to_dial.clone(),
                originate: cfg.pbx[index].originate.clone(),
                default_country: cfg.calls.default_country.clone(),
                agents: cfg.agents.clone(),
            },
            index,
        ))
    }
}
