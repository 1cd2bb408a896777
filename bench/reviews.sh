#!/usr/bin/env bash
# Benchmark of GET /api/content (the public review listing, default page of
# 20 reviews) on a stack started with `zocalo up` from the release binary.
#
# For each backend of the reviews service (SQLite, PostgreSQL):
#   1. start `zocalo up` in a temp data dir on fixed loopback ports
#      (gateway 18080, auth 18081, reviews 18082), gateway rate limit raised
#      out of the way, the gateway's response cache off;
#   2. register an editor, have the admin grant the role, create cameras and
#      lenses, and load 10,000 reviews through the gateway with
#      bench/load_reviews.py (POST latencies recorded);
#   3. proxy phase: nginx on 18090 as a plain proxy to the same reviews
#      service (bench/nginx.conf), and bench/bare-proxy (a bare hyper server
#      plus hyper client: the floor of a Rust proxy) on 18091;
#   4. wrk, 64 connections, GET /api/content: direct to reviews, through
#      our gateway, through nginx, through the bare proxy, ROUNDS rounds in
#      alternating order;
#   5. a fixed rate of 1,000 req/s on direct, gateway and nginx: oha
#      (latency-corrected) when installed, else hey (Debian);
#   6. cache phase: `zocalo up` again on the same data with the gateway's
#      response cache on, and nginx with proxy_cache honouring the service's
#      Cache-Control (bench/nginx-cache.conf); steps 4 and 5 again (without
#      the bare proxy), into DIR/<backend>-cache.
# Raw outputs go to a temp dir (printed); a markdown summary is printed at the
# end and saved there as summary.md.
#
# Only 127.0.0.1 is ever targeted. Knobs (environment):
#   BENCH_BACKENDS="sqlite postgres"  BENCH_REVIEWS=10000  BENCH_DURATION=15
#   BENCH_ROUNDS=2  BENCH_WARMUP=3  BENCH_RATE=1000  BENCH_RATE_SECONDS=20
#   BENCH_PG="-h 127.0.0.1 -p 5432 -U postgres" (psql connection options)
#   BENCH_SKIP_BUILD=1 (use the existing release binaries)
#   BENCH_PHASES="proxy cache" (either or both)
#   BENCH_INSTALL_OHA=0 (do not build oha when missing; hey paces instead)
set -euo pipefail

GW_PORT=18080
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BACKENDS=${BENCH_BACKENDS:-"sqlite postgres"}
REVIEWS=${BENCH_REVIEWS:-10000}
DURATION=${BENCH_DURATION:-15}
ROUNDS=${BENCH_ROUNDS:-2}
WARMUP=${BENCH_WARMUP:-3}
RATE=${BENCH_RATE:-1000}
RATE_SECONDS=${BENCH_RATE_SECONDS:-20}
PHASES=${BENCH_PHASES:-"proxy cache"}
CONNECTIONS=64
WRK_THREADS=2
LOADER_THREADS=16

AUTH_PORT=18081
REVIEWS_PORT=18082
NGINX_PORT=18090
FLOOR_PORT=18091
DIRECT=http://127.0.0.1:$REVIEWS_PORT
NGINX=http://127.0.0.1:$NGINX_PORT
FLOOR=http://127.0.0.1:$FLOOR_PORT
ROUTE=/api/content
FLOOR_TARGET=$CARGO_TARGET_DIR/bare-proxy

ADMIN_EMAIL=admin@example.com
ADMIN_PASSWORD=bench-admin-password-1
EDITOR_EMAIL=editor@example.com
EDITOR_PASSWORD=bench-editor-password-1

unset_zocalo_env

# --- 1. tools ---------------------------------------------------------------
install_tools() {
    install_bench_packages
    # Fixed-rate latency: wrk cannot pace requests and wrk2 is not packaged
    # in Debian. oha (crates.io) paces with coordinated-omission correction;
    # it is built in its own target dir so that the workspace's release
    # directory is not locked for the ~10 minutes the build takes. Without
    # it, Debian's hey paces the runs (see run_rate).
    if ! command -v oha >/dev/null && [[ ! -x $HOME/.cargo/bin/oha ]] &&
        [[ ${BENCH_INSTALL_OHA:-1} == 1 ]]; then
        log "installing oha (cargo install --locked, bounded to 20 min)"
        CARGO_TARGET_DIR=$CARGO_TARGET_DIR/tools timeout 1200 \
            cargo install oha --locked --quiet ||
            log "warning: oha did not install; hey will pace the fixed-rate runs"
    fi
    export PATH="$HOME/.cargo/bin:$PATH"
}

# The bare proxy (bench/bare-proxy, not a workspace member), built in a
# target dir of its own under ours and copied next to the zocalo binary.
build_floor() {
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        log "building bench/bare-proxy"
        (cd "$BENCH_DIR/bare-proxy" &&
            CARGO_TARGET_DIR=$FLOOR_TARGET cargo build --release --offline --quiet) ||
            log "warning: bench/bare-proxy did not build; no floor path"
    fi
    if [[ -x $FLOOR_TARGET/release/bare-proxy ]]; then
        cp "$FLOOR_TARGET/release/bare-proxy" "$BIN_COPY/bare-proxy"
    fi
}

# --- helpers ------------------------------------------------------------------
OUT=$(mktemp -d /tmp/zocalo-bench.XXXXXX)   # raw outputs, kept
RUN=""                                      # per-backend runtime dir, removed
NGINX_CONF=""
FLOOR_PID=""
PHASE_DIR=""                                # results of the phase, under OUT

stop_nginx() {
    if [[ -n $NGINX_CONF && -f $RUN/nginx/nginx.pid ]]; then
        nginx -q -c "$NGINX_CONF" -p "$RUN/nginx" -e "$RUN/nginx/error.log" -s stop || true
        for _ in $(seq 50); do [[ -f $RUN/nginx/nginx.pid ]] || break; sleep 0.1; done
    fi
    NGINX_CONF=""
}

stop_floor() {
    if [[ -n $FLOOR_PID ]]; then
        kill "$FLOOR_PID" 2>/dev/null || true
        wait "$FLOOR_PID" 2>/dev/null || true
    fi
    FLOOR_PID=""
}

cleanup() {
    stop_nginx
    stop_floor
    stop_zocalo
    drop_db
    [[ -n $RUN && -d $RUN ]] && rm -rf "$RUN"
    RUN=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The other proxies' processes (nginx's master and workers, the bare proxy):
# their CPU is the "proxy CPU" column.
proxy_pids() {
    local master
    [[ -n $FLOOR_PID ]] && echo "$FLOOR_PID"
    [[ -f $RUN/nginx/nginx.pid ]] || return 0
    master=$(cat "$RUN/nginx/nginx.pid")
    echo "$master" $(pgrep -P "$master" || true)
}

# wrk run: name url seconds; writes name.txt (wrk's report) and name.json.
run_wrk() {
    local name=$1 url=$2 secs=$3 dir=$OUT/$PHASE_DIR
    local z0 n0 z1 n1
    z0=$(cpu_ms "$ZOCALO_PID"); n0=$(cpu_ms $(proxy_pids))
    {
        echo "# $(date -u +%FT%TZ) loadavg: $(cat /proc/loadavg)"
        echo "# wrk -t$WRK_THREADS -c$CONNECTIONS -d${secs}s --latency --timeout 5s $url"
        timeout $((secs + 60)) wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${secs}s" \
            --latency --timeout 5s -s "$BENCH_DIR/wrk_report.lua" "$url"
    } >"$dir/$name.txt" 2>&1
    z1=$(cpu_ms "$ZOCALO_PID"); n1=$(cpu_ms $(proxy_pids))
    grep '^WRK_JSON ' "$dir/$name.txt" | sed 's/^WRK_JSON //' |
        jq --argjson z $((z1 - z0)) --argjson n $((n1 - n0)) \
            '. + {zocalo_cpu_ms: $z, nginx_cpu_ms: $n}' >"$dir/$name.json"
    log "$(jq -r --arg n "$name" '"\($n): \(.rps|floor) req/s, p50 \(.p50_us) µs, p99 \(.p99_us) µs, errors(status/conn/read/timeout) \(.non_2xx_3xx)/\(.connect_errors)/\(.read_errors)/\(.timeouts), cpu zocalo \(.zocalo_cpu_ms) ms proxy \(.nginx_cpu_ms) ms"' "$dir/$name.json")"
}

# Fixed-rate run: name url. oha paces from a schedule and counts latency
# from when each request was due (no coordinated omission). Without oha,
# hey runs CONNECTIONS workers at RATE/CONNECTIONS req/s each; a worker
# whose answer outlasts its tick skips that tick, so its latencies count
# from the actual send (coordinated omission is possible only for answers
# slower than CONNECTIONS/RATE, 64 ms here). Its CSV lists every request.
run_rate() {
    local name=$1 url=$2 dir=$OUT/$PHASE_DIR
    echo "# $(date -u +%FT%TZ) loadavg: $(cat /proc/loadavg)" >"$dir/$name.log"
    if command -v oha >/dev/null; then
        timeout $((RATE_SECONDS + 60)) oha --no-tui --output-format json -q "$RATE" \
            -z "${RATE_SECONDS}s" -c "$CONNECTIONS" --latency-correction -t 5s \
            "$url" >"$dir/$name.json" 2>>"$dir/$name.log"
        log "$(jq -r --arg n "$name" '"\($n): \(.summary.requestsPerSec|floor) req/s, p50 \(.latencyPercentiles.p50*1e6|floor) µs, p99 \(.latencyPercentiles.p99*1e6|floor) µs, statuses \(.statusCodeDistribution|tostring), errors \(.errorDistribution|tostring)"' "$dir/$name.json")"
    elif command -v hey >/dev/null; then
        local per_worker
        per_worker=$(python3 -c "print($RATE / $CONNECTIONS)")
        timeout $((RATE_SECONDS + 60)) hey -z "${RATE_SECONDS}s" -c "$CONNECTIONS" \
            -q "$per_worker" -t 5 -o csv "$url" >"$dir/$name.csv" 2>>"$dir/$name.log"
        log "$name: $(python3 "$BENCH_DIR/summarize.py" --hey "$dir/$name.csv")"
    fi
}

# --- one backend ----------------------------------------------------------------
# `zocalo up` on the backend's data, the gateway's response cache on (true)
# or off (false).
start_stack() {
    local cache=$1
    require_ports_free $GW_PORT $AUTH_PORT $REVIEWS_PORT
    # figment cannot express `rate_limit = None` (the default is Some and TOML
    # has no null), so the limit is raised far beyond what wrk can reach.
    cat >"$RUN/zocalo.toml" <<EOF
[gateway.rate_limit]
per_second = 1000000000.0
burst = 1000000000
[gateway.cache]
enabled = $cache
EOF
    log "$BACKEND: starting zocalo up (gateway response cache: $cache)"
    env "${STACK_ENV[@]}" "$BIN_COPY/zocalo" --config "$RUN/zocalo.toml" up --port "$GW_PORT" \
        --data-dir "$RUN/data" >>"$STACK_LOG" 2>&1 &
    ZOCALO_PID=$!
    wait_ready "$GW/ready" gateway
    wait_ready "$DIRECT/ready" reviews
}

# nginx on NGINX_PORT in front of the reviews service, from a template in
# bench/.
start_nginx() {
    local template=$1
    NGINX_CONF=$RUN/nginx/nginx.conf
    sed -e "s|@PREFIX@|$RUN/nginx|g" -e "s|@LISTEN@|127.0.0.1:$NGINX_PORT|g" \
        -e "s|@UPSTREAM@|127.0.0.1:$REVIEWS_PORT|g" "$BENCH_DIR/$template" >"$NGINX_CONF"
    nginx -q -c "$NGINX_CONF" -p "$RUN/nginx" -e "$RUN/nginx/error.log"
    for _ in $(seq 50); do curl -fsS -o /dev/null "$NGINX$ROUTE" 2>/dev/null && break; sleep 0.1; done
}

start_floor() {
    "$BIN_COPY/bare-proxy" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$REVIEWS_PORT" \
        >"$OUT/$PHASE_DIR/bare-proxy.log" 2>&1 &
    FLOOR_PID=$!
    for _ in $(seq 50); do curl -fsS -o /dev/null "$FLOOR$ROUTE" 2>/dev/null && break; sleep 0.1; done
}

# An editor, equipment, and REVIEWS reviews loaded through the gateway.
load_data() {
    local editor_id admin editor
    editor_id=$(register "$EDITOR_EMAIL" "$EDITOR_PASSWORD" "Bench Editor")
    admin=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
    api PUT "/auth/users/$editor_id/roles/editor" "$admin" >/dev/null
    editor=$(login "$EDITOR_EMAIL" "$EDITOR_PASSWORD")
    local targets=() body
    while IFS= read -r body; do
        targets+=(--camera "$(api POST /api/cameras "$editor" -H 'content-type: application/json' -d "$body" | jq -er .id)")
    done <<'EOF'
{"brand":"Fujifilm","model":"X-T5","sensor":"APS-C","megapixels":40.2,"released":2022}
{"brand":"Sony","model":"A7 IV","sensor":"Full frame","megapixels":33.0,"released":2021}
{"brand":"Canon","model":"EOS R6 Mark II","sensor":"Full frame","megapixels":24.2,"released":2022}
{"brand":"Nikon","model":"Z6 III","sensor":"Full frame","megapixels":24.5,"released":2024}
{"brand":"OM System","model":"OM-1","sensor":"Micro Four Thirds","megapixels":20.4,"released":2022}
{"brand":"Ricoh","model":"GR IIIx","sensor":"APS-C","megapixels":24.2,"released":2021}
EOF
    while IFS= read -r body; do
        targets+=(--lens "$(api POST /api/lenses "$editor" -H 'content-type: application/json' -d "$body" | jq -er .id)")
    done <<'EOF'
{"brand":"Sigma","model":"24-70mm F2.8 DG DN II Art","mount":"Sony E","focal_min_mm":24,"focal_max_mm":70,"max_aperture":2.8}
{"brand":"Fujifilm","model":"XF 23mm F1.4 R LM WR","mount":"Fujifilm X","focal_min_mm":23,"focal_max_mm":23,"max_aperture":1.4}
{"brand":"Nikon","model":"Z 50mm f/1.8 S","mount":"Nikon Z","focal_min_mm":50,"focal_max_mm":50,"max_aperture":1.8}
EOF
    log "$BACKEND: loading $REVIEWS reviews through the gateway ($LOADER_THREADS threads)"
    python3 "$BENCH_DIR/load_reviews.py" --base "$GW" --token "$editor" "${targets[@]}" \
        --count "$REVIEWS" --threads "$LOADER_THREADS" --json-out "$OUT/$BACKEND/post.json" \
        2>&1 | tee "$OUT/$BACKEND/post.txt" >&2
}

# wrk rounds over the paths given (direct gateway nginx [floor]), then the
# fixed-rate runs on direct, gateway and nginx; results in OUT/PHASE_DIR.
measure_paths() {
    local paths=("$@") url code items target round i
    declare -A URLS=([direct]=$DIRECT$ROUTE [gateway]=$GW$ROUTE [nginx]=$NGINX$ROUTE [floor]=$FLOOR$ROUTE)
    # Same answer on every path?
    for target in "${paths[@]}"; do
        url=${URLS[$target]}
        code=$(curl -sS -o "$RUN/page.json" -w '%{http_code}' "$url")
        items=$(jq '.items | length' "$RUN/page.json")
        [[ $code == 200 && $items == 20 ]] || die "$url answered $code with $items items"
        curl -sS -D - -o /dev/null "$url" >"$OUT/$PHASE_DIR/headers-$target.txt"
    done
    wc -c <"$RUN/page.json" >"$OUT/$PHASE_DIR/page-bytes.txt"

    log "$PHASE_DIR: warm-up ${WARMUP}s each"
    for target in "${paths[@]}"; do run_wrk "warmup-$target" "${URLS[$target]}" "$WARMUP"; done
    local reversed=()
    for ((i = ${#paths[@]} - 1; i >= 0; i--)); do reversed+=("${paths[i]}"); done
    for round in $(seq "$ROUNDS"); do
        local this=("${paths[@]}")
        ((round % 2 == 0)) && this=("${reversed[@]}")
        for target in "${this[@]}"; do
            run_wrk "wrk-$target-r$round" "${URLS[$target]}" "$DURATION"
        done
    done
    for target in direct gateway nginx; do
        run_rate "rate-$target" "${URLS[$target]}"
    done
}

bench_backend() {
    BACKEND=$1
    PHASE_DIR=$BACKEND
    mkdir -p "$OUT/$BACKEND"
    STACK_LOG=$OUT/$BACKEND/zocalo.log
    RUN=$(mktemp -d /tmp/zocalo-bench-run.XXXXXX)
    chmod 755 "$RUN"
    mkdir -p "$RUN/data" "$RUN/nginx"
    require_ports_free $NGINX_PORT $FLOOR_PORT
    STACK_ENV=(
        ZOCALO_LOG__FILTER=warn
        ZOCALO_AUTH__LISTEN=127.0.0.1:$AUTH_PORT
        ZOCALO_REVIEWS__LISTEN=127.0.0.1:$REVIEWS_PORT
        ZOCALO_ADMIN_EMAIL=$ADMIN_EMAIL
        ZOCALO_ADMIN_PASSWORD=$ADMIN_PASSWORD
    )
    if [[ $BACKEND == postgres ]]; then
        PG_DB=$(create_db bench_reviews)
        STACK_ENV+=("ZOCALO_REVIEWS__DATABASE_URL=postgres://postgres@$PG_HOSTPORT/$PG_DB")
        log "postgres: reviews in database $PG_DB (auth stays on SQLite)"
    fi
    start_stack false
    load_data

    if [[ " $PHASES " == *" proxy "* ]]; then
        start_nginx nginx.conf
        local paths=(direct gateway nginx)
        if [[ -x $BIN_COPY/bare-proxy ]]; then
            start_floor
            paths+=(floor)
        fi
        measure_paths "${paths[@]}"
        stop_floor
        stop_nginx
    fi

    if [[ " $PHASES " == *" cache "* ]]; then
        PHASE_DIR=$BACKEND-cache
        mkdir -p "$OUT/$PHASE_DIR"
        stop_zocalo
        start_stack true
        start_nginx nginx-cache.conf
        measure_paths direct gateway nginx
    fi

    cleanup
}

# --- main -------------------------------------------------------------------------
install_tools
# Run a private copy of the binary (see build_and_copy_binary).
build_and_copy_binary
build_floor
trap 'cleanup; rm -rf "$BIN_COPY"' EXIT
sha256sum "$BIN" | cut -c1-16 >"$OUT/binary-sha256.txt"

machine_info "wrk: $(wrk -v 2>&1 | head -1)" "nginx: $(nginx -v 2>&1)" \
    "oha: $(oha --version 2>/dev/null || echo none)" \
    "hey: $(dpkg-query -W -f '${Version}' hey 2>/dev/null || echo none)" |
    tee "$OUT/machine.txt" >&2

for backend in $BACKENDS; do
    bench_backend "$backend"
done

python3 "$BENCH_DIR/summarize.py" "$OUT" | tee "$OUT/summary.md"
log "raw outputs in $OUT"
