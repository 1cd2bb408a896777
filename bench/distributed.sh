#!/usr/bin/env bash
# Distributed-mode benchmark: GET /api/content through `zocalo serve gateway`
# with 1, 2 and 3 `zocalo serve reviews` instances on PostgreSQL with a
# streaming replica, side by side with nginx as a plain proxy over the same
# instances (the cost of our balancing, breakers, retries and bulkheads
# against a proxy that has none of them).
#
#   1. start the replica (scripts/pg-replica.sh start), a fresh database,
#      `zocalo serve auth` and three `zocalo serve reviews` (writes to the
#      primary, reads from the replica, the service's own read cache off so
#      every read reaches PostgreSQL);
#   2. load BENCH_REVIEWS reviews through a gateway;
#   3. for N in 1 2 3: a gateway whose reviews routes list the first N
#      instances (response cache off, rate limit off) and an nginx over the
#      same N; wrk -c64 on each, ROUNDS rounds in alternating order; CPU time
#      of the gateway, the reviews instances, nginx and PostgreSQL sampled
#      around every run.
# Raw outputs go to a temp dir (printed); bench/distributed_summary.py turns
# them into the markdown of bench/results.md.
#
# Only 127.0.0.1 is targeted. Knobs: BENCH_REVIEWS=2000 BENCH_DURATION=10
# BENCH_ROUNDS=2 BENCH_WARMUP=2 BENCH_SKIP_BUILD=1.
set -euo pipefail

GW_PORT=18080
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REVIEWS=${BENCH_REVIEWS:-2000}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-2}
WARMUP=${BENCH_WARMUP:-2}
CONNECTIONS=64
AUTH_PORT=18081
REVIEW_PORTS=(18082 18083 18084)
NGINX_PORT=18090
ROUTE=/api/content
REPLICA_PORT=5433
ADMIN_EMAIL=admin@example.com
ADMIN_PASSWORD=bench-admin-password-1

unset_zocalo_env
install_bench_packages

OUT=$(mktemp -d /tmp/zocalo-bench-dist.XXXXXX)
RUN=$(mktemp -d /tmp/zocalo-bench-dist-run.XXXXXX)
chmod 755 "$RUN"
PIDS=()          # every zocalo process we started
GATEWAY_PID=""
REVIEW_PIDS=()

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_nginx() {
    [[ -f $RUN/nginx/nginx.pid ]] || return 0
    nginx -q -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" -e "$RUN/nginx/error.log" -s stop || true
    for _ in $(seq 50); do [[ -f $RUN/nginx/nginx.pid ]] || break; sleep 0.1; done
}

cleanup() {
    stop_nginx
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    drop_db
    rm -rf "$RUN" "${BIN_COPY:-}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_zocalo NAME ENV... -- ARGS...: a zocalo process in the background;
# its pid in STARTED (not echoed: a command substitution would run this in a
# subshell and lose track of the process).
STARTED=""
start_zocalo() {
    local name=$1 envs=()
    shift
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    env ZOCALO_LOG__FILTER=warn ZOCALO_PUBLIC_URL="$GW" "${envs[@]}" \
        "$BIN_COPY/zocalo" "$@" >"$OUT/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
    ZOCALO_PID=$STARTED
}

# Gateway settings with the reviews routes on the first N instances.
gateway_config() {
    local n=$1 file=$RUN/gateway-$1.toml upstreams="" i
    for ((i = 0; i < n; i++)); do
        upstreams+="\"http://127.0.0.1:${REVIEW_PORTS[i]}\", "
    done
    {
        echo '[gateway]'
        echo "listen = \"127.0.0.1:$GW_PORT\""
        echo "jwks_url = \"http://127.0.0.1:$AUTH_PORT/.well-known/jwks.json\""
        echo 'rate_limit = { per_second = 0, burst = 1 }'
        echo '[gateway.cache]'
        echo 'enabled = false'
        local prefix
        for prefix in /auth /.well-known; do
            printf '[[gateway.routes]]\nprefix = "%s"\nservice = "auth"\nupstreams = ["http://127.0.0.1:%s"]\n' \
                "$prefix" "$AUTH_PORT"
        done
        for prefix in /api/reviews /api/content /api/cameras /api/lenses /api/compare; do
            printf '[[gateway.routes]]\nprefix = "%s"\nservice = "reviews"\nupstreams = [%s]\n' \
                "$prefix" "$upstreams"
        done
    } >"$file"
    echo "$file"
}

start_gateway() {
    [[ -n $GATEWAY_PID ]] && stop_pid "$GATEWAY_PID"
    start_zocalo "gateway-$1" -- --config "$(gateway_config "$1")" serve gateway
    GATEWAY_PID=$STARTED
    wait_ready "$GW/ready" gateway
}

start_nginx() {
    local n=$1 servers="" i
    stop_nginx
    for ((i = 0; i < n; i++)); do
        servers+="${servers:+; server }127.0.0.1:${REVIEW_PORTS[i]}"
    done
    mkdir -p "$RUN/nginx"
    sed -e "s|@PREFIX@|$RUN/nginx|g" -e "s|@LISTEN@|127.0.0.1:$NGINX_PORT|g" \
        -e "s|@UPSTREAM@|$servers|g" "$BENCH_DIR/nginx.conf" >"$RUN/nginx/nginx.conf"
    nginx -q -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" -e "$RUN/nginx/error.log"
    for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT$ROUTE" && break; sleep 0.1; done
}

nginx_pids() {
    [[ -f $RUN/nginx/nginx.pid ]] || return 0
    local master
    master=$(cat "$RUN/nginx/nginx.pid")
    echo "$master" $(pgrep -P "$master" || true)
}

postgres_pids() { pgrep -u postgres -f 'postgres' || true; }

# wrk run NAME URL SECONDS N: JSON with throughput, latency, errors and the
# CPU (ms) of each group of processes during the run.
run_wrk() {
    local name=$1 url=$2 secs=$3 n=$4
    local reviews=("${REVIEW_PIDS[@]:0:n}")
    local g0 r0 x0 p0 g1 r1 x1 p1
    g0=$(cpu_ms "$GATEWAY_PID"); r0=$(cpu_ms "${reviews[@]}"); x0=$(cpu_ms $(nginx_pids)); p0=$(cpu_ms $(postgres_pids))
    {
        echo "# $(date -u +%FT%TZ) loadavg: $(cat /proc/loadavg)"
        timeout $((secs + 60)) wrk -t2 -c"$CONNECTIONS" -d"${secs}s" --latency --timeout 5s \
            -s "$BENCH_DIR/wrk_report.lua" "$url"
    } >"$OUT/$name.txt" 2>&1
    g1=$(cpu_ms "$GATEWAY_PID"); r1=$(cpu_ms "${reviews[@]}"); x1=$(cpu_ms $(nginx_pids)); p1=$(cpu_ms $(postgres_pids))
    grep '^WRK_JSON ' "$OUT/$name.txt" | sed 's/^WRK_JSON //' |
        jq --argjson g $((g1 - g0)) --argjson r $((r1 - r0)) --argjson x $((x1 - x0)) \
            --argjson p $((p1 - p0)) --argjson n "$n" \
            '. + {instances: $n, gateway_cpu_ms: $g, reviews_cpu_ms: $r, nginx_cpu_ms: $x, postgres_cpu_ms: $p}' \
            >"$OUT/$name.json"
    log "$(jq -r --arg n "$name" '"\($n): \(.rps|floor) req/s, p99 \(.p99_us) µs, non-2xx \(.non_2xx_3xx), cpu gw \(.gateway_cpu_ms) reviews \(.reviews_cpu_ms) nginx \(.nginx_cpu_ms) pg \(.postgres_cpu_ms) ms"' "$OUT/$name.json")"
}

# --- main ------------------------------------------------------------------------
require_ports_free $GW_PORT $AUTH_PORT "${REVIEW_PORTS[@]}" $NGINX_PORT
build_and_copy_binary
"$ROOT/scripts/pg-replica.sh" start >/dev/null
PG_DB=$(create_db bench_dist)
PRIMARY=postgres://postgres@$PG_HOSTPORT/$PG_DB
REPLICA=postgres://postgres@127.0.0.1:$REPLICA_PORT/$PG_DB
machine_info "wrk: $(wrk -v 2>&1 | head -1)" "nginx: $(nginx -v 2>&1)" \
    "replica: $REPLICA" | tee "$OUT/machine.txt" >&2

start_zocalo auth ZOCALO_AUTH__LISTEN=127.0.0.1:$AUTH_PORT ZOCALO_DATA_DIR="$RUN" \
    ZOCALO_ADMIN_EMAIL=$ADMIN_EMAIL ZOCALO_ADMIN_PASSWORD=$ADMIN_PASSWORD -- serve auth
wait_ready "http://127.0.0.1:$AUTH_PORT/ready" auth
for port in "${REVIEW_PORTS[@]}"; do
    start_zocalo "reviews-$port" ZOCALO_REVIEWS__LISTEN=127.0.0.1:$port \
        ZOCALO_REVIEWS__DATABASE_URL="$PRIMARY" ZOCALO_REVIEWS__DATABASE_READ_URL="$REPLICA" \
        ZOCALO_REVIEWS__READ_CACHE_TTL_MS=0 \
        ZOCALO_REVIEWS__JWKS_URL=http://127.0.0.1:$AUTH_PORT/.well-known/jwks.json -- serve reviews
    REVIEW_PIDS+=("$STARTED")
    wait_ready "http://127.0.0.1:$port/ready" "reviews :$port"
done
start_gateway 3

editor_id=$(register editor@example.com bench-editor-password-1 "Bench Editor")
admin=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
api PUT "/auth/users/$editor_id/roles/editor" "$admin" >/dev/null
editor=$(login editor@example.com bench-editor-password-1)
camera=$(api POST /api/cameras "$editor" -H 'content-type: application/json' \
    -d '{"brand":"Sony","model":"A7 IV","sensor":"Full frame","megapixels":33.0,"released":2021}' | jq -er .id)
log "loading $REVIEWS reviews"
python3 "$BENCH_DIR/load_reviews.py" --base "$GW" --token "$editor" --camera "$camera" \
    --count "$REVIEWS" --threads 8 --json-out "$OUT/post.json" >"$OUT/post.txt" 2>&1
# Replicated before reads are measured.
for _ in $(seq 100); do
    [[ $(psql -h 127.0.0.1 -p $REPLICA_PORT -U postgres -d "$PG_DB" -qAtX -c 'SELECT count(*) FROM reviews') -ge $REVIEWS ]] && break
    sleep 0.2
done

for n in 1 2 3; do
    start_gateway "$n"
    start_nginx "$n"
    for target in gateway nginx; do
        url=$GW$ROUTE
        [[ $target == nginx ]] && url=http://127.0.0.1:$NGINX_PORT$ROUTE
        run_wrk "warmup-$target-$n" "$url" "$WARMUP" "$n"
    done
    for round in $(seq "$ROUNDS"); do
        order=(gateway nginx)
        ((round % 2 == 0)) && order=(nginx gateway)
        for target in "${order[@]}"; do
            url=$GW$ROUTE
            [[ $target == nginx ]] && url=http://127.0.0.1:$NGINX_PORT$ROUTE
            run_wrk "wrk-$target-$n-r$round" "$url" "$DURATION" "$n"
        done
    done
done

python3 "$BENCH_DIR/distributed_summary.py" "$OUT" | tee "$OUT/summary.md"
log "raw outputs in $OUT"
