//! The actions click-to-dial sends (`Originate`, `Hangup`, `MuteAudio`) and the reading of the
//! `OriginateResponse` event.
//!
//! `Originate` with `Async: true` answers `Response: Success` ("Originate successfully
//! queued") at once; the outcome comes later as an `OriginateResponse` event carrying the
//! same `ActionID`. The client's `route_reply` hands the `Response` to the caller and, since
//! the action is then complete, lets the later event flow into the ordinary event stream
//! (it is not in the tracker's skim list, so its headers are all parsed). That is where the
//! dial service watches for it, together with the agent leg's `DialEnd` and `Hangup`: the
//! far end's busy or no answer only ever shows there, so one watcher serves both, and the
//! client needs no change.
//!
//! Every value put into a header is checked here once more for line breaks (the codec refuses
//! them too): a header value with CR/LF would start a second header or a second action.

use futures::future::BoxFuture;

use super::message::{Action, Message};
use super::{AmiClient, AmiError};

/// Where actions go: the live [`AmiClient`], or anything else that answers them (tests).
pub trait ActionSink: Send + Sync {
    /// Sends one action and resolves to its `Response`.
    fn send_action(&self, action: Action) -> BoxFuture<'_, Result<Message, AmiError>>;
}

impl ActionSink for AmiClient {
    fn send_action(&self, action: Action) -> BoxFuture<'_, Result<Message, AmiError>> {
        Box::pin(self.send(action))
    }
}

/// One click-to-dial `Originate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    /// The agent's phone: `Local/2002@from-internal`, `PJSIP/2002`.
    pub channel: String,
    /// Where the answered agent leg goes, and the number it dials there.
    pub context: String,
    pub exten: String,
    /// Caller id on the agent's leg (the agent's own extension, so the outbound route and
    /// CDR see the agent as the caller).
    pub caller_id: String,
    /// How long the agent's phone rings, in milliseconds (`Timeout`).
    pub timeout_ms: u64,
    /// `Variable: NAME=VALUE` headers, in order.
    pub variables: Vec<(String, String)>,
    pub action_id: String,
}

/// A value that cannot go into an AMI header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AMI header '{header}' would carry {problem}")]
pub struct BadHeader {
    pub header: &'static str,
    pub problem: &'static str,
}

fn clean(header: &'static str, value: &str) -> Result<(), BadHeader> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(BadHeader {
            header,
            problem: "a line break",
        });
    }
    if value.trim().is_empty() {
        return Err(BadHeader {
            header,
            problem: "nothing",
        });
    }
    Ok(())
}

impl Originate {
    /// The action, headers in the order the recorded sessions send them.
    pub fn action(&self) -> Result<Action, BadHeader> {
        clean("Channel", &self.channel)?;
        clean("Context", &self.context)?;
        clean("Exten", &self.exten)?;
        clean("CallerID", &self.caller_id)?;
        clean("ActionID", &self.action_id)?;
        let mut a = Action::new("Originate")
            .header("Channel", &self.channel)
            .header("Context", &self.context)
            .header("Exten", &self.exten)
            .header("Priority", "1")
            .header("CallerID", &self.caller_id)
            .header("Timeout", self.timeout_ms.to_string())
            .header("Async", "true");
        for (name, value) in &self.variables {
            let v = format!("{name}={value}");
            clean("Variable", &v)?;
            a = a.header("Variable", v);
        }
        Ok(a.header("ActionID", &self.action_id))
    }
}

/// `Hangup` of exactly one channel. AMI reads a `Channel` written `/…/` as a regular
/// expression over every channel: such a name is refused, so a click can only ever end the
/// channel it created.
pub fn hangup(channel: &str, action_id: &str) -> Result<Action, BadHeader> {
    clean("Channel", channel)?;
    clean("ActionID", action_id)?;
    if channel.starts_with('/') || channel.ends_with('/') {
        return Err(BadHeader {
            header: "Channel",
            problem: "a regular expression (/…/)",
        });
    }
    Ok(Action::new("Hangup")
        .header("Channel", channel)
        .header("Cause", "16")
        .header("ActionID", action_id))
}

/// `MuteAudio` of what the agent's leg sends into the call (`Direction: in`): the customer
/// no longer hears the agent, the agent still hears the customer.
pub fn mute(channel: &str, on: bool, action_id: &str) -> Result<Action, BadHeader> {
    clean("Channel", channel)?;
    clean("ActionID", action_id)?;
    Ok(Action::new("MuteAudio")
        .header("Channel", channel)
        .header("Direction", "in")
        .header("State", if on { "on" } else { "off" })
        .header("ActionID", action_id))
}

/// What an `OriginateResponse`'s `Reason` says: the last control frame the new channel got
/// (Asterisk's `enum ast_control_frame_type`), or 0 when no channel could be made at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 0: the device could not be reached (no such peer, channel unavailable, dialplan error).
    Unreachable,
    /// 1: the device hung up (rejected the call).
    HungUp,
    /// 2 or 3: it was still ringing when the originate timeout ran out.
    NoAnswer,
    /// 4: answered.
    Answered,
    /// 5: busy.
    Busy,
    /// 8: congestion.
    Congestion,
    Other(u32),
}

impl Reason {
    pub fn from_code(code: u32) -> Reason {
        match code {
            0 => Reason::Unreachable,
            1 => Reason::HungUp,
            2 | 3 => Reason::NoAnswer,
            4 => Reason::Answered,
            5 => Reason::Busy,
            8 => Reason::Congestion,
            n => Reason::Other(n),
        }
    }
}

/// The fields of an `OriginateResponse` the dial service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateResponse {
    pub action_id: String,
    pub success: bool,
    pub reason: Reason,
    /// The new channel's name on success; the dial string on failure.
    pub channel: String,
    /// The new channel's Uniqueid (the call's Linkedid); `None` for `<unknown>`.
    pub uniqueid: Option<String>,
}

impl OriginateResponse {
    /// Reads an `OriginateResponse` event; `None` for any other message.
    pub fn parse(m: &Message) -> Option<OriginateResponse> {
        if !m.is_event("OriginateResponse") {
            return None;
        }
        let text = |k: &str| m.get_str(k).map(|v| v.trim().to_string());
        let success = text("Response").is_some_and(|r| r.eq_ignore_ascii_case("Success"));
        let reason = text("Reason")
            .and_then(|r| r.parse::<u32>().ok())
            .map(Reason::from_code)
            .unwrap_or(if success {
                Reason::Answered
            } else {
                Reason::Other(u32::MAX)
            });
        Some(OriginateResponse {
            action_id: text("ActionID")?,
            success,
            reason,
            channel: text("Channel").unwrap_or_default(),
            uniqueid: text("Uniqueid").filter(|u| !u.is_empty() && u != "<unknown>"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn originate_headers_as_the_recorded_session_sends_them() {
        let o = Originate {
            channel: "Local/2002@agents".into(),
            context: "from-agents".into(),
            exten: "0298765432".into(),
            caller_id: "2002".into(),
            timeout_ms: 30000,
            variables: vec![("CTD_ID".into(), "c2d-8b27c4d2".into())],
            action_id: "c2d-8b27c4d2".into(),
        };
        let a = o.action().unwrap();
        assert_eq!(a.name, "Originate");
        let h: Vec<(&str, &str)> = a
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            h,
            vec![
                ("Channel", "Local/2002@agents"),
                ("Context", "from-agents"),
                ("Exten", "0298765432"),
                ("Priority", "1"),
                ("CallerID", "2002"),
                ("Timeout", "30000"),
                ("Async", "true"),
                ("Variable", "CTD_ID=c2d-8b27c4d2"),
                ("ActionID", "c2d-8b27c4d2"),
            ]
        );
        let mut bad = o.clone();
        bad.exten = "0298765432\r\nAction: Hangup".into();
        assert_eq!(bad.action().unwrap_err().header, "Exten");
        let mut bad = o;
        bad.variables.push(("X".into(), "1\nChannel: y".into()));
        assert!(bad.action().is_err());
    }

    #[test]
    fn hangup_refuses_regex_channels() {
        assert!(hangup("/Local/.*/", "x").is_err());
        assert!(hangup("Local/2001@agents-00000032;1\r\n", "x").is_err());
        let a = hangup("Local/2001@agents-00000032;1", "x").unwrap();
        assert_eq!(a.headers[0].1, "Local/2001@agents-00000032;1");
        let a = mute("PJSIP/2001-00000001", true, "m").unwrap();
        assert_eq!(a.headers[1], ("Direction".into(), "in".into()));
        assert_eq!(a.headers[2], ("State".into(), "on".into()));
    }

    #[test]
    fn originate_response_from_the_recorded_events() {
        // ctd-busy.ami: the agent answered.
        let m = Message::from_pairs(&[
            ("Event", "OriginateResponse"),
            ("Privilege", "call,all"),
            ("ActionID", "c2d-8b27c4d2"),
            ("Response", "Success"),
            ("Channel", "Local/2002@agents-00000026;1"),
            ("Context", "from-agents"),
            ("Exten", "0298765432"),
            ("Reason", "4"),
            ("Uniqueid", "1795985816.76"),
        ]);
        let r = OriginateResponse::parse(&m).unwrap();
        assert!(r.success);
        assert_eq!(r.reason, Reason::Answered);
        assert_eq!(r.uniqueid.as_deref(), Some("1795985816.76"));
        // ctd-agent-noanswer.ami: never answered.
        let m = Message::from_pairs(&[
            ("Event", "OriginateResponse"),
            ("ActionID", "c2d-a40b9e13"),
            ("Response", "Failure"),
            ("Channel", "Local/2004@agents"),
            ("Reason", "3"),
            ("Uniqueid", "<unknown>"),
        ]);
        let r = OriginateResponse::parse(&m).unwrap();
        assert!(!r.success);
        assert_eq!(r.reason, Reason::NoAnswer);
        assert_eq!(r.uniqueid, None);
        assert!(OriginateResponse::parse(&Message::from_pairs(&[("Event", "Hangup")])).is_none());
    }
}
