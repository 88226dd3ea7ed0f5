#!/usr/bin/env bash
# Container start latency through the Docker Engine API (issue 11): the wrun
# daemon against Podman's API service (4.3, rootful, runc), both driven by
# the same clients on the same machine in the same run.
#
# 1. `docker run --rm --network none IMAGE` through the docker CLI
#    (hyperfine -N, warm-ups): wrun's hello image (the hello component built
#    into an image with `wrun build`) against Podman with busybox `true`.
#    `--network none` is given to both: a wrun container has only its own
#    loopback, and wrun takes `none` as its default. `docker ps -q` on each
#    daemon is timed alongside, as the CLI's own floor.
# 2. The raw API with no CLI process: an embedded Python client (stdlib
#    only) on one keep-alive connection per daemon does, per container,
#    POST /v1.41/containers/create, POST .../start, then
#    POST .../wait?condition=not-running (so the wait is registered after
#    the start, not before it as the CLI does), then DELETE; it times
#    create -> wait answered with time.perf_counter(). GET /_ping through
#    the same client is the floor of one request.
# 3. The wrun daemon's VmRSS when it has started, after the warm-ups and
#    after every measured container (each one removed), to show that
#    nothing is kept per container.
#
# The two daemons never measure at the same time: the rounds alternate
# between them (wrun, then Podman), so that a drifting load (this is a
# 2-core machine shared with builds) touches both alike; both daemons stay
# up, the idle one waiting on its socket. Every docker invocation names its
# daemon in DOCKER_HOST (the machine's own Docker engine is never used),
# with DOCKER_CONFIG an empty directory of this run's.
#
# If Podman cannot be set up, the script says what failed and still
# measures wrun.
#
# Knobs (environment): ROUNDS (default 3), CLI_RUNS (hyperfine runs per
# daemon per round, default 20), RAW_WRUN (raw API containers on wrun in
# all, default 200), RAW_PODMAN (on Podman, default 30), NO_PODMAN=1 (wrun
# only).
source "$(dirname "$0")/common.sh"

ROUNDS="${ROUNDS:-3}"
CLI_RUNS="${CLI_RUNS:-20}"
RAW_WRUN="${RAW_WRUN:-200}"
RAW_PODMAN="${RAW_PODMAN:-30}"
NO_PODMAN="${NO_PODMAN:-}"
LABEL=wrun-bench-daemon=1

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load average at start: $(loadavg) ($(nproc) cores)"

# Everything this script makes lives here, and goes on exit.
TMP="$(mktemp -d "$WORK/daemon.XXXXXX")"
export DOCKER_CONFIG="$TMP/docker-config"
mkdir -p "$DOCKER_CONFIG"
unset DOCKER_CONTEXT DOCKER_API_VERSION DOCKER_TLS_VERIFY DOCKER_CERT_PATH
# A docker invocation that forgets to name its daemon fails here instead of
# reaching the machine's engine.
export DOCKER_HOST="unix://$TMP/no-such-daemon.sock"

WRUN_PID=
PODMAN_PID=
cleanup() {
    if [ -n "$WRUN_PID" ]; then
        kill -TERM "$WRUN_PID" 2>/dev/null || true
        wait "$WRUN_PID" 2>/dev/null || true
    fi
    if [ -n "$PODMAN_PID" ]; then
        kill -TERM "$PODMAN_PID" 2>/dev/null || true
        wait "$PODMAN_PID" 2>/dev/null || true
        # Containers an interrupted run left behind (the image stays).
        local left
        left=$(podman ps -aq --filter "label=$LABEL" 2>/dev/null) || true
        if [ -n "$left" ]; then
            # shellcheck disable=SC2086
            podman rm -f $left >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# quiet LOG CMD...: runs CMD with its output in LOG; shows LOG if CMD fails.
quiet() {
    local log=$1; shift
    if ! "$@" >"$log" 2>&1; then
        echo "failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

# dk SOCKET ARGS...: the docker CLI against the daemon on SOCKET.
dk() {
    local socket=$1; shift
    DOCKER_HOST="unix://$socket" docker "$@"
}

# vmrss PID: the process's resident set, in KiB.
vmrss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
vmhwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# wait_for_socket NAME PID SOCKET LOG: until the docker CLI gets an answer
# from SOCKET (at most 30 s); fails naming NAME if PID exits first.
wait_for_socket() {
    local name=$1 pid=$2 socket=$3 log=$4
    for _ in $(seq 300); do
        if [ -S "$socket" ] && dk "$socket" version >/dev/null 2>&1; then
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

# ---- the raw API client ---------------------------------------------------

RAW="$TMP/rawapi.py"
cat >"$RAW" <<'EOF'
"""create + start + wait + delete, N times, on a Docker Engine API socket.

One keep-alive HTTP/1.1 connection (http.client reconnects by itself if
the server closes it). Appends one JSON line per measured container to OUT:
the seconds each call took and `total`, create sent -> wait answered.
With BODY `ping`, it times GET /_ping instead (the client's own floor).
"""
import http.client
import json
import socket
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def main():
    path, body, n, warmup, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    conn = UnixConnection(path)
    headers = {"Content-Type": "application/json"}

    def call(method, url, data=None, want=None):
        conn.request(method, url, body=data, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if want is not None and response.status != want:
            sys.exit(f"{method} {url}: {response.status} {answer[:500]!r}")
        return answer

    records = []
    if body == "ping":
        # The floor: one request and its answer, through the same client.
        for i in range(warmup + n):
            t0 = time.perf_counter()
            call("GET", "/v1.41/_ping", None, 200)
            if i >= warmup:
                records.append({"ping": time.perf_counter() - t0})
        warmup = n = 0
    for i in range(warmup + n):
        t0 = time.perf_counter()
        cid = json.loads(call("POST", "/v1.41/containers/create", body.encode(), 201))["Id"]
        t1 = time.perf_counter()
        call("POST", f"/v1.41/containers/{cid}/start", None, 204)
        t2 = time.perf_counter()
        waited = json.loads(call("POST", f"/v1.41/containers/{cid}/wait?condition=not-running", None, 200))
        t3 = time.perf_counter()
        if waited.get("StatusCode") != 0 or (waited.get("Error") or {}).get("Message"):
            sys.exit(f"container {cid} ended badly: {waited}")
        call("DELETE", f"/v1.41/containers/{cid}", None, 204)
        t4 = time.perf_counter()
        if i >= warmup:
            records.append({"create": t1 - t0, "start": t2 - t1, "wait": t3 - t2,
                            "total": t3 - t0, "delete": t4 - t3})
    with open(out, "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


main()
EOF

# raw_stat FILE KEY: "median p90" of KEY over FILE's lines, in ms.
raw_stat() {
    python3 -c 'import json, sys
xs = sorted(json.loads(l)[sys.argv[2]] * 1000 for l in open(sys.argv[1]))
p90 = xs[max(0, -(-len(xs) * 9 // 10) - 1)]
n = len(xs)
median = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
print("%.3f %.3f" % (median, p90))' "$1" "$2"
}
raw_count() { wc -l <"$1"; }

# cli_stat JSON...: "median min max runs" in ms over the times of every
# hyperfine JSON given (one per round).
cli_stat() {
    python3 -c 'import json, statistics, sys
xs = sorted(t * 1000 for f in sys.argv[1:] for t in json.load(open(f))["results"][0]["times"])
print("%.2f %.2f %.2f %d" % (statistics.median(xs), xs[0], xs[-1], len(xs)))' "$@"
}

# ---- wrun's daemon --------------------------------------------------------

export WRUN_HOME="$TMP/wrun-home"
WRUN_XDG="$TMP/wrun-xdg"
mkdir -m 0700 -p "$WRUN_XDG"
WRUN_SOCK="$WRUN_XDG/wrun/wrun.sock"
WRUN_IMAGE=hello:1
quiet "$TMP/build.log" "$WRUN" build -t "$WRUN_IMAGE" "$P2/hello.wasm"
XDG_RUNTIME_DIR="$WRUN_XDG" "$WRUN" daemon >"$TMP/wrun-daemon.log" 2>&1 &
WRUN_PID=$!
for _ in $(seq 300); do
    grep -q 'listening on unix://' "$TMP/wrun-daemon.log" && break
    if ! kill -0 "$WRUN_PID" 2>/dev/null; then
        echo "wrun daemon exited during start-up:" >&2; cat "$TMP/wrun-daemon.log" >&2; exit 1
    fi
    sleep 0.1
done
wait_for_socket "wrun daemon" "$WRUN_PID" "$WRUN_SOCK" "$TMP/wrun-daemon.log" || exit 1
RSS_IDLE=$(vmrss "$WRUN_PID")
out=$(dk "$WRUN_SOCK" run --rm --network none "$WRUN_IMAGE")
if [ "$out" != "Hello from a wrun guest!" ]; then
    echo "docker run of $WRUN_IMAGE on wrun printed \`$out\`" >&2; exit 1
fi
# Warm-up: compiled artifact cached, allocator arenas and threads grown.
for _ in $(seq 20); do dk "$WRUN_SOCK" run --rm --network none "$WRUN_IMAGE" >/dev/null; done
python3 "$RAW" "$WRUN_SOCK" "{\"Image\":\"$WRUN_IMAGE\",\"HostConfig\":{\"AutoRemove\":false,\"NetworkMode\":\"none\"}}" \
    0 20 "$TMP/discard.jsonl"
RSS_WARM=$(vmrss "$WRUN_PID")
WRUN_CONTAINERS=0   # measured and hyperfine warm-up containers after RSS_WARM

# ---- Podman's API service ---------------------------------------------------

PODMAN_FAIL=
PODMAN_SOCK="$TMP/podman.sock"
PODMAN_IMAGE=local/busybox
DROPIN=/etc/containers/containers.conf.d/50-sandbox.conf

# podman_setup: packages, the drop-in, the image, the service; sets
# PODMAN_FAIL and returns 1 on the first failure.
podman_setup() {
    need_debian podman runc busybox-static || { PODMAN_FAIL="apt-get install podman runc busybox-static failed"; return 1; }
    echo "podman: $(podman --version 2>&1), runc $(runc --version 2>&1 | head -1 | awk '{print $3}')"
    if [ -e "$DROPIN" ]; then
        echo "podman drop-in $DROPIN already present, left as is:"
        sed 's/^/    /' "$DROPIN"
    else
        # From shared/notes/container-peers.md: the sandbox's hard nofile
        # limit is 20000 and nproc is capped at 32768; crun 1.8 refuses
        # hybrid cgroups, runc works.
        mkdir -p "$(dirname "$DROPIN")"
        cat >"$DROPIN" <<'DROPIN_EOF' || { PODMAN_FAIL="could not write $DROPIN"; return 1; }
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
DROPIN_EOF
        echo "podman drop-in $DROPIN was absent: wrote it (ulimits nofile=20000, nproc=32768; runtime runc)"
    fi
    if podman image exists "$PODMAN_IMAGE" 2>/dev/null; then
        echo "podman image $PODMAN_IMAGE already present, used as is"
    else
        local rootfs="$TMP/busybox-rootfs" applet
        mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
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
    if ! wait_for_socket "podman system service" "$PODMAN_PID" "$PODMAN_SOCK" "$TMP/podman-service.log"; then
        PODMAN_FAIL="podman system service did not answer: $(tail -3 "$TMP/podman-service.log")"
        return 1
    fi
    local log="$TMP/podman-first-run.log"
    if ! dk "$PODMAN_SOCK" run --rm --network none --label "$LABEL" "$PODMAN_IMAGE" true >"$log" 2>&1; then
        PODMAN_FAIL="docker run --rm --network none $PODMAN_IMAGE true through podman's socket failed: $(tail -3 "$log")"
        return 1
    fi
    for _ in $(seq 5); do dk "$PODMAN_SOCK" run --rm --network none --label "$LABEL" "$PODMAN_IMAGE" true >/dev/null; done
}
if [ -n "$NO_PODMAN" ]; then
    PODMAN_FAIL="not measured (NO_PODMAN set)"
elif ! podman_setup; then
    echo "podman could not be used, measuring wrun alone: $PODMAN_FAIL" >&2
fi
PODMAN_RSS_START=
if [ -n "$PODMAN_PID" ]; then PODMAN_RSS_START=$(vmrss "$PODMAN_PID"); fi

# ---- 1. through the docker CLI ------------------------------------------------

# cli_round NAME SOCKET ARGS...: one hyperfine round of
# `docker run --rm --network none --label ... ARGS` on SOCKET, then of
# `docker ps -q` (the CLI's own cost: start-up, version negotiation and one
# request).
cli_round() {
    local name=$1 socket=$2; shift 2
    (
        export DOCKER_HOST="unix://$socket"
        hyperfine -N --warmup 3 --runs "$CLI_RUNS" --export-json "$TMP/cli-$name-$round.json" \
            "docker run --rm --network none --label $LABEL $*" >/dev/null
        hyperfine -N --warmup 3 --runs "$CLI_RUNS" --export-json "$TMP/ps-$name-$round.json" \
            "docker ps -q" >/dev/null
    )
}
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS of docker run, load average $(loadavg)" >&2
    cli_round wrun "$WRUN_SOCK" "$WRUN_IMAGE"
    WRUN_CONTAINERS=$((WRUN_CONTAINERS + CLI_RUNS + 3))
    if [ -z "$PODMAN_FAIL" ]; then cli_round podman "$PODMAN_SOCK" "$PODMAN_IMAGE" true; fi
done
RSS_AFTER_CLI=$(vmrss "$WRUN_PID")
echo "load average after the docker CLI runs: $(loadavg)"

# ---- 2. the raw API -----------------------------------------------------------

# share TOTAL ROUND: this round's share of TOTAL, so that the rounds add up.
share() { echo $(( $1 * $2 / ROUNDS - $1 * ($2 - 1) / ROUNDS )); }
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS of the raw API, load average $(loadavg)" >&2
    per_wrun=$(share "$RAW_WRUN" "$round")
    per_podman=$(share "$RAW_PODMAN" "$round")
    python3 "$RAW" "$WRUN_SOCK" ping 100 10 "$TMP/ping-wrun.jsonl"
    python3 "$RAW" "$WRUN_SOCK" \
        "{\"Image\":\"$WRUN_IMAGE\",\"Labels\":{\"${LABEL%=*}\":\"1\"},\"HostConfig\":{\"AutoRemove\":false,\"NetworkMode\":\"none\"}}" \
        "$per_wrun" 3 "$TMP/raw-wrun.jsonl"
    WRUN_CONTAINERS=$((WRUN_CONTAINERS + per_wrun + 3))
    if [ -z "$PODMAN_FAIL" ]; then
        python3 "$RAW" "$PODMAN_SOCK" \
            "{\"Image\":\"$PODMAN_IMAGE\",\"Cmd\":[\"true\"],\"Labels\":{\"${LABEL%=*}\":\"1\"},\"HostConfig\":{\"AutoRemove\":false,\"NetworkMode\":\"none\"}}" \
            "$per_podman" 1 "$TMP/raw-podman.jsonl"
        python3 "$RAW" "$PODMAN_SOCK" ping 100 10 "$TMP/ping-podman.jsonl"
    fi
done
RSS_END=$(vmrss "$WRUN_PID")
HWM_END=$(vmhwm "$WRUN_PID")
LEFT_WRUN=$(dk "$WRUN_SOCK" ps -aq | wc -l)
LEFT_DIRS=$(find "$WRUN_HOME/containers" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
echo "load average at end: $(loadavg)"

# ---- report ---------------------------------------------------------------------

# goal VALUE LIMIT: "met" or "missed".
goal() { python3 -c 'import sys; print("met" if float(sys.argv[1]) <= float(sys.argv[2]) else "missed")' "$1" "$2"; }

SUMMARY=()
read -r w_med w_min w_max w_n <<<"$(cli_stat "$TMP"/cli-wrun-*.json)"
echo "docker run --rm --network none IMAGE through the docker CLI $(docker --version | awk '{print $3}' | tr -d ,), hyperfine -N, $ROUNDS rounds of $CLI_RUNS runs (3 warm-ups each), ms:"
printf '  %-46s median %8s  min %8s  max %8s  (%d runs)\n' "wrun daemon, $WRUN_IMAGE (hello component)" "$w_med" "$w_min" "$w_max" "$w_n"
read -r wp_med wp_min wp_max wp_n <<<"$(cli_stat "$TMP"/ps-wrun-*.json)"
printf '  %-46s median %8s  min %8s  max %8s  (%d runs)\n' "  floor: docker ps -q on wrun" "$wp_med" "$wp_min" "$wp_max" "$wp_n"
if [ -z "$PODMAN_FAIL" ]; then
    read -r p_med p_min p_max p_n <<<"$(cli_stat "$TMP"/cli-podman-*.json)"
    printf '  %-46s median %8s  min %8s  max %8s  (%d runs)\n' "podman service, $PODMAN_IMAGE true" "$p_med" "$p_min" "$p_max" "$p_n"
    read -r pp_med pp_min pp_max pp_n <<<"$(cli_stat "$TMP"/ps-podman-*.json)"
    printf '  %-46s median %8s  min %8s  max %8s  (%d runs)\n' "  floor: docker ps -q on podman" "$pp_med" "$pp_min" "$pp_max" "$pp_n"
    r=$(ratio "$w_med" "$p_med")
    echo "  ratio wrun / podman (medians) = ${r}x (goal <= 0.2x: $(goal "$r" 0.2))"
    SUMMARY+=("docker run, wrun / podman: ${r}x (goal <= 0.2x: $(goal "$r" 0.2))")
fi

echo "raw API, create + start + wait?condition=not-running (wait sent after start), one keep-alive connection, ms:"
phases="create start wait total delete"
printf '  %-26s' ""; for ph in $phases; do printf ' %17s' "$ph"; done; echo "   (median / p90)"
raw_row() {
    local label=$1 file=$2 ph m p
    printf '  %-26s' "$label"
    for ph in $phases; do read -r m p <<<"$(raw_stat "$file" "$ph")"; printf ' %8s/%8s' "$m" "$p"; done
    echo "   ($(raw_count "$file") containers)"
}
raw_row "wrun daemon, $WRUN_IMAGE" "$TMP/raw-wrun.jsonl"
read -r pw_med pw_p90 <<<"$(raw_stat "$TMP/ping-wrun.jsonl" ping)"
echo "  floor: GET /_ping on wrun, same client: median ${pw_med} ms, p90 ${pw_p90} ms ($(raw_count "$TMP/ping-wrun.jsonl") requests)"
read -r rw_med rw_p90 <<<"$(raw_stat "$TMP/raw-wrun.jsonl" total)"
echo "  wrun create -> wait answered: median ${rw_med} ms, p90 ${rw_p90} ms (goal median <= 2 ms: $(goal "$rw_med" 2))"
SUMMARY+=("raw API, wrun median ${rw_med} ms (goal <= 2 ms: $(goal "$rw_med" 2))")
if [ -z "$PODMAN_FAIL" ]; then
    raw_row "podman service, busybox" "$TMP/raw-podman.jsonl"
    read -r pp_med pp_p90 <<<"$(raw_stat "$TMP/ping-podman.jsonl" ping)"
    echo "  floor: GET /_ping on podman, same client: median ${pp_med} ms, p90 ${pp_p90} ms ($(raw_count "$TMP/ping-podman.jsonl") requests)"
    read -r rp_med rp_p90 <<<"$(raw_stat "$TMP/raw-podman.jsonl" total)"
    r=$(ratio "$rw_med" "$rp_med")
    echo "  ratio wrun / podman (medians of create -> wait) = ${r}x (goal <= 0.01x: $(goal "$r" 0.01)); p90s: $(ratio "$rw_p90" "$rp_p90")x"
    SUMMARY+=("raw API, wrun / podman: ${r}x (goal <= 0.01x: $(goal "$r" 0.01))")
fi

echo "wrun daemon VmRSS: idle ${RSS_IDLE} KiB; after warm-up ${RSS_WARM} KiB; after the CLI runs ${RSS_AFTER_CLI} KiB;"
echo "  at the end ${RSS_END} KiB (VmHWM ${HWM_END} KiB), after $WRUN_CONTAINERS more containers, each removed:"
growth=$((RSS_END - RSS_WARM))
echo "  growth $growth KiB = $(python3 -c 'import sys; print("%.2f" % (int(sys.argv[1]) / int(sys.argv[2])))' "$growth" "$WRUN_CONTAINERS") KiB per container;" \
    "containers left: $LEFT_WRUN listed, $LEFT_DIRS directories in \$WRUN_HOME/containers"
SUMMARY+=("wrun daemon RSS after warm-up -> end: $RSS_WARM -> $RSS_END KiB over $WRUN_CONTAINERS containers")
if [ -n "$PODMAN_PID" ] && kill -0 "$PODMAN_PID" 2>/dev/null; then
    echo "podman service VmRSS: ${PODMAN_RSS_START} KiB after its warm-up, $(vmrss "$PODMAN_PID") KiB at the end"
fi
if [ -n "$PODMAN_FAIL" ]; then
    echo "podman: $PODMAN_FAIL"
    SUMMARY+=("podman not measured: $PODMAN_FAIL")
fi
# Anything the daemon said besides its start-up line is worth a look.
extra=$(grep -v 'listening on unix://' "$TMP/wrun-daemon.log" || true)
if [ -n "$extra" ]; then
    echo "wrun daemon's log ($(echo "$extra" | wc -l) lines besides the start-up line), last 10:"
    echo "$extra" | tail -10 | sed 's/^/    /'
fi

echo "summary (lower is better):"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
