#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: posthook without hooks (B), posthook
# with one hook that every post triggers (C: proxy + delivery + reply), and the bare Pingora
# proxy of the load bench (E). Instruction counts do not depend on what else the machine is
# doing, so this compares B with E more steadily than a timed run on a shared box can.
#
#   benches/profile/callgrind.sh [SECONDS]        # default 10 s of load per variant
#
# Needs valgrind, wrk and nginx (apt-get install -y valgrind wrk nginx) and the release
# builds: `cargo build --release && cargo bench --bench load --no-run`. nginx plays Mattermost
# (and the webhook sink) on 127.0.0.1:18180-18183; the proxies listen on 18190-18192.
# Everything stays on loopback. Results: one line per variant, and the callgrind files in
# $OUT (default /tmp/posthook-callgrind) for callgrind_annotate.
set -euo pipefail
DUR=${1:-10}
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
wrk_script() { # $1: the message
  cat <<LUA
wrk.method = "POST"
wrk.body = '{"channel_id":"4yfd8he6tbrs5mnwawsde7ad5w","message":"$1","root_id":"","file_ids":[],"props":{},"metadata":{},"pending_post_id":"q8ieq4xmmtnc9p6yqdnuu5gg1a:1732780799999","create_at":0,"user_id":"q8ieq4xmmtnc9p6yqdnuu5gg1a","reply_count":0}'
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
measure() { # $1: name, $2: port, $3: wrk script, rest: command
  local name=$1 port=$2 script=$3; shift 3
  sleep 86399 2>/dev/null | valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$name.%p" "$@" > "$name.log" 2>&1 &
  local pid
  for _ in $(seq 1 60); do
    curl -s -o /dev/null -X POST -d '{}' "127.0.0.1:$port/api/v4/posts" && break; sleep 0.5
  done
  pid=$(pgrep -f "callgrind-out-file=$OUT/cg.$name" | head -1)
  wrk -t1 -c10 -d2s -s "$script" "http://127.0.0.1:$port/api/v4/posts" > /dev/null   # warm-up
  wait_drained "$name.log"
  callgrind_control -z "$pid" > /dev/null 2>&1
  local before n ir
  before=$(replies "$name.log")
  n=$(wrk -t1 -c10 -d"${DUR}"s -s "$script" "http://127.0.0.1:$port/api/v4/posts" | awk '/requests in/{print $1}')
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
measure "E-bare-pingora" 18192 plain.lua "$BENCH" --serve-bare-proxy 127.0.0.1:18192 127.0.0.1:18180 1
measure "B-posthook-no-hooks" 18190 plain.lua "$POSTHOOK" -c b.yaml
measure "C-posthook-every-post-matching" 18191 match.lua "$POSTHOOK" -c c.yaml
