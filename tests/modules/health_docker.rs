//! Docker checks and fixes against the fake engine: restart and verify,
//! the rolling-window limit, history reset, an unreachable engine, a blip
//! and a container still starting.

use std::path::{Path, PathBuf};

use crate::support::docker::{FakeContainer, FakeDocker, OnRestart};
use crate::support::http_endpoints::FakeEndpoints;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use ops_agent::fix::{
    self, Attempt, FixAction, FixConfig, FixDecision, FixHistory, FixOptions, FixReport, FixSpec,
    Outcome,
};
use ops_agent::health::{
    self, guard, CheckConfig, CheckKind, Checks, HealthConfig, HealthContext, HealthState, Status,
};
use ops_agent::time::Secs;

fn container_check(name: &str) -> CheckConfig {
    let mut c = CheckConfig::new(name, CheckKind::Docker);
    c.container = Some(name.into());
    c.fail_after = Some(1);
    c.fix = Some(FixSpec {
        settle_secs: Secs::new(0),
        ..FixSpec::new(FixAction::RestartContainer)
    });
    c
}

fn ctx(host: &str) -> HealthContext {
    HealthContext::new(&HealthConfig {
        reprobe_pause_ms: 10,
        docker_host: Some(host.into()),
        ..Default::default()
    })
}

/// One cycle's health and fix stages, as the cycle runs them.
async fn cycle(
    ctx: &HealthContext,
    checks: &Checks,
    state: &mut HealthState,
    history_path: &Path,
    now: DateTime<Utc>,
) -> (Vec<health::Verdict>, Vec<FixReport>) {
    let results = health::run_all(ctx, checks).await;
    let (mut history, notice) = FixHistory::load(history_path, now).unwrap();
    assert!(notice.is_none(), "{notice:?}");
    let verdicts = state.record(checks, &results, &history, now);
    let reports = fix::run_fixes(
        &fix::FixContext {
            health: ctx,
            checks,
            history_path,
            policy: &FixConfig::default(),
        },
        &verdicts,
        &mut history,
        false,
        now,
    )
    .await;
    (verdicts, reports)
}

fn history_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("ops-fix-history.json")
}

#[tokio::test]
async fn stopped_container_is_restarted_verified_and_recorded_once() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::exited("web"));
    fake.add(FakeContainer::healthy("db"));
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    let checks = vec![container_check("web"), container_check("db")];
    let checks = Checks::from(checks);
    let ctx = ctx(&fake.host());
    let mut state = HealthState::default();

    let (verdicts, reports) = cycle(&ctx, &checks, &mut state, &path, Utc::now()).await;
    assert_eq!(verdicts[0].result.name, "docker-engine");
    assert_eq!(verdicts[0].result.status, Status::Ok, "{:?}", verdicts[0]);
    assert!(verdicts[1].failing, "{:?}", verdicts[1]);
    assert!(verdicts[1].result.reason.contains("exited (exit code 137)"));
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(
        (r.service.as_str(), r.outcome),
        ("web", Some(Outcome::Verified)),
        "{r:?}"
    );
    assert_eq!(r.budget.left, 2);
    assert_eq!(fake.restarts("web"), 1);
    assert_eq!(fake.restarts("db"), 0);
    let restart = fake
        .requests()
        .into_iter()
        .find(|q| q.path.ends_with("/restart"))
        .unwrap();
    assert_eq!(restart.query, "t=10");
    // The client never sends a version prefix newer than dockerd 20.10's.
    for q in fake.requests() {
        assert!(
            q.path.starts_with("/v1.41/") || !q.path.starts_with("/v1."),
            "{q:?}"
        );
    }

    let (history, _) = FixHistory::load(&path, Utc::now()).unwrap();
    let web = &history.attempts["web"];
    assert_eq!(web.len(), 1);
    assert_eq!(web[0].outcome, Outcome::Verified);
    assert_eq!(web[0].action, "restart_container");
    assert!(web[0].issue.contains("web"), "{:?}", web[0]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"version\": 1"), "{text}");

    // Next cycle: healthy, no new fix, and our own restart is not counted
    // as an unexpected one.
    let later = Utc::now() + ChronoDuration::minutes(5);
    let (verdicts, reports) = cycle(&ctx, &checks, &mut state, &path, later).await;
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(verdicts[1].result.status, Status::Ok, "{:?}", verdicts[1]);
    assert_eq!(verdicts[1].change, Some(guard::Change::Recovered));
    assert_eq!(verdicts[1].restarts_last_hour, 0);
    assert_eq!(fake.restarts("web"), 1);
}

#[tokio::test]
async fn container_that_stays_down_gets_three_attempts_per_rolling_hour() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::exited("web").on_restart(OnRestart::StaysDown));
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    let checks = vec![container_check("web")];
    let checks = Checks::from(checks);
    let ctx = ctx(&fake.host());
    let mut state = HealthState::default();
    let t0 = Utc::now();

    // Twelve 5-minute cycles: one hour.
    let mut decisions = Vec::new();
    for i in 0..12 {
        let (_, reports) = cycle(
            &ctx,
            &checks,
            &mut state,
            &path,
            t0 + ChronoDuration::minutes(5 * i),
        )
        .await;
        assert_eq!(reports.len(), 1);
        decisions.push(reports[0].clone());
    }
    assert_eq!(fake.restarts("web"), 3);
    let ran: Vec<_> = decisions
        .iter()
        .filter(|r| r.decision == FixDecision::Run)
        .collect();
    assert_eq!(ran.len(), 3);
    assert!(
        ran.iter().all(|r| r.outcome == Some(Outcome::Failed)),
        "{ran:?}"
    );
    assert!(
        ran[0].detail.as_deref().unwrap().contains("exited"),
        "{ran:?}"
    );
    match &decisions[3].decision {
        FixDecision::SkipBudgetSpent { next_allowed_at_ms } => {
            assert_eq!(
                *next_allowed_at_ms,
                (t0 + ChronoDuration::minutes(60)).timestamp_millis()
            )
        }
        other => panic!("expected the budget to be spent, got {other:?}"),
    }
    // The window moves: the first attempt leaves it at t0 + 60 min.
    let (_, reports) = cycle(
        &ctx,
        &checks,
        &mut state,
        &path,
        t0 + ChronoDuration::minutes(60),
    )
    .await;
    assert_eq!(reports[0].decision, FixDecision::Run);
    assert_eq!(fake.restarts("web"), 4);

    // The facts escalation needs.
    let (history, _) = FixHistory::load(&path, t0).unwrap();
    let now = t0 + ChronoDuration::minutes(61);
    let results = health::run_all(&ctx, &checks).await;
    let verdicts = state.record(&checks, &results, &history, now);
    let summary = fix::summarize(
        &checks,
        &verdicts,
        &[],
        &history,
        &FixConfig::default(),
        now,
    );
    let web = summary.iter().find(|s| s.service == "web").unwrap();
    assert!(web.failing);
    assert_eq!(web.failing_since_ms, Some(t0.timestamp_millis()));
    assert_eq!(web.budget.as_ref().unwrap().left, 0);
    assert_eq!(web.tried.len(), 3);
    assert!(web.consecutive_failures >= 13);
}

/// The service's HTTP endpoint, failing after one probe, with no fix of
/// its own: the container's restart is its fix.
fn endpoint_check(service: &str, url: String) -> CheckConfig {
    let mut c = CheckConfig::new(&format!("{service}-http"), CheckKind::Http);
    c.url = Some(url);
    c.service = Some(service.into());
    c.fail_after = Some(1);
    c
}

#[tokio::test]
async fn a_failing_endpoint_is_fixed_by_its_container_and_verified_by_itself() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::running("web"));
    let endpoints = FakeEndpoints::start().await;
    // The probe and the re-probe fail; after the restart it answers.
    endpoints.fail_next(2);
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    let checks = vec![
        container_check("web"),
        endpoint_check("web", endpoints.url("/flaky")),
    ];
    let checks = Checks::from(checks);
    let ctx = ctx(&fake.host());
    let mut state = HealthState::default();
    let (verdicts, reports) = cycle(&ctx, &checks, &mut state, &path, Utc::now()).await;
    assert!(!verdicts[1].failing, "{:?}", verdicts[1]);
    assert!(verdicts[2].failing, "{:?}", verdicts[2]);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r.outcome, Some(Outcome::Verified), "{r:?}");
    assert!(r.issue.starts_with("web-http:"), "{r:?}");
    assert_eq!(fake.restarts("web"), 1);
}

#[tokio::test]
async fn a_container_still_booting_behind_its_failing_endpoint_is_pending_not_failed() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::healthy("web").on_restart(OnRestart::Starting));
    let endpoints = FakeEndpoints::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    let checks = vec![
        container_check("web"),
        endpoint_check("web", endpoints.url("/status/503")),
    ];
    let checks = Checks::from(checks);
    let ctx = ctx(&fake.host());
    let mut state = HealthState::default();
    let (_, reports) = cycle(&ctx, &checks, &mut state, &path, Utc::now()).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(fake.restarts("web"), 1);
    assert_eq!(r.outcome, Some(Outcome::Pending), "{r:?}");
    let detail = r.detail.as_deref().unwrap();
    assert!(detail.starts_with("still starting after 0s"), "{detail}");
    let (history, _) = FixHistory::load(&path, Utc::now()).unwrap();
    assert_eq!(history.attempts["web"][0].outcome, Outcome::Pending);
}

fn attempt(at: DateTime<Utc>) -> Attempt {
    Attempt {
        at_ms: at.timestamp_millis(),
        action: "restart_container".into(),
        issue: "web exited".into(),
        outcome: Outcome::Failed,
        detail: None,
    }
}

#[tokio::test]
async fn prewritten_history_holds_the_limit_until_the_window_allows_and_deleting_it_resets() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::exited("web").on_restart(OnRestart::StaysDown));
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    let now = Utc::now();
    let mut h = FixHistory::default();
    for m in [50, 30, 10] {
        h.push("web", attempt(now - ChronoDuration::minutes(m)));
    }
    h.save(&path).unwrap();
    let checks = vec![container_check("web")];
    let checks = Checks::from(checks);
    let ctx = ctx(&fake.host());
    let mut state = HealthState::default();

    let (_, reports) = cycle(&ctx, &checks, &mut state, &path, now).await;
    assert_eq!(
        reports[0].decision,
        FixDecision::SkipBudgetSpent {
            next_allowed_at_ms: (now + ChronoDuration::minutes(10)).timestamp_millis()
        }
    );
    assert_eq!(fake.restarts("web"), 0);
    let (_, reports) = cycle(
        &ctx,
        &checks,
        &mut state,
        &path,
        now + ChronoDuration::minutes(9),
    )
    .await;
    assert!(matches!(
        reports[0].decision,
        FixDecision::SkipBudgetSpent { .. }
    ));
    assert_eq!(fake.restarts("web"), 0);
    let (_, reports) = cycle(
        &ctx,
        &checks,
        &mut state,
        &path,
        now + ChronoDuration::minutes(11),
    )
    .await;
    assert_eq!(reports[0].decision, FixDecision::Run);
    assert_eq!(fake.restarts("web"), 1);

    // Spent again; deleting the file resets the counters.
    let (_, reports) = cycle(
        &ctx,
        &checks,
        &mut state,
        &path,
        now + ChronoDuration::minutes(16),
    )
    .await;
    assert!(matches!(
        reports[0].decision,
        FixDecision::SkipBudgetSpent { .. }
    ));
    std::fs::remove_file(&path).unwrap();
    let (_, reports) = cycle(
        &ctx,
        &checks,
        &mut state,
        &path,
        now + ChronoDuration::minutes(21),
    )
    .await;
    assert_eq!(reports[0].decision, FixDecision::Run);
    assert_eq!(reports[0].budget.left, 2);
    assert_eq!(fake.restarts("web"), 2);
}

#[tokio::test]
async fn docker_unreachable_is_one_result_and_containers_are_blocked_not_fixed() {
    let host = FakeDocker::unreachable_host().await;
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    let names = ["mattermost", "planka", "postgres", "ollama"];
    let mut checks: Vec<CheckConfig> = names.iter().map(|n| container_check(n)).collect();
    let mut http = CheckConfig::new("mattermost-http", CheckKind::Http);
    http.url = Some(format!(
        "{}/api/v4/system/ping",
        host.replace("tcp://", "http://")
    ));
    http.service = Some("mattermost".into());
    http.parent = Some("mattermost".into());
    checks.push(http);
    let checks = Checks::from(checks);
    let ctx = ctx(&host);
    let mut state = HealthState::default();
    let now = Utc::now();
    for i in 0..3 {
        let (verdicts, reports) = cycle(
            &ctx,
            &checks,
            &mut state,
            &path,
            now + ChronoDuration::minutes(5 * i),
        )
        .await;
        let failing: Vec<_> = verdicts
            .iter()
            .filter(|v| v.result.status.is_failure() && v.result.blocked_by.is_none())
            .collect();
        assert_eq!(failing.len(), 1, "{verdicts:#?}");
        assert_eq!(failing[0].result.name, "docker-engine");
        assert!(
            failing[0].result.reason.starts_with(&format!(
                "Docker unreachable at {}",
                host.replace("tcp://", "http://")
            )),
            "{}",
            failing[0].result.reason
        );
        assert!(
            failing[0].failing,
            "the engine check fails at once (fail_after 1)"
        );
        for v in verdicts.iter().skip(1) {
            assert_eq!(
                v.result.blocked_by.as_deref(),
                Some("docker-engine"),
                "{v:?}"
            );
            assert!(!v.failing && v.consecutive_failures == 0, "{v:?}");
        }
        // The engine has no fix; the containers are blocked: nothing runs.
        assert!(
            reports.iter().all(|r| r.decision != FixDecision::Run),
            "{reports:?}"
        );
    }
    let (history, _) = FixHistory::load(&path, now).unwrap();
    assert!(history.attempts.is_empty());
    let results = health::run_all(&ctx, &checks).await;
    let verdicts = state.record(&checks, &results, &history, now);
    let summary = fix::summarize(
        &checks,
        &verdicts,
        &[],
        &history,
        &FixConfig::default(),
        now,
    );
    let mm = summary.iter().find(|s| s.service == "mattermost").unwrap();
    assert_eq!(mm.blocked_by.as_deref(), Some("docker-engine"));
    assert!(!mm.failing);
    // A manual fix refuses too.
    let (report, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &FixConfig::default(),
        },
        "planka",
        "down",
        FixOptions::default(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        report.decision,
        FixDecision::SkipBlocked {
            parent: "docker-engine".into()
        }
    );
}

#[tokio::test]
async fn a_blip_that_passes_on_reprobe_does_not_count() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::healthy("web"));
    fake.blip("web", 1);
    let checks = vec![container_check("web")];
    let checks = Checks::from(checks);
    let ctx = ctx(&fake.host());
    let results = health::run_all(&ctx, &checks).await;
    let web = &results[1];
    assert_eq!(web.status, Status::Ok, "{web:?}");
    assert!(web.reprobed);
    assert!(web.reason.contains("passed on re-probe"), "{}", web.reason);
    let mut state = HealthState::default();
    let v = state.record(&checks, &results, &FixHistory::default(), Utc::now());
    assert_eq!(v[1].consecutive_failures, 0);
    assert!(!v[1].failing);
    assert_eq!(fake.restarts("web"), 0);
    // A real failure survives the re-probe.
    fake.update("web", |c| c.status = "exited".into());
    let results = health::run_all(&ctx, &checks).await;
    assert_eq!(results[1].status, Status::Critical);
    assert!(results[1].reprobed);
}

#[tokio::test]
async fn a_container_still_starting_is_not_restarted() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::starting("web"));
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    let checks = vec![container_check("web")];
    let checks = Checks::from(checks);
    let ctx = ctx(&fake.host());
    let mut state = HealthState::default();
    let now = Utc::now();
    for i in 0..3 {
        let (verdicts, reports) = cycle(
            &ctx,
            &checks,
            &mut state,
            &path,
            now + ChronoDuration::minutes(5 * i),
        )
        .await;
        assert_eq!(verdicts[1].result.status, Status::Warn);
        assert!(verdicts[1].result.starting && !verdicts[1].failing);
        assert!(reports.is_empty());
    }
    let (report, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &FixConfig::default(),
        },
        "web",
        "slow boot",
        FixOptions {
            dry_run: false,
            force: true,
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(report.decision, FixDecision::SkipStarting);
    assert_eq!(fake.restarts("web"), 0);
}

#[tokio::test]
async fn manual_fix_dry_run_force_and_missing_and_unhealthy_containers() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::unhealthy("web"));
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    let mut checks = vec![container_check("web"), container_check("gone")];
    checks[0].fix.as_mut().unwrap().start_grace_secs = Secs::new(0);
    let checks = Checks::from(checks);
    let ctx = ctx(&fake.host());
    let now = Utc::now();
    let results = health::run_all(&ctx, &checks).await;
    assert_eq!(results[1].status, Status::Critical);
    assert!(
        results[1]
            .reason
            .contains("unhealthy (last check: curl: (7)"),
        "{}",
        results[1].reason
    );
    assert_eq!(results[2].status, Status::Critical);
    assert_eq!(results[2].reason, "container 'gone' not found");

    let policy = FixConfig::default();
    let dry = FixOptions {
        dry_run: true,
        force: false,
    };
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &policy,
        },
        "web",
        "unhealthy",
        dry,
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        r.decision,
        FixDecision::SkipDryRun {
            would: "restart container web".into()
        }
    );
    assert_eq!(fake.restarts("web"), 0);
    assert!(!path.exists(), "a dry run records nothing");
    for _ in 0..3 {
        let (r, _) = fix::run_manual(
            &fix::FixContext {
                health: &ctx,
                checks: &checks,
                history_path: &path,
                policy: &policy,
            },
            "web",
            "unhealthy",
            FixOptions::default(),
            now,
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, Some(Outcome::Verified), "{r:?}");
        fake.update("web", |c| c.health = Some("unhealthy".into()));
    }
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &policy,
        },
        "web",
        "again",
        FixOptions::default(),
        now,
    )
    .await
    .unwrap();
    assert!(
        matches!(r.decision, FixDecision::SkipBudgetSpent { .. }),
        "{r:?}"
    );
    let force = FixOptions {
        dry_run: false,
        force: true,
    };
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &policy,
        },
        "web",
        "forced",
        force,
        now,
    )
    .await
    .unwrap();
    assert_eq!(r.decision, FixDecision::Run);
    assert_eq!(fake.restarts("web"), 4);
    let (h, _) = FixHistory::load(&path, now).unwrap();
    let text = fix::render_history(
        &fix::history_view(&h, &policy, now.timestamp_millis()),
        &policy,
    );
    assert!(text.contains("web: 4 of 3 attempts used"), "{text}");

    // Restarting a missing container fails and says why.
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &policy,
        },
        "gone",
        "missing",
        FixOptions::default(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, Some(Outcome::Failed));
    assert!(
        r.detail
            .as_deref()
            .unwrap()
            .contains("container 'gone' not found; nothing restarted"),
        "{r:?}"
    );
    let err = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &policy,
        },
        "nope",
        "x",
        FixOptions::default(),
        now,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no fix is configured for service 'nope'"),
        "{err}"
    );
}

#[tokio::test]
async fn a_corrupt_history_is_set_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = history_file(&dir);
    std::fs::write(
        &path,
        "{\"version\":1,\"attempts\":{\"web\":[{\"at_ms\":\"soon\"}]}}",
    )
    .unwrap();
    let (h, notice) = FixHistory::load(&path, Utc::now()).unwrap();
    assert!(h.attempts.is_empty());
    let notice = notice.unwrap().to_string();
    assert!(
        notice.contains("corrupt") && notice.contains(".corrupt-"),
        "{notice}"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(aside.len(), 1);
}

#[tokio::test]
async fn the_fake_engine_answers_like_dockerd_20_10_to_version_prefixes() {
    let fake = FakeDocker::start().await;
    fake.add(FakeContainer::running("web"));
    let base = fake.host().replace("tcp://", "http://");
    let client = ops_agent::http::client(std::time::Duration::from_secs(5), true).unwrap();
    let r = client
        .get(format!("{base}/v1.53/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("client version 1.53 is too new"), "{body}");
    for path in ["/v1.41/containers/web/json", "/containers/web/json"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let r = client
        .get(format!("{base}/containers/nope/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap().contains("No such container: nope"));
}
