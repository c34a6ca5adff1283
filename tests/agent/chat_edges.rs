//! Edges of the chat half found by a hostile review, each through the
//! binary: quiet channels under a lagging read replica and with posts made
//! while the agent replies, and model calls in flight while a reply is
//! posted slowly. The first and third failed before their fixes.

use crate::support::agent::{text, Sandbox};
use crate::support::fault::{Fault, Match, Rule};
use crate::support::mattermost::FakeMattermost;
use crate::support::world::WorldBuilder;

struct Quiet {
    mm: FakeMattermost,
    _llm: crate::support::ollama::FakeOllama,
    sb: Sandbox,
    agent: String,
    alice: String,
    channel: String,
}

impl Quiet {
    fn new(extra: &[(&str, &str)]) -> Quiet {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["wizard"]);
        let alice = mm.add_user("alice", "pw");
        let team = mm.add_team("wizard", &[&me.id, &alice]);
        let channel = mm.add_channel(&team, "dev", &[&me.id, &alice]);
        let llm = b.ollama();
        llm.answer_with(|_| "TASK".into());
        for (section, line) in extra {
            b.line(section, line);
        }
        let sb = b.sandbox();
        Quiet {
            mm,
            _llm: llm,
            sb,
            agent: me.id,
            alice,
            channel,
        }
    }

    fn run(&self) {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    fn answered(&self, post: &str) -> usize {
        self.mm.tagged_replies(&self.agent, post).len()
    }
}

/// A post the channel listing already counts but a lagging read replica
/// does not return yet from the `since` read (Mattermost reads both from
/// replicas, round-robin): the channel must not be marked quiet with
/// counters that include the unseen post, or it is never read again.
#[test]
fn a_post_a_lagging_replica_did_not_return_is_read_once_it_catches_up() {
    let w = Quiet::new(&[]);
    w.run(); // first run: cursor
    let seen = w.mm.post(&w.channel, &w.alice, "please add user anna");
    let late = w.mm.post(&w.channel, &w.alice, "please add user bert");
    w.mm.lag(&late); // counted in the channel, not yet returned by reads
    w.run();
    assert_eq!(w.answered(&seen), 1);
    w.mm.catch_up();
    w.run();
    w.run();
    let st = w.sb.state_json();
    assert_eq!(
        w.answered(&late),
        1,
        "post {late} was never handed over; quiet marks: {}",
        st["mattermost"]["quiet"]
    );
}

/// The same story with the quiet marks removed from the state file between
/// cycles: the overlap window finds the post (the behaviour quiet marks
/// must keep).
#[test]
fn without_quiet_marks_the_overlap_window_finds_a_late_post() {
    let w = Quiet::new(&[]);
    w.run();
    let seen = w.mm.post(&w.channel, &w.alice, "please add user anna");
    let late = w.mm.post(&w.channel, &w.alice, "please add user bert");
    w.mm.lag(&late);
    w.run();
    assert_eq!(w.answered(&seen), 1);
    w.mm.catch_up();
    let mut st = w.sb.state_json();
    st["mattermost"]["quiet"] = serde_json::json!({});
    std::fs::write(w.sb.state(), serde_json::to_vec(&st).unwrap()).unwrap();
    w.run();
    assert_eq!(w.answered(&late), 1);
}

/// Replies composed concurrently: while one reply is posted to a slow
/// Mattermost, the other model calls in flight must keep being polled, or
/// their timers run on and an answer that arrived in 0.3 s is taken for a
/// timeout (the reply templated, the LLM breaker open for the cycle).
#[test]
fn model_calls_in_flight_keep_running_while_a_reply_is_posted_slowly() {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["wizard"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("wizard", &[&me.id, &alice]);
    let channel = mm.add_channel(&team, "dev", &[&me.id, &alice]);
    let llm = b.ollama();
    llm.answer_with(|_| "TASK".into());
    b.line("ollama", "concurrency = 2");
    b.llm_timeouts(1);
    let sb = b.sandbox();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let posts: Vec<String> = (0..2)
        .map(|i| mm.post(&channel, &alice, &format!("please add user number {i}")))
        .collect();
    // Every model answer takes 0.3 s (well inside the 1 s timeout); every
    // post to Mattermost takes 1.5 s.
    llm.server().add_rule(
        Rule::new(Fault::Slow(std::time::Duration::from_millis(300)))
            .when(Match::post("/api/chat")),
    );
    mm.server().add_rule(
        Rule::new(Fault::Slow(std::time::Duration::from_millis(1500)))
            .when(Match::post_to("/api/v4/posts")),
    );
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    for p in &posts {
        assert_eq!(mm.tagged_replies(&me.id, p).len(), 1, "post {p}");
    }
    let log = sb.log_text();
    assert!(
        !log.contains("Reply fell back to the template") && !log.contains("LLM breaker open"),
        "a 0.3 s model answer was treated as a timeout:\n{log}"
    );
}

/// A post (and a thread reply) made after the listing, while the agent's
/// own reply is in flight, makes the channel active next cycle
/// (`total_msg_count` is more than the mark).
#[test]
fn a_post_made_while_the_agent_replies_is_read_next_cycle() {
    let w = Quiet::new(&[]);
    w.run();
    let first = w.mm.post(&w.channel, &w.alice, "please add user anna");
    let hold = w.mm.server().hold(Match::post_to("/api/v4/posts"));
    let mut child = w.sb.command(&["run-once"]).spawn().unwrap();
    assert!(hold.wait_arrived(std::time::Duration::from_secs(20)));
    let during = w.mm.post(&w.channel, &w.alice, "please add user bert");
    let in_thread = w.mm.reply(&first, &w.alice, "please also add carla");
    hold.release();
    assert!(child.wait().unwrap().success());
    w.run();
    w.run();
    assert_eq!(w.answered(&first), 1);
    assert_eq!(w.answered(&during), 1, "{}", w.sb.log_text());
    assert_eq!(w.answered(&in_thread), 1, "{}", w.sb.log_text());
}

/// A channel read to its end while another team cannot be listed: the
/// cursor waits for that team, the channel does not. It keeps its own
/// `since`, its handled ids are forgotten within the cycle (a cycle's set
/// holds about one channel, not the cycle's posts), and its posts are not
/// handed over again, not even by a cycle killed after it, whose journal
/// alone knows what it handled.
#[test]
fn a_channel_read_whole_keeps_its_own_since_while_the_cursor_waits_and_a_kill_repeats_nothing() {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["wizard", "basic"]);
    let alice = mm.add_user("alice", "pw");
    let wizard = mm.add_team("wizard", &[&me.id, &alice]);
    let basic = mm.add_team("basic", &[&me.id, &alice]);
    let dev = mm.add_channel(&wizard, "dev", &[&me.id, &alice]);
    let ops = mm.add_channel(&basic, "ops", &[&me.id, &alice]);
    let llm = b.ollama();
    llm.answer_with(|_| "TASK".into());
    let sb = b.sandbox();
    let run = || {
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    };
    run(); // first run: cursor
    let cursor = sb.state_json()["last_check_ms"].clone();

    let mut posts: Vec<String> = (0..3)
        .map(|i| mm.post(&dev, &alice, &format!("please add user u{i}")))
        .collect();
    let held = mm.post(&ops, &alice, "please rotate the staging password");
    mm.advance_clock(300_000); // older than the overlap at the next cycle
    let listing = format!("/users/me/teams/{basic}/channels");
    mm.server()
        .add_rule(Rule::new(Fault::Status(500)).when(Match::get(&listing)));
    run();
    let st = sb.state_json();
    assert_eq!(
        st["last_check_ms"], cursor,
        "a team failed: the cursor waits"
    );
    let handled = &st["mattermost"]["handled"];
    for p in &posts {
        assert_eq!(mm.tagged_replies(&me.id, p).len(), 1, "post {p}");
        assert!(handled.get(p).is_none(), "{p} still in {handled}");
    }
    assert!(
        st["mattermost"]["channel_since"].get(&dev).is_some(),
        "{}",
        st["mattermost"]
    );

    // The next cycle reads the other team too and is killed on its reply,
    // after the channel's new post was handled.
    mm.server().clear_rules();
    posts.push(mm.post(&dev, &alice, "please add user u3"));
    mm.advance_clock(300_000);
    let gate = mm.server().hold_after(1, Match::post_to("/api/v4/posts"));
    let mut child = sb.command(&["run-once"]).spawn().unwrap();
    let reached = gate.wait_arrived(std::time::Duration::from_secs(30));
    child.kill().unwrap();
    child.wait().unwrap();
    gate.release();
    drop(gate);
    assert!(reached, "the reply was never held\n{}", sb.log_text());
    assert_eq!(mm.tagged_replies(&me.id, &posts[3]).len(), 1);

    run();
    run();
    posts.push(held);
    for p in &posts {
        assert_eq!(
            mm.tagged_replies(&me.id, p).len(),
            1,
            "post {p}: one reply\n{}",
            sb.log_text()
        );
    }
    assert_ne!(sb.state_json()["last_check_ms"], cursor, "the cursor moved");
}
