#!/usr/bin/env bash
# Throughput of the parser (bench-parse) and of parser + call tracker (bench-pipeline) on the
# real busy-hour captures and on synthetic corpora of 100k and 1M events, then the tracker's
# memory per live call. The rate comes from the fastest round (on a shared host other tenants
# only ever add time); the fastest, median and slowest rounds are printed above it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/ami-zoho-bridge
busy=(fixtures/ami-real/busyhour-seed7.ami.gz fixtures/ami-sip/busyhour-seed11.ami.gz)
gen=../shared/tools/gen_ami.py
corpus() { # events seed
  local f=target/bench/gen-$1.ami
  mkdir -p target/bench
  [ -f "$f" ] || python3 "$gen" "$1" "$f" --seed "$2" >/dev/null
  echo "$f"
}
for f in "${busy[@]}"; do
  echo "# bench-parse $f"
  "$bin" bench-parse "$f" --rounds 21 --baseline
done
if [ -f "$gen" ]; then
  f=$(corpus 100000 1)
  echo "# bench-parse $f"
  "$bin" bench-parse "$f" --rounds 11 --baseline
fi
for f in "${busy[@]}"; do
  echo "# bench-pipeline $f"
  "$bin" bench-pipeline "$f" --config "$(dirname "$f")/bridge.toml" --rounds 21
done
if [ -f "$gen" ]; then
  f=$(corpus 1000000 2)
  echo "# bench-pipeline $f"
  "$bin" bench-pipeline "$f" --rounds 5
fi
echo "# memory per live call"
cargo bench --quiet --bench live_calls
