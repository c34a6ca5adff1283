//! Nothing lost, nothing twice: `ensure_task` and `retry_outbox` against the
//! built-in ledger, the fake MC command and the fake Planka, through
//! outages, retries and crashes (a crash is simulated by dropping the
//! in-memory `TaskState` while keeping the files a real crash would keep).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use ops_agent::tasks::ledger::{Ledger, ListFilter};
use ops_agent::tasks::mc::{McBackend, McConfig};
use ops_agent::tasks::outbox::{
    ensure_task, retry_outbox, CardOutcome, Targets, TaskState, WorkKind,
};
use ops_agent::tasks::planka::{BoardTarget, PlankaClient, PlankaConfig};
use ops_agent::tasks::{BillingConfig, PostRef, Priority, Tag, Task};
use ops_agent::time::Secs;

use crate::support::fault::Fault;
use crate::support::planka::{FakePlanka, PASSWORD, USERNAME};

const PW_ENV: &str = "OPS_AGENT_TEST_FLOW_PLANKA_PW";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 10, 12, 0, 0).unwrap()
}

fn post_task(id: &str, team: &str, label: &str, message: &str) -> Task {
    let permalink = format!("http://mm/{team}/pl/{id}");
    let post = PostRef {
        post_id: id,
        message,
        author: "alice",
        team,
        channel: "town-square",
        permalink: &permalink,
    };
    Task::from_post(post, label, "ops", &BillingConfig::default())
}

struct Env {
    _dir: tempfile::TempDir,
    ledger_path: PathBuf,
    fake: FakePlanka,
    planka: PlankaClient,
    mc: McBackend,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("state/ops-tasks.jsonl");
    let fake = FakePlanka::start().await;
    fake.seed(&[("Wizard", "Inbox"), ("Basic", "Inbox")]);
    std::env::set_var(PW_ENV, PASSWORD);
    let mut boards = BTreeMap::new();
    boards.insert(
        "wizard".into(),
        BoardTarget {
            project: None,
            board: "Wizard".into(),
            list: "Inbox".into(),
        },
    );
    boards.insert(
        "basic".into(),
        BoardTarget {
            project: None,
            board: "Basic".into(),
            list: "Inbox".into(),
        },
    );
    let cfg = PlankaConfig {
        url: fake.url.clone(),
        username: Some(USERNAME.into()),
        password_env: PW_ENV.into(),
        timeout_secs: Secs::new(2),
        boards,
        ..Default::default()
    };
    let planka = PlankaClient::new(&cfg, None).unwrap();
    let mc = McBackend::from_config(&McConfig::default(), ledger_path.clone()).unwrap();
    Env {
        _dir: dir,
        ledger_path,
        fake,
        planka,
        mc,
    }
}

impl Env {
    fn targets(&self) -> Targets<'_> {
        Targets {
            mc: &self.mc,
            planka: Some(&self.planka),
            dry_run: false,
        }
    }
    fn ledger(&self) -> Ledger {
        Ledger::new(self.ledger_path.clone())
    }
}

#[tokio::test]
async fn wizard_task_makes_one_billable_task_and_one_labelled_card() {
    let e = env().await;
    let mut state = TaskState::default();
    let t = post_task(
        "p1",
        "wizard",
        "TASK",
        "Please deploy the new API\nby Friday",
    );
    let out = ensure_task(&t, 0, e.targets(), &mut state, now())
        .await
        .unwrap();
    assert!(out.created_now);
    assert_eq!(out.task_ref.id, "OPS-1");
    let CardOutcome::Created { card_id, url } = &out.card else {
        panic!("{:?}", out.card)
    };
    assert_eq!(out.task_ref.url.as_deref(), Some(url.as_str()));
    assert_eq!(e.fake.label_names_of(card_id), vec!["BILLABLE"]);
    let tasks = e.ledger().load().unwrap().tasks;
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        (tasks[0].task.tag, tasks[0].task.priority),
        (Tag::Billable, Priority::Normal)
    );
    assert_eq!(tasks[0].card_url.as_deref(), Some(url.as_str()));
    assert_eq!(
        state.mapping["p1"].card_id.as_deref(),
        Some(card_id.as_str())
    );

    // The same post again (a retried cycle): nothing new anywhere.
    let again = ensure_task(&t, 0, e.targets(), &mut state, now())
        .await
        .unwrap();
    assert!(!again.created_now);
    assert_eq!(again.task_ref.id, "OPS-1");
    assert!(matches!(again.card, CardOutcome::Exists { .. }));
    assert_eq!(e.fake.cards().len(), 1);
    assert_eq!(e.ledger().load().unwrap().tasks.len(), 1);
}

#[tokio::test]
async fn basic_is_internal_and_incident_is_high() {
    let e = env().await;
    let mut state = TaskState::default();
    let a = ensure_task(
        &post_task("p1", "basic", "TASK", "clean the logs"),
        0,
        e.targets(),
        &mut state,
        now(),
    )
    .await
    .unwrap();
    let b = ensure_task(
        &post_task("p2", "wizard", "INCIDENT", "site is down!"),
        0,
        e.targets(),
        &mut state,
        now(),
    )
    .await
    .unwrap();
    let tasks = e.ledger().load().unwrap().tasks;
    assert_eq!(
        (tasks[0].task.tag, tasks[0].task.priority),
        (Tag::Internal, Priority::Normal)
    );
    assert_eq!(
        (tasks[1].task.tag, tasks[1].task.priority),
        (Tag::Billable, Priority::High)
    );
    let CardOutcome::Created { card_id, .. } = a.card else {
        panic!()
    };
    assert_eq!(e.fake.label_names_of(&card_id), vec!["INTERNAL"]);
    assert!(matches!(b.card, CardOutcome::Created { .. }));
}

#[tokio::test]
async fn planka_down_gives_task_now_and_card_on_retry_exactly_once() {
    let e = env().await;
    let mut state = TaskState::default();
    let t = post_task("p1", "wizard", "TASK", "do the thing");
    e.fake.set_fault(Fault::Refuse);
    let out = ensure_task(&t, 0, e.targets(), &mut state, now())
        .await
        .unwrap();
    assert!(out.created_now);
    assert!(
        matches!(out.card, CardOutcome::Pending { .. }),
        "{:?}",
        out.card
    );
    assert_eq!(state.outbox.len(), 1);
    assert_eq!(state.outbox[0].kind, WorkKind::CreateCard);
    assert!(!state.pending(now().timestamp_millis())[0]
        .last_error
        .is_empty());

    // The post is retried within the backoff: still one task, card still queued.
    let again = ensure_task(&t, 0, e.targets(), &mut state, now())
        .await
        .unwrap();
    assert!(!again.created_now);
    assert!(matches!(again.card, CardOutcome::Pending { .. }));
    // Not due yet: nothing is tried.
    assert!(retry_outbox(e.targets(), &mut state, now())
        .await
        .is_empty());

    e.fake.clear_fault();
    let later = now() + Duration::minutes(5);
    let results = retry_outbox(e.targets(), &mut state, later).await;
    assert_eq!(results.len(), 1);
    let ok = results[0].outcome.as_ref().unwrap();
    assert!(matches!(ok.card, CardOutcome::Created { .. }));
    assert!(state.outbox.is_empty());
    assert!(
        retry_outbox(e.targets(), &mut state, later + Duration::hours(2))
            .await
            .is_empty()
    );
    assert_eq!(e.fake.cards().len(), 1);
    assert_eq!(e.ledger().load().unwrap().tasks.len(), 1);
    assert!(e.ledger().load().unwrap().tasks[0].card_url.is_some());
}

#[tokio::test]
async fn planka_failures_back_off_exponentially() {
    let e = env().await;
    let mut state = TaskState::default();
    e.fake.set_fault(Fault::Status(500));
    ensure_task(
        &post_task("p1", "wizard", "TASK", "x"),
        0,
        e.targets(),
        &mut state,
        now(),
    )
    .await
    .unwrap();
    let t1 = state.outbox[0].next_attempt_ms;
    let r = retry_outbox(
        e.targets(),
        &mut state,
        DateTime::from_timestamp_millis(t1).unwrap(),
    )
    .await;
    assert!(r[0].outcome.is_err());
    assert_eq!(state.outbox[0].attempts, 2);
    assert_eq!(state.outbox[0].next_attempt_ms - t1, 120_000);
    assert!(state.outbox[0].last_error.contains("HTTP 500"));
}

#[tokio::test]
async fn crash_after_mc_before_planka_makes_no_second_task() {
    let e = env().await;
    let t = post_task("p1", "wizard", "TASK", "do the thing");
    {
        let mut state = TaskState::default();
        e.fake.set_fault(Fault::Refuse);
        ensure_task(&t, 0, e.targets(), &mut state, now())
            .await
            .unwrap();
        // Crash: the state (mapping and outbox) is never saved.
    }
    e.fake.clear_fault();
    let mut fresh = TaskState::default();
    let out = ensure_task(&t, 0, e.targets(), &mut fresh, now())
        .await
        .unwrap();
    assert!(!out.created_now);
    assert_eq!(out.task_ref.id, "OPS-1");
    assert!(matches!(out.card, CardOutcome::Created { .. }));
    assert_eq!(e.ledger().load().unwrap().tasks.len(), 1);
    assert_eq!(e.fake.cards().len(), 1);

    // Crash after the card too: the ledger's update names the card.
    let mut fresh2 = TaskState::default();
    let out = ensure_task(&t, 0, e.targets(), &mut fresh2, now())
        .await
        .unwrap();
    assert!(matches!(out.card, CardOutcome::Exists { .. }));
    assert_eq!(e.fake.cards().len(), 1);
}

#[tokio::test]
async fn ledger_unwritable_is_an_mc_error_and_nothing_is_recorded() {
    let e = env().await;
    std::fs::create_dir_all(&e.ledger_path).unwrap(); // a directory where the file goes
    let mut state = TaskState::default();
    let t = post_task("p1", "wizard", "TASK", "x");
    let err = ensure_task(&t, 0, e.targets(), &mut state, now())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("ledger"), "{err:#}");
    assert_eq!(state, TaskState::default());
    assert!(e.fake.cards().is_empty());
    std::fs::remove_dir(&e.ledger_path).unwrap();
    let out = ensure_task(&t, 0, e.targets(), &mut state, now())
        .await
        .unwrap();
    assert!(out.created_now);
    assert_eq!(e.ledger().load().unwrap().tasks.len(), 1);
}

fn argv_calls(path: &Path) -> usize {
    std::fs::read(path)
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|el| *el == b"--END--")
        .count()
}

#[tokio::test]
async fn command_mc_down_then_exactly_once_even_after_a_crash() {
    let e = env().await;
    let dir = tempfile::tempdir().unwrap();
    let argv = dir.path().join("argv");
    let flag = dir.path().join("mc-down");
    std::env::set_var("MC_ARGV_FILE", &argv);
    std::env::set_var("MC_FAIL_FLAG", &flag);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mc/record.sh");
    let cfg = McConfig {
        command: vec![
            script.display().to_string(),
            "create".into(),
            "--title".into(),
            "{title}".into(),
            "--source".into(),
            "{source}".into(),
        ],
        pass_env: vec!["MC_ARGV_FILE".into(), "MC_FAIL_FLAG".into()],
        ..Default::default()
    };
    let mc = McBackend::from_config(&cfg, e.ledger_path.clone()).unwrap();
    let targets = Targets {
        mc: &mc,
        planka: Some(&e.planka),
        dry_run: false,
    };
    let t = post_task("p1", "wizard", "TASK", "it's \"urgent\" $(reboot)");

    std::fs::write(&flag, "").unwrap();
    let mut state = TaskState::default();
    let err = ensure_task(&t, 0, targets, &mut state, now())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("service unavailable"),
        "{err:#}"
    );
    assert_eq!(state, TaskState::default());
    assert!(e.fake.cards().is_empty());
    assert!(e.ledger().load().unwrap().tasks.is_empty());

    std::fs::remove_file(&flag).unwrap();
    let out = ensure_task(&t, 0, targets, &mut state, now())
        .await
        .unwrap();
    assert_eq!(out.task_ref.id, "MC-1");
    assert!(matches!(out.card, CardOutcome::Created { .. }));
    assert_eq!(argv_calls(&argv), 1);
    // The ledger journals the command's task for `tasks list` and crash safety.
    let journal = e.ledger().load().unwrap().tasks;
    assert_eq!(
        (
            journal.len(),
            journal[0].id.as_str(),
            journal[0].backend.as_str()
        ),
        (1, "MC-1", "command")
    );

    // Crash before the state was saved: the journal stops a second call.
    let mut fresh = TaskState::default();
    let again = ensure_task(&t, 0, targets, &mut fresh, now())
        .await
        .unwrap();
    assert!(!again.created_now);
    assert_eq!(again.task_ref.id, "MC-1");
    assert_eq!(argv_calls(&argv), 1);
    assert_eq!(e.fake.cards().len(), 1);
}

#[tokio::test]
async fn escalation_queued_on_mc_failure_is_created_once_by_retry() {
    let e = env().await;
    std::fs::create_dir_all(&e.ledger_path).unwrap();
    let mut state = TaskState::default();
    let t = Task::escalation(
        "web:down",
        "web is down",
        "3 restarts failed",
        "ops",
        Some("basic"),
    );
    let err = ensure_task(&t, 0, e.targets(), &mut state, now())
        .await
        .unwrap_err();
    state.enqueue(
        WorkKind::CreateTask,
        &t,
        None,
        &err,
        now().timestamp_millis(),
    );
    std::fs::remove_dir(&e.ledger_path).unwrap();
    let later = now() + Duration::minutes(5);
    let r = retry_outbox(e.targets(), &mut state, later).await;
    assert_eq!(r.len(), 1);
    assert!(r[0].outcome.as_ref().unwrap().created_now);
    assert!(state.outbox.is_empty());
    assert!(
        retry_outbox(e.targets(), &mut state, later + Duration::hours(3))
            .await
            .is_empty()
    );
    let tasks = e.ledger().load().unwrap().tasks;
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        (tasks[0].task.priority, tasks[0].task.label.as_str()),
        (Priority::High, "ESCALATION")
    );
    assert_eq!(e.fake.cards().len(), 1);
}

#[tokio::test]
async fn list_and_stats_match_what_was_created_and_torn_line_is_skipped() {
    let e = env().await;
    let mut state = TaskState::default();
    ensure_task(
        &post_task("p1", "wizard", "TASK", "a"),
        0,
        e.targets(),
        &mut state,
        now(),
    )
    .await
    .unwrap();
    ensure_task(
        &post_task("p2", "basic", "TASK", "b"),
        0,
        e.targets(),
        &mut state,
        now(),
    )
    .await
    .unwrap();
    // A crash mid-write leaves a torn last line...
    let mut bytes = std::fs::read(&e.ledger_path).unwrap();
    bytes.extend_from_slice(b"{\"kind\":\"create\",\"id\":\"OPS-3\",\"title\":\"half");
    ops_agent::files::write_private_atomic(&e.ledger_path, &bytes).unwrap();
    // ...which readers skip and the next append does not swallow.
    let day2 = now() + Duration::days(1);
    ensure_task(
        &post_task("p3", "riad", "INCIDENT", "c"),
        0,
        e.targets(),
        &mut state,
        day2,
    )
    .await
    .unwrap();

    // What `tasks list` streams: the ids listed, and the unreadable lines.
    let list = |f: ListFilter| {
        let mut ids = Vec::new();
        let skipped = e
            .ledger()
            .list(&f, |t| {
                ids.push(t.id.clone());
                Ok(())
            })
            .unwrap();
        (ids, skipped.len())
    };
    let (all, skipped) = list(ListFilter::default());
    assert_eq!(all, vec!["OPS-1", "OPS-2", "OPS-3"]);
    assert_eq!(skipped, 1);
    let (billable, _) = list(ListFilter {
        tag: Some(Tag::Billable),
        owner: Some("ops".into()),
        since: None,
    });
    assert_eq!(billable.len(), 2);
    let (recent, _) = list(ListFilter {
        since: Some(day2),
        ..Default::default()
    });
    assert_eq!(recent.len(), 1);
    assert!(list(ListFilter {
        owner: Some("bob".into()),
        ..Default::default()
    })
    .0
    .is_empty());

    let s = e.ledger().stats().unwrap();
    assert_eq!(s.total, 3);
    assert_eq!(s.by_tag["BILLABLE"], 2);
    assert_eq!(s.by_tag["INTERNAL"], 1);
    assert_eq!(s.by_priority["HIGH"], 1);
    assert_eq!(s.by_label["INCIDENT"], 1);
    assert_eq!(s.by_day["2024-05-10"], 2);
    assert_eq!(s.by_day["2024-05-11"], 1);
    assert_eq!(s.with_card, 2, "riad has no board configured");
    assert_eq!(s.skipped_lines, 1);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["by_tag"]["BILLABLE"], 2);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let e = env().await;
    let mut state = TaskState::default();
    let targets = Targets {
        dry_run: true,
        ..e.targets()
    };
    let out = ensure_task(
        &post_task("p1", "wizard", "TASK", "a"),
        0,
        targets,
        &mut state,
        now(),
    )
    .await
    .unwrap();
    assert!(out.dry_run && out.created_now);
    assert_eq!(out.card, CardOutcome::WouldCreate);
    assert_eq!(state, TaskState::default());
    assert!(!e.ledger_path.exists());
    assert!(e.fake.requests().is_empty());
    let none = Targets {
        planka: None,
        ..targets
    };
    let out = ensure_task(
        &post_task("p1", "wizard", "TASK", "a"),
        0,
        none,
        &mut state,
        now(),
    )
    .await
    .unwrap();
    assert!(matches!(out.card, CardOutcome::Disabled { .. }));
}
