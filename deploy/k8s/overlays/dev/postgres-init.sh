#!/bin/bash
# First start of the PostgreSQL primary: one database per service and the
# role replicas stream with. (The official image runs this once, on an
# empty data directory.)
set -euo pipefail
for db in $ZOCALO_DATABASES; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$db\""
done
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -d postgres \
  -c "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '$REPLICATION_PASSWORD'"
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
