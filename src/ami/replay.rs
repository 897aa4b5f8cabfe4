//! A recorded capture (exactly the bytes Asterisk sent, banner included) as an event source.
//!
//! It yields the same [`SourceEvent`]s as a live [`super::AmiClient`]: `Connected` with the
//! banner, then every message in order. The file is read in fixed-size chunks through the same
//! codec a socket uses, so memory stays flat whatever the capture's size, and a frame cut by the
//! end of the file is discarded exactly as a dropped connection would discard it.
//!
//! A capture may hold several sessions back to back (a recorder that lost its session and
//! logged in again): a banner inside the file is a new session, so it yields `Disconnected`
//! then `Reconnected`, as the client does. The answers of the state lists a session asks for
//! after its login (`CoreShowChannels`, `QueueStatus`: every list item carrying an `ActionID`,
//! up to each list's `…Complete`) are handed on as one [`SourceEvent::Resync`] at the position
//! of the last `…Complete`, as the client hands them on; the other messages keep their order.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::Path;

use bytes::BytesMut;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::codec::Decoder;

use std::collections::VecDeque;

use super::codec::{AmiCodec, Frame};
use super::parse;
use super::{AmiError, SourceEvent};

const CHUNK: usize = 256 * 1024;

/// Iterator over a capture's events.
pub struct Replay<R> {
    reader: R,
    buf: BytesMut,
    codec: AmiCodec,
    eof: bool,
    started: bool,
    /// Events decoded but not handed on yet (a banner gives two).
    pending: VecDeque<SourceEvent>,
    progress: Option<ProgressBar>,
    /// The codec as configured, to start each new session's framing from (banner first).
    fresh: AmiCodec,
    /// Oversize messages skipped by the codecs of earlier sessions.
    skipped_before: u64,
    resync: ResyncCollector,
}

/// The list answers of a session's resync, gathered until the last list completes.
#[derive(Default)]
struct ResyncCollector {
    items: Vec<super::Message>,
    /// Lists started (`Response` with `EventList: start`) and not completed yet.
    open: usize,
    channels_done: bool,
    queues_done: bool,
    /// Messages seen since the lists fell quiet with only some of them complete.
    quiet: u32,
}

/// List items of the state actions a resync runs; they carry the action's `ActionID`.
fn resync_item(event: &[u8]) -> bool {
    matches!(
        event,
        b"CoreShowChannel"
            | b"CoreShowChannelsComplete"
            | b"QueueParams"
            | b"QueueMember"
            | b"QueueEntry"
            | b"QueueStatusComplete"
    )
}

/// How many other messages a half-answered resync waits for its other list before it is
/// handed on as it is (a session that asked for one list only).
const RESYNC_QUIET_LIMIT: u32 = 64;

impl ResyncCollector {
    /// Takes a message that belongs to the resync; false when it does not.
    fn take(&mut self, m: &super::Message) -> bool {
        match m.event() {
            Some(e) if resync_item(e) && m.action_id().is_some() => {
                match e {
                    b"CoreShowChannelsComplete" => {
                        self.channels_done = true;
                        self.open = self.open.saturating_sub(1);
                    }
                    b"QueueStatusComplete" => {
                        self.queues_done = true;
                        self.open = self.open.saturating_sub(1);
                    }
                    _ => {}
                }
                self.items.push(m.clone());
                self.quiet = 0;
                true
            }
            Some(_) => false,
            None => {
                if m.get("EventList")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"start"))
                {
                    self.open += 1;
                }
                false
            }
        }
    }

    /// The collected answers, when the resync is complete (both lists, or one list followed
    /// by enough other traffic that the other is not coming) or `force`d (session or file end).
    fn ready(&mut self, force: bool) -> Option<SourceEvent> {
        if self.items.is_empty() {
            return None;
        }
        let both = self.channels_done && self.queues_done && self.open == 0;
        let quiet = (self.channels_done || self.queues_done)
            && self.open == 0
            && self.quiet >= RESYNC_QUIET_LIMIT;
        if !(both || quiet || force) {
            return None;
        }
        let items = std::mem::take(&mut self.items);
        *self = ResyncCollector::default();
        Some(SourceEvent::Resync { items })
    }
}

/// A capture file, read as it is or through gzip (`.gz`: large captures are stored compressed;
/// the bytes that reach the parser are exactly the recorded ones).
pub type CaptureReader = Box<dyn Read + Send>;

impl Replay<CaptureReader> {
    /// Opens a capture file (`.gz` is decompressed on the fly). A progress bar is drawn on
    /// stderr when it is a terminal.
    pub fn open(path: &Path) -> io::Result<Replay<CaptureReader>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let reader: CaptureReader = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file)))
        } else {
            Box::new(file)
        };
        let mut replay = Replay::new(reader);
        if io::stderr().is_terminal()
            && len > 4 * CHUNK as u64
            && path.extension().is_none_or(|e| e != "gz")
        {
            let bar = ProgressBar::new(len);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            {
                bar.set_style(style);
            }
            replay.progress = Some(bar);
        }
        Ok(replay)
    }

    /// Reads a whole capture into memory (decompressing `.gz`), for benchmarks.
    pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
        let mut replay = Replay::open(path)?;
        let mut out = Vec::new();
        replay.reader.read_to_end(&mut out)?;
        Ok(out)
    }
}

impl<R: Read> Replay<R> {
    /// A replay over any byte source (a file, a slice in tests).
    pub fn new(reader: R) -> Replay<R> {
        Replay {
            reader,
            buf: BytesMut::with_capacity(CHUNK),
            codec: AmiCodec::default(),
            eof: false,
            started: false,
            pending: VecDeque::new(),
            progress: None,
            fresh: AmiCodec::default(),
            skipped_before: 0,
            resync: ResyncCollector::default(),
        }
    }

    /// Uses a codec with another message cap.
    pub fn with_codec(mut self, codec: AmiCodec) -> Self {
        self.fresh = codec.clone();
        self.codec = codec;
        self
    }

    /// Oversize messages skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped_before + self.codec.skipped()
    }

    /// Whether the unread bytes start with a banner: a new session inside the capture. Only
    /// asked between frames, where the buffer starts at a line.
    fn at_banner(&mut self) -> io::Result<bool> {
        loop {
            match self.buf.first() {
                Some(b'A') | None => {}
                Some(_) => return Ok(false),
            }
            match parse::starts_with_banner(&self.buf) {
                Some(yes) if !self.buf.is_empty() => return Ok(yes),
                _ if self.eof => return Ok(false),
                _ => self.fill()?,
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        self.buf.reserve(CHUNK);
        let start = self.buf.len();
        self.buf.resize(start + CHUNK, 0);
        let n = loop {
            match self.reader.read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(start);
                return Err(e);
            }
        };
        self.buf.truncate(start + n);
        if let Some(bar) = &self.progress {
            bar.inc(n as u64);
        }
        self.eof = n == 0;
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, AmiError> {
        if self.started && self.at_banner()? {
            self.skipped_before += self.codec.skipped();
            self.codec = self.fresh.clone();
        }
        loop {
            let frame = if self.eof {
                self.codec.decode_eof(&mut self.buf)?
            } else {
                self.codec.decode(&mut self.buf)?
            };
            if frame.is_some() || self.eof {
                if frame.is_none() {
                    if let Some(bar) = self.progress.take() {
                        bar.finish_and_clear();
                    }
                }
                return Ok(frame);
            }
            self.fill()?;
        }
    }
}

impl<R: Read> Iterator for Replay<R> {
    type Item = Result<SourceEvent, AmiError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            match self.next_frame() {
                Err(e) => return Some(Err(e)),
                Ok(None) => {
                    // End of the capture: a resync cut short is still handed on.
                    return self.resync.ready(true).map(Ok);
                }
                Ok(Some(Frame::Banner(banner))) => {
                    if !self.started {
                        self.started = true;
                        return Some(Ok(SourceEvent::Connected { banner }));
                    }
                    if let Some(r) = self.resync.ready(true) {
                        self.pending.push_back(r);
                    }
                    self.pending.push_back(SourceEvent::Disconnected {
                        reason: "the capture's next session starts".into(),
                    });
                    self.pending.push_back(SourceEvent::Reconnected { banner });
                }
                Ok(Some(Frame::Message(m))) => {
                    if !self.started {
                        // Captures without a banner (trimmed traces) still start a session.
                        self.started = true;
                        self.pending.push_back(SourceEvent::Message(m));
                        return Some(Ok(SourceEvent::Connected {
                            banner: String::new(),
                        }));
                    }
                    if self.resync.take(&m) {
                        if let Some(r) = self.resync.ready(false) {
                            return Some(Ok(r));
                        }
                        continue;
                    }
                    if !self.resync.items.is_empty() {
                        self.resync.quiet += 1;
                        if let Some(r) = self.resync.ready(false) {
                            self.pending.push_back(SourceEvent::Message(m));
                            return Some(Ok(r));
                        }
                    }
                    return Some(Ok(SourceEvent::Message(m)));
                }
            }
        }
    }
}
