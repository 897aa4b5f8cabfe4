//! OAuth 2.0 for a Zoho Self Client: grant code → refresh token (once), refresh token →
//! access tokens (hourly), persisted with owner-only permissions.
//!
//! Zoho answers token errors with HTTP 200, so success is judged by the presence of
//! `access_token`. Refreshes are single-flight (one in progress at a time, under a lock) and
//! happen a minute before expiry or once after a `401 INVALID_TOKEN`, never per request:
//! Zoho allows only ten access tokens per refresh token per ten minutes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{DataCenter, Retry, ZohoError};
use crate::config::AccountConfig;
use crate::secret::Secret;

/// What is kept between runs. `Debug` shows no token (they are [`Secret`]s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTokens {
    pub refresh_token: Secret,
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    pub api_domain: String,
    #[serde(default)]
    pub scope: Option<String>,
}

/// An access token ready for a request, with the API domain it belongs to.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: Secret,
    pub api_domain: String,
}

/// Token persistence in a JSON file readable by its owner only.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, message: impl ToString) -> ZohoError {
        ZohoError::Store {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    pub fn load(&self) -> Result<Option<StoredTokens>, ZohoError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| self.err(format!("unreadable: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Writes atomically (temporary file, then rename), mode 0600 on Unix.
    pub fn save(&self, tokens: &StoredTokens) -> Result<(), ZohoError> {
        use std::io::Write;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        }
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(tokens).map_err(|e| self.err(e))?;
        // A `.tmp` left by a crash (or planted) keeps its mode when opened: it is removed
        // and created afresh, owner-only, and the mode set again on the open file.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.err(e)),
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(|e| self.err(e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| self.err(e))?;
        }
        f.write_all(&text).map_err(|e| self.err(e))?;
        f.sync_all().map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err(e))
    }
}

/// One account's OAuth client.
pub struct OAuth {
    account: String,
    http: reqwest::Client,
    accounts_url: String,
    default_api_domain: String,
    client_id: String,
    client_secret: Secret,
    store: TokenFile,
    state: Mutex<Option<StoredTokens>>,
    /// Until when refreshes are held back after a throttle answer, and the current wait.
    throttle: Mutex<Option<(tokio::time::Instant, Duration)>>,
    refresh_margin: Duration,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("account", &self.account)
            .field("accounts_url", &self.accounts_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The accounts server and API domain of an account: explicit overrides win over the DC.
pub fn endpoints(cfg: &AccountConfig) -> Result<(String, String), ZohoError> {
    let dc = cfg
        .dc
        .as_deref()
        .map(str::parse::<DataCenter>)
        .transpose()
        .map_err(ZohoError::Config)?;
    let accounts = cfg
        .accounts_url
        .clone()
        .or_else(|| dc.map(DataCenter::accounts_url))
        .ok_or_else(|| ZohoError::Config("set dc, or accounts_url and api_domain".into()))?;
    let api = cfg
        .api_domain
        .clone()
        .or_else(|| dc.map(DataCenter::api_domain))
        .ok_or_else(|| ZohoError::Config("set dc, or accounts_url and api_domain".into()))?;
    Ok((
        accounts.trim_end_matches('/').to_string(),
        api.trim_end_matches('/').to_string(),
    ))
}

/// The client secret: inline, or from the environment variable `client_secret_env`.
pub fn client_secret(account: &str, cfg: &AccountConfig) -> Result<Secret, ZohoError> {
    if let Some(s) = cfg.client_secret.as_ref().filter(|s| !s.is_empty()) {
        return Ok(s.clone());
    }
    if let Some(var) = &cfg.client_secret_env {
        return std::env::var(var).map(Secret::new).map_err(|_| {
            ZohoError::Config(format!(
                "zoho.accounts.{account}.client_secret_env: environment variable {var} is not set"
            ))
        });
    }
    Err(ZohoError::Config(format!(
        "zoho.accounts.{account}: give client_secret_env (or client_secret)"
    )))
}

/// First and longest wait after Zoho refused a refresh for too many requests.
const THROTTLE_BACKOFF_MIN: Duration = Duration::from_secs(30);
const THROTTLE_BACKOFF_MAX: Duration = Duration::from_secs(600);

fn throttled(until: tokio::time::Instant) -> ZohoError {
    let left = until.saturating_duration_since(tokio::time::Instant::now());
    ZohoError::OAuth {
        code: "Access Denied".into(),
        message: format!(
            "too many token requests: Zoho allows ten per refresh token per ten minutes; next try in {} s",
            left.as_secs().max(1)
        ),
        retry: Retry::Transient,
    }
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl OAuth {
    pub fn new(
        account: &str,
        cfg: &AccountConfig,
        http: reqwest::Client,
    ) -> Result<OAuth, ZohoError> {
        let (accounts_url, default_api_domain) = endpoints(cfg)?;
        let store = TokenFile::new(
            cfg.token_file
                .clone()
                .unwrap_or_else(|| crate::config::default_token_file(account)),
        );
        Ok(OAuth {
            account: account.to_string(),
            http,
            accounts_url,
            default_api_domain,
            client_id: cfg.client_id.clone(),
            client_secret: client_secret(account, cfg)?,
            store,
            state: Mutex::new(None),
            throttle: Mutex::new(None),
            refresh_margin: Duration::from_secs(60),
        })
    }

    /// The account's name in the configuration.
    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn token_file(&self) -> &TokenFile {
        &self.store
    }

    /// Exchanges a one-time grant code for a refresh token and stores it.
    pub async fn exchange_code(&self, code: &str) -> Result<StoredTokens, ZohoError> {
        let answer = self
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("client_id", &self.client_id),
                ("client_secret", self.client_secret.expose()),
                ("code", code),
            ])
            .await?;
        let refresh = answer
            .get("refresh_token")
            .and_then(Value::as_str)
            .ok_or_else(|| ZohoError::OAuth {
                code: "no_refresh_token".into(),
                message: "the grant answer has no refresh token (was the code generated for offline access?)".into(),
                retry: Retry::Permanent,
            })?;
        let tokens = self.tokens_from(&answer, Secret::new(refresh));
        self.store.save(&tokens)?;
        *self.state.lock().await = Some(tokens.clone());
        tracing::info!(account = %self.account, file = %self.store.path().display(), "Zoho grant code exchanged, refresh token stored");
        Ok(tokens)
    }

    /// A valid access token, refreshing first when it expires within a minute.
    pub async fn access(&self) -> Result<Access, ZohoError> {
        let mut state = self.state.lock().await;
        if state.is_none() {
            *state = self.store.load()?;
        }
        let Some(tokens) = state.as_mut() else {
            return Err(ZohoError::NotAuthorized {
                account: self.account.clone(),
            });
        };
        let fresh = match (&tokens.access_token, tokens.expires_at) {
            (Some(_), Some(exp)) => exp - now_secs() > self.refresh_margin.as_secs() as i64,
            _ => false,
        };
        if !fresh {
            // After a throttle answer, wait before asking again: every refused request still
            // counts against Zoho's ten-per-ten-minutes window.
            {
                let backoff = self.throttle.lock().await;
                if let Some((until, _)) = *backoff {
                    if tokio::time::Instant::now() < until {
                        return Err(throttled(until));
                    }
                }
            }
            // The lock is held across the refresh: concurrent callers wait for this one.
            let answer = self
                .token_request(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", &self.client_id),
                    ("client_secret", self.client_secret.expose()),
                    ("refresh_token", tokens.refresh_token.expose()),
                ])
                .await;
            let answer = match answer {
                Err(e) if e.retry() == Retry::Transient && e.code() == Some("Access Denied") => {
                    let mut backoff = self.throttle.lock().await;
                    let wait = backoff.map_or(THROTTLE_BACKOFF_MIN, |(_, w)| {
                        (w * 2).min(THROTTLE_BACKOFF_MAX)
                    });
                    *backoff = Some((tokio::time::Instant::now() + wait, wait));
                    tracing::warn!(account = %self.account, wait_seconds = wait.as_secs(), "Zoho refused a token refresh (too many requests): backing off");
                    return Err(e);
                }
                other => other?,
            };
            *self.throttle.lock().await = None;
            *tokens = self.tokens_from(&answer, tokens.refresh_token.clone());
            self.store.save(tokens)?;
            tracing::debug!(account = %self.account, "Zoho access token refreshed");
        }
        match &tokens.access_token {
            Some(token) => Ok(Access {
                token: token.clone(),
                api_domain: tokens.api_domain.clone(),
            }),
            None => Err(ZohoError::NotAuthorized {
                account: self.account.clone(),
            }),
        }
    }

    /// Refreshes now, whatever the cached access token: `zoho test` proves the configured
    /// client secret works (a cached token would hide a wrong one until it expires).
    pub async fn refresh_now(&self) -> Result<Access, ZohoError> {
        {
            let mut state = self.state.lock().await;
            if state.is_none() {
                *state = self.store.load()?;
            }
            if let Some(t) = state.as_mut() {
                t.access_token = None;
                t.expires_at = None;
            }
        }
        self.access().await
    }

    /// Forgets `token` after Zoho called it invalid, so the next [`OAuth::access`] refreshes.
    pub async fn invalidate(&self, token: &Secret) {
        let mut state = self.state.lock().await;
        if let Some(t) = state.as_mut() {
            if t.access_token.as_ref() == Some(token) {
                t.access_token = None;
                t.expires_at = None;
            }
        }
    }

    fn tokens_from(&self, answer: &Value, refresh: Secret) -> StoredTokens {
        let expires_in = answer
            .get("expires_in_sec")
            .and_then(Value::as_i64)
            .or_else(|| {
                answer.get("expires_in").and_then(Value::as_i64).map(|v| {
                    // Very old answers gave milliseconds.
                    if v > 100_000 {
                        v / 1000
                    } else {
                        v
                    }
                })
            })
            .unwrap_or(3600);
        StoredTokens {
            refresh_token: refresh,
            access_token: answer
                .get("access_token")
                .and_then(Value::as_str)
                .map(Secret::new),
            expires_at: Some(now_secs() + expires_in),
            api_domain: answer
                .get("api_domain")
                .and_then(Value::as_str)
                .map(|s| s.trim_end_matches('/').to_string())
                .unwrap_or_else(|| self.default_api_domain.clone()),
            scope: answer
                .get("scope")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    /// POSTs to the token endpoint; success is an answer with `access_token`, whatever the
    /// HTTP status says.
    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Value, ZohoError> {
        let url = format!("{}/oauth/v2/token", self.accounts_url);
        let response =
            self.http
                .post(&url)
                .form(form)
                .send()
                .await
                .map_err(|e| ZohoError::Network {
                    message: format!(
                        "token request to {}: {}",
                        self.accounts_url,
                        e.without_url()
                    ),
                    retry: Retry::Transient,
                })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body.get("access_token").and_then(Value::as_str).is_some() {
            return Ok(body);
        }
        let code = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("http_{}", status.as_u16()));
        let description = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let throttled = code == "Access Denied" || description.contains("too many requests");
        let message = match code.as_str() {
            "invalid_code" => "the grant code (or refresh token) is invalid, expired, already used, or from another data center".to_string(),
            "invalid_client_secret" => "wrong client secret: the client id is known, the secret is not this client's (client_secret_env)".to_string(),
            // Zoho may answer this for a wrong secret too (`invalid_client_secret` is not
            // confirmed on every data center): both causes are named.
            "invalid_client" => "unknown client id on this data center (is dc right?), or a client secret that is not this client's".to_string(),
            _ if throttled => "too many token requests: Zoho allows ten per refresh token per ten minutes; retrying later".to_string(),
            _ if !description.is_empty() => description.to_string(),
            _ => format!("token endpoint answered HTTP {status}"),
        };
        Err(ZohoError::OAuth {
            code,
            message,
            retry: if throttled || status.is_server_error() {
                Retry::Transient
            } else {
                Retry::Permanent
            },
        })
    }
}
