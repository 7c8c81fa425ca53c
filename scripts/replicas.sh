#!/usr/bin/env bash
# Three `bitnet serve` replicas behind nginx on loopback (deploy/nginx/bitnet.conf, ports 8080-8083).
# The load benchmark streams completions through nginx; a few seconds in, one replica gets SIGTERM.
# It drains (finishes its streams, refuses new connections) and exits 0, nginx sends new requests to
# the others, and the benchmark reports failed and truncated requests: both must be 0.
#
#   scripts/replicas.sh                    # the demo model; MODEL=/tmp/2b4t.gguf for another
#
# Needs nginx (Debian: apt-get install nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-models/bitnet-demo-i2_s.gguf}
streams=${STREAMS:-8}
requests=${REQUESTS:-40}
tokens=${TOKENS:-128}
kill_after=${KILL_AFTER:-2}
command -v nginx > /dev/null || { echo "nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }
cargo build --release -q -p bitnet-cli -p bitnet-server --example load_bench
bin=target/release/bitnet
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2> /dev/null || true
    wait 2> /dev/null || true
}
trap cleanup EXIT

for i in 1 2 3; do
    "$bin" serve -m "$model" --host 127.0.0.1 --port 808$i -t 1 --parallel 4 --drain-timeout 60 \
        > "$work/replica$i.log" 2>&1 &
    pids+=($!)
done
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
    log_format upstream '\$upstream_addr \$status';
    access_log $work/access.log upstream;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    include $PWD/deploy/nginx/bitnet.conf;
}
CONF
nginx -p "$work" -c "$work/nginx.conf"
for i in 1 2 3; do
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:808$i/health" > /dev/null && break
        kill -0 "${pids[$((i - 1))]}" 2> /dev/null || { cat "$work/replica$i.log" >&2; exit 1; }
        sleep 0.2
    done
done
echo "3 replicas and nginx up; $streams streams x $requests requests x $tokens tokens through nginx" >&2

victim=${pids[1]}
(sleep "$kill_after" && echo "SIGTERM to replica 2 (pid $victim) at ${kill_after} s" >&2 && kill -TERM "$victim") &
status=0
target/release/examples/load_bench --url http://127.0.0.1:8080 --concurrency "$streams" \
    --requests "$requests" -n "$tokens" || status=$?
wait "$victim" && echo "replica 2 exited 0 after draining" >&2 || { echo "replica 2 exited with $?" >&2; status=1; }
grep -h "shutting down\|drain timeout" "$work/replica2.log" >&2 || true
echo "requests per replica (nginx access log; 'a, b' = refused by a, sent on to b):" >&2
sort "$work/access.log" | uniq -c | sort -rn >&2
for i in 1 3; do
    curl -sf "http://127.0.0.1:808$i/health" > /dev/null || { echo "replica $i is not healthy" >&2; status=1; }
done
exit $status
