#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: posthook without hooks (B), posthook
# with one hook that every post triggers (C: proxy + delivery + reply), and the bare Pingora
# proxy of the load bench (E). Instruction counts do not depend on what else the machine is
# doing, so this compares B with E more steadily than a timed run on a shared box can.
#
#   benches/profile/callgrind.sh [SECONDS] [posts|edits|all]   # default: 10 s per variant, posts
#
# `edits` measures edits (`PUT /api/v4/posts/{id}/patch`, answered 200 with the post) instead:
# the bare proxy (E-edit), posthook whose only hook fires on new posts (B-edit-posted-hook:
# edits are not looked at), posthook with an `edited` hook that the edit's message does not
# match (B-edit-edited-hook-miss: the request body is copied and read, the 200 is not), and
# with one it matches (C-edit-matching: the 200 copied, delivery, reply).
#
# Needs valgrind, wrk and nginx (apt-get install -y valgrind wrk nginx) and the release
# builds: `cargo build --release && cargo bench --bench load --no-run`. nginx plays Mattermost
# (and the webhook sink) on 127.0.0.1:18180-18183; the proxies listen on 18190-18192.
# Everything stays on loopback. Results: one line per variant, and the callgrind files in
# $OUT (default /tmp/posthook-callgrind) for callgrind_annotate.
set -euo pipefail
DUR=${1:-10}
SET=${2:-posts}
TARGET=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}
POSTHOOK=${POSTHOOK:-$TARGET/release/posthook}   # POSTHOOK=/path/to/posthook compares another build
BENCH=$(ls -t "$TARGET"/release/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
OUT=${OUT:-/tmp/posthook-callgrind}
for tool in valgrind callgrind_control callgrind_annotate wrk nginx; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y valgrind wrk nginx)"; exit 1; }
done
[ -x "$POSTHOOK" ] || { echo "no $POSTHOOK: cargo build --release"; exit 1; }
[ -n "$BENCH" ] || { echo "no load bench binary: cargo bench --bench load --no-run"; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"/nginx
cd "$OUT"

POST='{"id":"$request_id","create_at":1732780800000,"update_at":1732780800000,"edit_at":0,"delete_at":0,"is_pinned":false,"user_id":"q8ieq4xmmtnc9p6yqdnuu5gg1a","channel_id":"4yfd8he6tbrs5mnwawsde7ad5w","root_id":"","original_id":"","message":"MESSAGE","type":"","props":{},"hashtags":"","file_ids":[],"pending_post_id":"q8ieq4xmmtnc9p6yqdnuu5gg1a:1732780799999","reply_count":0,"last_reply_at":0,"participants":null,"metadata":{}}'
# An edit's answer: the post with an edit_at. Its id is new on every request (as the posts'),
# so that each (id, edit_at) is a new edit.
EDITED=${POST/\"edit_at\":0/\"edit_at\":1732780900000}
cat > nginx.conf <<NGINX
worker_processes 1;
daemon off;
error_log $OUT/nginx/error.log warn;
pid $OUT/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:18180;
    location = /api/v4/posts { default_type application/json; return 201 '${POST/MESSAGE/#build finished on staging}'; }
    location /api/v4/posts/ { default_type application/json; return 200 '${EDITED/MESSAGE/#build finished on staging}'; }
    location /api/v4/channels/ { default_type application/json; return 200 '{"id":"4yfd8he6tbrs5mnwawsde7ad5w","team_id":"tm8ieq4xmmtnc9p6yqdnuu5gg1","type":"O","display_name":"Town","name":"town-square"}'; }
    location /api/v4/teams/ { default_type application/json; return 200 '{"id":"tm8ieq4xmmtnc9p6yqdnuu5gg1","name":"eng","display_name":"Eng"}'; }
    location /api/v4/users/ { default_type application/json; return 200 '{"id":"q8ieq4xmmtnc9p6yqdnuu5gg1a","username":"alice"}'; }
  }
  server {
    listen 127.0.0.1:18183;
    location / { default_type application/json; return 200 '{"text":"ok","response_type":"comment"}'; }
  }
}
NGINX
wrk_script() { # $1: the message, $2: the method (default POST), $3: the body (default a new post's)
  local body=${3:-}
  [ -n "$body" ] || body='{"channel_id":"4yfd8he6tbrs5mnwawsde7ad5w","message":"'"$1"'","root_id":"","file_ids":[],"props":{},"metadata":{},"pending_post_id":"q8ieq4xmmtnc9p6yqdnuu5gg1a:1732780799999","create_at":0,"user_id":"q8ieq4xmmtnc9p6yqdnuu5gg1a","reply_count":0}'
  cat <<LUA
wrk.method = "${2:-POST}"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer abcdefghijklmnopqrstuvwxyz"
wrk.headers["X-Requested-With"] = "XMLHttpRequest"
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
wrk.headers["Accept"] = "*/*"
wrk.headers["Accept-Language"] = "en-US,en;q=0.9"
wrk.headers["Cookie"] = "MMAUTHTOKEN=abcdefghijklmnopqrstuvwxyz; MMUSERID=q8ieq4xmmtnc9p6yqdnuu5gg1a; MMCSRF=zzzzzzzzzzzzzzzzzzzzzzzzzz"
wrk.headers["X-CSRF-Token"] = "zzzzzzzzzzzzzzzzzzzzzzzzzz"
LUA
}
wrk_script "deploy finished on staging" > plain.lua
wrk_script "#build finished on staging" > match.lua
# The webapp's edit: a patch with the new message (and the post's id).
wrk_script "" PUT '{"id":"4xp9fdt8zjbqfy5pnkb8bq7xyo","message":"deploy finished on staging"}' > edit-plain.lua
wrk_script "" PUT '{"id":"4xp9fdt8zjbqfy5pnkb8bq7xyo","message":"#build finished on staging"}' > edit-match.lua
EDIT_PATH=/api/v4/posts/4xp9fdt8zjbqfy5pnkb8bq7xyo/patch
config() { # $1: listen port, $2: hooks
  cat <<YAML
listen: "127.0.0.1:$1"
upstream: "http://127.0.0.1:18180"
bot_token: "bottoken"
settings:
  allowed_untrusted_internal_connections: ["127.0.0.1"]
server:
  threads: 1
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  upstream_keepalive_pool_size: 128
$2
YAML
}
config 18190 "hooks: []" > b.yaml
config 18191 'hooks:
  - trigger_words: ["#build"]
    callback_urls: ["http://127.0.0.1:18183/hook"]
    token: "hooktoken0000000000000001"' > c.yaml
config 18193 'hooks:
  - trigger_words: ["#build"]
    events: [edited]
    callback_urls: ["http://127.0.0.1:18183/hook"]
    token: "hooktoken0000000000000001"' > d.yaml

nginx -p "$OUT/nginx" -c "$OUT/nginx.conf" &
NGINX_PID=$!
cleanup() {
  set +e
  kill "$NGINX_PID" 2>/dev/null
  pkill -f "callgrind-out-file=$OUT" 2>/dev/null
  pkill -f "sleep 86399" 2>/dev/null   # the stdin holders of the processes under valgrind
  return 0
}
trap cleanup EXIT
sleep 0.5

replies() { grep -c "outcome=posted" "$1" || true; }
wait_drained() { # $1: log; waits until the reply count stops moving
  local prev=-1 now
  while now=$(replies "$1"); [ "$now" != "$prev" ]; do prev=$now; sleep 3; done
}
measure() { # $1: name, $2: port, $3: wrk script, $4: path, rest: command
  local name=$1 port=$2 script=$3 path=$4; shift 4
  sleep 86399 2>/dev/null | valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$name.%p" "$@" > "$name.log" 2>&1 &
  local pid
  for _ in $(seq 1 60); do
    curl -s -o /dev/null -X POST -d '{}' "127.0.0.1:$port/api/v4/posts" && break; sleep 0.5
  done
  pid=$(pgrep -f "callgrind-out-file=$OUT/cg.$name" | head -1)
  wrk -t1 -c10 -d2s -s "$script" "http://127.0.0.1:$port$path" > /dev/null   # warm-up
  wait_drained "$name.log"
  callgrind_control -z "$pid" > /dev/null 2>&1
  local before n ir
  before=$(replies "$name.log")
  n=$(wrk -t1 -c10 -d"${DUR}"s -s "$script" "http://127.0.0.1:$port$path" | awk '/requests in/{print $1}')
  wait_drained "$name.log"
  callgrind_control -d "$pid" > /dev/null 2>&1
  sleep 1
  ir=$(callgrind_annotate "$OUT/cg.$name.$pid.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
  printf '%-34s requests %6d  replies %6d  instructions per request %8d\n' \
    "$name" "$n" "$(( $(replies "$name.log") - before ))" "$(( ir / n ))"
  kill "$pid" 2>/dev/null || true
  pkill -f "callgrind-out-file=$OUT/cg.$name" 2>/dev/null || true
  sleep 1
}
P=/api/v4/posts
if [ "$SET" = posts ] || [ "$SET" = all ]; then
  measure "E-bare-pingora" 18192 plain.lua $P "$BENCH" --serve-bare-proxy 127.0.0.1:18192 127.0.0.1:18180 1
  measure "B-posthook-no-hooks" 18190 plain.lua $P "$POSTHOOK" -c b.yaml
  measure "C-posthook-every-post-matching" 18191 match.lua $P "$POSTHOOK" -c c.yaml
fi
if [ "$SET" = edits ] || [ "$SET" = all ]; then
  measure "E-edit-bare-pingora" 18192 edit-plain.lua $EDIT_PATH "$BENCH" --serve-bare-proxy 127.0.0.1:18192 127.0.0.1:18180 1
  measure "B-edit-posted-hook" 18191 edit-plain.lua $EDIT_PATH "$POSTHOOK" -c c.yaml
  measure "B-edit-edited-hook-miss" 18193 edit-plain.lua $EDIT_PATH "$POSTHOOK" -c d.yaml
  measure "C-edit-matching" 18193 edit-match.lua $EDIT_PATH "$POSTHOOK" -c d.yaml
fi
