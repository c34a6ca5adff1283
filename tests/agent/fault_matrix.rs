//! The fault matrix, through the real binary: for each dependency
//! (Mattermost, Ollama, the MC command, Planka, the Docker engine, an HTTP
//! endpoint) and each fault (refused, hanging past its timeout, 500, a
//! garbage body, an endless body, 429/401 where the service has them), a
//! faulty cycle and then healed ones. Each test is named for its cell,
//! `<dependency>_<fault>__<what holds>`, so a failure says which cell.
//!
//! What holds in every cell: the faulty cycle exits 0 inside its deadline
//! and its peak memory stays within [`RSS`] of a healed cycle's; after healing, each
//! TASK and INCIDENT post has exactly one task, one card and one reply, and
//! nothing is done twice.
#![allow(non_snake_case)]

use std::path::PathBuf;
use std::time::Duration;

use crate::support::agent::{text, Sandbox};
use crate::support::docker::{FakeContainer, FakeDocker};
use crate::support::fault::Fault;
use crate::support::harness::in_background;
use crate::support::http_endpoints::FakeEndpoints;
use crate::support::mattermost::FakeMattermost;
use crate::support::ollama::FakeOllama;
use crate::support::planka::FakePlanka;
use crate::support::world::{quoted, WorldBuilder};

/// The faulty cycle's deadline; every timeout is a fraction of it.
const DEADLINE_SECS: f64 = 12.0;
/// What a hostile dependency may add to a cycle's peak memory, over the
/// same world's healed cycle (the binary's own footprint, which grows with
/// its code and differs between debug and release builds): bodies are
/// capped at 1 MiB here, read by up to four calls at once, plus slack.
const RSS: u64 = 8 * 1024;
/// The same for Mattermost and Planka, whose pages may be up to 16 MiB
/// (the body cap): an endless body is read to the cap and then refused.
const RSS_PAGED: u64 = RSS + 16 * 1024;
/// An oversized body: far more than any cap, small enough to serve fast.
const HUGE: usize = 96 * 1024 * 1024;

struct World {
    mm: FakeMattermost,
    llm: FakeOllama,
    planka: FakePlanka,
    docker: FakeDocker,
    endpoints: FakeEndpoints,
    sb: Sandbox,
    agent: String,
    posts: Vec<String>,
    mc_fault: Option<PathBuf>,
}

/// Which MC the world files tasks with.
enum Mc {
    Ledger,
    /// The record script, failing while its flag file exists.
    Command,
    /// A script with this body (argv: none), for hostile commands.
    Script(&'static str),
}

fn world(mc: Mc) -> World {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["wizard"]);
    let alice = mm.add_user("alice", "pw");
    let team = mm.add_team("wizard", &[&me.id, &alice]);
    let channel = mm.add_channel(&team, "dev", &[&me.id, &alice]);
    let llm = b.ollama();
    llm.answer_with(|m| {
        if m.contains("down") {
            "INCIDENT".into()
        } else {
            "TASK".into()
        }
    });
    b.llm_timeouts(1);
    let planka = b.planka(&[("wizard", "Wizard", "Inbox")]);
    b.line("planka", "timeout_secs = 1");
    let docker = b.docker();
    docker.add(FakeContainer::running("web"));
    let endpoints: FakeEndpoints = in_background(FakeEndpoints::start);
    b.line("mattermost", "timeout_secs = 1");
    b.line("agent", &format!("deadline_secs = {DEADLINE_SECS}"));
    b.line("health", "reprobe_pause_ms = 100");
    b.toml(&format!(
        "[[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\ntimeout_secs = 1\n\n\
         [[checks]]\nname = \"site\"\nkind = \"http\"\nurl = {}\nbody_contains = \"OK\"\ntimeout_secs = 1\n",
        quoted(&endpoints.url("/ok"))
    ));
    let dir = tempfile::tempdir().unwrap().keep();
    let mut mc_fault = None;
    match mc {
        Mc::Ledger => {}
        Mc::Command => {
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mc/record.sh");
            let flag = dir.join("mc-down");
            b.line(
                "mc",
                &format!(
                    "command = [{}, \"{{source}}\"]",
                    quoted(&script.display().to_string())
                ),
            );
            b.line("mc", "timeout_secs = 1");
            b.line("mc", "pass_env = [\"MC_ARGV_FILE\", \"MC_FAIL_FLAG\"]");
            b.env("MC_ARGV_FILE", &dir.join("argv").display().to_string());
            b.env("MC_FAIL_FLAG", &flag.display().to_string());
            mc_fault = Some(flag);
        }
        Mc::Script(body) => {
            let script = dir.join("mc.sh");
            std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            b.line(
                "mc",
                &format!("command = [{}]", quoted(&script.display().to_string())),
            );
            b.line("mc", "timeout_secs = 1");
            b.line("mc", "pass_env = [\"MC_ARGV_FILE\"]");
            b.env("MC_ARGV_FILE", &dir.join("argv").display().to_string());
        }
    }
    let posts = vec![
        mm.post(&channel, &alice, "please add a redirect from /old to /new"),
        mm.post(&channel, &alice, "the shop is down, 502 on checkout"),
    ];
    World {
        mm,
        llm,
        planka,
        docker,
        endpoints,
        sb: b.sandbox(),
        agent: me.id,
        posts,
        mc_fault,
    }
}

impl World {
    /// The faulty cycle: exit 0, inside the deadline. Returns its peak
    /// RSS (KiB).
    fn faulty_cycle(&self) -> u64 {
        let (out, took, rss) = self.sb.run_measured(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            took < Duration::from_secs_f64(DEADLINE_SECS + 2.0),
            "the cycle took {took:?}: {}",
            text(&out)
        );
        eprintln!("faulty cycle: {took:?}, peak RSS {rss} KiB");
        rss
    }

    /// Healed cycles, then the exactly-once checks. Returns the first
    /// healed cycle's peak RSS (KiB).
    fn heals(&self) -> u64 {
        let mut healed_rss = 0;
        for i in 0..3 {
            let (out, _, rss) = self.sb.run_measured(&["run-once"]);
            assert!(out.status.success(), "{}", text(&out));
            if i == 0 {
                healed_rss = rss;
            }
            self.sb.make_outbox_due();
        }
        for p in &self.posts {
            let replies = self.mm.tagged_replies(&self.agent, p).len();
            assert_eq!(replies, 1, "post {p}: one reply\n{}", self.sb.log_text());
            assert_eq!(self.sb.ledger_tasks_for(p), 1, "post {p}: one task");
        }
        assert_eq!(
            self.planka.cards().len(),
            self.posts.len(),
            "one card per post"
        );
        healed_rss
    }
}

/// One cell: a world, the fault, a faulty cycle, the fault cleared, healing.
/// The faulty cycle's peak memory may exceed the healed one's by at most
/// `rss_allowance_kib`.
fn cell(mc: Mc, rss_allowance_kib: u64, set: impl Fn(&World), clear: impl Fn(&World)) {
    let w = world(mc);
    set(&w);
    let faulty = w.faulty_cycle();
    clear(&w);
    let healed = w.heals();
    assert!(
        faulty < healed + rss_allowance_kib,
        "peak RSS {faulty} KiB facing the fault, {healed} KiB healed: more than {rss_allowance_kib} KiB apart"
    );
    eprintln!("healed cycle: peak RSS {healed} KiB");
}

macro_rules! cells {
    ($($name:ident: $mc:expr, $rss:expr, $set:expr, $clear:expr;)*) => {
        $(
            #[test]
            fn $name() {
                cell($mc, $rss, $set, $clear);
            }
        )*
    };
}

fn rate_limited() -> Fault {
    Fault::RateLimited {
        retry_after: Duration::from_secs(1),
    }
}

cells! {
    mm_refused__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, |w| w.mm.set_fault(Fault::Refuse), |w| w.mm.clear_fault();
    mm_hang__cycle_ends_in_time_and_every_post_is_handled_once_after: Mc::Ledger, RSS, |w| w.mm.set_fault(Fault::Hang), |w| w.mm.clear_fault();
    mm_500__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, |w| w.mm.set_fault(Fault::Status(500)), |w| w.mm.clear_fault();
    mm_garbage__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, |w| w.mm.set_fault(Fault::Garbage), |w| w.mm.clear_fault();
    mm_oversized__memory_stays_bounded_and_every_post_is_handled_once_after: Mc::Ledger, RSS_PAGED, |w| w.mm.set_fault(Fault::Oversized(HUGE)), |w| w.mm.clear_fault();
    mm_endless__memory_stays_bounded_and_every_post_is_handled_once_after: Mc::Ledger, RSS_PAGED, |w| w.mm.set_fault(Fault::Endless), |w| w.mm.clear_fault();
    mm_429__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, |w| w.mm.set_fault(rate_limited()), |w| w.mm.clear_fault();
    mm_401__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, |w| w.mm.set_fault(Fault::Unauthorized), |w| w.mm.clear_fault();

    ollama_refused__keywords_and_templates_then_every_post_once: Mc::Ledger, RSS, |w| w.llm.set_fault(Fault::Refuse), |w| w.llm.clear_fault();
    ollama_hang__breaker_then_every_post_once: Mc::Ledger, RSS, |w| w.llm.set_fault(Fault::Hang), |w| w.llm.clear_fault();
    ollama_500__keywords_then_every_post_once: Mc::Ledger, RSS, |w| w.llm.set_fault(Fault::Status(500)), |w| w.llm.clear_fault();
    ollama_garbage__keywords_then_every_post_once: Mc::Ledger, RSS, |w| w.llm.set_fault(Fault::Garbage), |w| w.llm.clear_fault();
    ollama_oversized__memory_stays_bounded_then_every_post_once: Mc::Ledger, RSS, |w| w.llm.set_fault(Fault::Oversized(HUGE)), |w| w.llm.clear_fault();
    ollama_endless__memory_stays_bounded_then_every_post_once: Mc::Ledger, RSS, |w| w.llm.set_fault(Fault::Endless), |w| w.llm.clear_fault();
    ollama_429__keywords_then_every_post_once: Mc::Ledger, RSS, |w| w.llm.set_fault(rate_limited()), |w| w.llm.clear_fault();

    planka_refused__tasks_now_cards_after_once: Mc::Ledger, RSS, |w| w.planka.set_fault(Fault::Refuse), |w| w.planka.clear_fault();
    planka_hang__tasks_now_cards_after_once: Mc::Ledger, RSS, |w| w.planka.set_fault(Fault::Hang), |w| w.planka.clear_fault();
    planka_500__tasks_now_cards_after_once: Mc::Ledger, RSS, |w| w.planka.set_fault(Fault::Status(500)), |w| w.planka.clear_fault();
    planka_garbage__tasks_now_cards_after_once: Mc::Ledger, RSS, |w| w.planka.set_fault(Fault::Garbage), |w| w.planka.clear_fault();
    planka_oversized__memory_stays_bounded_cards_after_once: Mc::Ledger, RSS_PAGED, |w| w.planka.set_fault(Fault::Oversized(HUGE)), |w| w.planka.clear_fault();
    planka_endless__memory_stays_bounded_cards_after_once: Mc::Ledger, RSS_PAGED, |w| w.planka.set_fault(Fault::Endless), |w| w.planka.clear_fault();
    planka_401__tasks_now_cards_after_once: Mc::Ledger, RSS, |w| w.planka.set_fault(Fault::Unauthorized), |w| w.planka.clear_fault();

    docker_refused__cycle_exits_0_then_every_post_once: Mc::Ledger, RSS, |w| w.docker.set_fault(Fault::Refuse), |w| w.docker.clear_fault();
    docker_hang__cycle_ends_in_time_then_every_post_once: Mc::Ledger, RSS, |w| w.docker.set_fault(Fault::Hang), |w| w.docker.clear_fault();
    docker_500__cycle_exits_0_then_every_post_once: Mc::Ledger, RSS, |w| w.docker.set_fault(Fault::Status(500)), |w| w.docker.clear_fault();
    docker_garbage__cycle_exits_0_then_every_post_once: Mc::Ledger, RSS, |w| w.docker.set_fault(Fault::Garbage), |w| w.docker.clear_fault();

    http_refused__check_critical_and_every_post_once: Mc::Ledger, RSS, |w| w.endpoints.server().set_fault(Fault::Refuse), |w| w.endpoints.server().clear_fault();
    http_hang__check_unknown_in_time_and_every_post_once: Mc::Ledger, RSS, |w| w.endpoints.server().set_fault(Fault::Hang), |w| w.endpoints.server().clear_fault();
    http_500__check_critical_and_every_post_once: Mc::Ledger, RSS, |w| w.endpoints.server().set_fault(Fault::Status(500)), |w| w.endpoints.server().clear_fault();
    http_garbage__check_critical_and_every_post_once: Mc::Ledger, RSS, |w| w.endpoints.server().set_fault(Fault::Garbage), |w| w.endpoints.server().clear_fault();
    http_oversized__memory_stays_bounded_and_every_post_once: Mc::Ledger, RSS, |w| w.endpoints.server().set_fault(Fault::Oversized(HUGE)), |w| w.endpoints.server().clear_fault();
    http_endless__memory_stays_bounded_and_every_post_once: Mc::Ledger, RSS, |w| w.endpoints.server().set_fault(Fault::Endless), |w| w.endpoints.server().clear_fault();

    mc_failing__posts_wait_then_one_task_each: Mc::Command, RSS, |w| { std::fs::write(w.mc_fault.as_ref().unwrap(), "").unwrap(); }, |w| { std::fs::remove_file(w.mc_fault.as_ref().unwrap()).unwrap(); };
}

/// The MC command is broken for the faulty cycle only, then the record
/// script (a working MC that counts) is configured for healing.
fn mc_cell(body: &'static str) {
    let mut w = world(Mc::Script(body));
    let faulty = w.faulty_cycle();
    let good = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mc/record.sh");
    let extra = &mut w.sb.extra;
    let start = extra.find("command = [").unwrap();
    let end = start + extra[start..].find(']').unwrap() + 1;
    extra.replace_range(
        start..end,
        &format!(
            "command = [{}, \"{{source}}\"]",
            quoted(&good.display().to_string())
        ),
    );
    let healed = w.heals();
    assert!(
        faulty < healed + RSS,
        "peak RSS {faulty} KiB facing the fault, {healed} KiB healed: more than {RSS} KiB apart"
    );
}

#[test]
fn mc_hang__killed_at_its_timeout_and_posts_filed_once_after() {
    mc_cell("sleep 30");
}

#[test]
fn mc_garbage__no_id_no_task_and_posts_filed_once_after() {
    mc_cell("echo 'what is an id?'");
}

#[test]
fn mc_endless_output__memory_stays_bounded_and_posts_filed_once_after() {
    mc_cell("yes");
}

#[test]
fn mc_not_found__posts_wait_and_are_filed_once_after() {
    mc_cell("exec /nonexistent/mc");
}
