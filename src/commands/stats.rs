//! `ops-agent stats`: the cumulative stats file, readable; with
//! `--prometheus`, the metrics textfile's content, rendered from the same
//! stats and state files the cycle wrote it from.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::state::{RuntimeState, Stats};
use crate::store;

/// Prints the stats file (text, JSON or the Prometheus text format); a
/// missing file prints zeros.
pub(crate) fn run(config: &Config, json: bool, prometheus: bool) -> Result<ExitCode> {
    let stats: Stats = store::peek(&config.paths.stats)?.unwrap_or_default();
    if prometheus {
        let runtime: RuntimeState = store::peek(&config.paths.state)?.unwrap_or_default();
        super::print_text(&crate::observe::metrics::render(&stats.metrics(&runtime)))?;
    } else if json {
        super::print_json(&stats, "stats")?;
    } else {
        super::print_text(&render(&stats, &config.paths.stats.display().to_string()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The text form: one `name  value` row each, the name column as wide as
/// the longest counter name (at least 16), so long names such as
/// `incident_recovery_ms_total` never push their value out of line. Pure.
fn render(stats: &Stats, path: &str) -> String {
    let when = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "never".into())
    };
    let checks: Vec<String> = stats
        .checks
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let mut rows: Vec<(String, String)> = vec![
        ("stats file".into(), path.to_string()),
        ("since".into(), when(stats.since)),
        ("last cycle".into(), when(stats.last_cycle_at)),
        (
            "cycles".into(),
            format!(
                "{} ({} degraded, {} failed, {} hit the deadline)",
                stats.cycles, stats.cycles_degraded, stats.cycles_failed, stats.deadline_hits
            ),
        ),
        (
            "check results".into(),
            if checks.is_empty() {
                "none".into()
            } else {
                checks.join(", ")
            },
        ),
    ];
    rows.extend(
        stats
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string())),
    );
    for (stage, outcomes) in &stats.stages {
        let o: Vec<String> = outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        rows.push((format!("stage {stage}"), o.join(", ")));
    }
    if let Some(h) = &stats.heartbeat {
        rows.push((
            "heartbeat".into(),
            format!("{} at {}", h.line(), crate::time::rfc3339_ms(h.at_ms)),
        ));
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(16);
    rows.iter().map(|(k, v)| format!("{k:<w$} {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_counter_names_keep_the_columns() {
        let mut s = Stats {
            cycles: 3,
            ..Stats::default()
        };
        s.counters
            .insert("incident_recovery_ms_total".into(), 91_000);
        s.counters.insert("posts_handled".into(), 7);
        let text = render(&s, "/x/ops.json");
        // Every value starts in the column after the longest name.
        let w = "incident_recovery_ms_total".len();
        for l in text.lines() {
            assert!(
                l.as_bytes()[w] == b' ' && l.as_bytes()[w + 1] != b' ',
                "not aligned at {w}: {l:?}\n{text}"
            );
        }
        assert!(
            text.contains("incident_recovery_ms_total 91000\n"),
            "{text}"
        );
        assert!(text.contains("cycles                     3 ("), "{text}");
        // Short names keep the historical 16-wide column.
        let short = render(&Stats::default(), "/x");
        assert!(short.contains("cycles           0 ("), "{short}");
    }
}
