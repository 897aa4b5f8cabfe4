//! Reading Zoho's answers: users, per-record outcomes of an insert, the retry class of a
//! failure, and the escaping of search criteria.

use serde_json::Value;

use super::{Answer, RecordOutcome, User, ZohoApi};
use crate::zoho::{Retry, ZohoError};

/// For probes: any answer but an authorization failure means the endpoint is usable.
pub(super) fn ok_unless_denied(r: Result<Answer, ZohoError>, what: &str) -> Result<(), ZohoError> {
    let a = r?;
    match a.status {
        401 | 403 => Err(ZohoApi::fail(&a, what)),
        s if s >= 500 => Err(ZohoApi::fail(&a, what)),
        _ => Ok(()),
    }
}

pub(super) fn parse_users(body: Option<&Value>) -> Vec<User> {
    body.and_then(|b| b.get("users"))
        .and_then(Value::as_array)
        .map(|users| {
            users
                .iter()
                .filter_map(|u| {
                    Some(User {
                        id: u.get("id")?.as_str()?.to_string(),
                        email: u.get("email")?.as_str()?.to_string(),
                        full_name: u
                            .get("full_name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn record_outcome(status: u16, e: &Value) -> RecordOutcome {
    let text = |k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if text("status") == "success" {
        if let Some(id) = e.pointer("/details/id").and_then(Value::as_str) {
            return RecordOutcome::Created { id: id.to_string() };
        }
    }
    let code = text("code");
    if code == "DUPLICATE_DATA" {
        let id = e
            .pointer("/details/duplicate_record/id")
            .and_then(Value::as_str);
        let field = e.pointer("/details/api_name").and_then(Value::as_str);
        if let (Some(id), Some(field)) = (id, field) {
            return RecordOutcome::Duplicate {
                id: id.to_string(),
                field: field.to_string(),
            };
        }
    }
    RecordOutcome::Failed(ZohoError::Api {
        status,
        retry: classify(
            if code == "DEPENDENT_SERVICE_ERROR" {
                503
            } else {
                400
            },
            &code,
        ),
        field: e
            .pointer("/details/api_name")
            .and_then(Value::as_str)
            .map(str::to_string),
        message: text("message"),
        code,
    })
}

/// Transient: 5xx, 429 and Zoho's dependent-service failures. Everything else is permanent.
pub(super) fn classify(status: u16, code: &str) -> Retry {
    if status == 429
        || status >= 500
        || code == "DEPENDENT_SERVICE_ERROR"
        || code == "TOO_MANY_REQUESTS"
    {
        Retry::Transient
    } else {
        Retry::Permanent
    }
}

/// A failed exchange: before anything was sent it is transient; after a write was sent, its
/// outcome is unknown (the record may exist).
pub(super) fn network_error(e: &reqwest::Error, write: bool, path: &str) -> ZohoError {
    let sent = !e.is_connect() && !e.is_builder();
    ZohoError::Network {
        message: format!("{path}: {}", e.without_url_ref()),
        retry: if write && sent {
            Retry::Unknown
        } else {
            Retry::Transient
        },
    }
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    /// The error text without the URL (which is harmless here, but keep logs short).
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "");
        }
        let mut source = std::error::Error::source(self);
        while let Some(inner) = source {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            source = inner.source();
        }
        s
    }
}

/// Zoho search criteria need `(`, `)`, `,` and `\` escaped with a backslash inside values.
pub fn escape_criteria(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '(' | ')' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
