#!/usr/bin/env bash
# Benchmark of the cinema's hot spot: one popular showtime whose live seat
# map everybody reads while buyers take its seats one at a time, on a stack
# started with `zocalo up` (embedded: SQLite and the SQLite bus) from the
# release binary.
#
#   1. starts `zocalo up` in a temp data dir on fixed loopback ports
#      (gateway 18080, auth 18081, cinema-command 18085, cinema-query 18086),
#      the gateway rate limit off;
#   2. the admin creates a chain, a cinema, a room of 26 × 60 = 1,560 seats,
#      a movie and one showtime; BUYERS customers register and sign in;
#   3. read-only, wrk -t2 -c32 for DURATION s each: the reference, GET /live
#      on the query service (the cheapest answer the same process gives),
#      then the seat map straight from the query service, then through the
#      gateway;
#   4. mixed, bench/cinema_load.py for DURATION s: READERS threads read the
#      seat map through the gateway while BUYERS threads buy one seat per
#      request until the showtime is sold out; every 10th purchase is
#      watched on the query side until its seat shows as sold (the lag a
#      customer sees); meanwhile cinema_projection_lag_seconds is sampled
#      from the query service's /metrics every 0.5 s;
#   5. checks that the seat map's sold count equals the purchases answered
#      201 (nothing sold twice, nothing lost by the projection).
# Raw outputs stay in a temp dir (printed); a markdown summary is printed.
#
# Only 127.0.0.1 is ever targeted. Knobs: BENCH_DURATION=15 BENCH_READERS=16
# BENCH_BUYERS=16 BENCH_SKIP_BUILD=1
set -euo pipefail

GW_PORT=18080
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${BENCH_DURATION:-15}
READERS=${BENCH_READERS:-16}
BUYERS=${BENCH_BUYERS:-16}
AUTH_PORT=18081
COMMAND_PORT=18085
QUERY_PORT=18086
QUERY=http://127.0.0.1:$QUERY_PORT
ADMIN_EMAIL=admin@bench.invalid
PASSWORD=bench-password-1
((BUYERS <= 40)) || die "BENCH_BUYERS must be at most 40 (login rate limit)"

unset_zocalo_env
install_bench_packages
OUT=$(mktemp -d /tmp/zocalo-bench-cinema.XXXXXX)
RUN=$(mktemp -d /tmp/zocalo-bench-run.XXXXXX)
STACK_LOG=$OUT/zocalo.log
SAMPLER_PID=""
cleanup() {
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null && wait "$SAMPLER_PID" 2>/dev/null
    stop_zocalo
    rm -rf "$RUN"
    [[ -n $BIN_COPY ]] && rm -rf "$BIN_COPY"
    true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_and_copy_binary
require_ports_free $GW_PORT $AUTH_PORT $COMMAND_PORT $QUERY_PORT
cat >"$RUN/zocalo.toml" <<TOML
[gateway.rate_limit]
per_second = 0.0
burst = 1
TOML
log "starting zocalo up (raw outputs in $OUT)"
env ZOCALO_LOG__FILTER=warn ZOCALO_ADMIN_EMAIL=$ADMIN_EMAIL ZOCALO_ADMIN_PASSWORD=$PASSWORD \
    ZOCALO_AUTH__LISTEN=127.0.0.1:$AUTH_PORT \
    ZOCALO_CINEMA_COMMAND__LISTEN=127.0.0.1:$COMMAND_PORT \
    ZOCALO_CINEMA_QUERY__LISTEN=127.0.0.1:$QUERY_PORT \
    "$BIN_COPY/zocalo" up --port $GW_PORT --data-dir "$RUN/data" --config "$RUN/zocalo.toml" \
    >"$STACK_LOG" 2>&1 &
ZOCALO_PID=$!
wait_ready "$GW/live" gateway
wait_ready "$QUERY/live" cinema-query

admin=$(login $ADMIN_EMAIL $PASSWORD)
post() { api POST "$1" "$admin" -H 'content-type: application/json' \
    -H "idempotency-key: $(cat /proc/sys/kernel/random/uuid)" -d "$2" | jq -er "$3"; }
chain=$(post /api/cinema/chains '{"name": "CineManzana"}' .chain_id)
cinema=$(post /api/cinema/cinemas "{\"chain_id\": \"$chain\", \"name\": \"Centro\", \"city\": \"Puebla\", \"address\": \"5 de Mayo 10\"}" .cinema_id)
room=$(post /api/cinema/rooms "{\"cinema_id\": \"$cinema\", \"name\": \"Sala 1\", \"rows\": 26, \"seats_per_row\": 60}" .room_id)
movie=$(post /api/cinema/movies '{"title": "Roma", "duration_min": 135}' .movie_id)
starts=$(date -u -d '+2 days' +%Y-%m-%dT20:00:00Z)
showtime=$(post /api/cinema/showtimes "{\"movie_id\": \"$movie\", \"room_id\": \"$room\", \"starts_at\": \"$starts\", \"prices\": [{\"class\": \"standard\", \"cents\": 7500}]}" .showtime_id)
log "showtime $showtime: 1560 seats"
: >"$RUN/tokens"
for i in $(seq "$BUYERS"); do
    register "buyer$i@bench.invalid" $PASSWORD "Buyer $i" >/dev/null
    login "buyer$i@bench.invalid" $PASSWORD >>"$RUN/tokens"
done
SEATS=/api/cinema/showtimes/$showtime/seats
for _ in $(seq 100); do curl -fsS -o /dev/null "$QUERY$SEATS" 2>/dev/null && break; sleep 0.1; done

wrk_run() { # name url
    log "wrk $1"
    wrk -t2 -c32 -d"${DURATION}s" --latency "$2" >"$OUT/wrk-$1.txt"
}
wrk_run reference "$QUERY/live"
wrk_run seats-direct "$QUERY$SEATS"
wrk_run seats-gateway "$GW$SEATS"

sample_lag() {
    while sleep 0.5; do
        curl -fsS --max-time 2 "$QUERY/metrics" 2>/dev/null |
            awk -v t="$(date +%s.%N)" '/^cinema_projection_lag_seconds/ { print t "," $2 }' || true
    done
}
sample_lag >"$OUT/lag.csv" &
SAMPLER_PID=$!
log "mixed load: $READERS readers, $BUYERS buyers, ${DURATION}s"
python3 "$BENCH_DIR/cinema_load.py" --base "$GW" --query-base "$QUERY" --showtime "$showtime" \
    --tokens "$RUN/tokens" --readers "$READERS" --buyers "$BUYERS" --duration "$DURATION" \
    >"$OUT/mixed.json"
sleep 2
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
bought=$(jq .purchases.count "$OUT/mixed.json")
# The read model catches up within the lag; wait for it (bounded).
for _ in $(seq 300); do
    curl -fsS "$QUERY$SEATS" >"$OUT/seats-after.json"
    sold=$(jq .sold "$OUT/seats-after.json")
    [[ $sold == "$bought" ]] && break
    sleep 0.1
done
machine_info "wrk: $(wrk -v 2>&1 | head -1)" >"$OUT/machine.txt"

rps() { awk '/^Requests\/sec/ { print $2 }' "$OUT/wrk-$1.txt"; }
p99() { awk '$1 == "99%" { print $2 }' "$OUT/wrk-$1.txt"; }
ref=$(rps reference)
ratio() { python3 -c "print(f'{float(\"$1\") / float(\"$ref\"):.2f}')"; }
m=$OUT/mixed.json
{
    echo "## Run of $(date -u +%F) (raw: $OUT)"
    echo
    echo '```'
    cat "$OUT/machine.txt"
    echo '```'
    echo
    echo "Read-only, wrk -t2 -c32, ${DURATION} s each:"
    echo
    echo "| what | req/s | p99 | ÷ reference |"
    echo "|---|---|---|---|"
    echo "| reference: GET /live on cinema-query | $ref | $(p99 reference) | 1.00 |"
    echo "| seat map, straight from cinema-query | $(rps seats-direct) | $(p99 seats-direct) | $(ratio "$(rps seats-direct)") |"
    echo "| seat map through the gateway | $(rps seats-gateway) | $(p99 seats-gateway) | $(ratio "$(rps seats-gateway)") |"
    echo
    echo "Mixed, $READERS readers through the gateway + $BUYERS buyers of one seat each:"
    echo
    echo "| what | value |"
    echo "|---|---|"
    echo "| seat-map reads/s (while buying) | $(jq .reads_per_s $m) (p99 $(jq .reads.p99_ms $m | cut -c1-6) ms, errors $(jq .read_errors $m)) |"
    echo "| purchases/s | $(jq .purchases_per_s $m) over $(jq .purchase_window_s $m) s (p50 $(jq .purchases.p50_ms $m | cut -c1-6) ms, p99 $(jq .purchases.p99_ms $m | cut -c1-6) ms, errors $(jq .purchase_errors $m)) |"
    echo "| purchases answered 201 / seats sold in the read model | $bought / $sold |"
    echo "| sold-out answers (409) | $(jq .sold_out_answers $m) |"
    echo "| seat visible on the query side after the 201 | p50 $(jq .seat_visible_after_purchase.p50_ms $m | cut -c1-6) ms, p99 $(jq .seat_visible_after_purchase.p99_ms $m | cut -c1-6) ms, max $(jq .seat_visible_after_purchase.max_ms $m | cut -c1-6) ms ($(jq .seat_visible_after_purchase.count $m) watched, $(jq .lag_not_seen_within_30s $m) not seen) |"
    echo "| cinema_projection_lag_seconds, max sampled | $(cut -d, -f2 "$OUT/lag.csv" | sort -g | tail -1) |"
} | tee "$OUT/summary.md"
[[ $sold == "$bought" ]] || die "sold $sold seats but answered $bought purchases"
