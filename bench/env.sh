#!/usr/bin/env bash
# `wrun run --env-file` with 200,000 variables (issue 10): the cost of
# reading, parsing and merging them, against the same run without them.
# With WRUN_BASE=path/to/an/older/wrun, that binary is timed too (one run:
# before issue 10 the merge was quadratic and took minutes).
source "$(dirname "$0")/common.sh"

RUNS="${RUNS:-10}"
VARS="${VARS:-200000}"
app="$P1/hello.wasm"
envfile="$WORK/vars.env"
python3 -c 'import sys
n = int(sys.argv[1])
with open(sys.argv[2], "w") as f:
    for i in range(n):
        f.write("V%06d=value-%d\n" % (i, i))' "$VARS" "$envfile"
"$WRUN" run "$app" >/dev/null
json="$WORK/env.json"
hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$json" \
    "$WRUN run --env-file $envfile $app" \
    "$WRUN run $app" >/dev/null
with=$(mean_ms "$json" 0); without=$(mean_ms "$json" 1)
echo "wrun run hello, warm cache (mean of $RUNS runs):"
printf '  %-44s %9s ms\n' "with --env-file of $VARS variables" "$with"
printf '  %-44s %9s ms\n' "without" "$without"
echo "  ratio with / without = $(ratio "$with" "$without")x"
if [ -n "${WRUN_BASE:-}" ]; then
    "$WRUN_BASE" run "$app" >/dev/null
    start=$(date +%s.%N)
    "$WRUN_BASE" run --env-file "$envfile" "$app" >/dev/null
    end=$(date +%s.%N)
    base=$(python3 -c "print('%.1f' % ((float('$end') - float('$start')) * 1000))")
    printf '  %-44s %9s ms (one run)\n' "$(basename "$WRUN_BASE"), with the same file" "$base"
    echo "  ratio before / after = $(ratio "$base" "$with")x"
fi
