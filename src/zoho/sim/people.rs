//! Users, Contacts and Leads: paging, phone search (204 on no match) and incremental reads
//! with `If-Modified-Since`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::*;

pub(super) async fn users(
    State(inner): State<Shared>,
    Path((dc, _version)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let needed = vec![
        "ZohoCRM.users.READ".to_string(),
        "ZohoCRM.users.ALL".to_string(),
    ];
    if let (Some(r), _) = gate(&inner, &headers, &dc, &needed).await {
        return r;
    }
    let g = lock(&inner);
    let kind = q.get("type").map(String::as_str).unwrap_or("AllUsers");
    let all: Vec<&SimUser> = match kind {
        "CurrentUser" => g.seed.users.iter().take(1).collect(),
        "ActiveUsers" | "ActiveConfirmedUsers" => {
            g.seed.users.iter().filter(|u| u.active).collect()
        }
        "DeactiveUsers" => g.seed.users.iter().filter(|u| !u.active).collect(),
        _ => g.seed.users.iter().collect(),
    };
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(200)
        .clamp(1, 200);
    let slice: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|u| {
            json!({ "id": u.id, "email": u.email, "full_name": u.full_name,
                    "status": if u.active { "active" } else { "disabled" }, "confirm": true })
        })
        .collect();
    if slice.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let more = all.len() > page * per_page;
    Json(json!({ "users": slice, "info": { "page": page, "per_page": per_page, "count": slice.len(), "more_records": more } }))
        .into_response()
}

pub(super) fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

pub(super) async fn search(
    State(inner): State<Shared>,
    Path((dc, _version, module)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !["Contacts", "Leads", "Calls", "Tasks"].contains(&module.as_str()) {
        return invalid_module();
    }
    if let (Some(r), _) = gate(&inner, &headers, &dc, &module_scopes(&module, &["READ"])).await {
        return r;
    }
    let g = lock(&inner);
    if module == "Calls" || module == "Tasks" {
        return search_activities(&g, &module, q.get("criteria"));
    }
    let people = if module == "Contacts" {
        &g.seed.contacts
    } else {
        &g.seed.leads
    };
    // Zoho matches phone values ignoring formatting characters; `word` is a loose full-text
    // match, here: a phone ending with the digits given.
    let hits: Vec<&SimPerson> = if let Some(phone) = q.get("phone") {
        let want = digits(phone);
        if want.is_empty() {
            return crm_error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
                "invalid phone",
                json!({ "param": "phone" }),
            );
        }
        people
            .iter()
            .filter(|p| p.phones.values().any(|v| digits(v) == want))
            .collect()
    } else if let Some(word) = q.get("word") {
        let want = digits(word);
        people
            .iter()
            .filter(|p| want.len() >= 6 && p.phones.values().any(|v| digits(v).ends_with(&want)))
            .collect()
    } else {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "one of criteria, email, phone, word is required",
            json!({}),
        );
    };
    if hits.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let data: Vec<Value> = hits.iter().map(|p| person_json(&g, p)).collect();
    Json(json!({ "data": data, "info": { "count": data.len(), "more_records": false } }))
        .into_response()
}

pub(super) fn invalid_module() -> Response {
    crm_error(
        StatusCode::BAD_REQUEST,
        "INVALID_MODULE",
        "the module name given seems to be invalid",
        json!({}),
    )
}

/// Now, as Zoho writes times (seconds, with the offset).
pub(super) fn zoho_now() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// Seeded records were last modified at this time; records added later carry their own.
pub(super) const SEED_MODIFIED: &str = "2026-01-01T00:00:00+00:00";

pub(super) fn modified_time<'a>(g: &'a Inner, p: &SimPerson) -> &'a str {
    g.modified.get(&p.id).map_or(SEED_MODIFIED, String::as_str)
}

/// A Contact or Lead as the CRM API shows it.
pub(super) fn person_json(g: &Inner, p: &SimPerson) -> Value {
    let mut r =
        json!({ "id": p.id, "Full_Name": p.full_name, "Modified_Time": modified_time(g, p) });
    for (k, v) in &p.phones {
        r[k] = json!(v);
    }
    if let Some(e) = &p.owner_email {
        r["Owner"] = json!({ "email": e });
    }
    r
}

/// `GET /{module}`: records page by page (`page` up to 2000 records, then `page_token`),
/// only those modified after `If-Modified-Since` when given (304 when none).
pub(super) async fn list_people(
    State(inner): State<Shared>,
    Path((dc, _version, module)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if module != "Contacts" && module != "Leads" {
        return invalid_module();
    }
    if let (Some(r), _) = gate(&inner, &headers, &dc, &module_scopes(&module, &["READ"])).await {
        return r;
    }
    if !q.contains_key("fields") {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({ "param": "fields" }),
        );
    }
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(1, 200);
    let page: usize = match (q.get("page_token"), q.get("page")) {
        (Some(t), _) => match t.strip_prefix("sim-page-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => {
                return crm_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_DATA",
                    "invalid page token",
                    json!({ "param": "page_token" }),
                )
            }
        },
        (None, Some(p)) => p.parse().unwrap_or(1).max(1),
        (None, None) => 1,
    };
    if !q.contains_key("page_token") && page * per_page > 2000 {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
            "cannot fetch more than 2000 records without page_token",
            json!({}),
        );
    }
    let since = headers
        .get("if-modified-since")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<jiff::Timestamp>().ok());
    let g = lock(&inner);
    let people = if module == "Contacts" {
        &g.seed.contacts
    } else {
        &g.seed.leads
    };
    let mut chosen: Vec<&SimPerson> = people
        .iter()
        .filter(|p| {
            since.is_none_or(|s| {
                modified_time(&g, p)
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|m| m > s)
            })
        })
        .collect();
    chosen.sort_by_key(|p| modified_time(&g, p).to_string());
    if chosen.is_empty() {
        return if since.is_some() {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            StatusCode::NO_CONTENT.into_response()
        };
    }
    let start = (page - 1) * per_page;
    let data: Vec<Value> = chosen
        .iter()
        .skip(start)
        .take(per_page)
        .map(|p| person_json(&g, p))
        .collect();
    let more = chosen.len() > start + per_page;
    let mut info =
        json!({ "per_page": per_page, "count": data.len(), "page": page, "more_records": more });
    if more {
        info["next_page_token"] = json!(format!("sim-page-{}", page + 1));
    }
    Json(json!({ "data": data, "info": info })).into_response()
}
