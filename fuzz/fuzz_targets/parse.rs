//! Fuzzes the AMI parser and codec: no input may panic, and feeding the same bytes in small
//! chunks must give exactly the messages that feeding them whole gives, with and without
//! skimming (the first byte picks the chunk size and whether to skim).
#![no_main]

use ami_zoho_bridge::ami::{parse, AmiCodec, Frame};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn decode(data: &[u8], chunk: usize, max: usize, skim: bool) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut codec = AmiCodec::new(max);
    if skim {
        // Skims every event that has a Timestamp: the most lines framed without parsing.
        codec = codec.with_skim(|_| true);
    }
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let push = |f: Frame, out: &mut Vec<_>| {
        if let Frame::Message(m) = f {
            out.push(m.headers().map(|(k, v)| (k.to_vec(), v.to_vec())).collect());
        }
    };
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            push(f, &mut out);
        }
    }
    while let Ok(Some(f)) = codec.decode_eof(&mut buf) {
        push(f, &mut out);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = parse::message(data, 4096);
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk = usize::from(first % 64) + 1;
    // A cap far above the input: chunking can never change the result.
    let skim = first & 0x80 != 0;
    let whole = decode(rest, rest.len().max(1), usize::MAX / 2, skim);
    let split = decode(rest, chunk, usize::MAX / 2, skim);
    assert_eq!(whole, split);
    // With a small cap only robustness is checked (skips depend on what is buffered).
    let _ = decode(rest, chunk, 256, skim);
});
