#!/usr/bin/env bash
# CGI output through `wrun serve` (issue 10): the `cgi` guest's `/bytes?mib=N`
# writes an N MiB body 64 KiB at a time, and curl reads it over 127.0.0.1.
# Baselines in the same run: the same bytes as a static file from a native
# server (python3 -m http.server, which copies the file in 64 KiB reads), and,
# when WRUN_BEFORE names another wrun binary (e.g. a build of the commit before
# streaming, which buffered up to 64 MiB per response), that binary serving the
# same config. For each: MiB/s (median of the rounds) and the server's VmHWM.
# Then a BIG_MIB body through wrun alone, which the buffered version refused.
#
# Knobs (environment): MIB (default 48, below the old 64 MiB cap), BIG_MIB
# (default 1024), ROUNDS (default 5), WRUN_BEFORE (default: none).
source "$(dirname "$0")/serve.sh"

MIB="${MIB:-48}"
BIG_MIB="${BIG_MIB:-1024}"
ROUNDS="${ROUNDS:-5}"
CGI_WASM="$P1/cgi.wasm"
DIR="$WORK/serve-cgi"; mkdir -p "$DIR/static"
cat >"$DIR/serve.toml" <<EOF
version = 1
[tenants.t]
limits = { memory = "16m", timeout = "10m" }
[tenants.t.functions.cgi]
wasm = "$CGI_WASM"
routes = ["/cgi"]
EOF
# The guest's pattern, so both sides send the same bytes.
python3 - "$DIR/static/body" "$MIB" <<'EOF'
import sys
chunk = b"0123456789abcdef" * 4096
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2]) * 16):
        f.write(chunk)
EOF

rm -f "$LOGS"/cgi-*.runs
declare -A URL
port=$(free_port)
start_server wrun "wrun serve, CGI /bytes" "$port" \
    "$WRUN" serve --config "$DIR/serve.toml" --listen "127.0.0.1:$port"
URL[wrun]="http://127.0.0.1:$port/cgi/bytes?mib=$MIB"
servers=(wrun)
if [ -n "${WRUN_BEFORE:-}" ]; then
    port=$(free_port)
    start_server before "$(basename "$WRUN_BEFORE"), CGI /bytes" "$port" \
        "$WRUN_BEFORE" serve --config "$DIR/serve.toml" --listen "127.0.0.1:$port"
    URL[before]="http://127.0.0.1:$port/cgi/bytes?mib=$MIB"
    servers+=(before)
fi
port=$(free_port)
start_server static "python3 -m http.server, static file" "$port" \
    python3 -m http.server --bind 127.0.0.1 --directory "$DIR/static" "$port"
URL[static]="http://127.0.0.1:$port/body"
servers+=(static)

# fetch NAME URL: "MiB/s bytes" of one curl run.
fetch() {
    curl -sS -o /dev/null -w '%{speed_download} %{size_download}\n' "$2" |
        awk '{printf "%.1f %d\n", $1 / 1048576, $2}'
}
for s in "${servers[@]}"; do fetch "$s" "${URL[$s]}" >/dev/null; done   # warm-up
for round in $(seq "$ROUNDS"); do
    for s in "${servers[@]}"; do fetch "$s" "${URL[$s]}" >>"$LOGS/cgi-$s.runs"; done
done
cmed() { sort -g "$LOGS/cgi-$1.runs" | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

echo "a $MIB MiB body, curl over 127.0.0.1, median of $ROUNDS rounds:"
printf '  %-44s %9s %9s %9s\n' server MiB/s bytes "HWM MiB"
for s in "${servers[@]}"; do
    read -r hwm _ _ <<<"$(tree_mem "$s")"
    printf '  %-44s %9s %9s %9s\n' "${LABEL[$s]}" "$(cmed "$s")" \
        "$(awk 'NR==1{print $2}' "$LOGS/cgi-$s.runs")" "$hwm"
done
echo "  wrun / static file = $(ratio "$(cmed wrun)" "$(cmed static)")x"
[ -z "${WRUN_BEFORE:-}" ] || echo "  wrun / before = $(ratio "$(cmed wrun)" "$(cmed before)")x"

read -r big_speed big_bytes <<<"$(fetch wrun "http://127.0.0.1:${PORT[wrun]}/cgi/bytes?mib=$BIG_MIB")"
read -r hwm _ _ <<<"$(tree_mem wrun)"
echo "a $BIG_MIB MiB body through wrun (memory limit 16m): $big_speed MiB/s, $big_bytes bytes; wrun VmHWM $hwm MiB"
echo "environment: RUST_BACKTRACE and friends unset (common.sh); 127.0.0.1 only; curl and the"
echo "  servers share the machine's $(nproc) cores. HWM = the server's VmHWM after all its rounds."
