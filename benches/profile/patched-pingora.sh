#!/usr/bin/env bash
# Builds posthook and the load bench against Pingora 0.9.1 with
# benches/profile/pingora-core-0.9.1-coalesce-writes.patch applied, in a copy of this tree and
# its own target directory (the normal build is left alone), then prints the command that runs
# the patched binaries side by side with the normal ones (scenarios B' and E' of the load bench).
#
#   benches/profile/patched-pingora.sh            # build only
#   benches/profile/patched-pingora.sh --run ARGS # build, then run the load bench with ARGS
#
# Needs what `cargo build --release` needs, and `patch`. The first build takes several minutes
# (every dependency, fat LTO); later ones reuse $PATCHED_TARGET (default /tmp/posthook-target-patched).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PATCH=$ROOT/benches/profile/pingora-core-0.9.1-coalesce-writes.patch
WORK=${PATCHED_WORK:-/tmp/posthook-patched-pingora}
MAIN_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=${PATCHED_TARGET:-/tmp/posthook-target-patched}
command -v patch >/dev/null || { echo "needs patch (apt-get install -y patch)"; exit 1; }

cd "$ROOT"
cargo fetch --quiet
SRC=$(cargo metadata --format-version 1 --locked 2>/dev/null \
  | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "pingora-core" and p["version"] == "0.9.1"))')
SRC=$(dirname "$SRC")

rm -rf "$WORK"; mkdir -p "$WORK/posthook"
cp -r "$SRC" "$WORK/pingora-core"
(cd "$WORK/pingora-core" && patch -p1 --quiet < "$PATCH")
git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK/posthook")
cp "$ROOT/Cargo.lock" "$WORK/posthook/"
printf '\n[patch.crates-io]\npingora-core = { path = "%s" }\n' "$WORK/pingora-core" >> "$WORK/posthook/Cargo.toml"

cd "$WORK/posthook"
cargo build --release --quiet
cargo bench --bench load --no-run --quiet 2>/dev/null
POSTHOOK_PATCHED_BIN=$CARGO_TARGET_DIR/release/posthook
BARE_PATCHED_BIN=$(ls -t "$CARGO_TARGET_DIR"/release/deps/load-* | grep -v '\.d$' | head -1)
echo "patched posthook:  $POSTHOOK_PATCHED_BIN"
echo "patched bare proxy: $BARE_PATCHED_BIN"
CMD="POSTHOOK_PATCHED_BIN=$POSTHOOK_PATCHED_BIN BARE_PATCHED_BIN=$BARE_PATCHED_BIN cargo bench --bench load"
if [ "${1:-}" = "--run" ]; then
  shift
  cd "$ROOT"
  POSTHOOK_PATCHED_BIN=$POSTHOOK_PATCHED_BIN BARE_PATCHED_BIN=$BARE_PATCHED_BIN \
    CARGO_TARGET_DIR=$MAIN_TARGET cargo bench --bench load -- "$@"
else
  echo "run side by side (from $ROOT):"
  echo "  $CMD -- --only A,B,D,E,B\\',E\\'"
fi
