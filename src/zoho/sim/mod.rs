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

mod accounts;
mod control;
mod metering;
mod people;
mod phonebridge;
mod records;

use accounts::{revoke, token};
pub use control::{demo_seed, BRIDGE_SCOPES};
use control::{list_records, new_code};
use people::{invalid_module, list_people, search, users, zoho_now};
pub use phonebridge::PopEntry;
use records::{insert, search_activities};

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
    /// Time every CRM request takes, plus up to `jitter` more (uniform).
    pub latency: Duration,
    pub jitter: Duration,
    /// The edition's cap on CRM requests in flight (Standard 10 ... Ultimate 25); past it,
    /// 429. None: no cap.
    pub concurrency: Option<usize>,
    /// The org's daily credits; once spent, 429. None: unmetered (credits still counted).
    pub daily_credits: Option<u64>,
    /// Send `X-API-CREDITS-REMAINING` on every answer, not only once half is spent.
    pub credits_header_always: bool,
}

impl Default for SimLimits {
    fn default() -> Self {
        SimLimits {
            code_lifetime: Duration::from_secs(180),
            token_lifetime: Duration::from_secs(3600),
            refresh_limit: 10,
            refresh_window: Duration::from_secs(600),
            live_tokens: 10,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            concurrency: None,
            daily_credits: None,
            credits_header_always: false,
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
    /// Records of each insert request, in arrival order.
    pub insert_sizes: Vec<usize>,
    /// Credits spent, as Zoho counts them.
    pub credits: u64,
    /// 429s answered because of the concurrency cap, and because the credits ran out.
    pub throttled_concurrency: usize,
    pub throttled_credits: usize,
    /// Most CRM requests in flight at once.
    pub max_in_flight: usize,
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
    /// PhoneBridge: the enabled provider, the per-user timelines.
    pb: phonebridge::PbState,
    /// CRM requests being answered now.
    in_flight: usize,
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
            pb: Default::default(),
            in_flight: 0,
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
        let crm = Router::new()
            .route("/{dc}/crm/{version}/users", get(users))
            .route("/{dc}/crm/{version}/{module}/search", get(search))
            .route(
                "/{dc}/crm/{version}/{module}",
                post(insert).get(list_people),
            )
            .layer(axum::middleware::from_fn_with_state(
                inner.clone(),
                metering::meter,
            ));
        let app = Router::new()
            .route("/{dc}/oauth/v2/token", post(token))
            .route("/{dc}/oauth/v2/token/revoke", post(revoke))
            .merge(crm)
            .route(
                "/{dc}/phonebridge/v3/integrate",
                post(phonebridge::integrate).delete(phonebridge::integrate),
            )
            .route("/{dc}/phonebridge/v3/users", get(phonebridge::users))
            .route(
                "/{dc}/phonebridge/v3/callnotify",
                post(phonebridge::callnotify),
            )
            .route("/sim/phonebridge/timeline", get(phonebridge::timeline_json))
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

    /// What each agent's Zoho showed through PhoneBridge, by the agent's e-mail, in order.
    pub fn phonebridge_timeline(&self) -> HashMap<String, Vec<PopEntry>> {
        phonebridge::timeline_by_email(&lock(&self.inner))
    }

    /// PhoneBridge requests received (any endpoint, answered or refused).
    pub fn phonebridge_requests(&self) -> usize {
        lock(&self.inner).pb.requests
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
