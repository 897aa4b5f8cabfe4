//! Zoho PhoneBridge v3: the provider's server-to-server API (`docs/zoho-crm-api.md` §9).
//!
//! Zoho draws the call bar and the incoming-call pop-up itself; the bridge only tells it what
//! happens: `integrate` (enable/disable for the org), `users` (who can get pop-ups), and
//! `callnotify` (ringing, answered, missed, ended, outbound outcomes). Its own OAuth client
//! (the provider's, authorization-code grant with the `PhoneBridge.*` scopes) sits in its own
//! `[zoho.accounts.NAME]`, with the same token store, data centers and single-flight refresh
//! as the CRM accounts ([`OAuth`]).
//!
//! Bodies are `application/x-www-form-urlencoded`: `form_urlencoded` encodes `+` as `%2B`,
//! which is what Zoho asks for E.164 numbers.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::oauth::OAuth;
use super::{Retry, ZohoError};

/// Scopes a PhoneBridge provider's grant needs.
pub const PHONEBRIDGE_SCOPES: &str = "PhoneBridge.call.log,PhoneBridge.zohoone.search";

/// A PhoneBridge user of the org.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PbUser {
    /// The id `callnotify` wants as `zohouser`.
    pub zohouser: String,
    pub email: String,
    pub username: String,
}

/// The PhoneBridge client of one org.
#[derive(Debug, Clone)]
pub struct PhoneBridge {
    oauth: Arc<OAuth>,
    http: reqwest::Client,
}

impl PhoneBridge {
    pub fn new(oauth: Arc<OAuth>, timeout: Duration) -> Result<PhoneBridge, ZohoError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ZohoError::Config(format!("HTTP client: {e}")))?;
        Ok(PhoneBridge { oauth, http })
    }

    pub fn oauth(&self) -> &OAuth {
        &self.oauth
    }

    /// `POST /phonebridge/v3/integrate` (enable) or `DELETE` (disable) for the org.
    pub async fn integrate(&self, enable: bool) -> Result<(), ZohoError> {
        let method = if enable { Method::POST } else { Method::DELETE };
        self.call(method, "integrate", &[], None).await.map(|_| ())
    }

    /// Every PhoneBridge user of the org (`GET /phonebridge/v3/users`, paged).
    pub async fn users(&self) -> Result<Vec<PbUser>, ZohoError> {
        let mut all = Vec::new();
        for page in 1..=100u32 {
            let page_s = page.to_string();
            let body = self
                .call(
                    Method::GET,
                    "users",
                    &[("page", page_s.as_str()), ("perPage", "1000")],
                    None,
                )
                .await?;
            let list = body
                .as_ref()
                .and_then(|b| b.get("users").or_else(|| b.get("data")))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let n = list.len();
            for u in list {
                let text = |k: &str| u.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let zohouser = match u.get("zohouser") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => continue,
                };
                all.push(PbUser {
                    zohouser,
                    email: text("email"),
                    username: text("username"),
                });
            }
            if n < 1000 {
                break;
            }
        }
        Ok(all)
    }

    /// `POST /phonebridge/v3/callnotify` with these parameters.
    pub async fn callnotify(&self, params: &[(&str, String)]) -> Result<(), ZohoError> {
        let body = form(params);
        self.call(Method::POST, "callnotify", &[], Some(body))
            .await
            .map(|_| ())
    }

    /// One request, with the token refreshed once on `INVALID_TOKEN`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<Option<Value>, ZohoError> {
        let mut refreshed = false;
        loop {
            let access = self.oauth.access().await?;
            let url = format!("{}/phonebridge/v3/{path}", access.api_domain);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(
                    "Authorization",
                    format!("Zoho-oauthtoken {}", access.token.expose()),
                )
                .query(query);
            if let Some(b) = &body {
                req = req
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(b.clone());
            }
            let response = req.send().await.map_err(|e| ZohoError::Network {
                message: format!(
                    "phonebridge/{path}: {}",
                    if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        e.without_url().to_string()
                    }
                ),
                retry: Retry::Transient,
            })?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await.unwrap_or_default();
            let json: Option<Value> = serde_json::from_slice(&bytes).ok();
            let code = json
                .as_ref()
                .and_then(|b| b.get("code"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if status == 401 && code == "INVALID_TOKEN" && !refreshed {
                self.oauth.invalidate(&access.token).await;
                refreshed = true;
                continue;
            }
            let failed_status = json
                .as_ref()
                .and_then(|b| b.get("status"))
                .and_then(Value::as_str)
                .is_some_and(|s| s == "error" || s == "failure");
            if (200..300).contains(&status) && !failed_status {
                return Ok(json);
            }
            let message = json
                .as_ref()
                .and_then(|b| b.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let code = if code.is_empty() {
                format!("HTTP_{status}")
            } else {
                code
            };
            let retry = match status {
                429 | 500..=599 => Retry::Transient,
                401 if code == "INVALID_TOKEN" => Retry::Transient,
                _ => Retry::Permanent,
            };
            return Err(ZohoError::Api {
                status,
                message: if code == "OAUTH_SCOPE_MISMATCH" {
                    format!("phonebridge/{path}: the token lacks the PhoneBridge scopes ({PHONEBRIDGE_SCOPES})")
                } else {
                    format!("phonebridge/{path}: {message}")
                },
                code,
                field: None,
                retry,
            });
        }
    }
}

/// A form body; `+` becomes `%2B` (never a space).
pub fn form(params: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `yyyy-MM-dd HH:mm:ss` in GMT, as PhoneBridge wants its times.
pub fn gmt(t: crate::calls::Micros) -> Option<String> {
    let ts = t.to_timestamp()?;
    Some(ts.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_percent_encoded_and_times_are_gmt() {
        let body = form(&[
            ("from", "+393331588952".into()),
            ("to", "+390699991001".into()),
        ]);
        assert_eq!(body, "from=%2B393331588952&to=%2B390699991001");
        // 1795465952.020 = 2026-11-23T20:32:32.020Z (truth file bh-0009 start_time).
        assert_eq!(
            gmt(crate::calls::Micros(1_795_465_952_020_000)).as_deref(),
            Some("2026-11-23 20:32:32")
        );
    }
}
