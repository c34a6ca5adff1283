//! Watching the watcher, through the real binary against the fakes: the
//! audit trail a cycle writes (and what `ops-agent audit` answers from it,
//! after a crash too), the Prometheus textfile read by a real parser, the
//! heartbeat pings a fake ping service receives (success, fail, service
//! down or hanging), and log rotation by size and by someone else.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::support::agent::{text, Sandbox};
use crate::support::fault::{Fault, Match};
use crate::support::harness::in_background;
use crate::support::heartbeat::{FakeHeartbeat, UUID};
use crate::support::http_endpoints::FakeEndpoints;
use crate::support::mattermost::FakeMattermost;
use crate::support::ollama::FakeOllama;
use crate::support::planka::FakePlanka;
use crate::support::world::{quoted, WorldBuilder};

struct World {
    mm: FakeMattermost,
    llm: FakeOllama,
    planka: FakePlanka,
    hb: FakeHeartbeat,
    _web: FakeEndpoints,
    sb: Sandbox,
    agent: String,
    alice: String,
    john: String,
    bot: String,
    channel: String,
}

impl World {
    /// Mattermost (team wizard, channel ops), Ollama answering by keyword,
    /// Planka, the ping service, and two HTTP checks: `web` (200) and
    /// `api` (500), so one check is ok and one critical (not yet failing:
    /// it takes two cycles). `extra` is appended to the config.
    fn new(extra: &str) -> World {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&["wizard"]);
        let alice = mm.add_user("alice", "pw");
        let john = mm.add_user("john", "pw");
        let bot = mm.add_bot("ci-bot");
        let members = [me.id.as_str(), alice.as_str(), john.as_str(), bot.as_str()];
        let team = mm.add_team("wizard", &members);
        let channel = mm.add_channel(&team, "ops", &members);
        let llm = b.ollama();
        llm.answer_by_words();
        let planka = b.planka(&[("wizard", "Wizard", "Inbox")]);
        let hb = FakeHeartbeat::start_in_background();
        b.line("heartbeat", &format!("url = {}", quoted(&hb.ping_url())))
            .line("heartbeat", "timeout_secs = 2.5")
            .line("metrics", "textfile = \"~/textfile/ops_agent.prom\"");
        let web = in_background(FakeEndpoints::start);
        b.toml(&format!(
            "[[checks]]\nname = \"web\"\nkind = \"http\"\nurl = {}\n\n\
             [[checks]]\nname = \"api\"\nkind = \"http\"\nservice = \"backend\"\nurl = {}\n\n{extra}",
            quoted(&web.url("/ok")),
            quoted(&web.url("/500")),
        ));
        let sb = b.sandbox();
        World {
            mm,
            llm,
            planka,
            hb,
            _web: web,
            sb,
            agent: me.id,
            alice,
            john,
            bot,
            channel,
        }
    }

    fn say(&self, user: &str, message: &str) -> String {
        self.mm.post(&self.channel, user, message)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.sb.run(args);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn audit_lines(&self) -> Vec<Value> {
        self.sb.audit_lines()
    }
}

fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

#[test]
fn a_cycle_writes_one_audit_line_per_decision_and_audit_answers_for_a_post() {
    let w = World::new("");
    let task = w.say(&w.alice, "please add a DNS record for shop.example.com");
    let incident = w.say(&w.alice, "the shop is down, 502 everywhere");
    let routine = w.say(&w.alice, "thanks, all good");
    let ignored = w.say(&w.john, "please restart everything");
    let from_bot = w.say(&w.bot, "build 812 passed");
    w.run(&["run-once"]);

    let lines = w.audit_lines();
    let cycle = lines[0]["cycle"].as_str().unwrap().to_string();
    for l in &lines {
        assert_eq!(
            l["cycle"],
            cycle.as_str(),
            "one cycle id on every line: {l}"
        );
        assert!(l["at"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    let state = w.sb.state_json();
    let started = state["last_cycle"]["started_ms"].as_i64().unwrap();
    let id = chrono::DateTime::from_timestamp_millis(started)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(cycle, id, "the cycle id is its start, as status shows it");

    // Skipped posts: the rule that skipped each, once.
    let skipped: BTreeMap<&str, &str> = events(&lines, "post_skipped")
        .iter()
        .map(|l| (l["post"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        skipped,
        BTreeMap::from([
            (ignored.as_str(), "ignored_user"),
            (from_bot.as_str(), "bot")
        ]),
        "{lines:#?}"
    );
    // Labels and their path, with who posted a short excerpt of what.
    let classified = events(&lines, "post_classified");
    assert_eq!(classified.len(), 3, "{lines:#?}");
    let label_of = |post: &str| {
        let l = classified.iter().find(|l| l["post"] == post).unwrap();
        assert_eq!(
            (l["path"].as_str(), l["author"].as_str()),
            (Some("llm"), Some("alice"))
        );
        assert_eq!(l["team"], "wizard");
        assert!(l.get("fallback").is_none(), "{l}");
        l["label"].as_str().unwrap().to_string()
    };
    assert_eq!(label_of(&task), "TASK");
    assert_eq!(label_of(&incident), "INCIDENT");
    assert_eq!(label_of(&routine), "ROUTINE");
    let ex = classified
        .iter()
        .find(|l| l["post"] == task.as_str())
        .unwrap();
    assert_eq!(
        ex["excerpt"],
        "please add a DNS record for shop.example.com"
    );
    // Tasks (tag, priority), cards, replies.
    let tasks = w.sb.ledger_tasks();
    let task_id = |src: &str| {
        tasks.iter().find(|t| t["source"] == src).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let created: Vec<(String, String, String, String)> = events(&lines, "task_created")
        .iter()
        .map(|l| {
            assert_eq!(l["created"], true);
            let s = |k: &str| l[k].as_str().unwrap().to_string();
            (s("source"), s("task"), s("tag"), s("priority"))
        })
        .collect();
    assert_eq!(
        created,
        [
            (
                task.clone(),
                task_id(&task),
                "BILLABLE".into(),
                "NORMAL".into()
            ),
            (
                incident.clone(),
                task_id(&incident),
                "BILLABLE".into(),
                "HIGH".into()
            ),
        ]
    );
    let cards = events(&lines, "card_created");
    assert_eq!(cards.len(), 2, "{lines:#?}");
    let card_ids: Vec<String> = w
        .planka
        .cards()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    for c in &cards {
        assert!(
            card_ids.contains(&c["card"].as_str().unwrap().to_string()),
            "{c}"
        );
    }
    let replies = events(&lines, "reply_posted");
    assert_eq!(replies.len(), 2, "{lines:#?}");
    for r in &replies {
        let reply =
            w.mm.get_post(r["reply"].as_str().unwrap())
                .expect("the reply exists");
        assert_eq!(reply.user_id, w.agent);
        assert_eq!(reply.root_id, r["post"].as_str().unwrap());
    }
    // Nothing secret, no chat text beyond an excerpt.
    let raw = std::fs::read_to_string(w.sb.audit_path()).unwrap();
    assert!(!raw.contains(UUID), "the ping URL is a capability");
    for (k, v) in &w.sb.env {
        assert!(!raw.contains(v.as_str()), "{k} leaked into the audit trail");
    }
    let mode = std::fs::metadata(w.sb.audit_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // "Why did the agent do that?" for the task post, and for no post.
    let why = w.run(&["audit", "--post", &task]);
    let want = [
        "labelled TASK by the LLM",
        &format!(
            "task {} created for {task} (NORMAL BILLABLE, team wizard)",
            task_id(&task)
        ),
        "card ",
        &format!("replied to post {task} (llm"),
    ];
    for line in want {
        assert!(why.contains(line), "missing {line:?} in:\n{why}");
    }
    assert!(
        why.starts_with(&format!("{}  cycle {cycle}\n", &cycle[..10])),
        "{why}"
    );
    assert!(!why.contains(&incident), "{why}");
    let why_not = w.run(&["audit", "--post", &ignored]);
    assert!(why_not.contains("skipped: ignored user"), "{why_not}");
    let json = w.run(&["audit", "--post", &task, "--json"]);
    let parsed: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 4, "{json}");
    let none = w.run(&["audit", "--since", "1s", "--post", "nope"]);
    assert!(none.starts_with("no audit events match"), "{none}");

    // A second cycle: nothing new, nothing repeated (the overlap re-reads
    // the skipped posts; they were recorded once).
    w.run(&["run-once"]);
    let again = w.audit_lines();
    assert_eq!(events(&again, "post_skipped").len(), 2, "{again:#?}");
    assert_eq!(events(&again, "post_classified").len(), 3);
}

#[test]
fn a_service_story_is_told_by_audit_check() {
    // A check that fails two cycles in a row becomes failing; with no fix
    // configured the agent escalates: the trail says so, step by step.
    let w = World::new("");
    w.run(&["run-once"]);
    w.run(&["run-once"]);
    let lines = w.audit_lines();
    let changed = events(&lines, "check_changed");
    assert_eq!(changed.len(), 1, "{lines:#?}");
    assert_eq!(
        (
            changed[0]["check"].as_str(),
            changed[0]["service"].as_str(),
            changed[0]["change"].as_str()
        ),
        (Some("api"), Some("backend"), Some("failing"))
    );
    let skipped = events(&lines, "fix_skipped");
    assert_eq!(skipped.len(), 1, "{lines:#?}");
    assert_eq!(skipped[0]["why"], "no fix configured");
    let steps: Vec<&str> = events(&lines, "escalation")
        .iter()
        .map(|l| l["step"].as_str().unwrap())
        .collect();
    assert!(steps.starts_with(&["opened", "task"]), "{steps:?}");
    // By the check's name or its service's: the same story, nothing else.
    for name in ["api", "backend"] {
        let story = w.run(&["audit", "--check", name]);
        assert!(
            story.contains("check api (service backend) is now failing (critical)"),
            "{story}"
        );
        assert!(
            story.contains("no fix for backend: no fix configured"),
            "{story}"
        );
        assert!(story.contains("incident backend:api@"), "{story}");
        assert!(!story.contains("web"), "{story}");
    }
}

#[test]
fn a_crash_mid_cycle_leaves_a_readable_trail_and_the_next_cycle_appends_cleanly() {
    let w = World::new("");
    let task = w.say(&w.alice, "please rotate the TLS certificate");
    // The reply is held: the cycle has labelled the post and made its task
    // and card when it is killed.
    let hold = w.mm.server().hold(Match::post("/posts"));
    let mut child = w.sb.command(&["run-once"]).spawn().unwrap();
    assert!(
        hold.wait_arrived(Duration::from_secs(30)),
        "the reply never came"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(hold);
    let lines = w.audit_lines();
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["post_classified", "task_created", "card_created"],
        "{lines:#?}"
    );
    // A kill can also cut a line mid-write: the readers skip it.
    let path = w.sb.audit_path();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"at\":\"2026-05-01T12:00:00.000Z\",\"event\":\"reply_po");
    std::fs::write(&path, bytes).unwrap();
    let why = w.run(&["audit", "--post", &task]);
    assert!(
        why.contains("labelled TASK") && why.contains("1 unreadable line(s) skipped"),
        "{why}"
    );
    let doctor = w.sb.run(&["doctor"]);
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.contains("1 unreadable line(s)"), "{doctor}");

    // The next cycle finishes the post: its label and task were saved
    // (the state journal) before the reply was held, so it only replies;
    // its lines start on a line of their own.
    w.run(&["run-once"]);
    let raw = std::fs::read_to_string(&path).unwrap();
    let after: Vec<&str> = raw.lines().collect();
    let parsed: Vec<Value> = after
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        parsed.len(),
        after.len() - 1,
        "only the torn line is unreadable:\n{raw}"
    );
    let second: Vec<&Value> = parsed.iter().skip(3).collect();
    let kinds: Vec<&str> = second
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reply_posted"], "{second:#?}");
    assert_eq!(w.sb.ledger_tasks().len(), 1);
}

/// Parses a textfile with a real Prometheus parser, and checks what that
/// lenient parser does not: every family typed once, before its samples,
/// its samples together, no series twice.
fn parse_prometheus(text: &str) -> prometheus_parse::Scrape {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_series = std::collections::BTreeSet::new();
    let mut current = String::new();
    let mut closed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                typed.insert(name.into(), kind.into()).is_none(),
                "typed twice: {line}"
            );
            if !current.is_empty() {
                closed.insert(current.clone());
            }
            current = name.to_string();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "summary"))
            })
            .unwrap_or(name);
        assert_eq!(family, current, "sample outside its family: {line}");
        assert!(!closed.contains(family), "family split: {line}");
        let series = line.rsplit_once(' ').unwrap().0.to_string();
        assert!(seen_series.insert(series), "series twice: {line}");
        assert!(name.starts_with("ops_agent_"), "{line}");
    }
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the Prometheus parser reads the textfile")
}

fn value(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> (f64, &'static str) {
    use prometheus_parse::Value as V;
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
    match s.value {
        V::Counter(v) => (v, "counter"),
        V::Gauge(v) => (v, "gauge"),
        V::Untyped(v) => (v, "untyped"),
        _ => panic!("{metric}: histogram or summary quantiles"),
    }
}

#[test]
fn the_metrics_textfile_is_prometheus_text_with_the_cycles_figures() {
    let w = World::new("");
    w.say(&w.alice, "please add a DNS record for shop.example.com");
    w.say(&w.alice, "the shop is down, 502 everywhere");
    w.say(&w.alice, "thanks, all good");
    w.say(&w.john, "ignored");
    w.run(&["run-once"]);

    let path = w.sb.path("textfile/ops_agent.prom");
    let text = std::fs::read_to_string(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "readable by node_exporter's user");
    let scrape = parse_prometheus(&text);
    let state = w.sb.state_json();
    let mm_requests = state["last_cycle"]["counts"]["mm_requests"]
        .as_f64()
        .unwrap();
    assert!(mm_requests > 0.0);
    let started = state["last_cycle"]["started_ms"].as_f64().unwrap() / 1000.0;
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], f64, &'a str);
    let want: &[Row] = &[
        (
            "ops_agent_cycles_total",
            &[("outcome", "ok")],
            1.0,
            "counter",
        ),
        (
            "ops_agent_cycles_total",
            &[("outcome", "degraded")],
            0.0,
            "counter",
        ),
        (
            "ops_agent_cycle_duration_seconds_count",
            &[],
            1.0,
            "untyped",
        ),
        (
            "ops_agent_last_cycle_outcome",
            &[("outcome", "ok")],
            1.0,
            "gauge",
        ),
        (
            "ops_agent_last_cycle_timestamp_seconds",
            &[],
            started,
            "gauge",
        ),
        (
            "ops_agent_last_success_timestamp_seconds",
            &[],
            started,
            "gauge",
        ),
        (
            "ops_agent_last_cycle_stage_outcome",
            &[("stage", "mattermost"), ("outcome", "ok")],
            1.0,
            "gauge",
        ),
        (
            "ops_agent_last_cycle_stage_outcome",
            &[("stage", "intel"), ("outcome", "skipped")],
            1.0,
            "gauge",
        ),
        (
            "ops_agent_stage_outcomes_total",
            &[("stage", "classify"), ("outcome", "ok")],
            1.0,
            "counter",
        ),
        (
            "ops_agent_check_status",
            &[("check", "web"), ("service", "web")],
            0.0,
            "gauge",
        ),
        (
            "ops_agent_check_status",
            &[("check", "api"), ("service", "backend")],
            2.0,
            "gauge",
        ),
        (
            "ops_agent_check_results_total",
            &[("status", "critical")],
            1.0,
            "counter",
        ),
        (
            "ops_agent_posts_classified_total",
            &[("path", "llm")],
            3.0,
            "counter",
        ),
        (
            "ops_agent_posts_classified_total",
            &[("path", "fallback")],
            0.0,
            "counter",
        ),
        // The fallback's name until 0.2.0, for dashboards written against it.
        (
            "ops_agent_posts_classified_total",
            &[("path", "keywords")],
            0.0,
            "counter",
        ),
        (
            "ops_agent_posts_fallback_part_total",
            &[("part", "model")],
            0.0,
            "counter",
        ),
        (
            "ops_agent_posts_labelled_total",
            &[("label", "task")],
            1.0,
            "counter",
        ),
        (
            "ops_agent_posts_labelled_total",
            &[("label", "incident")],
            1.0,
            "counter",
        ),
        (
            "ops_agent_posts_labelled_total",
            &[("label", "routine")],
            1.0,
            "counter",
        ),
        ("ops_agent_posts_handled_total", &[], 3.0, "counter"),
        (
            "ops_agent_last_cycle_posts",
            &[("state", "new")],
            3.0,
            "gauge",
        ),
        ("ops_agent_tasks_created_total", &[], 2.0, "counter"),
        ("ops_agent_tasks_failed_total", &[], 0.0, "counter"),
        ("ops_agent_cards_created_total", &[], 2.0, "counter"),
        ("ops_agent_replies_posted_total", &[], 2.0, "counter"),
        ("ops_agent_fixes_attempted_total", &[], 0.0, "counter"),
        (
            "ops_agent_fixes_total",
            &[("outcome", "verified")],
            0.0,
            "counter",
        ),
        (
            "ops_agent_outbox_pending",
            &[("kind", "card")],
            0.0,
            "gauge",
        ),
        ("ops_agent_incidents_open", &[], 0.0, "gauge"),
        ("ops_agent_silences_active", &[], 0.0, "gauge"),
        (
            "ops_agent_last_cycle_mattermost_requests",
            &[],
            mm_requests,
            "gauge",
        ),
        (
            "ops_agent_mattermost_requests_total",
            &[],
            mm_requests,
            "counter",
        ),
    ];
    for (metric, labels, v, kind) in want {
        let (got, got_kind) = value(&scrape, metric, labels);
        assert_eq!((got, got_kind), (*v, *kind), "{metric} {labels:?}");
    }
    assert!(
        scrape.docs.contains_key("ops_agent_check_status"),
        "HELP lines"
    );

    // `stats --prometheus` prints the same, from the stats and state files.
    assert_eq!(w.run(&["stats", "--prometheus"]), text);
    // A second cycle: counters go on, gauges follow the cycle.
    w.run(&["run-once"]);
    let scrape = parse_prometheus(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(
        value(&scrape, "ops_agent_cycles_total", &[("outcome", "ok")]).0,
        2.0
    );
    assert_eq!(value(&scrape, "ops_agent_tasks_created_total", &[]).0, 2.0);
    assert_eq!(
        value(&scrape, "ops_agent_last_cycle_posts", &[("state", "new")]).0,
        0.0
    );
    assert_eq!(
        value(&scrape, "ops_agent_incidents_open", &[]).0,
        1.0,
        "api has failed twice"
    );
}

#[test]
fn the_textfile_mode_is_configurable_and_a_dry_run_writes_nothing() {
    let w = World::new("");
    let mut sb = w.sb;
    // [metrics] is already in the config: set the mode there.
    sb.extra = sb.extra.replace(
        "textfile = \"~/textfile/ops_agent.prom\"",
        "textfile = \"~/textfile/ops_agent.prom\"\nmode = \"0640\"",
    );
    let out = sb.run(&["run-once", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let path = sb.path("textfile/ops_agent.prom");
    assert!(!path.exists(), "a dry run writes no textfile");
    assert!(w.hb.pings().is_empty(), "a dry run sends no ping");
    assert!(
        sb.audit_lines().is_empty(),
        "a dry run writes no audit line"
    );
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn heartbeat_success_then_fail_when_degraded_past_the_tolerance() {
    let w = World::new("");
    w.run(&["run-once"]);
    let pings = w.hb.pings();
    assert_eq!(pings.len(), 1, "{pings:?}");
    assert_eq!(pings[0].method, "POST");
    assert_eq!(pings[0].path, format!("/ping/{UUID}"));
    assert!(
        pings[0].body.starts_with("cycle ok in "),
        "{:?}",
        pings[0].body
    );
    assert!(
        pings[0].body.contains("mattermost=ok"),
        "{:?}",
        pings[0].body
    );
    let status = w.run(&["status"]);
    let line = status.lines().find(|l| l.starts_with("heartbeat")).unwrap();
    assert!(
        line.contains("success ping to http://127.0.0.1:") && line.contains("-> HTTP 200"),
        "{line}"
    );
    assert!(
        !status.contains(UUID),
        "the ping URL is not shown: {status}"
    );
    let doctor = w.sb.run(&["doctor"]);
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    let line = doctor.lines().find(|l| l.contains("heartbeat")).unwrap();
    assert!(
        line.starts_with("ok") && line.contains("HTTP 200"),
        "{line}"
    );

    // Mattermost down: the cycle runs degraded. The default tolerance (2)
    // still pings success twice, then /fail with the summary.
    w.mm.set_fault(Fault::Refuse);
    for _ in 0..3 {
        w.run(&["run-once"]);
    }
    let pings = w.hb.pings();
    let paths: Vec<&str> = pings.iter().map(|p| p.path.as_str()).collect();
    let ok = format!("/ping/{UUID}");
    let fail = format!("/ping/{UUID}/fail");
    assert_eq!(paths, [&ok, &ok, &ok, &fail], "{pings:?}");
    let last = pings.last().unwrap();
    assert!(
        last.body.starts_with("cycle degraded") && last.body.contains("mattermost=degraded"),
        "{:?}",
        last.body
    );
    let doctor = w.sb.run(&["doctor"]);
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.contains("told the cycle failed"), "{doctor}");

    // Back to ok: success again at once.
    w.mm.clear_fault();
    w.run(&["run-once"]);
    assert_eq!(w.hb.pings().last().unwrap().path, ok);
}

/// The LLM and Planka are optional: with both down every post is still
/// labelled (the fallback), filed (the card waits) and answered (the
/// template). That is shown (the summary line, `status`, the metrics, one
/// warning per cycle) but is not a degraded cycle, so the heartbeat never
/// goes to `/fail` however long it lasts; Mattermost down still does (see
/// the test above).
#[test]
fn optional_dependencies_down_are_shown_but_never_page() {
    let w = World::new("");
    w.run(&["run-once"]);
    w.llm.set_fault(Fault::Refuse);
    w.planka.set_fault(Fault::Refuse);
    for i in 0..4 {
        let post = w.say(&w.alice, &format!("please add a DNS record number {i}"));
        w.run(&["run-once"]);
        assert_eq!(w.mm.tagged_replies(&w.agent, &post).len(), 1, "answered");
        assert_eq!(w.sb.ledger_tasks_for(&post), 1, "filed");
    }
    let pings = w.hb.pings();
    assert!(
        pings.iter().all(|p| !p.path.ends_with("/fail")),
        "{:#?}",
        pings.iter().map(|p| (&p.path, &p.body)).collect::<Vec<_>>()
    );
    let st = w.sb.state_json();
    let last = &st["last_cycle"];
    for stage in ["classify", "tasks", "reply"] {
        let s = last["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap();
        assert_eq!(s["outcome"], "ok", "{s}");
    }
    let fallbacks: Vec<&str> = last["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["stage"].as_str().unwrap())
        .collect();
    assert_eq!(fallbacks, ["classify", "tasks", "reply"], "{last}");
    let why = |stage: &str| {
        last["fallbacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["stage"] == stage)
            .unwrap()["why"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        why("classify").starts_with(
            "the LLM stopped for this cycle (unreachable); the fallback labelled 1 post(s)"
        ),
        "{last}"
    );
    assert!(why("tasks").contains("1 card(s) not made"), "{last}");
    assert!(
        why("reply").contains("1 reply(ies) from the template"),
        "{last}"
    );

    // The log: one summary line per cycle saying so, and one warning.
    let log = w.sb.log_text();
    let summaries: Vec<&str> = log.lines().filter(|l| l.contains("cycle ok in")).collect();
    assert_eq!(summaries.len(), 5, "{log}");
    assert!(
        summaries[1..]
            .iter()
            .all(|l| l.ends_with("[fallback: classify, tasks, reply]")),
        "{summaries:#?}"
    );
    let warned = log
        .lines()
        .filter(|l| l.contains("Optional dependency down, its fallback stood in"))
        .count();
    assert_eq!(warned, 4, "one warning per cycle:\n{log}");
    let per_item: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN "))
        .filter(|l| {
            ["ollama", "classify", "chat::reply", "outbox::card"]
                .iter()
                .any(|m| l.contains(&format!("ops_agent::{m}")))
        })
        .collect();
    assert!(
        per_item.is_empty(),
        "only the cycle's warning: {per_item:#?}"
    );

    let status = w.run(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("fallback     classify: ")),
        "{status}"
    );
    let scrape = parse_prometheus(&w.run(&["stats", "--prometheus"]));
    assert_eq!(
        value(
            &scrape,
            "ops_agent_last_cycle_outcome",
            &[("outcome", "ok")]
        )
        .0,
        1.0
    );
    for stage in ["classify", "tasks", "reply"] {
        assert_eq!(
            value(
                &scrape,
                "ops_agent_last_cycle_stage_fallback",
                &[("stage", stage)]
            )
            .0,
            1.0,
            "{stage}"
        );
        assert_eq!(
            value(
                &scrape,
                "ops_agent_stage_fallbacks_total",
                &[("stage", stage)]
            ),
            (4.0, "counter"),
            "{stage}"
        );
    }
    assert_eq!(
        value(
            &scrape,
            "ops_agent_cycles_total",
            &[("outcome", "degraded")]
        )
        .0,
        0.0
    );

    // Back: the cards are made, nothing is in fallback any more.
    w.llm.clear_fault();
    w.planka.clear_fault();
    w.sb.make_outbox_due();
    w.run(&["run-once"]);
    assert_eq!(w.planka.cards().len(), 4);
    let st = w.sb.state_json();
    assert!(
        st["last_cycle"].get("fallbacks").is_none(),
        "{}",
        st["last_cycle"]
    );
}

#[test]
fn heartbeat_server_down_or_hanging_never_fails_the_cycle() {
    let w = World::new("");
    w.hb.server().set_fault(Fault::Refuse);
    w.run(&["run-once"]);
    let status = w.run(&["status"]);
    let line = status.lines().find(|l| l.starts_with("heartbeat")).unwrap();
    assert!(
        line.contains("FAILED") && line.contains("Connection refused"),
        "{line}"
    );
    assert!(
        w.sb.log_text()
            .contains("WARN ops_agent::cycle: Heartbeat: success ping"),
        "{}",
        w.sb.log_text()
    );
    assert!(
        !w.sb.log_text().contains(UUID),
        "the ping URL is not logged"
    );
    let doctor = w.sb.run(&["doctor"]);
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    let line = doctor.lines().find(|l| l.contains("heartbeat")).unwrap();
    assert!(line.starts_with("warn"), "{line}");

    // A ping service that accepts and never answers: given up after
    // timeout_secs, recorded, the cycle still exits 0 with its state saved.
    w.hb.server().set_fault(Fault::Hang);
    let mut sb = w.sb;
    sb.extra = sb.extra.replace("timeout_secs = 2.5", "timeout_secs = 0.3");
    assert!(sb.extra.contains("timeout_secs = 0.3"), "{}", sb.extra);
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(sb.stats()).unwrap()).unwrap();
    assert_eq!(stats["cycles"], 2);
    let err = stats["heartbeat"]["error"].as_str().unwrap();
    assert!(err.contains("no answer within 300 ms"), "{err}");
}

fn fill(path: &std::path::Path, bytes: usize, marker: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let line = format!("{marker}\n");
    std::fs::write(path, line.repeat(bytes / line.len() + 1)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn logs_rotate_by_size_at_cycle_start_and_keep_their_path() {
    let mut b = WorldBuilder::new();
    b.line("log", "max_bytes = 4096")
        .line("log", "keep = 2")
        .line(
            "log",
            "also_rotate = [\"~/system/logs/ops-agent.launchd.err.log\"]",
        );
    let sb = b.sandbox();
    let log = sb.log();
    let audit = sb.audit_path();
    let err = sb.path("system/logs/ops-agent.launchd.err.log");
    let rotated =
        |p: &std::path::Path, n: u32| std::path::PathBuf::from(format!("{}.{n}", p.display()));
    for round in 1..=3 {
        fill(&log, 5000, &format!("old log {round}"));
        fill(
            &audit,
            5000,
            &format!("{{\"at\":\"2026-05-0{round}T00:00:00.000Z\",\"event\":\"x\"}}"),
        );
        fill(&err, 5000, &format!("old err {round}"));
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
        let now = sb.log_text();
        assert!(
            now.contains("Cycle started.") && !now.contains("old log"),
            "{now}"
        );
        assert!(now.contains("Log rotated."), "{now}");
        assert!(std::fs::read_to_string(rotated(&log, 1))
            .unwrap()
            .starts_with(&format!("old log {round}")));
        assert!(!err.exists(), "launchd creates it again at the next start");
    }
    // keep = 2: the third round pushed the first out.
    assert!(std::fs::read_to_string(rotated(&log, 2))
        .unwrap()
        .starts_with("old log 2"));
    assert!(!rotated(&log, 3).exists());
    assert!(std::fs::read_to_string(rotated(&err, 2))
        .unwrap()
        .starts_with("old err 2"));
    // The audit trail too; `audit` still reads the rotated files.
    assert!(std::fs::read_to_string(rotated(&audit, 1))
        .unwrap()
        .contains("2026-05-03"));
    let out = sb.run(&["audit", "--json"]);
    let n = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(n > 100, "rotated lines are read too: {n}");
    let out = sb.run(&["audit", "--json", "--since", "2026-05-03"]);
    let since: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        since
            .iter()
            .all(|l| l["at"].as_str().unwrap() >= "2026-05-03"),
        "{since:?}"
    );
    assert!(!since.is_empty());
    // A small file stays as it is.
    let before = sb.log_text();
    let out = sb.run(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(sb.log_text().starts_with(&before));
}

#[test]
fn an_external_rotation_between_runs_is_harmless() {
    // newsyslog or logrotate renames the files between two cycles: the
    // next cycle creates them again by path, and never writes into the
    // renamed ones.
    let w = World::new("");
    w.say(&w.alice, "please add a DNS record for shop.example.com");
    w.run(&["run-once"]);
    let log = w.sb.log();
    let audit = w.sb.audit_path();
    let moved_log = w.sb.path("system/logs/ops-agent.log.0");
    let moved_audit = w.sb.path("system/logs/ops-agent-audit.jsonl.0");
    std::fs::rename(&log, &moved_log).unwrap();
    std::fs::rename(&audit, &moved_audit).unwrap();
    let (log_before, audit_before) = (
        std::fs::read(&moved_log).unwrap(),
        std::fs::read(&moved_audit).unwrap(),
    );
    w.say(&w.alice, "the shop is down");
    w.run(&["run-once"]);
    assert_eq!(std::fs::read(&moved_log).unwrap(), log_before);
    assert_eq!(std::fs::read(&moved_audit).unwrap(), audit_before);
    let fresh = w.sb.log_text();
    assert!(
        fresh.contains("Cycle started.") && fresh.contains("cycle ok"),
        "{fresh}"
    );
    let lines = w.sb.audit_lines();
    assert_eq!(events(&lines, "post_classified").len(), 1, "{lines:#?}");
    assert_eq!(events(&lines, "post_classified")[0]["label"], "INCIDENT");
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // `audit` reads newsyslog's `.0` before the new file: the whole story.
    let why = w.run(&["audit"]);
    let (task, incident) = (why.find("labelled TASK"), why.find("labelled INCIDENT"));
    assert!(
        task.is_some() && incident.is_some() && task < incident,
        "{why}"
    );
}

/// Every metric the shipped alert rules read is one a cycle writes, so a
/// renamed metric cannot leave an alert that never fires (promtool, in CI,
/// tests the rules' logic on series it is given).
#[test]
fn the_shipped_alert_rules_read_metrics_the_agent_writes() {
    let rules = include_str!("../../docs/prometheus/ops-agent.rules.yml");
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("ops_agent_"))
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() >= 4, "{used:?}");
    let w = World::new("");
    w.run(&["run-once"]);
    let scrape = parse_prometheus(&w.run(&["stats", "--prometheus"]));
    for metric in used {
        assert!(
            scrape.samples.iter().any(|s| s.metric == metric),
            "the rules read {metric}, which the textfile does not have"
        );
    }
}
