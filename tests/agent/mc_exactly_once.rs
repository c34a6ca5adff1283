//! Exactly once with an external MC command that does not dedupe by
//! source (tests/fixtures/mc/db.sh, like the runbook's mc.js): the agent
//! killed while the command runs, or the command committing and then
//! running past its timeout, never makes more than one extra task per post
//! without `[mc] find`, and none with it. Named for their cell:
//! `<dependency>_<fault>__<what holds>`.
#![allow(non_snake_case)]

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agent::{text, Sandbox};
use crate::support::mattermost::FakeMattermost;
use crate::support::ollama::dead_url;
use crate::support::world::{quoted, WorldBuilder};

struct World {
    mm: FakeMattermost,
    sb: Sandbox,
    channel: String,
    alice: String,
    db: PathBuf,
}

/// `sleep_before`/`sleep_after`: the fake MC's pause before and after it
/// commits the task; `timeout`: `mc.timeout_secs`.
fn world(sleep_before: &str, sleep_after: &str, timeout: &str, with_find: bool) -> World {
    world_lingering(sleep_before, sleep_after, timeout, with_find, "")
}

/// [`world`], where every run of the fake MC (`create` and `find`) leaves a
/// background child holding its stdout for `linger` seconds ("": none).
fn world_lingering(
    sleep_before: &str,
    sleep_after: &str,
    timeout: &str,
    with_find: bool,
    linger: &str,
) -> World {
    let mut b = WorldBuilder::new();
    let (mm, agent) = b.mattermost(&["wizard"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("wizard", &[&agent.id, &alice]);
    let channel = mm.add_channel(&team, "dev", &[&agent.id, &alice]);
    b.ollama_at(&dead_url());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mc/db.sh");
    let script = quoted(&script.display().to_string());
    let sb_root = tempfile::tempdir().unwrap().keep();
    let db = sb_root.join("mc-db");
    let dbq = quoted(&db.display().to_string());
    b.line(
        "mc",
        &format!(
            "command = [{script}, \"create\", {dbq}, \"{{source}}\", \"{sleep_before}\", \"{sleep_after}\", \"{linger}\"]"
        ),
    );
    b.line("mc", &format!("timeout_secs = {timeout}"));
    if with_find {
        b.line(
            "mc",
            &format!("find = [{script}, \"find\", {dbq}, \"{{source}}\", \"{linger}\"]"),
        );
    }
    World {
        mm,
        sb: b.sandbox(),
        channel,
        alice,
        db,
    }
}

impl Drop for World {
    /// Ends the background children the fake MC left (`linger.<pid>`).
    fn drop(&mut self) {
        for pid in self.lingering() {
            // SAFETY: kill(2) on a `sleep` the fake MC started for this test.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl World {
    /// The pids of the background children the fake MC started.
    fn lingering(&self) -> Vec<i32> {
        std::fs::read_dir(&self.db)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_prefix("linger.")
                            .and_then(|p| p.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn say(&self, message: &str) -> String {
        self.mm.post(&self.channel, &self.alice, message)
    }

    fn run(&self) {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// MC's tasks for `source`.
    fn mc_tasks(&self, source: &str) -> usize {
        std::fs::read_to_string(self.db.join("tasks"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(source))
            .count()
    }

    fn replies(&self, post: &str) -> usize {
        self.mm
            .posts()
            .iter()
            .filter(|p| p.props.get("ops_agent_reply_to").and_then(Value::as_str) == Some(post))
            .count()
    }

    fn status(&self) -> Value {
        let out = self.sb.run(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    /// Whether a fake MC command is running (its `running.<pid>` mark).
    fn mc_running(&self) -> bool {
        std::fs::read_dir(&self.db).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("running."))
        })
    }

    /// Starts a cycle, waits until the fake MC runs, and SIGKILLs the agent
    /// (not the command: it lives on in its own process group, as it would).
    fn kill_while_mc_runs(&self) {
        let mut cmd: Command = self.sb.command(&["run-once"]);
        let mut child = cmd.spawn().unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while !self.mc_running() {
            assert!(Instant::now() < end, "the MC command never started");
            assert!(child.try_wait().unwrap().is_none(), "the cycle ended first");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the kill landed: {status}"
        );
    }

    fn wait_for_orphans(&self) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.mc_running() {
            assert!(Instant::now() < end, "the orphaned MC command never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn mc_timeout_after_commit__with_find_exactly_one_task() {
    let w = world("0", "3", "0.5", true);
    let post = w.say("please add a redirect from /old to /new");
    w.run(); // commits, then is killed at its timeout: outcome unknown
    assert_eq!(w.mc_tasks(&post), 1);
    assert_eq!(w.replies(&post), 0, "no id yet, no reply yet");
    w.run(); // asks [mc] find: MC has it
    w.run();
    assert_eq!(w.mc_tasks(&post), 1, "exactly one task");
    assert_eq!(w.replies(&post), 1, "answered once, naming MC's task");
    let tasks = w.sb.ledger_tasks();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["id"], "MC-1");
}

#[test]
fn mc_timeout_after_commit__without_find_one_extra_attempt_then_uncertain() {
    let w = world("0", "3", "0.5", false);
    let post = w.say("please add a redirect from /old to /new");
    for _ in 0..4 {
        w.run();
    }
    assert_eq!(
        w.mc_tasks(&post),
        2,
        "the first attempt and one extra, never a third"
    );
    let st = w.status();
    let uncertain = st["uncertain_tasks"].as_array().unwrap();
    assert_eq!(uncertain.len(), 1, "{st}");
    assert_eq!(uncertain[0]["source"], post.as_str());
    let out = w.sb.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("uncertain"),
        "{}",
        text(&out)
    );
    // The post is done (no endless retries): later cycles run nothing.
    w.run();
    assert_eq!(w.mc_tasks(&post), 2);
    let ledger = std::fs::read_to_string(w.sb.path("system/agents/state/ops-tasks.jsonl")).unwrap();
    let attempts = ledger
        .lines()
        .filter(|l| l.contains("\"kind\":\"intent\"") && l.contains("\"pgid\""))
        .count();
    assert_eq!(attempts, 2, "{ledger}");
}

#[test]
fn agent_sigkill_mid_mc_command__the_orphan_is_waited_for_and_found_once() {
    let w = world("1", "0", "10", true);
    let post = w.say("please add a redirect from /old to /new");
    w.kill_while_mc_runs();
    // The orphaned command still runs: a cycle now must not start another.
    w.run();
    w.wait_for_orphans();
    assert_eq!(w.mc_tasks(&post), 1);
    w.run();
    w.run();
    assert_eq!(w.mc_tasks(&post), 1, "exactly one task");
    assert_eq!(w.replies(&post), 1);
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}

#[test]
fn agent_sigkill_mid_mc_command__without_find_at_most_one_extra_task() {
    let w = world("1", "0", "10", false);
    let post = w.say("please add a redirect from /old to /new");
    w.kill_while_mc_runs();
    w.run();
    w.wait_for_orphans();
    for _ in 0..3 {
        w.run();
    }
    let n = w.mc_tasks(&post);
    assert_eq!(n, 2, "the orphan's task and one extra attempt");
    assert_eq!(w.replies(&post), 1);
    let st = w.status();
    assert_eq!(
        st["uncertain_tasks"][0]["source"],
        post.as_str(),
        "the possible duplicate is shown: {st}"
    );
}

/// A tiny deterministic generator for the kill moments.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// SIGKILLs at random moments (`OPS_AGENT_TEST_KILLS` of them, default 12),
/// a post each, then cycles until every post is answered; returns the MC
/// task count of every post. A kill counts when it ended a cycle that was
/// still running (the agent died of the SIGKILL, not with an exit code);
/// at least 80 % of them must, or the test proves nothing about crashes.
/// With `linger` (seconds, "" for none) every run of the fake MC leaves a
/// background child holding its stdout that long.
fn kill_at_random(with_find: bool, linger: &str) -> Vec<usize> {
    let kills: usize = std::env::var("OPS_AGENT_TEST_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    // An agent killed between writing an attempt and starting the command
    // leaves an attempt without a process group, waited for 2 x timeout.
    let w = world_lingering("0.15", "0.15", "2", with_find, linger);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut posts = Vec::new();
    let (mut landed, mut during_mc) = (0, 0);
    for i in 0..kills {
        posts.push(w.say(&format!("please add user number {i} to the wizard admin")));
        let mut child = w.sb.command(&["run-once"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(next(&mut seed) % 450));
        let mc_running = w.mc_running();
        let _ = child.kill();
        if child.wait().unwrap().signal() == Some(libc::SIGKILL) {
            landed += 1;
            during_mc += usize::from(mc_running);
        }
    }
    eprintln!("{landed} of {kills} kills landed mid-cycle ({during_mc} while the MC command ran)");
    assert!(
        landed * 5 >= kills * 4,
        "only {landed} of {kills} kills landed mid-cycle"
    );
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        w.wait_for_orphans();
        w.run();
        if posts.iter().all(|p| w.replies(p) == 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for p in &posts {
        assert_eq!(w.replies(p), 1, "post {p} answered exactly once");
    }
    let counts: Vec<usize> = posts.iter().map(|p| w.mc_tasks(p)).collect();
    eprintln!(
        "{} kills, find={with_find}, background child {linger:?}: MC tasks per post {counts:?}, {} extra",
        kills,
        counts.iter().map(|n| n.saturating_sub(1)).sum::<usize>()
    );
    counts
}

#[test]
fn agent_sigkill_at_random__with_find_never_a_second_task() {
    for n in kill_at_random(true, "") {
        assert_eq!(n, 1);
    }
}

#[test]
fn agent_sigkill_at_random__without_find_never_more_than_one_extra_task() {
    for n in kill_at_random(false, "") {
        assert!((1..=2).contains(&n), "{n} tasks for one post");
    }
}

#[test]
fn agent_sigkill_at_random__background_child_holding_stdout__with_find_never_a_second_task() {
    for n in kill_at_random(true, "20") {
        assert_eq!(n, 1);
    }
}

#[test]
fn mc_background_child_holds_stdout__the_printed_id_is_used_and_one_task_made() {
    let w = world_lingering("0", "0", "5", true, "30");
    let post = w.say("please add a redirect from /old to /new");
    w.run();
    assert_eq!(w.mc_tasks(&post), 1);
    assert_eq!(
        w.replies(&post),
        1,
        "answered in the same cycle, naming the id MC printed\n{}",
        w.sb.log_text()
    );
    assert!(
        !w.lingering().is_empty(),
        "the fake MC left a child running"
    );
    w.run();
    w.run();
    assert_eq!(w.mc_tasks(&post), 1, "exactly one task");
    let tasks = w.sb.ledger_tasks();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["id"], "MC-1");
    let st = w.status();
    assert_eq!(st["uncertain_tasks"], serde_json::json!([]), "{st}");
}

#[test]
fn agent_sigkill_mid_mc_command__its_background_child_does_not_hold_the_post() {
    let w = world_lingering("1", "0", "10", true, "30");
    let post = w.say("please add a redirect from /old to /new");
    w.kill_while_mc_runs();
    w.wait_for_orphans();
    assert!(!w.lingering().is_empty(), "the orphan left a child running");
    // The command itself has ended: [mc] find answers now, though the
    // child it left lives on for half a minute.
    w.run();
    assert_eq!(
        w.replies(&post),
        1,
        "answered once the command ended\n{}",
        w.sb.log_text()
    );
    w.run();
    assert_eq!(w.mc_tasks(&post), 1, "exactly one task");
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}
