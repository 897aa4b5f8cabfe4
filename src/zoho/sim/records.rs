//! Call and Task records: the strict validation Zoho applies on insert, the 100-record cap,
//! 201/207/400 answers, and the criteria search the bridge uses before sending again.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::*;

/// `(Field:equals:value)and(...)`, values with `\\`-escaped `( ) , \\`: the subset of
/// Zoho's criteria grammar the bridge uses to check for a record before resending it.
pub(super) fn parse_criteria(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        if chars.next()? != '(' {
            return None;
        }
        let mut group = String::new();
        let mut escaped = false;
        loop {
            let c = chars.next()?;
            if escaped {
                group.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == ')' {
                break;
            } else {
                group.push(c);
            }
        }
        let mut parts = group.splitn(3, ':');
        let (field, op, value) = (parts.next()?, parts.next()?, parts.next()?);
        if op != "equals" {
            return None;
        }
        out.push((field.to_string(), value.to_string()));
        match chars.peek() {
            None => return Some(out),
            Some(_) => {
                let rest: String = chars.by_ref().take(3).collect();
                if !rest.eq_ignore_ascii_case("and") {
                    return None;
                }
            }
        }
    }
}

pub(super) fn search_activities(g: &Inner, module: &str, criteria: Option<&String>) -> Response {
    let Some(conds) = criteria.and_then(|c| parse_criteria(c)) else {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            "invalid query formed",
            json!({ "param": "criteria" }),
        );
    };
    let data: Vec<Value> = g
        .records
        .get(module)
        .into_iter()
        .flatten()
        .filter(|r| {
            conds
                .iter()
                .all(|(f, v)| r.get(f).and_then(Value::as_str) == Some(v.as_str()))
        })
        .cloned()
        .collect();
    if data.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    Json(json!({ "data": data, "info": { "count": data.len(), "more_records": false } }))
        .into_response()
}

pub(super) const CALL_FIELDS: [&str; 20] = [
    "Subject",
    "Call_Type",
    "Call_Start_Time",
    "Call_Duration",
    "Outgoing_Call_Status",
    "Call_Purpose",
    "Call_Result",
    "Call_Agenda",
    "Description",
    "Owner",
    "Who_Id",
    "What_Id",
    "$se_module",
    "Caller_ID",
    "Dialled_Number",
    "Voice_Recording__s",
    "Reminder",
    "CTI_Entry",
    "Call_Duration_in_seconds",
    "Tag",
];
pub(super) const TASK_FIELDS: [&str; 10] = [
    "Subject",
    "Due_Date",
    "Status",
    "Priority",
    "Owner",
    "Who_Id",
    "What_Id",
    "$se_module",
    "Description",
    "Tag",
];
pub(super) const READ_ONLY: [&str; 2] = ["Call_Duration_in_seconds", "Tag"];

pub(super) fn record_error(code: &str, message: &str, field: &str, i: usize) -> Value {
    json!({ "code": code, "status": "error", "message": message,
            "details": { "api_name": field, "json_path": format!("$.data[{i}].{field}") } })
}

pub(super) fn is_zoho_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 25
        && s.chars().enumerate().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 | 22 => c == ':',
            19 => c == '+' || c == '-',
            _ => c.is_ascii_digit(),
        })
        && jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%:z", s).is_ok()
}

pub(super) fn duration_seconds(s: &str) -> Option<u64> {
    let (m, sec) = s.split_once(':')?;
    if m.len() < 2 || sec.len() != 2 || !m.chars().chain(sec.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let sec: u64 = sec.parse().ok()?;
    (sec < 60).then_some(m.parse::<u64>().ok()? * 60 + sec)
}

pub(super) fn lookup_id(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str).or_else(|| v.as_str())
}

/// Validates one record of `module`; `Err` is the Zoho error entry.
pub(super) fn validate(g: &Inner, module: &str, r: &Value, i: usize) -> Result<(), Value> {
    let Some(obj) = r.as_object() else {
        return Err(record_error("INVALID_DATA", "invalid data", "data", i));
    };
    let calls = module == "Calls";
    let known: Vec<&str> = if calls {
        CALL_FIELDS.to_vec()
    } else {
        TASK_FIELDS.to_vec()
    };
    for (k, _) in obj {
        let custom = calls && g.seed.custom_fields.contains(k);
        if !(known.contains(&k.as_str()) || custom) {
            return Err(record_error(
                "INVALID_DATA",
                "the field api name given seems to be invalid",
                k,
                i,
            ));
        }
        if READ_ONLY.contains(&k.as_str()) {
            return Err(record_error("NOT_ALLOWED", "the field is read only", k, i));
        }
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    let mandatory: &[&str] = if calls {
        &["Subject", "Call_Type", "Call_Start_Time"]
    } else {
        &["Subject"]
    };
    for m in mandatory {
        if text(m).is_none_or(|s| s.trim().is_empty()) {
            return Err(record_error(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                m,
                i,
            ));
        }
    }
    if text("Subject").is_some_and(|s| s.chars().count() > 255) {
        return Err(record_error(
            "INVALID_DATA",
            "the length of the field exceeds the maximum",
            "Subject",
            i,
        ));
    }
    for (k, v) in obj {
        let is_lookup = matches!(k.as_str(), "Owner" | "Who_Id" | "What_Id");
        if !is_lookup && k != "CTI_Entry" && !v.is_string() {
            return Err(record_error("INVALID_DATA", "invalid data", k, i));
        }
    }
    if calls {
        let call_type = text("Call_Type").unwrap_or_default();
        if !["Inbound", "Outbound", "Missed"].contains(&call_type) {
            return Err(record_error("INVALID_DATA", "invalid data", "Call_Type", i));
        }
        if !text("Call_Start_Time").is_some_and(is_zoho_datetime) {
            return Err(record_error(
                "INVALID_DATA",
                "invalid data",
                "Call_Start_Time",
                i,
            ));
        }
        match text("Call_Duration") {
            Some(d) => match duration_seconds(d) {
                None => {
                    return Err(record_error(
                        "INVALID_DATA",
                        "invalid data",
                        "Call_Duration",
                        i,
                    ))
                }
                Some(0) if call_type != "Missed" => {
                    return Err(record_error(
                        "INVALID_DATA",
                        "Call Duration cannot be zero",
                        "Call_Duration",
                        i,
                    ))
                }
                _ => {}
            },
            None if call_type != "Missed" => {
                return Err(record_error(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    "Call_Duration",
                    i,
                ))
            }
            None => {}
        }
        if let Some(s) = text("Outgoing_Call_Status") {
            if call_type != "Outbound" || !["Scheduled", "Completed"].contains(&s) {
                return Err(record_error(
                    "INVALID_DATA",
                    "invalid data",
                    "Outgoing_Call_Status",
                    i,
                ));
            }
        }
        for pick in ["Call_Purpose", "Call_Result"] {
            if let Some(v) = text(pick) {
                let allowed = g.seed.picklists.get(pick);
                if !allowed.is_some_and(|a| a.iter().any(|x| x == v)) {
                    return Err(record_error("INVALID_DATA", "invalid data", pick, i));
                }
            }
        }
        for u in &g.seed.unique_fields {
            if let Some(v) = obj.get(u) {
                let dup = g
                    .records
                    .get("Calls")
                    .into_iter()
                    .flatten()
                    .find(|r| r.get(u) == Some(v));
                if let Some(d) = dup {
                    let mut e = record_error("DUPLICATE_DATA", "duplicate data", u, i);
                    e["details"]["duplicate_record"] =
                        json!({ "id": d["id"], "module": { "api_name": "Calls" } });
                    return Err(e);
                }
            }
        }
    } else if let Some(d) = text("Due_Date") {
        if jiff::civil::Date::strptime("%Y-%m-%d", d).is_err() {
            return Err(record_error("INVALID_DATA", "invalid data", "Due_Date", i));
        }
    }
    if let Some(o) = obj.get("Owner") {
        let ok = lookup_id(o).is_some_and(|id| g.seed.users.iter().any(|u| u.id == id && u.active));
        if !ok {
            return Err(record_error("INVALID_DATA", "invalid data", "Owner", i));
        }
    }
    if let Some(w) = obj.get("Who_Id") {
        if !lookup_id(w).is_some_and(|id| g.seed.contacts.iter().any(|c| c.id == id)) {
            return Err(record_error("INVALID_DATA", "invalid data", "Who_Id", i));
        }
    }
    match (obj.get("What_Id"), text("$se_module")) {
        (Some(w), Some("Leads")) => {
            if !lookup_id(w).is_some_and(|id| g.seed.leads.iter().any(|c| c.id == id)) {
                return Err(record_error("INVALID_DATA", "invalid data", "What_Id", i));
            }
        }
        (Some(_), _) => {
            return Err(record_error(
                "INVALID_DATA",
                "invalid data",
                "$se_module",
                i,
            ))
        }
        (None, Some(_)) => return Err(record_error("INVALID_DATA", "invalid data", "What_Id", i)),
        (None, None) => {}
    }
    Ok(())
}

pub(super) async fn insert(
    State(inner): State<Shared>,
    Path((dc, _version, module)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    if module != "Calls" && module != "Tasks" {
        return invalid_module();
    }
    let (early, drop_after) = gate(
        &inner,
        &headers,
        &dc,
        &module_scopes(&module, &["CREATE", "WRITE"]),
    )
    .await;
    if let Some(r) = early {
        return r;
    }
    let Some(Json(body)) = body else {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "body is not valid JSON",
            json!({}),
        );
    };
    let Some(data) = body.get("data").and_then(Value::as_array) else {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "data is missing",
            json!({ "param_name": "data" }),
        );
    };
    if data.is_empty() {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "data is empty",
            json!({ "param_name": "data" }),
        );
    }
    if data.len() > 100 {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            "more than 100 records",
            json!({ "limit": 100 }),
        );
    }
    if let Some(t) = body.get("trigger") {
        let ok = t.as_array().is_some_and(|a| {
            a.iter().all(|x| {
                matches!(
                    x.as_str(),
                    Some("workflow" | "approval" | "blueprint" | "pathfinder" | "orchestration")
                )
            })
        });
        if !ok {
            return crm_error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "invalid trigger",
                json!({ "api_name": "trigger" }),
            );
        }
    }
    let mut g = lock(&inner);
    g.stats.inserts += 1;
    g.stats.insert_sizes.push(data.len());
    let mut entries = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for (i, r) in data.iter().enumerate() {
        match validate(&g, &module, r, i) {
            Ok(()) => {
                let id = g.next_id.to_string();
                g.next_id += 1;
                let mut stored = r.clone();
                stored["id"] = json!(id);
                g.records.entry(module.clone()).or_default().push(stored);
                ok += 1;
                entries.push(
                    json!({ "code": "SUCCESS", "status": "success", "message": "record added",
                    "details": { "id": id, "Created_Time": "2026-01-01T00:00:00+00:00" } }),
                );
            }
            Err(e) => {
                failed += 1;
                entries.push(e);
            }
        }
    }
    drop(g);
    let status = match (ok, failed) {
        (_, 0) => StatusCode::CREATED,
        (0, _) => StatusCode::BAD_REQUEST,
        _ => StatusCode::MULTI_STATUS,
    };
    if drop_after {
        // Stored, then the connection dies before an answer: the body stream fails.
        let failing = futures::stream::once(async {
            Err::<bytes::Bytes, std::io::Error>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "dropped",
            ))
        });
        return Response::builder()
            .status(status)
            .body(Body::from_stream(failing))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    (status, Json(json!({ "data": entries }))).into_response()
}
