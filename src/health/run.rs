//! Running the checks: every probe concurrently, each under its own
//! timeout (one hanging dependency costs its timeout, not the sum), the
//! failed ones probed once more after a pause, then the parent blocking.
//! One probe per kind lives in its own file beside this one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::guard::{Change, HealthState, OwnActions, Verdict};
use super::{daemon, docker, http, system, CheckConfig, CheckKind, Checks, HealthConfig, Status};
use crate::observe::audit::{self, Event};

/// What the probes share for one run: the Docker clients (connected once,
/// or the reason they could not be) and the re-probe pause.
#[derive(Clone)]
pub struct HealthContext {
    /// The default Docker engine's client, or why there is none.
    docker: std::result::Result<docker::DockerClient, String>,
    /// The engines of `[health.engines]`, by name.
    engines: std::collections::BTreeMap<String, std::result::Result<docker::DockerClient, String>>,
    /// Pause before the in-cycle re-probe of failed checks.
    reprobe_pause: Duration,
}

impl HealthContext {
    /// Builds the context from `[health]`; connecting does no I/O, so a
    /// missing engine shows up as the engine check's result, not here.
    pub fn new(cfg: &HealthConfig) -> HealthContext {
        let env = std::env::var("DOCKER_HOST").ok();
        let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
        let host = docker::DockerHost::resolve(
            cfg.docker_host.as_deref(),
            env.as_deref(),
            cfg!(target_os = "macos"),
            home.as_deref(),
        );
        let engines = cfg
            .engines
            .iter()
            .map(|(name, e)| {
                let client = docker::DockerClient::connect_engine(e)
                    .map_err(|err| format!("engine '{name}': {err:#}"));
                (name.clone(), client)
            })
            .collect();
        HealthContext {
            docker: host
                .and_then(|h| docker::DockerClient::connect(&h).map_err(|e| format!("{e:#}"))),
            engines,
            reprobe_pause: cfg.reprobe_pause(),
        }
    }

    /// The client of a check's engine (`engine = "<name>"`, else the
    /// default one), or why there is none.
    pub(crate) fn docker_for(
        &self,
        check: &CheckConfig,
    ) -> std::result::Result<&docker::DockerClient, String> {
        let client = match &check.engine {
            None => &self.docker,
            Some(name) => match self.engines.get(name) {
                Some(c) => c,
                None => return Err(format!("no engine '{name}' under [health.engines]")),
            },
        };
        client.as_ref().map_err(Clone::clone)
    }
}

/// The outcome of one probe: what an operator reads in the log and what the
/// fix and escalation stages decide on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// The check's kind.
    pub(crate) kind: CheckKind,
    /// The service the check belongs to.
    pub(crate) service: String,
    /// ok / warn / critical / unknown.
    pub status: Status,
    /// One line saying why, e.g. `/ 91.2% used (critical at 90%)`.
    pub reason: String,
    /// How long the probe took.
    pub(crate) latency_ms: u64,
    /// The service is booting (container health `starting`, state
    /// `restarting`, unit `activating`): not a failure, and never restarted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starting: bool,
    /// The first probe failed and this is the re-probe's result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reprobed: bool,
    /// The failing parent (the root of the chain) this check is blocked by;
    /// a blocked check is neither fixed nor counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// Container facts for the restart counter and fix verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) container: Option<docker::ContainerFacts>,
}

/// Runs every check concurrently, each under its own timeout; re-probes
/// the failed ones once after the context's pause (concurrently again);
/// then marks the children of failing parents as blocked. Returns the
/// checks in [`Checks`] order (so the implicit Docker
/// engine check comes first when it was added). Total time is bounded by
/// twice the longest timeout plus the pause, never the sum.
pub async fn run_all(ctx: &HealthContext, checks: &Checks) -> Vec<CheckResult> {
    let mut results = run_concurrently(ctx, checks, |_| true).await;
    let failed: Vec<bool> = results
        .iter()
        .map(|r| r.status.is_failure() && !r.starting)
        .collect();
    if failed.iter().any(|f| *f) {
        tokio::time::sleep(ctx.reprobe_pause).await;
        let again = run_concurrently(ctx, checks, |i| failed[i]).await;
        for (i, second) in again.into_iter().enumerate() {
            if failed[i] {
                let first = &results[i];
                let mut second = second;
                second.reprobed = true;
                if !second.status.is_failure() {
                    second.reason = format!(
                        "{} (passed on re-probe; first probe: {})",
                        second.reason, first.reason
                    );
                }
                results[i] = second;
            }
        }
    }
    apply_blocking(checks, &mut results);
    results
}

/// The cycle's health stage: every check run ([`run_all`]), then seen
/// through the flap guard, which `own` tells the agent's own restarts;
/// every result that is not ok is logged.
pub(crate) async fn assess(
    ctx: &HealthContext,
    checks: &Checks,
    state: &mut HealthState,
    own: &impl OwnActions,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Verdict> {
    let results = run_all(ctx, checks).await;
    let verdicts = state.record(checks, &results, own, now);
    for v in &verdicts {
        if let Some(change) = v.change {
            let r = &v.result;
            audit::record(Event::CheckChanged {
                check: r.name.clone(),
                service: r.service.clone(),
                change: match change {
                    Change::BecameFailing => "failing",
                    Change::Recovered => "recovered",
                }
                .into(),
                status: r.status.as_str().into(),
                reason: audit::detail(&r.reason),
            });
        }
    }
    for v in verdicts.iter().filter(|v| v.result.status != Status::Ok) {
        let r = &v.result;
        tracing::warn!(check = %r.name, status = r.status.as_str(), failing = v.failing, "{}", r.reason);
    }
    verdicts
}

/// Runs the selected checks concurrently; unselected ones get a placeholder
/// (only used by the re-probe, which keeps the first results for those).
async fn run_concurrently(
    ctx: &HealthContext,
    checks: &[CheckConfig],
    select: impl Fn(usize) -> bool,
) -> Vec<CheckResult> {
    let tasks: Vec<_> = checks
        .iter()
        .enumerate()
        .map(|(i, check)| {
            select(i).then(|| {
                let ctx = ctx.clone();
                let check = check.clone();
                tokio::spawn(async move { run_one(&ctx, &check).await })
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for (task, check) in tasks.into_iter().zip(checks) {
        results.push(match task {
            None => result_of(check, Status::Unknown, "not probed".into(), 0),
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => result_of(check, Status::Unknown, format!("probe panicked: {e}"), 0),
            },
        });
    }
    results
}

/// Marks every check whose parent chain has a failing (or blocked) check
/// as blocked by the root failing one. Pure.
fn apply_blocking(checks: &[CheckConfig], results: &mut [CheckResult]) {
    let index: BTreeMap<&str, usize> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    // The topmost failing ancestor of check i, if any.
    let blocker = |i: usize| -> Option<usize> {
        let mut found = None;
        let mut cur = i;
        let mut steps = 0;
        while let Some(p) = checks[cur].parent.as_deref() {
            let Some(&pi) = index.get(p) else { break };
            if results_failed(results, pi) {
                found = Some(pi);
            }
            cur = pi;
            steps += 1;
            if steps > checks.len() {
                break;
            }
        }
        found
    };
    let blockers: Vec<Option<usize>> = (0..checks.len()).map(blocker).collect();
    let reasons: Vec<String> = results.iter().map(|r| r.reason.clone()).collect();
    for (i, b) in blockers.into_iter().enumerate() {
        if let Some(pi) = b {
            let parent = checks[pi].name.clone();
            let r = &mut results[i];
            r.reason = format!(
                "blocked by {parent} ({}); own probe: {}",
                reasons[pi], r.reason
            );
            r.status = Status::Unknown;
            r.starting = false;
            r.blocked_by = Some(parent);
        }
    }

    fn results_failed(results: &[CheckResult], i: usize) -> bool {
        results[i].status.is_failure() && !results[i].starting
    }
}

/// Runs one check under its timeout.
pub(crate) async fn run_one(ctx: &HealthContext, check: &CheckConfig) -> CheckResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(check.timeout(), probe(ctx, check)).await;
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok(p)) => {
            let mut r = result_of(check, p.status, p.reason, ms);
            r.starting = p.starting;
            r.container = p.container;
            r
        }
        Ok(Err(e)) => result_of(check, Status::Unknown, format!("probe failed: {e:#}"), ms),
        Err(_) => result_of(
            check,
            Status::Unknown,
            format!("no answer within {}s", check.timeout_secs),
            ms,
        ),
    }
}

/// What a probe found, before timing and blocking are added.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    /// The grade.
    pub(crate) status: Status,
    /// One line saying why.
    pub(crate) reason: String,
    /// The service is booting: not a failure, never restarted.
    pub(crate) starting: bool,
    /// Container facts (docker checks only).
    pub(crate) container: Option<docker::ContainerFacts>,
}

impl Probe {
    /// A probe result without extra facts.
    pub(crate) fn new(status: Status, reason: impl Into<String>) -> Probe {
        Probe {
            status,
            reason: reason.into(),
            starting: false,
            container: None,
        }
    }
}

async fn probe(ctx: &HealthContext, check: &CheckConfig) -> Result<Probe> {
    match check.kind {
        CheckKind::Disk | CheckKind::Memory => {
            let check = check.clone();
            let (status, reason) = tokio::task::spawn_blocking(move || system::probe(&check))
                .await
                .map_err(|e| anyhow::anyhow!("system probe task failed: {e}"))??;
            Ok(Probe::new(status, reason))
        }
        CheckKind::Docker | CheckKind::DockerEngine => {
            let client = match ctx.docker_for(check) {
                Ok(c) => c,
                Err(e) => return Ok(Probe::new(Status::Critical, e)),
            };
            if check.kind == CheckKind::DockerEngine {
                Ok(client.probe_engine().await)
            } else {
                client
                    .probe_container(check.container.as_deref().unwrap_or_default())
                    .await
            }
        }
        CheckKind::Http => http::probe(check).await,
        CheckKind::Launchd => daemon::probe_launchd(check).await,
        CheckKind::Systemd => daemon::probe_systemd(check).await,
    }
}

/// A result with no extra facts.
pub(crate) fn result_of(
    check: &CheckConfig,
    status: Status,
    reason: String,
    latency_ms: u64,
) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        kind: check.kind,
        service: check.service().to_string(),
        status,
        reason,
        latency_ms,
        starting: false,
        reprobed: false,
        blocked_by: None,
        container: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_of_a_failing_parent_are_blocked_by_the_root() {
        let engine = CheckConfig::new("docker-engine", CheckKind::DockerEngine);
        let mut web = CheckConfig::new("web", CheckKind::Docker);
        web.parent = Some("docker-engine".into());
        let mut http = CheckConfig::new("web-http", CheckKind::Http);
        http.parent = Some("web".into());
        let mem = CheckConfig::new("memory", CheckKind::Memory);
        let checks = vec![engine.clone(), web.clone(), http.clone(), mem.clone()];
        let mut results = vec![
            result_of(&engine, Status::Critical, "Docker unreachable".into(), 1),
            result_of(&web, Status::Unknown, "connect error".into(), 1),
            result_of(&http, Status::Critical, "refused".into(), 1),
            result_of(&mem, Status::Ok, "fine".into(), 1),
        ];
        apply_blocking(&checks, &mut results);
        assert_eq!(results[0].blocked_by, None);
        assert_eq!(results[1].blocked_by.as_deref(), Some("docker-engine"));
        assert_eq!(results[2].blocked_by.as_deref(), Some("docker-engine"));
        assert!(results[2]
            .reason
            .starts_with("blocked by docker-engine (Docker unreachable)"));
        assert_eq!(results[3].blocked_by, None);
        // A failing container blocks only its endpoint.
        let mut results = vec![
            result_of(&engine, Status::Ok, "ok".into(), 1),
            result_of(&web, Status::Critical, "exited".into(), 1),
            result_of(&http, Status::Critical, "refused".into(), 1),
            result_of(&mem, Status::Ok, "fine".into(), 1),
        ];
        apply_blocking(&checks, &mut results);
        assert_eq!(results[1].blocked_by, None);
        assert_eq!(results[2].blocked_by.as_deref(), Some("web"));
    }
}
