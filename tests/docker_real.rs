//! The real-engine tier: the Docker checks and the fix path against a real
//! dockerd (Debian's 20.10, API 1.41) brought up by `.ci/docker-up.sh`.
//!
//! Runs only when `OPS_AGENT_REAL_DOCKER_SOCK` names the engine's socket.
//! `.ci/run` sets it after starting the engine and runs with `CI=true`,
//! where a missing socket is a failure, and counts the `tier-ran:
//! docker_real` lines; a plain `cargo test` on a fresh machine prints
//! "skipped" and passes. Expects the containers docker-up.sh creates:
//! `ci-running` (healthy), `ci-stopped` (exited) and `ci-unhealthy`
//! (healthcheck `false`), and the image `localhost/busybox:ci`, from which
//! the crash-loop test makes `ci-crashloop` itself. Restarts by hand are
//! detected by `State.StartedAt` (the engine resets `RestartCount` to 0
//! then); `RestartCount` counts the restart policy's restarts.
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use chrono::Utc;
use ops_agent::fix::{self, FixAction, FixConfig, FixOptions, FixSpec, Outcome};
use ops_agent::health::docker::{DockerClient, DockerHost};
use ops_agent::health::{
    self, CheckConfig, CheckKind, Checks, HealthConfig, HealthContext, Status,
};
use ops_agent::time::Secs;

#[path = "support/mod.rs"]
mod support;

use support::agent::text;
use support::tier;
use support::world::WorldBuilder;

const ENV: &str = "OPS_AGENT_REAL_DOCKER_SOCK";

/// The tier's name in `tier-ran:` and `skipped:` lines.
const TIER: &str = "docker_real";

fn socket() -> Option<String> {
    match std::env::var(ENV) {
        Ok(s) if !s.is_empty() => Some(s),
        _ => {
            tier::missing(
                TIER,
                &format!("{ENV} is not set (.ci/run sets it after .ci/docker-up.sh)"),
            );
            None
        }
    }
}

fn container(name: &str, settle_secs: u64) -> CheckConfig {
    let mut c = CheckConfig::new(name, CheckKind::Docker);
    c.container = Some(name.into());
    c.timeout_secs = Secs::new(10);
    c.fix = Some(FixSpec {
        settle_secs: Secs::new(settle_secs),
        start_grace_secs: Secs::new(0),
        ..FixSpec::new(FixAction::RestartContainer)
    });
    c
}

fn setup(sock: &str) -> (HealthContext, DockerClient) {
    let host = format!("unix://{sock}");
    let ctx = HealthContext::new(&HealthConfig {
        reprobe_pause_ms: 200,
        docker_host: Some(host.clone()),
        ..Default::default()
    });
    let client = DockerClient::connect(&DockerHost::parse(&host).unwrap()).unwrap();
    (ctx, client)
}

/// Waits (bounded) until a container's health is `want`: healthchecks run
/// every second on the real engine.
async fn wait_health(client: &DockerClient, name: &str, want: &str) {
    for _ in 0..100 {
        let f = client.inspect(name).await.unwrap().unwrap();
        if f.health.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never became {want}");
}

#[tokio::test]
async fn real_engine_checks_restart_and_verify() {
    let Some(sock) = socket() else { return };
    let (ctx, client) = setup(&sock);
    // Re-runnable: put ci-stopped back into the exited state.
    let raw = bollard::Docker::connect_with_unix(&sock, 30, &health::docker::API_VERSION).unwrap();
    let stop = bollard::query_parameters::StopContainerOptionsBuilder::new()
        .t(1)
        .build();
    raw.stop_container("ci-stopped", Some(stop)).await.unwrap();
    wait_health(&client, "ci-running", "healthy").await;
    wait_health(&client, "ci-unhealthy", "unhealthy").await;

    let checks = vec![
        container("ci-running", 2),
        container("ci-stopped", 2),
        container("ci-unhealthy", 3),
        container("ci-missing", 2),
    ];
    let checks = Checks::from(checks);
    let results = health::run_all(&ctx, &checks).await;
    assert_eq!(results[0].name, "docker-engine");
    assert_eq!(results[0].status, Status::Ok, "{:?}", results[0]);
    assert!(
        results[0].reason.contains("API 1.41"),
        "{}",
        results[0].reason
    );
    assert_eq!(results[1].status, Status::Ok, "{:?}", results[1]);
    assert!(results[1].reason.contains("healthy"));
    assert_eq!(results[2].status, Status::Critical, "{:?}", results[2]);
    assert!(
        results[2].reason.contains("exited"),
        "{}",
        results[2].reason
    );
    assert_eq!(results[3].status, Status::Critical, "{:?}", results[3]);
    assert!(
        results[3].reason.contains("unhealthy"),
        "{}",
        results[3].reason
    );
    assert_eq!(results[4].reason, "container 'ci-missing' not found");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ops-fix-history.json");
    let policy = FixConfig::default();

    // The stopped container: restarted through the fix path and verified.
    let before = client.inspect("ci-stopped").await.unwrap().unwrap();
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &policy,
        },
        "ci-stopped",
        "exited",
        FixOptions::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, Some(Outcome::Verified), "{r:?}");
    let after = client.inspect("ci-stopped").await.unwrap().unwrap();
    assert_ne!(before.started_at, after.started_at);
    assert_eq!(after.status, "running");
    assert_eq!(after.restart_count, 0, "manual restarts do not count");

    // The unhealthy one: really restarted (StartedAt moved) but still
    // unhealthy after the settle time, so the attempt failed.
    let before = client.inspect("ci-unhealthy").await.unwrap().unwrap();
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &policy,
        },
        "ci-unhealthy",
        "unhealthy",
        FixOptions::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    let after = client.inspect("ci-unhealthy").await.unwrap().unwrap();
    assert_ne!(before.started_at, after.started_at, "{r:?}");
    assert_eq!(r.outcome, Some(Outcome::Failed), "{r:?}");
    assert!(r.detail.as_deref().unwrap().contains("unhealthy"), "{r:?}");

    let (history, _) = fix::FixHistory::load(&path, Utc::now()).unwrap();
    assert_eq!(history.attempts["ci-stopped"].len(), 1);
    assert_eq!(history.attempts["ci-unhealthy"].len(), 1);

    // Leave ci-stopped as docker-up.sh made it.
    let stop = bollard::query_parameters::StopContainerOptionsBuilder::new()
        .t(1)
        .build();
    raw.stop_container("ci-stopped", Some(stop)).await.unwrap();
    tier::ran(TIER);
}

#[tokio::test]
async fn real_engine_unknown_version_prefix_is_not_sent() {
    let Some(sock) = socket() else { return };
    // Pinned to 1.41, the client talks to dockerd 20.10 without a 400.
    let (ctx, _) = setup(&sock);
    let engine = health::run_all(&ctx, &Checks::from(vec![container("ci-running", 1)])).await;
    assert_eq!(engine[0].status, Status::Ok, "{:?}", engine[0]);
    tier::ran(TIER);
}

/// Issue 25 on the real engine, through the binary: `ci-brief-crash`
/// (made here from the CI image) crash-loops under an on-failure:2 policy,
/// printing a marker line, a token and a URL with a password each time,
/// and ends exited with code 3 after two restarts by the engine. It
/// escalates (its fix, or the crash-loop rule, cannot help), and the
/// alert's thread holds the brief: the marker line of its log, its exit
/// code and its restart count; the HIGH task and the card hold the brief
/// too. The token and the password are nowhere: not in a post, the task,
/// the card, a model prompt or a file.
#[test]
fn real_engine_crash_loop_escalates_with_its_brief() {
    const NAME: &str = "ci-brief-crash";
    const MARKER: &str = "BRIEF-MARKER-7741 fatal: cannot open /data/queue.db";
    const SECRETS: [&str; 2] = [
        "ghp_Zx81Qm0aP4vN7tK2rL9sW3yB6cD1eF5gH8jJ",
        "Tr0ub4dor-S3cret",
    ];
    let script = format!(
        "echo worker 2.4.1 starting; \
         echo connecting to postgres://queue:{}@db.internal:5432/jobs; \
         echo loaded api token {}; echo {MARKER}; \
         echo panic: queue unavailable, exiting >&2; exit 3",
        SECRETS[1], SECRETS[0]
    );

    let Some(sock) = socket() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = bollard::Docker::connect_with_unix(&sock, 30, &health::docker::API_VERSION).unwrap();
    let remove = || {
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = rt.block_on(raw.remove_container(NAME, Some(opts)));
    };
    remove();
    rt.block_on(async {
        let opts = CreateContainerOptionsBuilder::new().name(NAME).build();
        let body = ContainerCreateBody {
            image: Some("localhost/busybox:ci".into()),
            cmd: Some(vec!["sh".into(), "-c".into(), script]),
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::ON_FAILURE),
                    maximum_retry_count: Some(2),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        raw.create_container(Some(opts), body).await.unwrap();
        raw.start_container(NAME, None).await.unwrap();
        // The policy gives up after two restarts (back-off 100 ms, 200 ms).
        for _ in 0..100 {
            if restarts_of(&raw, NAME).await == (2, "exited".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(
        rt.block_on(restarts_of(&raw, NAME)),
        (2, "exited".to_string())
    );

    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
    let team = mm.add_team("basic", &[me.id.as_str()]);
    let alerts = mm.add_channel(&team, "ops-alerts", &[me.id.as_str()]);
    let llm = b.ollama();
    llm.answer_with(|_| {
        "The worker probably fails to open its queue file; check the volume first.".into()
    });
    let planka = b.planka(&[("basic", "Basic", "Inbox")]);
    b.docker_at(&format!("unix://{sock}"));
    b.line("fix", "max_attempts_per_hour = 1");
    // The settle time lets the engine's restart policy end its loop.
    b.toml(
        "[[checks]]\nname = \"ci-brief-crash\"\nkind = \"docker\"\ncontainer = \"ci-brief-crash\"\n\
         timeout_secs = 10\nfail_after = 1\n\
         fix = { action = \"restart_container\", settle_secs = 3, start_grace_secs = 0 }\n",
    );
    let sb = b.sandbox();

    // The fix may end "pending" while the engine is still restarting it;
    // the cycle after, its budget spent, escalates.
    let mut alert = None;
    for _ in 0..3 {
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
        alert = mm.posts().into_iter().find(|p| {
            p.channel_id == alerts
                && p.root_id.is_empty()
                && p.message.contains("ci-brief-crash is failing")
        });
        if alert.is_some() {
            break;
        }
    }
    let alert = alert.unwrap_or_else(|| panic!("no alert after 3 cycles\n{}", sb.log_text()));
    let thread: Vec<String> = mm
        .thread_replies(&alert.id)
        .into_iter()
        .filter(|p| p.props.get("ops_agent_event").and_then(|v| v.as_str()) == Some("brief"))
        .map(|p| p.message)
        .collect();
    assert_eq!(thread.len(), 1, "the brief in the thread: {thread:#?}");
    let brief = &thread[0];
    eprintln!(
        "the alert as posted:\n{}\n\nthe brief as posted in its thread:\n{brief}",
        alert.message
    );
    for want in [
        MARKER,
        "panic: queue unavailable",
        "exit code 3",
        "restart count: 2",
        "image: localhost/busybox:ci",
        "(API 1.41)",
        "a guess by the model",
    ] {
        assert!(brief.contains(want), "the brief lacks {want:?}:\n{brief}");
    }
    let tasks = sb.ledger_tasks();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["priority"], "HIGH");
    let task = tasks[0]["description"].as_str().unwrap();
    let cards = planka.cards();
    assert_eq!(cards.len(), 1, "{cards:#?}");
    let card = cards[0]["description"].as_str().unwrap();
    for want in [MARKER, "exit code 3", "restart count: 2"] {
        assert!(task.contains(want), "the task lacks {want:?}:\n{task}");
        assert!(card.contains(want), "the card lacks {want:?}:\n{card}");
    }

    let mut places: Vec<String> = mm.posts().into_iter().map(|p| p.message).collect();
    places.push(serde_json::to_string(&cards).unwrap());
    places.extend(llm.requests().into_iter().map(|r| r.body.to_string()));
    for f in walk(sb.root()) {
        places.push(String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned());
    }
    for place in &places {
        for secret in SECRETS {
            assert!(!place.contains(secret), "{secret} leaked:\n{place}");
        }
    }
    remove();
    tier::ran(TIER);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The container's `RestartCount` and status, straight from the engine.
async fn restarts_of(raw: &bollard::Docker, name: &str) -> (i64, String) {
    let r = raw.inspect_container(name, None).await.unwrap();
    let status = r
        .state
        .and_then(|s| s.status)
        .map(|s| s.to_string())
        .unwrap_or_default();
    (r.restart_count.unwrap_or(0), status)
}

/// Waits (bounded) until the engine has restarted `name` at least `n`
/// times: the restart policy's back-off doubles from 100 ms.
async fn wait_restarts(raw: &bollard::Docker, name: &str, n: i64) -> i64 {
    for _ in 0..600 {
        let (count, _) = restarts_of(raw, name).await;
        if count >= n {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} was never restarted {n} times by its policy");
}

/// Issue 20.3 on the real engine, through the binary: a container that
/// crashes at once under `restart: always` (what compose setups use) is
/// restarted by the engine again and again. The agent counts those
/// restarts between cycles, calls the loop critical once there are more
/// than `max_restarts` in the window, does not restart it itself (the
/// engine's `RestartCount` would drop to 0 if it did) and escalates with
/// the count and the last exit code.
#[test]
fn real_engine_crash_loop_under_restart_policy_escalates_without_a_restart_from_us() {
    let Some(sock) = socket() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = bollard::Docker::connect_with_unix(&sock, 30, &health::docker::API_VERSION).unwrap();
    let name = "ci-crashloop";
    let remove = || {
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = rt.block_on(raw.remove_container(name, Some(opts)));
    };
    remove();
    rt.block_on(async {
        let opts = CreateContainerOptionsBuilder::new().name(name).build();
        let body = ContainerCreateBody {
            image: Some("localhost/busybox:ci".into()),
            cmd: Some(vec!["sh".into(), "-c".into(), "echo boom; exit 3".into()]),
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::ALWAYS),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        raw.create_container(Some(opts), body).await.unwrap();
        raw.start_container(name, None).await.unwrap();
    });

    let mut b = WorldBuilder::new();
    let (mm, me) = b.mattermost(&["basic"]);
    b.line("mattermost", "alert_channel = \"basic/ops-alerts\"");
    let members = [me.id.as_str()];
    let team = mm.add_team("basic", &members);
    let alerts = mm.add_channel(&team, "ops-alerts", &members);
    b.docker_at(&format!("unix://{sock}")).toml(&format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"docker\"\ncontainer = \"{name}\"\n\
         timeout_secs = 10\nfail_after = 1\nmax_restarts = 2\nrestart_window_mins = 60\n\
         fix = {{ action = \"restart_container\", settle_secs = 1, start_grace_secs = 0 }}\n"
    ));
    let sb = b.sandbox();
    let cycle = || {
        let out = sb.run(&["run-once"]);
        assert!(out.status.success(), "{}", text(&out));
        let st = sb.state_json();
        st["last_cycle"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };

    // The first cycle sees it once it has crashed (the baseline).
    let before_first = rt.block_on(wait_restarts(&raw, name, 1));
    let first = cycle();
    let (seen_first, _) = rt.block_on(restarts_of(&raw, name));
    // Three more restarts by the engine before the next cycle.
    let before_second = rt.block_on(wait_restarts(&raw, name, seen_first + 3));
    let second = cycle();
    let (after, status_after) = rt.block_on(restarts_of(&raw, name));

    assert_eq!(second["status"], "critical", "{second}");
    let reason = second["reason"].as_str().unwrap();
    assert!(
        reason.contains("crash-looping: its restart policy 'always' restarted it")
            && reason.contains("last exit code 3")
            && reason.contains("another restart would not help"),
        "{reason}"
    );
    // Never restarted by us: a restart by hand resets RestartCount to 0.
    assert!(
        after >= before_second,
        "RestartCount fell from {before_second} to {after}"
    );
    assert!(
        !sb.path("tmp/ops-fix-history.json").exists(),
        "no fix attempt was recorded"
    );
    let posted: Vec<_> = mm
        .posts()
        .into_iter()
        .filter(|p| p.channel_id == alerts && p.root_id.is_empty())
        .collect();
    assert_eq!(posted.len(), 1, "{posted:#?}");
    let alert = &posted[0].message;
    assert!(
        alert.contains("crash-looping") && alert.contains("last exit code 3"),
        "{alert}"
    );
    let log = sb.log_text();
    println!(
        "real crash loop: RestartCount {before_first} before cycle 1 (which saw {}: {}), \
         {before_second} before cycle 2, {after} after it ({status_after}); \
         fix attempts: 0; alert posts: {}\n--- alert\n{alert}\n--- fix stage\n{}",
        first["status"],
        first["reason"].as_str().unwrap_or_default(),
        posted.len(),
        log.lines()
            .filter(|l| l.contains("Fix: ") || l.contains("crash"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    remove();
    tier::ran(TIER);
}

/// Issue 20.4 on the real engine: dockerd resolves a short hex string to
/// the container whose id starts with it; the agent names containers by
/// their exact name only, so such a check is "not found" and its fix
/// restarts nothing.
#[tokio::test]
async fn real_engine_resolves_containers_by_exact_name_only() {
    let Some(sock) = socket() else { return };
    let (ctx, client) = setup(&sock);
    let raw = bollard::Docker::connect_with_unix(&sock, 30, &health::docker::API_VERSION).unwrap();
    let id = raw
        .inspect_container("ci-running", None)
        .await
        .unwrap()
        .id
        .unwrap();
    let prefix = &id[..8];
    // What went wrong before: the engine itself answers for the prefix.
    let by_prefix = raw.inspect_container(prefix, None).await.unwrap();
    assert_eq!(by_prefix.name.as_deref(), Some("/ci-running"));

    let checks = Checks::from(vec![container(prefix, 1)]);
    let results = health::run_all(&ctx, &checks).await;
    assert_eq!(results[1].status, Status::Critical, "{:?}", results[1]);
    assert!(
        results[1].reason.starts_with(&format!(
            "container '{prefix}' not found (the engine would take it for 'ci-running'"
        )),
        "{}",
        results[1].reason
    );
    let before = client.inspect("ci-running").await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ops-fix-history.json");
    let policy = FixConfig::default();
    let (r, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &path,
            policy: &policy,
        },
        prefix,
        "missing",
        FixOptions::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, Some(Outcome::Failed), "{r:?}");
    let after = client.inspect("ci-running").await.unwrap().unwrap();
    assert_eq!(before.started_at, after.started_at, "ci-running untouched");
    tier::ran(TIER);
}
