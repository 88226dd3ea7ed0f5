#!/usr/bin/env bash
# `wrun serve` (issue 4): one hello wasi:http component served with a fresh
# instance per request and with instance reuse, against `wasmtime serve` with
# the same component and the same reuse policy, and against a native hyper
# hello (bench/netbench hello-server) on the same loopback. All servers run
# side by side and are loaded in interleaved rounds, so slow drift of the
# machine hits them alike. For each: req/s, p50/p99 latency, server CPU per
# request and server memory, then ratios against the baselines of this run.
#
# Knobs (environment): DURATION (wrk and h2load run length, default 10s),
# RUNS (rounds, default 3), CONNS (connections, default 64), WRK_THREADS
# (default 2), WARMUP (untimed wrk run per server before the rounds, default
# 2s), H2_STREAMS (h2load streams per connection, default 10), NOISE_PCT (flag
# rounds in which other processes took more CPU than this, default 5),
# WRUN_BEFORE (another wrun binary, e.g. a build of an earlier commit: served
# the same way, fresh instances, in the same interleaved rounds, for an A/B
# that the machine's drift hits alike; default: none).
#
# bench/serve-mix.sh sources this file for its set-up and helpers: everything
# above the "shared with serve-mix.sh" line is shared.
source "$(dirname "$0")/common.sh"

DURATION="${DURATION:-10s}"
RUNS="${RUNS:-3}"
CONNS="${CONNS:-64}"
WRK_THREADS="${WRK_THREADS:-2}"
WARMUP="${WARMUP:-2s}"
# h2load: streams in flight per connection; wrun's per-function limit on
# requests in flight is raised to cover CONNS x H2_STREAMS.
H2_STREAMS="${H2_STREAMS:-10}"
WRUN_MAX_CONCURRENCY=$((CONNS * H2_STREAMS > 1000 ? CONNS * H2_STREAMS : 1000))

need_debian wrk nghttp2-client

cargo build --release --quiet --locked --manifest-path "$ROOT/bench/netbench/Cargo.toml" \
    --target-dir "$WORK/netbench"
HELLO_SERVER="$WORK/netbench/release/hello-server"

# The one guest every server runs. It is a workspace member of wasm-apps built
# on its own (it needs bindings), like p3-hello.
if [ ! -f "$ROOT/wasm-apps/http-hello/Cargo.toml" ]; then
    echo "wasm-apps/http-hello is missing: nothing to serve" >&2
    exit 1
fi
cargo build --release --quiet --locked --manifest-path "$ROOT/wasm-apps/Cargo.toml" \
    -p http-hello --target wasm32-wasip2 --target-dir "$WORK/guests"
HELLO_WASM="$P2/http_hello.wasm"

LOGS="$WORK/serve-logs"; mkdir -p "$LOGS"
CLK_TCK="$(getconf CLK_TCK)"

# The subcommand is younger than this script: without it, the wrun rows are
# skipped (with a note) and the baselines still run.
wrun_help="$("$WRUN" --help 2>&1 || true)"
if grep -qE '^\s+serve\s' <<<"$wrun_help"; then HAVE_WRUN_SERVE=1; else HAVE_WRUN_SERVE=0; fi

# Every server we start is a child of this shell; stop exactly those on exit.
pids=()
ours_alive() {
    local s
    s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    s="${s##*) }"            # fields after "(comm) ": state, ppid, ...
    set -- $s                # split on purpose
    [ "$1" != Z ] && [ "$2" = "$$" ]
}
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # Graceful shutdowns get five seconds, then they are killed.
    for _ in $(seq 50); do
        local left=0
        for p in "${pids[@]}"; do ours_alive "$p" && left=1; done
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do ours_alive "$p" && kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# free_port: a port nothing listens on now (the kernel's pick for port 0).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

declare -A PID PORT LABEL
# start_server NAME LABEL PORT CMD...: starts CMD (which listens on
# 127.0.0.1:PORT) in the background and waits until the port accepts
# connections. Start-up includes compiling the component, so readiness is the
# port, not a line of output (the servers word theirs differently).
start_server() {
    local name=$1 label=$2 port=$3; shift 3
    rm -f "$LOGS/$name".*
    "$@" >"$LOGS/$name.log" 2>&1 &
    PID[$name]=$!; PORT[$name]=$port; LABEL[$name]=$label
    pids+=($!)
    for _ in $(seq 600); do
        if ! ours_alive "${PID[$name]}"; then
            echo "$label exited during start-up:" >&2; cat "$LOGS/$name.log" >&2; exit 1
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$label: nothing listens on 127.0.0.1:$port after 60 s" >&2; cat "$LOGS/$name.log" >&2; exit 1
}

# Accounting over the server's whole process tree, in case a server runs
# workers as processes: CPU (utime + stime, clock ticks) and memory (VmHWM and
# VmRSS, KiB, summed). Threads are included in a process's own figures. The
# CPU mode also prints the machine's user + nice + system + steal ticks and
# its total ticks (/proc/stat), so a run can tell how much CPU other processes
# (or, as steal, the hypervisor's other guests) took.
TREE_PY='
import os, sys
root, what = int(sys.argv[1]), sys.argv[2]
parent = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            s = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        parent[int(d)] = int(s[s.rindex(")") + 2:].split()[1])
tree, todo = [], [root]
while todo:
    p = todo.pop()
    tree.append(p)
    todo += [c for c, pp in parent.items() if pp == p]
if what == "cpu":
    ticks = 0
    for p in tree:
        try:
            f = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        f = f[f.rindex(")") + 2:].split()
        ticks += int(f[11]) + int(f[12])
    cpu = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    print(ticks, cpu[0] + cpu[1] + cpu[2] + cpu[7], sum(cpu[:8]))
else:
    hwm = rss = 0
    for p in tree:
        try:
            lines = open(f"/proc/{p}/status").read().splitlines()
        except OSError:
            continue
        for line in lines:
            k, _, v = line.partition(":")
            if k == "VmHWM": hwm += int(v.split()[0])
            if k == "VmRSS": rss += int(v.split()[0])
    print(f"{hwm / 1024:.1f} {rss / 1024:.1f} {len(tree)}")
'
tree_cpu_ticks() { python3 -c "$TREE_PY" "$1" cpu; }
# tree_mem NAME: "VmHWM-MiB VmRSS-MiB processes" of server NAME.
tree_mem() { python3 -c "$TREE_PY" "${PID[$1]}" mem; }

# warm NAME [WRK ARGS...]: an untimed run, so pools, caches and the page
# cache are in their steady state before the timed rounds.
warm() {
    local name=$1; shift
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" "$@" "http://127.0.0.1:${PORT[$name]}/" >/dev/null
}

# load NAME ROUND [WRK ARGS...]: one timed wrk run against NAME. Appends
# "req/s p50-ms p99-ms CPU-µs/request requests errors others-%" to
# $LOGS/NAME.runs. Errors are socket errors plus non-2xx/3xx answers, which
# would otherwise pass for fast ones; others-% is the share of the machine's
# CPU that neither the server nor wrk used (other processes: the machine is
# shared, and a busy neighbour skews a round).
load() {
    local name=$1 round=$2; shift 2
    local out="$LOGS/$name.$round.wrk" before after
    before="$(tree_cpu_ticks "${PID[$name]}")"
    /usr/bin/time -f '%U %S' -o "$out.time" \
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" \
        "http://127.0.0.1:${PORT[$name]}/" >"$out"
    after="$(tree_cpu_ticks "${PID[$name]}")"
    python3 - "$out" "$before" "$after" "$CLK_TCK" >>"$LOGS/$name.runs" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
wrk_s = sum(float(v) for v in open(sys.argv[1] + ".time").read().split()[-2:])
(before, busy0, total0), (after, busy1, total1) = (map(int, a.split()) for a in sys.argv[2:4])
hz = int(sys.argv[4])
others = 100 * (busy1 - busy0 - (after - before) - wrk_s * hz) / max(total1 - total0, 1)
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
def pct(p):
    v, u = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M).groups()
    return float(v) * unit[u]
requests = int(re.search(r"^\s+(\d+) requests in", text, re.M).group(1))
rps = float(re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M).group(1))
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors += int(m.group(1)) if m else 0
cpu_us = (after - before) * 1e6 / hz / max(requests, 1)
print(f"{rps:.0f} {pct(50):.3f} {pct(99):.3f} {cpu_us:.1f} {requests} {errors} {max(others, 0):.0f}")
EOF
}

# med NAME COLUMN: the median over the rounds of one column of NAME's runs
# (1 req/s, 2 p50, 3 p99, 4 CPU µs/request); min/max and sum likewise.
med() { sort -g -k"$2,$2" "$LOGS/$1.runs" | awk -v c="$2" '{v[NR]=$c} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
minof() { awk -v c="$2" 'NR==1||$c<m{m=$c} END{print m}' "$LOGS/$1.runs"; }
maxof() { awk -v c="$2" 'NR==1||$c>m{m=$c} END{print m}' "$LOGS/$1.runs"; }
errors_of() { awk '{s+=$6} END{print s+0}' "$LOGS/$1.runs"; }
# A round in which other processes took more than this share of the CPU (%)
# is flagged in the table.
NOISE_PCT="${NOISE_PCT:-5}"

# row NAME: one line of the results table.
row() {
    local name=$1 mem
    mem="$(tree_mem "$name")"
    read -r hwm rss procs <<<"$mem"
    printf '  %-44s %7.0f [%6.0f-%6.0f] %7.2f %7.2f %8.1f %8s %8s' "${LABEL[$name]}" \
        "$(med "$name" 1)" "$(minof "$name" 1)" "$(maxof "$name" 1)" \
        "$(med "$name" 2)" "$(med "$name" 3)" "$(med "$name" 4)" "$hwm" "$rss"
    [ "$procs" -gt 1 ] && printf '  (%s processes)' "$procs"
    [ "$(errors_of "$name")" -gt 0 ] && printf '  !! %s errors' "$(errors_of "$name")"
    [ "$(maxof "$name" 7)" -gt "$NOISE_PCT" ] &&
        printf '  !! other processes took up to %s%% of the CPU' "$(maxof "$name" 7)"
    echo
}
table_header() {
    printf '  %-44s %7s %15s %7s %7s %8s %8s %8s\n' "server" "req/s" "[min-max]" \
        "p50 ms" "p99 ms" "CPU µs/r" "HWM MiB" "RSS MiB"
}

# goal_ratio TEXT A B GOAL [NOTE]: prints "TEXT = A/B x (goal >= GOAL: met or
# NOT met)", then NOTE.
goal_ratio() {
    local r verdict="NOT met"
    r="$(ratio "$2" "$3")"
    python3 -c 'import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))' "$r" "$4" && verdict=met
    echo "  $1 = ${r}x (goal >= $4x: $verdict)${5:+; $5}"
}

environment_note() {
    echo "environment: RUST_BACKTRACE, RUST_LIB_BACKTRACE, WASMTIME_BACKTRACE_DETAILS and WRUN_LOG"
    echo "  unset for every server (common.sh); WRUN_HOME=$WRUN_HOME; 127.0.0.1 only."
    echo "  No CPU pinning: wrk ($WRK_THREADS threads) and the server share the machine's $(nproc) cores, so"
    echo "  the load generator takes a large share of the CPU and caps the fastest servers."
    [ -z "${PID[native]:-}" ] ||
        echo "  The native server most of all: ratios against native flatter the others."
    echo "  A row marked '!! other processes' had a round in which processes other than the server"
    echo "  and wrk took more than $NOISE_PCT% of the CPU: rerun on a quiet machine before trusting it."
}

# ---- everything above is shared with serve-mix.sh ----
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

ROUNDS_NOTE="wrk -t$WRK_THREADS -c$CONNS -d$DURATION --latency, $RUNS interleaved rounds after a $WARMUP warm-up"

port=$(free_port)
start_server wasmtime-fresh "wasmtime serve, fresh instance/request" "$port" \
    "$WASMTIME" serve -S cli -O pooling-allocator --addr "127.0.0.1:$port" "$HELLO_WASM"
port=$(free_port)
start_server wasmtime-reuse "wasmtime serve, reuse up to 1000" "$port" \
    "$WASMTIME" serve -S cli -O pooling-allocator --max-instance-reuse-count 1000 \
    --addr "127.0.0.1:$port" "$HELLO_WASM"
port=$(free_port)
start_server native "native hyper hello ($(nproc) threads)" "$port" \
    "$HELLO_SERVER" "127.0.0.1:$port"
servers=(wasmtime-fresh wasmtime-reuse native)
if [ "$HAVE_WRUN_SERVE" = 1 ]; then
    # --max-concurrency: wrun answers 503 above 100 requests in flight per
    # function by default; the peers have no such limit and h2load keeps
    # CONNS x H2_STREAMS streams in flight. wrk's CONNS (64) stays below it.
    port=$(free_port)
    start_server wrun-fresh "wrun serve, fresh instance/request" "$port" \
        "$WRUN" serve "$HELLO_WASM" --listen "127.0.0.1:$port" --max-concurrency "$WRUN_MAX_CONCURRENCY"
    port=$(free_port)
    start_server wrun-reuse "wrun serve, reuse up to 1000" "$port" \
        "$WRUN" serve "$HELLO_WASM" --listen "127.0.0.1:$port" --max-concurrency "$WRUN_MAX_CONCURRENCY" \
        --max-instance-reuse 1000
    servers+=(wrun-fresh wrun-reuse)
    if [ -n "${WRUN_BEFORE:-}" ]; then
        port=$(free_port)
        start_server wrun-before "$(basename "$WRUN_BEFORE") serve, fresh instance/request" "$port" \
            "$WRUN_BEFORE" serve "$HELLO_WASM" --listen "127.0.0.1:$port" \
            --max-concurrency "$WRUN_MAX_CONCURRENCY"
        servers+=(wrun-before)
    fi
fi

for s in "${servers[@]}"; do warm "$s"; done
for round in $(seq "$RUNS"); do
    for s in "${servers[@]}"; do load "$s" "$round"; done
done

echo "hello wasi:http component ($(stat -c %s "$HELLO_WASM") bytes), $ROUNDS_NOTE;"
echo "medians of the rounds (each round: $LOGS/NAME.runs); CPU = server process CPU time / requests;"
echo "HWM/RSS = VmHWM/VmRSS after the rounds:"
table_header
for s in "${servers[@]}"; do row "$s"; done
[ "$HAVE_WRUN_SERVE" = 1 ] || echo "  (wrun serve rows skipped: this wrun has no 'serve' subcommand)"

echo "ratios of req/s (higher is better; CPU per request: lower is better):"
# cpu_note A B: CPU per request of server A relative to server B.
cpu_note() { echo "CPU/request $(ratio "$(med "$1" 4)" "$(med "$2" 4)")x"; }
if [ "$HAVE_WRUN_SERVE" = 1 ]; then
    goal_ratio "wrun fresh / wasmtime serve fresh" "$(med wrun-fresh 1)" "$(med wasmtime-fresh 1)" 6 \
        "$(cpu_note wrun-fresh wasmtime-fresh)"
    goal_ratio "wrun fresh / native" "$(med wrun-fresh 1)" "$(med native 1)" 0.5 \
        "$(cpu_note wrun-fresh native)"
    goal_ratio "wrun reuse / wasmtime serve reuse" "$(med wrun-reuse 1)" "$(med wasmtime-reuse 1)" 1.2 \
        "$(cpu_note wrun-reuse wasmtime-reuse)"
    echo "  wrun reuse / wrun fresh = $(ratio "$(med wrun-reuse 1)" "$(med wrun-fresh 1)")x"
    if [ -n "${WRUN_BEFORE:-}" ]; then
        echo "  wrun fresh / WRUN_BEFORE fresh = $(ratio "$(med wrun-fresh 1)" "$(med wrun-before 1)")x;" \
            "$(cpu_note wrun-fresh wrun-before)"
        echo "  WRUN_BEFORE fresh / wasmtime serve fresh = $(ratio "$(med wrun-before 1)" "$(med wasmtime-fresh 1)")x"
    fi
else
    echo "  wrun ratios skipped (no 'wrun serve')"
fi
echo "  wasmtime serve fresh / native = $(ratio "$(med wasmtime-fresh 1)" "$(med native 1)")x"
echo "  wasmtime serve reuse / fresh = $(ratio "$(med wasmtime-reuse 1)" "$(med wasmtime-fresh 1)")x"

# HTTP/2 with prior knowledge (h2c), for the servers that speak it; h2load
# multiplexes H2_STREAMS streams per connection. A one-request probe decides.
# Only 2xx answers count: h2load's own req/s counts every answer.
echo "h2c (prior knowledge): h2load -t$WRK_THREADS -c$CONNS -m$H2_STREAMS -D $DURATION --warm-up-time 1s, one run, 2xx answers/s:"
declare -A H2
for s in "${servers[@]}"; do
    url="http://127.0.0.1:${PORT[$s]}/"
    probe="$(h2load -n 1 -c 1 "$url" 2>&1 || true)"
    if ! grep -q ' 1 succeeded' <<<"$probe"; then
        printf '  %-44s skipped: does not speak h2c\n' "${LABEL[$s]}"
        continue
    fi
    h2load -t"$WRK_THREADS" -c"$CONNS" -m"$H2_STREAMS" -D "$DURATION" --warm-up-time 1s "$url" \
        >"$LOGS/$s.h2load" 2>&1 || true
    # h2load's req/s is its "done" requests over the timed DURATION.
    read -r ok failed <<<"$(python3 - "$LOGS/$s.h2load" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
rps = re.search(r"^finished in .*, ([\d.]+) req/s", text, re.M)
req = re.search(r"^requests: .* (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
if rps and req:
    done, ok, failed, errored, timeout = map(int, req.groups())
    print(f"{float(rps.group(1)) * ok / max(done, 1):.0f} {failed + errored + timeout}")
EOF
)"
    if [ -z "${ok:-}" ]; then
        printf '  %-44s h2load failed, see %s\n' "${LABEL[$s]}" "$LOGS/$s.h2load"
        continue
    fi
    H2[$s]=$ok
    printf '  %-44s %9s req/s' "${LABEL[$s]}" "$ok"
    [ "$failed" -gt 0 ] && printf '  !! %s requests failed: %s' "$failed" \
        "$(grep -m1 '^status codes:' "$LOGS/$s.h2load")"
    echo
done
for s in wrun-fresh wrun-reuse wrun-before; do
    if [ -n "${H2[$s]:-}" ] && [ -n "${H2[native]:-}" ]; then
        echo "  ratio ${LABEL[$s]} / native over h2c = $(ratio "${H2[$s]}" "${H2[native]}")x"
    fi
done
environment_note
