#!/usr/bin/env bash
# Sequential write then read of 256 MiB through a volume (1 MiB writes and
# reads, the file synced after writing): the filetool guest under wrun and
# under wasmtime (--dir), and native dd with the same block size.
source "$(dirname "$0")/common.sh"

MIB="${MIB:-256}"
data="$WORK/volume"
mkdir -p "$data"
for target in p1 p2; do
    if [ "$target" = p1 ]; then tool="$P1/filetool.wasm"; else tool="$P2/filetool.wasm"; fi
    "$WRUN" run "$tool" pwd >/dev/null   # warm the cache
    "$WASMTIME" run "$tool" pwd >/dev/null
    json="$WORK/volume-write-$target.json"
    hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$json" \
        "$WRUN run -v $data:/data $tool fill /data/f $MIB" \
        "$WASMTIME run --dir $data::/data $tool fill /data/f $MIB" \
        "dd if=/dev/zero of=$data/f bs=1M count=$MIB conv=fsync status=none" >/dev/null
    wrun_w=$(mean_ms "$json" 0); wt_w=$(mean_ms "$json" 1); dd_w=$(mean_ms "$json" 2)
    json="$WORK/volume-read-$target.json"
    hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$json" \
        "$WRUN run -v $data:/data:ro $tool drain /data/f" \
        "$WASMTIME run --dir $data::/data $tool drain /data/f" \
        "dd if=$data/f of=/dev/null bs=1M status=none" >/dev/null
    wrun_r=$(mean_ms "$json" 0); wt_r=$(mean_ms "$json" 1); dd_r=$(mean_ms "$json" 2)
    echo "$MIB MiB through a volume, filetool $target (1 MiB blocks; page cache warm for reads):"
    printf '  %-10s %10s %10s %10s\n' "" "wrun" "wasmtime" "dd"
    printf '  %-10s %10s %10s %10s   ms\n' "write" "$wrun_w" "$wt_w" "$dd_w"
    printf '  %-10s %10s %10s %10s   ms\n' "read" "$wrun_r" "$wt_r" "$dd_r"
    echo "  write ratio wrun / wasmtime = $(ratio "$wrun_w" "$wt_w")x, wrun / dd = $(ratio "$wrun_w" "$dd_w")x"
    echo "  read  ratio wrun / wasmtime = $(ratio "$wrun_r" "$wt_r")x, wrun / dd = $(ratio "$wrun_r" "$dd_r")x"
done
rm -f "$data/f"
