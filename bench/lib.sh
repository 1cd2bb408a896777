# Shell helpers shared by the bench/*.sh scenarios. Source it after
# `set -euo pipefail`; it defines functions and a few variables only:
#
#   BENCH_DIR ROOT CARGO_TARGET_DIR BIN   paths
#   GW                                    the gateway URL (set GW_PORT first)
#   PG (array), PG_HOSTPORT               psql options, from BENCH_PG
#
# and uses, when the caller sets them: ZOCALO_PID (the running stack),
# STACK_LOG (its log file), PG_DB (a database to drop at cleanup).
# shellcheck shell=bash

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/zocalo/target}
BIN="$CARGO_TARGET_DIR/release/zocalo"
read -r -a PG <<<"${BENCH_PG:--h 127.0.0.1 -p 5432 -U postgres}"
PG_HOSTPORT=${BENCH_PG_HOSTPORT:-127.0.0.1:5432}
GW=http://127.0.0.1:${GW_PORT:-18080}
ZOCALO_PID=${ZOCALO_PID:-}
STACK_LOG=${STACK_LOG:-/dev/null}
PG_DB=${PG_DB:-}
BIN_COPY=${BIN_COPY:-}

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# No setting of the caller's may leak into the stack under test.
unset_zocalo_env() {
    local var
    while read -r var; do unset "$var"; done < <(compgen -e | grep '^ZOCALO_' || true)
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_ports_free() {
    local port
    for port in "$@"; do port_free "$port" || die "port $port is in use"; done
}

stop_zocalo() {
    if [[ -n $ZOCALO_PID ]] && kill -0 "$ZOCALO_PID" 2>/dev/null; then
        kill -TERM "$ZOCALO_PID"
        for _ in $(seq 100); do kill -0 "$ZOCALO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$ZOCALO_PID" 2>/dev/null && { log "zocalo ignored SIGTERM; killing"; kill -KILL "$ZOCALO_PID"; }
        wait "$ZOCALO_PID" 2>/dev/null || true
    fi
    ZOCALO_PID=""
}

# create_db PREFIX -> prints the name of a fresh database (does not track it).
create_db() {
    local name=${1}_$(date +%s)_$RANDOM
    psql "${PG[@]}" -qAtX -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE $name" >/dev/null
    echo "$name"
}

drop_db_named() {
    psql "${PG[@]}" -qAtX -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null || true
}

# Drops every database named in PG_DB (space-separated).
drop_db() {
    local db
    for db in $PG_DB; do drop_db_named "$db"; done
    PG_DB=""
}

# CPU time (ms) used so far by a process, or by a list of them.
cpu_ms() {
    local total=0 pid ticks
    ticks=$(getconf CLK_TCK)
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        # Fields 14 and 15 (utime, stime), counted after the ")" of comm.
        total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")))
    done
    echo $((total * 1000 / ticks))
}

wait_ready() {
    local url=$1 name=$2
    for _ in $(seq 300); do
        curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        kill -0 "$ZOCALO_PID" 2>/dev/null || { cat "$STACK_LOG" >&2; die "zocalo exited"; }
        sleep 0.2
    done
    die "$name not ready at $url after 60 s"
}

api() { # method path token [curl args...] -> body on stdout, fails on >= 400
    local method=$1 path=$2 token=$3 auth=()
    shift 3
    [[ -n $token ]] && auth=(-H "authorization: Bearer $token")
    curl -sS --fail-with-body --max-time 30 -X "$method" "$GW$path" "${auth[@]}" "$@"
}

login() {
    api POST /auth/token "" --data-urlencode grant_type=password \
        --data-urlencode "username=$1" --data-urlencode "password=$2" | jq -er .access_token
}

register() { # email password name -> user id
    api POST /auth/register "" -H 'content-type: application/json' \
        -d "$(jq -nc --arg e "$1" --arg p "$2" --arg n "$3" '{email: $e, password: $p, name: $n}')" |
        jq -er .id
}

# The Debian packages every scenario needs, installed when missing. Debian's
# nginx packages start a server on :80 when installed; the scenarios run
# their own instance and leave the system one alone.
install_bench_packages() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v hey >/dev/null || missing+=(hey)
    command -v jq >/dev/null || missing+=(jq)
    command -v curl >/dev/null || missing+=(curl)
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v psql >/dev/null || missing+=(postgresql-client)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null ||
            apt-get install -y -qq "${missing[@]/nginx-light/nginx}" >/dev/null
    fi
    command -v python3 >/dev/null || die "python3 is required"
}

# Build (unless BENCH_SKIP_BUILD=1) and copy the release binary to
# $BIN_COPY/zocalo: a rebuild in the shared target dir during the run must
# not swap the binary under us. The caller removes $BIN_COPY at exit.
build_and_copy_binary() {
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        log "building release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
        (cd "$ROOT" && cargo build --release -p zocalo)
    fi
    [[ -x $BIN ]] || die "no binary at $BIN"
    BIN_COPY=$(mktemp -d /tmp/zocalo-bench-bin.XXXXXX)
    cp "$BIN" "$BIN_COPY/zocalo"
}

# The machine block of results.md; extra "name: value" lines as arguments.
machine_info() {
    echo "date: $(date -u +%FT%TZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -sr)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "loadavg at start: $(cat /proc/loadavg)"
    local line
    for line in "$@"; do echo "$line"; done
    echo "postgres: $(psql "${PG[@]}" -qAtX -d postgres -c 'show server_version' 2>/dev/null || echo unreachable)"
    echo "rustc: $(rustc --version)"
    echo "source: commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)," \
        "status $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) changed paths," \
        "crates/**/*.rs sha256 $(cd "$ROOT" && find crates -name '*.rs' | sort | xargs cat | sha256sum | cut -c1-16)"
    echo "binary: $BIN (built $(stat -c %y "$BIN" | cut -d. -f1), sha256 $(sha256sum "$BIN" | cut -c1-16)…)"
}
