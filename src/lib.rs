//! ami-zoho-bridge: Asterisk Manager Interface events in, Zoho CRM Call activities out.
//!
//! Data flows one way: [`ami`] → calls → triggers → outbox → zoho. See `README.md` and the
//! module docs for the why of each stage.

pub mod agent_page;
pub mod agi;
pub mod ami;
pub mod calls;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod dial;
pub mod http;
pub mod notify;
pub mod ops;
pub mod persist;
pub mod phone;
pub mod pipeline;
pub mod recordings;
pub mod requeue;
pub mod secret;
pub mod store;
pub mod supervise;
pub mod triggers;
pub mod websec;
pub mod zoho;
