//! Chat through the real binary: Mattermost posts become labels, tasks,
//! cards and thread replies, exactly once, across outages, deadlines and
//! crashes. Fakes of Mattermost, Ollama and Planka run on 127.0.0.1; MC is
//! the built-in ledger unless a test configures a fake command.
//!
//! Fault tests are named for their cell: `<dependency>_<fault>__<what holds>`.
#![allow(non_snake_case)]

use serde_json::Value;

use crate::support::agent::{text, Sandbox};
use crate::support::fault::{Fault, Match, Rule};
use crate::support::mattermost::{FakeMattermost, PostSpec};
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
    bot: String,
    channels: Vec<(String, String)>, // (team, channel id)
}

impl World {
    fn new() -> World {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["basic", "wizard"]);
        let agent = me.id;
        let alice = mm.add_user("alice", "pw");
        let john = mm.add_user("john", "pw");
        let bot = mm.add_bot("ci-bot");
        let members = [agent.as_str(), alice.as_str(), john.as_str(), bot.as_str()];
        let mut channels = Vec::new();
        for team in ["basic", "wizard"] {
            let tid = mm.add_team(team, &members);
            channels.push((team.to_string(), mm.add_channel(&tid, "ops", &members)));
        }
        let llm = b.ollama();
        // The model answers like a sensible classifier: by a keyword in the message.
        llm.answer_with(|msg| {
            let m = msg.to_lowercase();
            if m.contains("down") || m.contains("502") {
                "INCIDENT".into()
            } else if m.contains("please") {
                "TASK".into()
            } else {
                "ROUTINE".into()
            }
        });
        let planka = b.planka(&[("wizard", "Wizard", "Inbox"), ("basic", "Basic", "Inbox")]);
        let sb = b.sandbox();
        World {
            mm,
            llm,
            planka,
            sb,
            agent,
            alice,
            john,
            bot,
            channels,
        }
    }

    fn channel(&self, team: &str) -> &str {
        &self.channels.iter().find(|(t, _)| t == team).unwrap().1
    }

    fn say(&self, team: &str, message: &str) -> String {
        self.mm.post(self.channel(team), &self.alice, message)
    }

    fn run(&self) -> std::process::Output {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
        out
    }

    fn replies_to(&self, post_id: &str) -> Vec<String> {
        self.mm
            .tagged_replies(&self.agent, post_id)
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    fn stage(&self, name: &str) -> Value {
        let st = self.sb.state_json();
        st["last_cycle"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

#[test]
fn posts_become_tagged_tasks_labelled_cards_and_thread_replies_once() {
    let w = World::new();
    let task = w.say("wizard", "please add a DNS record for shop.example.com");
    let incident = w.say("basic", "planka is down, 502 on every page");
    let routine = w.say("wizard", "thanks, looks good now");
    w.run();

    let tasks = w.sb.ledger_tasks();
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    let by_source = |id: &str| tasks.iter().find(|t| t["source"] == id).cloned().unwrap();
    let t1 = by_source(&task);
    assert_eq!(
        (t1["tag"].as_str(), t1["priority"].as_str()),
        (Some("BILLABLE"), Some("NORMAL")),
        "{t1}"
    );
    let t2 = by_source(&incident);
    assert_eq!(
        (t2["tag"].as_str(), t2["priority"].as_str()),
        (Some("INTERNAL"), Some("HIGH")),
        "{t2}"
    );
    assert_eq!(t1["owner"], "ops");

    // One card per task, carrying the BILLABLE/INTERNAL label.
    let cards = w.planka.cards();
    assert_eq!(cards.len(), 2, "{cards:#?}");
    let mut labels: Vec<String> = cards
        .iter()
        .flat_map(|c| w.planka.label_names_of(c["id"].as_str().unwrap()))
        .collect();
    labels.sort();
    assert_eq!(labels, ["BILLABLE", "INTERNAL"]);

    // Replies in the thread, naming the task; none for ROUTINE.
    let r = w.replies_to(&task);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0].contains(t1["id"].as_str().unwrap()),
        "reply must name the task: {}",
        r[0]
    );
    assert_eq!(w.replies_to(&incident).len(), 1);
    assert!(w.replies_to(&routine).is_empty());
    let reply =
        w.mm.posts()
            .into_iter()
            .find(|p| p.props.get("ops_agent_reply_to").and_then(Value::as_str) == Some(&task))
            .unwrap();
    assert_eq!(reply.root_id, task, "the reply goes into the post's thread");

    // The LLM decided, and the log says so; no secret ever reaches it.
    let log = w.sb.log_text();
    for (name, secret) in &w.sb.env {
        assert!(!log.contains(secret.as_str()), "{name} leaked into the log");
    }
    let state = std::fs::read_to_string(w.sb.state()).unwrap();
    assert!(
        !state.contains(&w.sb.env[0].1),
        "the Mattermost token leaked into the state file"
    );
    assert!(
        log.contains("path=\"llm\"") || log.contains("path=llm"),
        "{log}"
    );

    // Five minutes later, a second cycle sees only the agent's own replies
    // (inside its overlap window): nothing twice.
    w.mm.advance_clock(300_000);
    let before = w.mm.posts().len();
    w.run();
    assert_eq!(w.sb.ledger_tasks().len(), 2);
    assert_eq!(w.planka.cards().len(), 2);
    assert_eq!(w.mm.posts().len(), before, "no second reply");
    // The next cycle, with nothing new in the overlap window either,
    // costs one request per team.
    w.mm.advance_clock(300_000);
    w.run();
    let st = w.sb.state_json();
    assert_eq!(
        st["last_cycle"]["counts"]["mm_requests"], 2,
        "{}",
        st["last_cycle"]
    );
    assert_eq!(st["last_cycle"]["counts"]["posts_new"], 0);
}

#[test]
fn a_reply_that_forgets_the_task_gets_the_reference_on_a_line_of_its_own() {
    let w = World::new();
    // The label, then a reply that names no task.
    w.llm.push_answers(&["TASK", "Understood, we are on it."]);
    let post = w.say(
        "wizard",
        "please rotate the TLS certificate of shop.example.com",
    );
    w.run();
    let task = w.sb.ledger_tasks()[0]["id"].as_str().unwrap().to_string();
    let r = w.replies_to(&post);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0].starts_with("Understood, we are on it.\n\n(TASK: ")
            && r[0].contains(&task)
            && r[0].ends_with(')'),
        "{:?}",
        r[0]
    );
}

#[test]
fn skipped_authors_and_kinds_are_never_handled_and_a_normal_post_is() {
    let w = World::new();
    let ch = w.channel("wizard").to_string();
    // john is on the default ignore list; ci-bot is a bot account.
    let ignored = w.mm.post(&ch, &w.john, "please deploy the hotfix");
    let from_bot = w.mm.post(&ch, &w.bot, "please restart the runner");
    let spec = |message: &str| PostSpec {
        channel_id: ch.clone(),
        user_id: w.alice.clone(),
        message: message.into(),
        ..Default::default()
    };
    let mut hook_spec = spec("please check the webhook");
    hook_spec.props.insert("from_webhook".into(), "true".into());
    let hook = w.mm.post_spec(hook_spec);
    let mut system_spec = spec("alice joined the channel, please welcome");
    system_spec.kind = "system_join_channel".into();
    let system = w.mm.post_spec(system_spec);
    let deleted = w.say("wizard", "please remove user bob");
    w.mm.delete(&deleted);
    let own = w.mm.post(&ch, &w.agent, "please ignore me, I am the agent");
    // The positive case, in the same run: alice asking what john asked.
    let normal = w.say("wizard", "please deploy the hotfix");
    w.run();
    for id in [&ignored, &from_bot, &hook, &system, &deleted, &own] {
        assert!(
            w.replies_to(id).is_empty(),
            "post {id} must not be answered"
        );
    }
    assert_eq!(w.replies_to(&normal).len(), 1, "alice's post is answered");
    let tasks = w.sb.ledger_tasks();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["source"], normal.as_str(), "{tasks:#?}");
}

#[test]
fn a_crash_after_replying_before_saving_state_repeats_nothing() {
    let w = World::new();
    w.run(); // first run: cursor set
    let before = std::fs::read(w.sb.state()).unwrap();
    let post = w.say("wizard", "please rotate the backup credentials");
    w.run();
    assert_eq!(w.replies_to(&post).len(), 1);
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    // The process "died" after replying, before its state reached disk.
    std::fs::write(w.sb.state(), &before).unwrap();
    w.run();
    assert_eq!(
        w.replies_to(&post).len(),
        1,
        "no second reply after a crash"
    );
    assert_eq!(w.sb.ledger_tasks().len(), 1, "no second task after a crash");
    // Who the agent is comes from the state's cache after the first cycle.
    let me =
        w.mm.requests()
            .iter()
            .filter(|r| r.path == "/api/v4/users/me")
            .count();
    assert_eq!(me, 1, "users/me asked once");
    assert_eq!(w.planka.cards().len(), 1, "no second card after a crash");
}

#[test]
fn an_edited_old_post_is_not_handled_again() {
    let w = World::new();
    let post = w.say("basic", "please add bob to the vpn group");
    w.run();
    w.mm.edit(&post, "please add bob and carol to the vpn group");
    w.mm.react(&post);
    w.run();
    assert_eq!(w.replies_to(&post).len(), 1);
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}

#[test]
fn mattermost_down_skips_chat_keeps_the_cursor_and_still_checks_health() {
    let w = World::new();
    w.run();
    let cursor = w.sb.state_json()["last_check_ms"].as_i64().unwrap();
    let post = w.say("wizard", "please renew the TLS cert");
    w.mm.set_fault(Fault::Refuse);
    let out = w.sb.run(&["run-once"]);
    assert!(
        out.status.success(),
        "exit 0 when Mattermost is down: {}",
        text(&out)
    );
    assert_eq!(w.stage("mattermost")["outcome"], "degraded");
    assert_eq!(w.stage("health")["outcome"], "ok");
    assert_eq!(
        w.sb.state_json()["last_check_ms"].as_i64().unwrap(),
        cursor,
        "cursor must not move"
    );
    w.mm.clear_fault();
    w.run();
    assert_eq!(
        w.replies_to(&post).len(),
        1,
        "the post is handled once Mattermost is back"
    );
}

#[test]
fn ollama_down_falls_back_to_keywords_and_a_template_reply() {
    let w = World::new();
    w.llm.set_fault(Fault::Refuse);
    let post = w.say("wizard", "can you please set up a staging database");
    w.run();
    let tasks = w.sb.ledger_tasks();
    assert_eq!(tasks.len(), 1, "keyword rules still file the task");
    let r = w.replies_to(&post);
    assert_eq!(r.len(), 1);
    assert!(r[0].contains(tasks[0]["id"].as_str().unwrap()), "{}", r[0]);
    let log = w.sb.log_text();
    assert!(log.contains("path=\"fallback\""), "{log}");
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(w.sb.stats()).unwrap()).unwrap();
    assert_eq!(stats["counters"]["classified_fallback"], 1, "{stats}");
    assert_eq!(stats["counters"]["fallback_part_model"], 1, "{stats}");
    assert_eq!(stats["counters"]["fallback_unreachable"], 1, "{stats}");
}

#[test]
fn mc_down_keeps_the_post_pending_and_the_next_run_creates_exactly_one_task() {
    let mut w = World::new();
    let flag = w.sb.path("mc-fail");
    std::fs::write(&flag, "1").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mc/record.sh");
    w.sb.extra += &format!(
        "\n[mc]\ncommand = [\"{script}\", \"create\", \"--title\", \"{{title}}\", \"--source\", \"{{source}}\"]\n\
         pass_env = [\"MC_ARGV_FILE\", \"MC_FAIL_FLAG\"]\n"
    );
    w.sb.env.push((
        "MC_ARGV_FILE".into(),
        w.sb.path("argv").display().to_string(),
    ));
    w.sb.env
        .push(("MC_FAIL_FLAG".into(), flag.display().to_string()));
    w.run();
    let post = w.say(
        "wizard",
        "please add \"$(rm -rf /)\" `whoami` as a literal title",
    );
    w.run();
    assert!(w.replies_to(&post).is_empty(), "no reply without a task");
    assert_eq!(
        w.stage("tasks")["outcome"],
        "degraded",
        "{}",
        w.stage("tasks")
    );
    std::fs::remove_file(&flag).unwrap();
    w.run();
    assert_eq!(w.replies_to(&post).len(), 1);
    let argv = std::fs::read(w.sb.path("argv")).unwrap_or_default();
    let calls = String::from_utf8_lossy(&argv).matches("create").count();
    assert_eq!(
        calls,
        1,
        "exactly one successful MC call: {:?}",
        String::from_utf8_lossy(&argv)
    );
}

#[test]
fn planka_down_gives_the_task_now_and_the_card_next_run() {
    let w = World::new();
    w.planka.set_fault(Fault::Refuse);
    let post = w.say("wizard", "please add a redirect from /old to /new");
    w.run();
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    assert_eq!(
        w.replies_to(&post).len(),
        1,
        "the reply does not wait for the card"
    );
    assert!(w.planka.cards().is_empty());
    // Planka is optional: a card that could not be made is the tasks
    // stage's fallback (shown, named), not a degraded cycle.
    let stage = |name: &str| {
        let st = w.sb.state_json();
        st["last_cycle"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(stage("tasks")["outcome"], "ok", "{}", stage("tasks"));
    let last = w.sb.state_json()["last_cycle"].clone();
    assert!(
        last["fallbacks"][0]["stage"] == "tasks"
            && last["fallbacks"][0]["why"]
                .as_str()
                .is_some_and(|w| w.contains("1 card(s) not made")),
        "{last}"
    );
    assert!(
        stage("tasks")["detail"].as_str().unwrap().contains("card"),
        "the Planka error is in the stage's detail: {}",
        stage("tasks")
    );
    w.planka.clear_fault();
    w.sb.make_outbox_due();
    w.run();
    assert_eq!(w.planka.cards().len(), 1);
    assert_eq!(stage("tasks")["outcome"], "ok", "{}", stage("tasks"));
    w.run();
    assert_eq!(w.planka.cards().len(), 1, "exactly one card");
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}

#[test]
fn ollama_hang__the_first_timeout_opens_the_breaker_and_every_post_is_answered() {
    let mut w = World::new();
    w.run();
    let posts: Vec<String> = (0..3)
        .map(|i| w.say("wizard", &format!("please add user number {i}")))
        .collect();
    w.llm.set_fault(Fault::Hang);
    let extra = w.sb.extra.clone();
    w.sb.extra = format!("{extra}\n[agent]\ndeadline_secs = 8\n");
    w.run();
    // One call waited out its timeout; every other post went by keywords
    // and templates, and all of them were answered in this cycle.
    assert_eq!(w.llm.requests().len(), 1, "{:?}", w.llm.requests());
    for p in &posts {
        assert_eq!(w.replies_to(p).len(), 1, "post {p} answered exactly once");
    }
    assert_eq!(w.sb.ledger_tasks().len(), 3);
    let st = w.sb.state_json();
    let classify = st["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "classify")
        .unwrap()
        .clone();
    // The LLM is optional: stopped, it is the stage's fallback (shown,
    // named), not a degraded stage.
    assert_eq!(classify["outcome"], "ok", "{classify}");
    assert!(
        classify["detail"].as_str().unwrap().contains("LLM stopped"),
        "{classify}"
    );
    let fallback = &st["last_cycle"]["fallbacks"][0];
    assert_eq!(fallback["stage"], "classify", "{}", st["last_cycle"]);
    assert!(
        fallback["why"]
            .as_str()
            .unwrap()
            .starts_with("the LLM stopped for this cycle (timeout)"),
        "{fallback}"
    );

    w.llm.clear_fault();
    w.sb.extra = extra;
    w.run();
    for p in &posts {
        assert_eq!(w.replies_to(p).len(), 1, "post {p} still answered once");
    }
    assert_eq!(w.sb.ledger_tasks().len(), 3);
}

#[test]
fn a_deadline_cut_ends_the_cycle_in_time_and_the_next_one_finishes_each_post_once() {
    let mut w = World::new();
    w.run();
    let posts: Vec<String> = (0..6)
        .map(|i| w.say("wizard", &format!("please add user number {i}")))
        .collect();
    // Every post to Mattermost (the replies) takes 1.5 s: six do not fit.
    w.mm.server().add_rule(
        Rule::new(Fault::Slow(std::time::Duration::from_millis(1500)))
            .when(Match::post_to("/api/v4/posts")),
    );
    let extra = w.sb.extra.clone();
    w.sb.extra = format!("{extra}\n[agent]\ndeadline_secs = 4\n");
    let started = std::time::Instant::now();
    w.run();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(6),
        "cut at the deadline: {took:?}"
    );
    let st = w.sb.state_json();
    assert_eq!(
        st["last_cycle"]["deadline_hit"], true,
        "{}",
        st["last_cycle"]
    );
    let answered = posts.iter().filter(|p| w.replies_to(p).len() == 1).count();
    assert!(
        answered < posts.len(),
        "the cut left work: {answered} answered"
    );

    w.mm.server().clear_rules();
    w.sb.extra = extra;
    w.run();
    for p in &posts {
        assert_eq!(w.replies_to(p).len(), 1, "post {p} answered exactly once");
    }
    assert_eq!(w.sb.ledger_tasks().len(), posts.len(), "one task per post");
    assert_eq!(w.planka.cards().len(), posts.len(), "one card per post");
}

#[test]
fn a_deadline_that_leaves_no_room_for_the_llm_still_classifies_by_keywords() {
    let mut w = World::new();
    w.run();
    let post = w.say("wizard", "please add a user for the new designer");
    // 2.5 s of deadline, half of it kept for health: no 2 s LLM call fits.
    let extra = w.sb.extra.clone();
    w.sb.extra = format!("{extra}\n[agent]\ndeadline_secs = 2.5\n");
    w.run();
    assert!(
        w.llm.chat_requests().is_empty(),
        "no call that cannot finish"
    );
    assert_eq!(w.replies_to(&post).len(), 1, "the post is handled anyway");
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}

/// A deadline of 3 s leaves the chat half 1.5 s, less than the world's 2 s
/// classification timeout (as 30 s leaves 17 s, less than the default
/// 20 s): `config check` says so (with the deadline that would do), and
/// the cycle names the real reason (no time, not "no LLM configured"), as
/// the classify stage's fallback.
#[test]
fn a_deadline_too_short_for_the_llm_is_warned_and_named_as_the_reason() {
    let mut w = World::new();
    w.run();
    let extra = w.sb.extra.clone();
    w.sb.extra = format!("{extra}\n[agent]\ndeadline_secs = 3\n");
    let out = w.sb.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config warning: agent.deadline_secs = 3 leaves 1.5 s for chat")
            && err.contains("less than ollama.classify_timeout_secs = 2:")
            && err.contains("Raise agent.deadline_secs to at least 4,"),
        "{err}"
    );
    let post = w.say("wizard", "please add a user for the new designer");
    w.run();
    assert!(
        w.llm.chat_requests().is_empty(),
        "no call that cannot finish"
    );
    assert_eq!(w.replies_to(&post).len(), 1, "the post is handled anyway");
    let labelled = w.sb.audit_events("post_classified");
    let mine: Vec<_> = labelled.iter().filter(|e| e["post"] == post).collect();
    assert_eq!(mine.len(), 1, "{labelled:#?}");
    assert_eq!(
        mine[0]["fallback"], "no_time",
        "the true reason: {}",
        mine[0]
    );
    let st = w.sb.state_json();
    let why = st["last_cycle"]["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["stage"] == "classify")
        .unwrap_or_else(|| panic!("{}", st["last_cycle"]))["why"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.starts_with(
            "no LLM call fits: the chat half of agent.deadline_secs has 1.5 s, less than \
             ollama.classify_timeout_secs (2"
        ),
        "{why}"
    );
    assert_eq!(st["last_cycle"]["stages"][1]["outcome"], "ok");
    // The default deadline has no such warning.
    w.sb.extra = extra;
    let out = w.sb.run(&["config", "check"]);
    assert!(out.stderr.is_empty(), "{}", text(&out));
}

#[test]
fn the_agents_own_replies_do_not_make_a_channel_active_and_any_other_post_does() {
    let w = World::new();
    w.run();
    let first = w.say("wizard", "please add a DNS record for shop.example.com");
    w.say("basic", "please rotate the staging password");
    w.run();
    assert_eq!(w.replies_to(&first).len(), 1);
    let requests = |w: &World| w.sb.state_json()["last_cycle"]["counts"]["mm_requests"].clone();

    // Only the agent's replies moved the two channels: one listing per team.
    w.run();
    assert_eq!(requests(&w), 2, "idle right after busy");

    // A person's post in a quiet channel is read and answered once.
    let next = w.say("wizard", "please add a redirect from /old to /new");
    w.run();
    assert_eq!(
        w.replies_to(&next).len(),
        1,
        "a new post in a quiet channel"
    );
    // A reply in the agent's own thread counts too (it bumps the count).
    let reply = w.mm.reply(&first, &w.alice, "please also add www");
    w.run();
    assert!(
        w.sb.state_json()["mattermost"]["handled"]
            .get(&reply)
            .is_some(),
        "a thread reply in a quiet channel is read\n{}",
        w.sb.log_text()
    );
    w.run();
    assert_eq!(requests(&w), 2, "quiet again");
}

#[test]
fn replies_are_composed_with_the_configured_concurrency_and_each_posted_once() {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["wizard"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("wizard", &[&me.id, &alice]);
    let channel = mm.add_channel(&team, "dev", &[&me.id, &alice]);
    let llm = b.ollama();
    llm.answer_with(|_| "TASK".into());
    b.line("ollama", "concurrency = 3");
    let sb = b.sandbox();
    let posts: Vec<String> = (0..6)
        .map(|i| mm.post(&channel, &alice, &format!("please add user number {i}")))
        .collect();
    // The six classifications pass; the reply calls are held.
    let hold = llm.server().hold_after(6, Match::post("/api/chat"));
    let mut child = sb.command(&["run-once"]).spawn().unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while hold.arrived_count() < 3 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Give a fourth call the chance to arrive, which it must not.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let waiting = hold.arrived_count();
    hold.release();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(waiting, 3, "reply calls in flight at once");
    for p in &posts {
        assert_eq!(mm.tagged_replies(&me.id, p).len(), 1, "post {p}");
    }
    assert!(llm.server().peak_in_flight() <= 3);
}

#[test]
fn a_thousand_posts_across_fifty_channels_in_four_teams_are_handed_over_once() {
    let mm = FakeMattermost::start_in_background();
    mm.set_shuffle(true); // `since` answers come in no particular order, like the server's
    let agent = mm.add_user("opsbot", "agent-pw");
    let alice = mm.add_user("alice", "pw");
    let token = mm.add_token(&agent);
    let members = [agent.as_str(), alice.as_str()];
    let mut channels = Vec::new();
    for team in ["basic", "wizard", "rendrom", "riad"] {
        let tid = mm.add_team(team, &members);
        for c in 0..13 {
            if channels.len() < 50 {
                channels.push(mm.add_channel(&tid, &format!("ch-{c}"), &members));
            }
        }
    }
    // One channel gets 300 posts, so with the others the burst crosses the
    // server's 1,000-row `since` cap for nobody but still tests ordering.
    let mut ids = Vec::new();
    for i in 0..1000 {
        let ch = if i < 300 {
            &channels[0]
        } else {
            &channels[i % 50]
        };
        let tag = quiet_tag(i);
        ids.push(mm.post(ch, &alice, &format!("status note {tag}: all quiet")));
    }
    let mut sb = Sandbox::new();
    sb.env.push(("OPS_AGENT_MM_TOKEN".into(), token));
    // The model says ROUTINE to everything: nothing to file or answer, and
    // it counts the posts it was asked about.
    let llm = FakeOllama::start_in_background();
    llm.answer("ROUTINE");
    sb.extra = format!(
        "[mattermost]\nurl = \"{}\"\n[ollama]\nurl = \"{}\"\n",
        mm.url(),
        llm.url()
    );
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let st = sb.state_json();
    assert_eq!(
        st["last_cycle"]["counts"]["posts_new"], 1000,
        "{}",
        st["last_cycle"]
    );
    assert_eq!(st["last_cycle"]["counts"]["posts_handled"], 1000);
    let handled = st["mattermost"]["handled"].as_object().unwrap();
    for id in &ids {
        assert!(handled.contains_key(id), "post {id} not handled");
    }
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let st = sb.state_json();
    assert_eq!(
        st["last_cycle"]["counts"]["posts_new"], 0,
        "nothing handed over twice"
    );
    assert_eq!(
        st["last_cycle"]["counts"]["mm_requests"], 4,
        "idle after busy: one channel listing per team"
    );
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(sb.stats()).unwrap()).unwrap();
    assert_eq!(stats["counters"]["label_routine"], 1000, "{stats}");
    assert_eq!(stats["counters"]["posts_handled"], 1000, "{stats}");
    // The fake's count: each post's label was asked for once, over both cycles.
    let asks = llm.label_asks();
    for i in 0..1000 {
        let text = format!("status note {}: all quiet", quiet_tag(i));
        assert_eq!(asks.get(&text), Some(&1), "post {i}: labels asked");
    }
    assert_eq!(asks.len(), 1000, "nothing else was labelled");
}

/// `i` (below 160,000) as a vowel-free tag: a number like 500 would
/// rightly read as an HTTP error, and letters could spell "add" or "fix".
fn quiet_tag(i: usize) -> String {
    const C: &[u8] = b"bcdfghjklmnpqrstvwxz";
    [i / 8000, (i / 400) % 20, (i / 20) % 20, i % 20]
        .iter()
        .map(|d| C[*d] as char)
        .collect()
}

/// A bulk import: `count` posts over `distinct_ms` milliseconds in one
/// channel, one in a hundred a request, then one ordinary post; all handled
/// once, over as many cycles as they take, and none again after. Counted
/// on the fakes' side too: the model was asked for each post's label once,
/// and each request has one reply in its thread and one task.
fn burst_is_handled_once(count: usize, distinct_ms: usize) {
    let w = World::new();
    // The server's capped `since` answer is the same subset every time
    // (heap order), so posts the paging skips would stay lost.
    w.mm.set_shuffle(false);
    w.run();
    let channel = w.channel("wizard").to_string();
    let message = |i: usize| {
        let tag = quiet_tag(i);
        if i % 100 == 0 {
            format!("please add imported user {tag} to the vpn group")
        } else {
            format!("imported note {tag}: morning all")
        }
    };
    let burst =
        w.mm.post_burst(&channel, &w.alice, count, distinct_ms, message);
    let later_text = "please add a redirect from /old to /new";
    let later = w.say("wizard", later_text);
    let handled = |w: &World| -> u64 {
        let stats: Value =
            serde_json::from_str(&std::fs::read_to_string(w.sb.stats()).unwrap()).unwrap();
        stats["counters"]["posts_handled"].as_u64().unwrap_or(0)
    };
    for _ in 0..5 {
        w.run();
        if handled(&w) as usize > count {
            break;
        }
    }
    assert_eq!(
        handled(&w) as usize,
        count + 1,
        "every post of the burst and the later one"
    );
    assert_eq!(w.replies_to(&later).len(), 1, "the channel is not stuck");
    w.run();
    assert_eq!(handled(&w) as usize, count + 1, "nothing twice");
    assert!(
        !w.sb.log_text().contains("did not reach the cursor"),
        "{}",
        w.sb.log_text()
    );
    // The fakes' count, after the cycle that must change nothing.
    let asks = w.llm.label_asks();
    let texts = (0..count).map(message).chain([later_text.to_string()]);
    for (i, text) in texts.enumerate() {
        assert_eq!(
            asks.get(&text),
            Some(&1),
            "post {i} ({text:?}): labels asked"
        );
    }
    assert_eq!(asks.len(), count + 1, "nothing else was labelled");
    let requests: Vec<&String> = burst.iter().step_by(100).chain([&later]).collect();
    for id in &requests {
        assert_eq!(w.replies_to(id).len(), 1, "post {id}: one reply");
        assert_eq!(w.sb.ledger_tasks_for(id), 1, "post {id}: one task");
    }
    assert_eq!(
        w.sb.ledger_tasks().len(),
        requests.len(),
        "a task for every request and nothing else"
    );
    eprintln!(
        "{count} posts: {} labels asked, {} requests answered",
        asks.values().sum::<usize>(),
        requests.len()
    );
}

#[test]
fn mm_burst_of_1200_posts_over_5_ms__all_handled_once_and_the_channel_moves_on() {
    burst_is_handled_once(1200, 5);
}

#[test]
fn mm_burst_of_10000_posts_over_5_ms__all_handled_once_and_the_channel_moves_on() {
    burst_is_handled_once(10_000, 5);
}
