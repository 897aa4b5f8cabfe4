//! `tokio_util::codec` framing for AMI: the parser on the read side, action encoding on the
//! write side.
//!
//! The decoder never fails on content: an oversize message is skipped up to the next empty
//! line (and counted), so one bad frame cannot end a manager session. Only I/O errors end it.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::message::{Action, Message, MessageSpans, SkimFilter};
use super::parse;
use super::AmiError;

/// The value that switches a response into legacy command output.
const FOLLOWS: &[u8] = b"Follows";

/// One decoded unit of the stream.
#[derive(Debug, Clone)]
pub enum Frame {
    /// The `Asterisk Call Manager/x.y.z` line sent once after connect.
    Banner(String),
    /// A message (event, response, or other).
    Message(Message),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing decoded yet: the banner may come first.
    Start,
    Messages,
    /// Dropping an oversize message up to its empty line.
    Skipping,
}

/// AMI codec: [`Decoder`] of [`Frame`]s, [`Encoder`] of [`Action`]s.
#[derive(Debug, Clone)]
pub struct AmiCodec {
    max_message: usize,
    state: State,
    skipped: u64,
    /// Bytes of the buffer already known to hold no message terminator. Small reads of a big
    /// message then cost a scan of the new bytes only, not a re-parse from its start
    /// (which would be quadratic in the message size).
    scanned: usize,
    end_command_seen: bool,
    /// The partial message has a `Follows` in it (legacy command output).
    follows_seen: bool,
    skim: Option<SkimFilter>,
}

impl Default for AmiCodec {
    fn default() -> Self {
        AmiCodec::new(parse::DEFAULT_MAX_MESSAGE)
    }
}

impl AmiCodec {
    /// A codec whose messages may be at most `max_message` bytes.
    pub fn new(max_message: usize) -> AmiCodec {
        AmiCodec {
            max_message,
            state: State::Start,
            skipped: 0,
            scanned: 0,
            end_command_seen: false,
            follows_seen: false,
            skim: None,
        }
    }

    /// Events for which `skim` says yes are parsed only up to their `Timestamp` header; the
    /// rest of their lines are framed (searched for the empty line) but not split into
    /// headers. For a consumer that reads nothing else of them: the call tracker keeps only
    /// the stream time of CEL, RTCP, Newexten, Newstate... which are half a busy PBX's events
    /// and the longest ones. The message keeps all its bytes and says
    /// [`is_skimmed`](Message::is_skimmed). An event without `Timestamp` is parsed whole.
    pub fn with_skim(mut self, skim: SkimFilter) -> AmiCodec {
        self.skim = Some(skim);
        self
    }

    /// How many oversize messages were skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn decode_banner(&mut self, src: &mut BytesMut) -> Option<Frame> {
        match parse::starts_with_banner(src) {
            None => None,
            Some(false) => {
                self.state = State::Messages;
                None
            }
            Some(true) => match parse::banner(src) {
                Ok((rest, line)) => {
                    let text = String::from_utf8_lossy(line).into_owned();
                    let n = src.len() - rest.len();
                    src.advance(n);
                    self.state = State::Messages;
                    Some(Frame::Banner(text))
                }
                Err(_) if src.len() > self.max_message => {
                    self.state = State::Messages;
                    None
                }
                Err(_) => None,
            },
        }
    }

    /// Whether parsing can succeed (or must report an oversize message) with the bytes that
    /// arrived since the last incomplete attempt. When it cannot, the new bytes are marked as
    /// scanned, so a message read in small pieces costs linear time.
    fn may_be_complete(&mut self, src: &[u8]) -> bool {
        if self.scanned == 0 || src.len() > self.max_message || self.end_command_seen {
            return true;
        }
        // A terminator may straddle the old end: look from a few bytes before it.
        let from = self
            .scanned
            .saturating_sub(parse::END_COMMAND.len())
            .min(src.len());
        let new = &src[from..];
        if parse::skip_to_blank_line(new).1 {
            return true;
        }
        // No empty line: every new byte belongs to this message (searches stay inside it, not
        // over the rest of a 64 KiB read). Only legacy `Response: Follows` output can end
        // without an empty line, at `--END COMMAND--` and whatever line follows it: search for
        // that marker only once the header has been seen, and once found, always parse.
        let from_follows = self.scanned.saturating_sub(FOLLOWS.len()).min(src.len());
        self.follows_seen |= memchr::memmem::find(&src[from_follows..], FOLLOWS).is_some();
        self.end_command_seen =
            self.follows_seen && memchr::memmem::find(new, parse::END_COMMAND).is_some();
        if !self.end_command_seen {
            self.scanned = src.len();
        }
        self.end_command_seen
    }

    fn skip(&mut self, src: &mut BytesMut) -> bool {
        let (n, found) = parse::skip_to_blank_line(src);
        src.advance(n);
        if found {
            self.state = State::Messages;
        }
        found
    }
}

impl Decoder for AmiCodec {
    type Item = Frame;
    type Error = AmiError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, AmiError> {
        loop {
            match self.state {
                State::Start => {
                    if let Some(banner) = self.decode_banner(src) {
                        return Ok(Some(banner));
                    }
                    if self.state == State::Start {
                        return Ok(None);
                    }
                }
                State::Skipping => {
                    if !self.skip(src) {
                        return Ok(None);
                    }
                }
                State::Messages => {
                    if !self.may_be_complete(src) {
                        return Ok(None);
                    }
                    let mut spans = MessageSpans::new(src, self.skim);
                    let consumed = match parse::message_into(src, self.max_message, &mut spans) {
                        Ok(rest) => src.len() - rest.len(),
                        Err(nom::Err::Incomplete(_)) => {
                            // The parse just read all of it; later reads only look at new bytes.
                            // `src` holds this message alone (earlier ones were split off), so
                            // these searches stay inside it.
                            self.follows_seen = memchr::memmem::find(src, FOLLOWS).is_some();
                            self.end_command_seen = self.follows_seen
                                && memchr::memmem::find(src, parse::END_COMMAND).is_some();
                            self.scanned = src.len();
                            return Ok(None);
                        }
                        Err(_) => {
                            self.skipped += 1;
                            tracing::warn!(
                                max_bytes = self.max_message,
                                "AMI message over the size cap: skipped up to the next empty line"
                            );
                            self.state = State::Skipping;
                            self.scanned = 0;
                            self.end_command_seen = false;
                            self.follows_seen = false;
                            continue;
                        }
                    };
                    self.scanned = 0;
                    self.end_command_seen = false;
                    self.follows_seen = false;
                    let bytes = src.split_to(consumed).freeze();
                    return Ok(Some(Frame::Message(spans.into_message(bytes))));
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, AmiError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                if !src.is_empty() {
                    // A frame cut by the end of the stream is discarded, never half-delivered.
                    tracing::debug!(
                        bytes = src.len(),
                        "discarding partial AMI frame at end of stream"
                    );
                    src.clear();
                }
                Ok(None)
            }
        }
    }
}

impl Encoder<&Action> for AmiCodec {
    type Error = AmiError;

    fn encode(&mut self, action: &Action, dst: &mut BytesMut) -> Result<(), AmiError> {
        check_field("Action", &action.name)?;
        for (name, value) in &action.headers {
            check_field(name, name)?;
            check_field(name, value)?;
            if name.contains(':') || name.trim().is_empty() {
                return Err(AmiError::InvalidHeader { name: name.clone() });
            }
        }
        dst.reserve(64 + action.headers.len() * 32);
        dst.extend_from_slice(b"Action: ");
        dst.extend_from_slice(action.name.as_bytes());
        dst.extend_from_slice(b"\r\n");
        for (name, value) in &action.headers {
            dst.extend_from_slice(name.as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
        dst.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// Refuses CR or LF in an action's text: they would let a value inject headers or actions.
fn check_field(name: &str, text: &str) -> Result<(), AmiError> {
    if text.contains(['\r', '\n']) {
        return Err(AmiError::HeaderInjection {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut AmiCodec, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn messages(frames: Vec<Frame>) -> Vec<Message> {
        frames
            .into_iter()
            .filter_map(|f| match f {
                Frame::Message(m) => Some(m),
                Frame::Banner(_) => None,
            })
            .collect()
    }

    #[test]
    fn skimmed_events_stop_after_timestamp_and_the_stream_goes_on() {
        let input = b"Event: CEL\r\nPrivilege: cdr,all\r\nTimestamp: 1.5\r\nEventName: X\r\nno colon\r\n\r\n\
Event: CEL\r\nEventName: Y\r\nEventTime: 2023-11-14 22:13:20\r\n\r\n\
Event: Hangup\r\nTimestamp: 2.0\r\nCause: 16\r\n\n\
Response: Success\r\nActionID: a\r\n\r\n";
        let skim = |e: &[u8]| e == b"CEL";
        let got = messages(decode_all(&mut AmiCodec::default().with_skim(skim), input));
        let full = messages(decode_all(&mut AmiCodec::default(), input));
        assert_eq!(got.len(), 4);
        // Up to and including Timestamp; the bytes are all kept.
        assert!(got[0].is_skimmed());
        assert_eq!(got[0].header_count(), 3);
        assert_eq!(got[0].get("EventName"), None);
        assert_eq!(got[0].as_bytes(), full[0].as_bytes());
        // No Timestamp: parsed whole (its EventTime is the only time it has).
        assert!(!got[1].is_skimmed());
        assert_eq!(got[1].get("EventTime"), Some(&b"2023-11-14 22:13:20"[..]));
        for i in 2..4 {
            assert!(!got[i].is_skimmed());
            assert_eq!(got[i].to_json(), full[i].to_json());
        }
        // Any chunking gives the same messages.
        for size in 1..input.len() {
            let mut codec = AmiCodec::default().with_skim(skim);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in input.chunks(size) {
                buf.extend_from_slice(piece);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            let out = messages(out);
            assert_eq!(out.len(), 4, "chunk {size}");
            for (a, b) in out.iter().zip(&got) {
                assert_eq!(a.to_json(), b.to_json(), "chunk {size}");
                assert_eq!(a.as_bytes(), b.as_bytes(), "chunk {size}");
            }
        }
    }

    #[test]
    fn banner_then_messages() {
        let frames = decode_all(
            &mut AmiCodec::default(),
            b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\nMessage: Authentication accepted\r\n\r\nEvent: FullyBooted\r\n\r\n",
        );
        assert!(matches!(&frames[0], Frame::Banner(b) if b == "Asterisk Call Manager/9.0.0"));
        assert_eq!(frames.len(), 3);
    }

    #[test]
    fn oversize_message_is_skipped_and_stream_goes_on() {
        let mut input = b"Event: A\r\n\r\nEvent: Big\r\nData: ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend_from_slice(b"\r\n\r\nEvent: C\r\n\r\n");
        let mut codec = AmiCodec::new(1000);
        let names: Vec<String> = decode_all(&mut codec, &input)
            .into_iter()
            .filter_map(|f| match f {
                Frame::Message(m) => m.get_str("Event").map(|s| s.into_owned()),
                Frame::Banner(_) => None,
            })
            .collect();
        assert_eq!(names, vec!["A", "C"]);
        assert_eq!(codec.skipped(), 1);
    }

    #[test]
    fn oversize_skip_across_small_reads() {
        let mut input = b"Event: Big\r\nData: ".to_vec();
        input.extend(std::iter::repeat_n(b'y', 3000));
        input.extend_from_slice(b"\r\n\r\nEvent: After\r\n\r\n");
        let mut codec = AmiCodec::new(500);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in input.chunks(7) {
            buf.extend_from_slice(chunk);
            while let Some(Frame::Message(m)) = codec.decode(&mut buf).unwrap() {
                got.push(m.get_str("Event").unwrap_or_default().into_owned());
            }
        }
        assert_eq!(got, vec!["After"]);
    }

    #[test]
    fn encodes_with_crlf_and_refuses_injection() {
        let mut codec = AmiCodec::default();
        let mut out = BytesMut::new();
        let a = Action::new("Ping").header("ActionID", "b-1");
        codec.encode(&a, &mut out).unwrap();
        assert_eq!(&out[..], b"Action: Ping\r\nActionID: b-1\r\n\r\n");
        let bad = Action::new("Originate").header("Exten", "100\r\nAction: Hangup");
        assert!(matches!(
            codec.encode(&bad, &mut out),
            Err(AmiError::HeaderInjection { name }) if name == "Exten"
        ));
        let bad_name = Action::new("X").header("A: B", "c");
        assert!(codec.encode(&bad_name, &mut out).is_err());
    }
}
