//! Intel (stage 8 of docs/architecture.md#one-cycle): the optional
//! HiveMind feed. When `[intel] url` is set, the cycle summary (stages,
//! counts, open incidents) is POSTed there as JSON, with a timeout. HiveMind is a consumer, never a
//! dependency: a failure is a degraded stage and a log line, nothing more.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::escalate::EscalationState;
use crate::report::{CycleReport, Outcome};
use crate::time::Secs;

/// `[intel]`: where HiveMind listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IntelConfig {
    /// HiveMind's summary endpoint; empty: the stage is skipped.
    #[serde(serialize_with = "crate::scrub::serialize_url")]
    url: String,
    /// The POST is abandoned after this many seconds.
    timeout_secs: Secs,
}

impl Default for IntelConfig {
    fn default() -> Self {
        IntelConfig {
            url: String::new(),
            timeout_secs: Secs::new(10),
        }
    }
}

impl IntelConfig {
    /// Checks the section without I/O; errors name the key and the bad value.
    pub(crate) fn validate(&self) -> Result<()> {
        let u = self.url.trim();
        if !(u.is_empty() || u.starts_with("http://") || u.starts_with("https://")) {
            bail!(
                "intel.url: '{}' is not an http(s) URL",
                crate::scrub::url(&self.url)
            );
        }
        if self.timeout_secs.is_zero() {
            bail!("intel.timeout_secs: 0 is not a timeout; use more than 0");
        }
        Ok(())
    }

    /// Whether a URL is configured.
    fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

/// The summary HiveMind receives. Pure.
fn summary(report: &CycleReport, escalation: &EscalationState, now_ms: i64) -> Value {
    let stages: Vec<Value> = report
        .stages
        .iter()
        .map(|s| json!({"stage": s.stage, "outcome": s.outcome.word(), "detail": s.outcome.detail(), "ms": s.ms}))
        .collect();
    let incidents: Vec<Value> = escalation
        .open()
        .iter()
        .map(|i| {
            json!({"key": i.key, "service": i.service, "why": i.why, "since_ms": i.failing_since_ms,
                   "alerted": i.alerted_ms.is_some(), "acknowledged": i.acked.is_some(),
                   "task_id": i.task_id})
        })
        .collect();
    json!({
        "agent": "ops-agent",
        "version": env!("CARGO_PKG_VERSION"),
        "started_ms": report.started_ms,
        "duration_ms": report.duration_ms,
        "overall": report.overall(),
        "deadline_hit": report.deadline_hit,
        "stages": stages,
        "counts": report.counts,
        "checks": crate::report::count_checks(&report.checks),
        "open_incidents": incidents,
        "silences": escalation.silences.list(now_ms).len(),
    })
}

/// POSTs `body` to `[intel] url`; any non-2xx is an error naming the URL.
async fn post(cfg: &IntelConfig, body: &Value) -> Result<()> {
    let url = cfg.url.trim();
    let http = crate::http::client(cfg.timeout_secs.get(), true)?;
    let resp = http
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {}: HiveMind unreachable", crate::scrub::url(url)))?;
    let status = resp.status();
    if !status.is_success() {
        let text = crate::http::read_text(resp, crate::http::caps::SMALL)
            .await
            .unwrap_or_default();
        bail!(
            "POST {}: HTTP {} {}",
            crate::scrub::url(url),
            status.as_u16(),
            crate::process::tail(text.as_bytes(), 200)
        );
    }
    Ok(())
}

/// The intel stage: skipped without a URL. HiveMind is optional: a summary
/// it does not take is the stage's fallback (the returned reason), not a
/// degraded cycle, since the same figures stay in `status`, the stats and
/// the metrics.
pub(crate) async fn stage(
    cfg: &IntelConfig,
    report: &CycleReport,
    escalation: &EscalationState,
    now_ms: i64,
) -> (Outcome, Option<String>) {
    if !cfg.enabled() {
        return (Outcome::Skipped("no [intel] url".into()), None);
    }
    match post(cfg, &summary(report, escalation, now_ms)).await {
        Ok(()) => (Outcome::Ok("summary posted".into()), None),
        Err(e) => (
            Outcome::Ok("summary not posted".into()),
            Some(format!("HiveMind did not take the summary: {e:#}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        IntelConfig::default().validate().unwrap();
        assert!(!IntelConfig::default().enabled());
        let bad = IntelConfig {
            url: "ftp://x".into(),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("intel.url: 'ftp://x'"));
        let zero = IntelConfig {
            timeout_secs: Secs::new(0),
            ..Default::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("intel.timeout_secs"));
        assert!(toml::from_str::<IntelConfig>("uri = \"x\"").is_err());
    }

    #[test]
    fn summary_has_stages_counts_and_open_incidents() {
        let mut report = CycleReport::default();
        report.push(crate::stage::Stage::Health, Outcome::Ok("3 ok".into()), 5);
        report.counts.insert("posts_new".into(), 2);
        let mut st = EscalationState::default();
        st.incidents.push(crate::escalate::Incident {
            key: "web:web@x".into(),
            service: "web".into(),
            ..Default::default()
        });
        let v = summary(&report, &st, 0);
        assert_eq!(v["stages"][0]["stage"], "health");
        assert_eq!(v["counts"]["posts_new"], 2);
        assert_eq!(v["open_incidents"][0]["service"], "web");
    }

    #[tokio::test]
    async fn an_unreachable_hivemind_is_a_fallback_not_a_degraded_stage() {
        let cfg = IntelConfig {
            url: "http://127.0.0.1:9/summary".into(),
            timeout_secs: Secs::new(2),
        };
        let (o, why) = stage(
            &cfg,
            &CycleReport::default(),
            &EscalationState::default(),
            0,
        )
        .await;
        assert_eq!(o.word(), "ok", "{o:?}");
        let why = why.expect("the fallback's reason");
        assert!(
            why.starts_with("HiveMind did not take the summary: "),
            "{why}"
        );
        let (off, none) = stage(
            &IntelConfig::default(),
            &CycleReport::default(),
            &EscalationState::default(),
            0,
        )
        .await;
        assert_eq!(off.word(), "skipped");
        assert_eq!(none, None);
    }
}
