//! Zoho PhoneBridge's click-to-dial and call-control callbacks, on their own router.
//!
//! When PhoneBridge is on, this router is the only thing served beyond loopback (on
//! `[zoho.phonebridge] listen`, behind a TLS reverse proxy; see the README): every other
//! route stays on the 127.0.0.1 listener of `[http]`. Each request must carry the
//! `authorizationparam` secret the bridge registered with Zoho, as the header or the
//! parameter named `[click_to_dial] authorization_name`; it is compared in constant time
//! (both sides hashed first, so not even the length leaks). With no secret configured every
//! request is refused.
//!
//! Zoho's documentation does not pin down how the click arrives, so both readings are
//! accepted: query string or `application/x-www-form-urlencoded` body, GET or POST; the
//! number as `tonumber`, `to` or `number`, the user as `zohouser` or `userid`. Bodies are
//! capped at 16 KiB.
//!
//! Answers: 200 (originated), 400 invalid number or missing parameter, 401 secret, 403
//! unknown user or blocked number, 429 rate limit (with `Retry-After`), 502 the PBX refused,
//! 503 too many clicks in flight.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ClickRequest, ClickSource, Control, ControlError, DialService, Refusal};
use crate::secret::Secret;

/// Zoho PhoneBridge user id → agent e-mail. The PhoneBridge client implements it from the
/// org's user list; a map from the configuration does for tests and small set-ups.
pub trait ZohoUsers: Send + Sync {
    fn email_of(&self, zohouser: &str) -> Option<String>;
}

impl ZohoUsers for BTreeMap<String, String> {
    fn email_of(&self, zohouser: &str) -> Option<String> {
        self.get(zohouser).cloned()
    }
}

/// The shared secret of `authorizationparam`.
#[derive(Clone)]
pub struct ClickAuth {
    pub name: String,
    pub secret: Option<Secret>,
}

impl ClickAuth {
    /// From `[click_to_dial] authorization_name` and `authorization_secret(_env)`.
    pub fn from_config(c: &super::config::ClickToDialConfig) -> Result<ClickAuth, String> {
        Ok(ClickAuth {
            name: c.authorization_name.clone(),
            secret: c.authorization_secret()?,
        })
    }
}

struct App {
    dial: DialService,
    auth_name: String,
    digest: Option<[u8; 32]>,
    users: Arc<dyn ZohoUsers>,
}

/// Paths, relative to where the lead mounts the router.
pub const CLICK_PATH: &str = "/phonebridge/clicktodial";
pub const CONTROL_PATH: &str = "/phonebridge/callcontrol/{action}";

/// The callback router. Mount it on the PhoneBridge listener.
pub fn router(dial: DialService, auth: ClickAuth, users: Arc<dyn ZohoUsers>) -> Router {
    if auth.secret.is_none() {
        tracing::warn!(
            "no [click_to_dial] authorization secret: every PhoneBridge click is refused (401)"
        );
    }
    let app = Arc::new(App {
        dial,
        auth_name: auth.name,
        digest: auth.secret.map(|s| hash(s.expose().as_bytes())),
        users,
    });
    Router::new()
        .route(CLICK_PATH, any(click))
        .route(CONTROL_PATH, any(control))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(app)
}

fn hash(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Query and form parameters, first value of each name kept.
struct Params(Vec<(String, String)>);

impl Params {
    fn read(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut all: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            all.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            all.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(all)
    }

    fn get(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        })
    }
}

impl App {
    fn authorised(&self, headers: &HeaderMap, params: &Params) -> bool {
        let Some(want) = &self.digest else {
            return false;
        };
        let given = headers
            .get(self.auth_name.as_str())
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| {
                params
                    .get(&[self.auth_name.as_str()])
                    .map(|v| v.as_bytes().to_vec())
            });
        match given {
            Some(g) => bool::from(hash(&g).ct_eq(want)),
            None => false,
        }
    }

    /// The agent behind the request's Zoho user.
    fn agent(&self, params: &Params) -> Result<(String, String), Box<Response>> {
        let Some(user) = params.get(&["zohouser", "userid", "user_id"]) else {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "missing_parameter",
                "zohouser is missing",
            )));
        };
        match self.users.email_of(user) {
            Some(email) => Ok((user.to_string(), email)),
            None => {
                let shown = super::guard::printable(user);
                let number = params.get(&["tonumber", "to", "number"]).unwrap_or("");
                self.dial.refuse_request(
                    ClickSource::PhoneBridge,
                    &format!("zohouser:{user}"),
                    number,
                    "unknown_user",
                    "the Zoho user is not an agent of this bridge",
                );
                Err(Box::new(error(
                    StatusCode::FORBIDDEN,
                    "unknown_user",
                    &format!("Zoho user '{shown}' is not an agent of this bridge"),
                )))
            }
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"status": "error", "code": code, "message": message})),
    )
        .into_response()
}

fn unauthorised(app: &App, params: &Params) -> Response {
    let user = params.get(&["zohouser", "userid", "user_id"]).unwrap_or("");
    let number = params.get(&["tonumber", "to", "number"]).unwrap_or("");
    app.dial.refuse_request(
        ClickSource::PhoneBridge,
        &format!("zohouser:{user}"),
        number,
        "unauthorized",
        "missing or wrong authorization secret",
    );
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong authorization",
    )
}

async fn click(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::read(query.as_deref(), &headers, &body);
    if !app.authorised(&headers, &params) {
        return unauthorised(&app, &params);
    }
    let (zohouser, email) = match app.agent(&params) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(number) = params.get(&["tonumber", "to", "number"]) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            "tonumber is missing",
        );
    };
    let record = match (
        params.get(&["module"]),
        params.get(&["entityid", "recordid", "record_id"]),
    ) {
        (Some(m), Some(id))
            if m.len() <= 64
                && id.len() <= 64
                && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && id.chars().all(|c| c.is_ascii_digit()) =>
        {
            Some(format!("{m}/{id}"))
        }
        _ => None,
    };
    let req = ClickRequest {
        source: ClickSource::PhoneBridge,
        agent_email: email,
        zohouser: Some(zohouser),
        number: number.to_string(),
        record,
    };
    match app.dial.click(req).await {
        Ok(a) => (
            StatusCode::OK,
            Json(json!({"status": "success", "click_id": a.click_id, "to": a.e164})),
        )
            .into_response(),
        Err(r) => refusal(&r),
    }
}

fn refusal(r: &Refusal) -> Response {
    let (status, code) = match r {
        Refusal::UnknownAgent(_) => (StatusCode::FORBIDDEN, "unknown_user"),
        Refusal::Number(super::guard::NumberRefusal::Invalid(_)) => {
            (StatusCode::BAD_REQUEST, "invalid")
        }
        Refusal::Number(_) => (StatusCode::FORBIDDEN, "blocked"),
        Refusal::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        Refusal::Pbx(_) => (StatusCode::BAD_GATEWAY, "notavailable"),
        Refusal::Busy => (StatusCode::SERVICE_UNAVAILABLE, "notavailable"),
    };
    let mut resp = error(status, code, &r.to_string());
    if let Refusal::RateLimited(rl) = r {
        let secs = rl.retry_after.as_secs().max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

async fn control(
    State(app): State<Arc<App>>,
    Path(action): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let what = match action.as_str() {
        "hangup" | "hungup" => Control::Hangup,
        "mute" => Control::Mute,
        "unmute" => Control::Unmute,
        // answer, hold, unhold, keypress: AMI has no portable way, so they are not
        // registered with Zoho and not served.
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_supported",
                "no such call control",
            )
        }
    };
    let params = Params::read(query.as_deref(), &headers, &body);
    if !app.authorised(&headers, &params) {
        return unauthorised(&app, &params);
    }
    let (_, email) = match app.agent(&params) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(callref) = params.get(&["callrefid", "id"]) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            "callrefid is missing",
        );
    };
    match app.dial.control(callref, Some(&email), what).await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "success"}))).into_response(),
        Err(e) => {
            let status = match e {
                ControlError::NotFound(_) => StatusCode::NOT_FOUND,
                ControlError::NotYours(_) => StatusCode::FORBIDDEN,
                ControlError::NoChannel(_) => StatusCode::CONFLICT,
                ControlError::Pbx(_) => StatusCode::BAD_GATEWAY,
            };
            error(status, "failed", &e.to_string())
        }
    }
}
