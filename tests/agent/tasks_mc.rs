//! MC command adapter against the fake MC scripts in tests/fixtures/mc:
//! argv without a shell, clean environment, id parsing, failures with the
//! stderr tail, timeout (the command's whole process group killed).

use std::path::PathBuf;
use std::time::Duration;

use ops_agent::tasks::mc::{McCommand, McConfig};
use ops_agent::tasks::{Priority, Tag, Task};
use ops_agent::time::Secs;

use crate::support::procs;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mc")
        .join(name)
        .display()
        .to_string()
}

fn task(title: &str) -> Task {
    Task {
        title: title.into(),
        description: "line one\nline two".into(),
        owner: "ops".into(),
        tag: Tag::Billable,
        priority: Priority::High,
        source: "post-1".into(),
        label: "INCIDENT".into(),
        team: "wizard".into(),
        channel: "dev".into(),
        author: "alice".into(),
        permalink: "http://mm/wizard/pl/post-1".into(),
    }
}

fn cmd(script: &str, args: &[&str]) -> McConfig {
    let mut command = vec![fixture(script)];
    command.extend(args.iter().map(|s| s.to_string()));
    McConfig {
        command,
        ..Default::default()
    }
}

/// Splits the NUL-separated argv file into calls (each a Vec of elements).
fn calls(path: &std::path::Path) -> Vec<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut out = vec![];
    let mut cur = vec![];
    for el in bytes.split(|b| *b == 0) {
        if el == b"--END--" {
            out.push(std::mem::take(&mut cur));
        } else if !el.is_empty() || !cur.is_empty() {
            cur.push(el.to_vec());
        }
    }
    out
}

#[tokio::test]
async fn json_id_is_parsed() {
    let c = McCommand::new(&cmd("ok-json.sh", &[])).unwrap();
    assert_eq!(c.create(&task("t"), |_| {}).await.unwrap(), "MC-123");
}

#[tokio::test]
async fn nested_json_field_after_a_log_line() {
    let cfg = McConfig {
        id_json_field: "task.id".into(),
        ..cmd("ok-nested.sh", &[])
    };
    assert_eq!(
        McCommand::new(&cfg)
            .unwrap()
            .create(&task("t"), |_| {})
            .await
            .unwrap(),
        "MC-9"
    );
}

#[tokio::test]
async fn text_id_through_regex() {
    let cfg = McConfig {
        id_regex: Some(r"Created task (MC-\d+)".into()),
        ..cmd("ok-text.sh", &[])
    };
    assert_eq!(
        McCommand::new(&cfg)
            .unwrap()
            .create(&task("t"), |_| {})
            .await
            .unwrap(),
        "MC-77"
    );
    // Without the regex the same output is an error, not a guess.
    let err = McCommand::new(&cmd("ok-text.sh", &[]))
        .unwrap()
        .create(&task("t"), |_| {})
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no task id"), "{err:#}");
}

#[tokio::test]
async fn non_zero_exit_carries_status_and_stderr_tail() {
    let err = McCommand::new(&cmd("fail.sh", &[]))
        .unwrap()
        .create(&task("t"), |_| {})
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("exited with status 3"), "{msg}");
    assert!(msg.contains("database is locked"), "{msg}");
}

#[tokio::test]
async fn garbage_output_is_an_error_with_stderr() {
    let err = McCommand::new(&cmd("garbage.sh", &[]))
        .unwrap()
        .create(&task("t"), |_| {})
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no task id") && msg.contains("something odd"),
        "{msg}"
    );
}

/// A hanging MC that started a process of its own: the timeout kills its
/// whole process group, the child included.
#[tokio::test]
async fn hang_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = dir.path().join("hang.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{p}'\nsleep 300 &\necho $! >> '{p}'\nwait\n",
            p = pids.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = McConfig {
        command: vec![script.display().to_string()],
        timeout_secs: Secs::new(1),
        ..Default::default()
    };
    let err = McCommand::new(&cfg)
        .unwrap()
        .create(&task("t"), |_| {})
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("timed out after 1s"), "{err:#}");
    let started = procs::pids_in(&pids);
    assert_eq!(started.len(), 2, "the script and its sleep: {started:?}");
    let living = procs::wait_group_gone(started[0], Duration::from_secs(5));
    assert!(
        living.is_empty(),
        "still running after the timeout: {living:?}"
    );
}

#[tokio::test]
async fn missing_program_is_an_error_naming_it() {
    let cfg = McConfig {
        command: vec!["/nonexistent/mc".into()],
        ..Default::default()
    };
    let err = McCommand::new(&cfg)
        .unwrap()
        .create(&task("t"), |_| {})
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent/mc"), "{err:#}");
}

#[tokio::test]
async fn hostile_text_arrives_byte_for_byte_as_one_argv_element() {
    let dir = tempfile::tempdir().unwrap();
    let argv_file = dir.path().join("argv");
    let env_file = dir.path().join("env");
    // SAFETY (edition 2021: safe fn): each test binary sets distinct names.
    std::env::set_var("MC_ARGV_FILE", &argv_file);
    std::env::set_var("MC_ENV_FILE", &env_file);
    std::env::set_var("OPS_AGENT_TEST_SECRET_NOT_PASSED", "hunter2");
    let hostile =
        "it's \"quoted\" $(touch /tmp/pwned) `id` ; rm -rf ~ | cat\nsecond line\t{source} * ?";
    let cfg = McConfig {
        pass_env: vec!["MC_ARGV_FILE".into(), "MC_ENV_FILE".into()],
        ..cmd(
            "record.sh",
            &["create", "--title", "{title}", "--body", "{description}", "--meta={tag}/{priority}/{owner}/{source}/{label}/{team}/{channel}/{author}/{permalink}"],
        )
    };
    let c = McCommand::new(&cfg).unwrap();
    let id = c.create(&task(hostile), |_| {}).await.unwrap();
    assert_eq!(id, "MC-1");
    let calls = calls(&argv_file);
    assert_eq!(calls.len(), 1);
    let argv = &calls[0];
    assert_eq!(argv.len(), 6, "{argv:?}");
    assert_eq!(argv[2], hostile.as_bytes());
    assert_eq!(argv[4], b"line one\nline two");
    assert_eq!(
        argv[5],
        b"--meta=BILLABLE/HIGH/ops/post-1/INCIDENT/wizard/dev/alice/http://mm/wizard/pl/post-1"
    );
    assert!(!std::path::Path::new("/tmp/pwned").exists());
    // Clean environment: PATH, HOME and what pass_env names; nothing else.
    let env = std::fs::read_to_string(&env_file).unwrap();
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(!env.contains("hunter2"), "{env}");
    for n in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "MC_ARGV_FILE",
                "MC_ENV_FILE",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD"
            ]
            .contains(n),
            "unexpected env var {n}"
        );
    }
}

/// A post far longer than one argument may be (Linux refuses a single
/// argument over 128 KiB with E2BIG): the command still starts, with the
/// description cut and marked, so the post is not pending for ever.
#[tokio::test]
async fn a_one_mib_description_still_starts_the_command() {
    let mut t = task("long");
    t.description = "x".repeat(1024 * 1024);
    let c = McCommand::new(&cmd("ok-json.sh", &["create", "--body", "{description}"])).unwrap();
    assert_eq!(c.create(&t, |_| {}).await.unwrap(), "MC-123");
}
