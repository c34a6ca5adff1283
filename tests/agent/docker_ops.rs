//! Docker as people run it, through the real binary against the fake
//! engine: a container crash-looping under its own restart policy is
//! escalated (not restarted again), containers are found by their exact
//! name only, a silence is honoured by `health` and `fix`, `health` has an
//! exit code of its own for "unknown", engine errors over TLS name their
//! cause, and `doctor` looks at the engines and at the space the state
//! needs.

use std::path::Path;

use serde_json::Value;

use crate::support::agent::{doctor_line, text, Sandbox};
use crate::support::docker::{FakeContainer, FakeDocker, OnRestart};
use crate::support::fault::Fault;
use crate::support::mattermost::{FakeMattermost, FakePost};
use crate::support::pki::{ClientFiles, Pki};
use crate::support::world::{quoted, WorldBuilder};

fn check<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["last_cycle"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {st}"))
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

/// A sandbox with Mattermost (alerts go to `basic/ops-alerts`) and the
/// fake engine; returns the alert channel's id.
fn alerting(b: &mut WorldBuilder) -> (FakeMattermost, String) {
    let (mm, me) = b.mattermost(&["basic"]);
    b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
    let members = [me.id.as_str()];
    let team = mm.add_team("basic", &members);
    mm.add_channel(&team, "ops", &members);
    let alerts = mm.add_channel(&team, "ops-alerts", &members);
    (mm, alerts)
}

fn alerts(mm: &FakeMattermost, channel: &str) -> Vec<FakePost> {
    mm.posts()
        .into_iter()
        .filter(|p| p.channel_id == channel && p.root_id.is_empty())
        .collect()
}

#[test]
fn a_container_crash_looping_under_its_restart_policy_escalates_with_count_and_exit_code() {
    let mut b = WorldBuilder::new();
    let (mm, channel) = alerting(&mut b);
    let docker = b.docker();
    docker.add(FakeContainer::running("web").policy("always"));
    b.toml(
        "[[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\nfail_after = 1\n\
         max_restarts = 3\nrestart_window_mins = 60\n\
         fix = { action = \"restart_container\", settle_secs = 0, start_grace_secs = 0 }\n",
    );
    let sb = b.sandbox();
    let run = || {
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    };
    run();
    assert_eq!(check(&sb.state_json(), "web")["status"], "ok");

    // Between two cycles the engine's policy restarted it five times; it
    // exits 3 each time and is caught waiting for the next restart.
    docker.update("web", |c| c.crash(5, 3));
    run();
    let st = sb.state_json();
    let web = check(&st, "web");
    assert_eq!(web["status"], "critical", "{web}");
    let reason = web["reason"].as_str().unwrap();
    assert!(
        reason.contains("crash-looping")
            && reason.contains("restarted it 5 times in the last 60 min")
            && reason.contains("last exit code 3"),
        "{reason}"
    );
    assert_eq!(
        docker.restarts("web"),
        0,
        "restarting it again does not help"
    );
    let posted = alerts(&mm, &channel);
    assert_eq!(posted.len(), 1, "{posted:#?}");
    let alert = &posted[0].message;
    assert!(
        alert.contains("restarted it 5 times") && alert.contains("last exit code 3"),
        "{alert}"
    );
    assert!(alert.contains("restart policy"), "{alert}");
    assert!(
        !sb.path("tmp/ops-fix-history.json").exists(),
        "no attempt recorded"
    );

    // Still looping: still no restart from us, still one alert.
    docker.update("web", |c| c.crash(2, 3));
    run();
    assert_eq!(docker.restarts("web"), 0);
    assert_eq!(alerts(&mm, &channel).len(), 1);
    let out = sb.run(&["explain", "web"]);
    let why = String::from_utf8_lossy(&out.stdout);
    assert!(why.contains("crash loop"), "{}", text(&out));
    assert!(!why.contains("healthy: nothing to do"), "{why}");
    // `health` reads the restarts counted by the cycles, so it agrees.
    let out = sb.run(&["health", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let web = row(&json(&out), "web").clone();
    assert!(
        web["reason"].as_str().unwrap().contains("crash-looping"),
        "{web}"
    );
}

#[test]
fn a_short_hex_name_is_not_a_container_and_nothing_else_is_restarted() {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::running("planka").id("b8e4c1d2"));
    let mut b = WorldBuilder::new();
    b.docker_at(&docker.host()).toml(
        "[[checks]]\nname = \"b8\"\nkind = \"docker\"\ncontainer = \"b8\"\nfail_after = 1\n\
         fix = { action = \"restart_container\", settle_secs = 0, start_grace_secs = 0 }\n",
    );
    let sb = b.sandbox();
    let out = sb.run(&["health", "--json"]);
    let report = json(&out);
    let b8 = row(&report, "b8");
    assert_eq!(b8["status"], "critical", "{}", text(&out));
    assert!(
        b8["reason"]
            .as_str()
            .unwrap()
            .starts_with("container 'b8' not found"),
        "{b8}"
    );
    let out = sb.run(&["fix", "b8", "missing"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(sb.run(&["run-once"]).status.success());
    assert_eq!(docker.restarts("planka"), 0, "planka was never touched");
}

#[test]
fn a_container_name_with_blanks_is_refused_by_config_check() {
    let mut b = WorldBuilder::new();
    b.toml("[[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web \"\n");
    let sb = b.sandbox();
    let out = sb.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checks[0] (\"web\"): container 'web ' has leading or trailing blanks"),
        "{err}"
    );
}

fn silenced_world() -> (FakeDocker, Sandbox) {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::exited("web").on_restart(OnRestart::Fixes));
    docker.add(FakeContainer::running("db"));
    let mut b = WorldBuilder::new();
    b.docker_at(&docker.host()).toml(
        "[[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\nfail_after = 1\n\
         fix = { action = \"restart_container\", settle_secs = 0, start_grace_secs = 0 }\n\n\
         [[checks]]\nname = \"db\"\nkind = \"docker\"\ncontainer = \"db\"\n",
    );
    let sb = b.sandbox();
    let out = sb.run(&["silence", "web", "1h", "--reason", "host maintenance"]);
    assert!(out.status.success(), "{}", text(&out));
    (docker, sb)
}

#[test]
fn health_shows_a_silenced_service_as_silenced_not_critical() {
    let (docker, sb) = silenced_world();
    let out = sb.run(&["health", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["critical"], false, "{report}");
    let web = row(&report, "web");
    assert_eq!(web["status"], "critical", "the probe's own result is kept");
    assert!(web["silenced_until_ms"].is_i64(), "{web}");
    let out = sb.run(&["health"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(line.contains("silenced"), "{table}");
    assert!(!line.contains(" critical "), "{table}");
    assert!(table.contains("1 silenced"), "{table}");

    // The silence ends: critical again, exit 1.
    let out = sb.run(&["silence", "--clear", "s1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = sb.run(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(docker.restarts("web"), 0, "health only looks");
}

#[test]
fn health_and_fix_go_on_when_the_state_file_is_unreadable() {
    let (docker, sb) = silenced_world();
    std::fs::write(sb.state(), "{ torn").unwrap();
    let out = sb.run(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("going on without it"),
        "{}",
        text(&out)
    );
    let out = sb.run(&["fix", "web", "exited"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(docker.restarts("web"), 1);
}

#[test]
fn fix_refuses_a_silenced_service_unless_forced() {
    let (docker, sb) = silenced_world();
    let out = sb.run(&["fix", "web", "exited"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web is silenced until") && err.contains("--force"),
        "{}",
        text(&out)
    );
    assert_eq!(docker.restarts("web"), 0);
    let out = sb.run(&["fix", "web", "exited", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(docker.restarts("web"), 1, "--force overrides the silence");
}

#[test]
fn health_exits_3_when_a_check_cannot_tell() {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::running("web"));
    let mut b = WorldBuilder::new();
    b.docker_at(&docker.host()).toml(
        "[[checks]]\nname = \"docker-engine\"\nkind = \"docker_engine\"\ntimeout_secs = 1\n\n\
         [[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\ntimeout_secs = 1\n",
    );
    let sb = b.sandbox();
    assert_eq!(sb.run(&["health"]).status.code(), Some(0));
    // The engine hangs: nothing is critical, but nothing can be told either.
    docker.set_fault(Fault::Hang);
    let out = sb.run(&["health"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("overall: unknown (exit 3)"), "{table}");
    let out = sb.run(&["health", "--check", "web", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(json(&out)["unknown"], true);
}

/// A sandbox whose engine `prod` is `host` with the client files `f`.
fn tls_sandbox(host: &str, f: &ClientFiles) -> Sandbox {
    let mut b = WorldBuilder::new();
    b.line("health", "reprobe_pause_ms = 10")
        .line("health.engines.prod", &format!("host = {}", quoted(host)))
        .line(
            "health.engines.prod",
            &format!("tls_ca = {}", quoted(&f.ca().to_string_lossy())),
        )
        .line(
            "health.engines.prod",
            &format!("tls_cert = {}", quoted(&f.cert().to_string_lossy())),
        )
        .line(
            "health.engines.prod",
            &format!("tls_key = {}", quoted(&f.key().to_string_lossy())),
        )
        .toml(
            "[[checks]]\nname = \"db\"\nkind = \"docker\"\ncontainer = \"db\"\nengine = \"prod\"\n",
        );
    b.sandbox()
}

fn engine_reason(sb: &Sandbox) -> String {
    let out = sb.run(&["health", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    row(&json(&out), "docker-engine-prod")["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn engine_errors_over_tls_say_which_side_refused() {
    let pki = Pki::new("prod");
    let cfg = pki.server_config();
    let engine = crate::support::in_background(move || FakeDocker::start_tls(cfg));
    engine.add(FakeContainer::healthy("db"));
    let dir = tempfile::tempdir().unwrap();
    let good = pki.client_files(&dir.path().join("good"));
    let sb = tls_sandbox(&engine.host(), &good);
    let out = sb.run(&["health"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Our tls_ca is another CA: the engine's certificate is unknown to us.
    let wrong_ca = pki.client_files(&dir.path().join("wrong-ca"));
    std::fs::copy(
        Pki::new("other")
            .client_files(&dir.path().join("other"))
            .ca(),
        wrong_ca.ca(),
    )
    .unwrap();
    let reason = engine_reason(&tls_sandbox(&engine.host(), &wrong_ca));
    assert!(
        reason.contains("UnknownIssuer") && reason.contains("tls_ca"),
        "{reason}"
    );

    // Our client certificate is signed by a CA the engine does not trust.
    let stranger = Pki::new("stranger").client_files(&dir.path().join("stranger"));
    std::fs::copy(good.ca(), stranger.ca()).unwrap();
    let reason = engine_reason(&tls_sandbox(&engine.host(), &stranger));
    assert!(
        reason.contains("BadCertificate") && reason.contains("tls_cert"),
        "{reason}"
    );

    // Nothing listens on the port.
    let dead = crate::support::in_background(FakeDocker::unreachable_host);
    let reason = engine_reason(&tls_sandbox(&dead, &good));
    assert!(reason.contains("connection refused"), "{reason}");
    assert!(!reason.contains("client error (Connect)"), "{reason}");
}

#[test]
fn doctor_checks_each_docker_engine_and_its_tls_files() {
    let pki = Pki::new("prod");
    let cfg = pki.server_config();
    let secure = crate::support::in_background(move || FakeDocker::start_tls(cfg));
    secure.add(FakeContainer::healthy("db"));
    let dir = tempfile::tempdir().unwrap();
    let good = pki.client_files(&dir.path().join("good"));
    let dead = crate::support::in_background(FakeDocker::unreachable_host);
    let mut b = WorldBuilder::new();
    b.docker_at(&dead)
        .line("health.engines.prod", &format!("host = {}", quoted(&secure.host())))
        .line(
            "health.engines.prod",
            &format!("tls_ca = {}", quoted(&good.ca().to_string_lossy())),
        )
        .line(
            "health.engines.prod",
            &format!("tls_cert = {}", quoted(&good.cert().to_string_lossy())),
        )
        .line(
            "health.engines.prod",
            &format!("tls_key = {}", quoted(&good.key().to_string_lossy())),
        )
        .toml(
            "[[checks]]\nname = \"db\"\nkind = \"docker\"\ncontainer = \"db\"\nengine = \"prod\"\n\n\
             [[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\n",
        );
    let sb = b.sandbox();
    let out = sb.run(&["doctor"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let default = doctor_line(&s, "docker engine");
    assert!(
        default.starts_with("FAIL") && default.contains("connection refused"),
        "{t}"
    );
    let prod = doctor_line(&s, "docker engine prod");
    assert!(prod.starts_with("ok ") && prod.contains("API 1.41"), "{t}");
    let files = doctor_line(&s, "docker engine prod tls");
    assert!(
        files.starts_with("ok ") && files.contains("owner-only"),
        "{t}"
    );

    // A key others can read, then a missing CA file.
    set_mode(&good.key(), 0o644);
    let out = sb.run(&["doctor"]);
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let files = doctor_line(&s, "docker engine prod tls");
    assert!(
        files.starts_with("FAIL") && files.contains("chmod 600"),
        "{}",
        text(&out)
    );
    set_mode(&good.key(), 0o600);
    std::fs::remove_file(good.ca()).unwrap();
    let out = sb.run(&["doctor"]);
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let files = doctor_line(&s, "docker engine prod tls");
    assert!(
        files.starts_with("FAIL") && files.contains("tls_ca") && files.contains("ca.pem"),
        "{}",
        text(&out)
    );
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `unshare` with a mount namespace of its own (and, when not root, a
/// user namespace mapping us to root so that mounting is allowed).
fn unshare() -> std::process::Command {
    let mut cmd = std::process::Command::new("unshare");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cmd.arg("--map-root-user");
    }
    cmd.args(["--mount", "--propagation", "private"]);
    cmd
}

/// Mounts a tmpfs of 256 KiB and 64 inodes on `$1`, fills every block.
const FILL: &str = "mount -t tmpfs -o size=256k,nr_inodes=64 ops-agent-test \"$1\" || exit 97; \
                    dd if=/dev/zero of=\"$1/filler\" bs=4k 2>/dev/null; shift; exec \"$@\"";

/// Runs the binary with the sandbox's `tmp/` (state, token cache, fix
/// history, lock) on a full tmpfs, in a mount namespace of its own
/// (nothing is mounted on the host). `None`, with a `skipped:` line, where
/// this machine cannot mount one (a failure under `CI=true`).
fn on_full_tmpfs(sb: &Sandbox, args: &[&str]) -> Option<std::process::Output> {
    const TIER: &str = "full_disk";
    let probe = unshare()
        .args(["sh", "-c", FILL, "sh"])
        .arg(sb.root())
        .arg("true")
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            crate::support::tier::missing(TIER, &format!("cannot mount a tmpfs: {}", text(&o)));
            return None;
        }
        Err(e) => {
            crate::support::tier::missing(TIER, &format!("no unshare: {e}"));
            return None;
        }
    }
    let inner = sb.command(args);
    let mut cmd = unshare();
    cmd.args(["sh", "-c", FILL, "sh"])
        .arg(sb.path("tmp"))
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().expect("unshare ran once already");
    crate::support::tier::ran(TIER);
    Some(out)
}

#[test]
fn doctor_fails_when_the_state_directory_is_full() {
    let sb = WorldBuilder::new().sandbox();
    let Some(cycle) = on_full_tmpfs(&sb, &["run-once"]) else {
        return;
    };
    // What the operator saw: every cycle fails to save.
    assert_eq!(cycle.status.code(), Some(1), "{}", text(&cycle));
    assert!(
        text(&cycle).contains("No space left on device"),
        "{}",
        text(&cycle)
    );
    let out = on_full_tmpfs(&sb, &["doctor"]).unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let tmp = sb.path("tmp");
    let line = doctor_line(&s, &format!("free space {}", tmp.display()));
    assert!(
        line.starts_with("FAIL") && line.contains("state file") && line.contains("No space left"),
        "{t}"
    );
    assert!(s.contains("PROBLEMS"), "{t}");
}
