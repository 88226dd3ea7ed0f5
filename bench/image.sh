#!/usr/bin/env bash
# Images: start-up of `wrun run IMAGE` against `wrun run FILE` of the same
# wasm, and push/pull throughput of `wrun push`/`wrun pull` against skopeo,
# both talking to a local distribution registry (docker-registry).
#
# 1. Start-up (hyperfine -N; hyperfine sends the app's output to /dev/null),
#    for hello (a small component) and filetool (a larger component, run as
#    `filetool pwd`), each built into an image with `wrun build`:
#      - image first start: $WRUN_HOME/cache removed before every run, so
#        every run compiles (the file's first start is measured alongside);
#      - image warm: compiled artifact cached;
#      - file warm: `wrun run app.wasm`, the baseline.
#    The cache is keyed by content, so image and file share the artifact:
#    the image/file gap is the cost of resolving the image.
# 2. Push and pull of an image with one SIZE_MIB layer (a real component with
#    a custom section appended) against a local docker-registry, wrun vs
#    `skopeo copy --preserve-digests` (so skopeo sends the same bytes and does
#    not recompress). Every round starts two fresh registries (empty storage,
#    a port the kernel picks, 127.0.0.1 only), one per tool, so no blob is
#    ever skipped as already present and neither tool pushes into storage
#    the other filled; pulls go into an empty WRUN_HOME / an empty OCI
#    directory. The order of the tools alternates between rounds.
#
# Knobs (environment): RUNS (hyperfine's minimum runs, default 20), ROUNDS
# (push/pull rounds, default 5), SIZE_MIB (size of the pushed layer, default
# 64).
source "$(dirname "$0")/common.sh"

RUNS="${RUNS:-20}"
ROUNDS="${ROUNDS:-5}"
SIZE_MIB="${SIZE_MIB:-64}"

need_debian skopeo docker-registry
REGISTRY_BIN="$(command -v docker-registry || command -v registry)"

# Everything this script makes lives here (on the same disk as the rest of
# $WORK, not a tmpfs /tmp), and goes on exit.
TMP="$(mktemp -d "$WORK/image.XXXXXX")"
registry_pids=()
cleanup() {
    local p
    for p in "${registry_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${registry_pids[@]}"; do wait "$p" 2>/dev/null || true; done
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

# stat_ms JSON INDEX: "mean ± stddev" of hyperfine result INDEX, in ms.
stat_ms() {
    python3 -c 'import json,sys; r = json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]
print("%.2f ± %.2f ms (%d runs)" % (r["mean"] * 1000, (r["stddev"] or 0) * 1000, len(r["times"])))' "$1" "$2"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
SUMMARY=()

# ---- 1. start-up ----------------------------------------------------------

# startup NAME WASM [ARGS]: the three (four) start-up figures of one app.
startup() {
    local name=$1 app=$2 args=${3:-}
    export WRUN_HOME="$TMP/home-$name"
    rm -rf "$WRUN_HOME"
    local image="$name:1"
    quiet "$TMP/$name.build.log" "$WRUN" build -t "$image" "$app"
    # Both must run and exit 0 before they are timed.
    quiet "$TMP/$name.run.log" "$WRUN" run "$image" $args
    quiet "$TMP/$name.run.log" "$WRUN" run "$app" $args

    local first="$TMP/$name-first.json" warm="$TMP/$name-warm.json"
    hyperfine -N --warmup 3 --min-runs "$RUNS" --prepare "rm -rf $WRUN_HOME/cache" \
        --export-json "$first" \
        "$WRUN run $image $args" \
        "$WRUN run $app $args" >/dev/null
    hyperfine -N --warmup 3 --min-runs "$RUNS" --export-json "$warm" \
        "$WRUN run $image $args" \
        "$WRUN run $app $args" >/dev/null
    local img_first file_first img_warm file_warm
    img_first=$(mean_ms "$first" 0); file_first=$(mean_ms "$first" 1)
    img_warm=$(mean_ms "$warm" 0); file_warm=$(mean_ms "$warm" 1)

    echo "start-up, $name component ($(stat -c %s "$app") bytes) as image $image and as a file${args:+, args: $args}:"
    printf '  %-48s %s\n' "wrun run IMAGE, first start (cache emptied)" "$(stat_ms "$first" 0)"
    printf '  %-48s %s\n' "wrun run FILE, first start (cache emptied)" "$(stat_ms "$first" 1)"
    printf '  %-48s %s\n' "wrun run IMAGE, warm" "$(stat_ms "$warm" 0)"
    printf '  %-48s %s\n' "wrun run FILE, warm (baseline)" "$(stat_ms "$warm" 1)"
    echo "  ratio image first start / file warm  = $(ratio "$img_first" "$file_warm")x"
    echo "  ratio image warm / file warm         = $(ratio "$img_warm" "$file_warm")x"
    echo "  ratio image first start / file first start = $(ratio "$img_first" "$file_first")x"
    SUMMARY+=("$name image first start / file warm: $(ratio "$img_first" "$file_warm")x")
    SUMMARY+=("$name image warm / file warm: $(ratio "$img_warm" "$file_warm")x")
    SUMMARY+=("$name image first start / file first start: $(ratio "$img_first" "$file_first")x")
}

startup hello "$P2/hello.wasm"
startup filetool "$P2/filetool.wasm" pwd

# ---- 2. push and pull -----------------------------------------------------

# A real component with a custom section of seeded pseudo-random bytes
# appended, SIZE_MIB MiB in all (the same digest every run).
BIG="$TMP/big.wasm"
python3 "$ROOT/bench/custom-section.py" "$P2/hello.wasm" "$BIG" wrun-bench-padding \
    --total-mib "$SIZE_MIB"
BYTES=$(stat -c %s "$BIG")
LAYER=$(sha256sum "$BIG" | cut -d' ' -f1)
export WRUN_HOME="$TMP/home-push"
quiet "$TMP/big.build.log" "$WRUN" build -t big:1 "$BIG"
quiet "$TMP/big.run.log" "$WRUN" run big:1   # the padded component still runs

# start_registry: a docker-registry with empty storage on a port the kernel
# picks; sets REG_PORT and REG_PID, REG_DIR (its storage is REG_DIR/data).
reg_count=0
start_registry() {
    reg_count=$((reg_count + 1))
    REG_DIR="$TMP/registry-$reg_count"
    mkdir -p "$REG_DIR/data"
    cat >"$REG_DIR/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
EOF
    "$REGISTRY_BIN" serve "$REG_DIR/config.yml" >"$REG_DIR/log" 2>&1 &
    REG_PID=$!
    registry_pids+=("$REG_PID")
    REG_PORT=
    for _ in $(seq 100); do
        REG_PORT=$(grep -om1 'listening on 127\.0\.0\.1:[0-9]*' "$REG_DIR/log" | sed 's/.*://') || true
        [ -n "$REG_PORT" ] && break
        if ! kill -0 "$REG_PID" 2>/dev/null; then
            echo "docker-registry exited during start-up:" >&2; cat "$REG_DIR/log" >&2; exit 1
        fi
        sleep 0.1
    done
    if [ -z "$REG_PORT" ]; then
        echo "docker-registry did not say where it listens after 10 s:" >&2; cat "$REG_DIR/log" >&2; exit 1
    fi
}
stop_registry() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    rm -rf "$2"
}

# timed NAME CMD...: runs CMD (output to a log, shown if it fails) and
# appends its wall-clock time in seconds to $TMP/NAME.times.
timed() {
    local name=$1; shift
    local t0=$EPOCHREALTIME
    quiet "$TMP/$name.log" "$@"
    local t1=$EPOCHREALTIME
    python3 -c 'import sys; print("%.6f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1" \
        >>"$TMP/$name.times"
}

# has_blob FILE: the pushed/pulled layer is really there, whole.
has_blob() {
    if [ ! -f "$1" ] || [ "$(stat -c %s "$1")" != "$BYTES" ]; then
        echo "the layer is missing or short at $1" >&2; exit 1
    fi
}

PULL_HOME="$TMP/home-pull"
SKOPEO_DIR="$TMP/skopeo-pull"
# One operation each, on the registries and names of the current round.
push_wrun() { timed wrun-push "$WRUN" push --insecure "$w_ref"; }
push_skopeo() {
    timed skopeo-push skopeo --insecure-policy copy --dest-tls-verify=false --preserve-digests \
        "oci:$WRUN_HOME/images:big:1" "docker://$s_ref"
}
pull_wrun() {
    rm -rf "$PULL_HOME"; mkdir -p "$PULL_HOME"
    WRUN_HOME="$PULL_HOME" timed wrun-pull "$WRUN" pull --insecure "$w_ref"
    has_blob "$PULL_HOME/images/blobs/sha256/$LAYER"
}
pull_skopeo() {
    rm -rf "$SKOPEO_DIR"; mkdir -p "$SKOPEO_DIR"
    timed skopeo-pull skopeo --insecure-policy copy --src-tls-verify=false \
        "docker://$s_ref" "oci:$SKOPEO_DIR:x"
    has_blob "$SKOPEO_DIR/blobs/sha256/$LAYER"
}
for round in $(seq "$ROUNDS"); do
    start_registry; w_port=$REG_PORT; w_pid=$REG_PID; w_dir=$REG_DIR
    start_registry; s_port=$REG_PORT; s_pid=$REG_PID; s_dir=$REG_DIR
    w_ref="127.0.0.1:$w_port/bench/w$round:1"
    s_ref="127.0.0.1:$s_port/bench/s$round:1"
    quiet "$TMP/tag.log" "$WRUN" tag big:1 "$w_ref"

    if [ $((round % 2)) = 1 ]; then
        push_wrun; push_skopeo; pull_wrun; pull_skopeo
    else
        push_skopeo; push_wrun; pull_skopeo; pull_wrun
    fi
    has_blob "$w_dir/data/docker/registry/v2/blobs/sha256/${LAYER:0:2}/$LAYER/data"
    has_blob "$s_dir/data/docker/registry/v2/blobs/sha256/${LAYER:0:2}/$LAYER/data"
    stop_registry "$w_pid" "$w_dir"
    stop_registry "$s_pid" "$s_dir"
    "$WRUN" rmi "$w_ref" >/dev/null 2>&1 || true
done
rm -rf "$PULL_HOME" "$SKOPEO_DIR"

# mibs NAME: "median [min-max]" MiB/s over the rounds of NAME.
mibs() {
    python3 -c 'import statistics, sys
mib = int(sys.argv[2]) / 2**20
rates = sorted(mib / float(t) for t in open(sys.argv[1]).read().split())
print("%.1f [%.1f-%.1f]" % (statistics.median(rates), rates[0], rates[-1]))' "$TMP/$1.times" "$BYTES"
}
median_mibs() { mibs "$1" | cut -d' ' -f1; }

echo "push/pull of an image with one $SIZE_MIB MiB layer ($BYTES bytes) through a local docker-registry,"
echo "$ROUNDS rounds (fresh registries each round), MiB/s of the layer, median [min-max]:"
printf '  %-46s %s MiB/s\n' "wrun push --insecure" "$(mibs wrun-push)"
printf '  %-46s %s MiB/s\n' "skopeo copy --preserve-digests (push)" "$(mibs skopeo-push)"
printf '  %-46s %s MiB/s\n' "wrun pull --insecure (empty WRUN_HOME)" "$(mibs wrun-pull)"
printf '  %-46s %s MiB/s\n' "skopeo copy (pull into an empty OCI layout)" "$(mibs skopeo-pull)"
push_ratio=$(ratio "$(median_mibs wrun-push)" "$(median_mibs skopeo-push)")
pull_ratio=$(ratio "$(median_mibs wrun-pull)" "$(median_mibs skopeo-pull)")
echo "  ratio push MiB/s wrun / skopeo = ${push_ratio}x (higher is better for wrun)"
echo "  ratio pull MiB/s wrun / skopeo = ${pull_ratio}x (higher is better for wrun)"
SUMMARY+=("push MiB/s wrun / skopeo: ${push_ratio}x")
SUMMARY+=("pull MiB/s wrun / skopeo: ${pull_ratio}x")

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "summary (start-up: lower is better; push/pull: higher is better):"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
