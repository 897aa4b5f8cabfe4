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
//! What makes it fast: a message's line ends come from one vectorised classification of each
//! 64-byte block into a bitmask (`Newlines`), a header's colon from one 16-byte compare
//! at the line's start, so the per-line work is a few bit and slice operations. A consumer
//! that does not want an event's other lines (see `AmiCodec::with_skim`) has them only framed.

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
    let raw = &line[..colon];
    // Names almost never carry spaces: look at both ends before trimming.
    let name = match (raw.first(), raw.last()) {
        (Some(&first), Some(&last)) if first > b' ' && last > b' ' => raw,
        _ => raw.trim_ascii(),
    };
    let mut value = &line[colon + 1..];
    if let [b' ', rest @ ..] = value {
        value = rest;
    }
    (name, value)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Finds line ends 64 bytes at a time.
///
/// AMI lines are two dozen bytes on average: a search restarted at every line start spends
/// more on set-up and mispredicted branches than on bytes. This classifies a 64-byte block
/// once into a bitmask of its `\n` and hands out line ends with two bit operations each. On
/// x86-64 the mask comes from SSE2 (part of the baseline); elsewhere from a word-at-a-time
/// (SWAR) loop. Bytes past the end of the input read as zero, which is not `\n`.
struct Newlines<'a> {
    input: &'a [u8],
    /// Offset of the current block.
    block: usize,
    /// Newlines of the current block not handed out yet.
    pending: u64,
}

impl<'a> Newlines<'a> {
    #[inline(always)]
    fn new(input: &'a [u8]) -> Newlines<'a> {
        Newlines {
            input,
            block: 0,
            pending: newline_mask_at(input, 0),
        }
    }

    /// The offset of the next `\n`, `None` when the input ends first.
    #[inline(always)]
    fn next_end(&mut self) -> Option<usize> {
        while self.pending == 0 {
            self.block += 64;
            if self.block >= self.input.len() {
                return None;
            }
            self.pending = newline_mask_at(self.input, self.block);
        }
        let bit = self.pending.trailing_zeros() as usize;
        self.pending &= self.pending - 1;
        Some(self.block + bit)
    }
}

/// The `\n` bitmask of the 64 bytes at `at` (zero past the end of `input`).
#[inline(always)]
fn newline_mask_at(input: &[u8], at: usize) -> u64 {
    match input.get(at..at + 64) {
        Some(block) => byte_mask_64(block, b'\n'),
        None => {
            let mut padded = [0u8; 64];
            let tail = input.get(at..).unwrap_or_default();
            padded[..tail.len()].copy_from_slice(tail);
            byte_mask_64(&padded, b'\n')
        }
    }
}

/// Bit `i` set where `block[i] == byte`; `block` is exactly 64 bytes.
#[inline(always)]
fn byte_mask_64(block: &[u8], byte: u8) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let mut mask = 0u64;
        for (i, part) in block.chunks_exact(16).take(4).enumerate() {
            mask |= u64::from(byte_mask_16(part, byte)) << (16 * i);
        }
        mask
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        byte_mask_64_swar(block, byte)
    }
}

/// Bit `i` set where `part[i] == byte`; `part` is at least 16 bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn byte_mask_16(part: &[u8], byte: u8) -> u16 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    assert!(part.len() >= 16);
    // SAFETY: 16 readable bytes (checked above, and the check folds away where the caller's
    // slice is known long enough); SSE2 is part of the x86-64 baseline; unaligned by design.
    unsafe {
        let v = _mm_loadu_si128(part.as_ptr().cast::<__m128i>());
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8))) as u16
    }
}

/// The portable classification: eight bytes per step, flags gathered into bits.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn byte_mask_64_swar(block: &[u8], byte: u8) -> u64 {
    // Moves the high bit of each byte (bits 7, 15, ... 63) to bits 56..64, in order.
    const GATHER: u64 = 0x0102_0408_1020_4080;
    const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut mask = 0u64;
    for (i, chunk) in block.chunks_exact(8).take(8).enumerate() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let x = u64::from_le_bytes(bytes) ^ (ONES * u64::from(byte));
        // Exact: the high bit of every zero byte of `x`, no false flags.
        let flags = !(((x & LOWS).wrapping_add(LOWS)) | x | LOWS);
        mask |= (((flags >> 7).wrapping_mul(GATHER)) >> 56) << (8 * i);
    }
    mask
}

/// The first `:` of the line `input[from..end]`, as an offset from `from`. Header names are
/// a dozen bytes, so one 16-byte look at the line's start nearly always settles it (reading
/// past the line's end is fine while inside `input`: matches there are ignored).
#[inline(always)]
fn colon_in(input: &[u8], from: usize, end: usize) -> Option<usize> {
    let len = end - from;
    #[cfg(target_arch = "x86_64")]
    if let Some(head) = input.get(from..from + 16) {
        let mask = byte_mask_16(head, b':');
        if mask != 0 {
            let at = mask.trailing_zeros() as usize;
            return (at < len).then_some(at);
        }
        if len <= 16 {
            return None;
        }
        return find_colon(&input[from + 16..end]).map(|c| c + 16);
    }
    find_colon(&input[from..end])
}

/// Receives the lines of a message as the parser finds them. Lets the codec record offsets
/// directly, without building a borrowed message first.
pub trait LineSink<'a> {
    /// Records a header; `false` asks the parser to skip the message's remaining lines (only
    /// framing them, see [`AmiCodec::with_skim`](super::AmiCodec::with_skim)).
    fn header(&mut self, name: &'a [u8], value: &'a [u8]) -> bool;
    fn raw(&mut self, line: &'a [u8]);
}

impl<'a> LineSink<'a> for MessageRef<'a> {
    #[inline]
    fn header(&mut self, name: &'a [u8], value: &'a [u8]) -> bool {
        self.headers.push((name, value));
        true
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
    let mut newlines = Newlines::new(start);
    let mut from = 0;
    let mut follows = false;
    loop {
        let Some(end) = newlines.next_end() else {
            return Err(cap(Err::Incomplete(Needed::Unknown), start, max_len));
        };
        if end >= max_len {
            return Err(too_large(start));
        }
        let mut line_end = end;
        if line_end > from && start[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        let line_from = from;
        from = end + 1;
        if line_end == line_from {
            return Ok(&start[from..]);
        }
        let l = &start[line_from..line_end];
        if follows && !is_follows_header(l) {
            return command_output(&start[from..], l, sink, start, max_len);
        }
        match colon_in(start, line_from, line_end) {
            Some(c) => {
                let (name, value) = header_parts(l, c);
                follows |= value == b"Follows" && name.eq_ignore_ascii_case(b"Response");
                if !sink.header(name, value) {
                    return skip_lines(&mut newlines, start, from, max_len);
                }
            }
            None => sink.raw(l),
        }
    }
}

/// The rest of a message whose remaining lines the sink does not want: only line ends are
/// looked at, up to the empty line.
fn skip_lines<'a>(
    newlines: &mut Newlines<'a>,
    start: &'a [u8],
    mut from: usize,
    max_len: usize,
) -> Result<&'a [u8], Err<Error<&'a [u8]>>> {
    loop {
        let Some(end) = newlines.next_end() else {
            return Err(cap(Err::Incomplete(Needed::Unknown), start, max_len));
        };
        if end >= max_len {
            return Err(too_large(start));
        }
        let empty = end == from || (end == from + 1 && start[from] == b'\r');
        from = end + 1;
        if empty {
            return Ok(&start[from..]);
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

    /// Every line end and first colon, the slow obvious way.
    fn naive_lines(input: &[u8]) -> Vec<(usize, Option<usize>)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, &b) in input.iter().enumerate() {
            if b == b'\n' {
                let colon = input[start..i].iter().position(|&c| c == b':');
                out.push((i, colon.map(|c| start + c)));
                start = i + 1;
            }
        }
        out
    }

    fn scanned_lines(input: &[u8]) -> Vec<(usize, Option<usize>)> {
        let mut newlines = Newlines::new(input);
        let mut from = 0;
        std::iter::from_fn(|| {
            let end = newlines.next_end()?;
            let colon = colon_in(input, from, end).map(|c| from + c);
            from = end + 1;
            Some((end, colon))
        })
        .collect()
    }

    #[test]
    fn line_scan_agrees_with_a_naive_scan() {
        // Lines and colons at every offset across block edges, long lines and long names,
        // lines with no colon, colons just past a line's end, a last line with no end.
        let mut input = Vec::new();
        for len in 0..150 {
            let colon_at = (len * 7) % (len + 1);
            for i in 0..len {
                input.push(if i == colon_at {
                    b':'
                } else {
                    b'a' + (i % 26) as u8
                });
            }
            input.push(b'\n');
            if len % 5 == 0 {
                input.extend_from_slice(b"::\n\nab\n:\n");
            }
        }
        input.extend_from_slice(b"tail: no end");
        for from in 0..70 {
            assert_eq!(
                scanned_lines(&input[from..]),
                naive_lines(&input[from..]),
                "from {from}"
            );
        }
    }

    #[test]
    fn portable_block_mask_matches() {
        let block: Vec<u8> = (0..64u8)
            .map(|i| match i % 11 {
                0 => b'\n',
                3 | 4 => b':',
                5 => 0x8a, // high bit set, low bits of \n
                6 => 0xba, // high bit set, low bits of :
                _ => b'x',
            })
            .collect();
        for byte in [b'\n', b':'] {
            let want = (0..64)
                .filter(|&i| block[i] == byte)
                .fold(0u64, |m, i| m | 1 << i);
            assert_eq!(byte_mask_64_swar(&block, byte), want);
            assert_eq!(byte_mask_64(&block, byte), want);
        }
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
