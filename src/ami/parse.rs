//! The AMI wire grammar, as a streaming, zero-copy nom parser.
//!
//! A stream is an optional banner line (`Asterisk Call Manager/x.y.z`) followed by messages:
//! blocks of `Name: Value` lines ended by one empty line. The parser works on raw bytes and
//! never assumes UTF-8; a parsed [`MessageRef`] borrows every name and value from the input.
//!
//! Streaming means partial input is never an error: every parser answers
//! `Err::Incomplete` until the terminating empty line has arrived, so a caller can feed any
//! split of the stream and get the same messages (a property test checks this).
//!
//! Tolerated on purpose, because real servers send them:
//! - CRLF, bare LF, and the mixed `\r\n\n` terminator of Asterisk 18.19+/20.4+;
//! - duplicate names, names with spaces, `(`, `)`, `/`; empty values; values with `:`;
//! - a line without a colon (kept as a raw line, not fatal);
//! - Asterisk 13 `Response: Follows` command output, raw text up to `--END COMMAND--`,
//!   in which empty lines and colons are data.
//!
//! Line splitting uses `memchr`, which is what makes the parser fast: the per-line work is two
//! vectorised byte searches and a few slice operations.

use memchr::memchr;
use nom::bytes::streaming::tag;
use nom::error::{Error, ErrorKind};
use nom::{Err, IResult, Needed, Parser};

/// Default cap on one message, in bytes (values of tens of KB exist; 1 MiB is generous).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// The banner prefix; anything after it (version, `Proxy/`) is informational.
pub const BANNER_PREFIX: &[u8] = b"Asterisk Call Manager";

/// What ends legacy (Asterisk ≤ 13) command output.
pub const END_COMMAND: &[u8] = b"--END COMMAND--";

/// One `Name: Value` header, borrowed from the input.
pub type Header<'a> = (&'a [u8], &'a [u8]);

/// A message as parsed: headers in wire order (duplicates kept) and raw lines (lines with no
/// colon, or legacy command output), borrowed from the input buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub headers: Vec<Header<'a>>,
    pub raw_lines: Vec<&'a [u8]>,
}

impl<'a> MessageRef<'a> {
    /// The first value of `name`, compared case-insensitively (`ActionID`/`ActionId` both occur).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    }
}

/// Why parsing could not produce a message from a complete-enough input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// The message grew past the cap before its terminating empty line.
    TooLarge,
}

/// Splits one line off the input, without its `\n` and an optional trailing `\r`.
///
/// Streaming: with no `\n` in sight, more input is needed.
#[inline(always)]
pub fn line(input: &[u8]) -> IResult<&[u8], &[u8]> {
    match memchr(b'\n', input) {
        Some(pos) => {
            let mut content = &input[..pos];
            if let [head @ .., b'\r'] = content {
                content = head;
            }
            Ok((&input[pos + 1..], content))
        }
        None => Err(Err::Incomplete(Needed::Unknown)),
    }
}

/// The banner line: `Asterisk Call Manager/<version>`, returned whole (without its line end).
pub fn banner(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let (_, _) = tag(BANNER_PREFIX).parse(input)?;
    line(input)
}

/// Whether `input` starts with the banner. `None` while too few bytes have arrived to tell.
pub fn starts_with_banner(input: &[u8]) -> Option<bool> {
    let n = input.len().min(BANNER_PREFIX.len());
    if input[..n] != BANNER_PREFIX[..n] {
        Some(false)
    } else if n == BANNER_PREFIX.len() {
        Some(true)
    } else {
        None
    }
}

/// Names are a dozen bytes: an inlined word-at-a-time (SWAR) scan beats a vectorised
/// search, whose dispatch and set-up cost dominate on so few bytes.
#[inline(always)]
fn find_colon(line: &[u8]) -> Option<usize> {
    const COLONS: u64 = ONES * b':' as u64;
    let mut chunks = line.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ COLONS;
        // The lowest flagged byte is exact (borrows only flag bytes above a real match).
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(base + (found.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b':')
        .map(|p| base + p)
}

/// Splits a header line at its first `:`. The name is trimmed of surrounding spaces; exactly
/// one space after the colon is dropped, the rest of the value is data (trailing spaces too).
#[inline(always)]
pub fn split_header(line: &[u8]) -> Option<Header<'_>> {
    let colon = find_colon(line)?;
    Some(header_parts(line, colon))
}

#[inline(always)]
fn header_parts(line: &[u8], colon: usize) -> Header<'_> {
    let name = line[..colon].trim_ascii();
    let mut value = &line[colon + 1..];
    if let [b' ', rest @ ..] = value {
        value = rest;
    }
    (name, value)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags the bytes of `word` equal to `byte` (high bit set); the lowest flag is exact.
#[inline(always)]
fn flag_bytes(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Finds the end (`\n`) of the first line and the first `:` before it. AMI lines are a few
/// dozen bytes, so one inlined pass beats two library searches whose set-up cost dominates at
/// that size. On x86-64, SSE2 (always present there) compares 16 bytes at a time; elsewhere,
/// and for the tail, a word-at-a-time (SWAR) scan does 8.
#[inline(always)]
fn scan_line(input: &[u8]) -> Option<(usize, Option<usize>)> {
    #[cfg(target_arch = "x86_64")]
    {
        scan_line_sse2(input)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        scan_line_swar(input, 0, None)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn scan_line_sse2(input: &[u8]) -> Option<(usize, Option<usize>)> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let mut colon: Option<usize> = None;
    let mut base = 0;
    let mut blocks = input.chunks_exact(16);
    for block in &mut blocks {
        // SAFETY: `block` is exactly 16 readable bytes; SSE2 is part of the x86-64 baseline;
        // the load is unaligned by design.
        let (nl, co) = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            (
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8))) as u32,
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b':' as i8))) as u32,
            )
        };
        if colon.is_none() && co != 0 {
            let at = co.trailing_zeros();
            if nl == 0 || at < nl.trailing_zeros() {
                colon = Some(base + at as usize);
            }
        }
        if nl != 0 {
            return Some((base + nl.trailing_zeros() as usize, colon));
        }
        base += 16;
    }
    scan_line_swar(blocks.remainder(), base, colon)
}

/// The portable scan, starting at offset `base` of the line with what was found before it.
#[inline(always)]
fn scan_line_swar(
    input: &[u8],
    base: usize,
    mut colon: Option<usize>,
) -> Option<(usize, Option<usize>)> {
    let mut chunks = input.chunks_exact(8);
    let mut base = base;
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        let nl = flag_bytes(word, b'\n');
        if colon.is_none() {
            let c = flag_bytes(word, b':');
            if c != 0 {
                let at = (c.trailing_zeros() / 8) as usize;
                if nl == 0 || at < (nl.trailing_zeros() / 8) as usize {
                    colon = Some(base + at);
                }
            }
        }
        if nl != 0 {
            return Some((base + (nl.trailing_zeros() / 8) as usize, colon));
        }
        base += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        match b {
            b'\n' => return Some((base + i, colon)),
            b':' if colon.is_none() => colon = Some(base + i),
            _ => {}
        }
    }
    None
}

/// Receives the lines of a message as the parser finds them. Lets the codec record offsets
/// directly, without building a borrowed message first.
pub trait LineSink<'a> {
    fn header(&mut self, name: &'a [u8], value: &'a [u8]);
    fn raw(&mut self, line: &'a [u8]);
}

impl<'a> LineSink<'a> for MessageRef<'a> {
    #[inline]
    fn header(&mut self, name: &'a [u8], value: &'a [u8]) {
        self.headers.push((name, value));
    }
    fn raw(&mut self, line: &'a [u8]) {
        self.raw_lines.push(line);
    }
}

/// Parses one message, skipping any empty lines in front of it.
///
/// Returns the rest of the input and the message. A message that would exceed `max_len` bytes
/// (counted from its first line) yields `Err::Failure` with [`ErrorKind::TooLarge`]; the caller
/// then skips to the next empty line (see [`skip_to_blank_line`]).
pub fn message(input: &[u8], max_len: usize) -> IResult<&[u8], MessageRef<'_>> {
    let mut msg = MessageRef {
        headers: Vec::with_capacity(32),
        raw_lines: Vec::new(),
    };
    let rest = message_into(input, max_len, &mut msg)?;
    Ok((rest, msg))
}

/// [`message`], handing each line to `sink` instead of collecting them. Returns the rest of
/// the input after the message.
pub fn message_into<'a, S: LineSink<'a>>(
    input: &'a [u8],
    max_len: usize,
    sink: &mut S,
) -> Result<&'a [u8], Err<Error<&'a [u8]>>> {
    let start = skip_blank_lines(input)?;
    let mut rest = start;
    let mut follows = false;
    loop {
        // One pass finds the line's end and its first colon.
        let Some((end, colon)) = scan_line(rest) else {
            return Err(cap(Err::Incomplete(Needed::Unknown), start, max_len));
        };
        let after = &rest[end + 1..];
        if start.len() - after.len() > max_len {
            return Err(too_large(start));
        }
        let mut l = &rest[..end];
        if let [head @ .., b'\r'] = l {
            l = head;
        }
        rest = after;
        if l.is_empty() {
            return Ok(rest);
        }
        if follows && !is_follows_header(l) {
            return command_output(rest, l, sink, start, max_len);
        }
        match colon.filter(|&c| c < l.len()) {
            Some(c) => {
                let (name, value) = header_parts(l, c);
                follows |= value == b"Follows" && name.eq_ignore_ascii_case(b"Response");
                sink.header(name, value);
            }
            None => sink.raw(l),
        }
    }
}

/// Asterisk ≤ 13 `Command` output: raw lines (empty ones included) up to a line ending in
/// `--END COMMAND--`, then the message's empty line. `first` is the first output line.
fn command_output<'a, S: LineSink<'a>>(
    mut rest: &'a [u8],
    first: &'a [u8],
    sink: &mut S,
    start: &'a [u8],
    max_len: usize,
) -> Result<&'a [u8], Err<Error<&'a [u8]>>> {
    let mut l = first;
    loop {
        if let Some(text) = l.strip_suffix(END_COMMAND) {
            if !text.is_empty() {
                sink.raw(text);
            }
            // The terminating empty line; be lenient if something else follows.
            let (after, next) = line(rest).map_err(|e| cap(e, start, max_len))?;
            return Ok(if next.is_empty() { after } else { rest });
        }
        sink.raw(l);
        let (after, next) = line(rest).map_err(|e| cap(e, start, max_len))?;
        if start.len() - after.len() > max_len {
            return Err(too_large(start));
        }
        rest = after;
        l = next;
    }
}

/// Inside `Response: Follows`, only these names are headers; anything else is output.
fn is_follows_header(line: &[u8]) -> bool {
    split_header(line).is_some_and(|(n, _)| {
        n.eq_ignore_ascii_case(b"Privilege") || n.eq_ignore_ascii_case(b"ActionID")
    })
}

fn skip_blank_lines(mut input: &[u8]) -> Result<&[u8], Err<Error<&[u8]>>> {
    loop {
        match input {
            [b'\n', rest @ ..] => input = rest,
            [b'\r', b'\n', rest @ ..] => input = rest,
            [b'\r'] | [] => return Err(Err::Incomplete(Needed::Unknown)),
            _ => return Ok(input),
        }
    }
}

/// An incomplete message that is already over the cap will never fit: report it as too large.
fn cap<'a>(e: Err<Error<&'a [u8]>>, start: &'a [u8], max_len: usize) -> Err<Error<&'a [u8]>> {
    match e {
        Err::Incomplete(_) if start.len() > max_len => too_large(start),
        other => other,
    }
}

fn too_large(at: &[u8]) -> Err<Error<&[u8]>> {
    Err::Failure(Error::new(at, ErrorKind::TooLarge))
}

/// Skips bytes up to and including the next empty line, for resynchronising after an oversize
/// message. Returns the number of bytes that can be dropped and whether the empty line was found.
/// When it was not, the last two bytes are kept so a terminator split across reads is still seen.
pub fn skip_to_blank_line(input: &[u8]) -> (usize, bool) {
    let mut from = 0;
    while let Some(pos) = memchr(b'\n', &input[from..]) {
        let nl = from + pos;
        match &input[nl + 1..] {
            [b'\n', ..] => return (nl + 2, true),
            [b'\r', b'\n', ..] => return (nl + 3, true),
            _ => from = nl + 1,
        }
    }
    (input.len().saturating_sub(2), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> MessageRef<'_> {
        let (rest, m) = message(input, DEFAULT_MAX_MESSAGE).expect("complete message");
        assert!(
            rest.is_empty(),
            "left over: {:?}",
            String::from_utf8_lossy(rest)
        );
        m
    }

    #[test]
    fn crlf_and_lf_and_mixed_terminators() {
        for input in [
            &b"Event: Hangup\r\nCause: 16\r\n\r\n"[..],
            b"Event: Hangup\nCause: 16\n\n",
            b"Event: Hangup\r\nCause: 16\r\n\n",
        ] {
            let m = one(input);
            assert_eq!(
                m.headers,
                vec![(&b"Event"[..], &b"Hangup"[..]), (b"Cause", b"16")]
            );
        }
    }

    #[test]
    fn partial_input_needs_more() {
        let full = b"Event: Hangup\r\nCause: 16\r\n\r\n";
        for cut in 0..full.len() {
            assert!(
                matches!(message(&full[..cut], 1024), Err(Err::Incomplete(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn duplicate_keys_odd_names_and_values() {
        let m = one(
            b"Event: Newchannel\r\nChanVariable: A=1\r\nChanVariable: B=2\r\n\
ChanVariable(SIP/100-0001): x\r\nParent/Child: y\r\nKey With Space : z\r\n\
Empty: \r\nNoSpace:v\r\nTime: 12:30:01\r\nTrailing:  two  \r\n\r\n",
        );
        let all: Vec<_> = m
            .headers
            .iter()
            .filter(|(n, _)| *n == b"ChanVariable")
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(all, vec![&b"A=1"[..], b"B=2"]);
        assert_eq!(m.get("chanvariable(sip/100-0001)"), Some(&b"x"[..]));
        assert_eq!(m.get("Parent/Child"), Some(&b"y"[..]));
        assert_eq!(m.get("Key With Space"), Some(&b"z"[..]));
        assert_eq!(m.get("Empty"), Some(&b""[..]));
        assert_eq!(m.get("NoSpace"), Some(&b"v"[..]));
        assert_eq!(m.get("Time"), Some(&b"12:30:01"[..]));
        assert_eq!(m.get("Trailing"), Some(&b" two  "[..]));
    }

    #[test]
    fn non_utf8_and_raw_lines_are_kept() {
        let m = one(b"Event: X\r\nName: caf\xe9\r\njust text\r\n\r\n");
        assert_eq!(m.get("Name"), Some(&b"caf\xe9"[..]));
        assert_eq!(m.raw_lines, vec![&b"just text"[..]]);
    }

    #[test]
    fn legacy_command_output_keeps_colons_and_blank_lines() {
        let m = one(
            b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n\
Asterisk 13 built on 2014-08-06 19:30:37 UTC\n\nline two\n--END COMMAND--\r\n\r\n",
        );
        assert_eq!(m.get("ActionID"), Some(&b"7"[..]));
        assert_eq!(
            m.raw_lines,
            vec![
                &b"Asterisk 13 built on 2014-08-06 19:30:37 UTC"[..],
                b"",
                b"line two"
            ]
        );
    }

    #[test]
    fn follows_without_output_ends_at_blank_line() {
        let m = one(b"Response: Follows\r\nPrivilege: Command\r\nActionID: 1\r\n\r\n");
        assert_eq!(m.headers.len(), 3);
        assert!(m.raw_lines.is_empty());
    }

    #[test]
    fn modern_command_output_lines() {
        let m = one(b"Response: Success\r\nMessage: Command output follows\r\nOutput: a\r\nOutput: b: c\r\n\r\n");
        let out: Vec<_> = m
            .headers
            .iter()
            .filter(|h| h.0 == b"Output")
            .map(|h| h.1)
            .collect();
        assert_eq!(out, vec![&b"a"[..], b"b: c"]);
    }

    #[test]
    fn scan_line_finds_end_and_first_colon_at_any_offset() {
        for pad in 0..20 {
            let name = "N".repeat(pad);
            let line = format!("{name}: a:b\nnext: x");
            assert_eq!(scan_line(line.as_bytes()), Some((pad + 5, Some(pad))));
            let raw = format!("{name}\nx:y");
            assert_eq!(scan_line(raw.as_bytes()), Some((pad, None)));
            // The portable path gives the same answers.
            assert_eq!(
                scan_line_swar(line.as_bytes(), 0, None),
                Some((pad + 5, Some(pad)))
            );
            assert_eq!(scan_line_swar(raw.as_bytes(), 0, None), Some((pad, None)));
        }
        assert_eq!(scan_line(b"no end: here"), None);
    }

    #[test]
    fn banner_detection() {
        assert_eq!(starts_with_banner(b"Aster"), None);
        assert_eq!(starts_with_banner(b"Event: X"), Some(false));
        assert_eq!(
            starts_with_banner(b"Asterisk Call Manager/11.0.0\r\n"),
            Some(true)
        );
        let (rest, b) = banner(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n").unwrap();
        assert_eq!(b, b"Asterisk Call Manager/11.0.0");
        assert_eq!(rest, b"Response: Success\r\n");
    }

    #[test]
    fn oversize_is_reported_and_skippable() {
        let big = [
            b"Event: Big\r\nData: ".as_slice(),
            &[b'x'; 300],
            b"\r\n\r\nEvent: Next\r\n\r\n",
        ]
        .concat();
        assert!(matches!(message(&big, 100), Err(Err::Failure(_))));
        let (n, found) = skip_to_blank_line(&big);
        assert!(found);
        assert_eq!(one(&big[n..]).get("Event"), Some(&b"Next"[..]));
        // Incomplete but already too large is also a failure, not a wait for ever.
        assert!(matches!(message(&big[..200], 100), Err(Err::Failure(_))));
    }
}
