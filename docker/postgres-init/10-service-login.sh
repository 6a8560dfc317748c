#!/bin/sh
# Runs once, when the Postgres volume is first initialised. The service connects as ledger_app, a
# member of agent_ledger_service: it may read and append, never UPDATE, DELETE or TRUNCATE the
# ledger (migration 0005 grants exactly that). Migrations run as the owner, POSTGRES_USER.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE agent_ledger_service NOLOGIN;
CREATE ROLE ledger_app LOGIN PASSWORD '${LEDGER_APP_PASSWORD}' IN ROLE agent_ledger_service;
SQL
