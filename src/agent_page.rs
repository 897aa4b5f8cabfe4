//! `/agent`: the bridge's own agent screen, for orgs that have not registered as a
//! PhoneBridge provider. An agent opens a personal link (signed with HMAC-SHA256, expiring,
//! bound to one e-mail) and gets a card over Server-Sent Events the moment their phone rings:
//! caller number and name, the Zoho Contact or Lead (from the phone index) with a link that
//! opens it, queue and wait; the same card updates on answer, transfer and hang-up.
//!
//! Why a link and not the admin token: agents must see their own calls and nothing else. The
//! link's signature covers the e-mail and the expiry, so a link for A cannot read B's stream
//! (403), and it opens no admin route (those keep their own token).
//!
//! The page is server-rendered HTML with a little inline JavaScript (no CDN): `EventSource`
//! reconnects by itself; the page shows "not connected" while it is down and raises a browser
//! notification when a card arrives with the tab hidden.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::broadcast;

use crate::config::Config;
use crate::notify::{Kind, Notice, Notify};
use crate::secret::Secret;
use crate::zoho::api::ZohoApi;

/// Calls kept per agent for the "last calls" list.
const HISTORY: usize = 20;
/// Agents kept in memory at most (the oldest is forgotten past this).
const MAX_AGENTS: usize = 10_000;

/// The link secret from `[agent_page]`.
pub fn link_secret(cfg: &Config) -> Result<Secret, String> {
    let page = cfg
        .agent_page
        .as_ref()
        .ok_or("key agent_page: no [agent_page] section")?;
    if let Some(s) = page.link_secret.as_ref().filter(|s| !s.is_empty()) {
        return Ok(s.clone());
    }
    let var = page
        .link_secret_env
        .as_deref()
        .ok_or("key agent_page.link_secret_env: missing")?;
    std::env::var(var)
        .ok()
        .filter(|v| v.len() >= 16)
        .map(Secret::new)
        .ok_or_else(|| {
            format!("key agent_page.link_secret_env: environment variable {var} is not set (or shorter than 16 characters)")
        })
}

fn mac(secret: &Secret, email: &str, expires: i64) -> String {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    m.update(format!("agent-page\n{}\n{expires}", email.to_ascii_lowercase()).as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The query string of an agent's link: `email=…&exp=…&sig=…`.
pub fn sign(secret: &Secret, email: &str, expires: i64) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("email", email);
    q.append_pair("exp", &expires.to_string());
    q.append_pair("sig", &mac(secret, email, expires));
    q.finish()
}

/// The agent's page URL, valid for the configured hours (default a week).
pub fn link(cfg: &Config, email: &str) -> Result<String, String> {
    let secret = link_secret(cfg)?;
    let hours = cfg
        .agent_page
        .as_ref()
        .and_then(|p| p.link_hours)
        .unwrap_or(24 * 7) as i64;
    let expires = jiff::Timestamp::now().as_second() + hours * 3600;
    let base = cfg
        .agent_page
        .as_ref()
        .and_then(|p| p.base_url.clone())
        .unwrap_or_else(|| format!("http://{}", cfg.http.listen));
    Ok(format!(
        "{}/agent?{}",
        base.trim_end_matches('/'),
        sign(&secret, email, expires)
    ))
}

#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    email: Option<String>,
    exp: Option<i64>,
    sig: Option<String>,
}

/// The e-mail a link is good for, or why not.
pub fn verify(secret: &Secret, q: &LinkQuery, now: i64) -> Result<String, &'static str> {
    let (Some(email), Some(exp), Some(sig)) = (&q.email, q.exp, &q.sig) else {
        return Err("this page needs your personal link");
    };
    if exp < now {
        return Err("this link has expired: ask for a new one");
    }
    let want = mac(secret, email, exp);
    // Constant-time comparison of the hex strings.
    let same = want.len() == sig.len()
        && want
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err("this link is not valid");
    }
    Ok(email.to_ascii_lowercase())
}

/// One update of an agent's card.
#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub email: String,
    pub call: String,
    pub id: String,
    /// ringing, answered, closed, missed, ended, contact, or an outbound outcome.
    pub state: String,
    pub direction: String,
    pub number: Option<String>,
    pub name: Option<String>,
    pub queue: Option<String>,
    /// Seconds the caller waited (missed) or talked (ended).
    pub seconds: Option<u32>,
    pub transferred_from: Option<String>,
    pub contact_name: Option<String>,
    pub contact_module: Option<String>,
    pub contact_url: Option<String>,
    /// RFC 3339, PBX time.
    pub at: String,
}

struct Shared {
    secret: Secret,
    cards: broadcast::Sender<Arc<Card>>,
    history: Mutex<HashMap<String, VecDeque<Card>>>,
}

impl Shared {
    fn remember(&self, c: &Card) {
        let Ok(mut h) = self.history.lock() else {
            return;
        };
        if h.len() >= MAX_AGENTS && !h.contains_key(&c.email) {
            if let Some(k) = h.keys().next().cloned() {
                h.remove(&k);
            }
        }
        let list = h.entry(c.email.clone()).or_default();
        // One line per call: the latest state replaces the earlier ones.
        if let Some(pos) = list.iter().position(|x| x.call == c.call) {
            let mut merged = c.clone();
            let old = &list[pos];
            if c.state == "contact" {
                merged = Card {
                    state: old.state.clone(),
                    ..c.clone()
                };
            } else if merged.contact_name.is_none() {
                merged.contact_name = old.contact_name.clone();
                merged.contact_module = old.contact_module.clone();
                merged.contact_url = old.contact_url.clone();
            }
            list.remove(pos);
            list.push_front(merged);
        } else {
            list.push_front(c.clone());
        }
        list.truncate(HISTORY);
    }
}

fn card(n: &Notice) -> Card {
    Card {
        email: n.agent.email.to_ascii_lowercase(),
        call: n.call.clone(),
        id: n.id.clone(),
        state: n.kind.as_str().to_string(),
        direction: n.direction.as_str().to_string(),
        number: n.customer.clone(),
        name: n.customer_name.clone(),
        queue: n.queue.clone(),
        seconds: n.duration,
        transferred_from: n.transferred_from.clone(),
        contact_name: None,
        contact_module: None,
        contact_url: None,
        at: n.at.to_string(),
    }
}

/// The `/agent` routes, fed by the real-time path; `zoho` (the CRM account) names callers.
pub fn router(cfg: &Config, notify: &Notify, zoho: Option<Arc<ZohoApi>>) -> Result<Router, String> {
    let secret = link_secret(cfg)?;
    let (cards, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        secret,
        cards,
        history: Mutex::new(HashMap::new()),
    });
    let crm_host = cfg
        .zoho
        .accounts
        .values()
        .find_map(|a| a.dc.as_deref()?.parse::<crate::zoho::DataCenter>().ok())
        .map(|dc| dc.crm_host())
        .or_else(|| {
            cfg.zoho
                .accounts
                .values()
                .find_map(|a| a.api_domain.clone())
        });
    let mut notices = notify.subscribe();
    let feed = shared.clone();
    tokio::spawn(async move {
        loop {
            let n = match notices.recv().await {
                Ok(n) => n,
                Err(broadcast::error::RecvError::Lagged(k)) => {
                    tracing::warn!(lost = k, "agent page: fell behind the real-time path");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let c = card(&n);
            feed.remember(&c);
            let _ = feed.cards.send(Arc::new(c.clone()));
            // The Contact or Lead, after the card: a slow lookup never holds the ring up.
            if n.kind == Kind::Ringing {
                if let (Some(api), Some(number)) = (zoho.clone(), n.customer.clone()) {
                    let feed = feed.clone();
                    let host = crm_host.clone();
                    tokio::spawn(async move {
                        let found = tokio::time::timeout(
                            Duration::from_secs(5),
                            api.find_by_phone(&number),
                        )
                        .await;
                        if let Ok(Ok(Some(m))) = found {
                            let module = m.module.as_str().to_string();
                            let url = host.map(|h| {
                                format!("{}/crm/tab/{module}/{}", h.trim_end_matches('/'), m.id)
                            });
                            let mut update = c;
                            update.state = "contact".into();
                            update.contact_name = m.name;
                            update.contact_module = Some(module);
                            update.contact_url = url;
                            feed.remember(&update);
                            let _ = feed.cards.send(Arc::new(update));
                        }
                    });
                }
            }
        }
    });
    Ok(Router::new()
        .route("/agent", get(page))
        .route("/agent/events", get(events))
        .with_state(shared))
}

fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>Agent page</title><p>{}</p>",
            html_escape(why)
        )),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(s): State<Arc<Shared>>, Query(q): Query<LinkQuery>) -> Response {
    let email = match verify(&s.secret, &q, jiff::Timestamp::now().as_second()) {
        Ok(e) => e,
        Err(why) => return forbidden(why),
    };
    let query = sign(&s.secret, &email, q.exp.unwrap_or_default());
    // The page's one inline script runs under a nonce drawn for this answer; the server's
    // default policy (websec::security_headers) allows no script at all.
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let mut response = Html(
        PAGE.replace("{{EMAIL}}", &html_escape(&email))
            .replace("{{QUERY}}", &html_escape(&query))
            .replace("<script>", &format!("<script nonce=\"{nonce}\">")),
    )
    .into_response();
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

async fn events(State(s): State<Arc<Shared>>, Query(q): Query<LinkQuery>) -> Response {
    let email = match verify(&s.secret, &q, jiff::Timestamp::now().as_second()) {
        Ok(e) => e,
        Err(why) => return forbidden(why),
    };
    let history: Vec<Card> = s
        .history
        .lock()
        .map(|h| {
            h.get(&email)
                .map(|l| l.iter().cloned().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let first = Event::default()
        .event("history")
        .json_data(&history)
        .unwrap_or_default();
    let rx = s.cards.subscribe();
    let stream =
        futures::stream::once(async move { Ok::<_, std::convert::Infallible>(first) }).chain(
            futures::stream::unfold((rx, email), |(mut rx, email)| async move {
                loop {
                    match rx.recv().await {
                        Ok(c) if c.email == email => {
                            let ev = Event::default()
                                .event("card")
                                .json_data(&*c)
                                .unwrap_or_default();
                            metrics::counter!("azb_agent_page_events_total").increment(1);
                            return Some((Ok(ev), (rx, email)));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }),
        );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

use futures::StreamExt;

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Calls · {{EMAIL}}</title>
<style>
body{font:15px system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{display:flex;justify-content:space-between;align-items:center;padding:10px 16px;background:#1f2d3d;color:#fff}
#status{padding:2px 10px;border-radius:10px;background:#2e7d32}
#status.down{background:#c62828}
main{padding:16px;max-width:760px;margin:auto}
.card{background:#fff;border-radius:8px;padding:14px 16px;margin-bottom:14px;box-shadow:0 1px 3px #0002;border-left:6px solid #999}
.card.ringing{border-color:#f9a825}.card.answered{border-color:#2e7d32}
.card.ended,.card.closed,.card.missed{border-color:#9e9e9e;opacity:.75}
.card h2{margin:0 0 4px;font-size:20px}.state{font-weight:bold;text-transform:uppercase;font-size:12px}
table{width:100%;border-collapse:collapse;background:#fff}td,th{padding:6px 8px;border-bottom:1px solid #eee;text-align:left}
</style></head>
<body>
<header><span>Calls for <b id="me">{{EMAIL}}</b></span><span id="status" class="down">not connected</span></header>
<main>
<div id="live"></div>
<h3>Last calls</h3>
<table><thead><tr><th>When</th><th>Caller</th><th>Queue</th><th>Outcome</th></tr></thead><tbody id="recent"></tbody></table>
</main>
<script>
"use strict";
const q = "{{QUERY}}".replace(/&amp;/g, "&");
const live = document.getElementById("live"), recent = document.getElementById("recent");
const statusEl = document.getElementById("status");
const calls = new Map();
window.agentLog = [];
function text(v){ return v == null ? "" : String(v); }
function cardHtml(c){
  const who = c.contact_name ? (c.contact_url ? '<a target="_blank" rel="noopener" class="contact"></a>' : '<span class="contact"></span>') : "";
  return '<span class="state"></span><h2 class="number"></h2><div class="name"></div><div>' + who + '</div><div class="meta"></div>';
}
function render(c){
  let el = document.getElementById("call-" + c.call);
  const open = c.state === "ringing" || c.state === "answered";
  if (!el) { el = document.createElement("div"); el.id = "call-" + c.call; live.prepend(el); }
  el.className = "card " + c.state;
  el.innerHTML = cardHtml(c);
  el.querySelector(".state").textContent = c.state + (c.transferred_from ? " (transferred)" : "");
  el.querySelector(".number").textContent = text(c.number) || "unknown number";
  el.querySelector(".name").textContent = text(c.name);
  const ct = el.querySelector(".contact");
  if (ct) { ct.textContent = c.contact_module === "Leads" ? "Lead: " + c.contact_name : "Contact: " + c.contact_name; if (c.contact_url) ct.href = c.contact_url; }
  el.querySelector(".meta").textContent = [c.queue ? "queue " + c.queue : "", c.seconds != null ? c.seconds + " s" : ""].filter(Boolean).join(" · ");
  if (!open) setTimeout(() => { if (el.className.indexOf("ringing") < 0 && el.className.indexOf("answered") < 0) el.remove(); }, 8000);
}
function addRecent(c){
  const tr = document.createElement("tr"); tr.id = "row-" + c.call;
  for (const v of [c.at, (c.contact_name || c.name || c.number), c.queue, c.state]) { const td = document.createElement("td"); td.textContent = text(v); tr.appendChild(td); }
  const old = document.getElementById(tr.id); if (old) old.remove();
  recent.prepend(tr);
  while (recent.children.length > 20) recent.lastChild.remove();
}
function merge(c){
  const prev = calls.get(c.call);
  if (c.state === "contact") { if (!prev) return; c = Object.assign({}, prev, {contact_name: c.contact_name, contact_module: c.contact_module, contact_url: c.contact_url}); }
  else if (prev && !c.contact_name) { c.contact_name = prev.contact_name; c.contact_module = prev.contact_module; c.contact_url = prev.contact_url; }
  calls.set(c.call, c);
  return c;
}
function connect(){
  const es = new EventSource("/agent/events?" + q);
  es.onopen = () => { statusEl.textContent = "connected"; statusEl.className = ""; };
  es.onerror = () => { statusEl.textContent = "not connected"; statusEl.className = "down"; };
  es.addEventListener("history", e => { recent.innerHTML = ""; for (const c of JSON.parse(e.data).reverse()) { calls.set(c.call, c); addRecent(c); } });
  es.addEventListener("card", e => {
    const raw = JSON.parse(e.data); window.agentLog.push({call: raw.call, state: raw.state, contact: raw.contact_name});
    const c = merge(raw); if (!c) return;
    render(c); addRecent(c);
    if (c.state === "ringing" && document.hidden && "Notification" in window && Notification.permission === "granted") {
      new Notification("Incoming call", {body: (c.contact_name || c.name || c.number || "") + (c.queue ? " · " + c.queue : "")});
    }
  });
}
if ("Notification" in window && Notification.permission === "default") { document.addEventListener("click", () => Notification.requestPermission(), {once: true}); }
connect();
</script>
</body></html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_one_agent_until_it_expires() {
        let secret = Secret::new("0123456789abcdef-test");
        let q = |s: &str| -> LinkQuery {
            let m: HashMap<String, String> =
                form_urlencoded::parse(s.as_bytes()).into_owned().collect();
            LinkQuery {
                email: m.get("email").cloned(),
                exp: m.get("exp").and_then(|v| v.parse().ok()),
                sig: m.get("sig").cloned(),
            }
        };
        let link = sign(&secret, "Mario@Example.com", 2_000);
        assert_eq!(
            verify(&secret, &q(&link), 1_000),
            Ok("mario@example.com".into())
        );
        assert!(verify(&secret, &q(&link), 2_001).is_err(), "expired");
        let other = link.replace("Mario%40Example.com", "luigi%40example.com");
        assert!(verify(&secret, &q(&other), 1_000).is_err(), "another agent");
        let longer = link.replace("exp=2000", "exp=9000");
        assert!(
            verify(&secret, &q(&longer), 1_000).is_err(),
            "a longer life"
        );
        assert!(verify(&Secret::new("another secret, 16+"), &q(&link), 1_000).is_err());
    }
}
