//! The bridge's HTTP side: `/healthz`, `/readyz`, `/metrics`, the interaction search API and
//! the search page.
//!
//! Everything but `/healthz` and `/readyz` needs the configured token: as `Authorization: Bearer …` for the
//! API, or for people through a small sign-in form that gives a signed, expiring session
//! cookie (never the token itself; see [`crate::websec`]). `/readyz` answers its status to
//! anyone and its details only with the token. With no token configured only `/healthz` is
//! served. Listens on 127.0.0.1 unless told otherwise.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::Config;
use crate::secret::Secret;
use crate::store::{Interaction, Search, Store};

const COOKIE: &str = "azb_session";
const PER_PAGE: u32 = 50;

/// What the handlers share.
struct App {
    store: Store,
    ops: Option<crate::ops::Ops>,
    token: Option<Secret>,
    country: Option<phonenumber::country::Id>,
    /// `https://crm.zoho.eu` and so on, for links to the records.
    crm_host: Option<String>,
    page: minijinja::Environment<'static>,
    sessions: crate::websec::Sessions,
    brake: crate::websec::SignInBrake,
    /// `Secure` on the session cookie.
    secure_cookie: bool,
}

/// The API's and page's filters, as query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    pub contact_phone: Option<String>,
    pub lead_phone: Option<String>,
    pub user_email: Option<String>,
    pub phone: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (a day in UTC).
    pub from: Option<String>,
    pub to: Option<String>,
    pub page: Option<u32>,
}

/// A filter value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{param}: {message}")]
pub struct BadFilter {
    pub param: &'static str,
    pub message: String,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `+E164` of a number as a person may type it.
pub fn normalise_phone(
    param: &'static str,
    raw: &str,
    country: Option<phonenumber::country::Id>,
) -> Result<String, BadFilter> {
    crate::phone::forms(raw, country, 0)
        .e164
        .ok_or_else(|| BadFilter {
            param,
            message: format!("'{raw}' is not a phone number"),
        })
}

fn time(param: &'static str, raw: &str, end_of_day: bool) -> Result<i64, BadFilter> {
    if let Ok(t) = raw.parse::<jiff::Timestamp>() {
        return Ok(t.as_microsecond());
    }
    let day = raw.parse::<jiff::civil::Date>().map_err(|_| BadFilter {
        param,
        message: format!("'{raw}' is neither an RFC 3339 time nor YYYY-MM-DD"),
    })?;
    let day = if end_of_day {
        day.tomorrow().unwrap_or(day)
    } else {
        day
    };
    day.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_microsecond())
        .map_err(|e| BadFilter {
            param,
            message: e.to_string(),
        })
}

impl Filters {
    /// The store's search: phone numbers normalised, times parsed.
    pub fn search(&self, country: Option<phonenumber::country::Id>) -> Result<Search, BadFilter> {
        let phone = |param, v: &Option<String>| {
            nonempty(v)
                .map(|raw| normalise_phone(param, raw, country))
                .transpose()
        };
        Ok(Search {
            phone_e164: phone("phone", &self.phone)?,
            contact_phone_e164: phone("contact_phone", &self.contact_phone)?,
            lead_phone_e164: phone("lead_phone", &self.lead_phone)?,
            user_email: nonempty(&self.user_email).map(str::to_string),
            from: nonempty(&self.from)
                .map(|t| time("from", t, false))
                .transpose()?,
            to: nonempty(&self.to)
                .map(|t| time("to", t, true))
                .transpose()?,
            page: self.page.unwrap_or(1).max(1),
            per_page: PER_PAGE,
        })
    }
}

/// The session cookie of a request, if it sent one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .next()
}

impl App {
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|given| crate::websec::same_secret(given.trim(), token.expose())) {
            return true;
        }
        session_cookie(headers).is_some_and(|c| self.sessions.valid(c))
    }

    fn record_url(&self, i: &Interaction) -> Option<String> {
        Some(format!(
            "{}/crm/tab/Calls/{}",
            self.crm_host.as_ref()?,
            i.activity_id.as_ref()?
        ))
    }
}

/// The router for `cfg`; with no token configured, everything but `/healthz` answers 401.
pub fn router(cfg: &Config, store: Store, ops: Option<crate::ops::Ops>) -> Result<Router, String> {
    let token = match (&cfg.http.token, &cfg.http.token_env) {
        (Some(t), _) if !t.is_empty() => Some(t.clone()),
        (_, Some(var)) => std::env::var(var)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        _ => None,
    };
    if token.is_none() {
        tracing::warn!(
            "no [http] token (token_env): the search API and page are off; /healthz only"
        );
    }
    let crm_host = cfg
        .zoho
        .accounts
        .values()
        .find_map(|a| a.dc.as_deref()?.parse::<crate::zoho::DataCenter>().ok())
        .map(|dc| dc.crm_host());
    let mut page = minijinja::Environment::new();
    page.add_template("page.html", PAGE)
        .map_err(|e| format!("search page template: {e}"))?;
    let app = Arc::new(App {
        store,
        ops,
        token,
        country: crate::phone::country(&cfg.calls.default_country),
        crm_host,
        page,
        sessions: crate::websec::Sessions::new(crate::ops::seconds(
            cfg.http.session_hours * 3600.0,
            std::time::Duration::from_secs(12 * 3600),
        )),
        brake: crate::websec::SignInBrake::default(),
        secure_cookie: cfg.http.secure_cookie,
    });
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/interactions", get(api_search))
        .route("/", get(page_search))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .with_state(app)
        .merge(recordings_router(cfg)?)
        .layer(axum::middleware::map_response(
            crate::websec::security_headers,
        )))
}

/// `/recordings/...` when `[recordings]` has a root; an empty router otherwise.
fn recordings_router(cfg: &Config) -> Result<Router, String> {
    Ok(crate::recordings::Links::from_config(&cfg.recordings)?
        .map(crate::recordings::router)
        .unwrap_or_default())
}

/// Serves until `stop`, with the default connection limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    serve_with(
        listener,
        router,
        crate::websec::ServeLimits::default(),
        stop,
    )
    .await
}

/// Serves until `stop`, at most `limits.max_connections` at once, each request's headers
/// within `limits.header_timeout`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: crate::websec::ServeLimits,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(listen = %listener.local_addr()?, max_connections = limits.max_connections, "HTTP: /healthz, /api/interactions, search page");
    crate::websec::serve(listener, router, limits, stop).await
}

/// 200 when every PBX is connected, every Zoho account has a token, the store writes, every
/// worker runs and the outbox moves; 503 otherwise. The details (PBX and account names, the
/// reason) only with the token; without, just `{"ready": …}`.
async fn readyz(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(ops) = &app.ops else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no daemon state");
    };
    let (ready, details) = ops.readiness(&app.store).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if app.authorised(&headers) {
        (status, Json(details)).into_response()
    } else {
        (status, Json(json!({ "ready": ready }))).into_response()
    }
}

/// Prometheus text format; behind the token like the API (scrapers send a bearer token).
async fn metrics_text(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !app.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "a bearer token is required");
    }
    let text = match &app.ops {
        Some(ops) => ops.metrics_text(&app.store).await,
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn api_search(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Response {
    if !app.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "a bearer token is required");
    }
    let search = match f.search(app.country) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match app.store.search(&search).await {
        Ok((rows, total)) => {
            let rows: Vec<_> = rows
                .into_iter()
                .map(|i| {
                    let url = app.record_url(&i);
                    let mut v = json!(i);
                    v["zoho_url"] = json!(url);
                    v
                })
                .collect();
            Json(json!({ "interactions": rows, "total": total, "page": search.page, "per_page": search.per_page }))
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "search");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is not available",
            )
        }
    }
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// Sign-in: the token for a session cookie. Failures are logged with the peer address and
/// braked per address (429 past [`crate::websec::SIGNIN_FAILURES`] a minute).
async fn login(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<crate::websec::Peer>>,
    Form(l): Form<Login>,
) -> Response {
    let peer = peer.map(|axum::Extension(p)| p.0);
    let ip = peer.map(|p| p.ip());
    if let Err(wait) = app.brake.check(ip) {
        tracing::warn!(peer = ?peer, retry_in_s = wait, "sign-in refused: too many failures from this address");
        metrics::counter!("azb_http_signin_refused_total").increment(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.to_string())],
            Html(render_login(&app, true)),
        )
            .into_response();
    }
    let ok = app
        .token
        .as_ref()
        .is_some_and(|t| crate::websec::same_secret(l.token.trim(), t.expose()));
    if !ok {
        let failures = app.brake.failed(ip);
        metrics::counter!("azb_http_signin_failures_total").increment(1);
        tracing::warn!(peer = ?peer, failures_this_minute = failures, "failed sign-in");
        return (StatusCode::UNAUTHORIZED, Html(render_login(&app, true))).into_response();
    }
    app.brake.succeeded(ip);
    tracing::info!(peer = ?peer, "signed in");
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        app.sessions.issue(),
        app.sessions.lifetime().as_secs(),
        if app.secure_cookie { "; Secure" } else { "" }
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// Sign-out: the session is revoked here and the cookie cleared in the browser.
async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(c) = session_cookie(&headers) {
        app.sessions.revoke(c);
    }
    let cookie = format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if app.secure_cookie { "; Secure" } else { "" }
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

fn render_login(app: &App, failed: bool) -> String {
    render(app, json!({ "login": true, "failed": failed }))
}

fn render(app: &App, ctx: serde_json::Value) -> String {
    app.page
        .get_template("page.html")
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| format!("template error: {e}"))
}

async fn page_search(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Response {
    if !app.authorised(&headers) {
        return (StatusCode::UNAUTHORIZED, Html(render_login(&app, false))).into_response();
    }
    let (rows, total, problem) = match f.search(app.country) {
        Ok(search) => match app.store.search(&search).await {
            Ok((rows, total)) => (rows, total, None),
            Err(e) => {
                tracing::error!(error = %e, "search");
                (
                    Vec::new(),
                    0,
                    Some("the store is not available".to_string()),
                )
            }
        },
        Err(e) => (Vec::new(), 0, Some(e.to_string())),
    };
    let page = f.page.unwrap_or(1).max(1);
    let rows: Vec<_> = rows
        .iter()
        .map(|i| {
            json!({
                "ended_at": i.ended_at.as_deref().map(|t| t.replace('T', " ")).map(|t| t.chars().take(19).collect::<String>()),
                "direction": i.direction, "status": i.status,
                "number": i.remote_number.as_deref().or(i.caller.as_deref()),
                "queue": i.queue, "agent": i.agent, "route": i.outbound_route,
                "user": i.user_email.as_deref().or(i.agent_email.as_deref()),
                "duration": crate::zoho::activity::duration_mmss(i.talk_seconds.max(0) as u32),
                "delivery": i.delivery, "delivery_error": i.delivery_error,
                "linked": if i.contact_id.is_some() { "Contact" } else if i.lead_id.is_some() { "Lead" } else { "" },
                "url": app.record_url(i),
            })
        })
        .collect();
    let query = |p: u32| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("phone", &f.phone),
            ("contact_phone", &f.contact_phone),
            ("lead_phone", &f.lead_phone),
            ("user_email", &f.user_email),
            ("from", &f.from),
            ("to", &f.to),
        ] {
            if let Some(v) = nonempty(v) {
                q.append_pair(k, v);
            }
        }
        q.append_pair("page", &p.to_string());
        format!("?{}", q.finish())
    };
    let pages = ((total.max(0) as u32).div_ceil(PER_PAGE)).max(1);
    Html(render(
        &app,
        json!({
            "login": false, "rows": rows, "total": total, "page": page, "pages": pages,
            "prev": (page > 1).then(|| query(page - 1)),
            "next": (page < pages).then(|| query(page + 1)),
            "problem": problem,
            "f": { "phone": f.phone, "contact_phone": f.contact_phone, "lead_phone": f.lead_phone,
                   "user_email": f.user_email, "from": f.from, "to": f.to },
        }),
    ))
    .into_response()
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Calls · ami-zoho-bridge</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2433; background: #f5f7fa; }
header { background: #1d2433; color: #fff; padding: 12px 24px; font-weight: 600; }
main { padding: 16px 24px; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: end; margin-bottom: 16px; }
label { display: flex; flex-direction: column; font-size: 12px; color: #5a6478; }
input { padding: 6px 8px; border: 1px solid #c8cfdb; border-radius: 4px; font: inherit; }
button { padding: 7px 14px; border: 0; border-radius: 4px; background: #2f6fed; color: #fff; font: inherit; cursor: pointer; }
table { border-collapse: collapse; width: 100%; background: #fff; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid #e6e9ef; white-space: nowrap; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .03em; color: #5a6478; background: #fafbfc; }
.s-answered { color: #1a7f37; } .s-abandoned, .s-failed, .s-congestion { color: #c0392b; }
.d-delivered { color: #1a7f37; } .d-failed { color: #c0392b; font-weight: 600; } .d-pending { color: #9a6700; }
.muted { color: #8a93a6; } .pager { margin-top: 12px; display: flex; gap: 12px; align-items: center; }
.problem { background: #fdecea; color: #8a1c12; padding: 8px 12px; border-radius: 4px; margin-bottom: 12px; }
</style></head><body>
<header>ami-zoho-bridge · calls{% if not login %}<form method="post" action="/logout" style="float:right;margin:0"><button type="submit" id="signout">Sign out</button></form>{% endif %}</header>
<main>
{% if login %}
  <form method="post" action="/login" class="filters">
    <label>Access token<input type="password" name="token" autofocus></label>
    <button type="submit">Sign in</button>
  </form>
  {% if failed %}<p class="problem">That token is not right.</p>{% endif %}
{% else %}
  <form method="get" action="/" class="filters" id="filters">
    <label>Phone (any)<input name="phone" value="{{ f.phone or '' }}"></label>
    <label>Contact phone<input name="contact_phone" value="{{ f.contact_phone or '' }}"></label>
    <label>Lead phone<input name="lead_phone" value="{{ f.lead_phone or '' }}"></label>
    <label>User e-mail<input name="user_email" value="{{ f.user_email or '' }}"></label>
    <label>From<input name="from" placeholder="YYYY-MM-DD" value="{{ f.from or '' }}"></label>
    <label>To<input name="to" placeholder="YYYY-MM-DD" value="{{ f.to or '' }}"></label>
    <button type="submit" id="search">Search</button>
  </form>
  {% if problem %}<p class="problem">{{ problem }}</p>{% endif %}
  <table id="interactions">
    <thead><tr><th>Ended (UTC)</th><th>Direction</th><th>Status</th><th>Number</th><th>Linked</th><th>Queue</th><th>Agent</th><th>Route</th><th>User</th><th>Talk</th><th>Delivery</th><th>Zoho</th></tr></thead>
    <tbody>
    {% for r in rows %}
      <tr class="row">
        <td>{{ r.ended_at or '' }}</td><td>{{ r.direction }}</td><td class="s-{{ r.status }}">{{ r.status }}</td>
        <td class="number">{{ r.number or '' }}</td><td>{{ r.linked }}</td><td>{{ r.queue or '' }}</td><td>{{ r.agent or '' }}</td>
        <td>{{ r.route or '' }}</td><td>{{ r.user or '' }}</td><td>{{ r.duration }}</td>
        <td class="d-{{ r.delivery }}"{% if r.delivery_error %} title="{{ r.delivery_error }}"{% endif %}>{{ r.delivery }}{% if r.delivery_error %}<div class="muted reason">{{ r.delivery_error }}</div>{% endif %}</td>
        <td>{% if r.url %}<a href="{{ r.url }}" target="_blank" rel="noopener">open</a>{% else %}<span class="muted">–</span>{% endif %}</td>
      </tr>
    {% else %}
      <tr><td colspan="12" class="muted">No calls match.</td></tr>
    {% endfor %}
    </tbody>
  </table>
  <div class="pager">
    {% if prev %}<a href="{{ prev }}">← newer</a>{% endif %}
    <span class="muted">page {{ page }} of {{ pages }} · {{ total }} calls</span>
    {% if next %}<a href="{{ next }}">older →</a>{% endif %}
  </div>
{% endif %}
</main></body></html>
"#;
