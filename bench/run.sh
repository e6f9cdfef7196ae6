#!/usr/bin/env bash
# The performance harness: a release build, then P1–P11 and P14 against real master and worker
# processes on loopback. Prints a table and writes bench/results/latest.json.
#   bench/run.sh           full sizes, judged against the targets
#   bench/run.sh --quick   small sizes (what CI runs), not judged
#   bench/run.sh --only P1,P4
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin ffrtmp
exec target/release/ffrtmp bench --out bench/results/latest.json "$@"
