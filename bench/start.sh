#!/usr/bin/env bash
# Start-up of a hello app with a warm cache: wrun vs the wasmtime CLI 48 (its
# default cache, and a precompiled .cwasm) vs the same hello compiled natively.
source "$(dirname "$0")/common.sh"

RUNS="${RUNS:-300}"
for kind in component module; do
    if [ "$kind" = component ]; then app="$P2/hello.wasm"; else app="$P1/hello.wasm"; fi
    cwasm="$WORK/hello-$kind.cwasm"
    "$WASMTIME" compile "$app" -o "$cwasm"
    # Warm both caches.
    "$WRUN" run "$app" >/dev/null
    "$WASMTIME" run "$app" >/dev/null
    json="$WORK/start-$kind.json"
    hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$json" \
        "$WRUN run $app" \
        "$WASMTIME run $app" \
        "$WASMTIME run --allow-precompiled $cwasm" \
        "$NATIVE/hello" >/dev/null
    wrun=$(mean_ms "$json" 0); wt=$(mean_ms "$json" 1); wtc=$(mean_ms "$json" 2); native=$(mean_ms "$json" 3)
    wrun_rss=$(peak_rss_kib "$WRUN" run "$app")
    wt_rss=$(peak_rss_kib "$WASMTIME" run "$app")
    echo "hello $kind, warm start (mean of $RUNS runs):"
    printf '  %-34s %7s ms  peak RSS %6s KiB\n' "wrun run" "$wrun" "$wrun_rss"
    printf '  %-34s %7s ms  peak RSS %6s KiB\n' "wasmtime run (default cache)" "$wt" "$wt_rss"
    printf '  %-34s %7s ms\n' "wasmtime run --allow-precompiled" "$wtc"
    printf '  %-34s %7s ms\n' "native hello" "$native"
    echo "  ratio wrun / wasmtime run            = $(ratio "$wrun" "$wt")x (goal <= 0.6x)"
    echo "  ratio wrun / wasmtime precompiled    = $(ratio "$wrun" "$wtc")x"
    echo "  ratio wrun / native                  = $(ratio "$wrun" "$native")x"
    echo "  ratio peak RSS wrun / wasmtime run   = $(ratio "$wrun_rss" "$wt_rss")x (goal <= 1x)"
done
