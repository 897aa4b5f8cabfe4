//! What makes the simulated org behave like a real one under load: time to answer (fixed plus
//! jitter), the edition's cap on requests in flight with 429 `TOO_MANY_REQUESTS` past it, and
//! the daily credits (a read costs one, an insert ⌈records/10⌉), with Zoho's
//! `X-API-CREDITS-REMAINING` header once half the budget is spent (or always, as configured:
//! when Zoho sends it is not confirmed) and 429 once it is gone.
//!
//! A layer over the CRM routes, so the handlers stay about validation and records.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

use super::{crm_error, lock, Shared};
use crate::zoho::credits::request_cost;

/// Largest request body the layer reads (Zoho's 100-record inserts are far smaller).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Gives the place in flight back however the request ends.
struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut g = lock(&self.0);
        g.in_flight = g.in_flight.saturating_sub(1);
    }
}

fn too_many(message: &str) -> Response {
    crm_error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        message,
        json!({}),
    )
}

pub(super) async fn meter(State(inner): State<Shared>, req: Request, next: Next) -> Response {
    let (latency, jitter) = {
        let mut g = lock(&inner);
        if let Some(cap) = g.limits.concurrency {
            if g.in_flight >= cap {
                g.stats.throttled_concurrency += 1;
                return too_many("concurrency limit exceeded");
            }
        }
        if let Some(budget) = g.limits.daily_credits {
            if g.stats.credits >= budget {
                g.stats.throttled_credits += 1;
                return too_many("API credits exhausted for the day");
            }
        }
        g.in_flight += 1;
        g.stats.max_in_flight = g.stats.max_in_flight.max(g.in_flight);
        (g.limits.latency, g.limits.jitter)
    };
    let _place = InFlight(inner.clone());
    let delay = if jitter.is_zero() {
        latency
    } else {
        use rand::Rng;
        latency + jitter.mul_f64(rand::rng().random_range(0.0..=1.0))
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let write = req.method() != Method::GET;
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return crm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "request body too large or unreadable",
            json!({}),
        );
    };
    let records = write.then(|| {
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("data").and_then(Value::as_array).map(Vec::len))
            .unwrap_or(0)
    });
    let mut response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    // Turned away before the API ran (token, throttle): no credit.
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS {
        return response;
    }
    let mut g = lock(&inner);
    g.stats.credits += request_cost(records);
    if let Some(budget) = g.limits.daily_credits {
        let left = budget.saturating_sub(g.stats.credits);
        if g.limits.credits_header_always || g.stats.credits * 2 >= budget {
            if let Ok(v) = HeaderValue::from_str(&left.to_string()) {
                response.headers_mut().insert("x-api-credits-remaining", v);
            }
        }
    }
    response
}
