//! The real-engine tier: the Docker checks and the fix path against a real
//! dockerd (Debian's 20.10, API 1.41) brought up by `.ci/docker-up.sh`.
//!
//! Runs only when `OPS_AGENT_REAL_DOCKER_SOCK` names the engine's socket.
//! `.ci/run` sets it after starting the engine and runs with `CI=true`,
//! where a missing socket is a failure, and counts the `tier-ran:
//! docker_real` lines; a plain `cargo test` on a fresh machine prints
//! "skipped" and passes. Expects the containers docker-up.sh creates:
//! `ci-running` (healthy), `ci-stopped` (exited) and `ci-unhealthy`
//! (healthcheck `false`). Restarts are detected by `State.StartedAt`; the
//! engine keeps `RestartCount` at 0 for manual restarts.
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Duration;

use chrono::Utc;
use ops_agent::fix::{self, FixAction, FixConfig, FixOptions, FixSpec, Outcome};
use ops_agent::health::docker::{DockerClient, DockerHost};
use ops_agent::health::{
    self, CheckConfig, CheckKind, Checks, HealthConfig, HealthContext, Status,
};
use ops_agent::time::Secs;

#[path = "support/tier.rs"]
mod tier;

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
