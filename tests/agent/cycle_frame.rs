//! The one-shot frame through the real binary: state files, lock, corrupt
//! and planted files, config errors, dry run, deadline, launchd plist.

use std::os::unix::fs::PermissionsExt;

use crate::support::agent::{text, Sandbox};

#[test]
fn first_run_writes_state_and_second_run_advances_it() {
    let sb = Sandbox::new();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let first = sb.state_json()["last_check_ms"]
        .as_i64()
        .expect("last_check_ms");
    let mode = std::fs::metadata(sb.state()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file must be owner-only");

    std::thread::sleep(std::time::Duration::from_millis(5));
    // No subcommand is the same as run-once.
    let out = sb.run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let second = sb.state_json()["last_check_ms"].as_i64().unwrap();
    assert!(
        second > first,
        "cursor did not advance: {first} -> {second}"
    );

    let log = std::fs::read_to_string(sb.log()).unwrap();
    assert!(
        log.contains("first_run=true") && log.contains("first_run=false"),
        "{log}"
    );
    let summaries: Vec<_> = log.lines().filter(|l| l.contains("cycle ok in")).collect();
    assert_eq!(summaries.len(), 2, "{log}");
    assert!(summaries[0].contains("health=ok("), "{}", summaries[0]);

    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.stats()).unwrap()).unwrap();
    assert_eq!(stats["cycles"], 2);
}

#[test]
fn status_json_reads_the_last_cycle_back() {
    let sb = Sandbox::new();
    let out = sb.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["has_run"], false);
    assert_eq!(v["overdue"], true);

    assert!(sb.run(&["run-once"]).status.success());
    let out = sb.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["has_run"], true);
    assert_eq!(v["overdue"], false);
    assert_eq!(v["lock_holder"], serde_json::Value::Null);
    let stages: Vec<_> = v["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect();
    assert!(stages.contains(&"health".to_string()), "{stages:?}");
    assert_eq!(v["last_cycle"]["checks"].as_array().unwrap().len(), 3);

    let out = sb.run(&["status"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("last cycle") && s.contains("on schedule"), "{s}");
}

#[test]
fn a_second_cycle_while_one_holds_the_lock_exits_75() {
    let sb = Sandbox::new();
    sb.write_config();
    // Another cycle, as far as the binary can tell: a live process holds the flock.
    let held = ops_agent::lock::acquire(&sb.path("tmp/ops-agent.lock")).unwrap();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another cycle is running"),
        "{}",
        text(&out)
    );
    assert!(!sb.state().exists(), "a refused cycle must not write state");

    let out = sb.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["lock_holder"]
        .as_str()
        .unwrap()
        .contains(&format!("pid {}", std::process::id())));

    drop(held);
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_lock_file_left_by_a_dead_process_is_taken_over() {
    let sb = Sandbox::new();
    sb.write_config();
    std::fs::write(
        sb.path("tmp/ops-agent.lock"),
        "pid 999999 since 2020-01-01T00:00:00Z\n",
    )
    .unwrap();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn corrupt_state_is_set_aside_and_reported() {
    let sb = Sandbox::new();
    sb.write_config();
    std::fs::write(sb.state(), "{\"last_check_ms\": 12").unwrap();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let aside: Vec<_> = std::fs::read_dir(sb.path("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("ops-agent-state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(sb.path(&format!("tmp/{}", aside[0]))).unwrap(),
        "{\"last_check_ms\": 12",
        "the corrupt bytes are kept"
    );
    assert!(sb.state_json()["last_check_ms"].is_i64());
    let log = std::fs::read_to_string(sb.log()).unwrap();
    assert!(log.contains("Corrupt file set aside"), "{log}");

    let out = sb.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let moved = v["set_aside"][0]["moved_to"].as_str().unwrap();
    assert!(moved.ends_with(&aside[0]), "{v}");
    let out = sb.run(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("set aside"));
}

#[test]
fn a_planted_symlink_at_the_state_path_is_refused_and_its_target_untouched() {
    let sb = Sandbox::new();
    sb.write_config();
    let victim = sb.path("victim.txt");
    std::fs::write(&victim, "do not touch").unwrap();
    std::os::unix::fs::symlink(&victim, sb.state()).unwrap();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("symlink") && err.contains("ops-agent-state.json"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
    assert!(std::fs::symlink_metadata(sb.state())
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn an_unknown_config_key_is_named() {
    let mut sb = Sandbox::new();
    sb.extra = "[agent]\ndeadline_sec = 10\n".into();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("deadline_sec"),
        "{err}"
    );
}

#[test]
fn a_key_set_twice_is_named_as_a_duplicate_not_as_a_refused_secret() {
    let mut sb = Sandbox::new();
    // The example sets token_file; an operator uncomments a second one.
    sb.extra = "[mattermost]\nteams = [\"basic\"]\ntoken_file = \"~/.config/ops-agent/mm-token\"\n\
                url = \"http://localhost:8065\"\ntoken_file = \"~/other-token\"\n"
        .into();
    let out = sb.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let config = std::fs::read_to_string(sb.config()).unwrap();
    let line = |needle: &str| config.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let want = format!(
        "duplicate key `mattermost.token_file` at line {} (first set at line {})",
        line("other-token"),
        line("~/.config/ops-agent/mm-token")
    );
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn a_bad_config_value_is_named() {
    let mut sb = Sandbox::new();
    sb.extra =
        "[[checks]]\nname = \"disk\"\nkind = \"disk\"\npath = \"/\"\nwarn_pct = 140\n".into();
    let out = sb.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("warn_pct") && err.contains("140"),
        "{err}"
    );

    sb.extra = "[agent]\ndeadline_secs = \"soon\"\n".into();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deadline_secs") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn config_check_prints_the_effective_config_and_example_round_trips() {
    let sb = Sandbox::new();
    let out = sb.run(&["config", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("valid") && s.contains("deadline_secs = 240"),
        "{s}"
    );
    // `~` in the config was expanded to the sandbox HOME.
    assert!(
        s.contains(
            &sb.root()
                .join("system/logs/ops-agent.log")
                .display()
                .to_string()
        ),
        "{s}"
    );

    let out = sb.run(&["config", "example"]);
    let example = sb.path("example.toml");
    std::fs::write(&example, &out.stdout).unwrap();
    let out = std::process::Command::new(crate::support::agent::binary())
        .args(["config", "check", "--config"])
        .arg(&example)
        .env("HOME", sb.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("example.toml"),
        "{}",
        text(&out)
    );
}

#[test]
fn dry_run_writes_nothing_but_the_log() {
    let sb = Sandbox::new();
    let out = sb.run(&["run-once", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!sb.state().exists(), "dry run must not move the cursor");
    assert!(!sb.stats().exists());
    let mut files = Vec::new();
    for entry in walk(sb.root()) {
        files.push(entry.strip_prefix(sb.root()).unwrap().display().to_string());
    }
    files.sort();
    assert_eq!(
        files,
        [
            "config.toml",
            "system/logs/ops-agent.log",
            "tmp/ops-agent.lock"
        ],
        "{files:?}"
    );
    let log = std::fs::read_to_string(sb.log()).unwrap();
    assert!(log.contains("[dry-run]"), "{log}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_deadline_shorter_than_the_work_cuts_the_cycle_and_still_saves_state() {
    let mut sb = Sandbox::new();
    sb.extra = "[agent]\ndeadline_secs = 0.000001\n".into();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let st = sb.state_json();
    assert_eq!(st["last_cycle"]["deadline_hit"], true, "{st}");
    let health = st["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "health")
        .unwrap()
        .clone();
    assert_eq!(health["outcome"], "skipped", "{health}");
    assert!(
        health["detail"].as_str().unwrap().contains("deadline"),
        "{health}"
    );
    let log = std::fs::read_to_string(sb.log()).unwrap();
    assert!(log.contains("(deadline hit)"), "{log}");
}

#[test]
fn reset_removes_the_runtime_files_and_asks_without_yes() {
    let sb = Sandbox::new();
    assert!(sb.run(&["run-once"]).status.success());
    std::fs::write(sb.path("tmp/ops-fix-history.json"), "{}").unwrap();
    // No terminal and no --yes: refuse, delete nothing.
    let out = sb.run(&["reset"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(sb.state().exists());

    let out = sb.run(&["reset", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!sb.state().exists() && !sb.path("tmp/ops-fix-history.json").exists());
    assert!(sb.stats().exists(), "stats survive a reset");
    // The next run behaves like a first run.
    assert!(sb.run(&["run-once"]).status.success());
    assert!(std::fs::read_to_string(sb.log())
        .unwrap()
        .lines()
        .last()
        .is_some());
    let log = std::fs::read_to_string(sb.log()).unwrap();
    assert_eq!(log.matches("first_run=true").count(), 2, "{log}");
}

#[test]
fn stats_are_readable() {
    let sb = Sandbox::new();
    assert!(sb.run(&["run-once"]).status.success());
    let out = sb.run(&["stats"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.lines()
            .any(|l| l.starts_with("cycles ") && l.split_whitespace().nth(1) == Some("1")),
        "{s}"
    );
    let out = sb.run(&["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cycles"], 1);
}

#[test]
fn the_launchd_plist_runs_one_cycle_every_300_seconds() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/launchd/com.john.ops-agent.plist"
    );
    let value = plist::Value::from_file(path).expect("valid XML plist");
    let d = value.as_dictionary().expect("top-level dict");
    assert_eq!(
        d.get("Label").and_then(|v| v.as_string()),
        Some("com.john.ops-agent")
    );
    let args: Vec<_> = d
        .get("ProgramArguments")
        .and_then(|v| v.as_array())
        .unwrap()
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect();
    assert!(
        args[0].starts_with('/') && args[0].ends_with("/ops-agent"),
        "{args:?}"
    );
    assert_eq!(args[1], "--config");
    assert_eq!(args.last(), Some(&"run-once"));
    assert_eq!(
        d.get("StartInterval").and_then(|v| v.as_signed_integer()),
        Some(300)
    );
    assert_eq!(d.get("RunAtLoad").and_then(|v| v.as_boolean()), Some(true));
    for key in ["StandardOutPath", "StandardErrorPath"] {
        let p = d.get(key).and_then(|v| v.as_string()).unwrap();
        assert!(
            p.starts_with("$HOME/system/logs/") && p.ends_with(".log"),
            "{key} = {p}"
        );
    }
}

#[test]
fn the_node_daemons_stats_file_keeps_its_counters_through_a_cycle() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.stats().parent().unwrap()).unwrap();
    std::fs::write(
        sb.stats(),
        r#"{"cycles": 1200, "messagesProcessed": 3400, "tasksCreated": 310,
            "repliesSent": 305, "errors": {"mattermost": 4},
            "lastRun": "2024-05-01T10:00:00.000Z"}"#,
    )
    .unwrap();
    std::fs::set_permissions(sb.stats(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.stats()).unwrap()).unwrap();
    assert_eq!(stats["cycles"], 1201, "{stats}");
    for (name, n) in [
        ("messages_processed", 3400),
        ("tasks_created", 310),
        ("replies_sent", 305),
        ("errors_mattermost", 4),
    ] {
        assert_eq!(stats["counters"][name], n, "{name}: {stats}");
    }
    assert!(stats.get("messagesProcessed").is_none(), "{stats}");
    let shown = String::from_utf8_lossy(&sb.run(&["stats"]).stdout).into_owned();
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("messages_processed ") && l.ends_with(" 3400")),
        "{shown}"
    );
}

/// Root runs the README's first command, leaving the runbook's shared
/// `/tmp` files; then the service account's cycle is refused with their
/// owner and the way out named (it used to blame symlinks). Needs root to
/// play both users: the `root` tier (CI runs as root).
#[test]
fn files_root_left_in_the_shared_tmp_name_their_owner_and_the_way_out() {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        crate::support::tier::missing("root", "playing root and a service account needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let sb = Sandbox::new();
    std::fs::set_permissions(sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The shared /tmp: anyone may create, nobody may remove another's file.
    std::fs::create_dir_all(sb.path("tmp")).unwrap();
    std::fs::set_permissions(sb.path("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::set_permissions(sb.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    // The service account's own home, for what is not shared.
    let home = sb.path("svc");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let config = std::fs::read_to_string(sb.config())
        .unwrap()
        .replace('~', &home.display().to_string());
    let svc_config = home.join("config.toml");
    std::fs::write(&svc_config, config).unwrap();
    std::os::unix::fs::chown(&svc_config, Some(NOBODY), Some(NOBODY)).unwrap();
    // The binary where the service account can run it (the checkout may
    // sit under a directory only root can enter).
    let bin = sb.path("bin/ops-agent");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(&sb.bin, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&svc_config)
        .arg("run-once")
        .env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let state = sb.state().display().to_string();
    let lock = sb.path("tmp/ops-agent.lock").display().to_string();
    assert!(
        t.contains("belong to root (uid 0), not to")
            && t.contains(&state)
            && t.contains(&lock)
            && t.contains("sudo rm ")
            && t.contains("[paths]"),
        "{t}"
    );
    assert!(!t.contains("symlink"), "{t}");
    crate::support::tier::ran("root");
}
