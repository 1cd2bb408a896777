#!/usr/bin/env bash
# A real PostgreSQL streaming replica of the local primary, for tests and the
# benchmark: a second cluster on another port, cloned with `pg_basebackup -R`
# and kept in sync by streaming replication.
#
#   scripts/pg-replica.sh start|stop|status|promote-check [--port N] [--dir PATH]
#                         [--primary-host H] [--primary-port N]
#
# start          clone (first time only) and start the replica; prints its URL.
# stop           fast shutdown; the data directory is kept for the next start.
# status         running or not, recovery state, WAL receiver state, lag.
# promote-check  exit 0 when the replica could take over: it is a standby,
#                its WAL receiver is streaming and it has replayed everything
#                the primary had written when asked. It never promotes.
#
# Every command is idempotent. PG_REPLICA_READY_TIMEOUT_SECS (default 90)
# bounds the wait for the clone to start streaming. Runs as root; the
# cluster itself runs as the `postgres` user like the Debian primary. No
# replication slot is created on purpose: a forgotten stopped replica must
# not make the shared primary keep WAL forever (a replica that falls too
# far behind is re-cloned by deleting its directory and running `start`
# again).
set -euo pipefail

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_USER="${PG_USER:-postgres}"
PORT=5433
DIR=""
PRIMARY_HOST=127.0.0.1
PRIMARY_PORT=5432
READY_TIMEOUT_SECS=${PG_REPLICA_READY_TIMEOUT_SECS:-90}

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
COMMAND="$1"
shift
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --primary-host) PRIMARY_HOST="$2"; shift 2 ;;
    --primary-port) PRIMARY_PORT="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "--port must be a number" >&2; exit 2; }
DIR="${DIR:-/var/lib/postgresql/15/replica-$PORT}"
DIR="$(realpath -m "$DIR")"
LOG="$DIR/replica.log"
URL="postgres://$PG_USER@127.0.0.1:$PORT/postgres"

as_pg() { (cd / && runuser -u "$PG_USER" -- "$@"); }
primary_sql() { psql -X -q -At -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$PG_USER" -d postgres -c "$1"; }
replica_sql() { psql -X -q -At -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d postgres -c "$1"; }
is_running() { [[ -f "$DIR/PG_VERSION" ]] && as_pg "$PG_BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; }

# The primary must accept replication connections from loopback. Only added
# when missing; a reload (not a restart) applies it.
allow_replication_on_primary() {
  local hba
  hba="$(primary_sql 'SHOW hba_file')"
  if grep -Eq '^[[:space:]]*host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    return
  fi
  echo "allowing replication connections from 127.0.0.1 in $hba" >&2
  printf '\n# streaming replicas on this machine (scripts/pg-replica.sh)\nhost replication all 127.0.0.1/32 trust\n' >>"$hba"
  primary_sql 'SELECT pg_reload_conf()' >/dev/null
}

# A hot standby needs these at least as high as on the primary.
copied_primary_settings() {
  local name
  for name in max_connections max_worker_processes max_wal_senders max_prepared_transactions max_locks_per_transaction; do
    printf "%s = %s\n" "$name" "$(primary_sql "SHOW $name")"
  done
}

# Debian keeps the configuration outside the data directory, so the clone
# has none: write a minimal one of its own.
write_replica_config() {
  {
    echo "# written by scripts/pg-replica.sh"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $PORT"
    echo "unix_socket_directories = '/var/run/postgresql'"
    echo "hot_standby = on"
    echo "hot_standby_feedback = on"
    echo "shared_buffers = 32MB"
    echo "logging_collector = off"
    copied_primary_settings
  } >"$DIR/postgresql.conf"
  cat >"$DIR/pg_hba.conf" <<'EOF'
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
EOF
  : >"$DIR/pg_ident.conf"
  chown "$PG_USER:$PG_USER" "$DIR/postgresql.conf" "$DIR/pg_hba.conf" "$DIR/pg_ident.conf"
}

clone_primary() {
  echo "cloning $PRIMARY_HOST:$PRIMARY_PORT into $DIR" >&2
  mkdir -p "$DIR"
  chown "$PG_USER:$PG_USER" "$DIR"
  chmod 700 "$DIR"
  if ! as_pg test -w "$DIR"; then
    echo "$DIR is not reachable by the $PG_USER user (check the parent directories' permissions)" >&2
    exit 1
  fi
  as_pg "$PG_BIN/pg_basebackup" -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$PG_USER" \
    -D "$DIR" -R -X stream -c fast --no-password
  write_replica_config
}

wait_until_streaming() {
  local deadline=$((SECONDS + READY_TIMEOUT_SECS)) state=""
  while ((SECONDS < deadline)); do
    state="$(replica_sql "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null || true)"
    [[ "$state" == "streaming" ]] && return 0
    sleep 0.2
  done
  echo "replica on port $PORT is not streaming after ${READY_TIMEOUT_SECS}s (receiver: '${state:-none}'); see $LOG" >&2
  exit 1
}

cmd_start() {
  exec 9>/tmp/zocalo-pg-replica.lock
  flock 9
  if is_running; then
    echo "replica already running on port $PORT" >&2
    echo "$URL"
    return
  fi
  allow_replication_on_primary
  if [[ ! -f "$DIR/PG_VERSION" ]]; then
    if [[ -d "$DIR" && -n "$(ls -A "$DIR")" ]]; then
      echo "$DIR exists and is not a PostgreSQL data directory; refusing to touch it" >&2
      exit 1
    fi
    clone_primary
  fi
  # fd 9 (the lock) must not be inherited by the server, or it would hold
  # the lock for as long as it runs.
  as_pg "$PG_BIN/pg_ctl" -D "$DIR" -l "$LOG" -w -t "$READY_TIMEOUT_SECS" start >/dev/null 9>&-
  wait_until_streaming
  echo "replica streaming from $PRIMARY_HOST:$PRIMARY_PORT on port $PORT ($DIR)" >&2
  echo "$URL"
}

cmd_stop() {
  if ! is_running; then
    echo "replica on port $PORT is not running" >&2
    return
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$DIR" -m fast -w stop >/dev/null
  echo "replica on port $PORT stopped" >&2
}

cmd_status() {
  if ! is_running; then
    echo "stopped ($DIR)"
    exit 3
  fi
  replica_sql "SELECT 'running on port $PORT: in_recovery=' || pg_is_in_recovery()
      || ' receiver=' || COALESCE((SELECT status FROM pg_stat_wal_receiver), 'none')
      || ' replay_lag_s=' || CASE
           WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN '0 (replayed all it received)'
           ELSE COALESCE(round(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::numeric, 3)::text, 'n/a')
         END"
  echo "$URL"
}

cmd_promote_check() {
  if ! is_running; then
    echo "not promotable: replica on port $PORT is not running" >&2
    exit 1
  fi
  if [[ "$(replica_sql 'SELECT pg_is_in_recovery()')" != "t" ]]; then
    echo "not promotable: port $PORT is not a standby" >&2
    exit 1
  fi
  if [[ "$(replica_sql 'SELECT status FROM pg_stat_wal_receiver')" != "streaming" ]]; then
    echo "not promotable: WAL receiver is not streaming" >&2
    exit 1
  fi
  local target deadline=$((SECONDS + 10))
  target="$(primary_sql 'SELECT pg_current_wal_lsn()')"
  while ((SECONDS < deadline)); do
    if [[ "$(replica_sql "SELECT pg_last_wal_replay_lsn() >= '$target'::pg_lsn")" == "t" ]]; then
      echo "promotable: standby on port $PORT has replayed up to the primary's $target"
      return
    fi
    sleep 0.2
  done
  echo "not promotable: standby has not replayed up to $target within 10s" >&2
  exit 1
}

case "$COMMAND" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  promote-check) cmd_promote_check ;;
  *) usage ;;
esac
