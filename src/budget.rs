//! The cycle's time budget, said once: when the cycle must end, when chat
//! work must stop so the health and fix stages keep their time, the last
//! moment an LLM call may start, and how a stage is cut at a deadline.
//!
//! Everything but [`within`] is pure and table-tested; the cycle builds one
//! [`CycleBudget`] at its start and hands it to every stage.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::health::Checks;

/// The deadlines of one cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CycleBudget {
    /// The cycle started here.
    start: Instant,
    /// The whole cycle ends here.
    pub(crate) deadline: Instant,
    /// Chat work stops here, leaving the health and fix stages their time.
    pub(crate) chat_deadline: Instant,
}

impl CycleBudget {
    /// The budget of a cycle started at `start` that must end within
    /// `deadline`, keeping `reserve` for the health and fix stages.
    pub(crate) fn new(start: Instant, deadline: Duration, reserve: Duration) -> CycleBudget {
        let end = start + deadline;
        CycleBudget {
            start,
            deadline: end,
            chat_deadline: end.checked_sub(reserve).unwrap_or(start).max(start),
        }
    }

    /// How long the chat half has, start to chat deadline.
    pub(crate) fn chat_time(&self) -> Duration {
        self.chat_deadline - self.start
    }

    /// The last moment a call bounded by `call_timeout` may start and still
    /// end before the chat deadline; `None` when no such call fits in the
    /// chat budget at all.
    pub(crate) fn last_start_for(&self, call_timeout: Duration) -> Option<Instant> {
        self.chat_deadline
            .checked_sub(call_timeout)
            .filter(|at| *at >= self.start)
    }
}

/// Time kept free for the health and fix stages at the end of the cycle:
/// the slowest check twice (probe and re-probe) with the re-probe pause,
/// plus the slowest fix (action, settle, re-check), and a second of slack;
/// at most half the deadline, so chat always keeps half.
pub(crate) fn health_reserve(
    checks: &Checks,
    reprobe_pause: Duration,
    deadline: Duration,
) -> Duration {
    let slowest = checks.iter().map(|c| c.timeout()).max().unwrap_or_default();
    let slowest_fix = checks
        .iter()
        .filter_map(|c| {
            c.fix
                .as_ref()
                .map(|f| f.timeout_secs.get() + f.settle_secs.get() + c.timeout())
        })
        .max()
        .unwrap_or_default();
    let reserve = 2 * slowest + slowest_fix + Duration::from_secs(1) + reprobe_pause;
    reserve.min(deadline / 2)
}

/// Why a stage did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The deadline had passed before the stage began.
    BeforeStart,
    /// The deadline passed while the stage ran.
    Midway,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cut::BeforeStart => "deadline reached before the stage started",
            Cut::Midway => "cut short by the cycle deadline",
        })
    }
}

/// Runs a stage unless the deadline has passed, and cuts it at the deadline.
pub(crate) async fn within<T>(deadline: Instant, fut: impl Future<Output = T>) -> Result<T, Cut> {
    if Instant::now() >= deadline {
        return Err(Cut::BeforeStart);
    }
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| Cut::Midway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{CheckConfig, CheckKind, FixAction, FixSpec};
    use crate::time::Secs;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn reserve_table() {
        let mut slow = CheckConfig::new("slow", CheckKind::Memory);
        slow.timeout_secs = Secs::new(10);
        let mut fixed = CheckConfig::new("web", CheckKind::Docker);
        fixed.container = Some("web".into());
        fixed.timeout_secs = Secs::new(3);
        let mut spec = FixSpec::new(FixAction::RestartContainer);
        spec.timeout_secs = Secs::new(20);
        spec.settle_secs = Secs::new(5);
        fixed.fix = Some(spec);
        let pause = Duration::from_millis(2000);
        type Row = (&'static str, Vec<CheckConfig>, Duration, Duration);
        let table: Vec<Row> = vec![
            // 2 x 5 (default timeout) + 1 + 2 pause
            (
                "the runbook's system checks",
                CheckConfig::defaults(),
                secs(240),
                secs(13),
            ),
            ("no checks", vec![], secs(240), secs(3)),
            // 2 x 10 + (20 + 5 + 3) + 1 + 2
            (
                "slowest check and slowest fix",
                vec![slow.clone(), fixed.clone()],
                secs(240),
                secs(51),
            ),
            (
                "never more than half the deadline",
                vec![slow, fixed],
                secs(60),
                secs(30),
            ),
        ];
        for (name, checks, deadline, want) in table {
            assert_eq!(
                health_reserve(&Checks::from(checks), pause, deadline),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn budget_table() {
        let t0 = Instant::now();
        // (deadline, reserve, chat deadline after t0, last LLM start for a 20 s call)
        let table = [
            (secs(240), secs(13), secs(227), Some(secs(207))),
            (secs(240), secs(120), secs(120), Some(secs(100))),
            // The call is longer than the chat budget: no call can fit.
            (secs(30), secs(15), secs(15), None),
            (secs(10), secs(20), secs(0), None),
        ];
        for (deadline, reserve, chat, llm) in table {
            let b = CycleBudget::new(t0, deadline, reserve);
            assert_eq!(b.deadline - t0, deadline);
            assert_eq!(b.chat_deadline - t0, chat, "{deadline:?} {reserve:?}");
            let start_by = b.last_start_for(secs(20)).map(|at| at - t0);
            assert_eq!(start_by, llm, "{deadline:?} {reserve:?}");
        }
    }

    #[tokio::test]
    async fn within_cuts_and_refuses() {
        let past = Instant::now();
        assert_eq!(within(past, async { 1 }).await, Err(Cut::BeforeStart));
        let soon = Instant::now() + Duration::from_millis(20);
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(within(soon, slow).await, Err(Cut::Midway));
        let later = Instant::now() + secs(5);
        assert_eq!(within(later, async { 2 }).await, Ok(2));
    }
}
