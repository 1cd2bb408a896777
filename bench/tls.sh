#!/usr/bin/env bash
# What TLS at the gateway costs: the same `zocalo up` (release build) served
# over plain HTTP and over HTTPS (rustls, ring; certificate from
# `zocalo admin dev-cert`), measured with wrk in the same run, alternating
# plain/TLS twice so that drift on a shared machine spreads over both.
#
#   bash bench/tls.sh            # ~4 min after the build
#
# Paths: /live (the gateway alone: TLS cost relative to the least work) and
# /api/books (proxied to the catalog); each with keep-alive connections
# (wrk -t2 -c32, 10 s) and with a new connection per request
# (`Connection: close`, so every request pays a TCP and TLS handshake).
# Prints one line per run and a summary of TLS/plain ratios; raw wrk output
# stays in $OUT.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
GW_PORT=${GW_PORT:-18443}
OUT=$(mktemp -d /tmp/zocalo-bench-tls.XXXXXX)
DURATION=${DURATION:-10s}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
log "building the release binary"
cargo build --release -q -p zocalo --manifest-path "$ROOT/Cargo.toml"
unset_zocalo_env
require_ports_free "$GW_PORT"
"$BIN" admin dev-cert --out-dir "$OUT/tls" >/dev/null

trap 'stop_zocalo' EXIT

# start_stack plain|tls: `zocalo up` on $GW_PORT in a fresh data dir.
start_stack() {
    local mode=$1 data="$OUT/data-$1-$RANDOM"
    local -a env=(ZOCALO_LOG__FILTER=warn
        ZOCALO_GATEWAY__RATE_LIMIT__PER_SECOND=0 ZOCALO_GATEWAY__RATE_LIMIT__BURST=1)
    if [[ $mode == tls ]]; then
        env+=(ZOCALO_GATEWAY__TLS__CERT_FILE="$OUT/tls/cert.pem"
            ZOCALO_GATEWAY__TLS__KEY_FILE="$OUT/tls/key.pem")
    fi
    env "${env[@]}" "$BIN" up --port "$GW_PORT" --data-dir "$data" >"$OUT/stack-$mode.log" 2>&1 &
    ZOCALO_PID=$!
    local scheme=http
    [[ $mode == tls ]] && scheme=https
    for _ in $(seq 100); do
        curl -fsk "$scheme://127.0.0.1:$GW_PORT/live" >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "zocalo up ($mode) did not answer"
}

# run MODE ROUND PATH CONN: one wrk run; prints "mode path conn rps p99".
run() {
    local mode=$1 round=$2 path=$3 conn=$4 scheme=http
    [[ $mode == tls ]] && scheme=https
    local -a extra=()
    [[ $conn == close ]] && extra=(-H "Connection: close")
    local file="$OUT/wrk-$mode-$round-${path//\//_}-$conn.txt"
    wrk -t2 -c32 -d"$DURATION" --latency "${extra[@]}" "$scheme://127.0.0.1:$GW_PORT$path" >"$file"
    local rps p99 errors
    rps=$(awk '/^Requests\/sec/ {print $2}' "$file")
    p99=$(awk '$1 == "99%" {print $2}' "$file")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' "$file" | tr '\n' ' ')
    printf '%s %s %s %s %s %s\n' "$mode" "$round" "$path" "$conn" "$rps" "$p99" | tee -a "$OUT/results.txt"
    [[ -n $errors ]] && log "$mode $path $conn: $errors"
    return 0
}

for round in 1 2; do
    order=(plain tls)
    [[ $round == 2 ]] && order=(tls plain)
    for mode in "${order[@]}"; do
        start_stack "$mode"
        for path in /live /api/books; do
            for conn in keepalive close; do
                run "$mode" "$round" "$path" "$conn"
            done
        done
        stop_zocalo
    done
done

log "summary (requests/s averaged over both rounds; ratio = TLS / plain)"
awk '{ key = $3 " " $4; sum[$1 " " key] += $5; n[$1 " " key]++; keys[key] = 1 }
     END { for (k in keys) {
             p = sum["plain " k] / n["plain " k]; t = sum["tls " k] / n["tls " k];
             printf "%-24s plain %9.0f  tls %9.0f  ratio %.2f\n", k, p, t, t / p } }' \
    "$OUT/results.txt" | sort | tee "$OUT/summary.txt"
log "raw output in $OUT"
