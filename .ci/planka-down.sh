#!/usr/bin/env bash
# Tears down what .ci/planka-up.sh started: the Planka server whose PID it
# recorded and its PostgreSQL cluster (nothing else is stopped), then its
# folder.
set -uo pipefail
BASE=${OPS_CI_PLANKA_BASE:-/tmp/ops-agent-ci-planka}
PGBIN=/usr/lib/postgresql/15/bin
if [ -f "$BASE/planka.pid" ]; then
  P=$(cat "$BASE/planka.pid")
  # Only if that pid is still the server (a machine stopped mid-run leaves
  # the file, and after a restart the number may be another process's).
  if tr '\0' ' ' < "/proc/$P/cmdline" 2>/dev/null | grep -q 'app.js --prod'; then
    # A test may have left it stopped (SIGSTOP): continue it so it can exit.
    kill -CONT "$P" 2>/dev/null
    kill "$P" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$BASE/planka.pid"
fi
if [ -f "$BASE/pgdata/PG_VERSION" ]; then
  su postgres -c "$PGBIN/pg_ctl -D $BASE/pgdata stop -m fast" >/dev/null 2>&1
fi
rm -rf "$BASE"
echo "planka-down: done"
