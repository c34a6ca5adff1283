//! The cut-over from the old daemon through the real binary: the first
//! cycle starts from the old daemon's state file, `{"last_check_ms": N}`
//! and nothing else (the runbook's shape), and must not handle again what
//! the old daemon handled.

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use crate::support::agent::{text, Sandbox};
use crate::support::mattermost::FakeMattermost;
use crate::support::world::WorldBuilder;

struct World {
    mm: FakeMattermost,
    sb: Sandbox,
    agent: String,
    alice: String,
    channel: String,
}

impl World {
    fn new() -> World {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["wizard"]);
        let alice = mm.add_user("alice", "pw");
        let team = mm.add_team("wizard", &[&me.id, &alice]);
        let channel = mm.add_channel(&team, "clients", &[&me.id, &alice]);
        let sb = b.sandbox();
        World {
            mm,
            sb,
            agent: me.id,
            alice,
            channel,
        }
    }

    /// A post by alice, and (when the old daemon answered it) the old
    /// daemon's reply in its thread: the same bot account, no tag.
    fn post(&self, message: &str, answered: bool) -> String {
        let id = self.mm.post(&self.channel, &self.alice, message);
        if answered {
            self.mm
                .reply(&id, &self.agent, "Filed as OPS-41; we are on it.");
        }
        id
    }

    /// The old daemon's state file: the cursor and nothing else.
    fn old_state(&self, cursor: i64) {
        std::fs::create_dir_all(self.sb.path("tmp")).unwrap();
        let body = serde_json::to_vec_pretty(&json!({ "last_check_ms": cursor })).unwrap();
        std::fs::write(self.sb.state(), body).unwrap();
        std::fs::set_permissions(self.sb.state(), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Posts by the agent's account in the channel (the old daemon's
    /// replies included).
    fn agent_posts(&self) -> usize {
        self.mm
            .posts()
            .iter()
            .filter(|p| p.user_id == self.agent)
            .count()
    }
}

/// The old daemon answered three requests inside the 120 s overlap before
/// its cursor and one more after it (it was stopped before it saved its
/// cursor); one request after the cursor is unanswered. The first cycle
/// files and answers that one only: before this was fixed it filed and
/// answered all five (four duplicates of each, in a client team).
#[test]
fn the_first_cycle_after_the_cut_over_handles_nothing_the_old_daemon_handled() {
    let w = World::new();
    let before: Vec<String> = (0..3)
        .map(|i| {
            w.post(
                &format!("please renew the TLS certificate of shop{i}.example.com"),
                true,
            )
        })
        .collect();
    w.post("thanks, all good here", false);
    let cursor = w.mm.now_ms();
    w.mm.advance_clock(1_000);
    let after_answered = w.post("please add a DNS record for docs.example.com", true);
    let open = w.post(
        "please add a redirect from /old to /new on example.com",
        false,
    );
    w.old_state(cursor);
    let agent_posts_before = w.agent_posts();
    assert_eq!(agent_posts_before, 4, "the old daemon's four replies");

    let out = w.sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));

    let sources: Vec<String> =
        w.sb.ledger_tasks()
            .iter()
            .filter_map(|t| t["source"].as_str().map(String::from))
            .collect();
    assert_eq!(
        sources,
        std::slice::from_ref(&open),
        "tasks filed: {sources:?}"
    );
    assert_eq!(
        w.agent_posts() - agent_posts_before,
        1,
        "one new reply, to the unanswered request"
    );
    assert_eq!(w.mm.tagged_replies(&w.agent, &open).len(), 1);
    for old in before.iter().chain([&after_answered]) {
        assert!(w.mm.tagged_replies(&w.agent, old).is_empty(), "{old}");
    }

    // The posts at or before the imported cursor were never handed over,
    // and a second cycle handles nothing more.
    let state = w.sb.state_json();
    let counts: &Value = &state["last_cycle"]["counts"];
    assert_eq!(counts["posts_handled"], 1, "{counts}");
    let out = w.sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.sb.ledger_tasks().len(), 1);
    assert_eq!(w.agent_posts() - agent_posts_before, 1);
}

/// A state file this agent wrote is not an import: a post that became
/// visible only after the cursor passed it (a lagging read replica) is
/// still found in the overlap and handled.
#[test]
fn a_cursor_this_agent_saved_keeps_the_overlap() {
    let w = World::new();
    let out = w.sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    w.mm.advance_clock(1_000);
    let late = w.post("please add a DNS record for api.example.com", false);
    w.mm.lag(&late);
    w.mm.advance_clock(1_000);
    let out = w.sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(w.mm.tagged_replies(&w.agent, &late).is_empty());
    w.mm.catch_up();
    w.mm.advance_clock(1_000);
    let out = w.sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.mm.tagged_replies(&w.agent, &late).len(), 1);
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}
