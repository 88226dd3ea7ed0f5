#!/usr/bin/env bash
# Virtual sockets: bulk TCP and connection rate through a published port (-p)
# into the echo guest, and guest-to-guest throughput over a virtual network,
# each against the same program built natively on the host's loopback.
source "$(dirname "$0")/common.sh"

MIB="${MIB:-512}"
CONNS="${CONNS:-2000}"
RUNS="${RUNS:-3}"
cargo build --release --quiet --locked --manifest-path "$ROOT/bench/netbench/Cargo.toml" \
    --target-dir "$WORK/netbench"
NB="$WORK/netbench/release/netbench"
LOGS="$WORK/net-logs"; mkdir -p "$LOGS"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME CMD...: runs CMD in the background, logging to $LOGS/NAME.
start() {
    local name=$1; shift
    "$@" >"$LOGS/$name" 2>&1 &
    pids+=($!)
}
# port_of NAME PATTERN: waits for a line matching PATTERN and prints its port.
port_of() {
    for _ in $(seq 300); do
        if line=$(grep -m1 -E -e "$2" "$LOGS/$1"); then
            echo "$line" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1 | cut -d: -f2
            return
        fi
        sleep 0.05
    done
    echo "no '$2' in $LOGS/$1" >&2; cat "$LOGS/$1" >&2; exit 1
}
mean() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print("%.4f" % (sum(v)/len(v)))' "$@"; }
repeat() { local out=(); for _ in $(seq "$RUNS"); do out+=("$("$@")"); done; mean "${out[@]}"; }

"$WRUN" run "$P2/echo_server.wasm" --timeout 1s >/dev/null 2>&1 || true   # warm the cache
"$WRUN" run "$P2/tcp_client.wasm" >/dev/null 2>&1 || true

start native-echo "$NATIVE/echo_server" 127.0.0.1:0
native_port=$(port_of native-echo "listening on")
start wrun-echo "$WRUN" run -p 127.0.0.1::8080 "$P2/echo_server.wasm" 0.0.0.0:8080
wrun_port=$(port_of wrun-echo "-> 8080/tcp")

native_bulk=$(repeat "$NB" bulk "127.0.0.1:$native_port" "$MIB")
wrun_bulk=$(repeat "$NB" bulk "127.0.0.1:$wrun_port" "$MIB")
native_rate=$(repeat "$NB" connrate "127.0.0.1:$native_port" "$CONNS")
wrun_rate=$(repeat "$NB" connrate "127.0.0.1:$wrun_port" "$CONNS")

echo "bulk TCP echo, $MIB MiB each way on one connection (mean of $RUNS):"
printf '  %-40s %8s s  %8s MiB/s\n' "native echo server" "$native_bulk" "$(python3 -c "print('%.0f' % ($MIB/$native_bulk))")"
printf '  %-40s %8s s  %8s MiB/s\n' "echo guest through wrun -p" "$wrun_bulk" "$(python3 -c "print('%.0f' % ($MIB/$wrun_bulk))")"
echo "  ratio wrun / native throughput = $(ratio "$native_bulk" "$wrun_bulk")x (goal >= 0.8x)"
echo "connections per second, $CONNS sequential connections with a 16-byte echo (mean of $RUNS):"
printf '  %-40s %8s conn/s\n' "native echo server" "$native_rate"
printf '  %-40s %8s conn/s\n' "echo guest through wrun -p" "$wrun_rate"
echo "  ratio wrun / native = $(ratio "$wrun_rate" "$native_rate")x"

# Guest to guest over a virtual network vs the same programs on loopback.
"$WRUN" network rm benchnet >/dev/null 2>&1 || true
"$WRUN" network create benchnet >/dev/null
start native-sink "$NATIVE/echo_server" 127.0.0.1:0 --sink
sink_port=$(port_of native-sink "listening on")
start wrun-sink "$WRUN" run --network benchnet --name sink "$P2/echo_server.wasm" 0.0.0.0:9000 --sink
for _ in $(seq 300); do grep -q "listening on" "$LOGS/wrun-sink" && break; sleep 0.05; done
json="$WORK/net-g2g.json"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$json" \
    "$NATIVE/tcp_client 127.0.0.1:$sink_port --send-mib $MIB" \
    "$WRUN run --network benchnet $P2/tcp_client.wasm sink:9000 --send-mib $MIB" >/dev/null
native_g2g=$(mean_ms "$json" 0); wrun_g2g=$(mean_ms "$json" 1)
echo "one-way transfer of $MIB MiB between two programs (mean of $RUNS):"
printf '  %-40s %8s ms  %8s MiB/s\n' "native, TCP over loopback" "$native_g2g" "$(python3 -c "print('%.0f' % ($MIB*1000/$native_g2g))")"
printf '  %-40s %8s ms  %8s MiB/s\n' "guest to guest, wrun virtual network" "$wrun_g2g" "$(python3 -c "print('%.0f' % ($MIB*1000/$wrun_g2g))")"
echo "  ratio wrun / native throughput = $(ratio "$native_g2g" "$wrun_g2g")x (goal >= 1.0x)"
cleanup
"$WRUN" network rm benchnet >/dev/null 2>&1 || true
