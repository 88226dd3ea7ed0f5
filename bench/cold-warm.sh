#!/usr/bin/env bash
# Cold start (compile, then run) vs warm start (cache hit) of a large module,
# with the wasmtime CLI 48's warm start (its default cache) as the peer.
source "$(dirname "$0")/common.sh"

FUNCS="${FUNCS:-60000}"
wat="$WORK/large.wat"; app="$WORK/large.wasm"
if [ ! -f "$app" ]; then
    python3 "$ROOT/bench/gen-large-module.py" "$FUNCS" "$wat"
    wat2wasm "$wat" -o "$app"
fi
size_mib=$(python3 -c 'import os,sys; print("%.1f" % (os.path.getsize(sys.argv[1]) / 2**20))' "$app")
cwasm="$WORK/large.cwasm"
"$WASMTIME" compile "$app" -o "$cwasm"
"$WASMTIME" run "$app" >/dev/null   # warm wasmtime's cache

json="$WORK/cold-warm.json"
hyperfine -N --runs "${COLD_RUNS:-3}" --prepare "rm -rf $WRUN_HOME/cache" \
    --export-json "$WORK/cold.json" "$WRUN run $app" >/dev/null
"$WRUN" run "$app" >/dev/null       # warm wrun's cache
hyperfine -N --warmup 3 --runs "${WARM_RUNS:-30}" --export-json "$json" \
    "$WRUN run $app" \
    "$WASMTIME run $app" \
    "$WASMTIME run --allow-precompiled $cwasm" >/dev/null
cold=$(mean_ms "$WORK/cold.json" 0)
warm=$(mean_ms "$json" 0); wt=$(mean_ms "$json" 1); wtc=$(mean_ms "$json" 2)
echo "large module ($size_mib MiB, $FUNCS functions):"
printf '  %-38s %10s ms\n' "wrun run, cold (compile + cache)" "$cold"
printf '  %-38s %10s ms\n' "wrun run, warm (cache hit)" "$warm"
printf '  %-38s %10s ms\n' "wasmtime run, warm (default cache)" "$wt"
printf '  %-38s %10s ms\n' "wasmtime run --allow-precompiled" "$wtc"
echo "  ratio wrun warm / wrun cold          = $(ratio "$warm" "$cold")x"
echo "  ratio wrun warm / wasmtime warm      = $(ratio "$warm" "$wt")x"
echo "  ratio wrun warm / wasmtime .cwasm    = $(ratio "$warm" "$wtc")x"
