//! Issue 7 through the real binary: a container that stays down escalates
//! once (one HIGH task, one alert, one card), an unacknowledged alert gets
//! one follow-up, a reaction prevents it, recovery closes the loop once,
//! Mattermost down defers only the post, and silences (chat and CLI) stop
//! fixes and alerts until they end. Each `run-once` is a fresh process that
//! resumes from the state files, so every step is also a restart; where time
//! must pass, the state file is edited between runs.

#![allow(non_snake_case)]

use serde_json::Value;

use crate::support::agent::{text, Sandbox};
use crate::support::docker::{FakeContainer, FakeDocker, OnRestart};
use crate::support::fault::{Fault, Match};
use crate::support::mattermost::{FakeMattermost, FakePost};
use crate::support::ollama::FakeOllama;
use crate::support::planka::FakePlanka;
use crate::support::world::WorldBuilder;

const MIN: i64 = 60_000;

struct World {
    mm: FakeMattermost,
    llm: FakeOllama,
    planka: FakePlanka,
    docker: FakeDocker,
    sb: Sandbox,
    agent: String,
    alice: String,
    mallory: String,
    /// The polled team channel people talk to the agent in.
    ops: String,
    /// The alert channel.
    alerts: String,
}

impl World {
    /// `web` is an exited container that stays down; with `fix`, the agent
    /// may restart it (which never helps).
    fn new(fix: bool) -> World {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["basic"]);
        b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
        let agent = me.id;
        let alice = mm.add_user("alice", "pw");
        let mallory = mm.add_user("mallory", "pw");
        let members = [agent.as_str(), alice.as_str(), mallory.as_str()];
        let team = mm.add_team("basic", &members);
        let ops = mm.add_channel(&team, "ops", &members);
        let alerts = mm.add_channel(&team, "ops-alerts", &members);
        let llm = b.ollama();
        llm.answer_with(|_| "ROUTINE".into());
        let planka = b.planka(&[("basic", "Basic", "Inbox")]);
        let docker = b.docker();
        docker.add(FakeContainer::exited("web").on_restart(OnRestart::StaysDown));
        let fix_line = if fix {
            "fix = { action = \"restart_container\", settle_secs = 0, start_grace_secs = 0 }\n"
        } else {
            ""
        };
        b.toml(&format!(
            "[escalation]\non_call = [\"alice\"]\nack_timeout_mins = 30\n\
             silence_allowlist = [\"alice\"]\n\n\
             [[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\n\
             fail_after = 1\nrecover_after = 1\n{fix_line}"
        ));
        let sb = b.sandbox();
        World {
            mm,
            llm,
            planka,
            docker,
            sb,
            agent,
            alice,
            mallory,
            ops,
            alerts,
        }
    }

    /// One cycle (a fresh process: a restart of the agent).
    fn run(&self) {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    fn runs(&self, n: usize) {
        for _ in 0..n {
            self.run();
        }
    }

    /// The agent's top-level posts in the alert channel.
    fn alerts(&self) -> Vec<FakePost> {
        self.mm
            .posts()
            .into_iter()
            .filter(|p| p.channel_id == self.alerts && p.root_id.is_empty())
            .collect()
    }

    /// The only alert post.
    fn alert(&self) -> FakePost {
        let alerts = self.alerts();
        assert_eq!(alerts.len(), 1, "exactly one alert post: {alerts:#?}");
        alerts.into_iter().next().unwrap()
    }

    /// The agent's replies in a thread, oldest first, but for the incident
    /// brief it posts right after the alert (tests/agent/brief_cycle.rs
    /// looks at that one).
    fn agent_replies(&self, root: &str) -> Vec<String> {
        self.mm
            .thread_replies(root)
            .into_iter()
            .filter(|p| p.user_id == self.agent)
            .filter(|p| p.props.get("ops_agent_event").and_then(Value::as_str) != Some("brief"))
            .map(|p| p.message)
            .collect()
    }

    fn escalation(&self) -> Value {
        self.sb.state_json()["escalation"].clone()
    }

    /// The key of the only closed incident.
    fn closed_key(&self) -> String {
        let esc = self.escalation();
        let closed = esc["closed"].as_array().cloned().unwrap_or_default();
        assert_eq!(closed.len(), 1, "one closed incident: {esc}");
        closed[0]["key"].as_str().unwrap().to_string()
    }

    fn incidents(&self) -> Vec<Value> {
        self.escalation()["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Edits the state file between two runs (time passing, as the agent
    /// would see it after a restart).
    fn edit_state(&self, f: impl FnOnce(&mut Value)) {
        let mut st = self.sb.state_json();
        f(&mut st);
        std::fs::write(self.sb.state(), serde_json::to_vec(&st).unwrap()).unwrap();
    }

    /// Pretends the open incident's alert went out `mins` minutes ago.
    fn age_alert(&self, mins: i64) {
        self.edit_state(|st| {
            let inc = &mut st["escalation"]["incidents"][0];
            let at = inc["alerted_ms"].as_i64().expect("alerted");
            inc["alerted_ms"] = Value::from(at - mins * MIN);
        });
    }

    fn counter(&self, name: &str) -> u64 {
        let stats: Value =
            serde_json::from_str(&std::fs::read_to_string(self.sb.stats()).unwrap()).unwrap();
        stats["counters"][name].as_u64().unwrap_or(0)
    }
}

fn mentions_everyone(s: &str) -> bool {
    ["@channel", "@all", "@here"].iter().any(|m| s.contains(m))
}

#[test]
fn a_container_that_stays_down_escalates_exactly_once() {
    let w = World::new(true);
    w.runs(5);

    // The fix was tried and did not verify; then the budget ran out.
    assert_eq!(w.docker.restarts("web"), 3);
    let tasks = w.sb.ledger_tasks();
    assert_eq!(tasks.len(), 1, "one escalation task: {tasks:#?}");
    let t = &tasks[0];
    assert_eq!(
        (t["priority"].as_str(), t["tag"].as_str()),
        (Some("HIGH"), Some("INTERNAL")),
        "{t}"
    );
    let incidents = w.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let key = incidents[0]["key"].as_str().unwrap();
    assert!(key.starts_with("web:web@"), "{key}");
    assert_eq!(t["source"], key, "the task's source is the incident key");
    assert_eq!(incidents[0]["task_id"], t["id"]);

    let alert = w.alert();
    assert_eq!(alert.user_id, w.agent);
    let msg = &alert.message;
    assert!(msg.contains("web is failing"), "what failed: {msg}");
    assert!(msg.contains("did not verify"), "why: {msg}");
    assert!(msg.contains("restart"), "what was tried: {msg}");
    assert!(msg.contains("exited"), "the last check output: {msg}");
    assert!(msg.contains(t["id"].as_str().unwrap()), "names the task");
    assert!(!mentions_everyone(msg), "{msg}");
    assert_eq!(incidents[0]["alert_post_id"], alert.id.as_str());

    let cards = w.planka.cards();
    assert_eq!(cards.len(), 1, "{cards:#?}");
    assert_eq!(w.counter("incidents_opened"), 1);
    assert_eq!(w.counter("alerts_posted"), 1);
    // Within the acknowledgement time: nothing in the thread yet.
    assert!(w.agent_replies(&alert.id).is_empty());
}

#[test]
fn no_acknowledgement_in_time_gets_exactly_one_follow_up_naming_on_call() {
    let w = World::new(false);
    w.run();
    let alert = w.alert();
    w.runs(2);
    assert!(w.agent_replies(&alert.id).is_empty(), "too early");

    w.age_alert(31);
    w.runs(4);
    let replies = w.agent_replies(&alert.id);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].contains("@alice"), "{}", replies[0]);
    assert!(!mentions_everyone(&replies[0]), "{}", replies[0]);
    let inc = &w.incidents()[0];
    assert!(inc["followed_up_ms"].is_i64(), "{inc}");
    assert!(inc.get("acked").is_none(), "{inc}");
    assert_eq!(w.counter("alert_follow_ups"), 1);
    assert_eq!(w.alerts().len(), 1);
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}

#[test]
fn a_reaction_by_a_team_member_acknowledges_and_prevents_the_follow_up() {
    let w = World::new(false);
    w.run();
    let alert = w.alert();
    w.mm.react_as(&alert.id, &w.alice, "eyes");
    w.run();
    let inc = &w.incidents()[0];
    assert_eq!(inc["acked"]["how"], "reaction", "{inc}");
    assert_eq!(inc["acked"]["by"], w.alice.as_str(), "{inc}");

    w.age_alert(60);
    w.runs(3);
    assert!(
        w.agent_replies(&alert.id).is_empty(),
        "{:?}",
        w.agent_replies(&alert.id)
    );
    assert_eq!(w.counter("incidents_acknowledged"), 1);
    assert_eq!(w.counter("alert_follow_ups"), 0);
}

/// Planka commits the recovery comment on the incident's card, and the
/// agent is killed before it hears so (the answer is held): the cycles after
/// find the comment by its marker and post none, and the incident still
/// closes.
#[test]
fn killed_after_the_recovery_comment_committed__the_card_is_commented_once() {
    let w = World::new(false);
    w.run();
    w.alert();
    let card = w.planka.cards()[0]["id"].as_str().unwrap().to_string();
    w.docker.update("web", |c| {
        c.status = "running".into();
        c.exit_code = 0;
    });
    w.sb.kill_run_once_at(w.planka.server().hold_answer(Match::post("/comments")));
    assert_eq!(
        w.planka.comment_texts(&card).len(),
        1,
        "committed before the kill"
    );
    w.runs(2);
    let comments = w.planka.comment_texts(&card);
    assert_eq!(comments.len(), 1, "{comments:#?}\n{}", w.sb.log_text());
    assert!(
        comments[0].starts_with("Recovered at ")
            && comments[0].ends_with(&format!("`ops-agent: recovery {}`", w.closed_key())),
        "{comments:?}"
    );
    let esc = w.escalation();
    assert_eq!(esc["incidents"].as_array().map_or(0, Vec::len), 0, "{esc}");
    assert_eq!(esc["closed"][0]["card_commented"], true, "{esc}");
    assert_eq!(
        w.agent_replies(&w.alert().id).len(),
        1,
        "one recovery notice"
    );
}

#[test]
fn recovery_posts_once_comments_the_card_once_and_counts_the_incident() {
    let w = World::new(false);
    w.run();
    let alert = w.alert();
    // Acknowledged by a reply in the thread.
    w.mm.reply(&alert.id, &w.mallory, "looking into it");
    w.run();
    assert_eq!(w.incidents()[0]["acked"]["how"], "reply");

    w.docker.update("web", |c| {
        c.status = "running".into();
        c.exit_code = 0;
    });
    w.run();
    let replies = w.agent_replies(&alert.id);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains("web") && replies[0].contains("recovered"),
        "{}",
        replies[0]
    );
    assert_eq!(w.planka.comments().len(), 1, "{:#?}", w.planka.comments());
    let esc = w.escalation();
    assert_eq!(esc["incidents"].as_array().map_or(0, Vec::len), 0, "{esc}");
    assert_eq!(esc["closed"].as_array().unwrap().len(), 1, "{esc}");
    assert_eq!(esc["closed"][0]["recovery_posted"], true);
    // With the built-in ledger the incident's task really is closed, as
    // the recovery post says.
    assert!(replies[0].contains("is being closed"), "{}", replies[0]);
    let out = w.sb.run(&["tasks", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["tasks"][0]["status"], "resolved", "{listed}");

    w.runs(3);
    assert_eq!(w.agent_replies(&alert.id).len(), 1);
    assert_eq!(w.planka.comments().len(), 1);
    assert_eq!(w.alerts().len(), 1);
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    assert_eq!(w.counter("incidents_opened"), 1);
    assert_eq!(w.counter("incidents_acknowledged"), 1);
    assert_eq!(w.counter("incidents_resolved"), 1);
    assert_eq!(w.counter("recoveries_posted"), 1);
    assert!(w.counter("incident_recovery_ms_total") > 0);

    // The audit trail tells the incident's story, in order, once.
    let out = w.sb.run(&["audit", "--check", "web", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let story: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|l| match l["event"].as_str() {
            Some("escalation") => Some(l["step"].as_str().unwrap().to_string()),
            Some("acknowledged") => Some(format!("acknowledged by {}", l["how"].as_str().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(
        story,
        [
            "opened",
            "task",
            "alert_posted",
            "brief_posted",
            "acknowledged by reply",
            "recovered",
            "recovery_posted",
            "card_commented",
            "task_resolved",
            "closed"
        ],
        "{story:?}"
    );
}

/// Planka is optional: down when the service recovers, the recovery post
/// and the task's resolution go ahead, the card's comment is owed to the
/// next cycle, and the escalate stage stays ok with that fallback named (a
/// degraded stage would page).
#[test]
fn planka_down_at_recovery_is_the_escalate_stages_fallback_not_degraded() {
    let w = World::new(false);
    w.run();
    let alert = w.alert();
    w.docker.update("web", |c| {
        c.status = "running".into();
        c.exit_code = 0;
    });
    w.planka.set_fault(Fault::Refuse);
    w.run();
    assert_eq!(w.agent_replies(&alert.id).len(), 1, "the recovery post");
    let st = w.sb.state_json();
    let last = &st["last_cycle"];
    let esc = last["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "escalate")
        .unwrap();
    assert_eq!(esc["outcome"], "ok", "{esc}");
    assert_eq!(last["fallbacks"][0]["stage"], "escalate", "{last}");
    assert!(
        last["fallbacks"][0]["why"]
            .as_str()
            .unwrap()
            .starts_with("1 card step(s) owed to the next cycle (Planka: "),
        "{last}"
    );
    assert!(w.planka.comments().is_empty());
    w.planka.clear_fault();
    w.runs(2);
    assert_eq!(w.planka.comments().len(), 1, "the comment, once, later");
    assert_eq!(w.agent_replies(&alert.id).len(), 1);
}

#[test]
fn mattermost_down_at_escalation_files_the_task_now_and_posts_next_cycle_once() {
    let w = World::new(false);
    w.mm.set_fault(Fault::Refuse);
    w.run();
    let tasks = w.sb.ledger_tasks();
    assert_eq!(tasks.len(), 1, "task created while Mattermost is down");
    assert_eq!(w.planka.cards().len(), 1);
    let inc = &w.incidents()[0];
    assert!(inc.get("alert_post_id").is_none(), "{inc}");
    assert!(inc.get("alerted_ms").is_none(), "{inc}");

    w.mm.clear_fault();
    assert!(w.alerts().is_empty());
    w.run();
    let alert = w.alert();
    assert!(
        alert.message.contains(tasks[0]["id"].as_str().unwrap()),
        "{}",
        alert.message
    );
    w.runs(3);
    assert_eq!(w.alerts().len(), 1);
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    assert_eq!(w.planka.cards().len(), 1);
    assert_eq!(w.counter("alerts_posted"), 1);
}

#[test]
fn a_chat_silence_from_an_allowed_user_stops_fix_and_alert_until_it_expires() {
    let w = World::new(true);
    let ask = w.mm.post(
        &w.ops,
        &w.alice,
        "@opsbot silence web 2h maintenance of the host",
    );
    w.run();
    let replies = w.agent_replies(&ask);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].contains("Silenced **web**"), "{}", replies[0]);
    let silences = w.escalation()["silences"]["active"].clone();
    assert_eq!(silences.as_array().unwrap().len(), 1, "{silences}");
    assert_eq!(silences[0]["by"], "alice");

    w.runs(3);
    // Still checked, but neither fixed nor alerted.
    let st = w.sb.state_json();
    let web = st["last_cycle"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .cloned()
        .unwrap();
    assert_eq!(web["status"], "critical", "{web}");
    assert_eq!(w.docker.restarts("web"), 0);
    assert!(w.alerts().is_empty());
    assert!(w.sb.ledger_tasks().is_empty());
    assert!(w.incidents().is_empty());
    assert_eq!(w.agent_replies(&ask).len(), 1, "confirmed once");
    assert!(st["escalation"]["silences"]["active"][0]["failing_seen_ms"].is_i64());

    // Two hours later (the silence ran out), web still down: fixed, then alerted.
    w.edit_state(|st| {
        let s = &mut st["escalation"]["silences"]["active"][0];
        s["until_ms"] = Value::from(chrono::Utc::now().timestamp_millis() - 1000);
    });
    w.run();
    assert_eq!(w.docker.restarts("web"), 1);
    let alert = w.alert();
    assert!(
        alert.message.contains("web is failing"),
        "{}",
        alert.message
    );
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    let esc = w.escalation();
    assert_eq!(esc["silences"]["active"].as_array().unwrap().len(), 0);
    assert_eq!(esc["silences"]["ended"].as_array().unwrap().len(), 1);
    w.run();
    assert_eq!(w.alerts().len(), 1);
}

#[test]
fn a_chat_silence_from_anyone_else_is_refused_politely_and_changes_nothing() {
    let w = World::new(true);
    let ask =
        w.mm.post(&w.ops, &w.mallory, "@opsbot silence web 2h trust me");
    w.run();
    let replies = w.agent_replies(&ask);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].starts_with("Sorry @mallory"), "{}", replies[0]);
    let esc = w.escalation();
    assert_eq!(
        esc["silences"]["active"].as_array().map_or(0, Vec::len),
        0,
        "{esc}"
    );
    // Not silenced: the fix ran and, as it did not help, the alert went out.
    assert_eq!(w.docker.restarts("web"), 1);
    w.alert();
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    // The refusal is not repeated, nor is the request filed as a task.
    w.run();
    assert_eq!(w.agent_replies(&ask).len(), 1);
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    assert!(w.sb.log_text().contains("refused"), "{}", w.sb.log_text());
}

#[test]
fn silence_cli_creates_lists_and_clears_and_status_shows_incidents_and_silences() {
    let w = World::new(false);
    w.run();
    let out = w.sb.run(&["silence", "web", "1h", "--reason", "x"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("s1") && stdout.contains("web"), "{stdout}");

    let out = w.sb.run(&["silence", "--list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["active"][0]["id"], "s1", "{v}");
    assert_eq!(v["active"][0]["target"], "web", "{v}");
    assert_eq!(v["active"][0]["reason"], "x", "{v}");

    let out = w.sb.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["incidents"][0]["service"], "web", "{v}");
    assert!(v["incidents"][0]["alert_post_id"].is_string(), "{v}");
    assert_eq!(v["silences"][0]["id"], "s1", "{v}");

    // A cycle while silenced: the open incident gets no follow-up.
    w.age_alert(31);
    w.run();
    let alert = w.alert();
    assert!(w.agent_replies(&alert.id).is_empty());

    let out = w.sb.run(&["silence", "--clear", "s1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = w.sb.run(&["silence", "--list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["active"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["ended"][0]["id"], "s1", "{v}");
    assert!(v["ended"][0]["cleared_ms"].is_i64(), "{v}");
    let out = w.sb.run(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["silences"].as_array().unwrap().len(), 0, "{v}");

    // Cleared: the follow-up owed is made now, once.
    w.runs(2);
    let replies = w.agent_replies(&alert.id);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].contains("@alice"));

    // Mistakes are refused with the reason.
    let out = w.sb.run(&["silence", "nope", "1h", "--reason", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown check or service 'nope'"),
        "{}",
        text(&out)
    );
    let out = w.sb.run(&["silence", "--clear", "s1"]);
    assert!(!out.status.success(), "{}", text(&out));
    // Who silenced, why, and who ended it, in the audit trail.
    let out = w.sb.run(&["audit", "--check", "web"]);
    let story = String::from_utf8_lossy(&out.stdout);
    assert!(story.contains("ops-agent silence\n"), "{story}");
    assert!(
        story.contains("silence s1 of web until ") && story.contains(" by cli: x"),
        "{story}"
    );
    assert!(
        story.contains("silence s1 of web cleared by cli"),
        "{story}"
    );
    let out = w.sb.run(&["silence", "web", "1h"]);
    assert!(
        !out.status.success(),
        "a reason is required: {}",
        text(&out)
    );
}

#[test]
fn a_reply_in_the_alert_thread_acknowledges_and_is_not_filed_again() {
    let w = World::new(false);
    // A model that calls anything saying "down" an INCIDENT, as a real one would.
    w.llm.answer_with(|m| {
        if m.to_lowercase().contains("down") {
            "INCIDENT".into()
        } else {
            "ROUTINE".into()
        }
    });
    w.run();
    let alert = w.alert();
    w.mm.reply(
        &alert.id,
        &w.alice,
        "yes web is down, the disk is full, on it",
    );
    w.runs(2);
    assert_eq!(w.incidents()[0]["acked"]["how"], "reply");
    let tasks = w.sb.ledger_tasks();
    assert_eq!(tasks.len(), 1, "the incident is filed once: {tasks:#?}");
    assert_eq!(w.planka.cards().len(), 1);
    let replies = w.agent_replies(&alert.id);
    assert!(
        replies.is_empty(),
        "no chat answer in the alert thread: {replies:?}"
    );
}

#[test]
fn a_lost_save_after_posting_finds_the_alert_and_follow_up_instead_of_posting_again() {
    let w = World::new(false);
    w.run();
    let alert = w.alert();
    // The agent died after posting, before saving: state knows no alert.
    w.edit_state(|st| {
        let inc = st["escalation"]["incidents"][0].as_object_mut().unwrap();
        inc.remove("alert_post_id");
        inc.remove("alerted_ms");
    });
    w.run();
    assert_eq!(w.alert().id, alert.id, "the same alert, not a second one");
    assert_eq!(w.incidents()[0]["alert_post_id"], alert.id.as_str());
    // It keeps the alert's own time, so the follow-up clock does not restart.
    assert_eq!(w.incidents()[0]["alerted_ms"], alert.create_at);

    w.age_alert(31);
    w.run();
    assert_eq!(w.agent_replies(&alert.id).len(), 1);
    w.edit_state(|st| {
        let inc = st["escalation"]["incidents"][0].as_object_mut().unwrap();
        inc.remove("followed_up_ms");
    });
    w.runs(2);
    let replies = w.agent_replies(&alert.id);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}

#[test]
fn a_dry_run_escalates_nothing_and_the_next_real_cycle_does_it_once() {
    let w = World::new(false);
    let out = w.sb.run(&["run-once", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(w.alerts().is_empty());
    assert!(w.sb.ledger_tasks().is_empty());
    assert!(w.planka.cards().is_empty());
    assert!(w.sb.log_text().contains("would"), "{}", w.sb.log_text());
    w.runs(2);
    w.alert();
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    assert_eq!(w.planka.cards().len(), 1);
}

#[test]
fn an_incident_that_recovers_during_a_silence_still_gets_its_recovery_post() {
    let w = World::new(false);
    w.run();
    let alert = w.alert();
    let out =
        w.sb.run(&["silence", "web", "1h", "--reason", "maintenance"]);
    assert!(out.status.success(), "{}", text(&out));
    w.age_alert(31);
    w.run();
    assert!(
        w.agent_replies(&alert.id).is_empty(),
        "silenced: no follow-up"
    );

    // It recovers while silenced: the thread that said "failing" says so.
    w.docker.update("web", |c| {
        c.status = "running".into();
        c.exit_code = 0;
    });
    w.run();
    let replies = w.agent_replies(&alert.id);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains("web") && replies[0].contains("recovered"),
        "{}",
        replies[0]
    );
    let esc = w.escalation();
    assert_eq!(esc["closed"][0]["recovery_posted"], true, "{esc}");
    assert_eq!(esc["closed"][0]["recovered_in_silence"], true, "{esc}");
    w.runs(2);
    assert_eq!(w.agent_replies(&alert.id).len(), 1, "posted once");
    assert_eq!(w.alerts().len(), 1, "and no new alert");
    assert_eq!(w.counter("recoveries_posted"), 1);
}
