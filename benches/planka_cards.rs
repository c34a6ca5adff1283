//! What a new card costs on an empty board and on a board of 10,000 and
//! 20,000 cards, against a real Planka 2.1.1 (the server of the real-Planka
//! tier: `.ci/planka-up.sh`, then export the three variables it prints).
//! Prints figures; asserts nothing about speed.
//!
//! ```text
//! eval "$(bash .ci/planka-up.sh)"
//! cargo bench --bench planka_cards
//! OPS_AGENT_BENCH_BIN=/path/to/ops-agent cargo bench --bench planka_cards   # another build
//! OPS_AGENT_BENCH_CARDS=0,20000 cargo bench --bench planka_cards            # other board sizes
//! OPS_AGENT_BENCH_LIST=todo cargo bench --bench planka_cards                # the cards in "To Do"
//! OPS_AGENT_BENCH_FROZEN=1 cargo bench --bench planka_cards                 # a frozen Planka
//! ```
//!
//! `OPS_AGENT_BENCH_FROZEN=1` measures instead one cycle of 30 new posts
//! with the real server stopped by SIGSTOP (it is continued after) and the
//! default `[planka] timeout_secs` and deadline: the replies posted, the
//! tasks filed and the cycle's time. It freezes the server for everyone,
//! so it is never part of the test tier.
//!
//! For each size, a board gets that many cards straight into its "Done"
//! list (`OPS_AGENT_BENCH_LIST=todo`: into "To Do", where the new cards go)
//! in the database (a name and a few lines of description each), then
//! the real binary runs against it with a fake Mattermost: one cycle that
//! files the first task (the board is read once here, for its lists and
//! labels), five cycles of one new task each (a card in a quiet cycle),
//! and one cycle of ten tasks. The figure per card is the `tasks` stage's
//! time (task, card and reply of each post) divided by the posts, with
//! the Planka requests the proxy counted.
// A bench drives the binary and the database directly; clippy.toml's
// invariants bind the agent, not this.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/planka_real/real.rs"]
#[allow(dead_code)]
mod real;

#[path = "../tests/planka_real/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::path::PathBuf;

use support::agent::text;
use support::world::{quoted, WorldBuilder};

/// The `tasks` stage's milliseconds in the last cycle.
fn tasks_ms(sb: &support::agent::Sandbox) -> u64 {
    let st = sb.state_json();
    st["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "tasks")
        .and_then(|s| s["ms"].as_u64())
        .unwrap_or(0)
}

/// Continues the server when dropped, whatever happened.
struct Frozen(i32);

impl Frozen {
    fn stop(pid: i32) -> Frozen {
        // SAFETY: a signal to a process the tier started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// One cycle of 30 posts against a stopped Planka, after a warm cycle.
fn frozen(server: &real::Real, bin: &std::path::Path) {
    let realm = real::Realm::new(server, &[("basic", "Basic")]);
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("basic", &[me.id.as_str(), alice.as_str()]);
    let ch = mm.add_channel(&team, "ops", &[me.id.as_str(), alice.as_str()]);
    let llm = b.ollama();
    llm.answer("TASK");
    // The defaults of [planka] (timeout_secs = 10) and [agent] (deadline 240 s).
    b.line("planka", &format!("url = {}", quoted(&server.url)))
        .line("planka", &format!("username = {}", quoted(&realm.user.0)))
        .line("planka.boards.basic", "board = \"Basic\"")
        .line("planka.boards.basic", "list = \"To Do\"");
    b.env("OPS_AGENT_PLANKA_PASSWORD", real::AGENT_PASSWORD);
    let mut sb = b.sandbox();
    sb.bin = bin.to_path_buf();
    mm.post(&ch, &alice, "please file the warm-up task");
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let posts: Vec<String> = (0..30)
        .map(|i| {
            mm.post(
                &ch,
                &alice,
                &format!("please reset the password of user {i}"),
            )
        })
        .collect();
    let (out, wall) = {
        let _frozen = Frozen::stop(server.pid());
        let (out, wall, _) = sb.run_measured(&["run-once"]);
        (out, wall)
    };
    assert!(out.status.success(), "{}", text(&out));
    let replies = posts
        .iter()
        .filter(|p| !mm.tagged_replies(&me.id, p).is_empty())
        .count();
    let filed = posts.iter().filter(|p| sb.ledger_tasks_for(p) == 1).count();
    let st = sb.state_json();
    let tasks = st["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "tasks")
        .cloned()
        .unwrap_or_default();
    println!("binary: {}", bin.display());
    println!(
        "frozen Planka (SIGSTOP), 30 posts, default settings: cycle {:.1} s, {filed}/30 tasks filed, {replies}/30 replies; tasks stage {} ({} ms)",
        wall.as_secs_f64(),
        tasks["outcome"],
        tasks["ms"]
    );
}

fn main() {
    let Some(server) = real::Real::from_env() else {
        return;
    };
    if std::env::var("OPS_AGENT_BENCH_FROZEN").is_ok_and(|v| v == "1") {
        let bin = std::env::var_os("OPS_AGENT_BENCH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(support::agent::binary);
        frozen(&server, &bin);
        return;
    }
    let bin = std::env::var_os("OPS_AGENT_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(support::agent::binary);
    let sizes: Vec<usize> = std::env::var("OPS_AGENT_BENCH_CARDS")
        .unwrap_or_else(|_| "0,10000,20000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let list_choice = std::env::var("OPS_AGENT_BENCH_LIST").unwrap_or_else(|_| "done".into());
    println!(
        "binary: {}; the old cards in \"{}\"",
        bin.display(),
        if list_choice == "todo" {
            "To Do"
        } else {
            "Done"
        }
    );
    println!(
        "  cards      first cycle     1 card/cycle   10 cards/cycle    board MB  Planka requests (1 card/cycle)"
    );
    for size in sizes {
        let realm = real::Realm::new(&server, &[("basic", "Basic")]);
        let board = realm.board("basic").clone();
        if size > 0 {
            let list = match list_choice.as_str() {
                "todo" => &board.todo,
                _ => &board.done,
            };
            real::seed_cards_in(&server, &board, list, size);
        }
        let proxy = proxy::Proxy::start(&server.url);
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["basic"]);
        let alice = mm.add_user("alice", "pw");
        let team = mm.add_team("basic", &[me.id.as_str(), alice.as_str()]);
        let ch = mm.add_channel(&team, "ops", &[me.id.as_str(), alice.as_str()]);
        let llm = b.ollama();
        llm.answer("TASK");
        b.line("planka", &format!("url = {}", quoted(&proxy.url)))
            .line("planka", &format!("username = {}", quoted(&realm.user.0)))
            .line("planka", "timeout_secs = 30")
            .line("planka.boards.basic", "board = \"Basic\"")
            .line("planka.boards.basic", "list = \"To Do\"");
        b.env("OPS_AGENT_PLANKA_PASSWORD", real::AGENT_PASSWORD);
        let mut sb = b.sandbox();
        sb.bin = bin.clone();
        let run = |sb: &support::agent::Sandbox| {
            let out = sb.run(&["run-once"]);
            assert!(out.status.success(), "{}", text(&out));
        };
        mm.post(&ch, &alice, "please file the first task");
        run(&sb);
        let first = tasks_ms(&sb);
        let mut one = Vec::new();
        proxy.clear();
        for i in 0..5 {
            mm.post(&ch, &alice, &format!("please file task {i}"));
            run(&sb);
            one.push(tasks_ms(&sb));
        }
        let requests = proxy.passed().len() / 5;
        for i in 0..10 {
            mm.post(&ch, &alice, &format!("please file busy task {i}"));
        }
        run(&sb);
        let ten = tasks_ms(&sb) as f64 / 10.0;
        let made = realm.cards_on(&board) - size as i64;
        one.sort();
        let (_, v) = server.admin("GET", &format!("/api/boards/{}", board.id), None);
        let board_mb = v.to_string().len() as f64 / 1e6;
        println!(
            "{size:>7}  {:>11} ms  {:>13} ms  {:>13.0} ms  {board_mb:>10.1}  {requests} ({made}/16 cards made)",
            first, one[2], ten
        );
    }
    println!("(1 card/cycle: the median of five cycles that each file one task)");
}
