#!/usr/bin/env bash
# The systemd install as an operator does it, end to end, under a real
# systemd user manager: a fresh account edits the example config, puts the
# Mattermost token and the Planka password in owner-only files, runs
# `ops-agent install --systemd`, and the timer (not a shell) starts cycles
# that read Mattermost, file tasks and cards, and answer. Then `restart` and
# `uninstall`. The services are the fakes of `cargo run --example fake_stack`.
#
# Usage (as root): .ci/systemd-user-trial.sh OPS_AGENT_BIN FAKE_STACK_BIN
#
# A machine whose PID 1 is not systemd (a container, a microVM) has no user
# manager; this script starts one by hand for a throw-away account: its
# cgroup directories, /run/user/<uid>, and /run/systemd/system (the marker
# `systemd --user` checks before it starts). Where even that cannot start,
# it says "skipped: systemd_user: <why>" and exits 0, except under CI=true,
# where that is a failure; every step after the manager is up must hold,
# and the last line, "tier-ran: systemd_user", is what .ci/run counts.
set -euo pipefail
bin=$(readlink -f "$1")
fake=$(readlink -f "$2")
user=ops-agent-trial
work=$(mktemp -d)
manager=""
stack=""
made_marker=""
uid=""

cleanup() {
  set +e
  [ -n "$stack" ] && kill "$stack" 2>/dev/null
  [ -n "$manager" ] && kill "$manager" 2>/dev/null
  sleep 1
  pkill -u "$user" 2>/dev/null
  userdel -r "$user" 2>/dev/null
  [ -n "$made_marker" ] && rmdir /run/systemd/system 2>/dev/null
  [ -n "$uid" ] && rm -rf "/run/user/$uid"
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "systemd trial: FAILED: $*" >&2; exit 1; }

id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
uid=$(id -u "$user")
home=$(getent passwd "$user" | cut -d: -f6)
as_user() { runuser -u "$user" -- env HOME="$home" XDG_RUNTIME_DIR="/run/user/$uid" bash -c "$1"; }

# The user manager.
[ -d /run/systemd/system ] || { mkdir -p /run/systemd/system; made_marker=1; }
mkdir -p "/run/user/$uid"
chown "$user:" "/run/user/$uid"
chmod 700 "/run/user/$uid"
cgroups=()
for h in systemd unified; do
  if [ -d "/sys/fs/cgroup/$h" ]; then
    d="/sys/fs/cgroup/$h/user.slice/user-$uid.slice/user@$uid.service"
    mkdir -p "$d" && chown -R "$user:" "/sys/fs/cgroup/$h/user.slice/user-$uid.slice" && cgroups+=("$d")
  fi
done
if [ ! -d /sys/fs/cgroup/systemd ] && [ ! -d /sys/fs/cgroup/unified ]; then
  d="/sys/fs/cgroup/user.slice/user-$uid.slice/user@$uid.service"   # pure cgroup v2
  mkdir -p "$d" 2>/dev/null && chown -R "$user:" "/sys/fs/cgroup/user.slice/user-$uid.slice" && cgroups+=("$d")
fi
procs=""
for d in "${cgroups[@]}"; do procs+="echo \$\$ > $d/cgroup.procs; "; done
bash -c "$procs exec runuser -u $user -- env XDG_RUNTIME_DIR=/run/user/$uid /lib/systemd/systemd --user" \
  >"$work/manager.log" 2>&1 &
manager=$!
up=""
for _ in $(seq 1 50); do
  state=$(as_user 'systemctl --user is-system-running 2>/dev/null' || true)
  case "$state" in running|degraded) up=1; break ;; esac
  sleep 0.2
done
if [ -z "$up" ]; then
  why="no systemd user manager could start here ($(head -c 300 "$work/manager.log"))"
  [ "${CI:-}" = true ] && fail "$why"
  echo "skipped: systemd_user: $why"
  exit 0
fi
echo "systemd trial: user manager up for $user (uid $uid)"

# The fake services.
TMPDIR=/tmp "$fake" >"$work/stack.out" 2>&1 &
stack=$!
for _ in $(seq 1 100); do grep -q '^  Config' "$work/stack.out" 2>/dev/null && break; sleep 0.1; done
cfg=$(awk '/^  Config/ {print $2}' "$work/stack.out")
token=$(grep -o 'OPS_AGENT_MM_TOKEN=[^ ]*' "$work/stack.out" | head -1 | cut -d= -f2)
[ -n "$cfg" ] && [ -n "$token" ] || fail "the fake stack did not start: $(cat "$work/stack.out")"

# The operator's steps: the binary, the example config edited to point at
# the services, the secrets in owner-only files.
install -D -m 0755 "$bin" "$home/.local/bin/ops-agent"
chown -R "$user:" "$home/.local"
python3 - "$cfg" "$work/config.toml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
# The runbook's state, lock and token-cache paths are shared names in /tmp,
# where a file another user left (a run by hand as root) is refused, as it
# should be; the trial keeps its own under its home. Logs and the ledger stay
# at the runbook's paths in ~/system.
text = re.sub(r"\[paths\]\n(?:.*\n)*?\n", """[paths]
state = "~/system/agents/state/ops-agent-state.json"
lock = "~/system/agents/state/ops-agent.lock"
token_cache = "~/system/agents/state/mm-token.json"
fix_history = "~/system/agents/state/ops-fix-history.json"
planka_token_cache = "~/system/agents/state/planka-token.json"

""", text, count=1)
text = text.replace('token_env = "OPS_AGENT_MM_TOKEN"', 'token_file = "~/.config/ops-agent/mm-token"')
text = text.replace('password_env = "OPS_AGENT_PLANKA_PASSWORD"',
                    'password_file = "~/.config/ops-agent/planka-password"')
text = text.replace("[agent]\n", "[agent]\nschedule_interval_secs = 60\n", 1)
text = re.sub(r"deadline_secs = [0-9.]+", "deadline_secs = 50.0", text)
open(sys.argv[2], "w").write(text)
EOF
chmod 644 "$work/config.toml"
chmod 755 "$work"
as_user "mkdir -p ~/.config/ops-agent && cp $work/config.toml ~/.config/ops-agent/config.toml
  (umask 077; printf %s '$token' > ~/.config/ops-agent/mm-token; printf %s planka-secret > ~/.config/ops-agent/planka-password)
  ~/.local/bin/ops-agent config check >/dev/null" || fail "config check"

as_user "cd ~ && ~/.local/bin/ops-agent install --systemd --interval 60" | tee "$work/install.out"
grep -q 'is active' "$work/install.out" || fail "install did not report the timer active"

# The timer's first run comes within 10 s; the cycle takes about a second.
ok=""
for _ in $(seq 1 60); do
  if as_user 'grep -q "cycle ok.*mattermost=ok(6 new" ~/system/logs/ops-agent.log 2>/dev/null'; then ok=1; break; fi
  sleep 1
done
as_user 'systemctl --user status ops-agent.service --no-pager 2>&1 | head -6' || true
[ -n "$ok" ] || fail "no cycle ran from the timer: $(as_user 'tail -20 ~/system/logs/ops-agent.log 2>&1')"
as_user 'grep "cycle " ~/system/logs/ops-agent.log | tail -1'
listed=$(as_user '~/.local/bin/ops-agent tasks list')
tasks=$(grep -c '^OPS-' <<<"$listed" || true)
cards=$(grep -c '^OPS-.*\[http' <<<"$listed" || true)
replies=$(grep -c 'opsbot reply under' "$work/stack.out" || true)
[ "$tasks" = 3 ] || fail "the timer's cycle filed $tasks tasks, not 3"
[ "$cards" = 3 ] || fail "the timer's cycle made $cards Planka cards, not 3"
[ "$replies" = 3 ] || fail "the timer's cycle posted $replies replies, not 3"
echo "systemd trial: the timer ran a cycle as $user: 3 tasks, 3 cards, 3 replies, token from a file"

as_user '~/.local/bin/ops-agent doctor' | grep 'scheduled job' | tee "$work/doctor.out"
grep -q 'FAIL' "$work/doctor.out" && fail "doctor finds the installed job wrong"
as_user '~/.local/bin/ops-agent restart --systemd' | tail -1
as_user 'systemctl --user is-active ops-agent.timer' >/dev/null || fail "restart left the timer inactive"
as_user '~/.local/bin/ops-agent uninstall --systemd' >/dev/null
as_user 'ls ~/.config/systemd/user/ops-agent.* 2>/dev/null' && fail "uninstall left the unit files"
as_user 'systemctl --user is-active ops-agent.timer' >/dev/null && fail "uninstall left the timer active"
echo "systemd trial: ok (install, scheduled cycles, doctor, restart, uninstall)"
echo "tier-ran: systemd_user"
