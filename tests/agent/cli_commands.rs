//! The operator commands through the real binary in a sandbox: `mm status`
//! against the fake Mattermost, `tasks list|stats` over a seeded ledger,
//! the task outbox in `status`, and `doctor`.

use std::process::Output;

use chrono::{Duration, Utc};
use ops_agent::tasks::ledger::Ledger;
use ops_agent::tasks::{Priority, Tag, Task};
use serde_json::{json, Value};

use crate::support::agent::{doctor_line, text, Sandbox};
use crate::support::fault::Fault;
use crate::support::mattermost::FakeMattermost;
use crate::support::ollama::{dead_url, FakeOllama};
use crate::support::planka::{FakePlanka, PASSWORD as PLANKA_PASSWORD, USERNAME as PLANKA_USER};
use crate::support::world::WorldBuilder;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// A fake Mattermost with the agent's account, its token and team `basic`
/// (two channels), and a sandbox pointed at it (and at `ollama_url`) with
/// the token in the env.
fn mm_sandbox(ollama_url: &str) -> (FakeMattermost, Sandbox, String) {
    let mut b = WorldBuilder::new();
    let (fake, me) = b.mattermost(&["basic"]);
    let agent = me.id;
    let alice = fake.add_user("alice", "pw");
    let team = fake.add_team("basic", &[&agent, &alice]);
    fake.add_channel(&team, "ops", &[&agent, &alice]);
    fake.add_channel(&team, "general", &[&agent, &alice]);
    b.llm_timeouts(3).ollama_at(ollama_url);
    (fake, b.sandbox(), me.token)
}

fn write_state(sb: &Sandbox, state: &Value) {
    std::fs::create_dir_all(sb.path("tmp")).unwrap();
    std::fs::write(sb.state(), serde_json::to_vec_pretty(state).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sb.state(), std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn mm_status_reports_the_server_the_team_and_the_cursor_without_the_token() {
    let (fake, sb, token) = mm_sandbox(&dead_url());
    let cursor = Utc::now().timestamp_millis() - 300_000;
    write_state(&sb, &json!({ "last_check_ms": cursor }));

    let out = sb.run(&["mm", "status"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains(&token), "token leaked: {t}");
    let s = stdout(&out);
    assert!(s.contains("ping      ok"), "{t}");
    assert!(s.contains("version   10.5.0"), "{t}");
    assert!(s.contains("@opsbot"), "{t}");
    assert!(s.contains("token from env OPS_AGENT_MM_TOKEN"), "{t}");
    assert!(
        s.lines()
            .any(|l| l.contains("basic") && l.contains(" 2 ") && l.ends_with("ok")),
        "{t}"
    );
    assert!(
        s.contains(&format!("last_check_ms {cursor} (5m ago)")),
        "{t}"
    );
    assert!(s.ends_with("ok\n"), "{t}");

    let out = sb.run(&["mm", "status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(&token));
    let v = json_of(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["problem"], Value::Null);
    assert_eq!(v["server_version"], "10.5.0");
    assert_eq!(v["user"], "opsbot");
    assert_eq!(v["teams"][0]["name"], "basic");
    assert_eq!(v["teams"][0]["resolved"], true);
    assert_eq!(v["last_check_ms"], cursor);
    let age = v["cursor_age_secs"].as_i64().unwrap();
    assert!((299..=400).contains(&age), "{age}");

    // Read-only: no state was written.
    let state: Value = sb.state_json();
    assert_eq!(state, json!({ "last_check_ms": cursor }));

    fake.set_fault(Fault::Refuse);
    let out = sb.run(&["mm", "status"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let last = stdout(&out).lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("NOT OK: Mattermost at") && last.contains("not reachable"),
        "{t}"
    );
    let v = json_of(&sb.run(&["mm", "status", "--json"]));
    assert_eq!(v["ok"], false);
    assert_eq!(v["ping_ok"], false);
}

#[test]
fn mm_status_without_credentials_says_not_configured() {
    let sb = Sandbox::new();
    let out = sb.run(&["mm", "status"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        stdout(&out).contains("NOT OK: Mattermost is not configured: mattermost.token_env"),
        "{t}"
    );
    let v = json_of(&sb.run(&["mm", "status", "--json"]));
    assert_eq!(v["ok"], false);
    assert!(v["problem"]
        .as_str()
        .unwrap()
        .contains("OPS_AGENT_MM_TOKEN"));
}

fn task(title: &str, owner: &str, tag: Tag, team: &str, source: &str) -> Task {
    Task {
        title: title.into(),
        description: format!("{title}\n\n(from @alice in {team}/ops)"),
        owner: owner.into(),
        tag,
        priority: if title.contains("down") {
            Priority::High
        } else {
            Priority::Normal
        },
        source: source.into(),
        label: if title.contains("down") {
            "INCIDENT"
        } else {
            "TASK"
        }
        .into(),
        team: team.into(),
        channel: "ops".into(),
        author: "alice".into(),
        permalink: format!("http://mm/{team}/pl/{source}"),
    }
}

/// Seeds the sandbox's ledger through the real ledger API: one old BILLABLE
/// task of `ops`, one fresh INTERNAL incident of `ops`, one task of `dev`.
fn seed_ledger(sb: &Sandbox) {
    let ledger = Ledger::new(sb.path("system/agents/state/ops-tasks.jsonl"));
    let now = Utc::now();
    ledger
        .create(
            &task("Renew the TLS cert", "ops", Tag::Billable, "wizard", "p1"),
            None,
            now - Duration::days(3),
        )
        .unwrap();
    ledger
        .create(
            &task("Grafana is down", "ops", Tag::Internal, "basic", "p2"),
            None,
            now - Duration::hours(1),
        )
        .unwrap();
    ledger
        .create(
            &task("Review the PR", "dev", Tag::Billable, "riad", "p3"),
            None,
            now - Duration::hours(2),
        )
        .unwrap();
}

fn ids(v: &Value) -> Vec<String> {
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tasks_list_filters_and_stats_count_the_ledger() {
    let sb = Sandbox::new();
    let out = sb.run(&["tasks", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "No tasks.\n");

    seed_ledger(&sb);
    let out = sb.run(&["tasks", "list", "--owner", "ops"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let s = stdout(&out);
    assert_eq!(s.lines().count(), 2, "{t}");
    assert!(s.lines().next().unwrap().starts_with("OPS-1  "), "{t}");
    assert!(
        s.contains("BILLABLE") && s.contains("Renew the TLS cert"),
        "{t}"
    );
    assert!(
        s.contains("INTERNAL") && s.contains("HIGH") && s.contains("Grafana is down"),
        "{t}"
    );
    assert!(!s.contains("Review the PR"), "{t}");

    let v = json_of(&sb.run(&["tasks", "list", "--owner", "ops", "--json"]));
    assert_eq!(ids(&v), ["OPS-1", "OPS-2"]);
    assert_eq!(v["tasks"][1]["tag"], "INTERNAL");
    assert_eq!(v["tasks"][1]["status"], "open");
    assert_eq!(v["skipped"], json!([]));

    let v = json_of(&sb.run(&["tasks", "list", "--tag", "billable", "--json"]));
    assert_eq!(ids(&v), ["OPS-1", "OPS-3"]);
    let v = json_of(&sb.run(&["tasks", "list", "--since", "1d", "--json"]));
    assert_eq!(ids(&v), ["OPS-2", "OPS-3"]);
    let v = json_of(&sb.run(&[
        "tasks", "list", "--since", "1d", "--owner", "ops", "--tag", "INTERNAL", "--json",
    ]));
    assert_eq!(ids(&v), ["OPS-2"]);

    let out = sb.run(&["tasks", "list", "--tag", "urgent"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither BILLABLE nor INTERNAL"));
    let out = sb.run(&["tasks", "list", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = sb.run(&["tasks", "stats"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        stdout(&out).starts_with("Tasks: 3 (0 with a Planka card)\n"),
        "{t}"
    );
    let v = json_of(&sb.run(&["tasks", "stats", "--json"]));
    assert_eq!(v["total"], 3);
    assert_eq!(v["by_tag"], json!({"BILLABLE": 2, "INTERNAL": 1}));
    assert_eq!(v["by_label"], json!({"INCIDENT": 1, "TASK": 2}));
    assert_eq!(v["by_priority"], json!({"HIGH": 1, "NORMAL": 2}));

    // A torn last line is skipped and reported, not fatal.
    let path = sb.path("system/agents/state/ops-tasks.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"kind\":\"create\",\"id\":\"OPS-4\",\"crea");
    std::fs::write(&path, bytes).unwrap();
    let out = sb.run(&["tasks", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("warning: 1 unreadable ledger line(s) skipped"),
        "{}",
        text(&out)
    );
    assert_eq!(
        json_of(&sb.run(&["tasks", "stats", "--json"]))["skipped_lines"],
        1
    );
}

#[test]
fn status_shows_the_task_outbox_and_posts_in_progress() {
    let sb = Sandbox::new();
    let now = Utc::now().timestamp_millis();
    write_state(
        &sb,
        &json!({
            "last_check_ms": now - 60_000,
            "chat": { "progress": { "post1": { "label": "TASK", "task_id": "OPS-7", "create_at": now - 90_000 } } },
            "tasks": {
                "mapping": {},
                "outbox": [{
                    "kind": "create_card",
                    "task": {
                        "title": "Renew the TLS cert",
                        "description": "d",
                        "owner": "ops",
                        "tag": "BILLABLE",
                        "priority": "NORMAL",
                        "source": "post9",
                        "label": "TASK",
                        "team": "wizard",
                        "channel": "ops",
                        "author": "alice",
                        "permalink": "http://mm/wizard/pl/post9"
                    },
                    "task_id": "OPS-7",
                    "attempts": 3,
                    "next_attempt_ms": now + 240_000,
                    "last_error": "POST http://planka/api/lists/1/cards: HTTP 503",
                    "queued_at_ms": now - 600_000
                }]
            }
        }),
    );
    let out = sb.run(&["status"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let s = stdout(&out);
    assert!(s.contains("posts        1 in progress"), "{t}");
    assert!(s.contains("outbox       1 pending"), "{t}");
    let line = s
        .lines()
        .find(|l| l.contains("post9"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        line.contains("card")
            && line.contains("\"Renew the TLS cert\"")
            && line.contains("attempts 3")
            && line.contains("HTTP 503"),
        "{line}"
    );
    assert!(
        line.contains("next in 4m") || line.contains("next in 3m"),
        "{line}"
    );

    let v = json_of(&sb.run(&["status", "--json"]));
    assert_eq!(v["posts_in_progress"], 1);
    assert_eq!(v["outbox"][0]["kind"], "create_card");
    assert_eq!(v["outbox"][0]["source"], "post9");
    assert_eq!(v["outbox"][0]["attempts"], 3);
    let next = v["outbox"][0]["next_attempt_in_secs"].as_i64().unwrap();
    assert!((200..=240).contains(&next), "{next}");
    assert!(v["outbox"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("HTTP 503"));

    // An empty outbox says so.
    let empty = Sandbox::new();
    let out = empty.run(&["status"]);
    assert!(
        stdout(&out).contains("outbox       empty"),
        "{}",
        text(&out)
    );
    assert_eq!(
        json_of(&empty.run(&["status", "--json"]))["outbox"],
        json!([])
    );
}

#[test]
fn doctor_with_nothing_configured_warns_and_passes() {
    let mut b = WorldBuilder::new();
    b.llm_timeouts(3).ollama_at(&dead_url());
    let sb = b.sandbox();
    let out = sb.run(&["doctor"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let s = stdout(&out);
    assert!(
        doctor_line(&s, "config").starts_with("ok    ")
            && doctor_line(&s, "config").contains("(--config): valid"),
        "{t}"
    );
    let mm = doctor_line(&s, "mattermost");
    assert!(
        mm.starts_with("warn  ")
            && mm.contains("not configured")
            && mm.contains("OPS_AGENT_MM_TOKEN"),
        "{t}"
    );
    for ok in [
        "state file",
        "token cache",
        "stats file",
        "task ledger",
        "lock",
        "mc",
        "planka",
    ] {
        assert!(doctor_line(&s, ok).starts_with("ok    "), "{ok}: {t}");
    }
    assert!(doctor_line(&s, "state file").contains("absent"), "{t}");
    assert!(doctor_line(&s, "lock").contains("free"), "{t}");
    assert!(doctor_line(&s, "planka").contains("disabled"), "{t}");
    let llm = doctor_line(&s, "ollama");
    assert!(
        llm.starts_with("warn  ") && llm.contains("falls back to the rules and the model"),
        "{t}"
    );
    assert!(s.contains("healthy: ") && s.ends_with(" 0 fail\n"), "{t}");

    let out = sb.run(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json_of(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["counts"]["fail"], 0);
    // Doctor wrote nothing.
    assert!(!sb.state().exists());
}

#[test]
fn doctor_fails_on_mattermost_once_the_config_names_teams_without_a_token() {
    let mut sb = Sandbox::new();
    sb.extra = format!(
        "[mattermost]\nteams = [\"basic\"]\n[ollama]\nurl = \"{}\"\nclassify_timeout_secs = 3\n",
        dead_url()
    );
    let out = sb.run(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v = json_of(&out);
    let failed: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["level"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["check"], "mattermost");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("OPS_AGENT_MM_TOKEN is not set"),
        "{v}"
    );
}

#[test]
fn doctor_fails_on_a_symlinked_state_file_and_leaves_its_target_alone() {
    let (_fake, sb, _) = mm_sandbox(&dead_url());
    let victim = sb.path("victim.json");
    std::fs::write(&victim, "{\"keep\": true}").unwrap();
    std::fs::create_dir_all(sb.path("tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, sb.state()).unwrap();

    let out = sb.run(&["doctor"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let s = stdout(&out);
    let line = doctor_line(&s, "state file");
    assert!(
        line.starts_with("FAIL  ") && line.contains("symlink"),
        "{t}"
    );
    assert!(doctor_line(&s, "mattermost").starts_with("ok    "), "{t}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "{\"keep\": true}"
    );
    assert!(sb.state().is_symlink());
}

#[test]
fn doctor_is_healthy_with_mattermost_and_ollama_up_and_warns_on_a_missing_model() {
    let llm = FakeOllama::start_in_background();
    llm.set_models(&["llama3.1:8b"]);
    let (_fake, sb, token) = mm_sandbox(llm.url());

    let out = sb.run(&["doctor"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains(&token), "token leaked: {t}");
    let s = stdout(&out);
    assert!(
        doctor_line(&s, "mattermost").contains("server 10.5.0"),
        "{t}"
    );
    assert!(
        doctor_line(&s, "mattermost auth").contains("@opsbot"),
        "{t}"
    );
    assert!(
        doctor_line(&s, "mattermost team basic").contains("2 channel(s)"),
        "{t}"
    );
    assert!(doctor_line(&s, "ollama").starts_with("ok    "), "{t}");
    assert!(
        doctor_line(&s, "ollama classify model").starts_with("ok    "),
        "{t}"
    );
    let reply = doctor_line(&s, "ollama reply model");
    assert!(
        reply.starts_with("warn  ") && reply.contains("ollama pull qwen2.5-coder:32b"),
        "{t}"
    );
    assert!(s.contains("healthy: "), "{t}");
    // The model list was fetched once, not once per model.
    assert_eq!(
        llm.requests()
            .iter()
            .filter(|r| r.path == "/api/tags")
            .count(),
        1
    );
}

#[test]
fn doctor_logs_in_to_planka_and_finds_each_board_and_list_read_only() {
    let planka = FakePlanka::start_in_background();
    planka.seed(&[("Wizard", "Inbox"), ("Basic", "Todo")]);
    let doctor = |password: &str, basic_list: &str| {
        let mut sb = Sandbox::new();
        sb.env
            .push(("OPS_AGENT_PLANKA_PASSWORD".into(), password.into()));
        sb.extra = format!(
            "[ollama]\nurl = \"{}\"\nclassify_timeout_secs = 3\nreply_timeout_secs = 3\n\
             [planka]\nurl = \"{}\"\nusername = \"{PLANKA_USER}\"\ntimeout_secs = 3\n\
             [planka.boards.wizard]\nboard = \"Wizard\"\nlist = \"Inbox\"\n\
             [planka.boards.basic]\nboard = \"Basic\"\nlist = \"{basic_list}\"\n",
            dead_url(),
            planka.url
        );
        let out = sb.run(&["doctor"]);
        (stdout(&out), text(&out))
    };
    let (s, t) = doctor(PLANKA_PASSWORD, "Todo");
    assert!(
        doctor_line(&s, "planka board for wizard").starts_with("ok    "),
        "{t}"
    );
    assert!(
        doctor_line(&s, "planka board for basic").contains("list 'Todo'"),
        "{t}"
    );

    // A wrong password is one login verdict (issue 22 item 6), not a FAIL
    // line per team.
    let (s, t) = doctor("wrong-password", "Todo");
    let line = doctor_line(&s, "planka login");
    assert!(
        line.starts_with("FAIL  ") && line.contains("Invalid credentials"),
        "{t}"
    );
    assert!(!s.contains("planka board for"), "{t}");
    assert!(
        !t.contains("wrong-password"),
        "the password is never shown: {t}"
    );

    let (s, t) = doctor(PLANKA_PASSWORD, "Nope");
    assert!(
        doctor_line(&s, "planka board for wizard").starts_with("ok    "),
        "{t}"
    );
    let line = doctor_line(&s, "planka board for basic");
    assert!(
        line.starts_with("FAIL  ") && line.contains("no list 'Nope'"),
        "{t}"
    );
    // Read-only: no card, label or list was made.
    assert_eq!(planka.count("POST", "/cards"), 0);
    assert_eq!(planka.count("POST", "/labels"), 0);
    assert_eq!(planka.count("POST", "/lists"), 0);
}
