//! A recorded capture (exactly the bytes Asterisk sent, banner included) as an event source.
//!
//! It yields the same [`SourceEvent`]s as a live [`super::AmiClient`]: `Connected` with the
//! banner, then every message in order. The file is read in fixed-size chunks through the same
//! codec a socket uses, so memory stays flat whatever the capture's size, and a frame cut by the
//! end of the file is discarded exactly as a dropped connection would discard it.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::Path;

use bytes::BytesMut;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::codec::Decoder;

use super::codec::{AmiCodec, Frame};
use super::{AmiError, SourceEvent};

const CHUNK: usize = 256 * 1024;

/// Iterator over a capture's events.
pub struct Replay<R> {
    reader: R,
    buf: BytesMut,
    codec: AmiCodec,
    eof: bool,
    started: bool,
    pending: Option<super::Message>,
    progress: Option<ProgressBar>,
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
            pending: None,
            progress: None,
        }
    }

    /// Uses a codec with another message cap.
    pub fn with_codec(mut self, codec: AmiCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Oversize messages skipped so far.
    pub fn skipped(&self) -> u64 {
        self.codec.skipped()
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
        if let Some(m) = self.pending.take() {
            return Some(Ok(SourceEvent::Message(m)));
        }
        match self.next_frame() {
            Err(e) => Some(Err(e)),
            Ok(None) => None,
            Ok(Some(Frame::Banner(banner))) => {
                self.started = true;
                Some(Ok(SourceEvent::Connected { banner }))
            }
            Ok(Some(Frame::Message(m))) => {
                if !self.started {
                    // Captures without a banner (trimmed traces) still start a session.
                    self.started = true;
                    self.pending = Some(m);
                    return Some(Ok(SourceEvent::Connected {
                        banner: String::new(),
                    }));
                }
                Some(Ok(SourceEvent::Message(m)))
            }
        }
    }
}
