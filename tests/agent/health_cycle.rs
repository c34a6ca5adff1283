//! Health checks and auto-fix through the real binary, against the fake
//! Docker engine: a stopped container is restarted and verified once, the
//! rate limit holds across cycles, deleting the history resets it, an
//! unreachable engine is one result with its containers blocked, and a dry
//! run only says what it would do.

use serde_json::{json, Value};

use crate::support::agent::{text, Sandbox};
use crate::support::docker::{FakeContainer, FakeDocker, OnRestart};
use crate::support::world::WorldBuilder;

fn sandbox(docker_host: &str) -> Sandbox {
    let mut b = WorldBuilder::new();
    b.docker_at(docker_host).toml(
        "[[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\nfail_after = 1\n\
         fix = { action = \"restart_container\", settle_secs = 0, start_grace_secs = 0 }\n\n\
         [[checks]]\nname = \"db\"\nkind = \"docker\"\ncontainer = \"db\"\nfail_after = 1\n",
    );
    b.sandbox()
}

fn history(sb: &Sandbox) -> Value {
    serde_json::from_str(&std::fs::read_to_string(sb.path("tmp/ops-fix-history.json")).unwrap())
        .unwrap()
}

fn check<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["last_cycle"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[test]
fn a_stopped_container_is_restarted_verified_and_recorded_once() {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::exited("web").on_restart(OnRestart::Fixes));
    docker.add(FakeContainer::running("db"));
    let sb = sandbox(&docker.host());
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(docker.restarts("web"), 1);
    assert_eq!(docker.restarts("db"), 0);
    let h = history(&sb);
    let attempts = h["attempts"]["web"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{h}");
    assert_eq!(attempts[0]["outcome"], "verified", "{h}");
    let log = std::fs::read_to_string(sb.log()).unwrap();
    assert!(
        log.contains("Fix: web") && log.contains("verified"),
        "{log}"
    );

    // Healthy now: the next cycle does nothing.
    assert!(sb.run(&["run-once"]).status.success());
    assert_eq!(docker.restarts("web"), 1);
}

#[test]
fn a_container_that_stays_down_gets_three_attempts_per_hour_then_none() {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::exited("web").on_restart(OnRestart::StaysDown));
    docker.add(FakeContainer::running("db"));
    let sb = sandbox(&docker.host());
    for _ in 0..5 {
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(
        docker.restarts("web"),
        3,
        "at most 3 attempts in the rolling hour"
    );
    let h = history(&sb);
    assert_eq!(h["attempts"]["web"].as_array().unwrap().len(), 3, "{h}");
    let st = sb.state_json();
    let fix = st["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "fix")
        .unwrap()
        .clone();
    assert!(
        fix["detail"].as_str().unwrap().contains("0 fixes run"),
        "{fix}"
    );

    // The window slides: attempts older than an hour no longer count.
    let now = chrono::Utc::now().timestamp_millis();
    let mut h = history(&sb);
    for (i, a) in h["attempts"]["web"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        a["at_ms"] = json!(now - 3_700_000 + i as i64 * 1000);
    }
    std::fs::write(
        sb.path("tmp/ops-fix-history.json"),
        serde_json::to_vec(&h).unwrap(),
    )
    .unwrap();
    assert!(sb.run(&["run-once"]).status.success());
    assert_eq!(docker.restarts("web"), 4, "one more once the window allows");

    // Deleting the history resets the counters (the runbook's reset).
    std::fs::remove_file(sb.path("tmp/ops-fix-history.json")).unwrap();
    assert!(sb.run(&["run-once"]).status.success());
    assert_eq!(docker.restarts("web"), 5);
}

#[test]
fn docker_unreachable_is_one_result_and_its_containers_are_blocked_not_fixed() {
    let host = crate::support::in_background(FakeDocker::unreachable_host);
    let sb = sandbox(&host);
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let st = sb.state_json();
    let engine = check(&st, "docker-engine");
    assert_eq!(engine["status"], "critical", "{engine}");
    for name in ["web", "db"] {
        let c = check(&st, name);
        assert_eq!(c["blocked_by"], "docker-engine", "{c}");
    }
    assert!(
        !sb.path("tmp/ops-fix-history.json").exists(),
        "nothing may be fixed"
    );
}

#[test]
fn dry_run_names_the_fix_and_does_not_run_it() {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::exited("web").on_restart(OnRestart::Fixes));
    docker.add(FakeContainer::running("db"));
    let sb = sandbox(&docker.host());
    let out = sb.run(&["run-once", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(docker.restarts("web"), 0);
    let log = std::fs::read_to_string(sb.log()).unwrap();
    assert!(log.contains("web") && log.contains("would"), "{log}");
    assert!(!sb.path("tmp/ops-fix-history.json").exists());
}

#[test]
fn health_command_prints_the_table_and_exits_1_when_critical() {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::exited("web").on_restart(OnRestart::Fixes));
    docker.add(FakeContainer::running("db"));
    let sb = sandbox(&docker.host());
    let out = sb.run(&["health", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["critical"], true);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docker-engine", "web", "db"]);
    assert_eq!(docker.restarts("web"), 0, "health only looks");

    let out = sb.run(&["health", "--check", "db"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("db") && !table.contains("web"), "{table}");

    let out = sb.run(&["health", "--check", "nope"]);
    assert_eq!(out.status.code(), Some(2), "a usage error, not 'critical'");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no check named 'nope'"));
}

#[test]
fn fix_by_hand_counts_against_the_budget_and_force_overrides_it() {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::exited("web").on_restart(OnRestart::StaysDown));
    docker.add(FakeContainer::running("db"));
    let sb = sandbox(&docker.host());
    let out = sb.run(&["fix", "web", "exited", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(docker.restarts("web"), 0, "dry run runs nothing");
    for _ in 0..3 {
        let out = sb.run(&["fix", "web", "exited"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "it stays down, so the fix failed: {}",
            text(&out)
        );
    }
    assert_eq!(docker.restarts("web"), 3);
    let out = sb.run(&["fix", "web", "exited"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("budget"),
        "{}",
        text(&out)
    );
    assert_eq!(
        docker.restarts("web"),
        3,
        "the fourth attempt in the hour is refused"
    );
    let out = sb.run(&["fix", "web", "exited", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(docker.restarts("web"), 4, "--force overrides the budget");

    let out = sb.run(&["fix", "--history", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["service"], "web", "{v}");
    // Each attempt by hand is in the audit trail (the dry run is not):
    // four attempts that failed, one refused for the budget.
    let out = sb.run(&["audit", "--check", "web", "--json"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["command"], "fix", "{l}");
            let what = l["outcome"].as_str().or(l["why"].as_str()).unwrap_or("");
            (l["event"].as_str().unwrap(), what)
        })
        .collect();
    let attempt = [("fix_attempted", ""), ("fix_result", "failed")];
    let mut want: Vec<(&str, &str)> = attempt.repeat(3);
    let refused = kinds[6];
    assert_eq!(refused.0, "fix_skipped", "{kinds:?}");
    assert!(refused.1.starts_with("fix budget spent"), "{kinds:?}");
    want.push(refused);
    want.extend(attempt);
    assert_eq!(kinds, want);
    let out = sb.run(&["fix", "nothing-here", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no fix is configured"),
        "{}",
        text(&out)
    );
}

#[test]
fn explain_says_why_the_agent_would_or_would_not_act() {
    let docker = FakeDocker::start_in_background();
    docker.add(FakeContainer::exited("web").on_restart(OnRestart::StaysDown));
    docker.add(FakeContainer::running("db"));
    let sb = sandbox(&docker.host());
    for _ in 0..4 {
        assert!(sb.run(&["run-once"]).status.success());
    }
    let out = sb.run(&["explain", "web", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"]["decision"], "skip_budget_spent", "{v}");
    let out = sb.run(&["explain", "web"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("web"), "{s}");
}
