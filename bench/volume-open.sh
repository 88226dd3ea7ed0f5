#!/usr/bin/env bash
# The cost of opening a file through a volume, measured inside the guest
# (filetool openloop: open and close one file N times): under wasmtime
# (--dir), under wrun with a plain volume, and under wrun with a read-only
# volume nested in the read-write one the path goes through (`/app/./cfg/f`,
# which wrun resolves itself, one component at a time, see host-api/src/fs).
# Also the same open by the nested volume's own spelling (`/app/cfg/f`, which
# wasi-libc sends to the inner volume directly).
source "$(dirname "$0")/common.sh"

N="${N:-20000}"
data="$WORK/volume-open"
rm -rf "$data"
mkdir -p "$data/app/cfg/deep/er"
echo x > "$data/app/cfg/deep/er/f"
echo x > "$data/app/f"
each() { sed -n 's/.*, \([0-9]*\) ns each/\1/p'; }
for target in p1 p2; do
    if [ "$target" = p1 ]; then tool="$P1/filetool.wasm"; else tool="$P2/filetool.wasm"; fi
    outer="$data/app:/app"
    inner="$data/app/cfg:/app/cfg:ro"
    best() {
        local b=""
        for _ in 1 2 3 4 5; do
            v=$("$@" | each)
            if [ -z "$b" ] || [ "$v" -lt "$b" ]; then b=$v; fi
        done
        echo "$b"
    }
    wt=$(best "$WASMTIME" run --dir "$data/app::/app" "$tool" openloop /app/cfg/deep/er/f "$N")
    plain=$(best "$WRUN" run -v "$outer" "$tool" openloop /app/cfg/deep/er/f "$N")
    direct=$(best "$WRUN" run -v "$outer" -v "$inner" "$tool" openloop /app/cfg/deep/er/f "$N")
    walked=$(best "$WRUN" run -v "$outer" -v "$inner" "$tool" openloop /app/./cfg/deep/er/f "$N")
    echo "open+close of a file 4 levels deep, filetool $target, best of 5 runs of $N opens, ns per open:"
    printf '  %-44s %8s\n' "wasmtime run --dir" "$wt"
    printf '  %-44s %8s   %sx wasmtime\n' "wrun, plain volume (budget counted)" "$plain" "$(ratio "$plain" "$wt")"
    printf '  %-44s %8s   %sx plain\n' "wrun, nested volumes, inner spelling" "$direct" "$(ratio "$direct" "$plain")"
    printf '  %-44s %8s   %sx plain\n' "wrun, nested volumes, walked (/app/./cfg)" "$walked" "$(ratio "$walked" "$plain")"
done
