#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/fuzz_targets/) and runs one of them, or all in turn, for SECONDS
# each (default 600) on one core, starting from the checked-in seeds (fuzz/seeds/TARGET) and the
# local, git-ignored corpus (fuzz/corpus/TARGET). Crashes land in fuzz/artifacts/TARGET/; the
# script exits non-zero if any target found one.
#
# Targets: decode (the codec, round trip), topic_match (trie vs a naive matcher), config (the TOML
# parser and the memory budget), password_file and acl (the Mosquitto auth file parsers).
#
# Usage: scripts/fuzz.sh [TARGET|all] [SECONDS]     e.g. scripts/fuzz.sh all 60
#        scripts/fuzz.sh SECONDS                     (all targets)
set -euo pipefail

targets_all=(decode topic_match config password_file acl)
target="all"
seconds=600
if [[ $# -ge 1 && "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
else
    target="${1:-all}"
    seconds="${2:-600}"
fi
if [[ "$target" == "all" ]]; then
    targets=("${targets_all[@]}")
elif [[ " ${targets_all[*]} " == *" $target "* ]]; then
    targets=("$target")
else
    echo "fuzz.sh: unknown target '$target'; choose one of: ${targets_all[*]} all" >&2
    exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed; installing it with 'cargo install cargo-fuzz --locked'"
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only flags (-Z sanitizer=address); this lets the stable toolchain
# accept them, as the project builds on stable only.
export RUSTC_BOOTSTRAP=1

# Longest input per target: frames of a few KiB; a config file a few times the default's size.
max_len() {
    case "$1" in
        config) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

cd "$root/fuzz"
cargo fuzz build -O
failed=()
for each in "${targets[@]}"; do
    mkdir -p "corpus/$each"
    echo "== fuzz.sh: $each for ${seconds}s"
    if ! cargo fuzz run -O "$each" "corpus/$each" "seeds/$each" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$each")" -print_final_stats=1; then
        failed+=("$each")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: findings in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no findings in ${targets[*]}"
