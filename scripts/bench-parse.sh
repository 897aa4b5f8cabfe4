#!/usr/bin/env bash
# Parser throughput on the real busy-hour captures and on a synthetic corpus of 100k events.
# Prints bench-parse's figures: the rate comes from the fastest round (noise only adds time);
# the fastest, median and slowest rounds are printed above it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/ami-zoho-bridge
for f in fixtures/ami-real/busyhour-seed7.ami.gz fixtures/ami-sip/busyhour-seed11.ami.gz; do
  echo "# $f"
  "$bin" bench-parse "$f" --rounds 21 --baseline
done
gen=../shared/tools/gen_ami.py
if [ -f "$gen" ]; then
  corpus=target/bench/gen-100k.ami
  mkdir -p target/bench
  [ -f "$corpus" ] || python3 "$gen" 100000 "$corpus" --seed 1 >/dev/null
  echo "# $corpus"
  "$bin" bench-parse "$corpus" --rounds 11 --baseline
fi
