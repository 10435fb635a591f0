#!/usr/bin/env bash
# Bounded fuzz smoke for CI: builds the cargo-fuzz targets with
# AddressSanitizer (leaks and memory errors are findings) and runs each for
# FUZZ_SECONDS (default 30) seconds. Fails on any crash, leak, timeout or
# build error, the sanitizer build's included: a run without the sanitizer
# would not find what this promises to. Stable toolchain: RUSTC_BOOTSTRAP=1
# unlocks the sanitizer flags cargo-fuzz passes. Needs a C++ compiler
# (libFuzzer) and the toolchain's glibc target; scripts/install-test-deps
# installs and checks both.
#
#   bash fuzz/smoke.sh                 # build and run
#   bash fuzz/smoke.sh --install-tools # only install cargo-fuzz (pinned)
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "fuzz/smoke.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install)" >&2
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
[ "${1:-}" = --install-tools ] && exit 0

seconds="${FUZZ_SECONDS:-30}"
targets=(acl_parser args_parser helper_conf service_wire)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz build -s address >build.log 2>&1; then
    tail -n 30 build.log >&2
    echo "fuzz/smoke.sh: the AddressSanitizer build failed (see above; scripts/install-test-deps checks what it needs)" >&2
    exit 1
fi
rm -f build.log

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "fuzz/smoke.sh: $target for ${seconds}s" >&2
    status=0
    cargo fuzz run -s address "$target" "corpus/$target" "seeds/$target" -- \
        -dict="$target.dict" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -detect_leaks=1 -print_final_stats=1 >"run-$target.log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 60 "run-$target.log" >&2
        echo "fuzz/smoke.sh: $target FAILED (status $status); reproducer in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "run-$target.log" >&2 || true
    rm -f "run-$target.log"
done
echo "fuzz/smoke.sh: no crash, no leak" >&2
