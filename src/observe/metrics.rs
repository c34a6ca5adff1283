//! Metrics in the Prometheus text format (version 0.0.4), for
//! node_exporter's textfile collector: written atomically at the end of
//! every cycle to `[metrics] textfile`, and printed by `ops-agent stats
//! --prometheus` from the same data.
//!
//! Names follow Prometheus' conventions: the `ops_agent_` prefix, base
//! units (`_seconds`), `_total` for counters, one gauge per state for an
//! enumeration (`ops_agent_last_cycle_outcome{outcome="ok"} 1`). Counters
//! are the cumulative stats file's, so they survive restarts like a
//! counter should and reset only when the stats file is deleted.
//!
//! The file is the one thing the agent writes that others must read
//! (node_exporter usually runs as another user), so its mode is
//! configurable and 0644 by default; it is still written through a
//! symlink-refusing temp file and rename, never in place.
//!
//! [`render`] is pure: a [`Snapshot`] (plain data, built by the cycle and
//! by `stats` from the stats and state files) in, text out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths::expand_tilde;
use crate::stage::Stage;

/// `[metrics]`: where the textfile goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// The textfile (e.g. `/var/lib/node_exporter/textfile/ops_agent.prom`;
    /// the name must end in `.prom` for node_exporter); empty: none.
    textfile: String,
    /// Its permission bits, in octal: readable by the exporter's user.
    mode: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            textfile: String::new(),
            mode: "0644".into(),
        }
    }
}

impl MetricsConfig {
    /// Checks the section without I/O; errors name the key and the bad value.
    pub(crate) fn validate(&self) -> Result<()> {
        if parse_mode(&self.mode)? & 0o002 != 0 {
            bail!(
                "metrics.mode: '{}' lets every local user rewrite the agent's metrics (and so \
                 what the alerts on them see); use 0644 or 0640",
                self.mode
            );
        }
        let t = self.textfile.trim();
        if t != self.textfile {
            bail!(
                "metrics.textfile: '{}' has leading or trailing blanks",
                self.textfile
            );
        }
        if t.ends_with('/') {
            bail!("metrics.textfile: '{t}' is a directory; name a .prom file in it");
        }
        Ok(())
    }

    /// The textfile, `~` expanded; `None` when not configured.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        (!self.textfile.is_empty()).then(|| expand_tilde(&self.textfile))
    }

    /// The mode bits (validated at load).
    pub(crate) fn mode_bits(&self) -> u32 {
        parse_mode(&self.mode).unwrap_or(0o644)
    }
}

/// `"0644"` → `0o644`: octal, read and write bits only.
fn parse_mode(s: &str) -> Result<u32> {
    let digits = s.trim().trim_start_matches("0o");
    let bits = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|_| (3..=4).contains(&digits.len()));
    match bits {
        Some(b) if b & !0o666 == 0 && b & 0o600 == 0o600 => Ok(b),
        _ => bail!(
            "metrics.mode: '{s}' is not a file mode like \"0644\" (octal; read/write bits only, owner read and write)"
        ),
    }
}

/// Writes `text` to `path` atomically with `mode`.
pub(crate) fn write_textfile(path: &Path, text: &str, mode: u32) -> Result<()> {
    crate::files::write_atomic_mode(path, text.as_bytes(), mode)
        .with_context(|| format!("writing the metrics textfile {}", path.display()))
}

/// A check's last status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckGauge {
    /// The check.
    pub(crate) check: String,
    /// Its service.
    pub(crate) service: String,
    /// `ok`, `warn`, `critical` or `unknown`.
    pub(crate) status: String,
}

/// A stage of the last cycle.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageGauge {
    /// The stage.
    pub(crate) stage: Stage,
    /// `ok`, `skipped`, `degraded` or `failed`.
    pub(crate) outcome: String,
    /// Its wall time.
    pub(crate) ms: u64,
}

/// The last cycle.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LastCycle {
    /// Its start, epoch ms.
    pub(crate) started_ms: i64,
    /// Its wall time.
    pub(crate) duration_ms: u64,
    /// `ok`, `degraded` or `failed`.
    pub(crate) outcome: String,
    /// The deadline cut it.
    pub(crate) deadline_hit: bool,
    /// Its stages in order.
    pub(crate) stages: Vec<StageGauge>,
    /// Its check results.
    pub(crate) checks: Vec<CheckGauge>,
    /// Its named figures (`mm_requests`, `posts_new`, `posts_handled`).
    pub(crate) counts: BTreeMap<String, u64>,
    /// Its stages that did their work with an optional dependency's
    /// fallback (shown, not a degraded cycle).
    pub(crate) fallbacks: Vec<Stage>,
}

/// Everything the textfile shows, as plain data.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// Cycles by overall outcome (`ok`, `degraded`, `failed`), cumulative.
    pub(crate) cycles: BTreeMap<String, u64>,
    /// Cycles the deadline cut.
    pub(crate) deadline_hits: u64,
    /// Wall time of all cycles recorded.
    pub(crate) duration_ms_total: u64,
    /// The last cycle without a failed stage, epoch ms.
    pub(crate) last_success_ms: Option<i64>,
    /// The last cycle.
    pub(crate) last: Option<LastCycle>,
    /// Stage outcomes, cumulative: stage → outcome → count.
    pub(crate) stages: BTreeMap<String, BTreeMap<String, u64>>,
    /// Check results by status, cumulative.
    pub(crate) check_results: BTreeMap<String, u64>,
    /// The stats file's named counters.
    pub(crate) counters: BTreeMap<String, u64>,
    /// Incidents still failing.
    pub(crate) open_incidents: u64,
    /// Silences in force.
    pub(crate) silences: u64,
    /// Outbox items waiting, by kind (`task`, `card`).
    pub(crate) outbox: BTreeMap<String, u64>,
    /// Tasks the MC command could not confirm, listed or not.
    pub(crate) uncertain_tasks: u64,
    /// Of those, the ones dropped from the list `status` shows.
    pub(crate) uncertain_dropped: u64,
    /// Posts handed over but not yet fully handled.
    pub(crate) posts_in_progress: u64,
}

/// A metric family being written: HELP and TYPE once, then its samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value as f64);
    }
}

/// `\`, `"` and newlines escaped, as the text format wants in label values.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers without a fraction, others as Rust prints them (`0.041`).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The check status as a number: 0 ok, 1 warn, 2 critical, 3 unknown (the
/// Nagios plugin convention).
fn status_value(status: &str) -> f64 {
    match status {
        "ok" => 0.0,
        "warn" => 1.0,
        "critical" => 2.0,
        _ => 3.0,
    }
}

/// Counters with a metric of their own: stats name → (metric, label, help).
/// `*` in a stats name is a prefix whose rest becomes the label's value.
const COUNTERS: &[(&str, &str, Option<&str>, &str)] = &[
    (
        "posts_handled",
        "ops_agent_posts_handled_total",
        None,
        "Posts fully handled (labelled, filed, answered).",
    ),
    (
        "classified_*",
        "ops_agent_posts_classified_total",
        Some("path"),
        "Posts labelled, by decision path (llm or fallback; keywords repeats fallback until 0.2.0).",
    ),
    // Before `fallback_*`, which would take its names for reasons.
    (
        "fallback_part_*",
        "ops_agent_posts_fallback_part_total",
        Some("part"),
        "Posts labelled by the fallback, by the part that decided (rules, model or correction).",
    ),
    (
        "fallback_*",
        "ops_agent_posts_fallback_total",
        Some("reason"),
        "Posts labelled by the fallback, by why the LLM was not used.",
    ),
    (
        "label_*",
        "ops_agent_posts_labelled_total",
        Some("label"),
        "Posts labelled, by label.",
    ),
    (
        "tasks_created",
        "ops_agent_tasks_created_total",
        None,
        "Tasks created in MC.",
    ),
    (
        "tasks_failed",
        "ops_agent_tasks_failed_total",
        None,
        "Attempts to create a task that failed (the post stays pending).",
    ),
    (
        "cards_created",
        "ops_agent_cards_created_total",
        None,
        "Planka cards created.",
    ),
    (
        "cards_failed",
        "ops_agent_cards_failed_total",
        None,
        "Attempts to create a card that failed (it waits in the outbox).",
    ),
    (
        "replies_posted",
        "ops_agent_replies_posted_total",
        None,
        "Thread replies posted.",
    ),
    (
        "replies_failed",
        "ops_agent_replies_failed_total",
        None,
        "Replies that could not be posted (the post stays pending).",
    ),
    (
        "fixes_run",
        "ops_agent_fixes_attempted_total",
        None,
        "Fix actions started.",
    ),
    (
        "fixes_*",
        "ops_agent_fixes_total",
        Some("outcome"),
        "Fix actions by verified outcome.",
    ),
    (
        "incidents_opened",
        "ops_agent_incidents_opened_total",
        None,
        "Incidents opened (escalated services).",
    ),
    (
        "incidents_acknowledged",
        "ops_agent_incidents_acknowledged_total",
        None,
        "Alerts acknowledged.",
    ),
    (
        "incidents_resolved",
        "ops_agent_incidents_resolved_total",
        None,
        "Incidents whose service recovered.",
    ),
    (
        "alerts_posted",
        "ops_agent_alerts_posted_total",
        None,
        "Alert posts made.",
    ),
    (
        "alert_follow_ups",
        "ops_agent_alert_follow_ups_total",
        None,
        "Follow-ups on unacknowledged alerts.",
    ),
    (
        "alert_reminders",
        "ops_agent_alert_reminders_total",
        None,
        "Reminders of unacknowledged incidents.",
    ),
    (
        "recoveries_posted",
        "ops_agent_recoveries_posted_total",
        None,
        "Recovery notices posted.",
    ),
    (
        "escalation_actions_failed",
        "ops_agent_escalation_actions_failed_total",
        None,
        "Escalation steps that failed (owed again).",
    ),
    (
        "stage_fallback_*",
        "ops_agent_stage_fallbacks_total",
        Some("stage"),
        "Cycles in which the stage did its work with an optional dependency's fallback.",
    ),
    (
        "mm_requests",
        "ops_agent_mattermost_requests_total",
        None,
        "Requests sent to Mattermost.",
    ),
];

/// The stages whose optional dependency has a documented fallback: the
/// LLM (classify, reply) and Planka (tasks, the incident's card steps).
const FALLBACK_STAGES: [Stage; 4] = [Stage::Classify, Stage::Reply, Stage::Tasks, Stage::Escalate];

/// Label values always shown (as 0) so alerts on them never see an absent series.
fn always(metric: &str) -> &'static [&'static str] {
    match metric {
        "ops_agent_posts_classified_total" => &["fallback", "keywords", "llm"],
        "ops_agent_posts_fallback_part_total" => &["correction", "model", "rules"],
        "ops_agent_posts_labelled_total" => &["incident", "routine", "task"],
        "ops_agent_fixes_total" => &["failed", "pending", "verified"],
        "ops_agent_stage_fallbacks_total" => &["classify", "escalate", "reply", "tasks"],
        _ => &[],
    }
}

/// Series repeated under an old label value so that dashboards and alerts
/// written against it keep working: (stats counter, label, old value).
/// `path="keywords"` was the fallback's name in 0.1.0; it repeats
/// `path="fallback"` until 0.2.0, which drops it.
const OLD_SERIES: &[(&str, &str, &str)] = &[("classified_fallback", "path", "keywords")];

/// A sample's one label, when its family has one: (name, value).
type Label = Option<(&'static str, String)>;

/// Which metric a stats counter belongs to, and its label value. Pure.
fn counter_metric(name: &str) -> Option<(&'static str, Label)> {
    // Exact names first: `fixes_run` is not an outcome of `fixes_*`.
    if let Some((_, m, _, _)) = COUNTERS.iter().find(|(k, ..)| *k == name) {
        return Some((m, None));
    }
    COUNTERS.iter().find_map(|(k, m, label, _)| {
        let prefix = k.strip_suffix('*')?;
        let rest = name.strip_prefix(prefix)?;
        (!rest.is_empty()).then(|| (*m, label.map(|l| (l, rest.to_string()))))
    })
}

/// The text format for `s`. Pure; families in a fixed order.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut o = Out(String::new());
    o.family(
        "ops_agent_cycles_total",
        "counter",
        "Cycles run, by overall outcome.",
    );
    for outcome in ["ok", "degraded", "failed"] {
        let n = s.cycles.get(outcome).copied().unwrap_or(0);
        o.sample("ops_agent_cycles_total", &[("outcome", outcome)], n as f64);
    }
    o.counter(
        "ops_agent_cycle_deadline_hits_total",
        "Cycles cut short by the deadline.",
        s.deadline_hits,
    );
    let count: u64 = s.cycles.values().sum();
    o.family(
        "ops_agent_cycle_duration_seconds",
        "summary",
        "Wall time of cycles.",
    );
    o.sample(
        "ops_agent_cycle_duration_seconds_sum",
        &[],
        secs(s.duration_ms_total),
    );
    o.sample("ops_agent_cycle_duration_seconds_count", &[], count as f64);
    o.gauge(
        "ops_agent_last_success_timestamp_seconds",
        "Start of the last cycle without a failed stage (0: none yet).",
        s.last_success_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
    );
    if let Some(l) = &s.last {
        o.gauge(
            "ops_agent_last_cycle_timestamp_seconds",
            "Start of the last cycle.",
            l.started_ms as f64 / 1000.0,
        );
        o.gauge(
            "ops_agent_last_cycle_duration_seconds",
            "Wall time of the last cycle.",
            secs(l.duration_ms),
        );
        o.family(
            "ops_agent_last_cycle_outcome",
            "gauge",
            "Overall outcome of the last cycle (1 for the outcome it had).",
        );
        for outcome in ["ok", "degraded", "failed"] {
            let v = if l.outcome == outcome { 1.0 } else { 0.0 };
            o.sample("ops_agent_last_cycle_outcome", &[("outcome", outcome)], v);
        }
        o.gauge(
            "ops_agent_last_cycle_deadline_hit",
            "1 when the deadline cut the last cycle.",
            if l.deadline_hit { 1.0 } else { 0.0 },
        );
        o.family(
            "ops_agent_last_cycle_stage_outcome",
            "gauge",
            "Outcome of each stage in the last cycle (1 for the outcome it had).",
        );
        for st in &l.stages {
            for outcome in ["ok", "skipped", "degraded", "failed"] {
                let v = if st.outcome == outcome { 1.0 } else { 0.0 };
                o.sample(
                    "ops_agent_last_cycle_stage_outcome",
                    &[("stage", st.stage.as_str()), ("outcome", outcome)],
                    v,
                );
            }
        }
        o.family(
            "ops_agent_last_cycle_stage_fallback",
            "gauge",
            "1 when the stage did its work in the last cycle with an optional dependency's \
             fallback (the LLM down: rules and templates; Planka down: tasks without cards). \
             Not a degraded cycle: watch it, do not page on it.",
        );
        for stage in FALLBACK_STAGES {
            let v = if l.fallbacks.contains(&stage) {
                1.0
            } else {
                0.0
            };
            o.sample(
                "ops_agent_last_cycle_stage_fallback",
                &[("stage", stage.as_str())],
                v,
            );
        }
        o.family(
            "ops_agent_last_cycle_stage_duration_seconds",
            "gauge",
            "Wall time of each stage in the last cycle.",
        );
        for st in &l.stages {
            o.sample(
                "ops_agent_last_cycle_stage_duration_seconds",
                &[("stage", st.stage.as_str())],
                secs(st.ms),
            );
        }
        o.family(
            "ops_agent_check_status",
            "gauge",
            "Status of each check in the last cycle: 0 ok, 1 warn, 2 critical, 3 unknown.",
        );
        for c in &l.checks {
            o.sample(
                "ops_agent_check_status",
                &[("check", &c.check), ("service", &c.service)],
                status_value(&c.status),
            );
        }
        o.family(
            "ops_agent_last_cycle_posts",
            "gauge",
            "Posts in the last cycle: new (handed over by the poll) and handled.",
        );
        for (state, key) in [("new", "posts_new"), ("handled", "posts_handled")] {
            let n = l.counts.get(key).copied().unwrap_or(0);
            o.sample("ops_agent_last_cycle_posts", &[("state", state)], n as f64);
        }
        o.gauge(
            "ops_agent_last_cycle_mattermost_requests",
            "Requests sent to Mattermost in the last cycle.",
            l.counts.get("mm_requests").copied().unwrap_or(0) as f64,
        );
    }
    o.family(
        "ops_agent_stage_outcomes_total",
        "counter",
        "Stage outcomes over all cycles.",
    );
    for (stage, outcomes) in &s.stages {
        for (outcome, n) in outcomes {
            o.sample(
                "ops_agent_stage_outcomes_total",
                &[("stage", stage), ("outcome", outcome)],
                *n as f64,
            );
        }
    }
    o.family(
        "ops_agent_check_results_total",
        "counter",
        "Check results over all cycles, by status.",
    );
    for status in ["ok", "warn", "critical", "unknown"] {
        let n = s.check_results.get(status).copied().unwrap_or(0);
        o.sample(
            "ops_agent_check_results_total",
            &[("status", status)],
            n as f64,
        );
    }
    render_counters(&mut o, &s.counters);
    o.gauge(
        "ops_agent_incidents_open",
        "Incidents still failing.",
        s.open_incidents as f64,
    );
    o.gauge(
        "ops_agent_silences_active",
        "Silences in force at the last cycle.",
        s.silences as f64,
    );
    o.family(
        "ops_agent_outbox_pending",
        "gauge",
        "Tasks and cards waiting in the outbox for a retry.",
    );
    for kind in ["task", "card"] {
        let n = s.outbox.get(kind).copied().unwrap_or(0);
        o.sample("ops_agent_outbox_pending", &[("kind", kind)], n as f64);
    }
    o.gauge(
        "ops_agent_tasks_uncertain",
        "Tasks the MC command could not confirm (check MC by hand).",
        s.uncertain_tasks as f64,
    );
    o.gauge(
        "ops_agent_tasks_uncertain_dropped",
        "Of those, how many `status` no longer lists (the oldest; the log named each).",
        s.uncertain_dropped as f64,
    );
    o.gauge(
        "ops_agent_posts_in_progress",
        "Posts handed over but not yet fully handled.",
        s.posts_in_progress as f64,
    );
    o.0
}

/// The stats counters: each known one under its metric (all of a
/// family's samples together), the rest as `ops_agent_events_total{name}`.
fn render_counters(o: &mut Out, counters: &BTreeMap<String, u64>) {
    let mut families: BTreeMap<&str, Vec<(Label, f64)>> = BTreeMap::new();
    let mut other = Vec::new();
    for (name, n) in counters {
        match counter_metric(name) {
            Some((m, label)) => {
                let samples = families.entry(m).or_default();
                for (_, l, old) in OLD_SERIES.iter().filter(|(c, ..)| *c == name.as_str()) {
                    samples.push((Some((*l, old.to_string())), *n as f64));
                }
                samples.push((label, *n as f64));
            }
            None if name == "incident_recovery_ms_total" => families
                .entry("ops_agent_incident_recovery_seconds_total")
                .or_default()
                .push((None, secs(*n))),
            None => other.push((name.as_str(), *n)),
        }
    }
    let mut emit = |o: &mut Out, metric: &str, help: &str, label: Option<&str>| {
        o.family(metric, "counter", help);
        let samples = families.remove(metric).unwrap_or_default();
        match label {
            None => {
                let v = samples.iter().map(|(_, v)| v).sum::<f64>();
                o.sample(metric, &[], v);
            }
            Some(l) => {
                let mut by: BTreeMap<String, f64> = always(metric)
                    .iter()
                    .map(|v| (v.to_string(), 0.0))
                    .collect();
                for (lv, v) in samples {
                    if let Some((_, lv)) = lv {
                        *by.entry(lv).or_default() += v;
                    }
                }
                for (lv, v) in by {
                    o.sample(metric, &[(l, &lv)], v);
                }
            }
        }
    };
    let mut done: Vec<&str> = Vec::new();
    for (_, metric, label, help) in COUNTERS {
        if !done.contains(metric) {
            emit(o, metric, help, *label);
            done.push(metric);
        }
    }
    emit(
        o,
        "ops_agent_incident_recovery_seconds_total",
        "Time from failing to recovered, summed over resolved incidents (divide by ops_agent_incidents_resolved_total).",
        None,
    );
    o.family(
        "ops_agent_events_total",
        "counter",
        "Other named counters of the stats file.",
    );
    for (name, n) in other {
        o.sample("ops_agent_events_total", &[("name", name)], n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_table() {
        type Want = Option<(&'static str, Option<(&'static str, &'static str)>)>;
        let table: &[(&str, Want)] = &[
            (
                "posts_handled",
                Some(("ops_agent_posts_handled_total", None)),
            ),
            (
                "classified_llm",
                Some(("ops_agent_posts_classified_total", Some(("path", "llm")))),
            ),
            (
                "classified_fallback",
                Some((
                    "ops_agent_posts_classified_total",
                    Some(("path", "fallback")),
                )),
            ),
            (
                "fallback_part_model",
                Some((
                    "ops_agent_posts_fallback_part_total",
                    Some(("part", "model")),
                )),
            ),
            (
                "fallback_timeout",
                Some((
                    "ops_agent_posts_fallback_total",
                    Some(("reason", "timeout")),
                )),
            ),
            (
                "label_task",
                Some(("ops_agent_posts_labelled_total", Some(("label", "task")))),
            ),
            ("fixes_run", Some(("ops_agent_fixes_attempted_total", None))),
            (
                "fixes_verified",
                Some(("ops_agent_fixes_total", Some(("outcome", "verified")))),
            ),
            (
                "mm_requests",
                Some(("ops_agent_mattermost_requests_total", None)),
            ),
            ("something_new", None),
            ("label_", None),
        ];
        for (name, want) in table {
            let got = counter_metric(name);
            let got = got
                .as_ref()
                .map(|(m, l)| (*m, l.as_ref().map(|(k, v)| (*k, v.as_str()))));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn the_fallback_is_counted_by_part_and_under_its_old_name_too() {
        let mut s = Snapshot::default();
        for (name, n) in [
            ("classified_llm", 2),
            ("classified_fallback", 4),
            ("fallback_no_llm", 4),
            ("fallback_part_model", 3),
            ("fallback_part_rules", 1),
        ] {
            s.counters.insert(name.into(), n);
        }
        let text = render(&s);
        for want in [
            "ops_agent_posts_classified_total{path=\"fallback\"} 4\n",
            "ops_agent_posts_classified_total{path=\"keywords\"} 4\n",
            "ops_agent_posts_classified_total{path=\"llm\"} 2\n",
            "ops_agent_posts_fallback_total{reason=\"no_llm\"} 4\n",
            "ops_agent_posts_fallback_part_total{part=\"correction\"} 0\n",
            "ops_agent_posts_fallback_part_total{part=\"model\"} 3\n",
            "ops_agent_posts_fallback_part_total{part=\"rules\"} 1\n",
        ] {
            assert!(text.contains(want), "{want}{text}");
        }
        assert!(!text.contains("part_model\""), "{text}");
        let empty = render(&Snapshot::default());
        assert!(
            empty.contains("ops_agent_posts_classified_total{path=\"keywords\"} 0\n"),
            "{empty}"
        );
    }

    #[test]
    fn mode_table() {
        for (s, want) in [
            ("0644", Some(0o644)),
            ("600", Some(0o600)),
            ("0o640", Some(0o640)),
        ] {
            assert_eq!(parse_mode(s).ok(), want, "{s}");
        }
        for bad in ["0755", "644x", "0444", "06440", "", "4755"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_escaped_and_every_family_is_typed_once() {
        let mut s = Snapshot {
            last: Some(LastCycle {
                outcome: "ok".into(),
                checks: vec![CheckGauge {
                    check: "we\"b\\x\ny".into(),
                    service: "web".into(),
                    status: "critical".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        s.counters.insert("odd".into(), 2);
        let text = render(&s);
        assert!(
            text.contains("ops_agent_check_status{check=\"we\\\"b\\\\x\\ny\",service=\"web\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("ops_agent_events_total{name=\"odd\"} 2\n"));
        let mut typed = std::collections::BTreeSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(
                typed.insert(l.split(' ').nth(2).unwrap().to_string()),
                "{l}"
            );
        }
    }
}
