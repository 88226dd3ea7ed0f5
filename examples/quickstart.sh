#!/usr/bin/env bash
# Sets up a fresh machine and runs a bundled app under wrun: installs the wasm
# targets, builds wrun and the guestbook example, then runs it with one
# directory mapped in, exactly as `wrun app.wasm -v ./data:/data` is typed.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

rustup target add wasm32-wasip1 wasm32-wasip2
# What the tests start as real parts: a registry (docker-registry) and skopeo.
.ci/install-packages
cargo build --release --locked --bin wrun
cargo build --release --locked --manifest-path examples/guestbook/Cargo.toml --target wasm32-wasip2

wrun="$PWD/target/release/wrun"
app="$PWD/examples/guestbook/target/wasm32-wasip2/release/guestbook.wasm"
work="$PWD/target/quickstart"
mkdir -p "$work/data"
cd "$work"

run() {
    printf '$ wrun guestbook.wasm'; printf ' %q' "$@"; echo
    "$wrun" "$app" "$@"
}
run -v ./data:/data -- sign "$(id -un)" "first visit"
run -v ./data:/data -e GREETING=hi -- look
run -v ./data:/data:ro -- sign intruder "tries to write"  || echo "(refused: the volume is read-only; exit code $?)"
run -v ./data:/data -- read
echo "the guestbook lives on the host at $work/data/guestbook.txt"

# The same app as an OCI image: built reproducibly from guestbook/wrun.toml,
# run by name with the image's default arguments and environment.
echo '$ wrun build -t guestbook:1 examples/guestbook'
"$wrun" build -t guestbook:1 "$root/examples/guestbook" >/dev/null
"$wrun" images guestbook
echo '$ wrun run -v ./data:/data guestbook:1'
"$wrun" run -v ./data:/data guestbook:1
