//! Corrections by reaction through the real binary: a person on the
//! allowlist reacts with a label's emoji, the next cycle records the
//! correction and puts the filed task right (closed, filed, priority
//! changed), says so in the thread, once; the correction then teaches the
//! fallback and the LLM prompt, and `ops-agent eval` measures it.

#![allow(non_snake_case)]

use serde_json::Value;

use crate::support::agent::{text, Sandbox};
use crate::support::fault::{Fault, Hold, Match};
use crate::support::mattermost::FakeMattermost;
use crate::support::ollama::FakeOllama;
use crate::support::planka::FakePlanka;
use crate::support::world::WorldBuilder;

struct World {
    mm: FakeMattermost,
    llm: FakeOllama,
    planka: FakePlanka,
    sb: Sandbox,
    agent: String,
    alice: String,
    john: String,
    mallory: String,
    channels: Vec<(String, String)>,
}

impl World {
    fn new(sweep_mins: u64) -> World {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["basic", "wizard"]);
        let agent = me.id;
        let alice = mm.add_user("alice", "pw");
        let john = mm.add_user("john", "pw");
        let mallory = mm.add_user("mallory", "pw");
        let members = [
            agent.as_str(),
            alice.as_str(),
            john.as_str(),
            mallory.as_str(),
        ];
        let mut channels = Vec::new();
        for team in ["basic", "wizard"] {
            let tid = mm.add_team(team, &members);
            channels.push((team.to_string(), mm.add_channel(&tid, "ops", &members)));
        }
        let llm = b.ollama();
        llm.answer_by_words();
        let planka = b.planka(&[("wizard", "Wizard", "Inbox"), ("basic", "Basic", "Inbox")]);
        b.line("escalation", "done_list = \"Done\"");
        b.line("corrections", &format!("sweep_mins = {sweep_mins}"));
        let sb = b.sandbox();
        World {
            mm,
            llm,
            planka,
            sb,
            agent,
            alice,
            john,
            mallory,
            channels,
        }
    }

    fn channel(&self, team: &str) -> String {
        self.channels
            .iter()
            .find(|(t, _)| t == team)
            .unwrap()
            .1
            .clone()
    }

    fn say(&self, team: &str, message: &str) -> String {
        self.mm.post(&self.channel(team), &self.alice, message)
    }

    fn run(&self) {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// The agent's posts in the thread of `root`, oldest first.
    fn agent_posts_in(&self, root: &str) -> Vec<String> {
        self.mm
            .thread_replies(root)
            .into_iter()
            .filter(|p| p.user_id == self.agent)
            .map(|p| p.message)
            .collect()
    }

    fn reply_to(&self, post: &str) -> String {
        self.mm
            .posts()
            .into_iter()
            .find(|p| {
                p.user_id == self.agent
                    && p.props.get("ops_agent_reply_to").and_then(Value::as_str) == Some(post)
            })
            .map(|p| p.id)
            .unwrap_or_else(|| panic!("no reply to {post}"))
    }

    fn tasks(&self) -> Vec<Value> {
        let out = self.sb.run(&["tasks", "list", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["tasks"].as_array().unwrap().clone()
    }

    fn task_of(&self, post: &str) -> Value {
        self.tasks()
            .into_iter()
            .find(|t| t["source"] == post)
            .unwrap_or_else(|| panic!("no task for {post}"))
    }

    fn corrections(&self) -> Vec<Value> {
        std::fs::read_to_string(self.sb.path("system/agents/state/ops-corrections.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Everything an exactly-once check compares between cycles.
    fn footprint(&self) -> (usize, usize, usize, usize, usize) {
        let ledger =
            std::fs::read_to_string(self.sb.path("system/agents/state/ops-tasks.jsonl")).unwrap();
        (
            self.mm.posts().len(),
            ledger.lines().count(),
            self.corrections().len(),
            self.planka.cards().len(),
            self.planka.comments().len(),
        )
    }
}

#[test]
fn reactions_on_the_agents_replies_correct_labels_and_put_each_task_right_once() {
    let w = World::new(0);
    let task = w.say("wizard", "please deploy the hotfix tonight");
    let routine = w.say("basic", "the planka board looks empty since this morning");
    let incident = w.say("wizard", "please check the backups, the job is down");
    w.run();
    assert_eq!(w.task_of(&task)["priority"], "NORMAL");
    assert_eq!(w.task_of(&incident)["priority"], "HIGH");
    assert!(w.agent_posts_in(&routine).is_empty(), "ROUTINE: no reply");
    let card_of = |post: &str| {
        w.planka
            .cards()
            .into_iter()
            .find(|c| c["description"].as_str().unwrap_or("").contains(post))
            .unwrap_or_else(|| panic!("no card for {post}"))
    };
    let board = card_of(&task)["boardId"].as_str().unwrap().to_string();
    let done = w.planka.add_list(&board, "Done");

    // john (on the default allowlist) corrects; mallory is not on it.
    w.mm.react_as(&w.reply_to(&task), &w.mallory, "rotating_light");
    w.mm.react_as(&w.reply_to(&task), &w.john, "speech_balloon");
    w.mm.react_as(&routine, &w.john, "rotating_light");
    w.mm.react_as(&w.reply_to(&incident), &w.john, "memo");
    w.mm.react_as(&w.reply_to(&incident), &w.john, "+1");
    // New chat keeps both channels active: the poll brings the reacted
    // posts back, and only they are read.
    w.say("wizard", "lunch at 1?");
    w.say("basic", "ok");
    w.mm.clear_requests();
    w.run();
    assert_eq!(
        w.mm.count_requests("POST", "/posts/ids/reactions"),
        1,
        "one request reads every reacted post"
    );

    // TASK → ROUTINE: the task is closed, its card commented and moved.
    let t = w.task_of(&task);
    assert_eq!(
        (t["status"].as_str(), t["label"].as_str()),
        (Some("closed"), Some("ROUTINE")),
        "{t}"
    );
    assert_eq!(card_of(&task)["listId"], done.as_str());
    let said = w.agent_posts_in(&task);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said[1].starts_with("Relabelled ROUTINE (was TASK) by john.")
            && said[1].contains("is closed"),
        "{said:?}"
    );
    // ROUTINE → INCIDENT: the task is filed now (HIGH, INTERNAL for basic).
    let t = w.task_of(&routine);
    assert_eq!(
        (t["priority"].as_str(), t["tag"].as_str()),
        (Some("HIGH"), Some("INTERNAL")),
        "{t}"
    );
    let said = w.agent_posts_in(&routine);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with("Relabelled INCIDENT (was ROUTINE) by john. Logged as INCIDENT")
            && said[0].contains(t["id"].as_str().unwrap()),
        "{said:?}"
    );
    // INCIDENT → TASK: the priority follows.
    let t = w.task_of(&incident);
    assert_eq!(
        (t["priority"].as_str(), t["label"].as_str()),
        (Some("NORMAL"), Some("TASK")),
        "{t}"
    );
    assert!(w.agent_posts_in(&incident)[1].contains("now NORMAL priority"));
    assert!(
        w.planka.comments().len() >= 2,
        "cards of the closed and the reprioritized task are commented"
    );

    // The corrections file: text, right label, who, when; owner-only.
    let c = w.corrections();
    assert_eq!(c.len(), 3, "{c:#?}");
    let of = |post: &str| c.iter().find(|x| x["post_id"] == post).unwrap().clone();
    assert_eq!(of(&task)["label"], "ROUTINE");
    assert_eq!(of(&task)["was"], "TASK");
    assert_eq!(of(&task)["by"], "john");
    assert_eq!(of(&task)["text"], "please deploy the hotfix tonight");
    assert!(of(&task)["at"].as_str().unwrap().starts_with("20"));
    assert_eq!(of(&routine)["label"], "INCIDENT");
    assert_eq!(of(&incident)["label"], "TASK");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.sb.path("system/agents/state/ops-corrections.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Nothing twice: more cycles, reactions still there, more chat.
    let before = w.footprint();
    w.run();
    w.say("wizard", "coffee?");
    w.run();
    let after = w.footprint();
    assert_eq!(
        (after.1, after.2, after.3, after.4),
        (before.1, before.2, before.3, before.4)
    );
    assert_eq!(after.0, before.0 + 1, "only the new chat post");

    // A correction of a correction: the closed task opens again.
    let announcement =
        w.mm.thread_replies(&task)
            .into_iter()
            .rfind(|p| p.user_id == w.agent)
            .unwrap()
            .id;
    w.mm.react_as(&announcement, &w.john, "memo");
    w.say("wizard", "brb");
    w.run();
    let t = w.task_of(&task);
    assert_eq!(
        (t["status"].as_str(), t["priority"].as_str()),
        (Some("open"), Some("NORMAL")),
        "{t}"
    );
    assert!(
        w.agent_posts_in(&task)[2].contains("open again"),
        "{:?}",
        w.agent_posts_in(&task)
    );
    assert_eq!(w.corrections().len(), 4);

    // The corrections teach: the LLM gets them as worked examples, fenced.
    w.say("basic", "the planka board looks empty again");
    w.run();
    let chat = w.llm.chat_requests();
    let last = chat.last().unwrap();
    let msgs = last.body["messages"].as_array().unwrap();
    let shots: Vec<&Value> = msgs.iter().filter(|m| m["role"] == "assistant").collect();
    assert!(!shots.is_empty(), "{msgs:#?}");
    assert!(
        msgs.iter().any(|m| m["role"] == "user"
            && m["content"].as_str().unwrap().contains("<<<MESSAGE-")
            && m["content"]
                .as_str()
                .unwrap()
                .contains("the planka board looks empty since this morning")),
        "{msgs:#?}"
    );

    // ... and `ops-agent eval` measures them (each without itself).
    let out = w.sb.run(&["eval", "--no-llm", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 3, "one per post, its latest label: {v}");
    assert!(v["source"].as_str().unwrap().starts_with("corrections"));
    assert_eq!(v["paths"]["fallback/no_llm"], 3);
}

#[test]
fn a_reaction_in_a_quiet_channel_is_found_by_the_sweep_and_the_fallback_learns_it() {
    let w = World::new(30);
    let post = w.say("basic", "status: the nightly export went through, 42 files");
    w.run();
    assert!(w.agent_posts_in(&post).is_empty());
    // Hours later, in a channel nobody wrote in since: no poll brings the
    // post back, and no sweep is due yet.
    w.mm.advance_clock(3 * 3_600_000);
    w.run();
    w.mm.react_as(&post, &w.john, "memo");
    w.mm.clear_requests();
    w.run();
    assert_eq!(w.mm.count_requests("POST", "/posts/ids/reactions"), 0);
    assert!(w.corrections().is_empty());
    // The sweep is due (its last run is set back, as if 30 minutes passed).
    let mut state = w.sb.state_json();
    state["chat"]["corrections_swept_ms"] = Value::from(0);
    std::fs::write(w.sb.state(), serde_json::to_vec(&state).unwrap()).unwrap();
    w.run();
    assert_eq!(w.mm.count_requests("POST", "/posts/ids/reactions"), 1);
    assert_eq!(w.corrections().len(), 1);
    assert_eq!(w.task_of(&post)["label"], "TASK");

    // With the LLM gone, the same words are now a TASK for the fallback.
    w.llm.set_models(&[]);
    let again = w.say("basic", "status: the nightly export went through, 42 files");
    w.run();
    let t = w.task_of(&again);
    assert_eq!(t["label"], "TASK", "{t}");
    let log = w.sb.log_text();
    assert!(log.contains("model_missing"), "the fallback decided: {log}");
}

#[test]
fn the_watch_lives_in_its_own_file_and_the_state_carries_only_what_it_overrides() {
    let w = World::new(30);
    let mut posts: Vec<String> = (0..12)
        .map(|i| {
            let team = if i % 2 == 0 { "wizard" } else { "basic" };
            w.say(team, &format!("please deploy build {i} tonight"))
        })
        .collect();
    posts.push(w.say("basic", "thanks, all good here"));
    w.run();
    // Every post is watched, in the file, once; the state carries none.
    let watched = |sb: &crate::support::agent::Sandbox| -> Vec<String> {
        sb.watch_lines()
            .iter()
            .map(|l| l["post"].as_str().unwrap().to_string())
            .collect()
    };
    let mut in_file = watched(&w.sb);
    in_file.sort();
    let mut want = posts.clone();
    want.sort();
    assert_eq!(in_file, want);
    assert_eq!(w.sb.state_json()["chat"]["watch"], serde_json::json!({}));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.sb.watch_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A correction brings the post's entry into the state, where it
    // overrides its line; the file is only appended to.
    for board in w
        .planka
        .cards()
        .iter()
        .filter_map(|c| c["boardId"].as_str())
        .collect::<std::collections::BTreeSet<_>>()
    {
        w.planka.add_list(board, "Done");
    }
    w.mm.react_as(&w.reply_to(&posts[0]), &w.john, "speech_balloon");
    w.say("wizard", "lunch?");
    w.run();
    assert_eq!(w.task_of(&posts[0])["status"], "closed");
    let state = w.sb.state_json();
    let hot = state["chat"]["watch"].as_object().unwrap();
    assert_eq!(hot.keys().collect::<Vec<_>>(), [&posts[0]]);
    assert_eq!(hot[&posts[0]]["label"], "ROUTINE", "{state:#}");
    assert_eq!(hot[&posts[0]]["in_file"], true);
    assert_eq!(watched(&w.sb).len(), posts.len() + 1, "the new chat post");

    // A line a crash cut and a line of garbage: skipped and named; the
    // sweep reads every other post from the file (the reacted reply's
    // channel is quiet: no poll brings it back).
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(w.sb.watch_file())
        .unwrap();
    std::io::Write::write_all(&mut f, b"garbage\n{\"post\":\"torn").unwrap();
    w.mm.react_as(&w.reply_to(&posts[1]), &w.john, "rotating_light");
    let mut state = w.sb.state_json();
    state["chat"]["corrections_swept_ms"] = Value::from(0);
    std::fs::write(w.sb.state(), serde_json::to_vec(&state).unwrap()).unwrap();
    w.mm.clear_requests();
    w.run();
    let log = w.sb.log_text();
    assert!(
        log.contains("Skipped unreadable lines of the corrections watch"),
        "{log}"
    );
    assert_eq!(w.task_of(&posts[1])["priority"], "HIGH");
    assert_eq!(w.mm.count_requests("POST", "/posts/ids/reactions"), 1);
    // A post handled after the torn line is watched on a line of its own.
    let after = w.say("basic", "please renew the certificate for the shop");
    w.run();
    assert!(watched(&w.sb).contains(&after), "{:?}", w.sb.watch_lines());

    // Out of the window by more than a quarter window, the file is
    // compacted: the old lines go, the recent and the overridden stay
    // right.
    let text = std::fs::read_to_string(w.sb.watch_file()).unwrap();
    let old_ms = chrono::Utc::now().timestamp_millis() - 61 * 3_600_000;
    let aged: String = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|mut v| {
            if v["post"] != after.as_str() {
                v["create_at"] = Value::from(old_ms);
            }
            format!("{v}\n")
        })
        .collect();
    std::fs::write(w.sb.watch_file(), aged).unwrap();
    let mut state = w.sb.state_json();
    state["chat"]["watch_file_oldest_ms"] = Value::from(old_ms);
    std::fs::write(w.sb.state(), serde_json::to_vec(&state).unwrap()).unwrap();
    w.run();
    assert!(
        w.sb.log_text().contains("Corrections watch compacted"),
        "{}",
        w.sb.log_text()
    );
    assert_eq!(watched(&w.sb), vec![after]);
}

/// The posts of a batch that wrote nothing outside are made durable
/// together once the batch's tasks are filed: killed while the replies go
/// out, the next cycle neither labels them again nor loses their watch.
#[test]
fn killed_before_the_replies__the_routine_posts_of_the_batch_are_not_labelled_again() {
    let w = World::new(0);
    let chatter = [
        w.say("wizard", "thanks, all good here"),
        w.say("wizard", "lunch at 1?"),
    ];
    let task = w.say("wizard", "please deploy the hotfix tonight");
    w.sb.kill_run_once_at(w.mm.server().hold(Match::post_to("/api/v4/posts")));
    assert!(w.mm.server().wait_idle(std::time::Duration::from_secs(10)));
    let asked_before = w.llm.chat_requests().len();
    w.run();
    let asked: Vec<String> = w.llm.chat_requests()[asked_before..]
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    for text in ["thanks, all good here", "lunch at 1?"] {
        assert!(
            !asked.iter().any(|b| b.contains(text)),
            "{text:?} was labelled again: {asked:#?}"
        );
    }
    assert_eq!(w.agent_posts_in(&task).len(), 1, "one reply");
    let watched = w.sb.watched_posts();
    for p in chatter.iter().chain([&task]) {
        assert!(watched.contains(p), "{p} watched: {watched:?}");
    }
}

#[test]
fn a_dry_run_says_what_it_would_correct_and_changes_nothing() {
    let w = World::new(0);
    let task = w.say("wizard", "please deploy the hotfix tonight");
    w.run();
    w.mm.react_as(&w.reply_to(&task), &w.john, "speech_balloon");
    w.say("wizard", "ok");
    let before = w.footprint();
    let out = w.sb.run(&["run-once", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.footprint(), before);
    assert!(
        w.sb.log_text().contains("would correct post"),
        "{}",
        w.sb.log_text()
    );
    w.run();
    assert_eq!(w.task_of(&task)["status"], "closed");
}

#[test]
fn eval_measures_a_file_by_path_with_and_without_the_llm() {
    let mut b = WorldBuilder::new();
    let llm = b.ollama();
    // A model that gets everything but one post right, and mumbles once.
    llm.answer_with(|msg| {
        if msg.contains("slow") {
            "ROUTINE".into()
        } else if msg.contains("thanks") {
            "Sure! Here is the classification: ROUTINE<|eot_id|>".into()
        } else if msg.contains("please") {
            "{\"label\": \"TASK\", \"label\": \"INCIDENT\"}".into()
        } else {
            "INCIDENT".into()
        }
    });
    let sb = b.sandbox();
    let file = sb.path("set.jsonl");
    std::fs::write(
        &file,
        "{\"text\":\"planka is down for everyone\",\"label\":\"INCIDENT\"}\n\
         {\"text\":\"the riad site is slow right now\",\"label\":\"INCIDENT\"}\n\
         {\"text\":\"thanks all\",\"label\":\"ROUTINE\"}\n\
         {\"text\":\"please add Ana to the wizard board\",\"label\":\"TASK\"}\n\
         not a row\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = sb.run(&["eval", path, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["rows"].as_u64(), v["correct"].as_u64()),
        (Some(4), Some(3)),
        "{v}"
    );
    assert_eq!(v["skipped_lines"], serde_json::json!([5]));
    assert_eq!(v["model"], "llama3.1:8b");
    // Three answers used (one wrong), the ambiguous JSON fell back.
    assert_eq!(v["paths"]["llm"], 3, "{v}");
    assert_eq!(v["paths"]["fallback/unusable"], 1, "{v}");
    assert_eq!(v["confusion"][2], serde_json::json!([1, 0, 1]));
    assert!(v["latency"]["max_ms"].is_u64());
    let recall = |i: usize| v["labels"][i]["recall"].as_f64().unwrap();
    assert_eq!((recall(0), recall(1), recall(2)), (1.0, 1.0, 0.5));

    let out = sb.run(&["eval", path, "--no-llm"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("fallback only (--no-llm)"), "{t}");
    assert!(
        s.contains("accuracy: ") && s.contains("fallback/no_llm"),
        "{t}"
    );
    assert!(
        s.contains("confusion (rows: expected, columns: got)"),
        "{t}"
    );

    let out = sb.run(&["eval", "/nonexistent/set.jsonl"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = sb.run(&["eval", "--no-llm"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no corrections yet: {}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no labelled posts"));
}

#[test]
fn mattermost_without_the_bulk_reactions_endpoint_is_read_post_by_post() {
    use crate::support::fault::Rule;
    let w = World::new(0);
    let task = w.say("wizard", "please deploy the hotfix tonight");
    w.run();
    // A server older than 5.8: the bulk endpoint does not exist.
    w.mm.server()
        .add_rule(Rule::new(Fault::Status(404)).when(Match::post("/posts/ids/reactions")));
    w.mm.react_as(&w.reply_to(&task), &w.john, "speech_balloon");
    w.say("wizard", "ok");
    w.mm.clear_requests();
    w.run();
    assert_eq!(w.mm.count_requests("GET", "/reactions"), 1);
    assert_eq!(w.task_of(&task)["status"], "closed");
}

/// A TASK relabelled ROUTINE; the cycle that closes it is killed once
/// `hold` (built on the fake Planka) has stopped the card's comment, then
/// two cycles heal. The correction, the card comment and the announcement
/// are each made once.
fn kill_mid_correction(hold: impl FnOnce(&FakePlanka) -> Hold) {
    let w = World::new(0);
    let task = w.say("wizard", "please deploy the hotfix tonight");
    w.run();
    let card = w.planka.cards()[0].clone();
    w.planka.add_list(card["boardId"].as_str().unwrap(), "Done");
    w.mm.react_as(&w.reply_to(&task), &w.john, "speech_balloon");
    w.say("wizard", "lunch at 1?");
    // The correction is recorded and the task closed in the ledger; the
    // card's comment is held, and the agent is killed while it waits.
    w.sb.kill_run_once_at(hold(&w.planka));
    // A held request is now served or dropped, not still on its way.
    assert!(w
        .planka
        .server()
        .wait_idle(std::time::Duration::from_secs(10)));
    w.run();
    w.run();
    assert_eq!(w.corrections().len(), 1, "recorded once");
    let comments = w.planka.comment_texts(card["id"].as_str().unwrap());
    assert_eq!(comments.len(), 1, "the card is told once: {comments:?}");
    let marker = comments[0].lines().last().unwrap_or_default();
    assert!(
        comments[0].starts_with("Not a task: relabelled ROUTINE by john.")
            && marker.starts_with(&format!("`ops-agent: close {task}:ROUTINE:")),
        "{comments:?}"
    );
    let said = w.agent_posts_in(&task);
    assert_eq!(said.len(), 2, "the reply and one announcement: {said:?}");
    assert_eq!(w.task_of(&task)["status"], "closed");
}

/// Planka committed the comment and the agent died before hearing so: the
/// next cycle finds the comment by its marker instead of posting again.
#[test]
fn killed_mid_correction__no_step_is_done_twice() {
    kill_mid_correction(|p| p.server().hold_answer(Match::post("/comment")));
}

/// The comment request is held before Planka sees it (dropped with the
/// agent, or served after the kill, whichever the server notices first):
/// either way the card ends with one comment.
#[test]
fn killed_before_the_correction_comment_is_served__the_card_is_told_once() {
    kill_mid_correction(|p| p.server().hold(Match::post("/comment")));
}

/// Planka is optional: with it down, a correction still closes the task
/// and says so in the thread, the cycle is ok with the card's step as the
/// corrections stage's fallback (shown, not paged), and the card is told
/// once Planka is back.
#[test]
fn planka_down_during_a_correction__the_ledger_and_thread_are_right_and_the_card_is_told_later() {
    let w = World::new(0);
    let task = w.say("wizard", "please deploy the hotfix tonight");
    w.run();
    let card = w.planka.cards()[0].clone();
    let card_id = card["id"].as_str().unwrap().to_string();
    let done = w.planka.add_list(card["boardId"].as_str().unwrap(), "Done");
    w.mm.react_as(&w.reply_to(&task), &w.john, "speech_balloon");
    w.say("wizard", "lunch at 1?");
    w.planka.set_fault(Fault::Refuse);
    w.run();
    assert_eq!(w.task_of(&task)["status"], "closed");
    let said = w.agent_posts_in(&task);
    assert_eq!(said.len(), 2, "the reply and the announcement: {said:?}");
    assert!(
        said[1].starts_with("Relabelled ROUTINE (was TASK) by john."),
        "{said:?}"
    );
    let log = w.sb.log_text();
    let last = log.lines().rfind(|l| l.contains("cycle ok in"));
    let last = last.unwrap_or_else(|| panic!("the cycle was not ok: {log}"));
    assert!(
        last.contains("corrections=ok") && last.ends_with("[fallback: corrections]"),
        "{last}"
    );
    w.planka.clear_fault();
    assert!(w.planka.comment_texts(&card_id).is_empty());
    w.run();
    let comments = w.planka.comment_texts(&card_id);
    assert_eq!(comments.len(), 1, "told once: {comments:?}");
    assert!(comments[0].starts_with("Not a task: relabelled ROUTINE by john."));
    let moved = w
        .planka
        .cards()
        .into_iter()
        .find(|c| c["id"] == card_id.as_str())
        .unwrap();
    assert_eq!(moved["listId"], done.as_str(), "{moved}");
    w.run();
    assert_eq!(w.planka.comment_texts(&card_id).len(), 1, "and only once");
    assert_eq!(w.agent_posts_in(&task).len(), 2, "one announcement");
}

#[test]
fn a_corrected_text_gets_its_label_with_the_llm_up_and_the_llm_is_not_asked_again() {
    let w = World::new(0);
    // The LLM (by its words) takes a status note for an outage.
    let note = "status: the nightly export is down to 3 minutes now";
    let first = w.say("wizard", note);
    w.run();
    assert_eq!(w.task_of(&first)["label"], "INCIDENT");
    w.mm.react_as(&w.reply_to(&first), &w.john, "speech_balloon");
    w.say("wizard", "lunch at 1?");
    w.run();
    assert_eq!(w.corrections().len(), 1);
    let asked = |text: &str| w.llm.label_asks().get(text).copied().unwrap_or(0);
    assert_eq!(asked(note), 1);

    // The same note again, politely: the correction answers, the LLM is
    // not asked, no task is filed, and the log and the audit say why.
    let polite = format!("Good morning! {note}. Thanks");
    let again = w.say("wizard", &polite);
    w.run();
    assert_eq!(asked(&polite), 0, "{:?}", w.llm.label_asks());
    assert_eq!(w.sb.ledger_tasks_for(&again), 0);
    assert!(w.agent_posts_in(&again).is_empty());
    let log = w.sb.log_text();
    assert!(
        log.contains(&format!("post=\"{again}\""))
            && log.contains("part=\"correction\"")
            && log.contains("why=\"corrected\""),
        "{log}"
    );
    let audit = w.sb.audit_events("post_classified");
    let line = audit
        .iter()
        .find(|e| e["post"] == again.as_str())
        .unwrap_or_else(|| panic!("{audit:?}"));
    assert_eq!(line["label"], "ROUTINE");
    assert_eq!(line["part"], "correction");
    assert_eq!(
        line["why"],
        format!("ROUTINE by a correction: the team labelled this text ROUTINE (post {first})")
    );
}

/// Two clients' teams, each with its corrections; one correction holds a
/// password.
struct TwoClients {
    mm: FakeMattermost,
    llm: FakeOllama,
    sb: Sandbox,
    alice: String,
    channels: Vec<(String, String)>,
}

impl TwoClients {
    fn new() -> TwoClients {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["wizard", "riad"]);
        let alice = mm.add_user("alice", "pw");
        let members = [me.id.as_str(), alice.as_str()];
        let mut channels = Vec::new();
        for team in ["wizard", "riad"] {
            let tid = mm.add_team(team, &members);
            channels.push((team.to_string(), mm.add_channel(&tid, "ops", &members)));
        }
        let llm = b.ollama();
        llm.answer("ROUTINE");
        let sb = b.sandbox();
        let line = |team: &str, post: &str, label: &str, text: &str| {
            serde_json::json!({"text": text, "label": label, "was": "ROUTINE", "post_id": post,
                "team": team, "by": "john", "at": "2026-05-01T10:00:00Z"})
            .to_string()
        };
        let file = sb.path("system/agents/state/ops-corrections.jsonl");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            [
                line(
                    "wizard",
                    "w1",
                    "INCIDENT",
                    "staging login for the client is admin password=Hunter2-wizard and it fails since the deploy",
                ),
                line("riad", "r1", "ROUTINE", "the riad booking export is late again, as every friday"),
                line("wizard", "w2", "TASK", "wizard wants the footer year changed"),
            ]
            .join("\n")
                + "\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        TwoClients {
            mm,
            llm,
            sb,
            alice,
            channels,
        }
    }

    fn say(&self, team: &str, message: &str) {
        let channel = &self.channels.iter().find(|(t, _)| t == team).unwrap().1;
        self.mm.post(channel, &self.alice, message);
    }

    /// The classification request for `post`: its system prompt and the
    /// text of every other message of it.
    fn request_for(&self, post: &str) -> (String, String) {
        for r in self.llm.chat_requests() {
            let messages = r.body["messages"].as_array().cloned().unwrap_or_default();
            let Some(last) = messages.last() else {
                continue;
            };
            let last = last["content"].as_str().unwrap_or("");
            if crate::support::ollama::fenced_message(last) != post {
                continue;
            }
            let system = messages[0]["content"].as_str().unwrap_or("").to_string();
            let rest: Vec<String> = messages[1..messages.len() - 1]
                .iter()
                .map(|m| m["content"].as_str().unwrap_or("").to_string())
                .collect();
            return (system, rest.join("\n"));
        }
        panic!("no classification request for {post:?}");
    }
}

#[test]
fn worked_examples_come_only_from_the_posts_own_client_scrubbed_and_the_prompt_names_it() {
    let w = TwoClients::new();
    let riad_post = "the riad booking export is slow this friday";
    let wizard_post = "the wizard staging login keeps failing since the deploy";
    w.say("riad", riad_post);
    w.say("wizard", wizard_post);
    let out = w.sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));

    let (system, shots) = w.request_for(riad_post);
    assert!(system.contains("posted in the team \"riad\""), "{system}");
    assert!(
        shots.contains("the riad booking export is late again"),
        "{shots}"
    );
    for other in ["staging login", "Hunter2", "footer year"] {
        assert!(
            !shots.contains(other),
            "riad saw wizard's {other:?}: {shots}"
        );
        assert!(!system.contains(other), "{system}");
    }

    let (system, shots) = w.request_for(wizard_post);
    assert!(system.contains("posted in the team \"wizard\""), "{system}");
    assert!(shots.contains("staging login for the client"), "{shots}");
    assert!(shots.contains("footer year"), "{shots}");
    assert!(
        !shots.contains("Hunter2"),
        "the password reached the prompt: {shots}"
    );
    assert!(shots.contains("[redacted]"), "{shots}");
    assert!(
        !shots.contains("riad booking"),
        "wizard saw riad's: {shots}"
    );
}

#[test]
fn eval_gives_figures_per_language_and_explains_each_miss() {
    let sb = Sandbox::new();
    let file = sb.path("set.jsonl");
    let row = |text: &str, label: &str, lang: &str| {
        serde_json::json!({"text": text, "label": label, "lang": lang}).to_string()
    };
    std::fs::write(
        &file,
        [
            row("planka is down for everyone", "INCIDENT", "en"),
            row("please add Ana to the wizard board", "TASK", "en"),
            row(
                "сајт не ради, сви добијају грешку 502",
                "INCIDENT",
                "sr-cyrl",
            ),
            row("Хвала свима!", "ROUTINE", "sr-cyrl"),
            // Labelled wrong on purpose: a miss to explain.
            row("lunch at noon?", "INCIDENT", "en"),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = sb.run(&["eval", file.to_str().unwrap(), "--no-llm", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["languages"]["en"]["rows"], 3, "{v}");
    assert_eq!(v["languages"]["en"]["correct"], 2, "{v}");
    assert_eq!(v["languages"]["sr-cyrl"]["rows"], 2, "{v}");
    assert_eq!(v["languages"]["sr-cyrl"]["correct"], 2, "{v}");
    let miss = &v["misses"][0];
    assert_eq!(miss["got"], "ROUTINE", "{v}");
    let why = miss["why"].as_str().unwrap();
    assert!(why.starts_with("ROUTINE by the model: routine "), "{why}");

    let out = sb.run(&["eval", file.to_str().unwrap(), "--no-llm"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("by language"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with("sr-cyrl") && l.contains(" 2/2 ")),
        "{shown}"
    );
}

#[test]
fn eval_halves_measures_whether_corrections_help_and_fails_when_they_hurt() {
    let sb = Sandbox::new();
    let holdout = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/classify-holdout-3.jsonl"
    );
    let out = sb.run(&["eval", holdout, "--no-llm", "--halves", "3", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seeds = v["seeds"].as_array().unwrap();
    assert_eq!(seeds.len(), 3, "{v}");
    for s in seeds {
        assert_eq!(s["scored"], 120, "{s}");
        assert!(s["corrections"].as_u64().unwrap() > 0, "{s}");
    }
    assert_eq!(v["passes"], true, "{v}");
    let out = sb.run(&["eval", holdout, "--no-llm", "--halves", "3"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("corrections did not hurt"), "{shown}");
    // Without a file there is nothing to halve.
    let out = sb.run(&["eval", "--no-llm", "--halves", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn classify_explains_the_decision_with_the_figures_that_made_it() {
    let sb = Sandbox::new();
    for (post, label) in [
        ("The shop is not loading at all, please help!", "INCIDENT"),
        ("Good morning, sorry to bother you, the shop is not loading at all, please help! Thanks", "INCIDENT"),
        ("Добро јутро, сајт не ради уопште, хитно!", "INCIDENT"),
        ("deploy 2.14 to prod tmrw pls", "TASK"),
        ("x", "ROUTINE"),
    ] {
        let out = sb.run(&["classify", post, "--no-llm", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["label"], label, "{post}: {v}");
        let why = v["explanation"].as_str().unwrap();
        assert!(why.starts_with(&format!("{label} by the model: ")), "{why}");
        // The first figure shown is the label's: the figures decided.
        let odds = &v["fallback"]["because"]["odds"];
        let top = (0..3)
            .max_by(|a, b| odds[*a].as_f64().unwrap().total_cmp(&odds[*b].as_f64().unwrap()))
            .unwrap();
        assert_eq!(["ROUTINE", "TASK", "INCIDENT"][top], label, "{v}");
    }
    let out = sb.run(&["classify", "x", "--no-llm"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.starts_with("ROUTINE by the model: it knows no word of this post"),
        "{shown}"
    );
}
