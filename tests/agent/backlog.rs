//! A channel with more new posts than a cycle reads, through the real
//! binary: it catches up over the next cycles, where each stopped, with
//! every human post handled exactly once, and `status` says how far it is.
//! (At full scale, 200,000 posts in one channel, this is the scale
//! benchmark's `backlog` scenario.)

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::support::agent::{text, Sandbox};
use crate::support::mattermost::FakeMattermost;
use crate::support::world::WorldBuilder;

/// Pages of 200 a channel is read by per cycle in these tests.
const PAGES: usize = 2;

struct World {
    mm: FakeMattermost,
    sb: Sandbox,
    agent: String,
    alice: String,
    bot: String,
    channel: String,
}

impl World {
    fn new() -> World {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["wizard"]);
        let alice = mm.add_user("alice", "pw");
        let bot = mm.add_bot("ci-bot");
        let team = mm.add_team("wizard", &[&me.id, &alice, &bot]);
        let channel = mm.add_channel(&team, "ci", &[&me.id, &alice, &bot]);
        b.line("mattermost", &format!("max_pages_per_channel = {PAGES}"));
        let sb = b.sandbox();
        World {
            mm,
            sb,
            agent: me.id,
            alice,
            bot,
            channel,
        }
    }

    fn cycle(&self) {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
        self.mm.advance_clock(300_000);
    }

    fn behind(&self) -> Vec<Value> {
        self.sb.state_json()["mattermost"]["behind"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn status(&self) -> String {
        let out = self.sb.run(&["status"]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// 1,500 posts by people and 300 by a CI bot (a third of them sharing three
/// milliseconds, as an import writes them) since the cursor, read two pages
/// per cycle: every cycle makes progress, `status` shows how much is left
/// and calls nothing overdue, and when the backlog is gone every human post
/// was handled once (one task and one reply for each post filed, every
/// request among them), none twice.
#[test]
fn a_channel_past_a_cycles_pages_catches_up_over_the_next_cycles_exactly_once() {
    catch_up(300_000);
}

/// The same posts written in the last seconds before the cycle: the next
/// cycle's overlap reads them again, more of them than its pages, and the
/// part it cannot read becomes a second backlog holding posts the first
/// cycle handled. None of them is handled twice.
#[test]
fn a_backlog_over_the_overlap_hands_over_nothing_twice() {
    catch_up(1_000);
}

/// Posts `age_ms` old when the cycle after them starts.
fn catch_up(age_ms: i64) {
    let w = World::new();
    w.cycle();
    let mut requests = BTreeSet::new();
    let mut bots = BTreeSet::new();
    let mut people = 0;
    for i in 0..1_800 {
        if i % 6 == 5 {
            bots.insert(w.mm.post(&w.channel, &w.bot, &format!("build {i} passed")));
            continue;
        }
        people += 1;
        if i % 25 == 0 {
            let text = format!("please add a redirect for shop{i}.example.com");
            requests.insert(w.mm.post(&w.channel, &w.alice, &text));
        } else {
            w.mm.post(&w.channel, &w.alice, &format!("status note {i}: all quiet"));
        }
    }
    let burst = w.mm.post_burst(&w.channel, &w.alice, 300, 3, |i| {
        format!("imported note {i}")
    });
    people += burst.len();
    w.mm.advance_clock(age_ms);

    w.cycle();
    let behind = w.behind();
    assert_eq!(behind.len(), 1, "{behind:?}");
    let status = w.status();
    let line = status
        .lines()
        .find(|l| l.starts_with("backlog") && l.contains("catching up:"))
        .unwrap_or_else(|| panic!("no catching-up line: {status}"));
    assert!(line.contains(" pages / ~"), "{line}");
    assert!(line.ends_with("posts left in wizard/ci"), "{line}");
    assert!(!status.contains("OVERDUE"), "{status}");

    let mut cycles = 1;
    let mut left = behind[0]["at"].clone();
    while !w.behind().is_empty() {
        w.cycle();
        cycles += 1;
        let now = w.behind().first().map(|b| b["at"].clone());
        assert_ne!(now.as_ref(), Some(&left), "cycle {cycles} made no progress");
        left = now.unwrap_or(Value::Null);
        assert!(
            cycles <= 2_100 / (200 * PAGES) + 2,
            "still behind after {cycles} cycles"
        );
    }

    // Every request: one task, one reply. (The fallback may take a note for
    // a request too; whatever it filed, it filed and answered once.)
    let sources: Vec<String> =
        w.sb.ledger_tasks()
            .iter()
            .filter_map(|t| t["source"].as_str().map(String::from))
            .collect();
    let distinct: BTreeSet<String> = sources.iter().cloned().collect();
    assert_eq!(sources.len(), distinct.len(), "a task filed twice");
    assert!(distinct.is_superset(&requests), "a request not filed");
    assert!(distinct.is_disjoint(&bots), "a bot's post filed");
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    for p in w.mm.posts().iter().filter(|p| p.user_id == w.agent) {
        if let Some(to) = p.props.get("ops_agent_reply_to").and_then(Value::as_str) {
            *replies.entry(to.to_string()).or_default() += 1;
        }
    }
    assert!(replies.values().all(|&n| n == 1), "a reply posted twice");
    assert_eq!(replies.keys().cloned().collect::<BTreeSet<_>>(), distinct);
    // Every human post was handled, once: the cumulative count is exact.
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(w.sb.stats()).unwrap()).unwrap();
    assert_eq!(stats["counters"]["posts_handled"], people as u64, "{stats}");
    // And the state keeps no trace of it.
    let state = w.sb.state_json();
    let handled = state["mattermost"]["handled"]
        .as_object()
        .map_or(0, |m| m.len());
    assert!(
        handled < 200,
        "{handled} handled ids kept after catching up"
    );
}
