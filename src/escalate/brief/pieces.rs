//! One builder per kind of evidence, over the health room's evidence
//! functions: each returns its pieces and the facts the templated summary
//! is written from. Every builder ends by `by`: the slow part of each runs
//! under it, and a piece not had in time says so.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use super::diagnosis::Facts;
use super::{Piece, Sources};
use crate::escalate::EscalationConfig;
use crate::health::{self, CheckConfig, CheckKind};

/// Volumes listed in a brief, fullest first.
const VOLUMES_SHOWN: usize = 8;
/// Processes listed by resident memory.
const PROCESSES_SHOWN: usize = 5;
/// Lines of an endpoint's body shown.
const BODY_LINES: usize = 15;

/// What a piece says when its part ran out of time.
const NOT_IN_TIME: &str = "not had within the brief's time budget";

/// The pieces of one check.
pub(super) async fn for_check(
    src: &Sources<'_>,
    cfg: &EscalationConfig,
    check: &CheckConfig,
    by: Instant,
    now_ms: i64,
) -> (Vec<Piece>, Facts) {
    let mut facts = Facts::default();
    let pieces = match check.kind {
        CheckKind::Docker => docker(src, cfg, check, by, &mut facts).await,
        CheckKind::Http => http(check, by, &mut facts).await,
        CheckKind::Disk => disk(src, check, by, now_ms, &mut facts).await,
        CheckKind::Memory => memory(check, by, &mut facts).await,
        CheckKind::Systemd => systemd(cfg, check, by, &mut facts).await,
        CheckKind::Launchd => launchd(check, by, &mut facts).await,
        // The engine is told once for all its containers (`engines`).
        CheckKind::DockerEngine => Vec::new(),
    };
    (pieces, facts)
}

/// Time left until `by`, for a tool that takes a timeout.
fn left(by: Instant) -> Duration {
    by.saturating_duration_since(Instant::now())
}

async fn docker(
    src: &Sources<'_>,
    cfg: &EscalationConfig,
    check: &CheckConfig,
    by: Instant,
    facts: &mut Facts,
) -> Vec<Piece> {
    let name = check.container.as_deref().unwrap_or_default();
    let mut container = Piece::new("container", format!("container {name}"));
    let client = match src.health.docker_for(check) {
        Ok(c) => c,
        Err(e) => {
            container.note(&e);
            return vec![container];
        }
    };
    let (inspected, tail) = tokio::join!(
        timeout_at(by, client.evidence(name)),
        client.log_tail(name, cfg.brief_log_lines, by)
    );
    match inspected {
        Err(_) => container.note(NOT_IN_TIME),
        Ok(Err(e)) => container.note(&format!("{e:#}")),
        Ok(Ok(None)) => {
            container.note("the engine does not know this container");
            facts.say(&format!(
                "The container {name} does not exist on its engine."
            ));
            facts.check_first("whether it was removed or renamed (docker ps -a)");
        }
        Ok(Ok(Some(e))) => {
            let exit = e.exit_code.map_or("?".to_string(), |c| c.to_string());
            container.line(&format!(
                "state: {}, exit code {exit}, OOMKilled: {}",
                e.status,
                if e.oom_killed { "yes" } else { "no" }
            ));
            container.line(&format!(
                "restart count: {} (restarts by the engine's restart policy)",
                e.restart_count
            ));
            container.line(&format!("image: {}", e.image));
            if let Some(s) = &e.started_at {
                let finished = e
                    .finished_at
                    .as_deref()
                    .map(|f| format!(", last exit at {f}"))
                    .unwrap_or_default();
                container.line(&format!("started at {s}{finished}"));
            }
            if let Some(err) = &e.error {
                container.line(&format!("engine error: {err}"));
            }
            if let Some(h) = &e.health {
                container.line(&format!("health: {h}"));
            }
            for (code, out) in &e.health_log {
                container.line(&format!("health check exit {code}: {out}"));
            }
            let mut said = format!("The container {name} is {}", e.status);
            if e.status != "running" {
                said.push_str(&format!(" with exit code {exit}"));
            }
            if e.restart_count > 0 {
                said.push_str(&format!(
                    " after {} restarts by the engine",
                    e.restart_count
                ));
            }
            said.push('.');
            facts.say(&said);
            if e.oom_killed {
                facts.say("The kernel killed it for memory (OOMKilled).");
                facts.check_first("its memory limit and the host's free memory");
            }
            if e.health.as_deref() == Some("unhealthy") {
                if let Some((_, out)) = e.health_log.last() {
                    facts.say(&format!("Its healthcheck fails: {out}"));
                }
            }
        }
    }
    let mut log = Piece::new(
        "log",
        format!(
            "log of {name}: the last {} lines, stdout and stderr",
            cfg.brief_log_lines
        ),
    );
    let texts: Vec<&str> = tail.lines.iter().map(|l| l.text.as_str()).collect();
    log.block(&texts);
    match (&tail.cut, tail.lines.is_empty()) {
        (Some(cut), _) => log.note(cut),
        (None, true) => log.note("the log is empty"),
        (None, false) => {}
    }
    if let Some(telling) = super::render::most_telling(&log.lines, 1).first() {
        facts.say(&format!("Its log says: {telling}"));
        facts.check_first("the log lines in this brief");
    }
    vec![container, log]
}

/// The engine of every Docker check (or of the engine's own check), once
/// each: its version and whether it answers.
pub(super) async fn engines(src: &Sources<'_>, checks: &[&CheckConfig], by: Instant) -> Vec<Piece> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let docker = |c: &&&CheckConfig| matches!(c.kind, CheckKind::Docker | CheckKind::DockerEngine);
    for c in checks.iter().filter(docker) {
        if !seen.insert(c.engine.clone()) {
            continue;
        }
        let title = match &c.engine {
            Some(e) => format!("Docker engine {e}"),
            None => "Docker engine".to_string(),
        };
        let mut p = Piece::new("engine", title);
        match src.health.docker_for(c) {
            Err(e) => p.note(&e),
            Ok(client) => match timeout_at(by, client.probe_engine()).await {
                Err(_) => p.note(NOT_IN_TIME),
                Ok(probe) => p.line(&format!("{}: {}", probe.status.as_str(), probe.reason)),
            },
        }
        out.push(p);
    }
    out
}

async fn http(check: &CheckConfig, by: Instant, facts: &mut Facts) -> Vec<Piece> {
    let ev = health::http_evidence(check, by).await;
    let mut endpoint = Piece::new("endpoint", format!("endpoint {}", check.name));
    let answer = match ev.answer {
        Err(why) => {
            endpoint.line(&format!("{}: no answer: {why}", ev.what));
            facts.say(&format!("{} gets no answer: {why}.", ev.what));
            facts.check_first("whether the service behind it runs and listens");
            return vec![endpoint];
        }
        Ok(a) => a,
    };
    endpoint.line(&format!(
        "{}: HTTP {} in {} ms",
        ev.what, answer.status, answer.latency_ms
    ));
    if let Some(ct) = &answer.content_type {
        endpoint.line(&format!("content type: {ct}"));
    }
    match &answer.cert_expiry {
        None => {}
        Some(Ok(ms)) => {
            let now = chrono::Utc::now().timestamp_millis();
            let when = if *ms >= now {
                format!("in {}", crate::time::human_ms(ms - now))
            } else {
                format!("expired {} ago", crate::time::human_ms(now - ms))
            };
            endpoint.line(&format!(
                "TLS certificate expires {} ({when})",
                crate::time::rfc3339_ms(*ms)
            ));
            if *ms < now {
                facts.say("Its TLS certificate has expired.");
                facts.check_first("the certificate's renewal");
            }
        }
        Some(Err(why)) => endpoint.line(&format!("TLS certificate expiry unknown: {why}")),
    }
    facts.say(&format!(
        "{} answers HTTP {} in {} ms.",
        ev.what, answer.status, answer.latency_ms
    ));
    let mut body = Piece::new("body", format!("body of the answer of {}", check.name));
    if let Some(text) = &answer.body {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(BODY_LINES)
            .collect();
        body.block(&lines);
        if let Some(first) = body.lines.first() {
            facts.say(&format!("Its body starts: {first}"));
        }
    }
    if let Some(note) = &answer.body_note {
        body.note(note);
    }
    facts.check_first("the log of the service behind the endpoint");
    vec![endpoint, body]
}

async fn disk(
    src: &Sources<'_>,
    check: &CheckConfig,
    by: Instant,
    now_ms: i64,
    facts: &mut Facts,
) -> Vec<Piece> {
    let mut p = Piece::new(
        "volumes",
        format!("volumes, fullest first ({})", check.name),
    );
    if let Some(g) = growth(src, check, now_ms) {
        p.line(&g.line);
        facts.say(&g.sentence);
    }
    let mounts = tokio::task::spawn_blocking(|| health::mounts(VOLUMES_SHOWN));
    match timeout_at(by, mounts).await {
        Err(_) => p.note(NOT_IN_TIME),
        Ok(Err(e)) => p.note(&format!("volumes not read: {e}")),
        Ok(Ok(mounts)) => {
            for m in &mounts {
                p.line(&format!(
                    "{} {:.1}% used, {} free of {}",
                    m.mount.display(),
                    m.used_pct,
                    bytes(m.available),
                    bytes(m.total)
                ));
            }
            if let Some(m) = mounts.first() {
                facts.say(&format!(
                    "The fullest volume, {}, is {:.1}% used.",
                    m.mount.display(),
                    m.used_pct
                ));
            }
        }
    }
    facts.check_first("what writes to the volume (logs, dumps, images)");
    vec![p]
}

/// How fast a volume filled over the results the agent kept.
struct Growth {
    line: String,
    sentence: String,
}

fn growth(src: &Sources<'_>, check: &CheckConfig, now_ms: i64) -> Option<Growth> {
    let memo = src.health_state.checks.get(&check.name)?;
    let points: Vec<(i64, f64)> = memo
        .last
        .iter()
        .filter_map(|r| health::used_pct_in(&r.reason).map(|p| (r.at_ms, p)))
        .collect();
    let (&(t0, p0), &(t1, p1)) = (points.first()?, points.last()?);
    if t1 <= t0 {
        return None;
    }
    let hours = (t1 - t0) as f64 / 3_600_000.0;
    let rate = (p1 - p0) / hours;
    let full = (rate > 0.0 && p1 < 100.0).then(|| {
        let ms = ((100.0 - p1) / rate * 3_600_000.0) as i64;
        format!("; full in about {} at this rate", crate::time::human_ms(ms))
    });
    let line = format!(
        "{}: {p0:.1}% -> {p1:.1}% over the last {} ({rate:+.1} points an hour{}); last measured {} ago",
        check.name,
        crate::time::human_ms(t1 - t0),
        full.clone().unwrap_or_default(),
        crate::time::human_ms(now_ms - t1)
    );
    let sentence = format!(
        "{} went from {p0:.1}% to {p1:.1}% used over {} ({rate:+.1} points an hour{}).",
        check.name,
        crate::time::human_ms(t1 - t0),
        full.unwrap_or_default()
    );
    Some(Growth { line, sentence })
}

async fn memory(check: &CheckConfig, by: Instant, facts: &mut Facts) -> Vec<Piece> {
    let mut p = Piece::new(
        "processes",
        format!("processes by resident memory ({})", check.name),
    );
    let top = tokio::task::spawn_blocking(|| health::top_processes(PROCESSES_SHOWN));
    match timeout_at(by, top).await {
        Err(_) => p.note(NOT_IN_TIME),
        Ok(Err(e)) => p.note(&format!("processes not read: {e}")),
        Ok(Ok(top)) => {
            for t in &top {
                p.line(&format!("{:>10}  {} (pid {})", bytes(t.rss), t.name, t.pid));
            }
            if let Some(t) = top.first() {
                facts.say(&format!(
                    "The biggest process is {} (pid {}) with {} resident.",
                    t.name,
                    t.pid,
                    bytes(t.rss)
                ));
            }
        }
    }
    facts.check_first("whether the biggest processes above are expected to be that big");
    vec![p]
}

async fn systemd(
    cfg: &EscalationConfig,
    check: &CheckConfig,
    by: Instant,
    facts: &mut Facts,
) -> Vec<Piece> {
    let unit = check.unit.as_deref().unwrap_or_default();
    let mut facts_piece = Piece::new("unit", format!("systemd unit {unit}"));
    let mut journal = Piece::new(
        "journal",
        format!("journal of {unit}: the last {} lines", cfg.brief_log_lines),
    );
    let timeout = left(by).min(check.timeout());
    let ev = health::systemd_evidence(unit, cfg.brief_log_lines, timeout).await;
    match ev.facts {
        Ok(lines) => {
            for l in &lines {
                facts_piece.line(l);
            }
            let get = |k: &str| {
                lines
                    .iter()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
            };
            facts.say(&format!(
                "The unit {unit} is {} (result {}, main process status {}).",
                get("ActiveState").unwrap_or_else(|| "?".into()),
                get("Result").unwrap_or_else(|| "?".into()),
                get("ExecMainStatus").unwrap_or_else(|| "?".into())
            ));
        }
        Err(why) => facts_piece.note(&why),
    }
    match ev.journal {
        Ok(lines) => {
            journal.block(&lines);
            if lines.is_empty() {
                journal.note("no journal lines");
            }
            if let Some(t) = super::render::most_telling(&journal.lines, 1).first() {
                facts.say(&format!("Its journal says: {t}"));
            }
        }
        Err(why) => journal.note(&why),
    }
    facts.check_first("the unit's journal lines in this brief");
    vec![facts_piece, journal]
}

async fn launchd(check: &CheckConfig, by: Instant, facts: &mut Facts) -> Vec<Piece> {
    let label = check.label.as_deref().unwrap_or_default();
    let mut p = Piece::new("job", format!("launchd job {label}"));
    let timeout = left(by).min(check.timeout());
    match health::launchd_evidence(label, timeout).await {
        Ok(line) => {
            facts.say(&format!("The launchd job {label} is {line}."));
            p.line(&line);
        }
        Err(why) => p.note(&why),
    }
    facts.check_first("the job's own log (its StandardErrorPath)");
    vec![p]
}

/// `1.2 GiB`, `340.0 MiB`, `12.0 KiB`.
fn bytes(n: u64) -> String {
    let n = n as f64;
    const K: f64 = 1024.0;
    if n >= K * K * K {
        format!("{:.1} GiB", n / (K * K * K))
    } else if n >= K * K {
        format!("{:.1} MiB", n / (K * K))
    } else {
        format!("{:.1} KiB", n / K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthContext, HealthState};

    #[test]
    fn growth_is_read_from_the_kept_results() {
        let mut check = CheckConfig::new("data", CheckKind::Disk);
        check.path = Some("/data".into());
        let mut state = HealthState::default();
        let memo = state.checks.entry("data".into()).or_default();
        for (min, pct) in [(0, 80.0), (30, 82.5), (60, 85.0)] {
            memo.last.push(crate::health::guard::ResultMemo {
                at_ms: min * 60_000,
                status: crate::health::Status::Warn,
                reason: format!("/data {pct:.1}% used (volume /data), warn at 80%"),
            });
        }
        let health = HealthContext::new(&crate::health::HealthConfig::default());
        let ollama = crate::ollama::OllamaConfig::default();
        let src = Sources::new(&health, &state, &ollama, Instant::now());
        let g = growth(&src, &check, 65 * 60_000).unwrap();
        assert!(
            g.line.contains("80.0% -> 85.0% over the last 1h")
                && g.line.contains("+5.0 points an hour")
                && g.line.contains("full in about 3h"),
            "{}",
            g.line
        );
        assert!(
            g.sentence.contains("went from 80.0% to 85.0%"),
            "{}",
            g.sentence
        );
    }

    #[test]
    fn byte_sizes_read_well() {
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(bytes(340 * 1024 * 1024), "340.0 MiB");
        assert_eq!(bytes(12 * 1024), "12.0 KiB");
    }
}
