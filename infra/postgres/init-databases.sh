#!/bin/sh
# Creates MLflow's database next to Prefect's (POSTGRES_DB) on the first start of an empty
# data volume; the postgres image runs /docker-entrypoint-initdb.d/* only then.
set -eu

: "${MLFLOW_DB_NAME:=mlflow}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=db="$MLFLOW_DB_NAME" --set=owner="$POSTGRES_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
