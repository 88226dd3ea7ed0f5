#!/usr/bin/env bash
# CPU controls of the wrun daemon, against Podman (4.3, rootful, runc,
# cgroups) doing the same to busybox shell loops, on the same machine in
# the same run:
#
# 1. `--cpus 0.5` on a spinning guest (the `spin` app, `spin busy`): the
#    container's CPU time over SECONDS (default 10) of wall time, from the
#    stats API (cpu_stats.cpu_usage.total_usage between two samples, over
#    the difference of their `read` times). Goal: 0.5 core within 10%.
#    For wrun, the daemon process's own utime+stime over the same interval
#    is shown beside it (the container's figure is wrun's own accounting).
# 2. Two busy containers, `--cpu-shares 1024` and `512`, contending for one
#    core: the wrun daemon is started under `taskset -c 0` (so it runs one
#    guest thread: it sizes its pool by the CPUs it may use), Podman's
#    containers get `--cpuset-cpus 0`. Their CPU split over SECONDS. Goal:
#    2:1 within 10%.
# 3. The same two with a core each (wrun's unpinned daemon, which has a
#    guest thread per CPU; Podman without a cpuset): shares do not apply
#    when there is a core for each busy container, for cgroups as for wrun,
#    so both splits should be near 1:1. Shown for what it says about the
#    guarantee; no goal.
#
# Each phase measures wrun, then Podman, back to back, so that a drifting
# load (a 2-core machine shared with builds) touches both alike; the load
# average is printed before each phase. Every docker invocation names its
# daemon in DOCKER_HOST (the machine's own engine is never used), with
# DOCKER_CONFIG an empty directory of this run's.
#
# It does not source common.sh, which also installs the wasmtime CLI peer
# that these figures do not use; it keeps its conventions: a release build
# (wrun and the spin guest only), backtrace variables unset, a temporary
# WRUN_HOME. If Podman cannot be set up, the script says what failed and
# measures wrun alone.
#
# Knobs (environment): SECONDS_PER (default 10), NO_PODMAN=1 (wrun only).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${BENCH_WORK:-$ROOT/target/bench}"
mkdir -p "$WORK"
unset RUST_BACKTRACE RUST_LIB_BACKTRACE WASMTIME_BACKTRACE_DETAILS WRUN_LOG
SECONDS_PER="${SECONDS_PER:-10}"
NO_PODMAN="${NO_PODMAN:-}"
LABEL=wrun-bench-cpu=1

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load average at start: $(loadavg) ($(nproc) cores)"

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

echo "building release wrun and the spin guest" >&2
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release --quiet --locked --manifest-path "$ROOT/Cargo.toml" --bin wrun
cargo build --release --quiet --locked --manifest-path "$ROOT/wasm-apps/Cargo.toml" \
    --target wasm32-wasip2 --bin spin --target-dir "$WORK/guests"
WRUN="$ROOT/target/release/wrun"
SPIN="$WORK/guests/wasm32-wasip2/release/spin.wasm"
echo "machine: $(nproc) cores, $(uname -r), $("$WRUN" --version), docker CLI $(docker --version | awk '{print $3}' | tr -d ,)"
echo "load average after the build: $(loadavg)"

# Everything this script makes lives here, and goes on exit.
TMP="$(mktemp -d "$WORK/cpu.XXXXXX")"
export DOCKER_CONFIG="$TMP/docker-config"
mkdir -p "$DOCKER_CONFIG"
unset DOCKER_CONTEXT DOCKER_API_VERSION DOCKER_TLS_VERIFY DOCKER_CERT_PATH
# A docker invocation that forgets to name its daemon fails here instead of
# reaching the machine's engine.
export DOCKER_HOST="unix://$TMP/no-such-daemon.sock"
export WRUN_HOME="$TMP/wrun-home"

WRUN_PIDS=()
PODMAN_PID=
cleanup() {
    local pid
    for pid in "${WRUN_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$PODMAN_PID" ]; then
        local left
        left=$(podman ps -aq --filter "label=$LABEL" 2>/dev/null) || true
        if [ -n "$left" ]; then
            # shellcheck disable=SC2086
            podman rm -f -t 0 $left >/dev/null 2>&1 || true
        fi
        kill -TERM "$PODMAN_PID" 2>/dev/null || true
        wait "$PODMAN_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# dk SOCKET ARGS...: the docker CLI against the daemon on SOCKET.
dk() {
    local socket=$1; shift
    DOCKER_HOST="unix://$socket" docker "$@"
}

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

# ---- the sampler -----------------------------------------------------------

MEASURE="$TMP/measure.py"
cat >"$MEASURE" <<'EOF'
"""CPU used by containers over an interval, from the Docker stats API.

usage: measure.py SOCKET SECONDS PID|- NAME...

Samples every NAME's stats once (GET /containers/NAME/stats?stream=false),
sleeps SECONDS, samples again; prints per container `NAME CORES`: the
growth of cpu_stats.cpu_usage.total_usage (ns) over the growth of the
sample's `read` time (the client's own clock, mid-request, if `read` does
not parse). With a PID, also `process CORES`: that process's utime+stime
over the same interval.
"""
import datetime
import http.client
import json
import os
import re
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


def read_time(text):
    """RFC 3339 with up to 9 fractional digits, as seconds since the epoch."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text or "")
    if not m or text.startswith("0001-"):
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    base = datetime.datetime.fromisoformat(m.group(1) + zone).timestamp()
    return base + int((m.group(2) or "0").ljust(9, "0")[:9]) / 1e9


def sample(conn, name):
    t0 = time.time()
    conn.request("GET", f"/v1.41/containers/{name}/stats?stream=false&one-shot=true")
    response = conn.getresponse()
    body = response.read()
    t1 = time.time()
    if response.status != 200:
        sys.exit(f"stats of {name}: {response.status} {body[:300]!r}")
    stats = json.loads(body)
    used = stats["cpu_stats"]["cpu_usage"]["total_usage"]
    at = read_time(stats.get("read"))
    return used, at if at is not None else (t0 + t1) / 2


def process_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), time.time()


def main():
    path, seconds, pid, names = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
    conn = UnixConnection(path)
    before = [sample(conn, n) for n in names]
    proc_before = process_cpu(pid) if pid != "-" else None
    time.sleep(seconds)
    proc_after = process_cpu(pid) if pid != "-" else None
    after = [sample(conn, n) for n in names]
    for name, (u0, t0), (u1, t1) in zip(names, before, after):
        print(f"{name} {(u1 - u0) / 1e9 / (t1 - t0):.4f}")
    if proc_before:
        print(f"process {(proc_after[0] - proc_before[0]) / (proc_after[1] - proc_before[1]):.4f}")


main()
EOF

# cores_of OUTPUT NAME: NAME's figure in measure.py's OUTPUT.
cores_of() { awk -v n="$2" '$1 == n { print $2 }' <<<"$1"; }

# wait_cpu SOCKET NAME...: until each container has used some CPU (it has
# started running; the first start also compiles), then one more second.
wait_cpu() {
    local socket=$1 name used; shift
    for name in "$@"; do
        for _ in $(seq 600); do
            used=$(python3 - "$socket" "$name" <<'EOF'
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
c = C("localhost", timeout=60)
c.request("GET", f"/v1.41/containers/{sys.argv[2]}/stats?stream=false&one-shot=true")
r = c.getresponse()
print(json.loads(r.read())["cpu_stats"]["cpu_usage"].get("total_usage", 0) if r.status == 200 else 0)
EOF
)
            [ "${used:-0}" -gt 0 ] && break
            sleep 0.1
        done
        if [ "${used:-0}" -eq 0 ]; then
            echo "container $name on $socket never used CPU" >&2; return 1
        fi
    done
    sleep 1
}

# ---- wrun's daemons ----------------------------------------------------------

# start_wrun NAME [WRAPPER...]: a daemon on its own socket, sharing
# WRUN_HOME (images and compile cache); sets SOCK and PID.
start_wrun() {
    local name=$1; shift
    local xdg="$TMP/xdg-$name"
    mkdir -m 0700 -p "$xdg"
    XDG_RUNTIME_DIR="$xdg" "$@" "$WRUN" daemon >"$TMP/daemon-$name.log" 2>&1 &
    PID=$!
    WRUN_PIDS+=("$PID")
    SOCK="$xdg/wrun/wrun.sock"
    wait_for_socket "wrun daemon ($name)" "$PID" "$SOCK" "$TMP/daemon-$name.log"
}
guest_threads() { grep -l '^wrun-guest' /proc/"$1"/task/*/comm 2>/dev/null | wc -l; }

"$WRUN" build -t spin:1 "$SPIN" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; exit 1; }
start_wrun free
FREE_SOCK=$SOCK FREE_PID=$PID
start_wrun pinned taskset -c 0
PINNED_SOCK=$SOCK PINNED_PID=$PID
echo "wrun daemons: unpinned, $(guest_threads "$FREE_PID") guest threads; under taskset -c 0, $(guest_threads "$PINNED_PID") guest thread(s)"
# The compile cache warmed once (both daemons share WRUN_HOME).
dk "$FREE_SOCK" run -d --name warm --label "$LABEL" spin:1 >/dev/null
wait_cpu "$FREE_SOCK" warm
dk "$FREE_SOCK" rm -f warm >/dev/null

# ---- Podman ------------------------------------------------------------------

PODMAN_FAIL=
PODMAN_SOCK="$TMP/podman.sock"
PODMAN_IMAGE=local/busybox
DROPIN=/etc/containers/containers.conf.d/50-sandbox.conf
LOOP='while :; do :; done'

# podman_setup: packages, the drop-in, the image, the service (as
# bench/daemon.sh does); sets PODMAN_FAIL and returns 1 on the first failure.
podman_setup() {
    need_debian podman runc busybox-static || { PODMAN_FAIL="apt-get install podman runc busybox-static failed"; return 1; }
    echo "podman: $(podman --version 2>&1), runc $(runc --version 2>&1 | head -1 | awk '{print $3}')"
    if [ -e "$DROPIN" ]; then
        echo "podman drop-in $DROPIN already present, left as is"
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
    if ! dk "$PODMAN_SOCK" run --rm --network none --cpus 0.5 --label "$LABEL" "$PODMAN_IMAGE" true >"$log" 2>&1; then
        PODMAN_FAIL="docker run --cpus 0.5 $PODMAN_IMAGE true through podman's socket failed: $(tail -3 "$log")"
        return 1
    fi
}
if [ -n "$NO_PODMAN" ]; then
    PODMAN_FAIL="not measured (NO_PODMAN set)"
elif ! podman_setup; then
    echo "podman could not be used, measuring wrun alone: $PODMAN_FAIL" >&2
fi

# run_wrun SOCKET NAME ARGS...: a detached spinning container on wrun.
run_wrun() {
    local socket=$1 name=$2; shift 2
    dk "$socket" run -d --name "$name" --label "$LABEL" "$@" spin:1 >/dev/null
}
# run_podman NAME ARGS...: a detached busybox shell loop on Podman.
run_podman() {
    local name=$1; shift
    dk "$PODMAN_SOCK" run -d --name "$name" --network none --label "$LABEL" "$@" \
        "$PODMAN_IMAGE" sh -c "$LOOP" >/dev/null
}
rm_all() { local socket=$1; shift; dk "$socket" rm -f "$@" >/dev/null; }

# ---- 1. --cpus 0.5 --------------------------------------------------------------

echo "1. --cpus 0.5 on one spinning container, ${SECONDS_PER} s; load average $(loadavg)"
run_wrun "$FREE_SOCK" half --cpus 0.5
wait_cpu "$FREE_SOCK" half
out=$(python3 "$MEASURE" "$FREE_SOCK" "$SECONDS_PER" "$FREE_PID" half)
W_HALF=$(cores_of "$out" half)
W_HALF_PROC=$(cores_of "$out" process)
rm_all "$FREE_SOCK" half
P_HALF=
if [ -z "$PODMAN_FAIL" ]; then
    run_podman phalf --cpus 0.5
    wait_cpu "$PODMAN_SOCK" phalf
    P_HALF=$(cores_of "$(python3 "$MEASURE" "$PODMAN_SOCK" "$SECONDS_PER" - phalf)" phalf)
    rm_all "$PODMAN_SOCK" phalf
fi

# ---- 2. shares on one core ------------------------------------------------------

echo "2. --cpu-shares 1024 vs 512 on one core, ${SECONDS_PER} s; load average $(loadavg)"
run_wrun "$PINNED_SOCK" heavy --cpu-shares 1024
run_wrun "$PINNED_SOCK" light --cpu-shares 512
wait_cpu "$PINNED_SOCK" heavy light
out=$(python3 "$MEASURE" "$PINNED_SOCK" "$SECONDS_PER" "$PINNED_PID" heavy light)
W_HEAVY=$(cores_of "$out" heavy) W_LIGHT=$(cores_of "$out" light) W_PINNED_PROC=$(cores_of "$out" process)
rm_all "$PINNED_SOCK" heavy light
P_HEAVY= P_LIGHT=
if [ -z "$PODMAN_FAIL" ]; then
    run_podman pheavy --cpu-shares 1024 --cpuset-cpus 0
    run_podman plight --cpu-shares 512 --cpuset-cpus 0
    wait_cpu "$PODMAN_SOCK" pheavy plight
    out=$(python3 "$MEASURE" "$PODMAN_SOCK" "$SECONDS_PER" - pheavy plight)
    P_HEAVY=$(cores_of "$out" pheavy) P_LIGHT=$(cores_of "$out" plight)
    rm_all "$PODMAN_SOCK" pheavy plight
fi

# ---- 3. shares with a core each --------------------------------------------------

echo "3. --cpu-shares 1024 vs 512 with a core each, ${SECONDS_PER} s; load average $(loadavg)"
run_wrun "$FREE_SOCK" heavy2 --cpu-shares 1024
run_wrun "$FREE_SOCK" light2 --cpu-shares 512
wait_cpu "$FREE_SOCK" heavy2 light2
out=$(python3 "$MEASURE" "$FREE_SOCK" "$SECONDS_PER" - heavy2 light2)
W_HEAVY2=$(cores_of "$out" heavy2) W_LIGHT2=$(cores_of "$out" light2)
rm_all "$FREE_SOCK" heavy2 light2
P_HEAVY2= P_LIGHT2=
if [ -z "$PODMAN_FAIL" ]; then
    run_podman pheavy2 --cpu-shares 1024
    run_podman plight2 --cpu-shares 512
    wait_cpu "$PODMAN_SOCK" pheavy2 plight2
    out=$(python3 "$MEASURE" "$PODMAN_SOCK" "$SECONDS_PER" - pheavy2 plight2)
    P_HEAVY2=$(cores_of "$out" pheavy2) P_LIGHT2=$(cores_of "$out" plight2)
    rm_all "$PODMAN_SOCK" pheavy2 plight2
fi
echo "load average at end: $(loadavg)"

# ---- report -------------------------------------------------------------------------

# calc EXPR: a Python expression, printed.
calc() { python3 -c "print($1)"; }
# within VALUE GOAL: "met" if VALUE is within 10% of GOAL.
within() { calc "'met' if abs($1 / $2 - 1) <= 0.10 else 'missed'"; }

SUMMARY=()
echo "results (cores: CPU seconds per wall second over ${SECONDS_PER} s, from the stats API):"
echo "1. --cpus 0.5, one spinning container:"
printf '  %-40s %s cores = %sx the goal (0.5): %s\n' "wrun (spin busy)" "$W_HALF" "$(calc "'%.3f' % ($W_HALF / 0.5)")" "$(within "$W_HALF" 0.5)"
printf '  %-40s %s cores\n' "  wrun daemon process, utime+stime" "$W_HALF_PROC"
SUMMARY+=("--cpus 0.5: wrun $W_HALF cores, $(calc "'%.3f' % ($W_HALF / 0.5)")x the goal ($(within "$W_HALF" 0.5))")
if [ -n "$P_HALF" ]; then
    printf '  %-40s %s cores = %sx the goal\n' "podman (busybox sh loop)" "$P_HALF" "$(calc "'%.3f' % ($P_HALF / 0.5)")"
    r=$(calc "'%.3f' % ($W_HALF / $P_HALF)")
    echo "  wrun / podman = ${r}x"
    SUMMARY[-1]+=", ${r}x podman's $P_HALF"
fi

split_row() {  # LABEL HEAVY LIGHT
    printf '  %-40s %s vs %s cores, split %s:1, total %s\n' "$1" "$2" "$3" "$(calc "'%.3f' % ($2 / $3)")" "$(calc "'%.3f' % ($2 + $3)")"
}
echo "2. --cpu-shares 1024 vs 512, two spinning containers on one core:"
W_SPLIT=$(calc "'%.3f' % ($W_HEAVY / $W_LIGHT)")
split_row "wrun (taskset -c 0 daemon)" "$W_HEAVY" "$W_LIGHT"
printf '  %-40s %s cores\n' "  wrun daemon process, utime+stime" "$W_PINNED_PROC"
echo "  split = $(calc "'%.3f' % ($W_SPLIT / 2)")x the goal (2:1): $(within "$W_SPLIT" 2)"
SUMMARY+=("shares on one core: wrun split ${W_SPLIT}:1, $(calc "'%.3f' % ($W_SPLIT / 2)")x the goal ($(within "$W_SPLIT" 2))")
if [ -n "$P_HEAVY" ]; then
    P_SPLIT=$(calc "'%.3f' % ($P_HEAVY / $P_LIGHT)")
    split_row "podman (--cpuset-cpus 0)" "$P_HEAVY" "$P_LIGHT"
    echo "  podman split = $(calc "'%.3f' % ($P_SPLIT / 2)")x the goal; wrun / podman = $(calc "'%.3f' % ($W_SPLIT / $P_SPLIT)")x"
    SUMMARY[-1]+=", $(calc "'%.3f' % ($W_SPLIT / $P_SPLIT)")x podman's ${P_SPLIT}:1"
fi
echo "3. --cpu-shares 1024 vs 512 with a core each (no goal: shares should change nothing):"
split_row "wrun (daemon with $(guest_threads "$FREE_PID") guest threads)" "$W_HEAVY2" "$W_LIGHT2"
SUMMARY+=("a core each: wrun split $(calc "'%.3f' % ($W_HEAVY2 / $W_LIGHT2)"):1")
if [ -n "$P_HEAVY2" ]; then
    split_row "podman (no cpuset)" "$P_HEAVY2" "$P_LIGHT2"
    SUMMARY[-1]+=", podman $(calc "'%.3f' % ($P_HEAVY2 / $P_LIGHT2)"):1"
fi
if [ -n "$PODMAN_FAIL" ]; then
    echo "podman: $PODMAN_FAIL"
    SUMMARY+=("podman not measured: $PODMAN_FAIL")
fi
# Anything the daemons said besides their start-up line is worth a look.
for name in free pinned; do
    extra=$(grep -v 'listening on unix://' "$TMP/daemon-$name.log" || true)
    if [ -n "$extra" ]; then
        echo "wrun daemon ($name) log, $(echo "$extra" | wc -l) lines besides the start-up line, last 10:"
        echo "$extra" | tail -10 | sed 's/^/    /'
    fi
done
echo "summary:"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
