//! What the cycle counts is what it did, through the real binary: a reply
//! the server took while the cycle stopped waiting for its answer (the
//! deadline) is counted once, by the cycle that finds it in the thread.

use serde_json::Value;

use crate::support::agent::text;
use crate::support::fault::Match;
use crate::support::world::WorldBuilder;

#[test]
fn a_reply_sent_at_the_deadline_is_counted_once() {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("basic", &[&me.id, &alice]);
    let channel = mm.add_channel(&team, "ops", &[&me.id, &alice]);
    b.line("agent", "deadline_secs = 4");
    let mut sb = b.sandbox();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    mm.advance_clock(1_000);
    let post = mm.post(
        &channel,
        &alice,
        "please add a DNS record for shop.example.com",
    );
    mm.advance_clock(1_000);

    // The server takes the reply; its answer never comes in time.
    let held = mm.server().hold_answer(Match::post_to("/api/v4/posts"));
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(held.arrived_count(), 1, "the reply reached the server");
    held.release();
    drop(held);
    assert_eq!(mm.tagged_replies(&me.id, &post).len(), 1);

    sb.extra = sb.extra.replace("deadline_secs = 4", "deadline_secs = 240");
    mm.advance_clock(1_000);
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mm.tagged_replies(&me.id, &post).len(), 1, "no second reply");
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(sb.stats()).unwrap()).unwrap();
    assert_eq!(stats["counters"]["replies_posted"], 1, "{stats}");
}
