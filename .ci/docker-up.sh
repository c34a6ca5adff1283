#!/usr/bin/env bash
# Brings up a real Docker engine for the real-engine test tier
# (tests/docker_real.rs), as root, without a registry: Debian's dockerd on
# its own socket, a busybox image imported through the API, and three
# containers:
#   ci-running    sleep, healthcheck `true`  -> running, healthy
#   ci-stopped    sleep, started then stopped -> exited (a restart fixes it)
#   ci-unhealthy  sleep, healthcheck `false` -> running, unhealthy
# (tests/docker_real.rs makes `ci-crashloop` itself from the same image:
# `restart: always`, exits 3 at once; and `ci-brief-crash`: on-failure:2,
# prints a marker line, a token and a URL with a password, exits 3;
# docker-down.sh removes both.)
# Prints the line to export; .ci/run then sets
#   OPS_AGENT_REAL_DOCKER_SOCK=/run/ci-docker.sock
# so the real tier cannot skip. Adapted from shared/reference/docker-in-ci.md.
set -euo pipefail
SOCK=${OPS_CI_DOCKER_SOCK:-/run/ci-docker.sock}
ms() { echo $(( $(date +%s%N) / 1000000 )); }
export DEBIAN_FRONTEND=noninteractive
T0=$(ms)
if ! command -v dockerd >/dev/null || ! [ -x /bin/busybox ] || ! command -v curl >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io busybox-static curl >/dev/null
fi
T1=$(ms)
if [ -f /run/ci-dockerd.pid ] && [ "$(cat "/proc/$(cat /run/ci-dockerd.pid)/comm" 2>/dev/null)" = dockerd ]; then
  echo "docker-up: dockerd already running (pid $(cat /run/ci-dockerd.pid)); run .ci/docker-down.sh first" >&2
  exit 1
fi
# A machine that was stopped mid-run keeps the engine's data root (with the
# ci-* containers in it) and, in /run, pid files of processes long gone;
# dockerd refuses a stale pid file, and creating a name that exists is a 409.
rm -f "$SOCK" /run/ci-docker.pid /run/ci-dockerd.pid
/usr/sbin/dockerd -H "unix://$SOCK" --iptables=false --ip6tables=false --bridge=none \
  --storage-driver=overlay2 --data-root=/var/lib/ci-docker --exec-root=/run/ci-docker \
  --pidfile=/run/ci-docker.pid >/tmp/ci-dockerd.log 2>&1 &
echo $! >/run/ci-dockerd.pid
for _ in $(seq 1 500); do
  curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1 && break
  kill -0 "$(cat /run/ci-dockerd.pid)" || { cat /tmp/ci-dockerd.log; exit 1; }
  sleep 0.02
done
curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null
T2=$(ms)
R=$(mktemp -d); mkdir -p "$R/bin" "$R/tmp"; cp /bin/busybox "$R/bin/"
for a in $("$R/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
tar -C "$R" -c . | curl -sS --fail-with-body --unix-socket "$SOCK" -X POST -H 'Content-Type: application/x-tar' \
  --data-binary @- 'http://d/v1.41/images/create?fromSrc=-&repo=localhost/busybox:ci' >/dev/null
rm -rf "$R"
# --fail-with-body: a refused call prints the engine's reason, not only curl's exit 22.
api() { curl -sS --fail-with-body --unix-socket "$SOCK" -H 'Content-Type: application/json' "$@"; }
for c in ci-running ci-unhealthy ci-stopped ci-crashloop ci-brief-crash; do
  curl -s --unix-socket "$SOCK" -X DELETE "http://d/v1.41/containers/$c?force=true" >/dev/null
done
create() { # name healthcheck-cmd-or-empty
  local hc=""
  [ -n "$2" ] && hc=",\"Healthcheck\":{\"Test\":[\"CMD-SHELL\",\"$2\"],\"Interval\":1000000000,\"Retries\":1}"
  api -X POST "http://d/v1.41/containers/create?name=$1" -d "{\"Image\":\"localhost/busybox:ci\",
    \"Cmd\":[\"sleep\",\"infinity\"]$hc,\"HostConfig\":{\"Init\":true}}" >/dev/null
  api -X POST "http://d/v1.41/containers/$1/start"
}
create ci-running true
create ci-unhealthy false
create ci-stopped ""
api -X POST 'http://d/v1.41/containers/ci-stopped/stop?t=1'
# Wait for both healthchecks to settle (interval 1 s).
for _ in $(seq 1 100); do
  h1=$(api http://d/v1.41/containers/ci-running/json | grep -o '"Health":{"Status":"[a-z]*"' || true)
  h2=$(api http://d/v1.41/containers/ci-unhealthy/json | grep -o '"Health":{"Status":"[a-z]*"' || true)
  case "$h1/$h2" in *'"healthy"'*'"unhealthy"'*) break ;; esac
  sleep 0.1
done
T3=$(ms)
echo "docker-up: install=$((T1-T0))ms api_ready=$((T2-T1))ms image+containers=$((T3-T2))ms dockerd_pid=$(cat /run/ci-dockerd.pid) health=$h1/$h2"
echo "export OPS_AGENT_REAL_DOCKER_SOCK=$SOCK"
