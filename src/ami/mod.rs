//! Everything that touches the Asterisk Manager Interface wire.
//!
//! - [`parse`]: the nom grammar (pure, zero-copy, streaming);
//! - [`codec`]: `tokio_util` framing over it;
//! - [`client`]: a live manager session (login, actions, keepalive, reconnect);
//! - [`replay`]: a recorded capture as the same kind of event source;
//! - [`originate`]: the click-to-dial actions (`Originate`, `Hangup`, `MuteAudio`).
//!
//! Both sources yield [`SourceEvent`]s, so the stages after them cannot tell a PBX from a file.

pub mod client;
pub mod codec;
pub mod message;
pub mod originate;
pub mod parse;
pub mod replay;

pub use client::{AmiClient, AuthMethod, ClientConfig};
pub use codec::{AmiCodec, Frame};
pub use message::{Action, Kind, Message};

/// What an event source hands to the next stage.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The first session is up (banner text).
    Connected { banner: String },
    /// A new session after a drop: events in the gap are lost for good, so later stages must
    /// resynchronise (`CoreShowChannels`, `QueueStatus`) and mark calls that spanned it.
    Reconnected { banner: String },
    /// The session dropped (reason for logs); a reconnect follows unless shutting down.
    Disconnected { reason: String },
    /// One message from the PBX, in wire order.
    Message(Message),
    /// The answers of the state actions run after every login (`CoreShowChannels`,
    /// `QueueStatus`): every list item and `…Complete` event, in wire order, handed on at the
    /// point of the stream where the last list completed. Later stages reconcile what they
    /// know with it (calls that ended or started while nobody was listening).
    Resync { items: Vec<Message> },
}

/// Errors of the AMI layer. None of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    #[error("AMI I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connecting to AMI at {addr} timed out after {seconds} s")]
    ConnectTimeout { addr: String, seconds: u64 },
    #[error("connecting to AMI at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("AMI at {addr} did not send the 'Asterisk Call Manager' banner: {got}")]
    NoBanner { addr: String, got: String },
    #[error("AMI login to {addr} as user '{username}' failed: {message}")]
    LoginFailed {
        addr: String,
        username: String,
        message: String,
    },
    #[error("AMI action '{action}' got no answer within {seconds} s")]
    ActionTimeout { action: String, seconds: u64 },
    #[error("AMI action header '{name}' contains CR or LF (refused: it could inject headers)")]
    HeaderInjection { name: String },
    #[error("AMI action header name '{name}' is not valid")]
    InvalidHeader { name: String },
    #[error("no Ping answer from AMI at {addr} within {seconds} s")]
    KeepaliveTimeout { addr: String, seconds: u64 },
    #[error("the AMI connection closed")]
    Closed,
}
