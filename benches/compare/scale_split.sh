#!/usr/bin/env bash
# Where the scale hit's extra time goes, without host drift in the way: one gateway process with
# SCALE_TENANTS tenants and a cache filled with ENTRIES distinct entries, then ROUNDS rounds of
# two wrk runs on that same process, one spread over every entry (the harness's scale-hit) and
# one on a single entry (the hit), each reported as user and system CPU µs per request from
# /proc/<pid>/stat. A gap in user time with the same tenants, the same process and the same
# instructions (callgrind: +3 %) is the cost of reaching cold entries.
#
#   bash benches/compare/scale_split.sh          # after `cargo build --release`
#
# Environment (defaults in brackets): BIN [target/release/etelecom-gateway], ENTRIES [100000],
# SCALE_TENANTS [1000], ROUNDS [3], DURATION [5] seconds per run, CONNS [32], PROXY_CPU [1],
# LOAD_CPU [0]. Needs wrk, curl and python3; only 127.0.0.1 is used, and every process it
# starts is stopped at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release/etelecom-gateway}
ENTRIES=${ENTRIES:-100000} SCALE_TENANTS=${SCALE_TENANTS:-1000} ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5} CONNS=${CONNS:-32} PROXY_CPU=${PROXY_CPU:-1} LOAD_CPU=${LOAD_CPU:-0}
[[ -x $BIN ]] || {
    echo "no gateway binary at $BIN: run cargo build --release" >&2
    exit 1
}
command -v wrk >/dev/null || {
    echo "wrk is not installed (apt-get install wrk)" >&2
    exit 1
}

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ready() { # pid url body: up to 10 s
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$1" 2>/dev/null || {
            echo "a process exited during start-up" >&2
            exit 1
        }
        curl -sf -o /dev/null --max-time 1 -X POST -H 'x-tenant-id: acme' --data-raw "$3" "$2" && return 0
        sleep 0.1
    done
    echo "not ready after 10 s: $2" >&2
    exit 1
}

KEY=$(sed -n '/^pub const DEMO_ACME_API_KEY/,/;/p' "$ROOT/src/mock.rs" | grep -o '"[^"]*"' | tr -d '"')
MOCK_PORT=$(free_port)
PORT=$(free_port)
RUST_LOG=warn taskset -c "$LOAD_CPU" "$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 &
PIDS+=($!)
printf '%s' "$KEY" >"$TMP/acme.api"
chmod 600 "$TMP/acme.api"
cat >"$TMP/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"

[upstream]
base_url = "http://127.0.0.1:$MOCK_PORT"
pool_max_idle_per_host = 256

[rate_limit]
requests_per_second = 1000000
burst = 1000000

[admin]
listen = "127.0.0.1:0"

[cache]
max_bytes = 100663296

[[tenants]]
id = "acme"
api_key = { file = "acme.api" }
EOF
for ((t = 1; t < SCALE_TENANTS; t++)); do
    printf '\n[[tenants]]\nid = "t%d"\napi_key = { file = "acme.api" }\n' "$t"
done >>"$TMP/gateway.toml"

HIT=/v1/shop.Etelecom/GetExtensionInfo
cat >"$TMP/one.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"extension_number":"101"}'
wrk.headers["X-Tenant-Id"] = "acme"
wrk.headers["Content-Type"] = "application/json"
EOF
# Entry n for tenant n % SCALE_TENANTS, as the harness's scale-hit.
cat >"$TMP/spread.lua" <<EOF
wrk.method = "POST"
local n = 0
request = function()
  n = (n + 1) % $ENTRIES
  local t = n % $SCALE_TENANTS
  local tenant = t == 0 and "acme" or ("t" .. t)
  local body = '{"extension_number":"' .. n .. '"}'
  return wrk.format(nil, nil, {["Content-Type"] = "application/json", ["X-Tenant-Id"] = tenant}, body)
end
EOF

RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CPU" "$BIN" serve --config "$TMP/gateway.toml" \
    >/dev/null 2>"$TMP/gateway.log" &
GW=$!
PIDS+=("$GW")
ready "$GW" "http://127.0.0.1:$PORT$HIT" '{"extension_number":"101"}'

wrk_run() { # seconds lua
    timeout --kill-after=5 $(($1 + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$1s" --timeout 5s \
        -s "$2" "http://127.0.0.1:$PORT$HIT" >"$TMP/wrk.out" 2>&1
}
echo "filling the cache: $ENTRIES entries over $SCALE_TENANTS tenants"
wrk_run $((ENTRIES / 10000 + 3)) "$TMP/spread.lua"
calls=$(curl -s --max-time 5 "http://127.0.0.1:$MOCK_PORT/__mock/requests" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')
((calls >= ENTRIES)) || {
    echo "the fill reached only $calls of $ENTRIES entries" >&2
    exit 1
}

HZ=$(getconf CLK_TCK)
measure() { # name lua
    local a b n
    a=$(awk '{print $14, $15}' "/proc/$GW/stat")
    wrk_run "$DURATION" "$2"
    b=$(awk '{print $14, $15}' "/proc/$GW/stat")
    n=$(grep -o '[0-9]* requests in' "$TMP/wrk.out" | awk '{print $1}')
    [[ -n $n && $n -gt 0 ]] || {
        echo "wrk: $(cat "$TMP/wrk.out")" >&2
        exit 1
    }
    grep -q 'Non-2xx' "$TMP/wrk.out" && {
        echo "$1: answers that were not 2xx: $(cat "$TMP/wrk.out")" >&2
        exit 1
    }
    awk -v name="$1" -v a="$a" -v b="$b" -v n="$n" -v hz="$HZ" -v rss="$(awk '/VmRSS/ {print $2}' "/proc/$GW/status")" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        printf "| %s | %d | %.2f | %.2f | %.1f |\n", name, n, (y[1] - x[1]) / hz / n * 1e6, (y[2] - x[2]) / hz / n * 1e6, rss / 1024
    }'
}
echo
echo "| run | requests | user µs/request | system µs/request | RSS MiB |"
echo "| --- | ---: | ---: | ---: | ---: |"
for ((r = 1; r <= ROUNDS; r++)); do
    measure "spread over $ENTRIES entries, round $r" "$TMP/spread.lua"
    measure "one entry, round $r" "$TMP/one.lua"
done
