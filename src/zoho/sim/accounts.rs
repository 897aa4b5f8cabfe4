//! The simulated accounts server: grant codes, token refresh with Zoho's throttle and
//! live-token cap, revocation.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::*;

// ---- accounts server -----------------------------------------------------------------

pub(super) async fn token(
    State(inner): State<Shared>,
    Path(dc): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    // Zoho takes the parameters in the query string or as a form body.
    let mut p = query;
    p.extend(form_urlencoded::parse(&body).into_owned());
    let mut inner = lock(&inner);
    inner.stats.token_requests += 1;
    let err = |code: &str| Json(json!({ "error": code })).into_response();
    // An unknown client id and a known one with the wrong secret are told apart, as the
    // reference describes (`invalid_client`, `invalid_client_secret`).
    let Some(client) = inner
        .seed
        .clients
        .iter()
        .find(|c| Some(&c.client_id) == p.get("client_id"))
    else {
        return err("invalid_client");
    };
    if Some(&client.client_secret) != p.get("client_secret") {
        return err("invalid_client_secret");
    }
    let client_id = p.get("client_id").cloned().unwrap_or_default();
    match p.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = p.get("code").cloned().unwrap_or_default();
            let Some(c) = inner.codes.get_mut(&code) else {
                return err("invalid_code");
            };
            if c.used || c.expires < Instant::now() || c.dc != dc || c.client_id != client_id {
                return err("invalid_code");
            }
            c.used = true;
            let (scopes, cdc) = (c.scopes.clone(), c.dc.clone());
            let rt = format!("1000.{}.{}", random_hex(32), random_hex(32));
            inner.refresh.insert(
                rt.clone(),
                Refresh {
                    client_id,
                    scopes: scopes.clone(),
                    dc: cdc,
                    minted: VecDeque::new(),
                    live: VecDeque::new(),
                    revoked: false,
                },
            );
            let mut answer = mint(&mut inner, &rt).unwrap_or_else(|e| e);
            answer["refresh_token"] = json!(rt);
            Json(answer).into_response()
        }
        Some("refresh_token") => {
            let rt = p.get("refresh_token").cloned().unwrap_or_default();
            inner.stats.refreshes += 1;
            match inner.refresh.get(&rt) {
                Some(r) if !r.revoked && r.dc == dc && r.client_id == client_id => {}
                _ => return err("invalid_code"),
            }
            Json(mint(&mut inner, &rt).unwrap_or_else(|e| e)).into_response()
        }
        _ => err("unsupported_grant_type"),
    }
}

/// Mints an access token, enforcing the refresh throttle and the live-token cap.
pub(super) fn mint(inner: &mut Inner, rt: &str) -> Result<Value, Value> {
    let limits = inner.limits.clone();
    let base = inner.base.clone();
    let now = Instant::now();
    let Some(r) = inner.refresh.get_mut(rt) else {
        return Err(json!({ "error": "invalid_code" }));
    };
    while r
        .minted
        .front()
        .is_some_and(|t| now.duration_since(*t) > limits.refresh_window)
    {
        r.minted.pop_front();
    }
    if r.minted.len() >= limits.refresh_limit {
        return Err(json!({
            "error": "Access Denied",
            "error_description": "You have made too many requests continuously. Please try again after some time.",
            "status": "failure"
        }));
    }
    r.minted.push_back(now);
    let at = format!("1000.{}.{}", random_hex(32), random_hex(32));
    r.live.push_back(at.clone());
    let mut evicted = Vec::new();
    while r.live.len() > limits.live_tokens {
        if let Some(old) = r.live.pop_front() {
            evicted.push(old);
        }
    }
    let (dc, scope_set) = (r.dc.clone(), r.scopes.clone());
    for old in evicted {
        inner.access.remove(&old);
    }
    let mut scope_list: Vec<&String> = scope_set.iter().collect();
    scope_list.sort();
    let scope_text = scope_list
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    inner.access.insert(
        at.clone(),
        AccessToken {
            refresh: rt.to_string(),
            dc: dc.clone(),
            scopes: scope_set,
            expires: now + limits.token_lifetime,
        },
    );
    Ok(json!({
        "access_token": at,
        "scope": scope_text,
        "api_domain": format!("{base}/{dc}"),
        "token_type": "Bearer",
        "expires_in": limits.token_lifetime.as_secs(),
    }))
}

pub(super) async fn revoke(
    State(inner): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = lock(&inner);
    let token = q.get("token").cloned().unwrap_or_default();
    match inner.refresh.get_mut(&token) {
        Some(r) => {
            r.revoked = true;
            let live: Vec<String> = r.live.drain(..).collect();
            for t in live {
                inner.access.remove(&t);
            }
            Json(json!({ "status": "success" })).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_token" })),
        )
            .into_response(),
    }
}
