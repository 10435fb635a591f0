#!/usr/bin/env bash
# Bounded fuzz smoke for CI: builds the cargo-fuzz targets and runs each
# for FUZZ_SECONDS (default 30) seconds. Fails on any crash, leak, timeout
# or build error. Stable toolchain: RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flags cargo-fuzz passes; if the sanitizer build still fails,
# it falls back to `-s none` (coverage-guided, no AddressSanitizer).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
targets=(acl_parser args_parser helper_conf)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

sanitizer=()
if ! cargo fuzz build >build.log 2>&1; then
    echo "fuzz/smoke.sh: sanitizer build failed, retrying with -s none" >&2
    tail -20 build.log >&2
    sanitizer=(-s none)
    cargo fuzz build "${sanitizer[@]}"
fi
rm -f build.log

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "fuzz/smoke.sh: $target for ${seconds}s" >&2
    status=0
    cargo fuzz run "${sanitizer[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -dict="$target.dict" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"run-$target.log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 60 "run-$target.log" >&2
        echo "fuzz/smoke.sh: $target FAILED (status $status); reproducer in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "run-$target.log" >&2 || true
    rm -f "run-$target.log"
done
echo "fuzz/smoke.sh: no crash" >&2
