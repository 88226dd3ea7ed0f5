#!/usr/bin/env bash
# `wrun serve` (issue 4), the multi-tenant mix: 20 different components (the
# hello wasi:http component, each copy made distinct by a custom section, so
# 20 digests, 20 compiled modules and 20 sets of pool slots), one tenant each,
# at /f0 .. /f19, with wrk rotating the path on every request.
#
# The peer: twenty `wasmtime serve` processes cannot share a port, so the
# baseline is wrun itself serving the single component at the same 20 routes
# (same config, every function pointing at one file), reported as "the mix
# keeps X% of single-component throughput"; `wasmtime serve` with the single
# component gives the ratio form. Knobs as in serve.sh (DURATION, RUNS, CONNS,
# WRK_THREADS, WARMUP) plus MIX (number of components, default 20).
source "$(dirname "$0")/serve.sh"   # set-up and helpers; returns before serve.sh's own rounds

MIX="${MIX:-20}"
DIR="$WORK/serve-mix"; mkdir -p "$DIR"

# f0.wasm .. f{MIX-1}.wasm: copies of the hello, each with a distinct custom
# section appended (stale ones from a run with another MIX removed first).
rm -f "$DIR"/f*.wasm
for ((i = 0; i < MIX; i++)); do
    python3 "$ROOT/bench/custom-section.py" "$HELLO_WASM" "$DIR/f$i.wasm" wrun-bench-mix \
        --payload "tenant $i"
done
if [ "$(sha256sum "$DIR"/f*.wasm | cut -d' ' -f1 | sort -u | wc -l)" != "$MIX" ]; then
    echo "the $MIX mix components do not have $MIX distinct digests" >&2; exit 1
fi

# serve_config FILE WASM-FOR-FUNCTION-i...: one tenant per function, t$i
# serving f$i at /f$i. The format is the one wrun serve --config reads.
serve_config() {
    local file=$1; shift
    local i=0
    echo "version = 1" >"$file"
    for wasm in "$@"; do
        printf '\n[tenants.t%d]\n[tenants.t%d.functions.f%d]\nwasm = "%s"\nroutes = ["/f%d"]\n' \
            "$i" "$i" "$i" "$wasm" "$i" >>"$file"
        i=$((i + 1))
    done
}
mix_files=(); same_files=()
for i in $(seq 0 $((MIX - 1))); do
    mix_files+=("$DIR/f$i.wasm"); same_files+=("$HELLO_WASM")
done
serve_config "$DIR/mix.toml" "${mix_files[@]}"
serve_config "$DIR/single.toml" "${same_files[@]}"

# Every server gets the same rotating paths, so wrk does the same (Lua) work
# per request whatever it loads; the hello answers any path alike.
cat >"$DIR/rotate.lua" <<EOF
-- One step through /f0 .. /f$((MIX - 1)) per request (each wrk thread counts on its own).
local n, i = $MIX, 0
request = function()
    local path = "/f" .. i
    i = (i + 1) % n
    return wrk.format("GET", path)
end
EOF
ROTATE=(-s "$DIR/rotate.lua")

port=$(free_port)
start_server wasmtime-single "wasmtime serve, the one component" "$port" \
    "$WASMTIME" serve -S cli -O pooling-allocator --addr "127.0.0.1:$port" "$HELLO_WASM"
servers=(wasmtime-single)
if [ "$HAVE_WRUN_SERVE" = 1 ]; then
    port=$(free_port)
    start_server wrun-single "wrun serve, one component at $MIX routes" "$port" \
        "$WRUN" serve --config "$DIR/single.toml" --listen "127.0.0.1:$port"
    port=$(free_port)
    start_server wrun-mix "wrun serve, $MIX components, $MIX tenants" "$port" \
        "$WRUN" serve --config "$DIR/mix.toml" --listen "127.0.0.1:$port"
    servers+=(wrun-single wrun-mix)
fi

for s in "${servers[@]}"; do warm "$s" "${ROTATE[@]}"; done
for round in $(seq "$RUNS"); do
    for s in "${servers[@]}"; do load "$s" "$round" "${ROTATE[@]}"; done
done

echo "multi-tenant mix: $MIX copies of the hello wasi:http component, each with its own custom"
echo "section (distinct digests), one tenant each at /f0../f$((MIX - 1)); fresh instance per request;"
echo "wrk -t$WRK_THREADS -c$CONNS -d$DURATION --latency with a Lua script rotating the path per request,"
echo "$RUNS interleaved rounds after a $WARMUP warm-up; medians (each round: $LOGS/NAME.runs);"
echo "CPU = server CPU time / requests; HWM/RSS = VmHWM/VmRSS after the rounds:"
table_header
for s in "${servers[@]}"; do row "$s"; done
if [ "$HAVE_WRUN_SERVE" = 1 ]; then
    keep="$(python3 -c 'import sys; print("%.0f" % (100 * float(sys.argv[1]) / float(sys.argv[2])))' \
        "$(med wrun-mix 1)" "$(med wrun-single 1)")"
    echo "  the mix keeps ${keep}% of single-component throughput (wrun, same $MIX routes)"
    echo "  CPU per request, mix / single = $(ratio "$(med wrun-mix 4)" "$(med wrun-single 4)")x"
    echo "  peak RSS (VmHWM), mix / single = $(ratio "$(tree_mem wrun-mix | cut -d' ' -f1)" \
        "$(tree_mem wrun-single | cut -d' ' -f1)")x"
    echo "  wrun mix / wasmtime serve single component = $(ratio "$(med wrun-mix 1)" "$(med wasmtime-single 1)")x"
    echo "  wrun single component / wasmtime serve = $(ratio "$(med wrun-single 1)" "$(med wasmtime-single 1)")x"
else
    echo "  (wrun serve rows and the mix figures skipped: this wrun has no 'serve' subcommand)"
fi
environment_note
