//! SIGKILL at every stage boundary, through the real binary: a fake holds
//! the request that marks the boundary, the test kills the agent while it
//! waits, and later cycles must finish the work exactly once. "Dropped"
//! cells kill the agent before the held request is served (the fake drops
//! it); "committed" cells let the first matching request be served and
//! hold the next, so the agent dies with a side effect done and not yet
//! saved in its state.
//!
//! What holds in every cell: each chat post ends with one task, one card
//! and one reply; the container that stays down gets no more restarts than
//! `max_attempts_per_hour` (an attempt is counted before it runs, so one
//! killed in flight still counts); the incident has one alert, one task
//! and one card; every post is still watched for corrections.
#![allow(non_snake_case)]

use std::time::Duration;

use crate::support::agent::{text, Sandbox};
use crate::support::docker::{FakeContainer, FakeDocker, OnRestart};
use crate::support::fault::{Hold, Match};
use crate::support::mattermost::FakeMattermost;
use crate::support::ollama::FakeOllama;
use crate::support::planka::FakePlanka;
use crate::support::world::WorldBuilder;

/// The fix budget for `web`, which a restart never brings back.
const MAX_ATTEMPTS: usize = 2;

struct World {
    mm: FakeMattermost,
    llm: FakeOllama,
    planka: FakePlanka,
    docker: FakeDocker,
    sb: Sandbox,
    agent: String,
    alerts: String,
    posts: Vec<String>,
}

fn world() -> World {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
    let alice = mm.add_user("alice", "pw");
    let members = [me.id.as_str(), alice.as_str()];
    let team = mm.add_team("basic", &members);
    let dev = mm.add_channel(&team, "dev", &members);
    let alerts = mm.add_channel(&team, "ops-alerts", &members);
    let llm = b.ollama();
    llm.answer_with(|m| {
        if m.contains("down") {
            "INCIDENT".into()
        } else {
            "TASK".into()
        }
    });
    let planka = b.planka(&[("basic", "Basic", "Inbox")]);
    let docker = b.docker();
    docker.add(FakeContainer::exited("web").on_restart(OnRestart::StaysDown));
    b.toml(&format!(
        "[escalation]\non_call = [\"alice\"]\n\n\
         [fix]\nmax_attempts_per_hour = {MAX_ATTEMPTS}\n\n\
         [[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\n\
         fail_after = 1\nrecover_after = 1\n\
         fix = {{ action = \"restart_container\", settle_secs = 0, start_grace_secs = 0 }}\n"
    ));
    let posts = vec![
        mm.post(&dev, &alice, "please add a redirect from /old to /new"),
        mm.post(&dev, &alice, "the shop is down, 502 on checkout"),
    ];
    World {
        mm,
        llm,
        planka,
        docker,
        sb: b.sandbox(),
        agent: me.id,
        alerts,
        posts,
    }
}

impl World {
    /// Starts a cycle, waits until `hold` has stopped a request, kills the
    /// agent with SIGKILL, then opens the gate (the fake drops the orphaned
    /// request).
    fn kill_at(&self, hold: &Hold) {
        let mut child = self.sb.command(&["run-once"]).spawn().unwrap();
        let reached = hold.wait_arrived(Duration::from_secs(30));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        hold.release();
        // Incident keys carry the second they opened: a key lost in the
        // crash would be made again with a different one.
        std::thread::sleep(Duration::from_millis(1100));
        assert!(
            reached,
            "the boundary was never reached\n{}",
            self.sb.log_text()
        );
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the kill landed mid-cycle: {status}"
        );
    }

    /// Cycles after the crash; the card outbox's backoff is made due
    /// between them.
    fn heal(&self) {
        for _ in 0..3 {
            let out = self.sb.run(&["run-once"]);
            assert!(out.status.success(), "{}", text(&out));
            self.sb.make_outbox_due();
        }
    }

    fn assert_exactly_once(&self) {
        let log = self.sb.log_text();
        let posts = self.mm.posts();
        for p in &self.posts {
            let replies = self.mm.tagged_replies(&self.agent, p).len();
            assert_eq!(replies, 1, "post {p}: one reply\n{log}");
            assert_eq!(self.sb.ledger_tasks_for(p), 1, "post {p}: one task\n{log}");
        }
        // Each post stays correctable: watched, in the file or the state.
        let watched = self.sb.watched_posts();
        for p in &self.posts {
            assert!(
                watched.contains(p),
                "post {p} is watched: {watched:?}\n{log}"
            );
        }
        let alerts = posts
            .iter()
            .filter(|p| p.channel_id == self.alerts && p.root_id.is_empty())
            .count();
        assert_eq!(alerts, 1, "one alert\n{log}");
        let incident_tasks = self
            .sb
            .ledger_tasks()
            .into_iter()
            .filter(|t| {
                t["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("web:web@"))
            })
            .count();
        assert_eq!(incident_tasks, 1, "one incident task\n{log}");
        assert_eq!(
            self.planka.cards().len(),
            self.posts.len() + 1,
            "one card per post and one for the incident\n{log}"
        );
        let restarts = self.docker.restarts("web");
        assert!(
            (1..=MAX_ATTEMPTS).contains(&restarts),
            "{restarts} restarts, at most {MAX_ATTEMPTS}\n{log}"
        );
    }
}

/// One cell: kill at the gate `hold` builds, heal, check.
fn cell(hold: impl Fn(&World) -> Hold) {
    let w = world();
    let gate = hold(&w);
    w.kill_at(&gate);
    drop(gate);
    w.heal();
    w.assert_exactly_once();
}

fn mm_post() -> Match {
    Match::post_to("/api/v4/posts")
}

fn card_post() -> Match {
    Match::post("/cards")
}

#[test]
fn killed_while_classifying__every_post_once_after() {
    cell(|w| w.llm.server().hold(Match::post("/api/chat")));
}

#[test]
fn killed_before_the_first_card__one_card_per_post_after() {
    cell(|w| w.planka.server().hold(card_post()));
}

#[test]
fn killed_after_the_first_card_committed__no_second_card() {
    cell(|w| w.planka.server().hold_after(1, card_post()));
}

#[test]
fn killed_before_the_first_reply__one_reply_per_post_after() {
    cell(|w| w.mm.server().hold(mm_post()));
}

#[test]
fn killed_after_the_first_reply_committed__no_second_reply() {
    cell(|w| w.mm.server().hold_after(1, mm_post()));
}

#[test]
fn killed_during_the_restart__the_attempt_still_counts() {
    cell(|w| w.docker.server().hold(Match::post("/restart")));
}

#[test]
fn killed_before_the_alert__one_alert_after() {
    // The two replies are served; the third post is the alert.
    cell(|w| w.mm.server().hold_after(2, mm_post()));
}

#[test]
fn killed_after_the_alert_committed__no_second_alert() {
    // The incident's card comes after its alert.
    cell(|w| w.planka.server().hold_after(2, card_post()));
}
