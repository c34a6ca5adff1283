//! Issue 25 through the real binary: an escalation carries an incident
//! brief. A container that crash-loops and exhausts its fix gets an alert
//! with a first diagnosis and its most telling lines, the full brief in the
//! alert's thread (its last log lines, exit code and restart count), and
//! the same brief in the HIGH task and the card; the token and the
//! password its log prints reach no post, task, card, file or prompt; an
//! HTTP check's brief holds the status and the start of the body; the
//! model's diagnosis is marked as a guess, and with the model down a
//! templated summary stands in; a log stream and a model that hang never
//! push the cycle past its deadline; the follow-up gathers the brief again and
//! `explain` shows it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::agent::{text, Sandbox};
use crate::support::docker::{FakeContainer, FakeDocker, OnRestart};
use crate::support::fault::Fault;
use crate::support::harness::in_background;
use crate::support::http_endpoints::FakeEndpoints;
use crate::support::mattermost::{FakeMattermost, FakePost};
use crate::support::ollama::{dead_url, FakeOllama};
use crate::support::planka::FakePlanka;
use crate::support::world::{quoted, WorldBuilder};

/// The line the crashing worker prints last: the brief must carry it.
const MARKER: &str = "BRIEF-MARKER-7741 fatal: cannot open /data/queue.db";
/// Secrets the worker's log prints: they must never leave the machine.
const TOKEN: &str = "ghp_Zx81Qm0aP4vN7tK2rL9sW3yB6cD1eF5gH8jJ";
const PASSWORD: &str = "Tr0ub4dor-S3cret";
/// The model's answer: the brief must show it as a guess.
const GUESS: &str = "The worker most likely crashes because /data/queue.db is missing; check the volume mount first.";

struct World {
    mm: FakeMattermost,
    llm: Option<FakeOllama>,
    planka: FakePlanka,
    docker: FakeDocker,
    sb: Sandbox,
    agent: String,
    /// A client team's channel the agent polls: the brief never goes here.
    client: String,
    alerts: String,
}

/// The worker's log: start-up, a URL with a password, a token, an attempt
/// to mention everyone and to close the code fence, then the crash.
fn worker() -> FakeContainer {
    let mut c = FakeContainer::exited("worker")
        .on_restart(OnRestart::StaysDown)
        .logging(&[
            "worker 2.4.1 starting",
            &format!("connecting to postgres://queue:{PASSWORD}@db.internal:5432/jobs"),
            &format!("loaded api token {TOKEN}"),
            "``` @channel wake up",
            MARKER,
        ])
        .logging_err(&["panic: queue unavailable, exiting"]);
    c.exit_code = 3;
    c.restart_count = 4;
    c.restart_policy = "on-failure".into();
    c
}

impl World {
    /// The worker crash-looped until its restart policy gave up (exited
    /// with code 3 after 4 restarts by the engine). With `fix`, the agent
    /// may restart it once an hour, which never helps (it dies again with
    /// code 1, and the restart by hand resets the engine's count). `llm`:
    /// a fake model answering [`GUESS`], else a dead URL.
    fn new(llm: bool, fix: bool, escalation: &str) -> World {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["basic", "client"]);
        b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
        let members = [me.id.as_str()];
        let team = mm.add_team("basic", &members);
        let alerts = mm.add_channel(&team, "ops-alerts", &members);
        let client_team = mm.add_team("client", &members);
        let client = mm.add_channel(&client_team, "support", &members);
        let llm = if llm {
            let llm = b.ollama();
            llm.answer_with(|_| GUESS.into());
            Some(llm)
        } else {
            b.ollama_at(&dead_url());
            None
        };
        let planka = b.planka(&[("basic", "Basic", "Inbox")]);
        let docker = b.docker();
        docker.add(worker());
        b.line("fix", "max_attempts_per_hour = 1");
        b.toml(&format!(
            "[escalation]\non_call = [\"opsbot\"]\n{escalation}\n\
             [[checks]]\nname = \"worker\"\nkind = \"docker\"\ncontainer = \"worker\"\n\
             fail_after = 1\nrecover_after = 1\n{}",
            if fix {
                "fix = { action = \"restart_container\", settle_secs = 0, start_grace_secs = 0 }\n"
            } else {
                ""
            }
        ));
        let sb = b.sandbox();
        World {
            mm,
            llm,
            planka,
            docker,
            sb,
            agent: me.id,
            client,
            alerts,
        }
    }

    fn run(&self) {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    fn alert(&self) -> FakePost {
        let alerts: Vec<FakePost> = self
            .mm
            .posts()
            .into_iter()
            .filter(|p| p.channel_id == self.alerts && p.root_id.is_empty())
            .collect();
        assert_eq!(
            alerts.len(),
            1,
            "exactly one alert: {alerts:#?}\n{}",
            self.sb.log_text()
        );
        alerts.into_iter().next().unwrap()
    }

    /// The agent's posts in the alert's thread with this event prop.
    fn thread_posts(&self, event: &str) -> Vec<String> {
        self.mm
            .thread_replies(&self.alert().id)
            .into_iter()
            .filter(|p| p.user_id == self.agent)
            .filter(|p| p.props.get("ops_agent_event").and_then(Value::as_str) == Some(event))
            .map(|p| p.message)
            .collect()
    }

    /// The one brief in the alert's thread.
    fn brief(&self) -> String {
        let briefs = self.thread_posts("brief");
        assert_eq!(briefs.len(), 1, "one brief in the thread: {briefs:#?}");
        briefs.into_iter().next().unwrap()
    }

    fn task_description(&self) -> String {
        let tasks = self.sb.ledger_tasks();
        assert_eq!(tasks.len(), 1, "one escalation task: {tasks:#?}");
        assert_eq!(tasks[0]["priority"], "HIGH");
        tasks[0]["description"].as_str().unwrap().to_string()
    }

    fn card_description(&self) -> String {
        let cards = self.planka.cards();
        assert_eq!(cards.len(), 1, "one card: {cards:#?}");
        cards[0]["description"].as_str().unwrap().to_string()
    }
}

/// Every file under `dir`, as text.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    out
}

/// Asserts that neither secret appears in any post, task, card, prompt or
/// file the agent wrote, and that the world did see the worker's log (so
/// the check is not vacuous).
fn assert_no_secret_anywhere(w: &World) {
    let mut places: Vec<(String, String)> =
        w.mm.posts()
            .into_iter()
            .map(|p| (format!("post {}", p.id), p.message))
            .collect();
    places.push((
        "cards".into(),
        serde_json::to_string(&w.planka.cards()).unwrap(),
    ));
    places.push((
        "comments".into(),
        serde_json::to_string(&w.planka.comments()).unwrap(),
    ));
    if let Some(llm) = &w.llm {
        for r in llm.requests() {
            places.push((format!("model request {}", r.path), r.body.to_string()));
        }
    }
    places.extend(files_under(w.sb.root()));
    assert!(
        places.iter().any(|(_, t)| t.contains("BRIEF-MARKER-7741")),
        "the log was gathered somewhere"
    );
    for (place, body) in &places {
        for secret in [TOKEN, PASSWORD] {
            assert!(
                !body.contains(secret),
                "{secret} leaked into {place}:\n{body}"
            );
        }
    }
}

#[test]
fn a_crash_looping_container_escalates_with_its_brief_in_the_thread_the_task_and_the_card() {
    let w = World::new(true, true, "");
    w.run();
    w.run();
    assert_eq!(
        w.docker.restarts("worker"),
        1,
        "the one fix of the hour was tried"
    );

    // The alert: short, the guess and the most telling lines.
    let alert = w.alert().message;
    assert!(alert.contains("worker is failing"), "{alert}");
    assert!(
        alert.contains("a guess by the model qwen2.5-coder:32b, not a fact")
            && alert.contains(GUESS),
        "{alert}"
    );
    assert!(alert.contains("Most telling lines"), "{alert}");
    assert!(
        alert.contains("BRIEF-MARKER-7741"),
        "the crash line is the most telling: {alert}"
    );

    // The thread: the whole brief.
    let brief = w.brief();
    for want in [
        "**Incident brief** for worker:worker@",
        MARKER,
        "panic: queue unavailable",
        // After the agent's restart, which reset the engine's count.
        "state: exited, exit code 1, OOMKilled: no",
        "restart count: 0",
        "image: worker:latest",
        "Docker 20.10.24",
        "the agent's record",
        "fix ",
        "restart_container -> failed",
    ] {
        assert!(brief.contains(want), "the brief lacks {want:?}:\n{brief}");
    }
    assert!(brief.len() <= 3 * 1024, "{} bytes", brief.len());
    // Outside text stays inside its fences and mentions nobody.
    assert!(!brief.contains("@channel"), "{brief}");
    assert_eq!(brief.matches("```").count() % 2, 0, "{brief}");
    // The brief goes to the alert channel only, never a client's.
    assert!(
        w.mm.posts()
            .iter()
            .filter(|p| p.channel_id == w.client)
            .all(|p| !p.message.contains("BRIEF-MARKER")),
        "no brief in a client team's channel"
    );

    // The HIGH task and its card carry the brief too, capped.
    let task = w.task_description();
    let card = w.card_description();
    for want in [MARKER, "exit code 1", "restart count: 0", GUESS] {
        assert!(task.contains(want), "task lacks {want:?}:\n{task}");
        assert!(card.contains(want), "card lacks {want:?}:\n{card}");
    }
    assert!(task.len() <= 8 * 1024 + 200, "{} bytes", task.len());

    // The model saw the brief, scrubbed; the audit trail says what was
    // gathered, not the lines.
    let llm = w.llm.as_ref().unwrap();
    assert!(
        llm.chat_requests()
            .iter()
            .any(|r| r.body.to_string().contains("BRIEF-MARKER-7741")),
        "the model read the brief"
    );
    let gathered = w.sb.audit_events("brief_gathered");
    assert_eq!(gathered.len(), 1, "{gathered:#?}");
    let g = gathered[0]["gathered"].as_str().unwrap();
    assert!(
        g.contains("log 6 lines") && g.contains("diagnosis: a guess by"),
        "{g}"
    );
    assert!(
        !g.contains("BRIEF-MARKER"),
        "no log line in the audit trail: {g}"
    );

    // explain shows the latest brief.
    let out = w.sb.run(&["explain", "worker"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("latest incident brief") && said.contains(MARKER),
        "{said}"
    );
    let out = w.sb.run(&["explain", "worker", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["brief"]["pieces"].is_array(), "{v}");

    assert_no_secret_anywhere(&w);
}

#[test]
fn with_the_model_down_a_templated_summary_stands_in_and_the_follow_up_gathers_again() {
    let w = World::new(false, false, "");
    w.run();
    let brief = w.brief();
    assert!(
        brief.contains("**Summary from the facts** (templated"),
        "{brief}"
    );
    assert!(
        brief.contains(
            "The container worker is exited with exit code 3 after 4 restarts by the engine."
        ),
        "{brief}"
    );
    assert!(!brief.contains("a guess by"), "{brief}");
    assert!(w.alert().message.contains("Summary from the facts"));

    // Nobody acknowledges: the follow-up carries the brief gathered again.
    w.docker.update("worker", |c| c.restart_count = 9);
    let mut st = w.sb.state_json();
    let inc = &mut st["escalation"]["incidents"][0];
    inc["alerted_ms"] = Value::from(inc["alerted_ms"].as_i64().unwrap() - 31 * 60_000);
    std::fs::write(w.sb.state(), serde_json::to_vec(&st).unwrap()).unwrap();
    w.run();
    let follow = w.thread_posts("follow_up");
    assert_eq!(follow.len(), 1, "{follow:#?}");
    assert!(
        follow[0].contains("The brief, gathered again now")
            && follow[0].contains("restart count: 9"),
        "{}",
        follow[0]
    );
    assert_eq!(w.sb.audit_events("brief_gathered").len(), 2);
    assert_no_secret_anywhere(&w);
}

#[test]
fn an_http_checks_brief_holds_the_status_and_the_start_of_the_body() {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
    let team = mm.add_team("basic", &[me.id.as_str()]);
    let alerts = mm.add_channel(&team, "ops-alerts", &[me.id.as_str()]);
    b.ollama_at(&dead_url());
    let web: FakeEndpoints = in_background(FakeEndpoints::start);
    let tls: FakeEndpoints = in_background(FakeEndpoints::start_tls);
    b.toml(&format!(
        "[[checks]]\nname = \"api\"\nkind = \"http\"\nurl = {}\nfail_after = 1\n\n\
         [[checks]]\nname = \"secure\"\nkind = \"http\"\nurl = {}\nverify_tls = false\nfail_after = 1\n",
        quoted(&web.url("/500")),
        quoted(&tls.url("/wrong-body").replace("/wrong-body", "/status/503")),
    ));
    let sb = b.sandbox();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let brief_of = |service: &str| -> String {
        let alert = mm
            .posts()
            .into_iter()
            .find(|p| {
                p.channel_id == alerts
                    && p.root_id.is_empty()
                    && p.message.contains(&format!("{service} is failing"))
            })
            .unwrap_or_else(|| panic!("an alert for {service}\n{}", sb.log_text()));
        let replies: Vec<String> = mm
            .thread_replies(&alert.id)
            .into_iter()
            .map(|p| p.message)
            .collect();
        assert_eq!(replies.len(), 1, "{replies:#?}");
        replies.into_iter().next().unwrap()
    };
    // Over HTTPS the brief says when the certificate expires.
    let secure = brief_of("secure");
    assert!(
        secure.contains("/status/503: HTTP 503 in ") && secure.contains("TLS certificate expires "),
        "{secure}"
    );
    let brief = &brief_of("api");
    assert!(!brief.contains("TLS certificate"), "plain HTTP: {brief}");
    for want in [
        "**endpoint api**",
        "/500: HTTP 500 in ",
        "content type: application/json",
        "**body of the answer of api**",
        r#""message":"internal error""#,
        "answers HTTP 500",
    ] {
        assert!(brief.contains(want), "the brief lacks {want:?}:\n{brief}");
    }
    let task = sb
        .ledger_tasks()
        .into_iter()
        .find(|t| t["source"].as_str().unwrap().starts_with("api:"))
        .unwrap();
    assert!(
        task["description"]
            .as_str()
            .unwrap()
            .contains("internal error"),
        "{task}"
    );
}

#[test]
fn disk_and_memory_briefs_list_the_volumes_and_the_biggest_processes() {
    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
    let team = mm.add_team("basic", &[me.id.as_str()]);
    let alerts = mm.add_channel(&team, "ops-alerts", &[me.id.as_str()]);
    b.ollama_at(&dead_url());
    // Thresholds every machine passes: both checks are critical.
    b.toml(
        "[[checks]]\nname = \"root-disk\"\nkind = \"disk\"\npath = \"/\"\nwarn_pct = 0.001\ncritical_pct = 0.002\nfail_after = 1\n\n\
         [[checks]]\nname = \"ram\"\nkind = \"memory\"\nwarn_pct = 0.001\ncritical_pct = 0.002\nfail_after = 1\n",
    );
    let sb = b.sandbox();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let briefs: Vec<String> = mm
        .posts()
        .into_iter()
        .filter(|p| p.channel_id == alerts && !p.root_id.is_empty())
        .map(|p| p.message)
        .collect();
    assert_eq!(briefs.len(), 2, "{briefs:#?}\n{}", sb.log_text());
    let disk = briefs.iter().find(|b| b.contains("root-disk")).unwrap();
    assert!(
        disk.contains("**volumes, fullest first (root-disk)**") && disk.contains("% used, "),
        "{disk}"
    );
    assert!(
        disk.contains("\n/ ") || disk.contains(" / "),
        "the root volume: {disk}"
    );
    let ram = briefs.iter().find(|b| b.contains("ram")).unwrap();
    assert!(
        ram.contains("**processes by resident memory (ram)**") && ram.contains("(pid "),
        "{ram}"
    );
    assert!(ram.contains("The biggest process is "), "{ram}");
}

#[test]
fn a_hanging_log_stream_never_pushes_the_cycle_past_its_deadline() {
    // A brief budget far beyond the cycle's deadline: the rule "never more
    // than half of what is left of the cycle" must bound it, not the budget.
    let mut w = World::new(true, true, "brief_budget_secs = 120\n");
    w.docker.hang_logs("worker");
    // The model hangs too, and its own timeout is longer than the cycle:
    // only the brief's bound can end the diagnosis in time.
    w.llm.as_ref().unwrap().set_chat_fault(Fault::Hang);
    w.sb.extra =
        w.sb.extra
            .replace("reply_timeout_secs = 2", "reply_timeout_secs = 60");
    w.sb.extra.push_str("\n[agent]\ndeadline_secs = 6\n");
    let (out, took, _) = w.sb.run_measured(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        took < Duration::from_secs(8),
        "the cycle took {took:?}\n{}",
        w.sb.log_text()
    );
    let st = w.sb.state_json();
    eprintln!(
        "hanging log stream and model: the cycle took {took:?} (deadline 6 s); {}",
        w.sb.audit_events("brief_gathered")[0]["gathered"]
    );
    assert_eq!(
        st["last_cycle"]["deadline_hit"], false,
        "{}",
        st["last_cycle"]
    );
    // The alert, the task and the brief all went out, the log as far as
    // it was read, saying it is incomplete.
    let brief = w.brief();
    assert!(brief.contains(MARKER), "{brief}");
    assert!(
        brief.contains("the log stream did not end within the time budget"),
        "{brief}"
    );
    assert!(
        brief.contains("Summary from the facts")
            && brief.contains("did not answer within the brief's time budget"),
        "{brief}"
    );
    assert!(w.task_description().contains(MARKER));
}

#[test]
fn an_engine_that_does_not_answer_gets_a_brief_saying_so() {
    let w = World::new(false, false, "");
    w.docker.set_fault(Fault::Refuse);
    w.run();
    let brief = w.brief();
    assert!(
        brief.contains("**Incident brief** for docker:docker-engine@"),
        "{brief}"
    );
    assert!(
        brief.contains("**Docker engine**")
            && brief.contains("critical: Docker unreachable at http://127.0.0.1:"),
        "{brief}"
    );
}
