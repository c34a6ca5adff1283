//! launchd and systemd checks and fixes through fake `launchctl` and
//! `systemctl` executables put first on PATH (tests/fixtures/bin), which
//! print the real formats from files in `$OPS_FAKE_DAEMON_DIR`.
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::Utc;
use ops_agent::fix::{self, FixAction, FixConfig, FixDecision, FixOptions, FixSpec, Outcome};
use ops_agent::health::{
    self, CheckConfig, CheckKind, Checks, HealthConfig, HealthContext, Status,
};
use ops_agent::time::Secs;

#[path = "support/mod.rs"]
mod support;

/// One state dir for the whole test binary (PATH and the env var are
/// process-wide); each test uses its own labels and units.
fn daemon_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir_all(dir.join("launchd")).unwrap();
        std::fs::create_dir_all(dir.join("systemd")).unwrap();
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin");
        let path = std::env::var("PATH").unwrap_or_default();
        // Set once, before any test spawns a process.
        std::env::set_var("PATH", format!("{}:{path}", bin.display()));
        std::env::set_var("OPS_FAKE_DAEMON_DIR", &dir);
        // Stands for the agent's tokens and passwords: a fix command must
        // never see it.
        std::env::set_var(SECRET_VAR, "not-for-fix-commands");
        dir
    })
}

/// A variable of the agent's environment (set once in [`daemon_dir`]).
const SECRET_VAR: &str = "OPS_AGENT_TEST_FIX_SECRET_7F3A";

fn write(kind: &str, name: &str, text: &str) {
    std::fs::write(daemon_dir().join(kind).join(name), text).unwrap();
}

fn ctx() -> HealthContext {
    HealthContext::new(&HealthConfig {
        reprobe_pause_ms: 10,
        docker_host: Some("tcp://127.0.0.1:1".into()),
        ..Default::default()
    })
}

fn launchd(label: &str) -> CheckConfig {
    let mut c = CheckConfig::new(label, CheckKind::Launchd);
    c.label = Some(label.into());
    c
}

fn systemd(unit: &str) -> CheckConfig {
    let mut c = CheckConfig::new(unit, CheckKind::Systemd);
    c.unit = Some(unit.into());
    c
}

fn calls() -> String {
    std::fs::read_to_string(daemon_dir().join("calls")).unwrap_or_default()
}

const RUNNING: &str = "{\n\t\"LimitLoadToSessionType\" = \"Aqua\";\n\t\"Label\" = \"com.john.ops-agent\";\n\t\"OnDemand\" = true;\n\t\"LastExitStatus\" = 0;\n\t\"PID\" = 811;\n\t\"Program\" = \"/usr/local/bin/ops-agent\";\n};\n";
const EXITED_1: &str = "{\n\t\"LimitLoadToSessionType\" = \"Aqua\";\n\t\"Label\" = \"com.john.backup\";\n\t\"OnDemand\" = true;\n\t\"LastExitStatus\" = 256;\n};\n";

#[tokio::test]
async fn launchd_jobs_are_graded_from_real_output() {
    write("launchd", "com.john.ops-agent", RUNNING);
    write("launchd", "com.john.backup", EXITED_1);
    let checks = vec![
        launchd("com.john.ops-agent"),
        launchd("com.john.backup"),
        launchd("com.john.missing"),
    ];
    let checks = Checks::from(checks);
    let r = health::run_all(&ctx(), &checks).await;
    assert_eq!(r[0].status, Status::Ok, "{:?}", r[0]);
    assert!(r[0].reason.contains("PID 811"));
    assert_eq!(r[1].status, Status::Critical);
    assert!(r[1].reason.contains("exit code 1"), "{}", r[1].reason);
    assert_eq!(r[2].status, Status::Critical);
    assert!(
        r[2].reason.contains("not loaded (Could not find service"),
        "{}",
        r[2].reason
    );
}

#[tokio::test]
async fn a_failed_launchd_job_is_kickstarted_and_verified() {
    write("launchd", "com.john.mc", EXITED_1);
    write("launchd", "com.john.mc.after", RUNNING);
    let mut c = launchd("com.john.mc");
    c.fix = Some(FixSpec {
        settle_secs: Secs::new(0),
        ..FixSpec::new(FixAction::Kickstart)
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.json");
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx(),
            checks: &Checks::from(vec![c]),
            history_path: &path,
            policy: &FixConfig::default(),
        },
        "com.john.mc",
        "job failed",
        FixOptions::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, Some(Outcome::Verified), "{r:?}");
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert!(
        calls().contains(&format!("launchctl kickstart -k gui/{uid}/com.john.mc\n")),
        "{}",
        calls()
    );
}

#[tokio::test]
async fn systemd_units_are_graded_from_real_output() {
    write("systemd", "ops-agent.service", "Type=oneshot\nResult=success\nNRestarts=0\nLoadState=loaded\nActiveState=inactive\nSubState=dead\n");
    write(
        "systemd",
        "ollama.service",
        "Result=success\nNRestarts=0\nLoadState=loaded\nActiveState=active\nSubState=running\n",
    );
    write(
        "systemd",
        "sync.service",
        "Result=exit-code\nNRestarts=5\nLoadState=loaded\nActiveState=failed\nSubState=failed\n",
    );
    write(
        "systemd",
        "boot.service",
        "Result=success\nNRestarts=1\nLoadState=loaded\nActiveState=activating\nSubState=start\n",
    );
    let checks = vec![
        systemd("ops-agent.service"),
        systemd("ollama.service"),
        systemd("sync.service"),
        systemd("boot.service"),
        systemd("nothere.service"),
    ];
    let checks = Checks::from(checks);
    let r = health::run_all(&ctx(), &checks).await;
    let got: Vec<(Status, bool)> = r.iter().map(|r| (r.status, r.starting)).collect();
    assert_eq!(
        got,
        [
            (Status::Ok, false),
            (Status::Ok, false),
            (Status::Critical, false),
            (Status::Warn, true),
            (Status::Critical, false),
        ],
        "{r:#?}"
    );
    assert!(calls().contains(
        "systemctl --user show -p LoadState,ActiveState,SubState,Result,NRestarts -- ollama.service"
    ));
}

#[tokio::test]
async fn a_failed_unit_is_restarted_and_a_starting_one_is_left_alone() {
    write(
        "systemd",
        "worker.service",
        "Result=exit-code\nNRestarts=0\nLoadState=loaded\nActiveState=failed\nSubState=failed\n",
    );
    write(
        "systemd",
        "worker.service.after",
        "Result=success\nNRestarts=0\nLoadState=loaded\nActiveState=active\nSubState=running\n",
    );
    write(
        "systemd",
        "slow.service",
        "Result=success\nNRestarts=0\nLoadState=loaded\nActiveState=activating\nSubState=start\n",
    );
    let spec = FixSpec {
        settle_secs: Secs::new(0),
        ..FixSpec::new(FixAction::RestartUnit)
    };
    let mut w = systemd("worker.service");
    w.fix = Some(spec.clone());
    let mut s = systemd("slow.service");
    s.fix = Some(spec);
    let checks = vec![w, s];
    let checks = Checks::from(checks);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.json");
    let now = Utc::now();
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx(),
            checks: &checks,
            history_path: &path,
            policy: &FixConfig::default(),
        },
        "worker.service",
        "failed",
        FixOptions::default(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, Some(Outcome::Verified), "{r:?}");
    assert!(calls().contains("systemctl --user restart -- worker.service\n"));
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx(),
            checks: &checks,
            history_path: &path,
            policy: &FixConfig::default(),
        },
        "slow.service",
        "slow",
        FixOptions::default(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(r.decision, FixDecision::SkipStarting);
    assert!(!calls().contains("restart slow.service"));
}

#[tokio::test]
async fn a_configured_command_runs_without_a_shell_and_failures_are_reported() {
    daemon_dir();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran; rm -rf x");
    let mut c = CheckConfig::new("cmd", CheckKind::Memory);
    c.fix = Some(FixSpec {
        command: Some(vec!["touch".into(), marker.display().to_string()]),
        settle_secs: Secs::new(0),
        ..FixSpec::new(FixAction::Command)
    });
    let path = dir.path().join("h.json");
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx(),
            checks: &Checks::from(vec![c.clone()]),
            history_path: &path,
            policy: &FixConfig::default(),
        },
        "cmd",
        "x",
        FixOptions::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_ne!(r.outcome, None, "{r:?}");
    assert!(marker.exists(), "the argument reached touch verbatim");
    c.fix.as_mut().unwrap().command = Some(vec!["false".into()]);
    c.fix.as_mut().unwrap().start_grace_secs = Secs::new(0);
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx(),
            checks: &Checks::from(vec![c]),
            history_path: &path,
            policy: &FixConfig::default(),
        },
        "cmd",
        "x",
        FixOptions::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, Some(Outcome::Failed));
    assert!(
        r.detail
            .as_deref()
            .unwrap()
            .contains("fix command false: exited with status 1"),
        "{r:?}"
    );
}

fn command_check(name: &str, argv: &[&str], timeout_secs: u64) -> CheckConfig {
    let mut c = CheckConfig::new(name, CheckKind::Memory);
    c.fix = Some(FixSpec {
        command: Some(argv.iter().map(|a| a.to_string()).collect()),
        settle_secs: Secs::new(0),
        timeout_secs: Secs::new(timeout_secs),
        ..FixSpec::new(FixAction::Command)
    });
    c
}

async fn manual_fix(c: CheckConfig, history: &Path) -> fix::FixReport {
    let service = c.name.clone();
    fix::run_manual(
        &fix::FixContext {
            health: &ctx(),
            checks: &Checks::from(vec![c]),
            history_path: history,
            policy: &FixConfig::default(),
        },
        &service,
        "x",
        FixOptions::default(),
        Utc::now(),
    )
    .await
    .unwrap()
    .0
}

#[tokio::test]
async fn a_fix_command_gets_a_clean_environment() {
    daemon_dir();
    assert!(std::env::var(SECRET_VAR).is_ok());
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env.txt");
    let script = format!("env > '{}'", env_file.display());
    let c = command_check("envcmd", &["/bin/sh", "-c", &script], 10);
    let r = manual_fix(c, &dir.path().join("h.json")).await;
    assert_ne!(r.outcome, Some(Outcome::Failed), "{r:?}");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(!env.contains(SECRET_VAR), "the secret leaked: {env}");
    assert!(!env.contains("not-for-fix-commands"), "{env}");
    assert!(!env.contains("OPS_FAKE_DAEMON_DIR"), "{env}");
}

/// Whether `pid` is gone (or a zombie waiting for its new parent to reap
/// it): waits up to ten seconds for the kernel to deliver the kill.
fn is_gone(pid: i32) -> bool {
    for _ in 0..100 {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false);
        if !alive || zombie {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test]
async fn a_fix_command_that_hangs_is_killed_with_what_it_started() {
    daemon_dir();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("sleep 60 & echo $! > '{}'; wait", pid_file.display());
    let c = command_check("hangcmd", &["/bin/sh", "-c", &script], 1);
    let r = manual_fix(c, &dir.path().join("h.json")).await;
    assert_eq!(r.outcome, Some(Outcome::Failed), "{r:?}");
    assert!(
        r.detail.as_deref().unwrap().contains("timed out after 1s"),
        "{r:?}"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = is_gone(pid);
    if !gone {
        // SAFETY: our own test's grandchild; do not leave it behind.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    assert!(gone, "the command's child {pid} survived the timeout");
}

#[tokio::test]
async fn a_hanging_tool_costs_the_check_timeout() {
    write("systemd", "hang.service", "HANG");
    write("launchd", "com.john.hang", "HANG");
    let mut a = systemd("hang.service");
    a.timeout_secs = Secs::new(1);
    let mut b = launchd("com.john.hang");
    b.timeout_secs = Secs::new(1);
    let started = Instant::now();
    let r = health::run_all(&ctx(), &Checks::from(vec![a, b])).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for r in r {
        assert_eq!(r.status, Status::Unknown, "{r:?}");
        assert!(r.reason.contains("within 1s"), "{}", r.reason);
    }
}

/// Issue 25 for daemons, through the real binary: the incident brief of
/// a systemd unit holds its last exit (`systemctl --user show`) and the
/// end of its journal (`journalctl --user -u UNIT -n N`), scrubbed; a unit
/// whose journal cannot be read says so; a launchd job's brief holds its
/// last exit status.
#[test]
fn a_failed_daemons_brief_holds_its_last_exit_and_its_journal_lines() {
    use support::agent::text;
    use support::ollama::dead_url;
    use support::world::WorldBuilder;
    let dir = daemon_dir();
    write(
        "systemd",
        "queue.service",
        "Result=exit-code\nNRestarts=5\nLoadState=loaded\nActiveState=failed\nSubState=failed\n\
         ExecMainCode=1\nExecMainStatus=3\n",
    );
    write(
        "systemd",
        "mailer.service",
        "Result=signal\nNRestarts=0\nLoadState=loaded\nActiveState=failed\nSubState=failed\n",
    );
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    let journal: Vec<String> = (1..=40)
        .map(|i| {
            format!(
                "2024-05-01T10:00:{:02}+0000 host queue[81]: tick {i}",
                i % 60
            )
        })
        .chain([
            "2024-05-01T10:01:00+0000 host queue[81]: auth with password=Hunter2-Secret failed"
                .to_string(),
            "2024-05-01T10:01:01+0000 host queue[81]: JOURNAL-MARKER-5512 fatal: queue.db locked"
                .to_string(),
        ])
        .collect();
    std::fs::write(dir.join("journal/queue.service"), journal.join("\n") + "\n").unwrap();

    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
    let team = mm.add_team("basic", &[me.id.as_str()]);
    let alerts = mm.add_channel(&team, "ops-alerts", &[me.id.as_str()]);
    b.ollama_at(&dead_url());
    b.env("OPS_FAKE_DAEMON_DIR", &dir.display().to_string());
    b.toml(
        "[escalation]\nbrief_log_lines = 5\n\n\
         [[checks]]\nname = \"queue\"\nkind = \"systemd\"\nunit = \"queue.service\"\nfail_after = 1\n\n\
         [[checks]]\nname = \"mailer\"\nkind = \"systemd\"\nunit = \"mailer.service\"\nfail_after = 1\n\n\
         [[checks]]\nname = \"backup\"\nkind = \"launchd\"\nlabel = \"com.john.brief-backup\"\nfail_after = 1\n",
    );
    write("launchd", "com.john.brief-backup", EXITED_1);
    let sb = b.sandbox();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let brief_of = |service: &str| -> String {
        let alert = mm
            .posts()
            .into_iter()
            .find(|p| {
                p.channel_id == alerts
                    && p.root_id.is_empty()
                    && p.message.contains(&format!("{service} is failing"))
            })
            .unwrap_or_else(|| panic!("no alert for {service}\n{}", sb.log_text()));
        let replies = mm.thread_replies(&alert.id);
        assert_eq!(replies.len(), 1, "{replies:#?}");
        replies[0].message.clone()
    };
    let brief = brief_of("queue");
    for want in [
        "**systemd unit queue.service**",
        "ExecMainStatus=3",
        "Result=exit-code",
        "NRestarts=5",
        "**journal of queue.service: the last 5 lines**",
        "JOURNAL-MARKER-5512 fatal: queue.db locked",
        "password=[redacted]",
        "tick 40",
        "The unit queue.service is failed (result exit-code, main process status 3).",
    ] {
        assert!(brief.contains(want), "the brief lacks {want:?}:\n{brief}");
    }
    assert!(!brief.contains("tick 37"), "only the last 5 lines: {brief}");
    assert!(!brief.contains("Hunter2-Secret"), "{brief}");
    assert!(
        calls().contains("journalctl --user -u queue.service -n 5 --no-pager -o short-iso -q"),
        "{}",
        calls()
    );
    let backup = brief_of("backup");
    assert!(
        backup.contains("**launchd job com.john.brief-backup**")
            && backup.contains("loaded, not running, last exit: exit code 1"),
        "{backup}"
    );
    let mailer = brief_of("mailer");
    assert!(
        mailer.contains(
            "journal not readable: No journal files were opened due to insufficient permissions."
        ),
        "{mailer}"
    );
}
