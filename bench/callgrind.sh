#!/usr/bin/env bash
# Instructions per request of the `zocalo up` process for GET /api/content,
# through the gateway and direct to the reviews service, counted by valgrind
# callgrind. Unlike wall-clock or CPU-time figures, instruction counts do not
# depend on what else runs on the machine, so a change to the proxy path can
# be measured on a busy machine.
#
#   1. start `zocalo up` (release binary) normally in a temp data dir, load a
#      few hundred reviews through the gateway, stop it;
#   2. start it again from the same data dir under
#      `valgrind --tool=callgrind`; warm up both paths, then for each path
#      zero the counters, send REQUESTS requests with hey (CONCURRENCY
#      keep-alive connections) and dump the counters;
#   3. run bench/bare-proxy under callgrind in front of the (native) reviews
#      service: the instructions of a bare hyper proxy, the floor;
#   4. print instructions per request for each path (less the background
#      work of an idle stretch, scaled to each dump's duration), their
#      difference (the gateway's own cost), and the functions that make up
#      the difference.
#
# The reviews service's read cache TTL is raised to 10 minutes so that both
# paths measure the cached answer every time (no refresh inside a run).
# Knobs: BENCH_CG_REQUESTS=3000 BENCH_CG_CONCURRENCY=8 BENCH_CG_REVIEWS=300
#        BENCH_SKIP_BUILD=1 BENCH_CG_BIN=path (measure another binary)
#        BENCH_GATEWAY_CACHE=off|on
# Raw outputs (callgrind files, hey reports) stay in /tmp/zocalo-callgrind.*.
set -euo pipefail

GW_PORT=18180
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${BENCH_CG_REQUESTS:-3000}
CONCURRENCY=${BENCH_CG_CONCURRENCY:-8}
REVIEWS=${BENCH_CG_REVIEWS:-300}
IDLE_SECONDS=${BENCH_CG_IDLE_SECONDS:-10}
AUTH_PORT=18181
REVIEWS_PORT=18182
DIRECT=http://127.0.0.1:$REVIEWS_PORT
ROUTE=/api/content
ADMIN_EMAIL=admin@example.com
ADMIN_PASSWORD=bench-admin-password-1
EDITOR_EMAIL=editor@example.com
EDITOR_PASSWORD=bench-editor-password-1

unset_zocalo_env
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
command -v hey >/dev/null || { apt-get update -qq && apt-get install -y -qq hey >/dev/null; }
install_bench_packages

OUT=$(mktemp -d /tmp/zocalo-callgrind.XXXXXX)
RUN=$(mktemp -d /tmp/zocalo-callgrind-run.XXXXXX)
trap 'stop_zocalo; rm -rf "$RUN" "${BIN_COPY:-}"' EXIT

if [[ -n ${BENCH_CG_BIN:-} ]]; then
    BIN=$BENCH_CG_BIN
    BENCH_SKIP_BUILD=1
fi
build_and_copy_binary
sha256sum "$BIN" | cut -c1-16 >"$OUT/binary-sha256.txt"

cat >"$RUN/zocalo.toml" <<EOF
[gateway.rate_limit]
per_second = 1000000000.0
burst = 1000000000
[gateway.cache]
enabled = $([[ ${BENCH_GATEWAY_CACHE:-off} == on ]] && echo true || echo false)
EOF
ENV=(
    ZOCALO_LOG__FILTER=warn
    ZOCALO_AUTH__LISTEN=127.0.0.1:$AUTH_PORT
    ZOCALO_REVIEWS__LISTEN=127.0.0.1:$REVIEWS_PORT
    ZOCALO_REVIEWS__READ_CACHE_TTL_MS=600000
    ZOCALO_ADMIN_EMAIL=$ADMIN_EMAIL
    ZOCALO_ADMIN_PASSWORD=$ADMIN_PASSWORD
)
STACK_LOG=$OUT/zocalo.log

start_stack() { # [wrapper...]
    require_ports_free $GW_PORT $AUTH_PORT $REVIEWS_PORT
    env "${ENV[@]}" "$@" "$BIN_COPY/zocalo" --config "$RUN/zocalo.toml" up --port "$GW_PORT" \
        --data-dir "$RUN/data" >>"$STACK_LOG" 2>&1 &
    ZOCALO_PID=$!
    wait_ready "$GW/ready" gateway
    wait_ready "$DIRECT/ready" reviews
}

# --- 1. data, without valgrind (argon2 under valgrind would take minutes) ---
mkdir -p "$RUN/data"
log "loading $REVIEWS reviews"
start_stack
editor_id=$(register "$EDITOR_EMAIL" "$EDITOR_PASSWORD" "Bench Editor")
admin=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
api PUT "/auth/users/$editor_id/roles/editor" "$admin" >/dev/null
editor=$(login "$EDITOR_EMAIL" "$EDITOR_PASSWORD")
camera=$(api POST /api/cameras "$editor" -H 'content-type: application/json' \
    -d '{"brand":"Fujifilm","model":"X-T5","sensor":"APS-C","megapixels":40.2,"released":2022}' | jq -er .id)
python3 "$BENCH_DIR/load_reviews.py" --base "$GW" --token "$editor" --camera "$camera" \
    --count "$REVIEWS" --threads 4 >"$OUT/post.txt" 2>&1
stop_zocalo

# --- 2. the same stack under callgrind ---
log "starting zocalo under callgrind"
start_stack valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" \
    --dump-instr=no --collect-jumps=no
valgrind_pid=$ZOCALO_PID
for url in "$GW$ROUTE" "$DIRECT$ROUTE"; do
    hey -n 300 -c "$CONCURRENCY" "$url" >/dev/null
done

# Background work (outbox relays, pollers, timers) runs whatever the load;
# an idle dump gives its rate, which the summary subtracts from each dump
# in proportion to how long that dump took.
idle() {
    callgrind_control --zero "$valgrind_pid" >/dev/null
    sleep "$IDLE_SECONDS"
    callgrind_control --dump=idle "$valgrind_pid" >/dev/null
    echo "$IDLE_SECONDS" >"$OUT/seconds-idle.txt"
}

measure() { # name url
    local name=$1 url=$2 t0 t1
    callgrind_control --zero "$valgrind_pid" >/dev/null
    t0=$(date +%s.%N)
    hey -n "$REQUESTS" -c "$CONCURRENCY" -t 60 "$url" >"$OUT/hey-$name.txt"
    t1=$(date +%s.%N)
    callgrind_control --dump="$name" "$valgrind_pid" >/dev/null
    python3 -c "print($t1 - $t0)" >"$OUT/seconds-$name.txt"
    grep -q "\[200\]	$REQUESTS responses" "$OUT/hey-$name.txt" ||
        die "$name: not $REQUESTS × 200, see $OUT/hey-$name.txt"
    log "$name: $REQUESTS requests counted in $(cat "$OUT/seconds-$name.txt") s"
}
idle
measure gateway "$GW$ROUTE"
measure direct "$DIRECT$ROUTE"
measure gateway2 "$GW$ROUTE"
measure direct2 "$DIRECT$ROUTE"
stop_zocalo

# The floor: bench/bare-proxy (hyper server + hyper client) under callgrind
# in front of the same reviews service, which now runs natively; its dump
# is the proxy's own cost.
FLOOR_BIN=${BENCH_CG_FLOOR_BIN:-$CARGO_TARGET_DIR/bare-proxy/release/bare-proxy}
if [[ -x $FLOOR_BIN ]]; then
    start_stack
    valgrind --tool=callgrind --callgrind-out-file="$OUT/floor.out.%p" --dump-instr=no \
        --collect-jumps=no "$FLOOR_BIN" 127.0.0.1:18191 "127.0.0.1:$REVIEWS_PORT" \
        >"$OUT/bare-proxy.log" 2>&1 &
    valgrind_pid=$!
    for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:18191$ROUTE" 2>/dev/null && break; sleep 0.2; done
    hey -n 300 -c "$CONCURRENCY" "http://127.0.0.1:18191$ROUTE" >/dev/null
    measure floor "http://127.0.0.1:18191$ROUTE"
    kill "$valgrind_pid"; wait "$valgrind_pid" 2>/dev/null || true
    stop_zocalo
    for f in "$OUT"/floor.out.*.*; do mv "$f" "$OUT/callgrind.out.floor.${f##*.}"; done
fi

python3 "$BENCH_DIR/callgrind_summary.py" "$OUT" "$REQUESTS" | tee "$OUT/summary.md"
log "raw outputs in $OUT"
