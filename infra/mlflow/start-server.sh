#!/bin/sh
# Starts the team stack's MLflow server with MLflow's basic-auth app: every request but /health
# needs a user name and password. Used by compose (infra/compose.yaml) and by the test that runs
# the stack as local processes (tests/integration/test_auth_stack.py), so both start it alike.
#
# Environment (infra/.env):
#   MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD  the first admin, created on the first
#       start of an empty user store (MLflow reads both itself; never MLflow's documented default)
#   MLFLOW_AUTH_DATABASE_URI       where users and permissions live (SQLAlchemy URI)
#   MLFLOW_AUTH_DEFAULT_PERMISSION what a user may do with what others created (READ)
#   MLFLOW_FLASK_SERVER_SECRET_KEY signs the UI's CSRF tokens; the same on every replica
#   MLFLOW_AUTH_CACHE_TTL_SECONDS  how long a checked password is trusted (60). Every request is
#       authenticated with a PBKDF2 hash; uncached, a training run's metric calls kept a server
#       core busy. A password change reaches the other workers within this time.
# Arguments are passed on to `mlflow server`.
set -eu

: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_AUTH_ADMIN_USERNAME (infra/.env)}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (infra/.env)}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI (infra/.env)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY (infra/.env)}"
export MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY

# MLflow reads the auth database's location from an ini file only: write one from the environment,
# readable by this user alone (the URI may hold a database password).
MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-${TMPDIR:-/tmp}/mlflow-basic-auth.ini}"
export MLFLOW_AUTH_CONFIG_PATH
umask 077
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}
INI

exec "${PYTHON:-python}" -m mlflow server --app-name basic-auth "$@"
