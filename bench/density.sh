#!/usr/bin/env bash
# Density (issue 11): N idle containers listening on a TCP port in one wrun
# daemon, against Podman (4.3, rootful, runc) with 100 idle busybox
# listeners, both started through the Docker Engine API by the same client
# in the same run.
#
# wrun: for each N (NS, default "1000 10000") a fresh `wrun daemon` (same
# temporary WRUN_HOME, so the compiled echo server stays cached), an `echo`
# image of the echo server guest (wasm-apps/src/bin/echo_server.rs, built
# for wasm32-wasip2) made with `wrun build`, one warm-up container (started,
# seen listening, removed) so the module is loaded before the baseline.
# Then an embedded Python client (stdlib only; PAR keep-alive connections on
# the Unix socket, default 4) does POST /containers/create and POST
# .../start for N containers running `echo_server 0.0.0.0:8080`, each in its
# own virtual network (NetworkMode none: its own loopback and port space, no
# host socket; a container listening there holds no host fd). Measured:
# wall time from the first create sent to the last start answered, the time
# until every container's log says `listening on`, the daemon's VmRSS (and
# RssAnon, fds, mappings, threads) before and after, so per container =
# growth / N. Then GET /containers/json must list N running, a sample's logs
# are read through the API, and all are removed (DELETE ?force=1, timed).
#
# Podman: 100 containers of busybox `httpd -f -p 8080` (NetworkMode none:
# its own network namespace with a loopback, as wrun's) through Podman's API
# service, same client, same PAR. Per container: VmRSS of conmon plus the
# container's process (PIDs from libpod's inspect), summed over the 100,
# over 100; the service's own growth is shown apart (it counts once).
#
# The daemon raises RLIMIT_NOFILE to the hard limit (20000 here); the
# kernel's vm.max_map_count and the disk are printed beside the figures.
# If a phase fails (an API error, a timeout), the script says where and
# why, keeps what it measured, and goes on.
#
# Knobs (environment): NS (default "1000 10000"), PAR (parallel client
# connections, default 4), PODMAN_N (default 100), NO_PODMAN=1 (wrun only),
# SAMPLE (containers whose logs are read through the API, default 50).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${BENCH_WORK:-$ROOT/target/bench}"
mkdir -p "$WORK"
unset RUST_BACKTRACE RUST_LIB_BACKTRACE WASMTIME_BACKTRACE_DETAILS WRUN_LOG

NS="${NS:-1000 10000}"
PAR="${PAR:-4}"
PODMAN_N="${PODMAN_N:-100}"
NO_PODMAN="${NO_PODMAN:-}"
SAMPLE="${SAMPLE:-50}"
LABEL=wrun-bench-density=1
PORT=8080

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load average at start: $(loadavg) ($(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo))"

# ---- builds: only what is missing or older than its sources ---------------

WRUN="$ROOT/target/release/wrun"
stale() {   # stale TARGET SOURCES...: true if TARGET is missing or older
    local target=$1; shift
    [ ! -e "$target" ] || [ -n "$(find "$@" -newer "$target" -type f -print -quit 2>/dev/null)" ]
}
if stale "$WRUN" "$ROOT/src" "$ROOT/runtime" "$ROOT/host-api" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock"; then
    echo "building release wrun (target/release/wrun is missing or older than the sources)" >&2
    cargo build --release --quiet --locked --manifest-path "$ROOT/Cargo.toml" --bin wrun
fi
# The echo server as the tests or the other benchmarks built it, else built here.
ECHO_WASM=
for candidate in "$WORK/guests/wasm32-wasip2/release/echo_server.wasm" \
    "$ROOT/target/wasm-apps/wasm32-wasip2/release/echo_server.wasm"; do
    if ! stale "$candidate" "$ROOT/wasm-apps/src/bin/echo_server.rs"; then ECHO_WASM=$candidate; break; fi
done
if [ -z "$ECHO_WASM" ]; then
    echo "building the echo server guest (wasm32-wasip2)" >&2
    rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
    cargo build --release --quiet --locked --manifest-path "$ROOT/wasm-apps/Cargo.toml" \
        --target wasm32-wasip2 --bin echo_server --target-dir "$WORK/guests"
    ECHO_WASM="$WORK/guests/wasm32-wasip2/release/echo_server.wasm"
fi
echo "machine: $(nproc) cores, $(uname -r), $("$WRUN" --version); guest ${ECHO_WASM#"$ROOT"/}"
echo "limits: nofile hard $(ulimit -Hn), vm.max_map_count $(cat /proc/sys/vm/max_map_count), disk free $(df -h --output=avail "$WORK" | tail -1 | tr -d ' ')"

# Everything this script makes lives here, and goes on exit.
TMP="$(mktemp -d "$WORK/density.XXXXXX")"
export DOCKER_CONFIG="$TMP/docker-config"
mkdir -p "$DOCKER_CONFIG"
unset DOCKER_CONTEXT DOCKER_API_VERSION DOCKER_TLS_VERIFY DOCKER_CERT_PATH
# A docker invocation that forgets to name its daemon fails here instead of
# reaching the machine's engine.
export DOCKER_HOST="unix://$TMP/no-such-daemon.sock"

WRUN_PID=
PODMAN_PID=
PODMAN_USED=
stop_wrun() {
    if [ -n "$WRUN_PID" ]; then
        kill -TERM "$WRUN_PID" 2>/dev/null || true
        # Stopping 10,000 guests takes a while; then it is killed.
        for _ in $(seq 600); do kill -0 "$WRUN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$WRUN_PID" 2>/dev/null || true
        wait "$WRUN_PID" 2>/dev/null || true
        WRUN_PID=
    fi
}
cleanup() {
    stop_wrun
    if [ -n "$PODMAN_USED" ]; then
        # Containers an interrupted run left behind (the image stays).
        local left
        left=$(podman ps -aq --filter "label=$LABEL" 2>/dev/null) || true
        if [ -n "$left" ]; then
            # shellcheck disable=SC2086
            podman rm -f -t 0 $left >/dev/null 2>&1 || true
        fi
    fi
    if [ -n "$PODMAN_PID" ]; then
        kill -TERM "$PODMAN_PID" 2>/dev/null || true
        wait "$PODMAN_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# quiet LOG CMD...: runs CMD with its output in LOG; shows LOG if CMD fails.
quiet() {
    local log=$1; shift
    if ! "$@" >"$log" 2>&1; then
        echo "failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
map_count() { wc -l <"/proc/$1/maps"; }
thread_count() { awk '/^Threads:/ { print $2 }' "/proc/$1/status"; }
pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }
# snapshot PID: "rss anon shmem+file pss fds maps threads" (KiB and counts).
# VmRSS counts a shared page once per mapping of it (the guests' copy-on-
# write memory images are mapped once per instance); PSS counts it once.
snapshot() {
    echo "$(status_kib "$1" VmRSS) $(status_kib "$1" RssAnon) $(($(status_kib "$1" RssFile) + $(status_kib "$1" RssShmem)))" \
        "$(pss_kib "$1") $(fd_count "$1") $(map_count "$1") $(thread_count "$1")"
}

wait_for_socket() {   # wait_for_socket NAME PID SOCKET LOG
    local name=$1 pid=$2 socket=$3 log=$4
    for _ in $(seq 300); do
        if [ -S "$socket" ] && python3 "$CLIENT" "$socket" ping >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during start-up:" >&2; cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name did not answer on $socket within 30 s:" >&2; cat "$log" >&2
    return 1
}

# ---- the API client -----------------------------------------------------------

CLIENT="$TMP/density.py"
cat >"$CLIENT" <<'EOF'
"""Docker Engine API client for the density benchmark (stdlib only).

density.py SOCKET ping
density.py SOCKET start N PAR BODY IDS_OUT     create + start N containers
density.py SOCKET running LABEL                count of running with LABEL
density.py SOCKET logs IDS SAMPLE TEXT         sample's logs contain TEXT?
density.py SOCKET pids IDS                     libpod: "pid conmon_pid" lines
density.py SOCKET remove IDS PAR               DELETE ?force=1 each

`start` prints one JSON object: seconds from the first create sent to the
last start answered, medians and p99s of each call, and failures (the
first error's text); ids of started containers go to IDS_OUT.
"""
import http.client
import json
import random
import socket
import sys
import threading
import time
import urllib.parse


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=300)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class Client:
    def __init__(self, path):
        self.conn = UnixConnection(path)

    def call(self, method, url, data=None):
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, url, body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def in_parallel(par, items, work):
    """work(client, item) for every item, over par connections."""
    path = sys.argv[1]
    lock = threading.Lock()
    queue = list(items)
    queue.reverse()

    def worker():
        client = Client(path)
        while True:
            with lock:
                if not queue:
                    return
                item = queue.pop()
            work(client, item)

    threads = [threading.Thread(target=worker) for _ in range(par)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def start(n, par, body, ids_out):
    body = body.encode()
    lock = threading.Lock()
    ids, creates, starts, failures = [], [], [], []

    def work(client, i):
        try:
            t0 = time.perf_counter()
            status, answer = client.call("POST", "/v1.41/containers/create", body)
            t1 = time.perf_counter()
            if status != 201:
                raise RuntimeError(f"create #{i}: {status} {answer[:300].decode(errors='replace')}")
            cid = json.loads(answer)["Id"]
            status, answer = client.call("POST", f"/v1.41/containers/{cid}/start", b"")
            t2 = time.perf_counter()
            if status not in (204, 304):
                with lock:
                    ids.append(cid)  # created: to be removed
                raise RuntimeError(f"start #{i} {cid[:12]}: {status} {answer[:300].decode(errors='replace')}")
            with lock:
                ids.append(cid)
                creates.append(t1 - t0)
                starts.append(t2 - t1)
        except Exception as e:  # recorded, the others go on
            with lock:
                failures.append(f"{type(e).__name__}: {e}")
                client.conn.close()

    t_first = time.perf_counter()
    in_parallel(par, range(n), work)
    wall = time.perf_counter() - t_first
    with open(ids_out, "w") as f:
        f.write("\n".join(ids) + ("\n" if ids else ""))
    print(json.dumps({
        "wall": wall, "started": len(starts), "created": len(ids),
        "create_median": quantile(creates, 0.5), "create_p99": quantile(creates, 0.99),
        "start_median": quantile(starts, 0.5), "start_p99": quantile(starts, 0.99),
        "failures": len(failures), "first_failure": failures[0] if failures else "",
    }))


def running(label):
    filters = urllib.parse.quote(json.dumps({"label": [label], "status": ["running"]}))
    status, answer = Client(sys.argv[1]).call("GET", f"/v1.41/containers/json?filters={filters}")
    if status != 200:
        sys.exit(f"GET /containers/json: {status} {answer[:300]!r}")
    print(len(json.loads(answer)))


def read_ids(path):
    return [line.strip() for line in open(path) if line.strip()]


def logs(ids_file, sample, text):
    ids = read_ids(ids_file)
    client = Client(sys.argv[1])
    picked = random.Random(11).sample(ids, min(sample, len(ids)))
    good = 0
    for cid in picked:
        status, answer = client.call("GET", f"/v1.41/containers/{cid}/logs?stdout=1&stderr=1")
        if status == 200 and text.encode() in answer:
            good += 1
    print(f"{good} {len(picked)}")


def pids(ids_file):
    client = Client(sys.argv[1])
    for cid in read_ids(ids_file):
        status, answer = client.call("GET", f"/v4.0.0/libpod/containers/{cid}/json")
        if status != 200:
            sys.exit(f"libpod inspect {cid[:12]}: {status} {answer[:300]!r}")
        state = json.loads(answer)["State"]
        print(state["Pid"], state["ConmonPid"])


def remove(ids_file, par):
    failures = []

    def work(client, cid):
        status, answer = client.call("DELETE", f"/v1.41/containers/{cid}?force=1")
        if status not in (204, 404):
            failures.append(f"{cid[:12]}: {status} {answer[:200]!r}")

    ids = read_ids(ids_file)
    t0 = time.perf_counter()
    in_parallel(par, ids, work)
    print(json.dumps({"wall": time.perf_counter() - t0, "removed": len(ids) - len(failures),
                      "failures": len(failures), "first_failure": failures[0] if failures else ""}))


def main():
    command = sys.argv[2]
    if command == "ping":
        status, _ = Client(sys.argv[1]).call("GET", "/_ping")
        sys.exit(0 if status == 200 else 1)
    elif command == "start":
        start(int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
    elif command == "running":
        running(sys.argv[3])
    elif command == "logs":
        logs(sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif command == "pids":
        pids(sys.argv[3])
    elif command == "remove":
        remove(sys.argv[3], int(sys.argv[4]))


main()
EOF

# field JSON KEY: one field of a JSON object.
field() { python3 -c 'import json, sys; v = json.loads(sys.argv[1])[sys.argv[2]]; print(("%.6f" % v) if isinstance(v, float) else v)' "$1" "$2"; }
calc() { python3 -c "import sys; print(('%.${2:-2}f') % ($1))"; }
first_failure() { local f; f=$(field "$1" first_failure); [ -z "$f" ] || echo "; the first: $f"; }
goal() { python3 -c 'import sys; print("met" if float(sys.argv[1]) <= float(sys.argv[2]) else "missed")' "$1" "$2"; }

# ---- wait for bench/cpu.sh: neither benchmark should disturb the other ------

for i in $(seq 30); do
    pgrep -f bench/cpu.sh >/dev/null || break
    [ "$i" = 1 ] && echo "waiting for bench/cpu.sh to finish (checked every 30 s, 15 minutes at most)" >&2
    sleep 30
done
if pgrep -f bench/cpu.sh >/dev/null; then
    echo "bench/cpu.sh still running after 15 minutes: measuring anyway"
fi

# ---- the wrun side ----------------------------------------------------------------

export WRUN_HOME="$TMP/wrun-home"
WRUN_XDG="$TMP/wrun-xdg"
mkdir -m 0700 -p "$WRUN_XDG"
WRUN_SOCK="$WRUN_XDG/wrun/wrun.sock"
quiet "$TMP/build.log" "$WRUN" build -t echo "$ECHO_WASM"
WRUN_BODY="{\"Image\":\"echo\",\"Cmd\":[\"0.0.0.0:$PORT\"],\"Labels\":{\"${LABEL%=*}\":\"1\"},\"HostConfig\":{\"NetworkMode\":\"none\"}}"

start_wrun() {
    XDG_RUNTIME_DIR="$WRUN_XDG" "$WRUN" daemon >"$TMP/wrun-daemon-$1.log" 2>&1 &
    WRUN_PID=$!
    wait_for_socket "wrun daemon" "$WRUN_PID" "$WRUN_SOCK" "$TMP/wrun-daemon-$1.log"
}

# listening_count: containers whose log (on disk) says they listen.
listening_count() {
    find "$WRUN_HOME/containers" -mindepth 2 -maxdepth 2 -name container.log -print0 2>/dev/null |
        xargs -0 -r grep -l -F "listening on 0.0.0.0:$PORT" 2>/dev/null | wc -l
}

# wait_listening WANT SECONDS: until WANT logs say `listening on`; prints
# the seconds it took after the call, or why it gave up (SECONDS passed, or
# no new listener for 10 s).
wait_listening() {
    local want=$1 limit=$2 t0 now count last=-1 since
    t0=$(date +%s.%N); since=$t0
    while :; do
        count=$(listening_count)
        [ "$count" -ge "$want" ] && break
        now=$(date +%s.%N)
        if [ "$count" != "$last" ]; then last=$count; since=$now; fi
        if [ "$(calc "$now - $t0 > $limit" 0)" = 1 ]; then echo "never (timeout after $limit s, at $count)"; return; fi
        if [ "$(calc "$now - $since > 10" 0)" = 1 ]; then echo "never (stalled at $count for 10 s)"; return; fi
        sleep 0.2
    done
    echo "$(calc "$(date +%s.%N) - $t0" 3) s"
}

SUMMARY=()
declare -A RES
for n in $NS; do
    echo "== wrun: $n containers, load average $(loadavg)" >&2
    start_wrun "$n" || { SUMMARY+=("wrun N=$n: the daemon did not start"); continue; }
    # Warm-up: the echo server compiled (or loaded from the cache), the
    # guest threads and allocator arenas grown; then removed.
    python3 "$CLIENT" "$WRUN_SOCK" start 1 1 "$WRUN_BODY" "$TMP/warm.ids" >/dev/null
    wait_listening 1 30 >/dev/null
    python3 "$CLIENT" "$WRUN_SOCK" remove "$TMP/warm.ids" 1 >/dev/null
    sleep 1
    read -r rss0 anon0 shared0 pss0 fds0 maps0 thr0 <<<"$(snapshot "$WRUN_PID")"
    load_before=$(loadavg)
    avail0=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
    # The daemon's size every second, to say how far it got if it dies.
    (
        while kill -0 "$WRUN_PID" 2>/dev/null; do
            echo "$(status_kib "$WRUN_PID" VmRSS) $(fd_count "$WRUN_PID") $(map_count "$WRUN_PID")" >"$TMP/sample.tmp" 2>/dev/null &&
                mv "$TMP/sample.tmp" "$TMP/sample-$n"
            sleep 1
        done
    ) &
    SAMPLER=$!
    out=$(python3 "$CLIENT" "$WRUN_SOCK" start "$n" "$PAR" "$WRUN_BODY" "$TMP/wrun-$n.ids")
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
    started=$(field "$out" started)
    listen_after=$(wait_listening "$started" 120)
    sleep 2   # let the last guests settle before the figure is taken
    if kill -0 "$WRUN_PID" 2>/dev/null; then
        read -r rss1 anon1 shared1 pss1 fds1 maps1 thr1 <<<"$(snapshot "$WRUN_PID")"
        hwm1=$(status_kib "$WRUN_PID" VmHWM)
        avail1=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
        vsz1=$(status_kib "$WRUN_PID" VmSize)
        running=$(python3 "$CLIENT" "$WRUN_SOCK" running "$LABEL" 2>&1) || running="error: $running"
        read -r logs_good logs_sample <<<"$(python3 "$CLIENT" "$WRUN_SOCK" logs "$TMP/wrun-$n.ids" "$SAMPLE" "listening on 0.0.0.0:$PORT")"
        listening=$(listening_count)
        disk=$(du -sk "$WRUN_HOME/containers" | cut -f1)
        load_after=$(loadavg)
        rm_out=$(python3 "$CLIENT" "$WRUN_SOCK" remove "$TMP/wrun-$n.ids" "$PAR")
        sleep 1
        read -r rss2 anon2 shared2 pss2 fds2 maps2 thr2 <<<"$(snapshot "$WRUN_PID")"
        left=$(python3 "$CLIENT" "$WRUN_SOCK" running "$LABEL")
    else
        rc=0; wait "$WRUN_PID" 2>/dev/null || rc=$?
        WRUN_PID=
        read -r last_rss last_fds last_maps <<<"$(cat "$TMP/sample-$n" 2>/dev/null || echo "? ? ?")"
        dirs=$(find "$WRUN_HOME/containers" -mindepth 1 -maxdepth 1 -type d | wc -l)
        echo "wrun daemon, $n containers of echo_server 0.0.0.0:$PORT (NetworkMode none), $PAR connections:"
        echo "  THE DAEMON DIED (exit status $rc) after $(field "$out" wall) s: $(field "$out" started) starts answered," \
            "$(field "$out" created) creates, $dirs container directories, $(field "$out" failures) failed calls$(first_failure "$out")"
        echo "  its last sample (at most 1 s before): VmRSS $last_rss KiB, fds $last_fds, mappings $last_maps" \
            "(limits: nofile $(ulimit -Hn), vm.max_map_count $(cat /proc/sys/vm/max_map_count))"
        echo "  its log besides the start-up line:"
        grep -v 'listening on unix://' "$TMP/wrun-daemon-$n.log" | cut -c1-400 | sort | uniq -c | sort -rn | head -8 | sed 's/^/      /'
        SUMMARY+=("wrun N=$n: the daemon died after $(field "$out" started) starts: $(grep -v 'listening on unix://' "$TMP/wrun-daemon-$n.log" | grep -v RUST_BACKTRACE | tail -1 | cut -c1-200)")
        rm -rf "$WRUN_HOME/containers"
        continue
    fi
    daemon_log_extra=$(grep -v 'listening on unix://' "$TMP/wrun-daemon-$n.log" | sort | uniq -c | sort -rn | head -5 || true)
    stop_wrun

    wall=$(field "$out" wall)
    per=$(calc "($rss1 - $rss0) / $started" 1)
    RES[$n.per]=$per; RES[$n.wall]=$wall; RES[$n.started]=$started
    echo "wrun daemon, $n containers of echo_server 0.0.0.0:$PORT (NetworkMode none), $PAR connections:"
    echo "  started $started of $n ($(field "$out" failures) failures$(first_failure "$out"))"
    echo "  first create -> last start answered: ${wall} s ($(calc "$wall * 1000 / $started" 3) ms per container);" \
        "every log said \`listening on\`: ${listen_after} later"
    echo "  create median $(calc "$(field "$out" create_median) * 1000" 2) ms (p99 $(calc "$(field "$out" create_p99) * 1000" 2))," \
        "start median $(calc "$(field "$out" start_median) * 1000" 2) ms (p99 $(calc "$(field "$out" start_p99) * 1000" 2))"
    echo "  VmRSS $rss0 -> $rss1 KiB: +$((rss1 - rss0)) KiB = $per KiB per container" \
        "(VmHWM $hwm1; VmSize $(calc "$vsz1 / 1073741824" 1) TiB)"
    echo "    of which RssAnon $anon0 -> $anon1 ($(calc "($anon1 - $anon0) / $started" 1) per container)," \
        "RssFile+RssShmem $shared0 -> $shared1 ($(calc "($shared1 - $shared0) / $started" 1));" \
        "PSS $pss0 -> $pss1 ($(calc "($pss1 - $pss0) / $started" 1) KiB per container)"
    echo "    MemAvailable fell by $(( (avail0 - avail1) / 1024 )) MiB (other processes' activity included)"
    echo "  fds $fds0 -> $fds1 ($(calc "($fds1 - $fds0) / $started" 2) per container), mappings $maps0 -> $maps1" \
        "($(calc "($maps1 - $maps0) / $started" 2) per container), threads $thr0 -> $thr1"
    echo "  running listed: $running; logs saying \`listening on\`: $listening on disk, $logs_good of $logs_sample read through the API;" \
        "containers dir $((disk / 1024)) MiB"
    echo "  load average before / after: $load_before / $load_after"
    echo "  removed $(field "$rm_out" removed) in $(field "$rm_out" wall) s ($(field "$rm_out" failures) failures);" \
        "then VmRSS $rss2 KiB (RssAnon $anon2, PSS $pss2), fds $fds2, mappings $maps2, threads $thr2; $left left running"
    if [ -n "$daemon_log_extra" ]; then
        echo "  daemon log, most frequent lines besides start-up:"; echo "$daemon_log_extra" | sed 's/^/      /'
    fi
    SUMMARY+=("wrun N=$n: $started started in ${wall} s, $per KiB RSS per container")
done

# ---- the Podman side ------------------------------------------------------------

PODMAN_FAIL=
PODMAN_SOCK="$TMP/podman.sock"
PODMAN_IMAGE=local/busybox
DROPIN=/etc/containers/containers.conf.d/50-sandbox.conf
podman_setup() {
    local missing=() pkg
    for pkg in podman runc busybox-static; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
            { PODMAN_FAIL="apt-get install ${missing[*]} failed"; return 1; }
    fi
    echo "podman: $(podman --version 2>&1), runc $(runc --version 2>&1 | head -1 | awk '{print $3}'), conmon $(conmon --version 2>&1 | head -1 | awk '{print $3}')"
    if [ ! -e "$DROPIN" ]; then
        # From shared/notes/container-peers.md: the sandbox's hard nofile
        # limit is 20000 and nproc is capped at 32768; crun 1.8 refuses
        # hybrid cgroups, runc works.
        mkdir -p "$(dirname "$DROPIN")"
        printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
            >"$DROPIN" || { PODMAN_FAIL="could not write $DROPIN"; return 1; }
        echo "podman drop-in $DROPIN was absent: wrote it (ulimits nofile=20000, nproc=32768; runtime runc)"
    fi
    PODMAN_USED=1
    if ! podman image exists "$PODMAN_IMAGE" 2>/dev/null; then
        local rootfs="$TMP/busybox-rootfs" applet
        mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/www"
        cp /bin/busybox "$rootfs/bin/busybox"
        for applet in $("$rootfs/bin/busybox" --list); do
            [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
        if ! tar -C "$rootfs" -c . | podman import - "$PODMAN_IMAGE" >"$TMP/podman-import.log" 2>&1; then
            PODMAN_FAIL="podman import of a busybox rootfs failed: $(tail -3 "$TMP/podman-import.log")"
            return 1
        fi
        echo "podman image $PODMAN_IMAGE imported from /bin/busybox (left in podman's store)"
    fi
    podman system service --time=0 "unix://$PODMAN_SOCK" >"$TMP/podman-service.log" 2>&1 &
    PODMAN_PID=$!
    wait_for_socket "podman system service" "$PODMAN_PID" "$PODMAN_SOCK" "$TMP/podman-service.log" ||
        { PODMAN_FAIL="podman system service did not answer: $(tail -3 "$TMP/podman-service.log")"; return 1; }
}

PODMAN_BODY="{\"Image\":\"$PODMAN_IMAGE\",\"Cmd\":[\"httpd\",\"-f\",\"-p\",\"$PORT\",\"-h\",\"/tmp\"],\"Labels\":{\"${LABEL%=*}\":\"1\"},\"HostConfig\":{\"NetworkMode\":\"none\"}}"
if [ -n "$NO_PODMAN" ]; then
    PODMAN_FAIL="not measured (NO_PODMAN set)"
elif podman_setup; then
    echo "== podman: $PODMAN_N containers, load average $(loadavg)" >&2
    # Warm-up, as for wrun: one container started and removed.
    python3 "$CLIENT" "$PODMAN_SOCK" start 1 1 "$PODMAN_BODY" "$TMP/pwarm.ids" >/dev/null
    python3 "$CLIENT" "$PODMAN_SOCK" remove "$TMP/pwarm.ids" 1 >/dev/null
    svc0=$(status_kib "$PODMAN_PID" VmRSS)
    avail0=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
    p_load_before=$(loadavg)
    pout=$(python3 "$CLIENT" "$PODMAN_SOCK" start "$PODMAN_N" "$PAR" "$PODMAN_BODY" "$TMP/podman.ids")
    p_started=$(field "$pout" started)
    sleep 2
    svc1=$(status_kib "$PODMAN_PID" VmRSS)
    p_running=$(python3 "$CLIENT" "$PODMAN_SOCK" running "$LABEL" 2>&1) || p_running="error: $p_running"
    if python3 "$CLIENT" "$PODMAN_SOCK" pids "$TMP/podman.ids" >"$TMP/podman.pids" 2>"$TMP/podman-pids.err"; then
        # Sum of VmRSS (and PSS) of each container's process and its conmon.
        read -r p_rss p_pss p_procs p_conmon p_payload <<<"$(
            while read -r pid conmon; do
                for p in $pid $conmon; do
                    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
                    s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
                    kind=payload; [ "$p" = "$conmon" ] && kind=conmon
                    echo "$kind ${r:-0} ${s:-0}"
                done
            done <"$TMP/podman.pids" |
                awk '{rss += $2; pss += $3; n++; by[$1] += $2} END {print rss, pss, n, by["conmon"], by["payload"]}'
        )"
        listening=$(while read -r pid _; do
            nsenter -t "$pid" -n cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p="$(printf ':%04X' "$PORT")" '$2 ~ p"$" && $4 == "0A"' | head -1
        done <"$TMP/podman.pids" | wc -l)
    else
        PODMAN_FAIL="libpod inspect failed: $(head -3 "$TMP/podman-pids.err")"
    fi
    avail1=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
    p_load_after=$(loadavg)
    prm_out=$(python3 "$CLIENT" "$PODMAN_SOCK" remove "$TMP/podman.ids" "$PAR")
    p_wall=$(field "$pout" wall)
    echo "podman service, $PODMAN_N containers of busybox httpd -f -p $PORT (NetworkMode none), $PAR connections:"
    echo "  started $p_started of $PODMAN_N ($(field "$pout" failures) failures$(first_failure "$pout"))"
    echo "  first create -> last start answered: ${p_wall} s ($(calc "$p_wall * 1000 / $p_started" 1) ms per container)"
    echo "  create median $(calc "$(field "$pout" create_median) * 1000" 1) ms, start median $(calc "$(field "$pout" start_median) * 1000" 1) ms"
    if [ -z "$PODMAN_FAIL" ]; then
        p_per=$(calc "$p_rss / $p_started" 1)
        echo "  VmRSS of conmon + container process, summed over $p_procs processes: $p_rss KiB = $p_per KiB per container" \
            "(conmon $(calc "$p_conmon / $p_started" 0), httpd $(calc "$p_payload / $p_started" 0)); PSS $(calc "$p_pss / $p_started" 0) KiB per container"
        echo "  podman service VmRSS $svc0 -> $svc1 KiB (+$((svc1 - svc0)), counted once, not per container);" \
            "MemAvailable fell by $(( (avail0 - avail1) / 1024 )) MiB (kernel, cgroups, mounts included)"
        echo "  running listed: $p_running; containers with a TCP listener on :$PORT in their netns: $listening"
    fi
    echo "  load average before / after: $p_load_before / $p_load_after"
    echo "  removed $(field "$prm_out" removed) in $(field "$prm_out" wall) s ($(field "$prm_out" failures) failures)"
else
    echo "podman could not be used, wrun alone: $PODMAN_FAIL" >&2
fi

# ---- figures against the goals --------------------------------------------------

echo "against the goals (issue 11: 10,000 idle listening containers in <= 4 GiB of daemon RSS, <= 400 KiB each, <= 0.12x Podman, started in <= 10 s):"
for n in $NS; do
    [ -n "${RES[$n.per]:-}" ] || { echo "  N=$n: not measured"; continue; }
    per=${RES[$n.per]} wall=${RES[$n.wall]} started=${RES[$n.started]}
    line="  N=$n: $per KiB per container (goal <= 400: $(goal "$per" 400), $(calc "$per / 400") of it)"
    line+="; total $(calc "$per * $started / 1048576" 2) GiB for $started (scaled to 10,000: $(calc "$per * 10000 / 1048576" 2) GiB, goal <= 4: $(goal "$(calc "$per * 10000 / 1048576" 3)" 4))"
    line+="; started in ${wall} s (scaled to 10,000: $(calc "$wall * 10000 / $started" 1) s, goal <= 10: $(goal "$(calc "$wall * 10000 / $started" 3)" 10))"
    echo "$line"
    if [ -z "$PODMAN_FAIL" ]; then
        r=$(calc "$per / $p_per" 3)
        t=$(calc "($wall / $started) / ($p_wall / $p_started)" 3)
        echo "    vs Podman: RSS per container ${r}x (goal <= 0.12x: $(goal "$r" 0.12)); start time per container ${t}x"
        SUMMARY+=("N=$n vs Podman: RSS ${r}x, start time per container ${t}x")
    fi
done
if [ -n "$PODMAN_FAIL" ]; then
    echo "podman: $PODMAN_FAIL"
    SUMMARY+=("podman not measured: $PODMAN_FAIL")
fi
echo "load average at end: $(loadavg)"
echo "summary:"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
