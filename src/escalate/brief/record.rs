//! The agent's own record of an incident's service: each check's streak
//! and recent results, every fix tried with its outcome and the budget,
//! the related incidents (of the checks it depends on and of those that
//! depend on it) and the silences that applied. Pure.

use std::collections::BTreeSet;

use super::{Piece, Subject};
use crate::health::{Checks, HealthState};
use crate::time::rfc3339_ms;

/// Results shown per check (the state keeps five).
const RESULTS_SHOWN: usize = 5;

/// The record piece.
pub(super) fn piece(subject: &Subject<'_>, health: &HealthState, now_ms: i64) -> Piece {
    let inc = subject.incident;
    let mut p = Piece::new("record", "the agent's record");
    p.line(&format!(
        "failing since {} ({} ago); the agent cannot resolve it: {}",
        rfc3339_ms(inc.failing_since_ms),
        crate::time::human_ms(now_ms - inc.failing_since_ms),
        inc.why
    ));
    for c in subject.checks.iter().filter(|c| c.service() == inc.service) {
        let Some(m) = health.checks.get(&c.name) else {
            continue;
        };
        p.line(&format!(
            "check {} ({}): {} failed and {} good cycles in a row{}",
            c.name,
            c.kind.as_str(),
            m.consecutive_failures,
            m.consecutive_successes,
            if m.failing { ", failing" } else { "" }
        ));
        let skip = m.last.len().saturating_sub(RESULTS_SHOWN);
        for r in m.last.iter().skip(skip).rev() {
            p.line(&format!(
                "  {} {} {}",
                rfc3339_ms(r.at_ms),
                r.status.as_str(),
                r.reason
            ));
        }
    }
    match subject.summary {
        Some(s) if !s.tried.is_empty() => {
            for a in &s.tried {
                p.line(&format!(
                    "fix {} {} -> {}{}",
                    rfc3339_ms(a.at_ms),
                    a.action,
                    a.outcome.as_str(),
                    a.detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ));
            }
        }
        Some(s) if s.has_fix => p.line("fix: no attempt in the current window"),
        Some(_) => p.line("fix: none is configured"),
        None => {}
    }
    if let Some(b) = subject.summary.and_then(|s| s.budget.as_ref()) {
        p.line(&format!(
            "fix budget: {} used, {} left{}",
            b.used,
            b.left,
            b.next_allowed_at_ms
                .map(|t| format!(", next allowed at {}", rfc3339_ms(t)))
                .unwrap_or_default()
        ));
    }
    let related = related_services(subject.checks, &inc.service);
    for other in subject
        .state
        .incidents
        .iter()
        .chain(subject.state.closed.iter().rev())
        .filter(|o| o.key != inc.key && related.contains(o.service.as_str()))
        .take(5)
    {
        p.line(&format!(
            "related incident {} ({}): {}",
            other.key,
            match other.recovered_ms {
                None => "open".to_string(),
                Some(r) => format!("recovered at {}", rfc3339_ms(r)),
            },
            other.why
        ));
    }
    let silences = &subject.state.silences;
    for s in silences.active.iter().chain(silences.ended.iter()) {
        let about = s.target == inc.service
            || subject
                .checks
                .iter()
                .any(|c| c.name == s.target && c.service() == inc.service);
        if about && s.until_ms >= inc.failing_since_ms {
            p.line(&format!("silence: {}", s.line(now_ms)));
        }
    }
    p
}

/// The services related to `service` through the check tree: those of
/// the checks its checks depend on (parents, up the chain) and of the
/// checks that depend on its checks (children, down).
fn related_services<'a>(checks: &'a Checks, service: &str) -> BTreeSet<&'a str> {
    let mine: BTreeSet<&str> = checks
        .iter()
        .filter(|c| c.service() == service)
        .map(|c| c.name.as_str())
        .collect();
    let mut out = BTreeSet::new();
    for c in checks.iter() {
        // Walk up from every check; a chain touching one of ours relates
        // the two ends.
        let mut chain = vec![c];
        let mut cur = c;
        while let Some(parent) = cur.parent.as_deref().and_then(|p| checks.get(p)) {
            if chain.len() > checks.len() {
                break;
            }
            chain.push(parent);
            cur = parent;
        }
        let touches = chain.iter().any(|x| mine.contains(x.name.as_str()));
        if touches {
            out.extend(chain.iter().map(|x| x.service()));
        }
    }
    out.remove(service);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{CheckConfig, CheckKind};

    #[test]
    fn related_services_go_up_and_down_the_tree() {
        let mut db = CheckConfig::new("db", CheckKind::Docker);
        db.container = Some("db".into());
        let mut web = CheckConfig::new("web", CheckKind::Docker);
        web.container = Some("web".into());
        web.parent = Some("db".into());
        let mut page = CheckConfig::new("page", CheckKind::Http);
        page.url = Some("http://127.0.0.1:1/".into());
        page.parent = Some("web".into());
        let disk = CheckConfig::new("disk", CheckKind::Disk);
        let checks = Checks::from(vec![db, web, page, disk]);
        let r = related_services(&checks, "web");
        assert!(r.contains("db") && r.contains("page"), "{r:?}");
        assert!(!r.contains("web") && !r.contains("disk"), "{r:?}");
        let r = related_services(&checks, "db");
        assert!(r.contains("web") && r.contains("page"), "{r:?}");
    }
}
