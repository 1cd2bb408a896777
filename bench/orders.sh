#!/usr/bin/env bash
# Benchmark of the book store: sustained order creation mixed with browsing,
# on a stack started with `zocalo up` from the release binary, with an
# oversell check at the end.
#
# For each setup:
#   embedded        SQLite for every service and the SQLite bus (defaults);
#   postgres-nats   catalog and orders on fresh PostgreSQL databases
#                   (dropped at the end), the orders bus on NATS JetStream
#                   with a private stream prefix (streams deleted at the end);
#                   auth stays on SQLite;
# the script:
#   1. starts `zocalo up` in a temp data dir on fixed loopback ports
#      (gateway 18080, auth 18081, reviews 18082, catalog 18083,
#      orders 18084), the gateway rate limit off (`per_second = 0`),
#      shipping steps of 200 ms;
#   2. registers a seller and BUYERS buyers, logs them in; the seller lists
#      BOOKS books with STOCK copies each;
#   3. runs bench/orders_load.py for WARMUP (browse only, not recorded) +
#      DURATION seconds at CONCURRENCY threads: ORDER_SHARE of the requests
#      are POST /api/orders (1-2 books, quantity 1-2, own Idempotency-Key),
#      the rest GET /api/books (q/author/price/sort/limit variations) and
#      GET /api/books/{id}; every 10th accepted order is polled
#      until it is paid or later, or failed;
#   4. waits (bounded) until no order is pending/reserved or holds stock,
#      then until every paid order is delivered, and checks per book that
#      initial - final stock == copies in paid/shipped/delivered orders;
#   (meanwhile, every 5 s, backlog.csv gets the unsent outbox rows and the
#   job queue depth and counters from the orders service's /metrics;)
#   5. reads, for every order, its creation time and when its payment was
#      captured (or when it failed) from the orders database (read-only), and
#      counts the warnings, errors and panics in zocalo's log.
# Raw outputs go to a temp dir (printed); a markdown summary is printed at the
# end and saved there as summary.md.
#
# Only 127.0.0.1 is ever targeted. Knobs (environment):
#   BENCH_SETUPS="embedded postgres-nats"  BENCH_DURATION=30  BENCH_WARMUP=3
#   BENCH_CONCURRENCY=32  BENCH_ORDER_SHARE=0.2  BENCH_BUYERS=32
#   BENCH_BOOKS=20  BENCH_STOCK=200  BENCH_SETTLE_MAX=240
#   BENCH_PG="-h 127.0.0.1 -p 5432 -U postgres"  BENCH_NATS=nats://127.0.0.1:4222
#   BENCH_EXTRA_ENV="ZOCALO_ORDERS__WORKER_CONCURRENCY=16" (more settings for
#   the stack, space-separated)
#   BENCH_SKIP_BUILD=1 (use the existing release binary)
set -euo pipefail

GW_PORT=18080
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SETUPS=${BENCH_SETUPS:-"embedded postgres-nats"}
DURATION=${BENCH_DURATION:-30}
WARMUP=${BENCH_WARMUP:-3}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
ORDER_SHARE=${BENCH_ORDER_SHARE:-0.2}
BUYERS=${BENCH_BUYERS:-32}
BOOKS=${BENCH_BOOKS:-20}
# 200 copies of each of 20 books: at 145-230 orders/s (this 2-core box) the
# 8-14 most popular books sell out during a 30 s run and the others do not.
STOCK=${BENCH_STOCK:-200}
# PostgreSQL + NATS settled ~50 s after a 30 s run here.
SETTLE_MAX=${BENCH_SETTLE_MAX:-240}
NATS=${BENCH_NATS:-nats://127.0.0.1:4222}
read -r -a EXTRA_ENV <<<"${BENCH_EXTRA_ENV:-}"
SHIPPING_STEP_MS=200

AUTH_PORT=18081
REVIEWS_PORT=18082
CATALOG_PORT=18083
ORDERS_PORT=18084
PASSWORD=bench-password-1

# auth allows 50 logins per IP in a burst, then 5/s.
((BUYERS <= 45)) || die "BENCH_BUYERS must be at most 45 (login rate limit)"
[[ $NATS == nats://127.0.0.1:* ]] || die "BENCH_NATS must be on 127.0.0.1"
for setting in "${EXTRA_ENV[@]}"; do
    [[ $setting == ZOCALO_*=* ]] || die "BENCH_EXTRA_ENV: $setting is not ZOCALO_…=value"
done

unset_zocalo_env
for tool in curl jq psql python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

OUT=$(mktemp -d /tmp/zocalo-bench-orders.XXXXXX)   # raw outputs, kept
RUN=""                                             # per-setup runtime dir, removed
NATS_PREFIX=""
PROBE_PID=""

stop_probe() {
    if [[ -n $PROBE_PID ]]; then
        pkill -P "$PROBE_PID" 2>/dev/null || true   # its sleep
        kill "$PROBE_PID" 2>/dev/null || true
        wait "$PROBE_PID" 2>/dev/null || true
        PROBE_PID=""
    fi
}

delete_streams() {
    if [[ -n $NATS_PREFIX ]]; then
        python3 "$BENCH_DIR/nats_streams.py" --url "$NATS" --prefix "$NATS_PREFIX" delete >&2 ||
            log "warning: could not delete the NATS streams ${NATS_PREFIX}_*"
        NATS_PREFIX=""
    fi
}

cleanup() {
    stop_probe
    stop_zocalo
    drop_db
    delete_streams
    [[ -n $RUN && -d $RUN ]] && rm -rf "$RUN"
    RUN=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ISBN-13 with the right check digit for 12 given digits.
isbn13() {
    local base=$1 sum=0 i
    for ((i = 0; i < 12; i++)); do ((sum += (i % 2 ? 3 : 1) * ${base:i:1})); done
    echo "$base$(((10 - sum % 10) % 10))"
}

# Title|author|price; popularity in the load follows this order (Zipf).
TITLES=(
    "Rayuela|Julio Cortázar|18.50"
    "Cien años de soledad|Gabriel García Márquez|22.00"
    "Pedro Páramo|Juan Rulfo|12.00"
    "Ficciones|Jorge Luis Borges|14.75"
    "La ciudad y los perros|Mario Vargas Llosa|16.20"
    "El túnel|Ernesto Sabato|9.90"
    "Los detectives salvajes|Roberto Bolaño|24.00"
    "La casa de los espíritus|Isabel Allende|15.00"
    "Aura|Carlos Fuentes|8.50"
    "Como agua para chocolate|Laura Esquivel|11.30"
    "El Aleph|Jorge Luis Borges|13.40"
    "Conversación en La Catedral|Mario Vargas Llosa|21.10"
    "Crónica de una muerte anunciada|Gabriel García Márquez|10.80"
    "Bestiario|Julio Cortázar|9.60"
    "El llano en llamas|Juan Rulfo|10.00"
    "Los ríos profundos|José María Arguedas|17.25"
    "Sobre héroes y tumbas|Ernesto Sabato|19.90"
    "2666|Roberto Bolaño|29.00"
    "La muerte de Artemio Cruz|Carlos Fuentes|16.60"
    "Hijo de hombre|Augusto Roa Bastos|14.10"
)
CONDITIONS=(new like_new good acceptable)

# Every 5 s until killed: where orders wait. Unsent outbox rows in the orders
# database (the relay has not handed them to the bus yet), and the job queue
# depth and processed-job counters from the orders service's /metrics.
# Appends "epoch,outbox_unsent,metric lines…" to FILE.
probe_backlog() { # file orders-db-name-or-sqlite-path
    local file=$1 db=$2 unsent metrics
    while sleep 5; do
        if [[ $db == /* ]]; then
            unsent=$(python3 -c 'import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=2)
print(db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])' "$db" 2>/dev/null || echo "?")
        else
            unsent=$(psql "${PG[@]}" -qAtX -d "$db" \
                -c "SELECT count(*) FROM outbox WHERE sent_at IS NULL" 2>/dev/null || echo "?")
        fi
        metrics=$(curl -fsS --max-time 2 "http://127.0.0.1:$ORDERS_PORT/metrics" 2>/dev/null |
            grep -E '^(job_queue_depth|jobs_processed_total|outbox_relayed_total)' | tr '\n' ';' || true)
        echo "$(date +%s.%N | cut -c1-14),$unsent,$metrics" >>"$file"
    done
}

# --- one setup ------------------------------------------------------------------
bench_setup() {
    SETUP=$1
    local dir=$OUT/$SETUP
    mkdir -p "$dir"
    STACK_LOG=$dir/zocalo.log
    RUN=$(mktemp -d /tmp/zocalo-bench-run.XXXXXX)
    mkdir -p "$RUN/data"
    require_ports_free $GW_PORT $AUTH_PORT $REVIEWS_PORT $CATALOG_PORT $ORDERS_PORT

    cat >"$RUN/zocalo.toml" <<EOF
# per_second = 0 turns the gateway's rate limit off.
[gateway.rate_limit]
per_second = 0.0
burst = 1
EOF
    local env=(
        ZOCALO_LOG__FILTER=warn
        ZOCALO_AUTH__LISTEN=127.0.0.1:$AUTH_PORT
        ZOCALO_REVIEWS__LISTEN=127.0.0.1:$REVIEWS_PORT
        ZOCALO_CATALOG__LISTEN=127.0.0.1:$CATALOG_PORT
        ZOCALO_ORDERS__LISTEN=127.0.0.1:$ORDERS_PORT
        ZOCALO_ORDERS__SHIPPING_STEP_MS=$SHIPPING_STEP_MS
        "${EXTRA_ENV[@]}"
    )
    local catalog_db="" orders_db=""
    if [[ $SETUP == postgres-nats ]]; then
        catalog_db=$(create_db bench_catalog)
        PG_DB="$catalog_db"
        orders_db=$(create_db bench_orders)
        PG_DB="$PG_DB $orders_db"
        NATS_PREFIX=bench$(date +%s)$RANDOM
        env+=(
            ZOCALO_CATALOG__DATABASE_URL=postgres://postgres@$PG_HOSTPORT/$catalog_db
            ZOCALO_ORDERS__DATABASE_URL=postgres://postgres@$PG_HOSTPORT/$orders_db
            "ZOCALO_ORDERS__BUS_URL=$NATS?prefix=$NATS_PREFIX"
        )
        log "postgres-nats: databases $catalog_db and $orders_db, NATS streams ${NATS_PREFIX}_*"
    fi
    printf '%s\n' "${env[@]}" >"$dir/env.txt"
    log "$SETUP: starting zocalo up"
    env "${env[@]}" "$BIN_COPY/zocalo" --config "$RUN/zocalo.toml" up --port "$GW_PORT" \
        --data-dir "$RUN/data" >"$STACK_LOG" 2>&1 &
    ZOCALO_PID=$!
    wait_ready "$GW/ready" gateway
    wait_ready "http://127.0.0.1:$CATALOG_PORT/ready" catalog
    wait_ready "http://127.0.0.1:$ORDERS_PORT/ready" orders

    # --- seller, buyers, listings ---
    log "$SETUP: registering a seller and $BUYERS buyers"
    register seller@example.com "$PASSWORD" "Bench Seller" >/dev/null
    local seller i
    seller=$(login seller@example.com "$PASSWORD")
    : >"$RUN/tokens.txt"
    for ((i = 1; i <= BUYERS; i++)); do
        register "buyer$i@example.com" "$PASSWORD" "Buyer $i" >/dev/null
        login "buyer$i@example.com" "$PASSWORD" >>"$RUN/tokens.txt"
    done
    log "$SETUP: listing $BOOKS books, $STOCK copies each"
    local k title author price body
    for ((k = 0; k < BOOKS; k++)); do
        IFS='|' read -r title author price <<<"${TITLES[k % ${#TITLES[@]}]}"
        ((k >= ${#TITLES[@]})) && title="$title (vol. $((k / ${#TITLES[@]} + 1)))"
        body=$(jq -nc --arg t "$title" --arg a "$author" --arg p "$price" \
            --arg i "$(isbn13 "978030640$(printf '%03d' "$k")")" \
            --arg c "${CONDITIONS[k % 4]}" --argjson s "$STOCK" \
            '{title: $t, author: $a, isbn: $i, condition: $c, stock: $s,
              description: "Second-hand copy for the orders benchmark",
              price: {amount: $p, currency: "USD"}}')
        api POST /api/books "$seller" -H 'content-type: application/json' -d "$body" |
            jq -c '{id, title, author, stock, price: .price.amount}'
    done | jq -s . >"$dir/books.json"

    # --- load, then settle and check ---
    # orders_load.py waits for the orders to settle right after the load
    # (while its poller follows the last sampled orders) and checks stock.
    local cpu0 cpu1
    log "$SETUP: ${WARMUP}s browse-only warm-up, then ${DURATION}s at $CONCURRENCY threads," \
        "$ORDER_SHARE orders; then settle (at most ${SETTLE_MAX}s) and stock check"
    cpu0=$(cpu_ms "$ZOCALO_PID")
    probe_backlog "$dir/backlog.csv" "${orders_db:-$RUN/data/orders.db}" &
    PROBE_PID=$!
    echo "# $(date -u +%FT%TZ) loadavg: $(cat /proc/loadavg)" >"$dir/run.txt"
    timeout $((WARMUP + DURATION + SETTLE_MAX + 240)) python3 "$BENCH_DIR/orders_load.py" run \
        --base "$GW" --tokens "$RUN/tokens.txt" --books "$dir/books.json" \
        --duration "$DURATION" --warmup "$WARMUP" --concurrency "$CONCURRENCY" \
        --order-share "$ORDER_SHARE" --json-out "$dir/run.json" --orders-out "$dir/orders.jsonl" \
        --settle-json "$dir/settle.json" --settle-max "$SETTLE_MAX" 2>&1 | tee -a "$dir/run.txt" >&2 ||
        log "$SETUP: the stock check FAILED (see $dir/settle.json)"
    cpu1=$(cpu_ms "$ZOCALO_PID")
    stop_probe
    echo "# $(date -u +%FT%TZ) loadavg: $(cat /proc/loadavg)" >>"$dir/run.txt"
    # CPU of the whole `zocalo up` process from the start of the warm-up to
    # the end of the settle phase.
    jq --argjson c $((cpu1 - cpu0)) '. + {zocalo_cpu_ms: $c}' "$dir/run.json" >"$dir/run.tmp" &&
        mv "$dir/run.tmp" "$dir/run.json"

    # Server side, every order: status, creation, and when its payment was
    # captured (paid or later) or when it failed (its last update), as epoch
    # seconds, in server-orders.csv.
    local finished="CASE WHEN o.status = 'failed' THEN o.updated_at ELSE c.created_at END"
    local from="FROM orders o LEFT JOIN payment_charges c
                ON c.idempotency_key = o.id AND c.status = 'captured'"
    if [[ $SETUP == postgres-nats ]]; then
        psql "${PG[@]}" -qAtX -F, -d "$orders_db" >"$dir/server-orders.csv" -c \
            "SELECT o.status, extract(epoch FROM o.created_at), extract(epoch FROM $finished) $from"
    else
        python3 - "$RUN/data/orders.db" "$dir/server-orders.csv" \
            "SELECT o.status, (julianday(o.created_at) - 2440587.5) * 86400,
                    (julianday($finished) - 2440587.5) * 86400 $from" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
with open(sys.argv[2], "w") as out:
    for status, created, finished in db.execute(sys.argv[3]):
        out.write(f"{status},{created},{'' if finished is None else finished}\n")
EOF
    fi
    if [[ -n $NATS_PREFIX ]]; then
        python3 "$BENCH_DIR/nats_streams.py" --url "$NATS" --prefix "$NATS_PREFIX" list >"$dir/nats-streams.txt" || true
    fi
    grep -cE '"level":"(WARN|ERROR)"|panicked' "$STACK_LOG" >"$dir/log-problems.txt" || true
    log "$SETUP: $(cat "$dir/log-problems.txt") warning/error/panic lines in zocalo's log"

    cleanup
}

# --- main -------------------------------------------------------------------------
build_and_copy_binary
trap 'cleanup; rm -rf "$BIN_COPY"' EXIT

machine_info "nats-server: $(nats-server --version 2>/dev/null || echo unknown)" \
    "python: $(python3 --version)" | tee "$OUT/machine.txt" >&2

for setup in $SETUPS; do
    bench_setup "$setup"
done

python3 "$BENCH_DIR/orders_summary.py" "$OUT" | tee "$OUT/summary.md"
log "raw outputs in $OUT"
