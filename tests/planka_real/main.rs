//! The real-Planka tier: the card flows of the suite through the real
//! binary against a real Planka 2.1.1 on PostgreSQL 15, counting what
//! happened in the server's own database (cards, card labels, comments, the
//! list a card is in, sessions).
//!
//! Runs when `OPS_AGENT_REAL_PLANKA_URL`, `_DB` and `_BASE` name the server
//! `.ci/planka-up.sh` started (`.ci/run` exports them and runs with
//! `CI=true`, where a missing server is a failure, and counts the
//! `tier-ran: planka_real` lines); a plain `cargo test` without them prints
//! "skipped" and passes. Mattermost, the LLM and Docker are the in-process
//! fakes of `tests/support/`; Planka is reached through a pass-through
//! proxy on the shared fault layer ([`proxy`]), so outages, hangs and kill
//! points apply to the real server. Each test works in its own project,
//! boards and agent user ([`real::Realm`]).
//!
//! `flows` runs the card flows (create, label, comment exactly once, move to
//! done, relabel by correction, outbox after an outage, kill points, token
//! and API key auth); `defects` has one test per item of issue 22.
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![allow(non_snake_case)]

#[path = "../support/mod.rs"]
mod support;

mod defects;
mod flows;
mod proxy;
mod real;

use std::time::Duration;

use serde_json::Value;

use proxy::Proxy;
use real::{Real, Realm, AGENT_PASSWORD};
use support::agent::{text, Sandbox};
use support::docker::FakeDocker;
use support::fault::Hold;
use support::mattermost::FakeMattermost;
use support::ollama::FakeOllama;
use support::world::{quoted, WorldBuilder};

/// What the fake LLM answers: an outage is an INCIDENT, small talk
/// ROUTINE, anything else a TASK.
fn label_of(message: &str) -> String {
    let m = message.to_lowercase();
    if m.contains("down") || m.contains("outage") {
        "INCIDENT".into()
    } else if m.contains("lunch") || m.contains("thanks") {
        "ROUTINE".into()
    } else {
        "TASK".into()
    }
}

/// A test's world: the real server (through the proxy), its realm, and the
/// fakes, with the agent's config wired to them.
pub struct World {
    pub realm: Realm,
    pub proxy: Proxy,
    pub mm: FakeMattermost,
    pub llm: FakeOllama,
    pub docker: Option<FakeDocker>,
    pub sb: Sandbox,
    pub agent: String,
    pub alice: String,
    pub john: String,
    /// team -> its "ops" channel.
    pub channels: Vec<(String, String)>,
    /// The alert channel, when the world has one.
    pub alerts: Option<String>,
}

/// What a world has beyond the default (boards per team, the agent's
/// password, "Done" as the done list).
pub struct Spec<'a> {
    /// `(team, board name)`; the Mattermost teams are the same.
    pub boards: &'a [(&'a str, &'a str)],
    /// `basic/ops-alerts` as the alert channel.
    pub alerts: bool,
    /// A fake Docker engine with this exited container `web` (a check
    /// with `fail_after = 1`).
    pub docker: bool,
    /// `[escalation] done_list = "Done"`.
    pub done_list: bool,
    /// More config (TOML lines under their sections, or whole tables).
    pub extra: &'a str,
    /// Config the test writes itself instead of the `[planka]` login
    /// (e.g. an API key); `None`: username and password.
    pub planka_auth: Option<&'a str>,
    /// More `[planka]` lines.
    pub planka_lines: &'a str,
    /// `(team, board, list)` as the config names them, where a test wants
    /// other spellings than the server's (default: as on the server, "To Do").
    pub names: &'a [(&'a str, &'a str, &'a str)],
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            boards: &[("basic", "Basic")],
            alerts: false,
            docker: false,
            done_list: true,
            extra: "",
            planka_auth: None,
            planka_lines: "",
            names: &[],
        }
    }
}

impl World {
    /// The world `spec` describes, on the real server; `None` (after the
    /// tier's skip line) when there is none.
    pub fn new(spec: Spec<'_>) -> Option<World> {
        let real = Real::from_env()?;
        let realm = Realm::new(&real, spec.boards);
        let proxy = Proxy::start(&real.url);
        let mut b = WorldBuilder::new();
        let teams: Vec<&str> = spec.boards.iter().map(|(t, _)| *t).collect();
        let (mm, me) = b.mattermost(&teams);
        let alice = mm.add_user("alice", "pw");
        let john = mm.add_user("john", "pw");
        let members = [me.id.as_str(), alice.as_str(), john.as_str()];
        let mut channels = Vec::new();
        let mut alerts = None;
        for team in &teams {
            let tid = mm.add_team(team, &members);
            channels.push((team.to_string(), mm.add_channel(&tid, "ops", &members)));
            if spec.alerts && *team == "basic" {
                alerts = Some(mm.add_channel(&tid, "ops-alerts", &members));
            }
        }
        if spec.alerts {
            b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
        }
        let llm = b.ollama();
        llm.answer_with(label_of);
        b.line("planka", &format!("url = {}", quoted(&proxy.url)))
            .line("planka", "timeout_secs = 3");
        match spec.planka_auth {
            None => {
                b.line("planka", &format!("username = {}", quoted(&realm.user.0)));
                b.env("OPS_AGENT_PLANKA_PASSWORD", AGENT_PASSWORD);
            }
            Some(lines) => {
                for l in lines.lines().filter(|l| !l.trim().is_empty()) {
                    b.line("planka", l);
                }
            }
        }
        for l in spec.planka_lines.lines().filter(|l| !l.trim().is_empty()) {
            b.line("planka", l);
        }
        for board in &realm.boards {
            let section = format!("planka.boards.{}", board.team);
            let (name, list) = spec
                .names
                .iter()
                .find(|(t, _, _)| *t == board.team)
                .map(|(_, b, l)| (b.to_string(), l.to_string()))
                .unwrap_or((board.name.clone(), "To Do".into()));
            b.line(&section, &format!("board = {}", quoted(&name)))
                .line(&section, &format!("list = {}", quoted(&list)));
        }
        if spec.done_list {
            b.line("escalation", "done_list = \"Done\"");
        }
        b.line("corrections", "sweep_mins = 0");
        let docker = spec.docker.then(|| {
            let d = b.docker();
            d.add(support::docker::FakeContainer::exited("web"));
            b.toml(
                "[[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\n\
                 fail_after = 1\nrecover_after = 1\n",
            );
            d
        });
        b.toml(spec.extra);
        Some(World {
            realm,
            proxy,
            mm,
            llm,
            docker,
            sb: b.sandbox(),
            agent: me.id,
            alice,
            john,
            channels,
            alerts,
        })
    }

    /// Alice says `message` in `team`'s channel; the post id.
    pub fn say(&self, team: &str, message: &str) -> String {
        let ch = &self.channels.iter().find(|(t, _)| t == team).unwrap().1;
        self.mm.post(ch, &self.alice, message)
    }

    /// One cycle; it must exit 0.
    pub fn run(&self) {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// Cycles with the outbox's backoff made due between them.
    pub fn heal(&self, cycles: usize) {
        for _ in 0..cycles {
            if self.sb.state().exists() {
                self.sb.make_outbox_due();
            }
            self.run();
        }
    }

    /// The last cycle's outcome of `stage`: (`ok`/`degraded`/…, detail).
    pub fn stage(&self, stage: &str) -> (String, String) {
        let st = self.sb.state_json();
        let s = st["last_cycle"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap_or_else(|| panic!("no stage {stage}: {}", st["last_cycle"]))
            .clone();
        (
            s["outcome"].as_str().unwrap_or("").to_string(),
            s["detail"].as_str().unwrap_or("").to_string(),
        )
    }

    /// The last cycle's fallback note of `stage` (an optional dependency,
    /// Planka here, stood in for by its fallback: the card waits).
    pub fn fallback(&self, stage: &str) -> Option<String> {
        let st = self.sb.state_json();
        st["last_cycle"]["fallbacks"]
            .as_array()?
            .iter()
            .find(|f| f["stage"] == stage)
            .and_then(|f| f["why"].as_str().map(str::to_string))
    }

    /// The agent's replies to `post`.
    pub fn replies_to(&self, post: &str) -> usize {
        self.mm.tagged_replies(&self.agent, post).len()
    }

    /// The agent's reply to `post` (its id).
    pub fn reply_to(&self, post: &str) -> String {
        self.mm
            .posts()
            .into_iter()
            .find(|p| {
                p.user_id == self.agent
                    && p.props.get("ops_agent_reply_to").and_then(Value::as_str) == Some(post)
            })
            .map(|p| p.id)
            .unwrap_or_else(|| panic!("no reply to {post}\n{}", self.sb.log_text()))
    }

    /// Starts a cycle, waits until `hold` has stopped a request, kills the
    /// agent with SIGKILL, then opens the gate. True when the kill landed
    /// mid-cycle (the hold was reached).
    pub fn kill_at(&self, hold: &Hold) -> bool {
        let mut child = self.sb.command(&["run-once"]).spawn().unwrap();
        let reached = hold.wait_arrived(Duration::from_secs(15));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        hold.release();
        self.proxy.server().wait_idle(Duration::from_secs(10));
        use std::os::unix::process::ExitStatusExt;
        reached && status.signal() == Some(libc::SIGKILL)
    }

    /// The log, for assertion messages.
    pub fn log(&self) -> String {
        self.sb.log_text()
    }
}
