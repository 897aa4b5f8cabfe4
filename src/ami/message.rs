//! Owned AMI messages and actions.
//!
//! A [`Message`] keeps the bytes of its frame in one reference-counted [`Bytes`] (split off the
//! read buffer, not copied) and the header positions as offsets into it, so handing a message
//! to another task costs no copy of its text.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use super::parse::LineSink;

/// Offset and length of a slice inside the message's frame bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    #[inline]
    fn of(base: *const u8, part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base as usize;
        Span {
            start: start as u32,
            len: part.len() as u32,
        }
    }

    fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let s = self.start as usize;
        &buf[s..s + self.len as usize]
    }
}

/// What a message is, by its first class-defining header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// Has an `Event` header (the name).
    Event(&'a [u8]),
    /// Has a `Response` header (`Success`, `Error`, `Follows`, `Goodbye`).
    Response(&'a [u8]),
    /// Neither: kept so nothing is silently dropped (e.g. client actions in a trace).
    Unknown,
}

/// One AMI message, owning its bytes. Header names compare case-insensitively.
#[derive(Clone)]
pub struct Message {
    buf: Bytes,
    headers: Vec<(Span, Span)>,
    raw: Vec<Span>,
    /// Parsed only up to its `Timestamp` (see [`AmiCodec::with_skim`](super::AmiCodec::with_skim)).
    skimmed: bool,
}

impl Message {
    /// Builds a message from name/value pairs (tests, synthetic events).
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Message {
        let mut text = Vec::new();
        for (k, v) in pairs {
            text.extend_from_slice(k.as_ref());
            text.extend_from_slice(b": ");
            text.extend_from_slice(v.as_ref());
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"\r\n");
        let mut spans = MessageSpans::new(&text, None);
        // Cannot fail: the text ends with an empty line and has no size cap.
        let _ = super::parse::message_into(&text, usize::MAX, &mut spans);
        spans.into_message(Bytes::from(text))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let want = name.as_bytes();
        let len = u32::try_from(want.len()).ok()?;
        // Consumers look up a dozen names per event among two dozen headers: reject on length
        // and first byte before comparing whole names. `| 0x20` folds the case of letters; for
        // other bytes it may only let a wrong name through to the full comparison.
        let first = want.first()? | 0x20;
        for (n, v) in &self.headers {
            if n.len != len {
                continue;
            }
            let got = n.get(&self.buf);
            if got.first().is_some_and(|b| b | 0x20 == first)
                && (got == want || got.eq_ignore_ascii_case(want))
            {
                return Some(v.get(&self.buf));
            }
        }
        None
    }

    /// The first value of `name` as text (lossy for non-UTF-8 bytes).
    pub fn get_str(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(String::from_utf8_lossy)
    }

    /// Every value of `name`, in wire order (`ChanVariable`, `Variable`, `Output` repeat).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// All headers in wire order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.headers
            .iter()
            .map(|(n, v)| (n.get(&self.buf), v.get(&self.buf)))
    }

    /// Number of `Name: Value` headers.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Lines without a colon and legacy command output, in order.
    pub fn raw_lines(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.raw.iter().map(|s| s.get(&self.buf))
    }

    /// Event, response, or neither.
    pub fn kind(&self) -> Kind<'_> {
        for (n, v) in self.headers() {
            if n.eq_ignore_ascii_case(b"Event") {
                return Kind::Event(v);
            }
            if n.eq_ignore_ascii_case(b"Response") {
                return Kind::Response(v);
            }
        }
        Kind::Unknown
    }

    /// The event name, if this is an event.
    pub fn event(&self) -> Option<&[u8]> {
        match self.kind() {
            Kind::Event(name) => Some(name),
            _ => None,
        }
    }

    /// Whether this is the event `name` (case-insensitive).
    pub fn is_event(&self, name: &str) -> bool {
        self.event()
            .is_some_and(|e| e.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The `ActionID`, in any of its spellings.
    pub fn action_id(&self) -> Option<&[u8]> {
        self.get("ActionID")
    }

    /// The JSON line of `--emit events`: `{"event": name, "headers": [[k, v], ...]}`.
    /// `event` is the Event name, or null for responses and other messages.
    pub fn to_json(&self) -> serde_json::Value {
        let headers: Vec<serde_json::Value> = self
            .headers()
            .map(|(k, v)| {
                serde_json::json!([String::from_utf8_lossy(k), String::from_utf8_lossy(v)])
            })
            .collect();
        serde_json::json!({
            "event": self.event().map(String::from_utf8_lossy),
            "headers": headers,
        })
    }

    /// Whether only the headers up to `Timestamp` were parsed (the event's name was in the
    /// codec's skim list); [`as_bytes`](Message::as_bytes) still has all of it.
    pub fn is_skimmed(&self) -> bool {
        self.skimmed
    }

    /// The frame's bytes as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.headers() {
            m.entry(&String::from_utf8_lossy(k), &String::from_utf8_lossy(v));
        }
        m.finish()
    }
}

/// Decides from an event's name whether its headers after `Timestamp` may go unparsed.
pub type SkimFilter = fn(&[u8]) -> bool;

/// What the span recorder still looks out for when skimming is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    Nothing,
    /// The first header: `Event` and a name the filter accepts arm the skim.
    FirstHeader,
    /// Armed: stop after `Timestamp` (no `Timestamp`, no skim: the whole event is parsed).
    Timestamp,
}

/// Header positions recorded while the parse still borrows the read buffer; turned into a
/// [`Message`] once the frame's bytes have been split off (offsets are relative to `base`,
/// which must be where the split bytes start).
pub(crate) struct MessageSpans {
    base: *const u8,
    headers: Vec<(Span, Span)>,
    raw: Vec<Span>,
    skim: Option<SkimFilter>,
    watch: Watch,
    skimmed: bool,
}

impl<'a> LineSink<'a> for MessageSpans {
    #[inline]
    fn header(&mut self, name: &'a [u8], value: &'a [u8]) -> bool {
        self.headers
            .push((Span::of(self.base, name), Span::of(self.base, value)));
        self.watch == Watch::Nothing || self.watch_header(name, value)
    }
    fn raw(&mut self, line: &'a [u8]) {
        self.raw.push(Span::of(self.base, line));
    }
}

impl MessageSpans {
    pub(crate) fn new(base: &[u8], skim: Option<SkimFilter>) -> MessageSpans {
        MessageSpans {
            base: base.as_ptr(),
            // Most events have 15 to 45 headers: one allocation, no regrowth.
            headers: Vec::with_capacity(48),
            raw: Vec::new(),
            skim,
            watch: if skim.is_some() {
                Watch::FirstHeader
            } else {
                Watch::Nothing
            },
            skimmed: false,
        }
    }

    /// Whether parsing goes on after this header.
    fn watch_header(&mut self, name: &[u8], value: &[u8]) -> bool {
        match self.watch {
            Watch::Nothing => true,
            Watch::FirstHeader => {
                let armed =
                    name.eq_ignore_ascii_case(b"Event") && self.skim.is_some_and(|f| f(value));
                self.watch = if armed {
                    Watch::Timestamp
                } else {
                    Watch::Nothing
                };
                true
            }
            Watch::Timestamp => {
                if !name.eq_ignore_ascii_case(b"Timestamp") {
                    return true;
                }
                self.watch = Watch::Nothing;
                self.skimmed = true;
                false
            }
        }
    }

    pub(crate) fn into_message(self, buf: Bytes) -> Message {
        Message {
            buf,
            headers: self.headers,
            raw: self.raw,
            skimmed: self.skimmed,
        }
    }
}

/// Header names whose values are credentials: never printed by `Debug`.
const SECRET_HEADERS: [&str; 2] = ["Secret", "Key"];

/// An action to send: `Action: <name>` and headers, encoded with CRLF by the codec.
#[derive(Clone, PartialEq, Eq)]
pub struct Action {
    pub name: String,
    pub headers: Vec<(String, String)>,
}

impl Action {
    pub fn new(name: impl Into<String>) -> Action {
        Action {
            name: name.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Action {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `ActionID` header, if set.
    pub fn action_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("ActionID"))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        m.entry(&"Action", &self.name);
        for (k, v) in &self.headers {
            if SECRET_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_and_json() {
        let m = Message::from_pairs(&[
            ("Event", "VarSet"),
            ("Variable", "A"),
            ("variable", "B"),
            ("Actionid", "x-1"),
        ]);
        assert_eq!(m.kind(), Kind::Event(b"VarSet"));
        assert!(m.is_event("varset"));
        assert_eq!(
            m.get_all("Variable").collect::<Vec<_>>(),
            vec![&b"A"[..], b"B"]
        );
        assert_eq!(m.action_id(), Some(&b"x-1"[..]));
        assert_eq!(
            m.to_json(),
            serde_json::json!({"event": "VarSet", "headers": [["Event","VarSet"],["Variable","A"],["variable","B"],["Actionid","x-1"]]})
        );
    }

    #[test]
    fn action_debug_hides_secrets() {
        let a = Action::new("Login")
            .header("Username", "bridge")
            .header("Secret", "s3cr3t-value");
        let shown = format!("{a:?}");
        assert!(shown.contains("bridge"));
        assert!(!shown.contains("s3cr3t-value"));
    }
}
