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
//! nothing is done twice. What the name adds about the faulty cycle (the
//! fallback labels, the templates, the check's status, the killed command)
//! is its [`Then`], checked right after that cycle, on the fakes' side or in
//! the files the agent writes.
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
use crate::support::procs;
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
    /// Where a hostile MC script writes its pid (its process group) each
    /// time it runs.
    mc_pids: Option<PathBuf>,
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
    let mut mc_pids = None;
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
            let pids = dir.join("mc-pids");
            std::fs::write(
                &script,
                format!("#!/bin/sh\necho $$ >> \"$MC_PIDS\"\n{body}\n"),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            b.line(
                "mc",
                &format!("command = [{}]", quoted(&script.display().to_string())),
            );
            b.line("mc", "timeout_secs = 1");
            b.line("mc", "pass_env = [\"MC_ARGV_FILE\", \"MC_PIDS\"]");
            b.env("MC_ARGV_FILE", &dir.join("argv").display().to_string());
            b.env("MC_PIDS", &pids.display().to_string());
            mc_pids = Some(pids);
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
        mc_pids,
    }
}

/// What a cell's name promises about its faulty cycle, beyond what every
/// cell checks.
#[derive(Clone, Copy)]
enum Then {
    /// Nothing more: the name promises only what every cell checks.
    Nothing,
    /// Every post labelled by the fallback (not the LLM), which says why.
    Fallback,
    /// [`Then::Fallback`], and every post answered with the template.
    FallbackAndTemplates,
    /// The first failed LLM call stopped the LLM for the cycle: Ollama
    /// was asked once for two posts that each want a label and a reply,
    /// and every post was labelled by the fallback.
    Breaker,
    /// Every post has its task already (cards wait for Planka).
    TasksNow,
    /// The HTTP check's last result has this status.
    Check(&'static str),
    /// The HTTP check's last result is a failure for want of an answer
    /// within its timeout. Its status is `critical` (the client's timeout)
    /// or `unknown` (the probe's), whichever of the two equal timeouts
    /// fires first.
    NoAnswer,
    /// No post has a task or a reply yet: they wait for MC.
    PostsWait,
    /// The MC command ran past its timeout and its whole process group was
    /// killed; the posts wait.
    Killed,
}

impl Drop for World {
    /// Ends what a hostile MC script left running in its process groups.
    fn drop(&mut self) {
        for pgid in self
            .mc_pids
            .as_deref()
            .map(procs::pids_in)
            .unwrap_or_default()
        {
            // SAFETY: kill(2) on a group led by an MC script of this test.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
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

    /// What `then` promises, right after the faulty cycle.
    fn holds(&self, then: Then) {
        let log = self.sb.log_text();
        match then {
            Then::Nothing => {}
            Then::Fallback => self.labelled_by_the_fallback(),
            Then::FallbackAndTemplates => {
                self.labelled_by_the_fallback();
                let replies = self.sb.audit_events("reply_posted");
                for p in &self.posts {
                    let mine: Vec<_> = replies.iter().filter(|r| r["post"] == *p).collect();
                    assert_eq!(mine.len(), 1, "post {p}: one reply\n{log}");
                    assert_eq!(mine[0]["path"], "template", "post {p}: {}", mine[0]);
                    assert_eq!(
                        self.mm.tagged_replies(&self.agent, p).len(),
                        1,
                        "post {p}: the reply is in Mattermost"
                    );
                }
            }
            Then::Breaker => {
                let asked = self.llm.requests().len();
                assert_eq!(asked, 1, "Ollama asked {asked} times\n{log}");
                self.labelled_by_the_fallback();
            }
            Then::TasksNow => {
                for p in &self.posts {
                    assert_eq!(
                        self.sb.ledger_tasks_for(p),
                        1,
                        "post {p}: a task now\n{log}"
                    );
                }
            }
            Then::Check(status) => {
                let last = self.last_check_result();
                assert_eq!(last["status"], status, "{last}");
            }
            Then::NoAnswer => {
                let last = self.last_check_result();
                assert!(
                    last["status"] == "critical" || last["status"] == "unknown",
                    "{last}"
                );
                let reason = last["reason"].as_str().unwrap_or_default();
                assert!(reason.contains("no answer within 1s"), "{last}");
            }
            Then::PostsWait => self.posts_wait(),
            Then::Killed => {
                let groups = procs::pids_in(self.mc_pids.as_ref().unwrap());
                assert!(!groups.is_empty(), "the MC command never ran\n{log}");
                for pgid in groups {
                    let living = procs::wait_group_gone(pgid, Duration::from_secs(5));
                    assert!(living.is_empty(), "MC group {pgid} still has {living:?}");
                }
                assert!(log.contains("timed out after 1s"), "{log}");
                self.posts_wait();
            }
        }
    }

    /// The last result the state file keeps for the HTTP check.
    fn last_check_result(&self) -> serde_json::Value {
        let st = self.sb.state_json();
        st["health"]["checks"]["site"]["last"]
            .as_array()
            .and_then(|l| l.last())
            .unwrap_or_else(|| panic!("no result for the check: {}", st["health"]))
            .clone()
    }

    /// Every post's label came from the fallback, with its reason.
    fn labelled_by_the_fallback(&self) {
        let labels = self.sb.audit_events("post_classified");
        for p in &self.posts {
            let mine: Vec<_> = labels.iter().filter(|l| l["post"] == *p).collect();
            assert_eq!(mine.len(), 1, "post {p}: labelled once: {labels:#?}");
            assert_ne!(mine[0]["path"], "llm", "post {p}: {}", mine[0]);
            assert!(
                mine[0]["fallback"].as_str().is_some_and(|r| !r.is_empty()),
                "post {p}: the fallback's reason: {}",
                mine[0]
            );
        }
    }

    /// No post has a task or a reply; the faulty MC, when it is a script,
    /// ran (the cell met its fault).
    fn posts_wait(&self) {
        if let Some(pids) = &self.mc_pids {
            let ran = procs::pids_in(pids).len();
            assert!(ran > 0, "the MC command never ran");
        }
        for p in &self.posts {
            assert_eq!(self.sb.ledger_tasks_for(p), 0, "post {p}: no task");
            assert!(
                self.mm.tagged_replies(&self.agent, p).is_empty(),
                "post {p}: no reply without a task"
            );
        }
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

/// One cell: a world, the fault, a faulty cycle and what `then` promises
/// about it, the fault cleared, healing. The faulty cycle's peak memory may
/// exceed the healed one's by at most `rss_allowance_kib`.
fn cell(mc: Mc, rss_allowance_kib: u64, then: Then, set: impl Fn(&World), clear: impl Fn(&World)) {
    let w = world(mc);
    set(&w);
    let faulty = w.faulty_cycle();
    w.holds(then);
    clear(&w);
    let healed = w.heals();
    assert!(
        faulty < healed + rss_allowance_kib,
        "peak RSS {faulty} KiB facing the fault, {healed} KiB healed: more than {rss_allowance_kib} KiB apart"
    );
    eprintln!("healed cycle: peak RSS {healed} KiB");
}

macro_rules! cells {
    ($($name:ident: $mc:expr, $rss:expr, $then:expr, $set:expr, $clear:expr;)*) => {
        $(
            #[test]
            fn $name() {
                cell($mc, $rss, $then, $set, $clear);
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
    mm_refused__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, Then::Nothing, |w| w.mm.set_fault(Fault::Refuse), |w| w.mm.clear_fault();
    mm_hang__cycle_ends_in_time_and_every_post_is_handled_once_after: Mc::Ledger, RSS, Then::Nothing, |w| w.mm.set_fault(Fault::Hang), |w| w.mm.clear_fault();
    mm_500__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, Then::Nothing, |w| w.mm.set_fault(Fault::Status(500)), |w| w.mm.clear_fault();
    mm_garbage__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, Then::Nothing, |w| w.mm.set_fault(Fault::Garbage), |w| w.mm.clear_fault();
    mm_oversized__memory_stays_bounded_and_every_post_is_handled_once_after: Mc::Ledger, RSS_PAGED, Then::Nothing, |w| w.mm.set_fault(Fault::Oversized(HUGE)), |w| w.mm.clear_fault();
    mm_endless__memory_stays_bounded_and_every_post_is_handled_once_after: Mc::Ledger, RSS_PAGED, Then::Nothing, |w| w.mm.set_fault(Fault::Endless), |w| w.mm.clear_fault();
    mm_429__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, Then::Nothing, |w| w.mm.set_fault(rate_limited()), |w| w.mm.clear_fault();
    mm_401__cycle_exits_0_and_every_post_is_handled_once_after: Mc::Ledger, RSS, Then::Nothing, |w| w.mm.set_fault(Fault::Unauthorized), |w| w.mm.clear_fault();

    ollama_refused__keywords_and_templates_then_every_post_once: Mc::Ledger, RSS, Then::FallbackAndTemplates, |w| w.llm.set_fault(Fault::Refuse), |w| w.llm.clear_fault();
    ollama_hang__breaker_then_every_post_once: Mc::Ledger, RSS, Then::Breaker, |w| w.llm.set_fault(Fault::Hang), |w| w.llm.clear_fault();
    ollama_500__keywords_then_every_post_once: Mc::Ledger, RSS, Then::Fallback, |w| w.llm.set_fault(Fault::Status(500)), |w| w.llm.clear_fault();
    ollama_garbage__keywords_then_every_post_once: Mc::Ledger, RSS, Then::Fallback, |w| w.llm.set_fault(Fault::Garbage), |w| w.llm.clear_fault();
    ollama_oversized__memory_stays_bounded_then_every_post_once: Mc::Ledger, RSS, Then::Nothing, |w| w.llm.set_fault(Fault::Oversized(HUGE)), |w| w.llm.clear_fault();
    ollama_endless__memory_stays_bounded_then_every_post_once: Mc::Ledger, RSS, Then::Nothing, |w| w.llm.set_fault(Fault::Endless), |w| w.llm.clear_fault();
    ollama_429__keywords_then_every_post_once: Mc::Ledger, RSS, Then::Fallback, |w| w.llm.set_fault(rate_limited()), |w| w.llm.clear_fault();

    planka_refused__tasks_now_cards_after_once: Mc::Ledger, RSS, Then::TasksNow, |w| w.planka.set_fault(Fault::Refuse), |w| w.planka.clear_fault();
    planka_hang__tasks_now_cards_after_once: Mc::Ledger, RSS, Then::TasksNow, |w| w.planka.set_fault(Fault::Hang), |w| w.planka.clear_fault();
    planka_500__tasks_now_cards_after_once: Mc::Ledger, RSS, Then::TasksNow, |w| w.planka.set_fault(Fault::Status(500)), |w| w.planka.clear_fault();
    planka_garbage__tasks_now_cards_after_once: Mc::Ledger, RSS, Then::TasksNow, |w| w.planka.set_fault(Fault::Garbage), |w| w.planka.clear_fault();
    planka_oversized__memory_stays_bounded_cards_after_once: Mc::Ledger, RSS_PAGED, Then::Nothing, |w| w.planka.set_fault(Fault::Oversized(HUGE)), |w| w.planka.clear_fault();
    planka_endless__memory_stays_bounded_cards_after_once: Mc::Ledger, RSS_PAGED, Then::Nothing, |w| w.planka.set_fault(Fault::Endless), |w| w.planka.clear_fault();
    planka_401__tasks_now_cards_after_once: Mc::Ledger, RSS, Then::TasksNow, |w| w.planka.set_fault(Fault::Unauthorized), |w| w.planka.clear_fault();

    docker_refused__cycle_exits_0_then_every_post_once: Mc::Ledger, RSS, Then::Nothing, |w| w.docker.set_fault(Fault::Refuse), |w| w.docker.clear_fault();
    docker_hang__cycle_ends_in_time_then_every_post_once: Mc::Ledger, RSS, Then::Nothing, |w| w.docker.set_fault(Fault::Hang), |w| w.docker.clear_fault();
    docker_500__cycle_exits_0_then_every_post_once: Mc::Ledger, RSS, Then::Nothing, |w| w.docker.set_fault(Fault::Status(500)), |w| w.docker.clear_fault();
    docker_garbage__cycle_exits_0_then_every_post_once: Mc::Ledger, RSS, Then::Nothing, |w| w.docker.set_fault(Fault::Garbage), |w| w.docker.clear_fault();

    http_refused__check_critical_and_every_post_once: Mc::Ledger, RSS, Then::Check("critical"), |w| w.endpoints.server().set_fault(Fault::Refuse), |w| w.endpoints.server().clear_fault();
    http_hang__check_fails_with_no_answer_in_time_and_every_post_once: Mc::Ledger, RSS, Then::NoAnswer, |w| w.endpoints.server().set_fault(Fault::Hang), |w| w.endpoints.server().clear_fault();
    http_500__check_critical_and_every_post_once: Mc::Ledger, RSS, Then::Check("critical"), |w| w.endpoints.server().set_fault(Fault::Status(500)), |w| w.endpoints.server().clear_fault();
    http_garbage__check_critical_and_every_post_once: Mc::Ledger, RSS, Then::Check("critical"), |w| w.endpoints.server().set_fault(Fault::Garbage), |w| w.endpoints.server().clear_fault();
    http_oversized__memory_stays_bounded_and_every_post_once: Mc::Ledger, RSS, Then::Nothing, |w| w.endpoints.server().set_fault(Fault::Oversized(HUGE)), |w| w.endpoints.server().clear_fault();
    http_endless__memory_stays_bounded_and_every_post_once: Mc::Ledger, RSS, Then::Nothing, |w| w.endpoints.server().set_fault(Fault::Endless), |w| w.endpoints.server().clear_fault();

    mc_failing__posts_wait_then_one_task_each: Mc::Command, RSS, Then::PostsWait, |w| { std::fs::write(w.mc_fault.as_ref().unwrap(), "").unwrap(); }, |w| { std::fs::remove_file(w.mc_fault.as_ref().unwrap()).unwrap(); };
}

/// The MC command is broken for the faulty cycle only, then the record
/// script (a working MC that counts) is configured for healing.
fn mc_cell(body: &'static str, then: Then) {
    let mut w = world(Mc::Script(body));
    let faulty = w.faulty_cycle();
    w.holds(then);
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
    mc_cell("sleep 30", Then::Killed);
}

#[test]
fn mc_garbage__no_id_no_task_and_posts_filed_once_after() {
    mc_cell("echo 'what is an id?'", Then::PostsWait);
}

#[test]
fn mc_endless_output__memory_stays_bounded_and_posts_filed_once_after() {
    mc_cell("yes", Then::Nothing);
}

/// A wrapper that prints the id and exits, leaving a background child
/// holding its stdout: the id is used, once per post, in the same cycle.
#[test]
fn mc_background_child_holds_stdout__tasks_now_and_one_task_each_after() {
    mc_cell(r#"sleep 30 & echo "{\"id\":\"MC-$$\"}""#, Then::TasksNow);
}

#[test]
fn mc_not_found__posts_wait_and_are_filed_once_after() {
    mc_cell("exec /nonexistent/mc", Then::PostsWait);
}
