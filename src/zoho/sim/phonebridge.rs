//! PhoneBridge v3 in the simulator (`docs/zoho-crm-api.md` §9.4): strict, and with a
//! per-user timeline of what each agent's Zoho would show.
//!
//! Enforced: the `Zoho-oauthtoken` header and the `PhoneBridge.*` scopes per endpoint; form
//! bodies; mandatory parameters (400 `REQUIRED_PARAM_MISSING`); E.164 numbers with the `+`
//! percent-encoded (a raw `+` decodes to a space and is refused); GMT `yyyy-MM-dd HH:mm:ss`
//! times; `PBX_NOT_INTEGRATED` before `integrate`; one provider per org
//! (`DIFFERENT_PROVIDER_ALREADY_ENABLED`); `zohouser` must be a PhoneBridge user.
//!
//! As Zoho does, a notified call that ends answered (`ended` with `start_time` and `duration`,
//! after `answered` by that user) or missed is logged as a Call record, marked as made by
//! PhoneBridge, once per call: an id reached by `transferredcallid` belongs to the call it was
//! transferred from. An `ended` without a call log (no start time, or for a user who never
//! answered) closes the pop-up: the bridge's reading of how a pop-up is taken away from
//! agents whose ring stopped (unconfirmed in Zoho's pages).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::*;

/// One thing an agent's Zoho showed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PopEntry {
    /// The id of the notification (`id`).
    pub id: String,
    /// The call it belongs to (the first id, following `transferredcallid`).
    pub call: String,
    /// `received` or `dialed`.
    pub kind: String,
    /// ringing, answered, ended, closed, missed, busy, noanswer ...
    pub state: String,
    pub from: String,
    pub to: String,
    pub start_time: Option<String>,
    pub duration: Option<u64>,
    pub transferred_from: Option<String>,
}

#[derive(Default)]
pub(super) struct PbState {
    /// The client id of the provider enabled for the org.
    provider: Option<String>,
    /// zohouser → what it saw, in order.
    timeline: HashMap<String, Vec<PopEntry>>,
    /// id → call (root id).
    roots: HashMap<String, String>,
    /// call → index of its PhoneBridge Call record in `records["Calls"]`.
    logged: HashMap<String, usize>,
    /// (id, zohouser) answered.
    answered: std::collections::HashSet<(String, String)>,
    pub(super) requests: usize,
}

fn pb_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "status": "error", "code": code, "message": message })),
    )
        .into_response()
}

fn success() -> Response {
    Json(json!({ "status": "success", "code": "SUCCESS" })).into_response()
}

/// The client id of the request's token (after `gate` accepted it).
fn client_of(g: &Inner, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Zoho-oauthtoken ")?;
    let t = g.access.get(token)?;
    g.refresh.get(&t.refresh).map(|r| r.client_id.clone())
}

fn scopes_for(search: bool) -> Vec<String> {
    let mut v = vec!["PhoneBridge.call.log".to_string()];
    if search {
        v.push("PhoneBridge.zohoone.search".into());
    }
    v
}

/// `POST` / `DELETE /phonebridge/v3/integrate`.
pub(super) async fn integrate(
    State(inner): State<Shared>,
    Path(dc): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    if let (Some(r), _) = gate(&inner, &headers, &dc, &scopes_for(false)).await {
        return r;
    }
    let mut g = lock(&inner);
    g.pb.requests += 1;
    let Some(client) = client_of(&g, &headers) else {
        return invalid_token();
    };
    if !g.seed.clients.iter().any(|c| c.client_id == client) {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "PROVIDER_NOT_REGISTERED",
            "the provider is not registered",
        );
    }
    if method == axum::http::Method::DELETE {
        if g.pb.provider.as_deref() == Some(client.as_str()) {
            g.pb.provider = None;
        }
        return success();
    }
    match &g.pb.provider {
        Some(p) if *p != client => pb_error(
            StatusCode::BAD_REQUEST,
            "DIFFERENT_PROVIDER_ALREADY_ENABLED",
            "another PhoneBridge provider is enabled for this org",
        ),
        _ => {
            g.pb.provider = Some(client);
            success()
        }
    }
}

/// Whether the request's provider is the org's enabled one; the error answer otherwise.
fn integrated(g: &Inner, headers: &HeaderMap) -> Option<Response> {
    let client = client_of(g, headers);
    match (&g.pb.provider, client) {
        (Some(p), Some(c)) if *p == c => None,
        _ => Some(pb_error(
            StatusCode::BAD_REQUEST,
            "PBX_NOT_INTEGRATED",
            "PhoneBridge is not integrated for this org: call integrate first",
        )),
    }
}

/// The PhoneBridge user id of a CRM user.
fn zohouser_of(u: &SimUser) -> String {
    format!("pb{}", u.id)
}

/// `GET /phonebridge/v3/users?page=&perPage=`.
pub(super) async fn users(
    State(inner): State<Shared>,
    Path(dc): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let (Some(r), _) = gate(&inner, &headers, &dc, &scopes_for(true)).await {
        return r;
    }
    let mut g = lock(&inner);
    g.pb.requests += 1;
    if let Some(r) = integrated(&g, &headers) {
        return r;
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per_page: usize = q.get("perPage").and_then(|p| p.parse().ok()).unwrap_or(100);
    if page == 0 || per_page == 0 || per_page > 1000 {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "page from 1, perPage from 1 to 1000",
        );
    }
    let list: Vec<Value> = g
        .seed
        .users
        .iter()
        .filter(|u| u.active)
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|u| json!({ "zohouser": zohouser_of(u), "email": u.email, "username": u.full_name }))
        .collect();
    Json(json!({ "status": "success", "code": "SUCCESS", "users": list })).into_response()
}

fn e164(v: &str) -> bool {
    v.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

fn gmt_time(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
        && jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", v).is_ok()
}

/// `POST /phonebridge/v3/callnotify`.
pub(super) async fn callnotify(
    State(inner): State<Shared>,
    Path(dc): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let (Some(r), _) = gate(&inner, &headers, &dc, &scopes_for(false)).await {
        return r;
    }
    let mut g = lock(&inner);
    g.pb.requests += 1;
    if let Some(r) = integrated(&g, &headers) {
        return r;
    }
    let form_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let p: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(kind), Some(state), Some(id)) = (get("type"), get("state"), get("id")) else {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "type, state and id are mandatory",
        );
    };
    let states: &[&str] = match kind {
        "received" => &["ringing", "answered", "missed", "ended"],
        "dialed" => &[
            "ended",
            "busy",
            "invalid",
            "blocked",
            "notavailable",
            "noanswer",
            "rejected",
        ],
        _ => {
            return pb_error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "type is received or dialed",
            )
        }
    };
    if !states.contains(&state) {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            &format!("state '{state}' is not one of {states:?} for type {kind}"),
        );
    }
    let (Some(from), Some(to)) = (get("from"), get("to")) else {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "from and to are mandatory",
        );
    };
    for (k, v) in [("from", from), ("to", to)] {
        if !e164(v) {
            return pb_error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                &format!("{k} '{v}' is not an E.164 number (is the + percent-encoded?)"),
            );
        }
    }
    let start_time = get("start_time");
    let needs_start = state == "missed" || kind == "dialed";
    if needs_start && start_time.is_none() {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "start_time is mandatory",
        );
    }
    if let Some(t) = start_time {
        if !gmt_time(t) {
            return pb_error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "start_time must be yyyy-MM-dd HH:mm:ss (GMT)",
            );
        }
    }
    let duration = match get("duration") {
        Some(d) => match d.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                return pb_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_DATA",
                    "duration is whole seconds",
                )
            }
        },
        None => None,
    };
    let transferred = get("transferredcallid");
    if transferred.is_some() && state != "ringing" {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "transferredcallid goes with state ringing",
        );
    }
    let Some(user) = get("zohouser") else {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "zohouser is mandatory for this provider",
        );
    };
    let Some(owner) = g
        .seed
        .users
        .iter()
        .find(|u| zohouser_of(u) == user && u.active)
        .cloned()
    else {
        return pb_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            &format!("zohouser '{user}' is no PhoneBridge user"),
        );
    };
    let root = match transferred {
        Some(t) => g.pb.roots.get(t).cloned().unwrap_or_else(|| t.to_string()),
        None => {
            g.pb.roots
                .get(id)
                .cloned()
                .unwrap_or_else(|| id.to_string())
        }
    };
    g.pb.roots.insert(id.to_string(), root.clone());
    let key = (id.to_string(), user.to_string());
    let answered_here = g.pb.answered.contains(&key);
    // What the agent's screen shows.
    let shown = match (kind, state) {
        ("received", "ended") if !(answered_here && start_time.is_some()) => "closed",
        _ => state,
    };
    if state == "answered" {
        g.pb.answered.insert(key);
    }
    let logs = matches!(
        (kind, shown),
        ("received", "missed") | ("received", "ended") | ("dialed", _)
    );
    if logs {
        let call_type = match (kind, shown) {
            ("received", "missed") => "Missed",
            ("received", _) => "Inbound",
            _ => "Outbound",
        };
        let start = start_time.unwrap_or_default().to_string();
        let secs = duration.unwrap_or(0);
        let record = json!({
            "Subject": format!("{call_type} call {from} -> {to}"),
            "Call_Type": call_type,
            "Call_Start_Time": start,
            "Call_Duration": format!("{:02}:{:02}", secs / 60, secs % 60),
            "Owner": { "id": owner.id, "email": owner.email },
            "$phonebridge": true,
            "$phonebridge_call": root,
            "$phonebridge_state": shown,
        });
        match g.pb.logged.get(&root).copied() {
            // One Call per call: a later end (after a transfer, or another agent's missed)
            // updates the record.
            Some(i) => {
                if let Some(r) = g.records.get_mut("Calls").and_then(|v| v.get_mut(i)) {
                    if call_type != "Missed" {
                        *r = record;
                    }
                }
            }
            None => {
                let list = g.records.entry("Calls".into()).or_default();
                list.push(record);
                let i = list.len() - 1;
                g.pb.logged.insert(root.clone(), i);
            }
        }
    }
    let entry = PopEntry {
        id: id.to_string(),
        call: root,
        kind: kind.to_string(),
        state: shown.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        start_time: start_time.map(str::to_string),
        duration,
        transferred_from: transferred.map(str::to_string),
    };
    g.pb.timeline
        .entry(user.to_string())
        .or_default()
        .push(entry);
    success()
}

/// `GET /sim/phonebridge/timeline`: every user's timeline, by e-mail.
pub(super) async fn timeline_json(State(inner): State<Shared>) -> Response {
    let g = lock(&inner);
    Json(json!({ "integrated": g.pb.provider.is_some(), "users": timeline_by_email(&g) }))
        .into_response()
}

pub(super) fn timeline_by_email(g: &Inner) -> HashMap<String, Vec<PopEntry>> {
    g.seed
        .users
        .iter()
        .filter_map(|u| {
            g.pb.timeline
                .get(&zohouser_of(u))
                .map(|t| (u.email.clone(), t.clone()))
        })
        .collect()
}
