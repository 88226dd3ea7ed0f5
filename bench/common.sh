# Shared set-up for the benchmarks: sourced, not run.
#
# Builds release wrun and the guest apps, makes sure the peers exist
# (wasmtime CLI 48.0.8, hyperfine, wabt), and controls the environment:
# RUST_BACKTRACE is unset for wrun and peers alike, because this machine sets
# it and it makes wasmtime capture backtraces on some paths.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${BENCH_WORK:-$ROOT/target/bench}"
mkdir -p "$WORK"
unset RUST_BACKTRACE RUST_LIB_BACKTRACE WASMTIME_BACKTRACE_DETAILS WRUN_LOG

need_debian() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        if [ "$(id -u)" = 0 ]; then
            apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            sudo apt-get install -y -qq "${missing[@]}" >/dev/null
        fi
    fi
}

need_debian hyperfine wabt time

if ! command -v wasmtime >/dev/null || ! wasmtime --version | grep -q '^wasmtime 48\.0\.8'; then
    echo "installing wasmtime-cli 48.0.8 (the peer these figures compare against)" >&2
    cargo install wasmtime-cli --version 48.0.8 --locked
fi
WASMTIME="$(command -v wasmtime)"

echo "building release wrun and the guests" >&2
rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin wrun
cargo build --release --quiet --locked --manifest-path "$ROOT/wasm-apps/Cargo.toml" \
    --target wasm32-wasip1 --target wasm32-wasip2 --target-dir "$WORK/guests"
# The same hello, natively, as the floor of any start-up time.
cargo build --release --quiet --locked --manifest-path "$ROOT/wasm-apps/Cargo.toml" \
    --bin hello --bin filetool --bin echo_server --bin tcp_client --target-dir "$WORK/guests"

WRUN="$ROOT/target/release/wrun"
P1="$WORK/guests/wasm32-wasip1/release"
P2="$WORK/guests/wasm32-wasip2/release"
NATIVE="$WORK/guests/release"

# A private wrun home for the benchmarks.
export WRUN_HOME="$WORK/wrun-home"

# mean_ms JSON INDEX: the mean of hyperfine result INDEX, in milliseconds.
mean_ms() {
    python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["mean"]*1000))' "$1" "$2"
}

# ratio A B: A / B with two decimals.
ratio() {
    python3 -c 'import sys; r = float(sys.argv[1]) / float(sys.argv[2]); print(("%.2f" if r >= 0.1 else "%.2g") % r)' "$1" "$2"
}

# peak_rss_kib CMD...: the highest of five runs' maximum resident set size.
peak_rss_kib() {
    local max=0 rss
    for _ in 1 2 3 4 5; do
        rss=$(/usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1)
        [ "$rss" -gt "$max" ] && max=$rss
    done
    echo "$max"
}

echo "machine: $(nproc) cores, $(uname -r), $("$WASMTIME" --version), $("$WRUN" --version)" >&2
