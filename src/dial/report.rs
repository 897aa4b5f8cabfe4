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

/// Posts each failure to Zoho PhoneBridge's `clicktodialerror` with the PhoneBridge account's
/// token, on a task of its own. One attempt per report (a report lost to a network error is
/// logged, not retried: it describes a click the agent has already seen fail). Stands in until
/// the PhoneBridge client (`zoho::phonebridge`) provides its own.
pub struct PhoneBridgeReporter {
    oauth: std::sync::Arc<crate::zoho::oauth::OAuth>,
    http: reqwest::Client,
}

impl PhoneBridgeReporter {
    pub fn new(
        oauth: std::sync::Arc<crate::zoho::oauth::OAuth>,
        http: reqwest::Client,
    ) -> PhoneBridgeReporter {
        PhoneBridgeReporter { oauth, http }
    }

    /// The form `clicktodialerror` takes (`+` of E.164 numbers is percent-encoded by the
    /// form encoding, as PhoneBridge wants).
    pub fn form(r: &ClickReport) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("code", r.code.as_str().to_string()),
            ("from", r.from.clone()),
            ("to", r.to.clone()),
        ];
        if let Some(u) = &r.zohouser {
            form.push(("zohouser", u.clone()));
        }
        form.push(("message", r.message.chars().take(250).collect()));
        form
    }
}

impl ClickReporter for PhoneBridgeReporter {
    fn report(&self, r: ClickReport) {
        let oauth = self.oauth.clone();
        let http = self.http.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                code = r.code.as_str(),
                "clicktodialerror not sent: no runtime"
            );
            return;
        };
        rt.spawn(async move {
            let form = PhoneBridgeReporter::form(&r);
            let access = match oauth.access().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, code = r.code.as_str(), "clicktodialerror not sent");
                    return;
                }
            };
            let url = format!(
                "{}/phonebridge/v3/clicktodialerror",
                access.api_domain.trim_end_matches('/')
            );
            let sent = http
                .post(&url)
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("Zoho-oauthtoken {}", access.token.expose()),
                )
                .form(&form)
                .timeout(std::time::Duration::from_secs(20))
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => tracing::info!(
                    click_id = r.click_id.as_deref().unwrap_or("-"),
                    code = r.code.as_str(),
                    "clicktodialerror sent to Zoho"
                ),
                Ok(resp) => tracing::warn!(
                    status = resp.status().as_u16(),
                    code = r.code.as_str(),
                    "Zoho refused clicktodialerror"
                ),
                Err(e) => tracing::warn!(
                    error = %e.without_url(),
                    code = r.code.as_str(),
                    "clicktodialerror not sent"
                ),
            }
        });
    }
}
