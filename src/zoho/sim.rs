//! A strict local Zoho (accounts server + CRM API) for tests, demos and manual trials.
//!
//! No test may reach the real Zoho, so this is what keeps the client honest: it enforces what
//! section 8 of `docs/zoho-crm-api.md` lists — one-use grant codes with a lifetime, token
//! answers with HTTP 200, the refresh throttle, a cap on live access tokens, the exact
//! `Zoho-oauthtoken` header, scopes per endpoint, data centers, users with paging, search
//! with 204 on no match, and Calls validation (mandatory fields, picklists, formats, lookups,
//! the 100-record cap, 201/207/400). Faults are injected from tests.
//!
//! Every data center lives under its own path prefix: accounts server and API domain of DC
//! `eu` are both `http://HOST:PORT/eu`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Limits of the simulated Zoho (defaults as Zoho documents them).
#[derive(Debug, Clone)]
pub struct SimLimits {
    pub code_lifetime: Duration,
    pub token_lifetime: Duration,
    /// Access tokens one refresh token may mint per window.
    pub refresh_limit: usize,
    pub refresh_window: Duration,
    /// Live access tokens per refresh token; minting one more evicts the oldest.
    pub live_tokens: usize,
}

impl Default for SimLimits {
    fn default() -> Self {
        SimLimits {
            code_lifetime: Duration::from_secs(180),
            token_lifetime: Duration::from_secs(3600),
            refresh_limit: 10,
            refresh_window: Duration::from_secs(600),
            live_tokens: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimUser {
    pub id: String,
    pub email: String,
    pub full_name: String,
    #[serde(default = "yes")]
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimPerson {
    pub id: String,
    pub full_name: String,
    /// Phone fields (`Phone`, `Mobile` ...) → the number as a person typed it.
    pub phones: HashMap<String, String>,
    #[serde(default)]
    pub owner_email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimClient {
    pub client_id: String,
    pub client_secret: String,
}

/// The org's data, from a JSON file for `zoho-sim`, or built in tests.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Seed {
    pub clients: Vec<SimClient>,
    pub users: Vec<SimUser>,
    pub contacts: Vec<SimPerson>,
    pub leads: Vec<SimPerson>,
    /// Allowed values of org-defined picklists (`Call_Purpose`, `Call_Result`).
    pub picklists: HashMap<String, Vec<String>>,
    /// Custom fields of the Calls module; those listed in `unique_fields` refuse duplicates.
    pub custom_fields: Vec<String>,
    pub unique_fields: Vec<String>,
    /// Grant codes to create at start: (client_id, dc, scopes).
    pub grant_codes: Vec<SeedCode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedCode {
    pub code: String,
    pub client_id: String,
    pub dc: String,
    pub scopes: String,
}

fn yes() -> bool {
    true
}

/// A fault to inject into the next CRM request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this HTTP status (500 `INTERNAL_ERROR`, 429 `TOO_MANY_REQUESTS`, no Retry-After).
    Status(u16),
    /// Wait this long before handling the request.
    Slow(Duration),
    /// Handle the request (records are stored), then drop the connection without an answer.
    DropAfterStore,
    /// Revoke every token first: the request then fails with `INVALID_TOKEN`.
    RevokeTokens,
    /// Expire every access token first (as if an hour had passed).
    ExpireAccessTokens,
    /// The inner fault, applied to the next record insert (searches and user lookups pass).
    OnInsert(Box<Fault>),
}

struct Code {
    client_id: String,
    scopes: HashSet<String>,
    dc: String,
    expires: Instant,
    used: bool,
}

struct Refresh {
    client_id: String,
    scopes: HashSet<String>,
    dc: String,
    minted: VecDeque<Instant>,
    live: VecDeque<String>,
    revoked: bool,
}

struct AccessToken {
    refresh: String,
    dc: String,
    scopes: HashSet<String>,
    expires: Instant,
}

/// Counters tests read.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub token_requests: usize,
    pub refreshes: usize,
    pub crm_requests: usize,
    pub inserts: usize,
}

struct Inner {
    base: String,
    limits: SimLimits,
    seed: Seed,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, Refresh>,
    access: HashMap<String, AccessToken>,
    records: HashMap<String, Vec<Value>>,
    faults: VecDeque<Fault>,
    next_id: u64,
    stats: SimStats,
    /// Modified_Time of Contacts and Leads added or changed after the seed.
    modified: HashMap<String, String>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running simulator.
#[derive(Clone)]
pub struct SimHandle {
    pub addr: SocketAddr,
    inner: Shared,
}

pub const DATA_CENTERS: [&str; 9] = [
    "com", "eu", "in", "com.au", "jp", "com.cn", "ca", "sa", "uk",
];

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    // A panicking test thread must not wedge the simulator for the others.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimHandle {
    /// Starts on `listen` (port 0 for any) and serves until the runtime ends.
    pub async fn start(
        listen: SocketAddr,
        seed: Seed,
        limits: SimLimits,
    ) -> std::io::Result<SimHandle> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let mut inner = Inner {
            base: format!("http://{addr}"),
            limits,
            seed: seed.clone(),
            codes: HashMap::new(),
            refresh: HashMap::new(),
            access: HashMap::new(),
            records: HashMap::new(),
            faults: VecDeque::new(),
            next_id: 5_725_767_000_000_600_000,
            stats: SimStats::default(),
            modified: HashMap::new(),
        };
        for c in &seed.grant_codes {
            let expires = Instant::now() + inner.limits.code_lifetime;
            inner.codes.insert(
                c.code.clone(),
                Code {
                    client_id: c.client_id.clone(),
                    scopes: scopes(&c.scopes),
                    dc: c.dc.clone(),
                    expires,
                    used: false,
                },
            );
        }
        let inner = Arc::new(Mutex::new(inner));
        let app = Router::new()
            .route("/{dc}/oauth/v2/token", post(token))
            .route("/{dc}/oauth/v2/token/revoke", post(revoke))
            .route("/{dc}/crm/{version}/users", get(users))
            .route("/{dc}/crm/{version}/{module}/search", get(search))
            .route(
                "/{dc}/crm/{version}/{module}",
                post(insert).get(list_people),
            )
            .route("/sim/codes", post(new_code))
            .route("/sim/records/{module}", get(list_records))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SimHandle { addr, inner })
    }

    /// The accounts server and API domain of a data center.
    pub fn url(&self, dc: &str) -> String {
        format!("http://{}/{dc}", self.addr)
    }

    /// Creates a one-use grant code, as the Self Client console's "Generate Code" does.
    pub fn grant_code(
        &self,
        client_id: &str,
        dc: &str,
        scope_list: &str,
        lifetime: Option<Duration>,
    ) -> String {
        let mut inner = lock(&self.inner);
        let code = format!("1000.sim{:x}.{}", inner.next_id, random_hex(16));
        inner.next_id += 1;
        let expires = Instant::now() + lifetime.unwrap_or(inner.limits.code_lifetime);
        inner.codes.insert(
            code.clone(),
            Code {
                client_id: client_id.into(),
                scopes: scopes(scope_list),
                dc: dc.into(),
                expires,
                used: false,
            },
        );
        code
    }

    pub fn inject(&self, fault: Fault) {
        lock(&self.inner).faults.push_back(fault);
    }

    /// Stored records of a module, in insertion order.
    pub fn records(&self, module: &str) -> Vec<Value> {
        lock(&self.inner)
            .records
            .get(module)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds (or replaces, by id) a Contact or Lead, modified now, as a user editing the CRM.
    pub fn upsert_person(&self, module: &str, person: SimPerson) {
        let mut g = lock(&self.inner);
        g.modified.insert(person.id.clone(), zoho_now());
        let list = if module == "Leads" {
            &mut g.seed.leads
        } else {
            &mut g.seed.contacts
        };
        list.retain(|p| p.id != person.id);
        list.push(person);
    }

    /// Registers a Self Client (its id and secret), as creating one in the API console does.
    pub fn add_client(&self, client_id: &str, client_secret: &str) {
        let mut g = lock(&self.inner);
        g.seed.clients.retain(|c| c.client_id != client_id);
        g.seed.clients.push(SimClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        });
    }

    /// Adds a value to an org picklist (`Call_Purpose` ...), as an administrator would.
    pub fn allow_picklist_value(&self, field: &str, value: &str) {
        lock(&self.inner)
            .seed
            .picklists
            .entry(field.to_string())
            .or_default()
            .push(value.to_string());
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.inner).stats.clone()
    }
}

fn scopes(list: &str) -> HashSet<String> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn random_hex(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

// ---- accounts server -----------------------------------------------------------------

async fn token(
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
    let client_ok = inner.seed.clients.iter().any(|c| {
        Some(&c.client_id) == p.get("client_id") && Some(&c.client_secret) == p.get("client_secret")
    });
    if !client_ok {
        return err("invalid_client");
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
fn mint(inner: &mut Inner, rt: &str) -> Result<Value, Value> {
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

async fn revoke(State(inner): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
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

// ---- CRM -------------------------------------------------------------------------------

/// 401 `INVALID_TOKEN`: expired, evicted, revoked, from another DC, or a malformed header.
fn invalid_token() -> Response {
    crm_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_TOKEN",
        "invalid oauth token",
        json!({}),
    )
}

fn crm_error(status: StatusCode, code: &str, message: &str, details: Value) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message, "status": "error", "details": details })),
    )
        .into_response()
}

/// Checks the exact header, the token, its DC and a scope; applies pending faults first.
/// `Ok(None)` to go on, `Ok(Some(resp))` to answer now.
async fn gate(
    inner: &Shared,
    headers: &HeaderMap,
    dc: &str,
    needed: &[String],
) -> (Option<Response>, bool) {
    let is_insert = needed.iter().any(|s| s.ends_with(".CREATE"));
    let fault = {
        let mut g = lock(inner);
        g.stats.crm_requests += 1;
        match g.faults.front() {
            Some(Fault::OnInsert(_)) if !is_insert => None,
            _ => match g.faults.pop_front() {
                Some(Fault::OnInsert(f)) => Some(*f),
                other => other,
            },
        }
    };
    let mut drop_after = false;
    match fault {
        Some(Fault::Status(429)) => {
            return (
                Some(crm_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    "too many requests",
                    json!({}),
                )),
                false,
            )
        }
        Some(Fault::Status(s)) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                Some(crm_error(
                    status,
                    "INTERNAL_ERROR",
                    "Internal Server Error",
                    json!({}),
                )),
                false,
            );
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::DropAfterStore) => drop_after = true,
        Some(Fault::RevokeTokens) => {
            let mut g = lock(inner);
            for r in g.refresh.values_mut() {
                r.revoked = true;
            }
            g.access.clear();
        }
        Some(Fault::ExpireAccessTokens) => {
            let mut g = lock(inner);
            for t in g.access.values_mut() {
                t.expires = Instant::now();
            }
        }
        // Nested wrappers are unwrapped when popped; one left here has nothing to add.
        Some(Fault::OnInsert(_)) | None => {}
    }
    let g = lock(inner);
    let header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(token) = header.strip_prefix("Zoho-oauthtoken ") else {
        return (Some(invalid_token()), false);
    };
    let valid = g.access.get(token).filter(|t| {
        t.dc == dc
            && t.expires > Instant::now()
            && g.refresh.get(&t.refresh).is_some_and(|r| !r.revoked)
    });
    let Some(t) = valid else {
        return (Some(invalid_token()), false);
    };
    if !needed.iter().any(|s| t.scopes.contains(s)) {
        return (
            Some(crm_error(
                StatusCode::UNAUTHORIZED,
                "OAUTH_SCOPE_MISMATCH",
                "Unauthorized",
                json!({}),
            )),
            false,
        );
    }
    (None, drop_after)
}

fn module_scopes(module: &str, ops: &[&str]) -> Vec<String> {
    let m = module.to_ascii_lowercase();
    let mut v: Vec<String> = ops
        .iter()
        .map(|op| format!("ZohoCRM.modules.{m}.{op}"))
        .collect();
    v.push(format!("ZohoCRM.modules.{m}.ALL"));
    v.push("ZohoCRM.modules.ALL".into());
    v
}

async fn users(
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

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

async fn search(
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

fn invalid_module() -> Response {
    crm_error(
        StatusCode::BAD_REQUEST,
        "INVALID_MODULE",
        "the module name given seems to be invalid",
        json!({}),
    )
}

/// Now, as Zoho writes times (seconds, with the offset).
fn zoho_now() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// Seeded records were last modified at this time; records added later carry their own.
const SEED_MODIFIED: &str = "2026-01-01T00:00:00+00:00";

fn modified_time<'a>(g: &'a Inner, p: &SimPerson) -> &'a str {
    g.modified.get(&p.id).map_or(SEED_MODIFIED, String::as_str)
}

/// A Contact or Lead as the CRM API shows it.
fn person_json(g: &Inner, p: &SimPerson) -> Value {
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
async fn list_people(
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

/// `(Field:equals:value)and(...)`, values with `\\`-escaped `( ) , \\`: the subset of
/// Zoho's criteria grammar the bridge uses to check for a record before resending it.
fn parse_criteria(text: &str) -> Option<Vec<(String, String)>> {
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

fn search_activities(g: &Inner, module: &str, criteria: Option<&String>) -> Response {
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

const CALL_FIELDS: [&str; 20] = [
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
const TASK_FIELDS: [&str; 10] = [
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
const READ_ONLY: [&str; 2] = ["Call_Duration_in_seconds", "Tag"];

fn record_error(code: &str, message: &str, field: &str, i: usize) -> Value {
    json!({ "code": code, "status": "error", "message": message,
            "details": { "api_name": field, "json_path": format!("$.data[{i}].{field}") } })
}

fn is_zoho_datetime(s: &str) -> bool {
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

fn duration_seconds(s: &str) -> Option<u64> {
    let (m, sec) = s.split_once(':')?;
    if m.len() < 2 || sec.len() != 2 || !m.chars().chain(sec.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let sec: u64 = sec.parse().ok()?;
    (sec < 60).then_some(m.parse::<u64>().ok()? * 60 + sec)
}

fn lookup_id(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str).or_else(|| v.as_str())
}

/// Validates one record of `module`; `Err` is the Zoho error entry.
fn validate(g: &Inner, module: &str, r: &Value, i: usize) -> Result<(), Value> {
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

async fn insert(
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

// ---- control endpoints for manual trials ---------------------------------------------------

#[derive(Deserialize)]
struct CodeRequest {
    client_id: String,
    dc: String,
    scopes: String,
}

async fn new_code(State(inner): State<Shared>, Json(req): Json<CodeRequest>) -> Response {
    let handle = SimHandle {
        addr: "127.0.0.1:0"
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
        inner,
    };
    Json(json!({ "code": handle.grant_code(&req.client_id, &req.dc, &req.scopes, None) }))
        .into_response()
}

async fn list_records(State(inner): State<Shared>, Path(module): Path<String>) -> Response {
    Json(json!({ "data": lock(&inner).records.get(&module).cloned().unwrap_or_default() }))
        .into_response()
}

/// The scopes the bridge needs, as one Self Client "Generate Code" scope string.
pub const BRIDGE_SCOPES: &str =
    "ZohoCRM.modules.calls.CREATE,ZohoCRM.modules.calls.READ,ZohoCRM.modules.tasks.CREATE,ZohoCRM.modules.contacts.READ,ZohoCRM.modules.leads.READ,ZohoCRM.users.READ";

/// A small org for demos and tests: an administrator, agents, contacts and leads whose
/// numbers are written the way people type them.
pub fn demo_seed() -> Seed {
    let user = |id: &str, email: &str, name: &str| SimUser {
        id: id.into(),
        email: email.into(),
        full_name: name.into(),
        active: true,
    };
    let person = |id: &str, name: &str, phones: &[(&str, &str)]| SimPerson {
        id: id.into(),
        full_name: name.into(),
        phones: phones
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        owner_email: None,
    };
    let _ = Map::<String, Value>::new();
    Seed {
        clients: vec![SimClient {
            client_id: "1000.DEMOCLIENT".into(),
            client_secret: "demo-client-secret".into(),
        }],
        users: vec![
            user("5725767000000411001", "admin@example.com", "Ada Admin"),
            user("5725767000000411002", "agent1001@example.com", "Agent 1001"),
            user("5725767000000411003", "agent1002@example.com", "Agent 1002"),
            user("5725767000000411004", "agent1003@example.com", "Agent 1003"),
            user("5725767000000411005", "agent2001@example.com", "Agent 2001"),
        ],
        contacts: vec![
            person(
                "5725767000000512001",
                "Mario Rossi",
                &[("Phone", "+39 06 1234 567")],
            ),
            person(
                "5725767000000512002",
                "Giulia Bianchi",
                &[("Mobile", "0039 333 123 4567")],
            ),
        ],
        leads: vec![person(
            "5725767000000513001",
            "Luca Verdi",
            &[("Phone", "06 1234 5678")],
        )],
        picklists: HashMap::from([(
            "Call_Purpose".to_string(),
            vec![
                "Support".to_string(),
                "Sales".to_string(),
                "Prospecting".to_string(),
            ],
        )]),
        custom_fields: vec!["Bridge_Key__c".into()],
        unique_fields: vec!["Bridge_Key__c".into()],
        grant_codes: Vec::new(),
    }
}
