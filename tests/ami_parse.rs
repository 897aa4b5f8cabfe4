//! The parser against every recorded capture in `fixtures/`, checked by an independent count,
//! whole and split at arbitrary points.

mod support;

use std::path::{Path, PathBuf};

use ami_zoho_bridge::ami::{AmiCodec, Frame};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// What the simplest possible reading of the bytes says: blank-line-terminated blocks, the
/// blocks that have an `Event:` line, and the non-empty lines inside blocks. A block that the
/// file ends before terminating is not a message (a live stream would still be waiting).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Counts {
    messages: usize,
    events: usize,
    lines: usize,
}

fn independent_counts(data: &[u8]) -> Counts {
    let mut c = Counts {
        messages: 0,
        events: 0,
        lines: 0,
    };
    let mut in_block = false;
    let mut block_has_event = false;
    let mut block_lines = 0;
    let mut first = true;
    // Only whole lines count: what follows the last line feed is an unfinished line.
    let whole = match data.iter().rposition(|&b| b == b'\n') {
        Some(p) => &data[..p],
        None => &data[..0],
    };
    for raw in whole.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if first {
            first = false;
            if line.starts_with(b"Asterisk Call Manager") {
                continue;
            }
        }
        if line.is_empty() {
            if in_block {
                c.messages += 1;
                c.events += usize::from(block_has_event);
                c.lines += block_lines;
            }
            block_lines = 0;
            in_block = false;
            block_has_event = false;
        } else {
            in_block = true;
            block_lines += 1;
            block_has_event |= line.starts_with(b"Event:");
        }
    }
    c
}

fn parsed_counts(frames: &[Frame]) -> Counts {
    let mut c = Counts {
        messages: 0,
        events: 0,
        lines: 0,
    };
    for f in frames {
        if let Frame::Message(m) = f {
            c.messages += 1;
            c.events += usize::from(m.event().is_some());
            c.lines += m.header_count() + m.raw_lines().filter(|l| !l.is_empty()).count();
        }
    }
    c
}

fn decode_chunked(data: &[u8], sizes: &mut dyn Iterator<Item = usize>) -> Vec<Frame> {
    let mut codec = AmiCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let n = sizes
            .next()
            .unwrap_or(data.len())
            .max(1)
            .min(data.len() - pos);
        buf.extend_from_slice(&data[pos..pos + n]);
        pos += n;
        while let Some(f) = codec
            .decode(&mut buf)
            .expect("decoder never fails on content")
        {
            out.push(f);
        }
    }
    while let Some(f) = codec
        .decode_eof(&mut buf)
        .expect("decoder never fails on content")
    {
        out.push(f);
    }
    out
}

fn wire_captures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        "fixtures/ami-real",
        "fixtures/ami-sip",
        "fixtures/ami-public/goami2",
    ] {
        for entry in std::fs::read_dir(support::root().join(dir)).expect("fixture dir") {
            let path = entry.expect("entry").path();
            let name = path.to_string_lossy();
            if name.ends_with(".ami") || name.ends_with(".ami.gz") {
                files.push(path);
            }
        }
    }
    let pano = support::root().join("fixtures/ami-public/panoramisk/tests/fixtures");
    for entry in std::fs::read_dir(pano).expect("panoramisk fixtures") {
        files.push(entry.expect("entry").path());
    }
    files.sort();
    files
}

fn same_messages(a: &[Frame], b: &[Frame]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Frame::Banner(p), Frame::Banner(q)) => p == q,
            (Frame::Message(p), Frame::Message(q)) => {
                p.headers().eq(q.headers()) && p.raw_lines().eq(q.raw_lines())
            }
            _ => false,
        })
}

#[test]
fn every_capture_parses_to_the_independent_count() {
    let files = wire_captures();
    assert!(
        files.len() > 60,
        "expected all captures, found {}",
        files.len()
    );
    for path in &files {
        let data = support::read_capture(path);
        let whole = decode_chunked(&data, &mut std::iter::empty());
        let has_legacy_output = data.windows(15).any(|w| w == b"--END COMMAND--");
        let mut expected = independent_counts(&data);
        let got = parsed_counts(&whole);
        if has_legacy_output {
            // Blank lines inside command output are data, not terminators.
            expected.lines = got.lines;
        }
        assert_eq!(got, expected, "{}", path.display());
        check_truth(path, &data, got.events);
    }
}

/// Where a `.truth.json` exists, its recorded byte and event counts must match too.
fn check_truth(path: &Path, data: &[u8], events: usize) {
    let name = path.to_string_lossy();
    let base = name.trim_end_matches(".gz").trim_end_matches(".ami");
    let Ok(text) = std::fs::read_to_string(format!("{base}.truth.json")) else {
        return;
    };
    let truth: serde_json::Value = serde_json::from_str(&text).expect("truth json");
    if let Some(bytes) = truth["capture_bytes"].as_u64() {
        assert_eq!(
            data.len() as u64,
            bytes,
            "{name}: bytes differ from the recording"
        );
    }
    if let Some(n) = truth["capture_event_count"].as_u64() {
        assert_eq!(events as u64, n, "{name}: event count");
    }
}

#[test]
fn every_chunk_size_from_1_byte_to_8_kib_gives_the_same_messages() {
    // A real slice of traffic with long and short lines, cut at a message boundary.
    let data =
        support::read_capture(&support::root().join("fixtures/ami-real/inbound-transfer.ami"));
    let cut = data
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"\r\n\r\n")
        .map(|(i, _)| i + 4)
        .take_while(|&i| i < 6000)
        .last()
        .expect("a message boundary");
    let sample = &data[..cut];
    let reference = decode_chunked(sample, &mut std::iter::empty());
    assert!(reference.len() > 10);
    for size in 1..=8192 {
        let got = decode_chunked(sample, &mut std::iter::repeat(size));
        assert!(same_messages(&got, &reference), "chunk size {size}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any split of any capture gives the same messages as the whole.
    #[test]
    fn any_split_of_any_capture_gives_the_same_messages(
        file_index in 0usize..1000,
        sizes in proptest::collection::vec(1usize..=8192, 1..64),
    ) {
        let files = wire_captures();
        let path = &files[file_index % files.len()];
        let data = support::read_capture(path);
        let whole = decode_chunked(&data, &mut std::iter::empty());
        let mut cycle = sizes.iter().copied().cycle();
        let split = decode_chunked(&data, &mut cycle);
        prop_assert!(same_messages(&split, &whole), "{}", path.display());
    }
}

#[test]
fn replay_yields_banner_then_every_message() {
    use ami_zoho_bridge::ami::replay::Replay;
    use ami_zoho_bridge::ami::SourceEvent;
    let path = support::root().join("fixtures/ami-sip/busyhour-seed11.ami.gz");
    let mut events = Replay::open(&path)
        .expect("open")
        .map(|e| e.expect("replay"));
    assert!(
        matches!(events.next(), Some(SourceEvent::Connected { banner }) if banner == "Asterisk Call Manager/9.0.0")
    );
    let n = events
        .filter(|e| matches!(e, SourceEvent::Message(m) if m.event().is_some()))
        .count();
    assert_eq!(n, 16894);
}

/// Inputs the fuzzer found where chunked and whole decoding once disagreed: every chunk size
/// must give the same messages as the whole.
#[test]
fn fuzz_regressions_decode_the_same_in_any_chunking() {
    let dir = support::root().join("fixtures/fuzz-regressions");
    for entry in std::fs::read_dir(dir).expect("regressions") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        let whole = decode_chunked(&data, &mut std::iter::empty());
        for size in 1..=80 {
            let split = decode_chunked(&data, &mut std::iter::repeat(size));
            assert!(
                same_messages(&split, &whole),
                "{} chunk {size}",
                path.display()
            );
        }
    }
}
