#!/usr/bin/env bash
# Tears down what .ci/docker-up.sh started: the containers, the image and
# the dockerd whose PID it recorded (nothing else is killed).
set -uo pipefail
SOCK=${OPS_CI_DOCKER_SOCK:-/run/ci-docker.sock}
if [ -S "$SOCK" ]; then
  for c in ci-running ci-stopped ci-unhealthy ci-crashloop ci-brief-crash; do
    curl -s --unix-socket "$SOCK" -X DELETE "http://d/v1.41/containers/$c?force=true" >/dev/null
  done
  curl -s --unix-socket "$SOCK" -X DELETE 'http://d/v1.41/images/localhost/busybox:ci' >/dev/null
fi
if [ -f /run/ci-dockerd.pid ]; then
  P=$(cat /run/ci-dockerd.pid)
  # Only if that pid is still our dockerd (see docker-up.sh on stale files).
  if [ "$(cat "/proc/$P/comm" 2>/dev/null)" = dockerd ]; then
    kill "$P" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f /run/ci-dockerd.pid
fi
# dockerd bind-mounts its data root onto itself and leaves it mounted.
umount /var/lib/ci-docker 2>/dev/null
rm -rf /var/lib/ci-docker /run/ci-docker
rm -f "$SOCK"
echo "docker-down: done"
