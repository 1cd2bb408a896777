#!/bin/bash
# A streaming replica of the compose stack's primary: cloned with
# pg_basebackup on first start (-R writes standby.signal and the primary's
# address), then a hot standby that serves the services' reads.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -q -h "$PRIMARY_HOST" -U zocalo -d postgres; do sleep 1; done
  export PGPASSWORD="$REPLICATION_PASSWORD"
  pg_basebackup -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" -R -X stream
  chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on
