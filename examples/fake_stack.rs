//! A whole fake world to try the real agent against, by hand:
//! `cargo run --example fake_stack`.
//!
//! Starts the test fakes on 127.0.0.1 (Mattermost with the four runbook
//! teams and a few realistic posts, Ollama answering labels by simple rules,
//! Planka with one board per team, a Docker engine with a few containers,
//! one of them exited), writes a config into a fresh temp dir with every
//! `[paths]` entry inside it (the operator's real state, log and token
//! files are never touched), prints the commands that run a cycle against
//! it, and then serves until Ctrl-C, printing each request the fakes receive
//! and what changed (replies, cards, restarts). `--keep` leaves the temp dir
//! in place on exit.
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[allow(dead_code)]
#[path = "../tests/support/docker.rs"]
mod docker;
#[allow(dead_code)]
#[path = "../tests/support/fault.rs"]
mod fault;
#[allow(dead_code)]
#[path = "../tests/support/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/support/mattermost.rs"]
mod mattermost;
#[allow(dead_code)]
#[path = "../tests/support/ollama.rs"]
mod ollama;
#[allow(dead_code)]
#[path = "../tests/support/planka.rs"]
mod planka;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use docker::{FakeContainer, FakeDocker};
use mattermost::FakeMattermost;
use ollama::FakeOllama;
use planka::FakePlanka;

/// Set by the SIGINT/SIGTERM handler; the serve loop exits cleanly on it so
/// the temp dir is removed.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

const TEAMS: [&str; 4] = ["basic", "wizard", "rendrom", "riad"];

/// The classify model the fake has pulled. The reply model is deliberately
/// not pulled: the fake answers every prompt with a label, which is no
/// reply, so replies take the agent's template path (logged as such).
const CLASSIFY_MODEL: &str = "llama3.1:8b";

/// What the Ollama fake answers, like a sensible classifier would.
fn label_for(message: &str) -> String {
    let m = message.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if any(&["down", "502", "503", "outage", "not responding", "error"]) {
        "INCIDENT".into()
    } else if any(&["please", "can you", "could you", "need "]) {
        "TASK".into()
    } else {
        "ROUTINE".into()
    }
}

/// Users, teams, channels and the posts the first cycle will find.
struct Chat {
    agent: String,
    token: String,
}

fn seed_mattermost(mm: &FakeMattermost) -> Chat {
    let agent = mm.add_user("opsbot", "not-used");
    let token = mm.add_token(&agent);
    let alice = mm.add_user("alice", "alice-pw");
    let bob = mm.add_user("bob", "bob-pw");
    let members = [agent.as_str(), alice.as_str(), bob.as_str()];
    let mut ops = Vec::new();
    for team in TEAMS {
        let tid = mm.add_team(team, &members);
        mm.add_channel(&tid, "town-square", &members);
        ops.push((team, mm.add_channel(&tid, "ops", &members)));
    }
    let ch = |team: &str| ops.iter().find(|(t, _)| *t == team).unwrap().1.clone();
    let task = mm.post(
        &ch("wizard"),
        &alice,
        "Hi, could you please add a DNS record shop.example.com -> 203.0.113.10? Client launches Monday.",
    );
    mm.reply(&task, &bob, "+1, the client asked twice already");
    mm.post(
        &ch("basic"),
        &bob,
        "planka is down for everyone, 502 Bad Gateway on every page since 10:05",
    );
    mm.post(&ch("rendrom"), &alice, "thanks, looks good now!");
    mm.post(
        &ch("riad"),
        &alice,
        "please renew the TLS certificate for riad.example.org before Friday",
    );
    mm.post(&ch("riad"), &bob, "lunch at 12:30?");
    Chat { agent, token }
}

fn config_text(dir: &Path, mm: &str, llm: &str, planka: &str, docker: &str) -> String {
    let d = dir.display();
    let mut boards = String::new();
    for team in TEAMS {
        let mut board = team.to_string();
        board[..1].make_ascii_uppercase();
        boards += &format!("[planka.boards.{team}]\nboard = \"{board}\"\nlist = \"Inbox\"\n\n");
    }
    format!(
        r#"# Written by `cargo run --example fake_stack`: every path is inside
# {d}, every service is a fake on 127.0.0.1.

[agent]
deadline_secs = 60.0

[paths]
state = "{d}/ops-agent-state.json"
token_cache = "{d}/mm-token.json"
fix_history = "{d}/ops-fix-history.json"
stats = "{d}/ops.json"
log = "{d}/ops-agent.log"
ledger = "{d}/ops-tasks.jsonl"
lock = "{d}/ops-agent.lock"
planka_token_cache = "{d}/planka-token.json"

[mattermost]
url = "{mm}"
token_env = "OPS_AGENT_MM_TOKEN"
teams = ["basic", "wizard", "rendrom", "riad"]
alert_channel = "basic/ops"
timeout_secs = 5

[ollama]
url = "{llm}"
classify_model = "{CLASSIFY_MODEL}"
classify_timeout_secs = 5
reply_timeout_secs = 5

[planka]
url = "{planka}"
username = "{planka_user}"
password_env = "OPS_AGENT_PLANKA_PASSWORD"
timeout_secs = 5

{boards}[health]
docker_host = "{docker}"
reprobe_pause_ms = 500

[[checks]]
name = "nginx"
kind = "docker"
container = "nginx"

[[checks]]
name = "postgres"
kind = "docker"
container = "postgres"

# Exited: failing from the second cycle on (fail_after 2), then restarted
# by the agent and verified.
[[checks]]
name = "worker"
kind = "docker"
container = "worker"
fix = {{ action = "restart_container", settle_secs = 1, start_grace_secs = 5 }}

[[checks]]
name = "mattermost"
kind = "http"
url = "{mm}/api/v4/system/ping"
body_contains = "OK"

[[checks]]
name = "disk-root"
kind = "disk"
path = "/"
warn_pct = 85.0
critical_pct = 95.0

[[checks]]
name = "memory"
kind = "memory"
warn_pct = 90.0
critical_pct = 97.0
"#,
        planka_user = planka::USERNAME,
    )
}

/// Prints the requests each fake received since the last call, and what
/// changed in the world.
struct Watch {
    mm_seen: usize,
    llm_seen: usize,
    planka_seen: usize,
    docker_seen: usize,
    posts_seen: usize,
    cards_seen: usize,
}

impl Watch {
    fn print_new(
        &mut self,
        chat: &Chat,
        mm: &FakeMattermost,
        llm: &FakeOllama,
        pk: &FakePlanka,
        dk: &FakeDocker,
    ) {
        let q = |q: &str| {
            if q.is_empty() {
                String::new()
            } else {
                format!("?{q}")
            }
        };
        let reqs = mm.requests();
        for r in &reqs[self.mm_seen.min(reqs.len())..] {
            println!("[mattermost] {} {}{}", r.method, r.path, q(&r.query));
        }
        self.mm_seen = reqs.len();
        let reqs = llm.requests();
        for r in &reqs[self.llm_seen.min(reqs.len())..] {
            let model = r.body["model"].as_str().unwrap_or("");
            println!("[ollama]     {} {} {model}", r.method, r.path);
        }
        self.llm_seen = reqs.len();
        let reqs = pk.requests();
        for r in &reqs[self.planka_seen.min(reqs.len())..] {
            let query = r.query.as_deref().unwrap_or("");
            println!(
                "[planka]     {} {}{} ({})",
                r.method,
                r.path,
                q(query),
                r.auth
            );
        }
        self.planka_seen = reqs.len();
        let reqs = dk.requests();
        for r in &reqs[self.docker_seen.min(reqs.len())..] {
            println!("[docker]     {} {}{}", r.method, r.path, q(&r.query));
        }
        self.docker_seen = reqs.len();

        let posts = mm.posts();
        for p in &posts[self.posts_seen.min(posts.len())..] {
            if p.user_id == chat.agent {
                let first: String = p
                    .message
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(100)
                    .collect();
                let place = if p.root_id.is_empty() {
                    "new post".to_string()
                } else {
                    format!("reply under {}", p.root_id)
                };
                println!("  => opsbot {place}: {first}");
            }
        }
        self.posts_seen = posts.len();
        let cards = pk.cards();
        for c in &cards[self.cards_seen.min(cards.len())..] {
            let id = c["id"].as_str().unwrap_or("");
            println!(
                "  => Planka card {}: {} [{}]",
                id,
                c["name"].as_str().unwrap_or(""),
                pk.label_names_of(id).join(", ")
            );
        }
        self.cards_seen = cards.len();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let keep = std::env::args().any(|a| a == "--keep");

    let mm = FakeMattermost::start().await;
    let chat = seed_mattermost(&mm);

    let llm = FakeOllama::start().await;
    llm.set_models(&[CLASSIFY_MODEL]);
    llm.answer_with(label_for);

    let pk = FakePlanka::start().await;
    let boards: Vec<(String, String)> = TEAMS
        .iter()
        .map(|t| {
            let mut b = t.to_string();
            b[..1].make_ascii_uppercase();
            (b, "Inbox".to_string())
        })
        .collect();
    let refs: Vec<(&str, &str)> = boards
        .iter()
        .map(|(b, l)| (b.as_str(), l.as_str()))
        .collect();
    pk.seed(&refs);

    let dk = FakeDocker::start().await;
    dk.add(FakeContainer::healthy("nginx"));
    dk.add(FakeContainer::healthy("postgres"));
    dk.add(FakeContainer::exited("worker"));

    let dir = tempfile::Builder::new()
        .prefix("ops-agent-fake-")
        .tempdir()
        .expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), &mm.url(), llm.url(), &pk.url, &dk.host()),
    )
    .expect("writing the config");

    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let cfg = config.display().to_string();
    let d = dir.path().display().to_string();
    println!(
        "Fake stack is up (Ctrl-C stops it{}):\n\
         \x20 Mattermost {mm_url}  (teams {teams}; agent opsbot, users alice and bob; 6 posts: 2 tasks, 1 incident, chatter)\n\
         \x20 Ollama     {llm_url}  (labels by keyword; reply model not pulled: replies use the template)\n\
         \x20 Planka     {pk_url}  (boards Basic, Wizard, Rendrom, Riad, list Inbox)\n\
         \x20 Docker     {dk_host}  (nginx, postgres healthy; worker exited)\n\
         \x20 Config     {cfg}\n\n\
         Run a cycle against it (from {crate_dir}):\n\n\
         \x20 OPS_AGENT_MM_TOKEN={token} OPS_AGENT_PLANKA_PASSWORD={pw} cargo run -- --config {cfg} run-once\n\
         \x20 cargo run -- --config {cfg} status\n\
         \x20 tail -50 {d}/ops-agent.log\n\
         \x20 cat {d}/ops-tasks.jsonl\n\n\
         A second run-once restarts the exited worker (it counts as failing from its second cycle).\n\
         Requests the fakes receive, and the agent's replies and cards, follow:\n",
        if keep { "; --keep: the temp dir stays" } else { "; the temp dir is removed" },
        mm_url = mm.url(),
        teams = TEAMS.join(", "),
        llm_url = llm.url(),
        pk_url = pk.url,
        dk_host = dk.host(),
        token = chat.token,
        pw = planka::PASSWORD,
    );

    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut watch = Watch {
        mm_seen: 0,
        llm_seen: 0,
        planka_seen: 0,
        docker_seen: 0,
        posts_seen: mm.posts().len(),
        cards_seen: 0,
    };
    while !STOP.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        watch.print_new(&chat, &mm, &llm, &pk, &dk);
    }
    println!(
        "\nStopping. Totals: Mattermost {} requests, Ollama {}, Planka {}, Docker {}; {} cards, worker restarts {}.",
        mm.requests().len(),
        llm.requests().len(),
        pk.requests().len(),
        dk.requests().len(),
        pk.cards().len(),
        dk.restarts("worker")
    );
    if keep {
        let kept = dir.keep();
        println!("Kept {}", kept.display());
    } else {
        println!("Removed {d}");
    }
}
