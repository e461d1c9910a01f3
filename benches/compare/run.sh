#!/usr/bin/env bash
# Side-by-side comparison of etelecom-gateway and NGINX doing the same job on this machine:
# CPU time per request and memory of the proxy process under the same load, everything on
# 127.0.0.1. See benches/compare/README.md for what is measured, how, and the caveats.
#
#   bash benches/compare/run.sh            # compare; writes benches/compare/results.md
#   QUICK=1 bash benches/compare/run.sh    # the same cases, shorter runs (about 10 minutes)
#   bash benches/compare/run.sh profile    # perf profiles of the proxies under the same load,
#                                          # written to benches/compare/profile/ (no comparison)
#
# Scenarios (SCENARIOS, default all): base (forward and hit at CONNS), c256 (forward at
# CONNS_HIGH), latency (forward with the mock answering LATENCY_MS late, LATENCY_CONNS
# connections: the added p99), scale (gateway only: SCALE_TENANTS tenants, SCALE_ENTRIES
# distinct cached entries, hit and forward spread over them, each run paired with a run of the
# same case on a 3-tenant gateway started alongside, ref-hit and ref-forward, which the scale
# lines divide by; then OVERFILL times as many more distinct entries, past what the cache
# holds, for the RSS of a full, evicting cache), workers (the hit case with 1 and then 2
# workers, proxy and wrk spread over both cores).
#
# Environment (defaults in brackets):
#   CONNS [32] connections, DURATION [10] seconds per measured run, WARMUP [2] seconds of
#   unmeasured load before each case, RUNS [3] measured runs per case,
#   VARIANTS ["gateway nginx gateway-nolog nginx-nolog"], PROXY_CPU [1] core of the proxy,
#   LOAD_CPU [0] core of wrk and the mock eTelecom, RESULTS [benches/compare/results.md],
#   PERF_FREQ [499] samples/s in profile mode, PERF_DATA_DIR [the temporary folder, removed at
#   the end] where profile mode keeps its perf.data files. QUICK [0]: 1 = DURATION 5, WARMUP 1,
#   QUIET_WAIT 120 unless set. SCENARIOS ["base c256 latency scale workers"], CONNS_HIGH [256],
#   LATENCY_MS [20], LATENCY_CONNS [8], SCALE_TENANTS [1000], SCALE_ENTRIES [100000],
#   SCALE_MAX_BYTES [100663296 = 96 MiB: the scale case's cache max_bytes, room for
#   SCALE_ENTRIES entries of ~0.9 KB as the cache weighs them], OVERFILL [3],
#   INTERLEAVE [1] and POOL_IDLE [256] (see below), BIN [target/release/etelecom-gateway],
#   SKIP_BUILD [0] (1: measure BIN as it is).
#
# Installs what is missing from Debian (nginx, wrk; linux-perf for `profile`) when run as root,
# builds with `cargo build --release --locked`, and cleans up every process and file it started
# or wrote, apart from RESULTS (and the profile/ folder). Every load run is bounded in time
# (wrk -d, under `timeout`); only loopback addresses are used.
set -euo pipefail

MODE=${1:-compare}
case "$MODE" in
compare | profile) ;;
*)
    echo "usage: $0 [compare|profile]" >&2
    exit 2
    ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
HERE=benches/compare
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-5}
    WARMUP=${WARMUP:-1}
    QUIET_WAIT=${QUIET_WAIT:-120}
fi
CONNS=${CONNS:-32}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SCENARIOS=${SCENARIOS:-"base c256 latency scale workers"}
CONNS_HIGH=${CONNS_HIGH:-256}
LATENCY_MS=${LATENCY_MS:-20}
LATENCY_CONNS=${LATENCY_CONNS:-8}
SCALE_TENANTS=${SCALE_TENANTS:-1000}
SCALE_ENTRIES=${SCALE_ENTRIES:-100000}
SCALE_MAX_BYTES=${SCALE_MAX_BYTES:-100663296}
OVERFILL=${OVERFILL:-3}
# Per proxy start: the cores it runs on, its worker count, and the tenant count in its config.
PROXY_CPUS=
WORKERS=1
TENANTS=3
# Per gateway start: the cache's max_bytes (empty: the default, 64 MiB).
MAX_BYTES=
RUNS=${RUNS:-3}
# INTERLEAVE [1]: the base, c256, latency and workers runs go round by round (every variant's
# run 1, then every variant's run 2, ...), each round with its own proxy start and warm-up, so
# that a slow drift of the machine (a neighbour on the host, its caches) falls on every proxy
# alike instead of on whichever ran last. 0: each variant's RUNS runs back to back.
INTERLEAVE=${INTERLEAVE:-1}
# POOL_IDLE [256 = CONNS_HIGH]: idle upstream connections kept, by both proxies (the gateway's
# upstream.pool_max_idle_per_host, NGINX's keepalive). Smaller than the connection count, both
# proxies close and reopen upstream connections all the time and the c256 case measures
# connect(2) and the kernel's search for a free port among TIME_WAIT sockets, not proxying.
POOL_IDLE=${POOL_IDLE:-256}
VARIANTS=${VARIANTS:-"gateway nginx gateway-nolog nginx-nolog"}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
RESULTS=${RESULTS:-$HERE/results.md}
PERF_FREQ=${PERF_FREQ:-499}
BIN=${BIN:-$ROOT/target/release/etelecom-gateway}
HZ=$(getconf CLK_TCK)
# The mock's demo credentials (src/mock.rs, DEMO_ACME_API_KEY): a public test key.
ACME_API_KEY=$(sed -n '/^pub const DEMO_ACME_API_KEY/,/;/p' src/mock.rs | grep -o '"[^"]*"' | tr -d '"')
[[ $ACME_API_KEY == 1001:* ]] || {
    echo "cannot read DEMO_ACME_API_KEY from src/mock.rs" >&2
    exit 1
}

# The two cases: name, path, body.
FORWARD_PATH=/v1/shop.Etelecom/ListCallLogs
FORWARD_BODY='{}'
HIT_PATH=/v1/shop.Etelecom/GetExtensionInfo
HIT_BODY='{"extension_number":"101"}'

log() { printf '[compare] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- tools -------------------------------------------------------------------------------------

nginx_bin() { command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }

install_missing() {
    local need=()
    [[ -n $(nginx_bin) ]] || need+=(nginx)
    command -v wrk >/dev/null || need+=(wrk)
    command -v curl >/dev/null || need+=(curl)
    command -v jq >/dev/null || need+=(jq)
    command -v ss >/dev/null || need+=(iproute2)
    command -v taskset >/dev/null || need+=(util-linux)
    [[ -x /usr/bin/time ]] || need+=(time)
    if [[ $MODE == profile ]] && ! command -v perf >/dev/null; then need+=(linux-perf); fi
    ((${#need[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing ${need[*]}: run as root to install them (apt-get)"
    log "installing from Debian: ${need[*]}"
    apt-get update -qq
    if [[ " ${need[*]} " == *" wrk "* ]] &&
        apt-cache policy wrk | grep -q 'Candidate: (none)'; then
        die "Debian has no wrk here; this script only drives wrk (see README: oha/hey not wired in)"
    fi
    # Never let the package start the distribution's nginx service (it would listen on :80).
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    return 0
}

# --- processes ---------------------------------------------------------------------------------

TMP=
STARTED=() # pids this script started, stopped in reverse order on exit
cleanup() {
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        kill -TERM "${STARTED[i]}" 2>/dev/null || true
    done
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        wait "${STARTED[i]}" 2>/dev/null || true
    done
    [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # pid: TERM, wait, forget
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    # A second signal makes the gateway exit at once instead of draining.
    sleep 0.2
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for i in "${!STARTED[@]}"; do [[ ${STARTED[i]} == "$pid" ]] && unset 'STARTED[i]'; done
    STARTED=("${STARTED[@]}")
}

USED_PORTS=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        [[ -z $(ss -Htan "sport = :$p") ]] || continue
        USED_PORTS+="$p "
        echo "$p"
        return
    done
}

wait_for() { # pid description command...: retry for 10 s while pid lives
    local pid=$1 what=$2 i
    shift 2
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up"
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what not ready after 10 s"
}

post() { # port path body [tenant]: prints the status code
    local port=$1 path=$2 body=$3 tenant=${4:-acme}
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "http://127.0.0.1:$port$path" \
        -H "x-tenant-id: $tenant" -H 'content-type: application/json' --data-raw "$body"
}
is_200() { [[ $(post "$@") == 200 ]]; }

mock_count() { curl -s --max-time 5 "http://127.0.0.1:$MOCK_PORT/__mock/requests" | jq -r .count; }
mock_clear() { curl -s --max-time 5 -o /dev/null -X DELETE "http://127.0.0.1:$MOCK_PORT/__mock/requests"; }

start_mock() {
    MOCK_PORT=$(free_port)
    RUST_LOG=warn taskset -c "$LOAD_CPU" "$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" \
        >>"$TMP/logs/mock.log" 2>&1 &
    MOCK_PID=$!
    STARTED+=("$MOCK_PID")
    wait_for "$MOCK_PID" "mock eTelecom" curl -sf --max-time 1 "http://127.0.0.1:$MOCK_PORT/__mock/requests"
}

# The gateway: RUST_LOG=info writes one JSON access line per request to stderr (in batches: 64 KiB
# or 200 ms), appended to a file on tmpfs; RUST_LOG=warn writes none.
# GW_TAG names the gateway's folder and access log, so that two can run at once (scale).
start_gateway() { # RUST_LOG value
    local level=$1 dir=$TMP/gateway${GW_TAG:-}
    PORT=$(free_port)
    mkdir -p "$dir"
    printf '%s' "$ACME_API_KEY" >"$dir/acme.api"
    chmod 600 "$dir/acme.api"
    cat >"$dir/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"

[upstream]
base_url = "http://127.0.0.1:$MOCK_PORT"
pool_max_idle_per_host = $POOL_IDLE

# Never limit during the benchmark.
[rate_limit]
requests_per_second = 1000000
burst = 1000000

[admin]
listen = "127.0.0.1:0"

[[tenants]]
id = "acme"
api_key = { file = "acme.api" }
EOF
    if [[ -n $MAX_BYTES ]]; then
        printf '\n[cache]\nmax_bytes = %d\n' "$MAX_BYTES" >>"$dir/gateway.toml"
    fi
    # More tenants (t1, t2, ...), all with acme's key, which the mock accepts.
    local t
    for ((t = 1; t < TENANTS; t++)); do
        printf '\n[[tenants]]\nid = "t%d"\napi_key = { file = "acme.api" }\n' "$t"
    done >>"$dir/gateway.toml"
    ACCESS_LOG=$TMP/logs/gateway${GW_TAG:-}-access.log
    : >"$ACCESS_LOG"
    RUST_LOG=$level TOKIO_WORKER_THREADS=$WORKERS taskset -c "${PROXY_CPUS:-$PROXY_CPU}" \
        "$BIN" serve --config "$dir/gateway.toml" >/dev/null 2>>"$ACCESS_LOG" &
    PROXY_PID=$!
    STARTED+=("$PROXY_PID")
    wait_for "$PROXY_PID" gateway is_200 "$PORT" "$FORWARD_PATH" "$FORWARD_BODY"
    # The admin listener is on 127.0.0.1:0; find its port among the process's listeners.
    ADMIN_PORT=$(ss -Htlnp | grep "pid=$PROXY_PID," | awk '{print $4}' | sed 's/.*://' |
        grep -vx "$PORT" | head -1)
    [[ -n $ADMIN_PORT ]] || die "cannot find the gateway's admin port"
}

start_nginx() { # on|off: access log
    local logging=$1 access
    PORT=$(free_port)
    rm -rf "$TMP/nginx"
    mkdir -p "$TMP/nginx"/{cache,client_body,proxy,fastcgi,uwsgi,scgi}
    ACCESS_LOG=$TMP/logs/nginx-access.log
    : >"$ACCESS_LOG"
    if [[ $logging == on ]]; then
        # Batched like the gateway's (64 KiB, at least every 200 ms).
        access="access_log $ACCESS_LOG gateway_json buffer=64k flush=200ms;"
    else
        access="access_log off;"
    fi
    local t
    for ((t = 1; t < TENANTS; t++)); do
        printf 't%d "Bearer %s";\n' "$t" "$ACME_API_KEY"
    done >"$TMP/nginx/tenants.map"
    sed -e "s|@DIR@|$TMP|g" -e "s|@MOCK_PORT@|$MOCK_PORT|g" -e "s|@NGINX_PORT@|$PORT|g" \
        -e "s|@ACME_API_KEY@|$ACME_API_KEY|g" -e "s|@ACCESS_LOG@|$access|g" \
        -e "s|@WORKERS@|$WORKERS|g" -e "s|@KEEPALIVE@|$POOL_IDLE|g" \
        "$HERE/nginx.conf.template" >"$TMP/nginx/nginx.conf"
    "$NGINX" -t -q -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" ||
        die "nginx -t refused the generated config"
    taskset -c "${PROXY_CPUS:-$PROXY_CPU}" "$NGINX" -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" \
        -e "$TMP/nginx/error.log" -g 'daemon off;' >>"$TMP/logs/nginx.out" 2>&1 &
    PROXY_PID=$!
    STARTED+=("$PROXY_PID")
    wait_for "$PROXY_PID" nginx is_200 "$PORT" "$FORWARD_PATH" "$FORWARD_BODY"
    ADMIN_PORT=
}

start_proxy() { # variant
    case $1 in
    gateway) start_gateway info ;;
    gateway-nolog) start_gateway warn ;;
    nginx) start_nginx on ;;
    nginx-nolog) start_nginx off ;;
    *) die "unknown variant $1" ;;
    esac
    # A cacheable read: the first call is a miss, the second must be a hit (X-Cache: HIT).
    local h
    h=$(curl -s -D - -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$PORT$HIT_PATH" \
        -H 'x-tenant-id: acme' -H 'content-type: application/json' --data-raw "$HIT_BODY")
    h=$(curl -s -D - -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$PORT$HIT_PATH" \
        -H 'x-tenant-id: acme' -H 'content-type: application/json' --data-raw "$HIT_BODY")
    grep -qi '^x-cache: HIT' <<<"$h" || die "$1: second $HIT_PATH was not a cache hit: $h"
    [[ $(post "$PORT" "$HIT_PATH" "$HIT_BODY" nobody) == 403 ]] ||
        die "$1: an unknown tenant was not refused"
}

# Every process of the proxy: the gateway, or NGINX's master and its children (worker, cache
# manager, cache loader).
# Two gateways at once (scale): keep_proxy NAME saves what start_proxy set, use_proxy NAME makes
# it the one measure, stop and overfill act on.
declare -A KEPT=()
keep_proxy() { KEPT[$1]="$PORT $PROXY_PID $ADMIN_PORT $ACCESS_LOG"; }
use_proxy() { read -r PORT PROXY_PID ADMIN_PORT ACCESS_LOG <<<"${KEPT[$1]}"; }

proxy_pids() {
    echo "$PROXY_PID"
    ps -o pid= --ppid "$PROXY_PID" 2>/dev/null | tr -d ' ' || true
}

# Short name of a proxy process for the per-process memory column: gw, or NGINX's m (master),
# w (worker), cm (cache manager), cl (cache loader: starts with NGINX and exits after about a minute;
# left out of the memory sums so that every run is compared in the same steady state).
proc_name() {
    case $(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) in
    *"master process"*) echo m ;;
    *"worker process"*) echo w ;;
    *"cache manager"*) echo cm ;;
    *"cache loader"*) echo cl ;;
    *) echo gw ;;
    esac
}

ticks() { # pid: utime + stime in clock ticks (0 if gone)
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || {
        echo 0
        return
    }
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}

status_kb() { # pid field: a /proc/<pid>/status field in kB
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}
pss_kb() { awk '$1 == "Pss:" {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

core_busy() { # core ("" = all): "busy total" jiffies from /proc/stat
    awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}

# Waits (up to QUIET_WAIT seconds, default 900) until the machine is idle apart from this
# script's idle processes: under 10% of one core busy over 2 s. Other work running at the same time
# (a build, another benchmark) would be measured as the proxies' CPU or starve them.
wait_quiet() {
    local waited=0 a b busy
    while :; do
        a=$(core_busy "")
        sleep 2
        b=$(core_busy "")
        busy=$(awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * n * (y[1] - x[1]) / (y[2] - x[2])}')
        ((busy < 10)) && return 0
        if ((waited >= ${QUIET_WAIT:-900})); then
            log "warning: the machine is still busy (${busy}% of a core); measuring anyway"
            return 0
        fi
        ((waited % 60 == 0)) && log "waiting for the machine to be idle (${busy}% of a core busy)"
        waited=$((waited + 2))
    done
}

# --- one load run ------------------------------------------------------------------------------

wrk_script() { # file path body [extra Lua]
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = [[$3]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Tenant-Id"] = "acme"
${4:-}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
EOF
}

run_wrk() { # seconds path lua out: wrk's own CPU (user+sys seconds) goes to $4.time
    timeout --kill-after=5 $(($1 + 30)) /usr/bin/time -f '%U %S' -o "$4.time" \
        taskset -c "${LOAD_CPUS:-$LOAD_CPU}" wrk -t"${WRK_THREADS:-1}" -c"$RUN_CONNS" -d"$1s" \
        --timeout 5s -s "$3" "http://127.0.0.1:$PORT$2" >"$4" 2>&1 ||
        die "wrk failed: $(cat "$4")"
}

field() { grep -o "$1=[0-9]*" <<<"$2" | cut -d= -f2; }

# Lua that spreads requests over tenants t0..t<SCALE_TENANTS-1> ("t0" is acme) and, on the hit
# path, over `count` distinct bodies from entry `first` on: entry n goes to tenant n % SCALE_TENANTS.
scale_lua() { # hit|forward [first [count]]
    cat <<EOF
local n = 0
request = function()
  n = (n + 1) % ${3:-$SCALE_ENTRIES}
  local t = n % $SCALE_TENANTS
  local tenant = t == 0 and "acme" or ("t" .. t)
  local body = "$1" == "hit" and ('{"extension_number":"' .. (${2:-0} + n) .. '"}') or "{}"
  return wrk.format(nil, nil, {["Content-Type"] = "application/json", ["X-Tenant-Id"] = tenant}, body)
end
EOF
}

# Sets what a case sends: path, body, connections, extra Lua, and whether it is a hit case.
case_setup() { # case
    RUN_CONNS=$CONNS EXTRA_LUA= IS_HIT=0
    case $1 in
    forward) CASE_PATH=$FORWARD_PATH CASE_BODY=$FORWARD_BODY ;;
    hit | w1-hit | w2-hit | ref-hit) CASE_PATH=$HIT_PATH CASE_BODY=$HIT_BODY IS_HIT=1 ;;
    ref-forward) CASE_PATH=$FORWARD_PATH CASE_BODY=$FORWARD_BODY ;;
    forward-c256) CASE_PATH=$FORWARD_PATH CASE_BODY=$FORWARD_BODY RUN_CONNS=$CONNS_HIGH ;;
    latency)
        CASE_PATH=$FORWARD_PATH CASE_BODY=$FORWARD_BODY RUN_CONNS=$LATENCY_CONNS
        EXTRA_LUA="wrk.headers[\"X-Mock-Behaviour\"] = \"delay=$LATENCY_MS\""
        ;;
    scale-forward) CASE_PATH=$FORWARD_PATH CASE_BODY=$FORWARD_BODY EXTRA_LUA=$(scale_lua forward) ;;
    scale-hit) CASE_PATH=$HIT_PATH CASE_BODY=$HIT_BODY EXTRA_LUA=$(scale_lua hit) IS_HIT=1 ;;
    *) die "unknown case $1" ;;
    esac
}
RUN_CONNS=$CONNS

# Waits (up to 5 s) until the access log has `want` request lines: the gateway writes them in
# batches (at most 200 ms late).
wait_log() { # want
    local i
    for ((i = 0; i < 50; i++)); do
        (($(grep -c '"message":"request"' "$ACCESS_LOG" || true) >= $1)) && return 0
        sleep 0.1
    done
}

measure() { # variant case
    local variant=$1 case=$2 path body lua out r
    case_setup "$case"
    path=$CASE_PATH body=$CASE_BODY
    lua=$TMP/$case.lua
    out=$TMP/wrk.out
    wrk_script "$lua" "$path" "$body" "$EXTRA_LUA"
    wait_quiet
    log "$variant $case: warm-up ${WARMUP}s"
    run_wrk "$WARMUP" "$path" "$lua" "$out"
    local retries=0
    local runs=${RUNS_NOW:-$RUNS} first_run=${RUN_BASE:-0}
    for ((r = 1; r <= runs; r++)); do
        mock_clear
        # Both proxies batch their access lines (at most 200 ms late): let the previous run's
        # last batch land before the log is emptied for this one.
        sleep 0.3
        : >"$ACCESS_LOG"
        local pids=() before=() after=() p i
        mapfile -t pids < <(proxy_pids)
        for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
        local c0 c1 call mock0 mock1
        c0=$(core_busy "$PROXY_CPU")
        c1=$(core_busy "$LOAD_CPU")
        call=$(core_busy "")
        mock0=$(ticks "$MOCK_PID")
        run_wrk "$DURATION" "$path" "$lua" "$out"
        local c0b c1b callb
        c0b=$(core_busy "$PROXY_CPU")
        c1b=$(core_busy "$LOAD_CPU")
        callb=$(core_busy "")
        mock1=$(ticks "$MOCK_PID")
        local cpu_ticks=0
        for i in "${!pids[@]}"; do
            after[i]=$(ticks "${pids[i]}")
            ((after[i] >= before[i])) && cpu_ticks=$((cpu_ticks + after[i] - before[i]))
        done
        local rss=0 hwm=0 pss=0 each='' name
        mapfile -t pids < <(proxy_pids)
        for p in "${pids[@]}"; do
            name=$(proc_name "$p")
            [[ $name == cl ]] && continue
            each+=${each:+ + }$name:$(awk -v k="$(status_kb "$p" VmRSS)" 'BEGIN {printf "%.1f", k / 1024}')
            rss=$((rss + $(status_kb "$p" VmRSS)))
            hwm=$((hwm + $(status_kb "$p" VmHWM)))
            pss=$((pss + $(pss_kb "$p")))
        done
        local res
        res=$(grep '^RESULT' "$out") || die "no wrk summary: $(cat "$out")"
        local reqs dur_us bytes errs p50 p99 upstream
        reqs=$(field requests "$res")
        dur_us=$(field duration_us "$res")
        bytes=$(field bytes "$res")
        errs=$(($(field connect "$res") + $(field read "$res") + $(field write "$res") + $(field status "$res") + $(field timeout "$res")))
        p50=$(field p50_us "$res")
        p99=$(field p99_us "$res")
        upstream=$(mock_count)
        ((reqs > 0)) || die "$variant $case: no request completed"
        ((errs == 0)) || die "$variant $case: $errs errors or non-2xx answers: $res"
        # Every answer was a 200: wrk counts a status >= 400 as an error (checked above) and the
        # access log, when there is one, has one line per request, all with status 200.
        local logged=- non200=- hits=-
        if [[ -s $ACCESS_LOG ]]; then
            wait_log "$reqs"
            logged=$(grep -c '"message":"request"' "$ACCESS_LOG" || true)
            # 499 (NGINX): a request still in flight when wrk closed its connections at the end.
            local cut
            cut=$(grep -c '"status":499' "$ACCESS_LOG" || true)
            ((cut <= 2 * RUN_CONNS)) || die "$variant $case: $cut requests cut short (499)"
            non200=$(grep '"message":"request"' "$ACCESS_LOG" | grep -v '"status":499' | grep -vc '"status":200' || true)
            hits=$(grep -c '"cache":"HIT"' "$ACCESS_LOG" || true)
            ((non200 == 0)) || die "$variant $case: $non200 access-log lines without status 200, e.g. $(grep '"message":"request"' "$ACCESS_LOG" | grep -v '"status":200' | head -3)"
            ((logged >= reqs)) || die "$variant $case: $logged access-log lines for $reqs requests"
        fi
        if ((!IS_HIT)); then
            # Each request went to the mock (up to RUN_CONNS were still in flight when wrk stopped).
            ((upstream >= reqs && upstream <= reqs + RUN_CONNS)) ||
                die "$variant $case: the mock saw $upstream requests for $reqs"
        elif [[ $case == scale-hit ]]; then
            # Entries filled before the run; a few may have been evicted or expired meanwhile.
            ((upstream <= reqs / 100)) || die "$variant $case: the mock saw $upstream requests (not hits)"
        else
            ((upstream <= 2)) || die "$variant $case: the mock saw $upstream requests (not hits)"
            if [[ $hits != - ]]; then ((hits >= reqs)) || die "$variant hit: only $hits HIT lines"; fi
        fi
        if [[ -n $ADMIN_PORT ]]; then
            # The gateway's own count of answers that were not 200 (whole process lifetime).
            local bad
            bad=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
                awk '/^etelecom_gateway_requests_total\{/ && !/status="200"/ && !/tenant="nobody"/ && !/status="403"/ {s += $NF} END {print s + 0}')
            [[ $bad == 0 ]] || die "$variant $case: gateway metrics count $bad answers that were not 200"
        fi
        # CPU that was neither the proxy, the mock nor wrk (other processes on the machine, and
        # interrupt time not charged to a process), as % of one core: a disturbed run shows here.
        local other wrk_cpu
        wrk_cpu=$(awk '{print $1 + $2}' "$out.time")
        other=$(awk -v a="$call" -v b="$callb" -v p="$cpu_ticks" -v m="$((mock1 - mock0))" -v w="$wrk_cpu" \
            -v hz="$HZ" -v d="$DURATION" \
            'BEGIN {split(a, x, " "); split(b, y, " "); o = (y[1] - x[1] - p - m) / hz - w; if (o < 0) o = 0; printf "%.0f", 100 * o / d}')
        local busy_proxy busy_load
        busy_proxy=$(awk -v a="$c0" -v b="$c0b" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2])}')
        busy_load=$(awk -v a="$c1" -v b="$c1b" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2])}')
        # variant case run requests rps cpu_s us_per_req p50_ms p99_ms rss hwm pss upstream
        # bytes_per_resp core_proxy% core_load% procs rss_each other%
        awk -v v="$variant" -v c="$case" -v r="$((first_run + r))" -v n="$reqs" -v d="$dur_us" -v t="$cpu_ticks" \
            -v hz="$HZ" -v p50="$p50" -v p99="$p99" -v rss="$rss" -v hwm="$hwm" -v pss="$pss" \
            -v up="$upstream" -v by="$bytes" -v bp="$busy_proxy" -v bl="$busy_load" -v np="${#pids[@]}" -v each="$each" -v other="$other" \
            'BEGIN {
                printf "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%d\t%.0f\t%d\t%d\t%d\t%s\t%d\n",
                    v, c, r, n, n / (d / 1e6), t / hz, t / hz / n * 1e6, p50 / 1000, p99 / 1000,
                    rss / 1024, hwm / 1024, pss / 1024, up, by / n, bp, bl, np, each, other
            }' >>"$TMP/rows.tsv"
        log "$(tail -1 "$TMP/rows.tsv" | awk -F'\t' '{printf "%s %s run %s: %d req, %.0f req/s, %s cpu s, %s us/req, p50 %s ms, p99 %s ms, RSS %s MiB, PSS %s MiB, proxy core %s%%, load core %s%%, other %s%%", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $15, $16, $19}')"
        # A run disturbed by other work on the machine is measured again (MAX_OTHER, default 10%
        # of a core; up to MAX_RETRIES, default 5, per case); if it still is, it stays, flagged.
        if ((other >= ${MAX_OTHER:-10} && retries < ${MAX_RETRIES:-5})); then
            retries=$((retries + 1))
            log "run disturbed (${other}% of a core used by other work): discarded, measuring again"
            sed -i '$d' "$TMP/rows.tsv"
            r=$((r - 1))
            wait_quiet
        fi
    done
}

# --- profile mode ------------------------------------------------------------------------------

profile_variant() { # variant
    local variant=$1 case path body lua out data base i
    mkdir -p "$HERE/profile"
    # Syscalls counted with perf stat (tracepoints that exist on this kernel).
    local events=raw_syscalls:sys_enter,context-switches,cpu-migrations sc
    perf list 2>/dev/null >"$TMP/perf-list.txt" || true
    for sc in read readv recvfrom recvmsg write writev sendto sendmsg epoll_wait epoll_pwait \
        epoll_ctl futex accept4 close openat newfstatat fstat pread64 sched_yield clock_gettime; do
        if grep -q "syscalls:sys_enter_$sc " "$TMP/perf-list.txt"; then events+=",syscalls:sys_enter_$sc"; fi
    done
    for case in forward hit; do
        if [[ $case == forward ]]; then path=$FORWARD_PATH body=$FORWARD_BODY; else path=$HIT_PATH body=$HIT_BODY; fi
        lua=$TMP/$case.lua
        out=$TMP/wrk.out
        data=${PERF_DATA_DIR:-$TMP}/perf-$variant-$case.data
        base=$HERE/profile/$variant-$case
        wrk_script "$lua" "$path" "$body"
        wait_quiet
        run_wrk "$WARMUP" "$path" "$lua" "$out"
        local pids
        pids=$(proxy_pids | paste -sd, -)

        # 1. System calls and context switches per request.
        log "$variant $case: perf stat (system calls) for ${DURATION}s"
        taskset -c "$LOAD_CPU" perf stat -x, -e "$events" -p "$pids" -o "$TMP/stat.csv" \
            -- sleep "$((DURATION + 1))" 2>>"$TMP/logs/perf.log" &
        local perf_pid=$!
        STARTED+=("$perf_pid")
        sleep 0.5
        run_wrk "$DURATION" "$path" "$lua" "$out"
        wait "$perf_pid" || true
        for i in "${!STARTED[@]}"; do [[ ${STARTED[i]} == "$perf_pid" ]] && unset 'STARTED[i]'; done
        STARTED=("${STARTED[@]}")
        local reqs
        reqs=$(field requests "$(grep '^RESULT' "$out")")
        {
            echo "# $variant, $case ($path): per request, over a ${DURATION}s wrk -c$CONNS run ($reqs requests; perf stat counted for $((DURATION + 1))s, so the idle second adds a little)"
            awk -F, -v n="$reqs" '$1 ~ /^[0-9]+$/ {printf "%10.3f  %s\n", $1 / n, $3}' "$TMP/stat.csv"
        } >"$base.syscalls.txt"

        # 2. CPU profile (cpu-clock samples, DWARF call chains), with the CPU time it covered.
        log "$variant $case: perf record (cpu-clock, ${PERF_FREQ} Hz, dwarf call graphs) for ${DURATION}s"
        local p t0=0 t1=0
        for p in ${pids//,/ }; do t0=$((t0 + $(ticks "$p"))); done
        taskset -c "$LOAD_CPU" perf record -q -e cpu-clock -F "$PERF_FREQ" --call-graph dwarf,32768 \
            -p "$pids" -o "$data" -- sleep "$DURATION" 2>>"$TMP/logs/perf.log" &
        perf_pid=$!
        STARTED+=("$perf_pid")
        run_wrk "$DURATION" "$path" "$lua" "$out"
        wait "$perf_pid" || true
        for p in ${pids//,/ }; do t1=$((t1 + $(ticks "$p"))); done
        for i in "${!STARTED[@]}"; do [[ ${STARTED[i]} == "$perf_pid" ]] && unset 'STARTED[i]'; done
        STARTED=("${STARTED[@]}")
        reqs=$(field requests "$(grep '^RESULT' "$out")")
        local cpu_s
        cpu_s=$(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN {printf "%.2f", t / hz}')
        log "$variant $case: reporting ($reqs requests, $cpu_s CPU s under perf)"
        {
            echo "# $variant, $case ($path), wrk -c$CONNS -d${DURATION}s under perf record: $reqs requests, $cpu_s CPU seconds"
            echo "# (perf's sampling adds a little CPU; µs/request here are shares of that CPU time)"
            if command -v python3 >/dev/null; then
                perf script -i "$data" 2>/dev/null | python3 "$HERE/perf_buckets.py" "$reqs" "$cpu_s"
            else
                echo "(python3 not found: no bucket summary)"
            fi
        } >"$base.buckets.md"
        {
            echo "# $variant, $case: self time by symbol (perf report --no-children --sort dso,symbol), >= 0.3%"
            perf report -i "$data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.3 2>/dev/null |
                grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' | cut -c1-220
        } >"$base.self.txt"
        {
            echo "# $variant, $case: inclusive time by symbol (perf report --children --sort symbol), >= 1%"
            perf report -i "$data" --stdio --children --sort symbol -g none --percent-limit 1 2>/dev/null |
                grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' | cut -c1-220
        } >"$base.children.txt"
        log "wrote $base.{syscalls,buckets,self,children}.*"
    done
}

# --- main --------------------------------------------------------------------------------------

install_missing
NGINX=$(nginx_bin)
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building: cargo build --release --locked"
    cargo build --release --locked 2>&1 | tail -1 >&2
fi

if [[ -d /dev/shm && -w /dev/shm ]]; then
    TMP=$(mktemp -d /dev/shm/etelecom-compare.XXXXXX)
else
    TMP=$(mktemp -d)
fi
mkdir -p "$TMP/logs"
: >"$TMP/rows.tsv"

start_mock
log "mock eTelecom on 127.0.0.1:$MOCK_PORT (core $LOAD_CPU); temporary folder $TMP"

has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
# The variants of VARIANTS among those given.
among() { local v; for v in "$@"; do [[ " $VARIANTS " == *" $v "* ]] && echo "$v"; done; }

# Fills the gateway's cache with `count` distinct entries from entry `first` on (one pass of
# scale-hit's keys; the pass repeats as hits until the time is up).
fill_cache() { # first count
    local first=$1 count=$2
    case_setup scale-hit
    wrk_script "$TMP/fill.lua" "$HIT_PATH" "$HIT_BODY" "$(scale_lua hit "$first" "$count")"
    mock_clear
    local secs=$((count / 10000 + 2))
    log "filling the cache: $count entries (from $first) over $SCALE_TENANTS tenants (${secs}s)"
    local calls tries=0
    while :; do
        run_wrk "$secs" "$HIT_PATH" "$TMP/fill.lua" "$TMP/fill.out"
        calls=$(mock_count)
        ((calls >= count)) && break
        ((++tries < 10)) || die "cache fill: only $calls upstream calls for $count entries"
    done
}

# The gateway's cache gauges: "entries bytes".
cache_gauges() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '$1 == "etelecom_gateway_cache_entries" {e = $2} $1 == "etelecom_gateway_cache_bytes" {b = $2} END {printf "%d %d\n", e, b}'
}

# After the scale runs: OVERFILL x SCALE_ENTRIES more distinct entries, past what max_bytes holds
# (the cache evicts); then the RSS peak and what the cache holds: "variant hwm_mib entries bytes".
OVERFILLED=()
overfill() { # variant
    local entries bytes
    wait_quiet
    fill_cache "$SCALE_ENTRIES" $((OVERFILL * SCALE_ENTRIES))
    read -r entries bytes < <(cache_gauges)
    OVERFILLED+=("$1 $(awk -v k="$(status_kb "$PROXY_PID" VmHWM)" 'BEGIN {printf "%.1f", k / 1024}') $entries $bytes")
    log "$1 after $((OVERFILL * SCALE_ENTRIES)) more entries: peak RSS MiB, entries held, bytes weighed: ${OVERFILLED[-1]#* }"
}

# Rounds: with INTERLEAVE=1, RUNS rounds of one run per variant and case; else one round of RUNS.
ROUNDS=1 RUNS_NOW=$RUNS
if [[ $INTERLEAVE == 1 && $MODE != profile ]]; then ROUNDS=$RUNS RUNS_NOW=1; fi
for ((round = 0; round < ROUNDS; round++)); do
    RUN_BASE=$round
    ((ROUNDS == 1)) || log "round $((round + 1)) of $ROUNDS"
    for variant in $VARIANTS; do
        [[ $MODE == profile ]] || has base || has c256 || has latency || continue
        wait_quiet
        start_proxy "$variant"
        log "$variant on 127.0.0.1:$PORT (core $PROXY_CPU), pids $(proxy_pids | paste -sd' ' -)"
        if [[ $MODE == profile ]]; then
            profile_variant "$variant"
        else
            if has base; then
                measure "$variant" forward
                measure "$variant" hit
            fi
            if has c256; then measure "$variant" forward-c256; fi
            if has latency; then measure "$variant" latency; fi
        fi
        stop "$PROXY_PID"
    done
done
RUN_BASE=0
[[ $MODE == profile ]] && exit 0

if has scale; then
    for variant in $(among gateway gateway-nolog); do
        wait_quiet
        # The reference: the same variant with 3 tenants, alive through the scale runs. Each
        # scale run is paired with a run of the same case on it, so that the scale lines divide
        # figures measured a minute apart, not a quarter of an hour (the base runs).
        GW_TAG=-ref
        start_proxy "$variant"
        keep_proxy ref
        log "$variant reference (3 tenants) on 127.0.0.1:$PORT"
        TENANTS=$SCALE_TENANTS MAX_BYTES=$SCALE_MAX_BYTES GW_TAG=-scale
        start_proxy "$variant"
        keep_proxy scale
        log "$variant with $SCALE_TENANTS tenants, cache max_bytes $SCALE_MAX_BYTES, on 127.0.0.1:$PORT"
        fill_cache 0 "$SCALE_ENTRIES"
        for ((round = 0; round < RUNS; round++)); do
            RUN_BASE=$round
            for c in hit forward; do
                use_proxy scale
                RUNS_NOW=1 measure "$variant" "scale-$c"
                use_proxy ref
                RUNS_NOW=1 measure "$variant" "ref-$c"
            done
        done
        RUN_BASE=0
        use_proxy ref
        stop "$PROXY_PID"
        use_proxy scale
        overfill "$variant"
        stop "$PROXY_PID"
        TENANTS=3 MAX_BYTES= GW_TAG=
    done
fi

if has workers; then
    # Proxy and wrk (2 threads) spread over both cores: with 1 worker the proxy can use one core
    # and wrk the other; with 2 workers they share both.
    for ((round = 0; round < ROUNDS; round++)); do
        RUN_BASE=$round
        for variant in $(among gateway-nolog nginx-nolog); do
            for WORKERS in 1 2; do
                wait_quiet
                PROXY_CPUS=0,1 LOAD_CPUS=0,1 WRK_THREADS=2
                start_proxy "$variant"
                log "$variant with $WORKERS worker(s) on cores 0,1"
                measure "$variant" "w$WORKERS-hit"
                stop "$PROXY_PID"
                PROXY_CPUS= LOAD_CPUS= WRK_THREADS=1
            done
        done
    done
    RUN_BASE=0 WORKERS=1
fi

# --- report ------------------------------------------------------------------------------------

NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
# GATEWAY_COMMIT names the source when it is not a git checkout (e.g. an exported commit).
GATEWAY_VERSION="$("$BIN" --version), commit ${GATEWAY_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
if git rev-parse --git-dir >/dev/null 2>&1 && [[ -n $(git status --porcelain -- src Cargo.toml Cargo.lock) ]]; then
    GATEWAY_VERSION+=" (with uncommitted changes in src/ or Cargo.*)"
fi
WRK_VERSION=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2, $3}' || true)
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
col() { # variant case column -> values
    awk -F'\t' -v v="$1" -v c="$2" -v k="$3" '$1 == v && $2 == c {print $k}' "$TMP/rows.tsv"
}
stat_of() { # variant case column: "median (min–max)"
    local vals
    vals=$(col "$1" "$2" "$3")
    [[ -n $vals ]] || {
        echo "-"
        return
    }
    printf '%s (%s–%s)' "$(median <<<"$vals")" "$(sort -g <<<"$vals" | head -1)" "$(sort -g <<<"$vals" | tail -1)"
}
med() { col "$1" "$2" "$3" | median; }

{
    echo "# etelecom-gateway vs NGINX: CPU per request and memory"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Machine: $(nproc) cores, $CPU_MODEL, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)"
    echo "- Versions: $GATEWAY_VERSION (release build); nginx $NGINX_VERSION; $WRK_VERSION"
    echo "- Command: \`QUICK=$QUICK CONNS=$CONNS DURATION=$DURATION WARMUP=$WARMUP RUNS=$RUNS INTERLEAVE=$INTERLEAVE POOL_IDLE=$POOL_IDLE SCENARIOS=\"$SCENARIOS\" bash benches/compare/run.sh\`"
    echo "- Cases: forward and hit at $CONNS connections (3 tenants in the config); forward-c256 at $CONNS_HIGH; latency: forward with the mock $LATENCY_MS ms late (x-mock-behaviour: delay=$LATENCY_MS), $LATENCY_CONNS connections; scale-hit / scale-forward: $SCALE_TENANTS tenants, cache max_bytes $SCALE_MAX_BYTES, requests spread over them and (hit) over $SCALE_ENTRIES cached entries filled before, each run paired with one of ref-hit / ref-forward (the hit and forward cases on a 3-tenant gateway running alongside); overfill: then $((OVERFILL * SCALE_ENTRIES)) more distinct entries (the cache full and evicting); w1-hit / w2-hit: the hit case with 1 / 2 workers, proxy and wrk -t2 both on cores 0-1"
    echo "- Load: wrk -t1 -c$CONNS, ${DURATION}s per run after ${WARMUP}s warm-up, POST with x-tenant-id: acme; wrk and the mock eTelecom on core $LOAD_CPU, the proxy on core $PROXY_CPU (taskset)"
    echo "- forward: \`$FORWARD_PATH\` \`$FORWARD_BODY\` (not cached, every request goes to the mock); hit: \`$HIT_PATH\` \`$HIT_BODY\` (served from the proxy's cache)"
    echo "- \`gateway\`: RUST_LOG=info, JSON access log appended to a file on tmpfs; \`gateway-nolog\`: RUST_LOG=warn. \`nginx\`: one worker, JSON access log (same fields) to a file on tmpfs, buffer=64k flush=200ms (the gateway batches alike); \`nginx-nolog\`: access_log off"
    echo "- CPU = utime+stime of the proxy's processes (/proc/<pid>/stat; NGINX: master + worker + cache manager/loader) over the run, per completed request; memory (VmRSS, VmHWM, PSS) after the run, NGINX summed over master + worker + cache manager"
    echo "- proxy core / load core: how busy cores $PROXY_CPU and $LOAD_CPU were (/proc/stat). A proxy core under ~95% means the load side (wrk + mock) was the bottleneck: then req/s and latency describe the load side, not the proxy, and only CPU µs/request and memory compare the proxies"
    echo "- other CPU: CPU used during the run by anything but the proxy, the mock and wrk (other processes, unattributed kernel work), % of one core; runs at ${MAX_OTHER:-10}% or more are measured again"
    echo
    echo "## Medians over $RUNS runs (min–max)"
    echo
    echo "| proxy | case | CPU µs/request | requests/s | p50 ms | p99 ms | RSS MiB | peak RSS (VmHWM) MiB | PSS MiB | proxy core busy % |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for v in $VARIANTS; do
        for c in forward hit forward-c256 latency scale-hit ref-hit scale-forward ref-forward w1-hit w2-hit; do
            [[ -n $(col "$v" "$c" 7) ]] || continue
            echo "| $v | $c | $(stat_of "$v" "$c" 7) | $(stat_of "$v" "$c" 5) | $(stat_of "$v" "$c" 8) | $(stat_of "$v" "$c" 9) | $(stat_of "$v" "$c" 10) | $(stat_of "$v" "$c" 11) | $(stat_of "$v" "$c" 12) | $(stat_of "$v" "$c" 15) |"
        done
    done
    echo
    disturbed=$(awk -F'\t' '$19 >= 10' "$TMP/rows.tsv" | wc -l)
    if ((disturbed > 0)); then
        echo "**Warning: $disturbed run(s) had 10% or more of a core used by something else (column \"other CPU %\" below); their figures are suspect.**"
        echo
    fi
    echo "## The bar (medians)"
    echo
    echo "| comparison | gateway | reference | ratio | bar | met? |"
    echo "| --- | --- | --- | --- | --- | --- |"
    # row what value reference bar-ratio op: met when value/reference op bar-ratio (le or ge).
    row() {
        awk -v what="$1" -v g="$2" -v n="$3" -v l="$4" -v op="$5" 'BEGIN {
            if (g == "" || n == "" || n == 0) { printf "| %s | %s | %s | - | %s %s× | not measured |\n", what, g, n, (op == "le" ? "≤" : "≥"), l; exit }
            r = g / n; ok = (op == "le" ? r <= l : r >= l)
            printf "| %s | %.2f | %.2f | %.2f | %s %s× | %s |\n", what, g, n, r, (op == "le" ? "≤" : "≥"), l, (ok ? "met" : "**not met**")
        }'
    }
    added_p99() { # variant: median p99 of the latency case minus the mock's added latency
        local p
        p=$(med "$1" latency 9)
        if [[ -n $p ]]; then awk -v p="$p" -v l="$LATENCY_MS" 'BEGIN {printf "%.2f", p - l}'; fi
    }
    for pair in "gateway nginx" "gateway-nolog nginx-nolog"; do
        read -r g n <<<"$pair"
        [[ " $VARIANTS " == *" $g "* && " $VARIANTS " == *" $n "* ]] || continue
        row "$g vs $n: forward, CPU µs/request, $CONNS connections" "$(med "$g" forward 7)" "$(med "$n" forward 7)" 1.0 le
        row "$g vs $n: forward, CPU µs/request, $CONNS_HIGH connections" "$(med "$g" forward-c256 7)" "$(med "$n" forward-c256 7)" 1.0 le
        row "$g vs $n: cache hit, CPU µs/request" "$(med "$g" hit 7)" "$(med "$n" hit 7)" 0.6 le
        row "$g vs $n: added p99 ms at +${LATENCY_MS} ms upstream, $LATENCY_CONNS connections" "$(added_p99 "$g")" "$(added_p99 "$n")" 1.0 le
        row "$g vs $n: peak RSS (VmHWM) MiB, hit runs" "$(med "$g" hit 11)" "$(med "$n" hit 11)" 1.0 le
    done
    for g in $(among gateway gateway-nolog); do
        row "$g: hit CPU µs/request, $SCALE_TENANTS tenants and $SCALE_ENTRIES entries vs 3 tenants, 1 entry (ref-hit)" "$(med "$g" scale-hit 7)" "$(med "$g" ref-hit 7)" 1.1 le
        row "$g: forward CPU µs/request, $SCALE_TENANTS tenants vs 3 (ref-forward)" "$(med "$g" scale-forward 7)" "$(med "$g" ref-forward 7)" 1.1 le
        hwm=$(col "$g" scale-hit 11 | sort -g | tail -1)
        bound=$((SCALE_MAX_BYTES / 1048576 + 32))
        row "$g: peak RSS MiB at scale vs cache max_bytes ($((SCALE_MAX_BYTES / 1048576))) + 32 MiB" "$hwm" "$bound" 1.0 le
        for o in "${OVERFILLED[@]}"; do
            read -r ov ohwm oentries obytes <<<"$o"
            [[ $ov == "$g" ]] || continue
            row "$g: peak RSS MiB after $((OVERFILL * SCALE_ENTRIES)) more entries ($oentries held, $((obytes / 1048576)) MiB weighed) vs max_bytes + 32 MiB" "$ohwm" "$bound" 1.0 le
        done
    done
    for v in $(among gateway-nolog nginx-nolog); do
        row "$v: hit requests/s, 2 workers vs 1 (cores 0-1 shared with wrk)" "$(med "$v" w2-hit 5)" "$(med "$v" w1-hit 5)" 1.8 ge
    done
    echo
    echo "## Every run"
    echo
    echo "| proxy | case | run | requests | req/s | CPU s | CPU µs/req | p50 ms | p99 ms | RSS MiB | HWM MiB | PSS MiB | upstream calls | bytes/response | proxy core % | load core % | processes | RSS per process MiB (cache loader not counted) | other CPU % |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    awk -F'\t' '{printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; printf "\n"}' "$TMP/rows.tsv"
} >"$TMP/results.md"

cp "$TMP/results.md" "$RESULTS"
cat "$TMP/results.md"
log "wrote $RESULTS"
