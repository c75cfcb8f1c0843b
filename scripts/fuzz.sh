#!/usr/bin/env bash
# Builds and runs the codec fuzz target (fuzz/fuzz_targets/decode.rs) for SECONDS (default 600) on
# one core, starting from the checked-in spec-vector seeds (fuzz/seeds/decode) and the local,
# git-ignored corpus (fuzz/corpus/decode). Crashes land in fuzz/artifacts/decode/.
#
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail

seconds="${1:-600}"
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed; installing it with 'cargo install cargo-fuzz --locked'"
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only flags (-Z sanitizer=address); this lets the stable toolchain
# accept them, as the project builds on stable only.
export RUSTC_BOOTSTRAP=1

cd "$root/fuzz"
mkdir -p corpus/decode
exec cargo fuzz run decode corpus/decode seeds/decode -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
