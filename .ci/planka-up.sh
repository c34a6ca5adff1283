#!/usr/bin/env bash
# Brings up a real Planka 2.1.1 for the real-Planka test tier
# (tests/planka_real.rs), as root, with no network but the package
# registries: the unmodified upstream server vendored in .ci/planka/ (see
# its README for what it is and its licence), its npm dependencies from the
# npm registry, its own PostgreSQL 15 cluster (Debian's postgresql-15,
# installed with apt when missing) with trust auth on loopback, and the
# server on loopback. Seeds, idempotently:
#   admin / AdminPass123!      instance admin, terms accepted (its token in admin.token)
#   ops_agent / AgentPass123!  the agent's user ("boardUser"; accepts the terms itself)
#   project "Ops", boards Basic, Wizard, Rendrom, Riad, each with the lists
#   "To Do" (active) and "Done" (closed), the agent an editor of each
# The tests make their own boards and users beside these (through the admin's
# token), so they can run in parallel and again on the same server.
# Prints the lines to export; .ci/run exports
#   OPS_AGENT_REAL_PLANKA_URL   the server
#   OPS_AGENT_REAL_PLANKA_DB    its database (the tests count rows with psql)
#   OPS_AGENT_REAL_PLANKA_BASE  the folder with admin.token, agent.id, boards.txt, planka.pid
# Rerunnable: each step is skipped when done. First start about 90 s (npm
# install), later ones seconds. Adapted from the start-planka.sh the server
# archive came with.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${OPS_CI_PLANKA_BASE:-/tmp/ops-agent-ci-planka}
PG_PORT=${OPS_CI_PLANKA_PG_PORT:-25434}
PLANKA_PORT=${OPS_CI_PLANKA_PORT:-21338}
PGBIN=/usr/lib/postgresql/15/bin
URL=http://127.0.0.1:$PLANKA_PORT
ADMIN_USER=admin
ADMIN_PASS='AdminPass123!'
# Planka usernames allow only [A-Za-z0-9] with single _ or . separators: "ops-agent" is refused.
AGENT_USER=ops_agent
AGENT_PASS='AgentPass123!'
export DEBIAN_FRONTEND=noninteractive PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres
ms() { echo $(( $(date +%s%N) / 1000000 )); }
log() { echo "planka-up: $*" >&2; }
T0=$(ms)

# 0. What the server needs: PostgreSQL 15, Node.js >= 18 with npm, a C++ toolchain for its
# native modules, python3 with venv (its postinstall; the seed's JSON), curl.
need=()
[ -x $PGBIN/initdb ] || need+=(postgresql-15)
command -v psql >/dev/null || need+=(postgresql-client-15)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v make >/dev/null && command -v g++ >/dev/null || need+=(make g++)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
T1=$(ms)

# 1. The server folder and its dependencies (once per folder): `npm install`
# as upstream runs it, which builds the native modules and, in the package's
# postinstall, a Python venv with apprise (from PyPI) for notifications.
mkdir -p "$BASE" && chmod 0755 "$BASE"   # the postgres user must reach its data folder
SRC=$BASE/planka/server
if [ ! -d "$SRC" ]; then
  mkdir -p "$BASE/planka" && tar -xzf "$HERE/planka/planka-2.1.1-server.tgz" -C "$BASE/planka"
  mkdir -p "$SRC/logs"
fi
if [ ! -d "$SRC/node_modules" ]; then
  (cd "$SRC" && npm install --no-audit --no-fund --loglevel=error >/dev/null) \
    || { rm -rf "$SRC/node_modules"; log "npm install failed"; exit 1; }
fi
T2=$(ms)

# 2. PostgreSQL: a cluster owned by the postgres OS user (initdb refuses root), trust auth, loopback only.
PGDATA=$BASE/pgdata
mkdir -p "$BASE/pgsock" "$BASE/pglog" && chown postgres "$BASE/pgsock" "$BASE/pglog"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown postgres "$PGDATA"
  su postgres -c "$PGBIN/initdb -D $PGDATA -A trust -U postgres" >/dev/null
fi
if ! su postgres -c "$PGBIN/pg_ctl -D $PGDATA status" >/dev/null 2>&1; then
  su postgres -c "$PGBIN/pg_ctl -D $PGDATA -l $BASE/pglog/pg.log -w -o '-p $PG_PORT -c listen_addresses=127.0.0.1 -k $BASE/pgsock' start" >/dev/null
fi
psql -tAc "SELECT 1 FROM pg_database WHERE datname='planka'" | grep -q 1 || psql -q -c "CREATE DATABASE planka"
T3=$(ms)

# 3. Environment, migrations, the default admin; then the server on loopback.
cat > "$SRC/.env" <<EOF
BASE_URL=$URL
DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/planka
SECRET_KEY=ops-agent-ci-planka-not-secret
DEFAULT_ADMIN_EMAIL=admin@example.test
DEFAULT_ADMIN_PASSWORD=$ADMIN_PASS
DEFAULT_ADMIN_NAME=Admin
DEFAULT_ADMIN_USERNAME=$ADMIN_USER
LOG_LEVEL=warn
EOF
(cd "$SRC" && node db/init.js >/dev/null)
if ! { [ -f "$BASE/planka.pid" ] && kill -0 "$(cat "$BASE/planka.pid")" 2>/dev/null; }; then
  cd "$SRC"
  NODE_ENV=production PORT=$PLANKA_PORT sails_explicitHost=127.0.0.1 \
    setsid node app.js --prod >>"$BASE/planka.log" 2>&1 </dev/null &
  echo $! > "$BASE/planka.pid"   # node's own pid (setsid does not fork here): SIGSTOP/-CONT reach it
  cd "$HERE"
  for _ in $(seq 1 300); do
    curl -fsS "$URL/api/bootstrap" >/dev/null 2>&1 && break
    kill -0 "$(cat "$BASE/planka.pid")" 2>/dev/null || break
    sleep 0.2
  done
  curl -fsS "$URL/api/bootstrap" >/dev/null || { log "planka did not come up"; tail -30 "$BASE/planka.log" >&2; exit 1; }
fi
T4=$(ms)

# 4. Seed over REST (idempotent): the admin's token (accepting the terms on its first login),
# the agent's user, the project, the boards and their lists, the agent an editor of each.
J() { python3 -c "import sys,json; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
api() { local m=$1 p=$2; shift 2; curl -fsS -X "$m" "$URL$p" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
resp=$(curl -sS -X POST "$URL/api/access-tokens" -H 'Content-Type: application/json' \
  -d "{\"emailOrUsername\":\"$ADMIN_USER\",\"password\":\"$ADMIN_PASS\"}")
if echo "$resp" | grep -q pendingToken; then
  pending=$(echo "$resp" | J 'd["pendingToken"]')
  sig=$(curl -fsS "$URL/api/terms" | J 'd["item"]["signature"]')
  resp=$(curl -fsS -X POST "$URL/api/access-tokens/accept-terms" -H 'Content-Type: application/json' \
    -d "{\"pendingToken\":\"$pending\",\"signature\":\"$sig\"}")
fi
TOKEN=$(echo "$resp" | J 'd["item"]')
echo "$TOKEN" > "$BASE/admin.token"
AGENT_ID=$(api GET /api/users | J "([u['id'] for u in d['items'] if u.get('username')=='$AGENT_USER'] or [''])[0]")
if [ -z "$AGENT_ID" ]; then
  AGENT_ID=$(api POST /api/users -d "{\"email\":\"ops-agent@example.test\",\"password\":\"$AGENT_PASS\",\"role\":\"boardUser\",\"name\":\"Ops Agent\",\"username\":\"$AGENT_USER\"}" | J 'd["item"]["id"]')
fi
echo "$AGENT_ID" > "$BASE/agent.id"
PROJ=$(api GET /api/projects | J "([p['id'] for p in d['items'] if p['name']=='Ops'] or [''])[0]")
[ -n "$PROJ" ] || PROJ=$(api POST /api/projects -d '{"type":"shared","name":"Ops"}' | J 'd["item"]["id"]')
pos=65536
for team in basic wizard rendrom riad; do
  bname="$(echo "${team:0:1}" | tr a-z A-Z)${team:1}"
  BID=$(api GET "/api/projects/$PROJ" | J "([b['id'] for b in d['included']['boards'] if b['name']=='$bname'] or [''])[0]")
  if [ -z "$BID" ]; then
    BID=$(api POST "/api/projects/$PROJ/boards" -d "{\"position\":$pos,\"name\":\"$bname\"}" | J 'd["item"]["id"]')
    api POST "/api/boards/$BID/lists" -d '{"type":"active","position":65536,"name":"To Do"}' >/dev/null
    api POST "/api/boards/$BID/lists" -d '{"type":"closed","position":131072,"name":"Done"}' >/dev/null
    api POST "/api/boards/$BID/board-memberships" -d "{\"userId\":\"$AGENT_ID\",\"role\":\"editor\"}" >/dev/null
  fi
  echo "$team $bname $BID"
  pos=$((pos+65536))
done > "$BASE/boards.txt"
T5=$(ms)
log "install=$((T1-T0))ms npm=$((T2-T1))ms postgres=$((T3-T2))ms server=$((T4-T3))ms seed=$((T5-T4))ms pid=$(cat "$BASE/planka.pid")"
echo "export OPS_AGENT_REAL_PLANKA_URL=$URL"
echo "export OPS_AGENT_REAL_PLANKA_DB=postgresql://postgres@127.0.0.1:$PG_PORT/planka"
echo "export OPS_AGENT_REAL_PLANKA_BASE=$BASE"
