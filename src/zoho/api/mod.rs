//! The CRM endpoints the bridge uses: users, Contacts/Leads search by phone, record inserts.
//!
//! Every request carries `Authorization: Zoho-oauthtoken …`, waits for one of a few permits
//! (Zoho limits concurrency per org), refreshes the token once on `401 INVALID_TOKEN`, and maps
//! failures to [`Retry`] classes so the outbox knows whether to try again, check first, or
//! give up. Users and phone matches are cached, because each request costs Zoho credits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

mod answers;
mod index;

pub use answers::escape_criteria;
use answers::{classify, network_error, ok_unless_denied, parse_users, record_outcome};

use super::credits::{self, CreditMeter};
use super::oauth::OAuth;
use super::phonebook::PhoneBook;
use super::throttle::InFlight;
use super::{Retry, ZohoError};
use crate::config::AccountConfig;
use crate::phone;

/// A Zoho user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub full_name: String,
}

/// Where a phone number was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Module {
    Contacts,
    Leads,
}

impl Module {
    pub fn as_str(self) -> &'static str {
        match self {
            Module::Contacts => "Contacts",
            Module::Leads => "Leads",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneMatch {
    pub module: Module,
    pub id: String,
    pub name: Option<String>,
    pub owner_email: Option<String>,
}

/// The fate of one record of an insert, in input order.
#[derive(Debug, Clone)]
pub enum RecordOutcome {
    Created {
        id: String,
    },
    /// Refused as a duplicate of an existing record on a unique field: that record's id.
    Duplicate {
        id: String,
        field: String,
    },
    Failed(ZohoError),
}

/// The owner of an activity, and whether it is the administrator fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub fallback: bool,
}

#[derive(Debug, Clone, Copy)]
struct IndexSettings {
    refresh: Duration,
    rebuild: Duration,
}

/// The phone index and when it was read; after a failed read, searches serve for a while.
#[derive(Default)]
struct IndexState {
    built: Option<BuiltIndex>,
    failed_at: Option<Instant>,
}

struct BuiltIndex {
    book: PhoneBook,
    built: Instant,
    refreshed: Instant,
    /// Wall time the last read started: the next one asks for records modified since.
    since: jiff::Timestamp,
}

fn unix_now() -> u64 {
    jiff::Timestamp::now().as_second().max(0) as u64
}

/// After the index cannot be read, how long lookups search Zoho instead of trying again.
const INDEX_RETRY: Duration = Duration::from_secs(60);

struct UserCache {
    at: Instant,
    by_email: HashMap<String, User>,
}

/// A CRM client for one account.
pub struct ZohoApi {
    oauth: Arc<OAuth>,
    http: reqwest::Client,
    version: String,
    /// Requests in flight: at most `max_in_flight`, fewer after a 429.
    gate: InFlight,
    credits: std::sync::Mutex<CreditMeter>,
    throttled: std::sync::atomic::AtomicU64,
    users_ttl: Duration,
    phone_ttl: Duration,
    last_digits: usize,
    country: Option<phonenumber::country::Id>,
    admin_email: Option<String>,
    users: Mutex<Option<UserCache>>,
    admin: Mutex<Option<User>>,
    phones: Mutex<HashMap<String, (Instant, Option<PhoneMatch>)>>,
    /// `Some` when the phone index is on.
    index: Option<IndexSettings>,
    book: Mutex<IndexState>,
    /// A keeper task refreshes the index ([`ZohoApi::keep_index`]): lookups never wait for it.
    index_kept: std::sync::atomic::AtomicBool,
    requests: std::sync::atomic::AtomicU64,
}

/// An HTTP answer worth reading.
struct Answer {
    status: u16,
    body: Option<Value>,
    /// `Retry-After` in seconds, when a 429 carried one.
    retry_after: Option<u64>,
}

impl ZohoApi {
    pub fn new(
        oauth: Arc<OAuth>,
        cfg: &AccountConfig,
        default_country: &str,
        http: reqwest::Client,
    ) -> ZohoApi {
        ZohoApi {
            oauth,
            http,
            version: cfg.api_version.clone(),
            gate: InFlight::new(cfg.max_in_flight),
            credits: std::sync::Mutex::new(CreditMeter::new(
                cfg.daily_credits,
                cfg.credits_warn_share,
                unix_now(),
            )),
            throttled: std::sync::atomic::AtomicU64::new(0),
            users_ttl: Duration::from_secs(cfg.users_cache_seconds),
            phone_ttl: Duration::from_secs(cfg.phone_cache_seconds),
            last_digits: cfg.match_last_digits,
            country: phone::country(default_country),
            admin_email: cfg.admin_email.clone(),
            users: Mutex::new(None),
            admin: Mutex::new(None),
            phones: Mutex::new(HashMap::new()),
            index: cfg.phone_index.then(|| IndexSettings {
                refresh: Duration::from_secs(cfg.phone_index_refresh_seconds),
                rebuild: Duration::from_secs(cfg.phone_index_rebuild_seconds),
            }),
            book: Mutex::new(IndexState::default()),
            index_kept: std::sync::atomic::AtomicBool::new(false),
            requests: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// HTTP requests made to the CRM API so far (for the requests-per-activity figure).
    pub fn requests_made(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn oauth(&self) -> &OAuth {
        &self.oauth
    }

    /// Credits spent so far, counted as Zoho does (one a read, ⌈records/10⌉ an insert).
    pub fn credits_spent(&self) -> u64 {
        self.meter().total()
    }

    /// Zoho's own count of the org's credits left, when it sent one.
    pub fn credits_remaining(&self) -> Option<u64> {
        self.meter().remaining()
    }

    /// 429 answers seen so far.
    pub fn throttled_seen(&self) -> u64 {
        self.throttled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests this account may have in flight now (lower after 429s).
    pub fn in_flight_limit(&self) -> usize {
        self.gate.limit()
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, CreditMeter> {
        // Counters only: a poisoned lock still holds usable figures.
        self.credits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Books an answer: a 429 narrows the window; anything Zoho processed costs credits.
    fn book_answer(&self, status: u16, write_records: Option<usize>, remaining: Option<u64>) {
        let account = self.oauth.account().to_string();
        if status == 429 {
            self.gate.answered(true);
            self.throttled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("azb_zoho_throttled_total", "account" => account).increment(1);
            return;
        }
        self.gate.answered(false);
        // A refused token is turned away before the API runs: no credit.
        if status == 401 {
            return;
        }
        let cost = credits::request_cost(write_records);
        let now = unix_now();
        let mut m = self.meter();
        m.spend(now, cost);
        if let Some(r) = remaining {
            m.set_remaining(r);
            metrics::gauge!("azb_zoho_credits_remaining", "account" => account.clone())
                .set(r as f64);
        }
        metrics::counter!("azb_zoho_credits_total", "account" => account.clone()).increment(cost);
        metrics::gauge!("azb_zoho_credits_projected_day", "account" => account.clone())
            .set(m.projected_day(now));
        if let Some(w) = m.check(now) {
            tracing::warn!(
                account = %account,
                projected_credits_per_day = w.projected.round() as u64,
                org_credits_used = ?w.org_used,
                daily_credits = w.budget,
                warn_share = w.share,
                "Zoho API credits: the day's projected use passes the configured share of the budget"
            );
        }
    }

    /// One CRM request, with the token refreshed once on `INVALID_TOKEN`.
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, ZohoError> {
        self.request_with(method, path, query, body, &[]).await
    }

    /// [`Self::request`] with extra headers (`If-Modified-Since`).
    async fn request_with(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Answer, ZohoError> {
        let _slot = self.gate.acquire().await;
        let write_records = (method != Method::GET).then(|| {
            body.and_then(|b| b.get("data"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        });
        let mut refreshed = false;
        loop {
            let access = self.oauth.access().await?;
            let url = format!(
                "{}/crm/{}/{}",
                access.api_domain,
                self.version,
                path.trim_start_matches('/')
            );
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(
                    "Authorization",
                    format!("Zoho-oauthtoken {}", access.token.expose()),
                )
                .query(query);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let sent_write = method != Method::GET;
            let started = Instant::now();
            let response = req.send().await;
            metrics::histogram!("azb_zoho_request_seconds", "method" => method.to_string())
                .record(started.elapsed().as_secs_f64());
            let response = response.map_err(|e| network_error(&e, sent_write, path))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let remaining = response
                .headers()
                .get("x-api-credits-remaining")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            self.book_answer(status, write_records, remaining);
            let bytes = response
                .bytes()
                .await
                .map_err(|e| network_error(&e, sent_write, path))?;
            let body: Option<Value> = if bytes.is_empty() {
                None
            } else {
                serde_json::from_slice(&bytes).ok()
            };
            let code = body
                .as_ref()
                .and_then(|b| b.get("code"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if status == 401 && code == "INVALID_TOKEN" && !refreshed {
                // Expired early, evicted or revoked: refresh once and try again.
                self.oauth.invalidate(&access.token).await;
                refreshed = true;
                continue;
            }
            return Ok(Answer {
                status,
                body,
                retry_after,
            });
        }
    }

    /// Turns a non-success answer into an error.
    fn fail(answer: &Answer, what: &str) -> ZohoError {
        let b = answer.body.as_ref();
        let text = |k: &str| {
            b.and_then(|b| b.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let code = text("code").unwrap_or_else(|| format!("HTTP_{}", answer.status));
        let mut message = text("message").unwrap_or_else(|| format!("{what} failed"));
        let field = b
            .and_then(|b| b.pointer("/details/api_name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if answer.status == 429 {
            return ZohoError::Throttled {
                message: format!("{what}: {message}"),
                retry_after_seconds: answer.retry_after,
            };
        }
        if code == "OAUTH_SCOPE_MISMATCH" {
            message = format!("{what}: the token lacks the OAuth scope for this endpoint");
        }
        ZohoError::Api {
            status: answer.status,
            code: code.clone(),
            message,
            field,
            retry: classify(answer.status, &code),
        }
    }

    /// The token's own user: the administrator fallback owner when none is configured.
    pub async fn current_user(&self) -> Result<User, ZohoError> {
        let a = self
            .request(Method::GET, "users", &[("type", "CurrentUser")], None)
            .await?;
        if a.status != 200 {
            return Err(Self::fail(&a, "reading the current user"));
        }
        parse_users(a.body.as_ref())
            .into_iter()
            .next()
            .ok_or_else(|| ZohoError::Api {
                status: a.status,
                code: "NO_CURRENT_USER".into(),
                message: "the users endpoint returned no current user".into(),
                field: None,
                retry: Retry::Permanent,
            })
    }

    /// Every active user, page by page.
    pub async fn active_users(&self) -> Result<Vec<User>, ZohoError> {
        let mut out = Vec::new();
        for page in 1..=50 {
            let page_s = page.to_string();
            let a = self
                .request(
                    Method::GET,
                    "users",
                    &[
                        ("type", "ActiveUsers"),
                        ("page", &page_s),
                        ("per_page", "200"),
                    ],
                    None,
                )
                .await?;
            match a.status {
                204 => break,
                200 => {}
                _ => return Err(Self::fail(&a, "listing active users")),
            }
            out.extend(parse_users(a.body.as_ref()));
            let more = a
                .body
                .as_ref()
                .and_then(|b| b.pointer("/info/more_records"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// The user with `email` (case-insensitive), from a cache refreshed on expiry or a miss.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, ZohoError> {
        let key = email.trim().to_ascii_lowercase();
        {
            let cache = self.users.lock().await;
            if let Some(c) = cache.as_ref() {
                if c.at.elapsed() < self.users_ttl {
                    if let Some(u) = c.by_email.get(&key) {
                        return Ok(Some(u.clone()));
                    }
                    // A miss shortly after a refresh is a real miss: do not hammer Zoho.
                    if c.at.elapsed() < Duration::from_secs(60) {
                        return Ok(None);
                    }
                }
            }
        }
        let users = self.active_users().await?;
        let by_email: HashMap<String, User> = users
            .into_iter()
            .map(|u| (u.email.to_ascii_lowercase(), u))
            .collect();
        let found = by_email.get(&key).cloned();
        *self.users.lock().await = Some(UserCache {
            at: Instant::now(),
            by_email,
        });
        Ok(found)
    }

    /// The administrator: the configured `admin_email`'s user, else the token's user.
    pub async fn admin(&self) -> Result<User, ZohoError> {
        if let Some(u) = self.admin.lock().await.clone() {
            return Ok(u);
        }
        let user = match &self.admin_email {
            Some(e) => match self.user_by_email(e).await? {
                Some(u) => u,
                None => {
                    return Err(ZohoError::Config(format!(
                        "admin_email {e} is not an active Zoho user"
                    )))
                }
            },
            None => self.current_user().await?,
        };
        *self.admin.lock().await = Some(user.clone());
        Ok(user)
    }

    /// The owner of an activity: the agent's Zoho user by e-mail, else the administrator.
    /// The fallback is logged with the agent's e-mail.
    pub async fn owner_for(&self, agent_email: Option<&str>) -> Result<Owner, ZohoError> {
        if let Some(email) = agent_email.filter(|e| !e.trim().is_empty()) {
            if let Some(u) = self.user_by_email(email).await? {
                return Ok(Owner {
                    id: u.id,
                    fallback: false,
                });
            }
            tracing::warn!(agent_email = %email, "no active Zoho user with the agent's e-mail: the administrator owns the activity");
        }
        Ok(Owner {
            id: self.admin().await?.id,
            fallback: true,
        })
    }

    /// The Contact (first) or Lead whose phone matches `number`, trying E.164, `00`
    /// international and national forms, then the last digits.
    pub async fn find_by_phone(&self, number: &str) -> Result<Option<PhoneMatch>, ZohoError> {
        let forms = phone::forms(number, self.country, self.last_digits);
        let key = forms.e164.clone().unwrap_or_else(|| phone::digits(number));
        if key.len() < 3 {
            return Ok(None);
        }
        if let Some(settings) = self.index {
            if let Some(found) = self.indexed(settings, number).await {
                return Ok(found);
            }
        }
        if let Some((at, hit)) = self.phones.lock().await.get(&key) {
            if at.elapsed() < self.phone_ttl {
                return Ok(hit.clone());
            }
        }
        let mut found = None;
        'modules: for module in [Module::Contacts, Module::Leads] {
            for v in &forms.variants {
                if let Some(m) = self.search(module, &[("phone", v.as_str())]).await? {
                    found = Some(m);
                    break 'modules;
                }
            }
        }
        if found.is_none() {
            if let Some(last) = &forms.last_digits {
                for module in [Module::Contacts, Module::Leads] {
                    if let Some(m) = self.search(module, &[("word", last.as_str())]).await? {
                        found = Some(m);
                        break;
                    }
                }
            }
        }
        self.phones
            .lock()
            .await
            .insert(key, (Instant::now(), found.clone()));
        Ok(found)
    }

    async fn search(
        &self,
        module: Module,
        query: &[(&str, &str)],
    ) -> Result<Option<PhoneMatch>, ZohoError> {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("per_page", "10"));
        let a = self
            .request(
                Method::GET,
                &format!("{}/search", module.as_str()),
                &q,
                None,
            )
            .await?;
        match a.status {
            204 => Ok(None),
            200 => {
                let records = a
                    .body
                    .as_ref()
                    .and_then(|b| b.get("data"))
                    .and_then(Value::as_array);
                let Some(records) = records.filter(|r| !r.is_empty()) else {
                    return Ok(None);
                };
                if records.len() > 1 {
                    tracing::info!(
                        module = module.as_str(),
                        matches = records.len(),
                        "several records share the number: taking the most recently modified"
                    );
                }
                let best = records.iter().max_by_key(|r| {
                    r.get("Modified_Time")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                });
                Ok(best.and_then(|r| {
                    Some(PhoneMatch {
                        module,
                        id: r.get("id")?.as_str()?.to_string(),
                        name: r
                            .get("Full_Name")
                            .and_then(Value::as_str)
                            .or_else(|| r.get("Last_Name").and_then(Value::as_str))
                            .map(str::to_string),
                        owner_email: r
                            .pointer("/Owner/email")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    })
                }))
            }
            _ => Err(Self::fail(&a, &format!("searching {}", module.as_str()))),
        }
    }

    /// Inserts records into `module` (`Calls`, `Tasks`) in batches of at most 100 and returns
    /// each record's fate in input order. `workflows`: Zoho's `trigger` list (None: Zoho runs
    /// all its automations; empty: none).
    pub async fn insert(
        &self,
        module: &str,
        records: &[Map<String, Value>],
        workflows: Option<&[String]>,
    ) -> Result<Vec<RecordOutcome>, ZohoError> {
        let mut out = Vec::with_capacity(records.len());
        for batch in records.chunks(100) {
            let mut body = json!({ "data": batch });
            if let Some(w) = workflows {
                body["trigger"] = json!(w);
            }
            let a = self.request(Method::POST, module, &[], Some(&body)).await?;
            let data = a
                .body
                .as_ref()
                .and_then(|b| b.get("data"))
                .and_then(Value::as_array);
            match (a.status, data) {
                (200 | 201 | 202 | 207 | 400, Some(entries)) if entries.len() == batch.len() => {
                    out.extend(entries.iter().map(|e| record_outcome(a.status, e)));
                }
                _ => return Err(Self::fail(&a, &format!("inserting {module}"))),
            }
        }
        Ok(out)
    }

    /// The id of a record of `module` whose fields equal the values given (all of them), if
    /// one exists: how an attempt whose outcome is unknown is checked before it is resent.
    pub async fn find_record(
        &self,
        module: &str,
        equals: &[(&str, &str)],
    ) -> Result<Option<String>, ZohoError> {
        let criteria = equals
            .iter()
            .map(|(k, v)| format!("({k}:equals:{})", escape_criteria(v)))
            .collect::<Vec<_>>()
            .join("and");
        let a = self
            .request(
                Method::GET,
                &format!("{module}/search"),
                &[("criteria", criteria.as_str()), ("per_page", "2")],
                None,
            )
            .await?;
        match a.status {
            204 => Ok(None),
            200 => Ok(a
                .body
                .as_ref()
                .and_then(|b| b.pointer("/data/0/id"))
                .and_then(Value::as_str)
                .map(str::to_string)),
            _ => Err(Self::fail(&a, &format!("searching {module}"))),
        }
    }

    /// Checks each endpoint the bridge uses; a missing scope is named.
    pub async fn probe(&self) -> Vec<(&'static str, &'static str, Result<(), ZohoError>)> {
        let mut out = Vec::new();
        let users = self
            .request(
                Method::GET,
                "users",
                &[("type", "ActiveUsers"), ("per_page", "1")],
                None,
            )
            .await;
        out.push((
            "users",
            "ZohoCRM.users.READ",
            ok_unless_denied(users, "listing users"),
        ));
        for (name, scope, module) in [
            (
                "contacts search",
                "ZohoCRM.modules.contacts.READ",
                "Contacts",
            ),
            ("leads search", "ZohoCRM.modules.leads.READ", "Leads"),
        ] {
            let r = self
                .request(
                    Method::GET,
                    &format!("{module}/search"),
                    &[("phone", "+0000000000")],
                    None,
                )
                .await;
            out.push((name, scope, ok_unless_denied(r, name)));
        }
        // Checking for a record before resending an attempt of unknown outcome reads Calls.
        let r = self
            .request(
                Method::GET,
                "Calls/search",
                &[("criteria", "(Subject:equals:ami-zoho-bridge probe)")],
                None,
            )
            .await;
        out.push((
            "calls search",
            "ZohoCRM.modules.calls.READ",
            ok_unless_denied(r, "searching Calls"),
        ));
        // An empty insert is refused for its data, after the scope check: nothing is created.
        let r = self
            .request(Method::POST, "Calls", &[], Some(&json!({ "data": [] })))
            .await;
        out.push((
            "calls insert",
            "ZohoCRM.modules.calls.CREATE",
            ok_unless_denied(r, "inserting Calls"),
        ));
        out
    }
}

impl ZohoApi {
    /// Probes inserting into `module` (an empty insert: refused for its data after the scope
    /// check, so nothing is created). `zoho test` probes each module the triggers write.
    pub async fn probe_insert(&self, module: &str) -> Result<(), ZohoError> {
        let r = self
            .request(Method::POST, module, &[], Some(&json!({ "data": [] })))
            .await;
        ok_unless_denied(r, &format!("inserting {module}"))
    }
}
