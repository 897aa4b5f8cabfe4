//! How a click that did not become a call is told back to where it came from.
//!
//! Zoho PhoneBridge wants `POST /phonebridge/v3/clicktodialerror` with one of six codes; the
//! PhoneBridge client (`zoho::phonebridge`) implements [`ClickReporter`] for that. The dial
//! service never waits on a report (implementations do their I/O on their own task) and
//! never retries the click itself: a second ring on the agent's phone must be the agent's
//! decision.

use std::sync::Mutex;

/// PhoneBridge's `clicktodialerror` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClickErrorCode {
    Busy,
    NoAnswer,
    Rejected,
    NotAvailable,
    Invalid,
    Blocked,
}

impl ClickErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClickErrorCode::Busy => "busy",
            ClickErrorCode::NoAnswer => "noanswer",
            ClickErrorCode::Rejected => "rejected",
            ClickErrorCode::NotAvailable => "notavailable",
            ClickErrorCode::Invalid => "invalid",
            ClickErrorCode::Blocked => "blocked",
        }
    }
}

impl std::fmt::Display for ClickErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed click, with what `clicktodialerror` needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClickReport {
    pub click_id: Option<String>,
    /// PhoneBridge user id, when the click came from Zoho.
    pub zohouser: Option<String>,
    pub agent_email: String,
    /// `from`: the agent's extension.
    pub from: String,
    /// `to`: the number, E.164 when it could be read as one, else as given (escaped).
    pub to: String,
    pub code: ClickErrorCode,
    pub message: String,
}

/// Receives failed clicks. Must not block: do the I/O on a task of its own.
pub trait ClickReporter: Send + Sync {
    fn report(&self, report: ClickReport);
}

/// Logs the report and nothing else (the `dial` command, a bridge without PhoneBridge).
#[derive(Debug, Default)]
pub struct LogReporter;

impl ClickReporter for LogReporter {
    fn report(&self, r: ClickReport) {
        tracing::info!(
            click_id = r.click_id.as_deref().unwrap_or("-"),
            agent = %r.agent_email,
            to = %r.to,
            code = r.code.as_str(),
            message = %r.message,
            "click-to-dial failure (not reported to Zoho: no PhoneBridge reporter)"
        );
    }
}

/// Keeps every report in memory, bounded (tests and diagnostics).
#[derive(Debug, Default)]
pub struct MemoryReporter {
    reports: Mutex<Vec<ClickReport>>,
}

impl MemoryReporter {
    const MAX: usize = 10_000;

    pub fn reports(&self) -> Vec<ClickReport> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl ClickReporter for MemoryReporter {
    fn report(&self, report: ClickReport) {
        if let Ok(mut r) = self.reports.lock() {
            if r.len() >= Self::MAX {
                r.remove(0);
            }
            r.push(report);
        }
    }
}
