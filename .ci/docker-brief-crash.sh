#!/usr/bin/env bash
# Creates ci-brief-crash on the CI engine (called by .ci/docker-up.sh; run
# it alone against an engine that is already up): a worker that crash-loops
# under an on-failure:2 restart policy and ends exited with code 3 and a
# RestartCount of 2. Each run prints a known marker line, a token-looking
# string and a URL with a password. The incident brief test
# (tests/docker_real.rs) wants the marker, the exit code and the restart
# count in the brief, and the token and the password nowhere.
set -euo pipefail
SOCK=${1:-/run/ci-docker.sock}
api() { curl -sf --unix-socket "$SOCK" -H 'Content-Type: application/json' "$@"; }
api -X DELETE 'http://d/v1.41/containers/ci-brief-crash?force=1' >/dev/null 2>&1 || true
script='echo worker 2.4.1 starting; echo connecting to postgres://queue:Tr0ub4dor-S3cret@db.internal:5432/jobs; echo loaded api token ghp_Zx81Qm0aP4vN7tK2rL9sW3yB6cD1eF5gH8jJ; echo BRIEF-MARKER-7741 fatal: cannot open /data/queue.db; echo panic: queue unavailable, exiting >&2; exit 3'
api -X POST 'http://d/v1.41/containers/create?name=ci-brief-crash' -d "{\"Image\":\"localhost/busybox:ci\",
  \"Cmd\":[\"sh\",\"-c\",\"$script\"],
  \"HostConfig\":{\"Init\":true,\"RestartPolicy\":{\"Name\":\"on-failure\",\"MaximumRetryCount\":2}}}" >/dev/null
api -X POST 'http://d/v1.41/containers/ci-brief-crash/start'
# The loop ends after two restarts (backoff 100 ms, then 200 ms).
for _ in $(seq 1 100); do
  js=$(api http://d/v1.41/containers/ci-brief-crash/json || true)
  case "$js" in *'"Status":"exited"'*'"RestartCount":2,'*) break ;; esac
  sleep 0.1
done
echo "docker-brief-crash: $(api http://d/v1.41/containers/ci-brief-crash/json | grep -o '"Status":"[a-z]*"\|"ExitCode":[0-9]*\|"RestartCount":[0-9]*' | tr '\n' ' ')"
