//! Zoho CRM: OAuth Self Client, the CRM API the bridge uses, rendering of Call activities,
//! and a strict local simulator.

pub mod activity;
pub mod api;
pub mod credits;
pub mod oauth;
pub mod phonebook;
pub mod phonebridge;
pub mod sim;
pub mod throttle;

use std::fmt;
use std::str::FromStr;

/// A Zoho data center. The accounts server and the API domain must both belong to the org's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataCenter {
    Us,
    Eu,
    In,
    Au,
    Jp,
    Cn,
    Ca,
    Sa,
    Uk,
}

impl DataCenter {
    pub const ALL: [DataCenter; 9] = [
        DataCenter::Us,
        DataCenter::Eu,
        DataCenter::In,
        DataCenter::Au,
        DataCenter::Jp,
        DataCenter::Cn,
        DataCenter::Ca,
        DataCenter::Sa,
        DataCenter::Uk,
    ];

    /// The domain suffix of Zoho's web pages for this DC (`crm.zoho.<tld>`).
    pub fn tld(self) -> &'static str {
        match self {
            DataCenter::Us => "com",
            DataCenter::Eu => "eu",
            DataCenter::In => "in",
            DataCenter::Au => "com.au",
            DataCenter::Jp => "jp",
            DataCenter::Cn => "com.cn",
            DataCenter::Ca => "ca",
            DataCenter::Sa => "sa",
            DataCenter::Uk => "uk",
        }
    }

    /// The OAuth accounts server.
    pub fn accounts_url(self) -> String {
        match self {
            // Canada's accounts server is not zoho.ca.
            DataCenter::Ca => "https://accounts.zohocloud.ca".into(),
            dc => format!("https://accounts.zoho.{}", dc.tld()),
        }
    }

    /// The CRM API domain (the token answer's `api_domain` takes precedence).
    pub fn api_domain(self) -> String {
        format!("https://www.zohoapis.{}", self.tld())
    }

    /// The CRM web host, for links to records.
    pub fn crm_host(self) -> String {
        match self {
            DataCenter::Ca => "https://crm.zohocloud.ca".into(),
            dc => format!("https://crm.zoho.{}", dc.tld()),
        }
    }
}

impl FromStr for DataCenter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "com" | "us" | "zoho.com" => DataCenter::Us,
            "eu" => DataCenter::Eu,
            "in" => DataCenter::In,
            "com.au" | "au" => DataCenter::Au,
            "jp" => DataCenter::Jp,
            "com.cn" | "cn" => DataCenter::Cn,
            "ca" => DataCenter::Ca,
            "sa" => DataCenter::Sa,
            "uk" => DataCenter::Uk,
            other => return Err(format!("unknown Zoho data center '{other}'")),
        })
    }
}

impl fmt::Display for DataCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tld())
    }
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Retry {
    /// Network, 5xx, 429, throttling, DEPENDENT_SERVICE_ERROR: back off and try again.
    Transient,
    /// The request was sent and no answer came: the record may exist; check before resending.
    Unknown,
    /// Bad data, missing scope, revoked grant: retrying will not help.
    Permanent,
}

/// A Zoho failure. Never carries a token or secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ZohoError {
    #[error("Zoho OAuth: {code}: {message}")]
    OAuth {
        code: String,
        message: String,
        retry: Retry,
    },
    #[error("Zoho {status} {code}: {message}{}", field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
        retry: Retry,
    },
    /// 429: Zoho's API concurrency or credit limit; wait (as told, when it says) and retry.
    #[error("Zoho 429 TOO_MANY_REQUESTS: {message}")]
    Throttled {
        message: String,
        retry_after_seconds: Option<u64>,
    },
    #[error("Zoho request failed: {message}")]
    Network { message: String, retry: Retry },
    #[error("no Zoho tokens for account '{account}': run `ami-zoho-bridge zoho authorize --account {account} --code <grant code>`")]
    NotAuthorized { account: String },
    #[error("Zoho token store {path}: {message}")]
    Store { path: String, message: String },
    #[error("Zoho configuration: {0}")]
    Config(String),
}

impl ZohoError {
    pub fn retry(&self) -> Retry {
        match self {
            ZohoError::OAuth { retry, .. }
            | ZohoError::Api { retry, .. }
            | ZohoError::Network { retry, .. } => *retry,
            ZohoError::Throttled { .. } => Retry::Transient,
            _ => Retry::Permanent,
        }
    }

    /// The field Zoho named, when it named one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ZohoError::Api { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The Zoho error code, when Zoho gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ZohoError::OAuth { code, .. } | ZohoError::Api { code, .. } => Some(code),
            ZohoError::Throttled { .. } => Some("TOO_MANY_REQUESTS"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_center_has_its_servers() {
        for dc in DataCenter::ALL {
            assert_eq!(dc.tld().parse::<DataCenter>(), Ok(dc));
            assert!(dc.accounts_url().starts_with("https://accounts.zoho"));
            assert!(dc.api_domain().starts_with("https://www.zohoapis."));
        }
        assert_eq!(
            DataCenter::Ca.accounts_url(),
            "https://accounts.zohocloud.ca"
        );
        assert_eq!("com".parse::<DataCenter>(), Ok(DataCenter::Us));
        assert_eq!(DataCenter::Au.api_domain(), "https://www.zohoapis.com.au");
        assert!("mars".parse::<DataCenter>().is_err());
    }
}
