//! The incident state machine, pure: summaries + state + silences + `now`
//! in, the owed [`Action`]s out. Nothing here does I/O or reads a clock.
//!
//! Per service and incident (Gatus' `Triggered` habit: a thing is marked
//! done only after it succeeded, so whatever is not marked is owed again):
//!
//! ```text
//! failing, unresolvable, not silenced, no open incident -> Open, CreateTask, PostAlert
//! open: task missing -> CreateTask; alert missing -> PostAlert, PostBrief
//!       alerted, brief gathered but not in the thread -> PostBrief
//!       alerted, not acked, ack timeout passed, no follow-up yet -> FollowUp (once)
//!       alerted, not acked, reminder interval since alert/last reminder -> Remind
//!       alerted, acked, reminder interval since the ack/last reminder -> Remind
//! healthy again -> MarkRecovered, then PostRecovery (in the alert's thread),
//!       CommentCard, MoveCardDone, ResolveMc (each when applicable, once), Close
//! ```
//!
//! A silenced service gets no Open, PostAlert, FollowUp or Remind; an
//! incident alerted before the silence that recovers during it still gets
//! its PostRecovery (in its thread, marked as recovered in silence). When
//! the silence ends and it is still failing (and unresolvable), the alert
//! goes out then.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{EscalationConfig, EscalationState, Incident};
use crate::fix::ServiceSummary;
use crate::fix::{FixDecision, Outcome};

/// Recovered incidents whose closing actions keep failing (a deleted card,
/// a broken resolve command) are closed anyway after this long.
const GIVE_UP_MS: i64 = 24 * 3_600_000;

/// The planner's knobs, from config plus what is usable this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlanConfig {
    /// Unacknowledged this long → the follow-up.
    ack_timeout_ms: i64,
    /// Unacknowledged this long since the alert or last reminder → remind.
    reminder_ms: i64,
    /// `mattermost.alert_channel` is set (else no chat actions at all).
    alerting: bool,
    /// `on_call` names someone (else no follow-up).
    follow_up: bool,
    /// `done_list` is set.
    move_card: bool,
    /// The incident's task can be closed in MC: `resolve_command` is set,
    /// or MC is the built-in ledger (which the agent closes itself).
    resolve: bool,
}

impl PlanConfig {
    /// From the section; `alerting` says whether an alert channel is set,
    /// `ledger_mc` whether MC is the built-in ledger.
    pub(crate) fn new(cfg: &EscalationConfig, alerting: bool, ledger_mc: bool) -> PlanConfig {
        PlanConfig {
            ack_timeout_ms: cfg.ack_timeout_ms(),
            reminder_ms: cfg.reminder_ms(),
            alerting,
            follow_up: !cfg.on_call.is_empty(),
            move_card: !cfg.done_list.is_empty(),
            resolve: ledger_mc || !cfg.resolve_command.is_empty(),
        }
    }
}

/// One owed step. The executor performs them in order; `Open` and
/// `MarkRecovered` only change state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub(crate) enum Action {
    /// Record a new incident.
    Open {
        /// The incident as opened.
        incident: Box<Incident>,
    },
    /// The HIGH, INTERNAL escalation task (source = the key).
    CreateTask {
        /// Incident key.
        key: String,
    },
    /// The alert post in the alert channel.
    PostAlert {
        /// Incident key.
        key: String,
    },
    /// The incident brief in the alert's thread.
    PostBrief {
        /// Incident key.
        key: String,
    },
    /// The one follow-up in the alert's thread mentioning on-call.
    FollowUp {
        /// Incident key.
        key: String,
    },
    /// A reminder in the alert's thread.
    Remind {
        /// Incident key.
        key: String,
    },
    /// Record the recovery (time to recovery, silenced or not).
    MarkRecovered {
        /// Incident key.
        key: String,
        /// Recovered during a silence: no new alert is owed, but an alert
        /// already posted still gets its recovery post.
        in_silence: bool,
    },
    /// The recovery post in the alert's thread.
    PostRecovery {
        /// Incident key.
        key: String,
    },
    /// One post for an incident that failed and recovered without its
    /// alert ever reaching chat (Mattermost was down all along): what
    /// happened, when, and its task, once, late.
    AnnounceLate {
        /// Incident key.
        key: String,
    },
    /// The recovery comment on the incident's card.
    CommentCard {
        /// Incident key.
        key: String,
    },
    /// Move the card to the done list.
    MoveCardDone {
        /// Incident key.
        key: String,
    },
    /// Run the resolve command.
    ResolveMc {
        /// Incident key.
        key: String,
    },
    /// Move the incident to the history. The executor skips it when an
    /// earlier action of the same incident failed this cycle.
    Close {
        /// Incident key.
        key: String,
        /// Closing actions were still owed after [`GIVE_UP_MS`].
        gave_up: bool,
    },
}

impl Action {
    /// The incident the action belongs to.
    pub(crate) fn key(&self) -> &str {
        match self {
            Action::Open { incident } => &incident.key,
            Action::CreateTask { key }
            | Action::PostAlert { key }
            | Action::PostBrief { key }
            | Action::FollowUp { key }
            | Action::Remind { key }
            | Action::MarkRecovered { key, .. }
            | Action::PostRecovery { key }
            | Action::AnnounceLate { key }
            | Action::CommentCard { key }
            | Action::MoveCardDone { key }
            | Action::ResolveMc { key }
            | Action::Close { key, .. } => key,
        }
    }

    /// The action's name for logs and tests.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Action::Open { .. } => "open",
            Action::CreateTask { .. } => "create_task",
            Action::PostAlert { .. } => "post_alert",
            Action::PostBrief { .. } => "post_brief",
            Action::FollowUp { .. } => "follow_up",
            Action::Remind { .. } => "remind",
            Action::MarkRecovered { .. } => "mark_recovered",
            Action::PostRecovery { .. } => "post_recovery",
            Action::AnnounceLate { .. } => "announce_late",
            Action::CommentCard { .. } => "comment_card",
            Action::MoveCardDone { .. } => "move_card_done",
            Action::ResolveMc { .. } => "resolve_mc",
            Action::Close { .. } => "close",
        }
    }
}

/// Why the agent cannot resolve a failing service itself, or `None` while
/// it still can (a fix is running, verified, in its grace, or the service is
/// booting or blocked by a failing parent, which escalates on its own).
fn escalation_reason(s: &ServiceSummary) -> Option<String> {
    if !s.failing || s.blocked_by.is_some() {
        return None;
    }
    if !s.has_fix {
        return Some("no fix is configured".into());
    }
    match &s.fix {
        Some(f) => match (&f.decision, f.outcome) {
            (_, Some(Outcome::Failed)) => Some(format!(
                "the fix did not verify ({})",
                f.detail.as_deref().unwrap_or("no detail")
            )),
            (FixDecision::SkipBudgetSpent { next_allowed_at_ms }, _) => Some(format!(
                "the fix budget is spent (next attempt allowed at {})",
                crate::time::rfc3339_ms(*next_allowed_at_ms)
            )),
            (FixDecision::SkipNoFix, _) => Some("no fix is configured".into()),
            (d @ FixDecision::SkipCrashLoop { .. }, _) => Some(d.describe()),
            _ => None,
        },
        // The fix stage did not decide this cycle (cut by the deadline, or
        // its history unusable): judge by the budget and the last attempt.
        None => {
            if s.budget.as_ref().is_some_and(|b| b.left == 0) {
                Some("the fix budget is spent".into())
            } else if s.tried.last().is_some_and(|a| a.outcome == Outcome::Failed) {
                Some("the last fix did not verify".into())
            } else {
                None
            }
        }
    }
}

/// The incident key: `service:check@start` (UTC, seconds), derived from the
/// data so a restart, or even a lost state file, finds the same task.
fn incident_key(service: &str, check: &str, failing_since_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(failing_since_ms)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|| failing_since_ms.to_string());
    format!("{service}:{check}@{t}")
}

/// The failing check's `name: output` line for a summary.
fn failing_issue(s: &ServiceSummary) -> String {
    s.fix
        .as_ref()
        .map(|f| f.issue.clone())
        .filter(|i| !i.is_empty())
        .or_else(|| s.problems.first().cloned())
        .unwrap_or_else(|| format!("{}: failing", s.service))
}

/// What failed, what was tried, the last output: the alert and task body.
fn details_text(s: &ServiceSummary, why: &str) -> String {
    let mut out = format!(
        "{} is {} and the agent cannot resolve it: {why}.\n\nWhat failed:\n",
        s.service,
        s.status.as_str()
    );
    for p in &s.problems {
        out.push_str(&format!("- {p}\n"));
    }
    out.push_str("\nWhat was tried:\n");
    if s.tried.is_empty() {
        out.push_str(if s.has_fix {
            "- no fix attempt in the current window\n"
        } else {
            "- nothing: no fix is configured for this service\n"
        });
    }
    for a in &s.tried {
        out.push_str(&format!(
            "- {} {} -> {}{}\n",
            crate::time::rfc3339_ms(a.at_ms),
            a.action,
            a.outcome.as_str(),
            a.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ));
    }
    if let Some(b) = &s.budget {
        out.push_str(&format!("- fix budget: {} used, {} left\n", b.used, b.left));
    }
    if let Some(since) = s.failing_since_ms {
        out.push_str(&format!(
            "\nFailing since {} ({} failed cycles in a row).\n",
            crate::time::rfc3339_ms(since),
            s.consecutive_failures
        ));
    }
    out
}

fn open_incident(s: &ServiceSummary, why: String, now_ms: i64) -> Incident {
    let issue = failing_issue(s);
    let check = issue.split_once(": ").map_or(issue.as_str(), |(c, _)| c);
    let since = s.failing_since_ms.unwrap_or(now_ms);
    Incident {
        key: incident_key(&s.service, check, since),
        service: s.service.clone(),
        details: details_text(s, &why),
        issue,
        why,
        opened_ms: now_ms,
        failing_since_ms: since,
        ..Default::default()
    }
}

/// The owed actions, in the order to perform them. Pure.
///
/// `silenced`: the services silenced now (`Silences::silenced_services`).
/// A service missing from `services` (not checked this cycle) neither
/// opens nor recovers anything.
pub(crate) fn plan(
    services: &[ServiceSummary],
    state: &EscalationState,
    silenced: &BTreeSet<String>,
    now_ms: i64,
    cfg: &PlanConfig,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for inc in &state.incidents {
        let key = inc.key.clone();
        let quiet = silenced.contains(&inc.service);
        let summary = super::summary_of(services, &inc.service);
        let recovered_ms = inc.recovered_ms.or_else(|| {
            summary
                .filter(|s| !s.failing && s.blocked_by.is_none())
                .map(|_| now_ms)
        });
        let Some(recovered_ms) = recovered_ms else {
            // Still failing.
            if inc.task_id.is_none() {
                actions.push(Action::CreateTask { key: key.clone() });
            }
            if quiet || !cfg.alerting {
                continue;
            }
            match (inc.alert_post_id.as_ref(), inc.alerted_ms) {
                (None, _) => {
                    actions.push(Action::PostAlert { key: key.clone() });
                    if inc.brief.is_some() {
                        actions.push(Action::PostBrief { key });
                    }
                }
                (Some(_), Some(alerted)) => match &inc.acked {
                    _ if inc.brief.is_some() && !inc.brief_posted => {
                        actions.push(Action::PostBrief { key })
                    }
                    None => {
                        if cfg.follow_up
                            && inc.followed_up_ms.is_none()
                            && now_ms - alerted >= cfg.ack_timeout_ms
                        {
                            actions.push(Action::FollowUp { key });
                        } else if now_ms - inc.reminded_ms.unwrap_or(alerted) >= cfg.reminder_ms {
                            actions.push(Action::Remind { key });
                        }
                    }
                    // Acknowledged: quiet until it recovers or the reminder
                    // interval passes since the acknowledgement (or the last
                    // reminder), so a forgotten incident still resurfaces.
                    Some(ack) => {
                        let since = inc.reminded_ms.unwrap_or(0).max(ack.at_ms);
                        if now_ms - since >= cfg.reminder_ms {
                            actions.push(Action::Remind { key });
                        }
                    }
                },
                _ => {}
            }
            continue;
        };
        if inc.recovered_ms.is_none() {
            actions.push(Action::MarkRecovered {
                key: key.clone(),
                in_silence: quiet,
            });
        }
        let in_silence = match inc.recovered_ms {
            None => quiet,
            Some(_) => inc.recovered_in_silence,
        };
        if now_ms - recovered_ms > GIVE_UP_MS {
            actions.push(Action::Close { key, gave_up: true });
            continue;
        }
        // The recovery closes the alert's thread even during a silence: the
        // silence holds back new noise, and the thread's last word must not
        // stay "failing".
        if !inc.recovery_posted && cfg.alerting {
            match inc.alert_post_id {
                Some(_) => actions.push(Action::PostRecovery { key: key.clone() }),
                // Never alerted (Mattermost down from start to end): the
                // team still hears of it, once, late; not when a silence
                // kept it quiet.
                None if !in_silence => actions.push(Action::AnnounceLate { key: key.clone() }),
                None => {}
            }
        }
        if inc.card_id.is_some() {
            if !inc.card_commented {
                actions.push(Action::CommentCard { key: key.clone() });
            }
            if cfg.move_card && !inc.card_moved {
                actions.push(Action::MoveCardDone { key: key.clone() });
            }
        }
        if cfg.resolve && inc.task_id.is_some() && !inc.mc_resolved {
            actions.push(Action::ResolveMc { key: key.clone() });
        }
        actions.push(Action::Close {
            key,
            gave_up: false,
        });
    }
    let open: BTreeSet<&str> = state
        .incidents
        .iter()
        .filter(|i| i.is_open())
        .map(|i| i.service.as_str())
        .collect();
    for s in services {
        if open.contains(s.service.as_str()) || silenced.contains(&s.service) {
            continue;
        }
        let Some(why) = escalation_reason(s) else {
            continue;
        };
        let incident = open_incident(s, why, now_ms);
        let key = incident.key.clone();
        // A recovered incident of the same start still closing: not new.
        if state.incidents.iter().any(|i| i.key == key) {
            continue;
        }
        actions.push(Action::Open {
            incident: Box::new(incident),
        });
        actions.push(Action::CreateTask { key: key.clone() });
        if cfg.alerting {
            // The brief is gathered when the incident opens.
            actions.push(Action::PostAlert { key: key.clone() });
            actions.push(Action::PostBrief { key });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::super::{Ack, AckHow};
    use super::*;
    use crate::fix::{Attempt, Budget, FixReport};
    use crate::health::Status;

    const T0: i64 = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    fn cfg() -> PlanConfig {
        PlanConfig {
            ack_timeout_ms: 30 * MIN,
            reminder_ms: 240 * MIN,
            alerting: true,
            follow_up: true,
            move_card: false,
            resolve: false,
        }
    }

    fn failing(service: &str) -> ServiceSummary {
        ServiceSummary {
            service: service.into(),
            status: Status::Critical,
            failing: true,
            change: None,
            failing_since_ms: Some(T0),
            consecutive_failures: 3,
            blocked_by: None,
            problems: vec![format!("{service}: container exited (137)")],
            has_fix: false,
            fix: None,
            tried: vec![],
            budget: None,
        }
    }

    fn healthy(service: &str) -> ServiceSummary {
        ServiceSummary {
            status: Status::Ok,
            failing: false,
            failing_since_ms: None,
            consecutive_failures: 0,
            problems: vec![],
            ..failing(service)
        }
    }

    fn with_fix(
        mut s: ServiceSummary,
        decision: FixDecision,
        outcome: Option<Outcome>,
    ) -> ServiceSummary {
        s.has_fix = true;
        s.budget = Some(Budget {
            used: 1,
            left: 2,
            next_allowed_at_ms: None,
        });
        s.fix = Some(FixReport {
            service: s.service.clone(),
            issue: format!("{}: container exited (137)", s.service),
            decision,
            action: Some("restart container web".into()),
            outcome,
            detail: Some("still exited".into()),
            budget: s.budget.clone().unwrap(),
        });
        s
    }

    /// Applies the planner's actions as an always-successful executor
    /// would, except the named ones, which "fail".
    fn apply(st: &mut EscalationState, actions: &[Action], now: i64, fail: &[&str]) {
        for a in actions {
            if fail.contains(&a.name()) {
                continue;
            }
            match a {
                Action::Open { incident } => st.incidents.push((**incident).clone()),
                Action::Close { key, .. } => st.close(key, now),
                other => {
                    let inc = st.get_mut(other.key()).unwrap();
                    match other {
                        Action::CreateTask { .. } => {
                            inc.task_id = Some("OPS-1".into());
                            inc.card_id = Some("c1".into());
                        }
                        Action::PostAlert { .. } => {
                            inc.alert_post_id = Some("p1".into());
                            inc.alerted_ms = Some(now);
                        }
                        Action::PostBrief { .. } => inc.brief_posted = true,
                        Action::FollowUp { .. } => inc.followed_up_ms = Some(now),
                        Action::Remind { .. } => {
                            inc.reminded_ms = Some(now);
                            inc.reminders += 1;
                        }
                        Action::MarkRecovered { in_silence, .. } => {
                            inc.recovered_ms = Some(now);
                            inc.recovered_in_silence = *in_silence;
                        }
                        Action::PostRecovery { .. } | Action::AnnounceLate { .. } => {
                            inc.recovery_posted = true
                        }
                        Action::CommentCard { .. } => inc.card_commented = true,
                        Action::MoveCardDone { .. } => inc.card_moved = true,
                        Action::ResolveMc { .. } => inc.mc_resolved = true,
                        _ => unreachable!(),
                    }
                }
            }
        }
    }

    /// Runs `cycles` of (minute offset, summaries), round-tripping the
    /// state through JSON between cycles, and returns every action name.
    fn run(
        st: &mut EscalationState,
        cycles: &[(i64, Vec<ServiceSummary>)],
        silenced: &BTreeSet<String>,
        c: &PlanConfig,
        fail: &[&str],
    ) -> Vec<&'static str> {
        let mut names = Vec::new();
        for (min, services) in cycles {
            let now = T0 + min * MIN;
            let actions = plan(services, st, silenced, now, c);
            names.extend(actions.iter().map(Action::name));
            apply(st, &actions, now, fail);
            *st = serde_json::from_str(&serde_json::to_string(st).unwrap()).unwrap();
        }
        names
    }

    fn count(names: &[&str], n: &str) -> usize {
        names.iter().filter(|x| **x == n).count()
    }

    #[test]
    fn a_gathered_brief_is_owed_in_the_thread_until_it_is_there() {
        let c = cfg();
        let none = BTreeSet::new();
        let mut st = EscalationState::default();
        // The cycle that opens the incident owes the brief after the alert.
        let names = run(&mut st, &[(0, vec![failing("web")])], &none, &c, &[]);
        assert_eq!(names, ["open", "create_task", "post_alert", "post_brief"]);
        // A brief whose post failed (or a brief gathered later) is owed
        // before the follow-up, once.
        let inc = &mut st.incidents[0];
        inc.brief = Some(super::super::brief::Brief::default());
        inc.brief_posted = false;
        let cycles: Vec<_> = (1..12).map(|i| (i * 5, vec![failing("web")])).collect();
        let names = run(&mut st, &cycles, &none, &c, &[]);
        assert_eq!(count(&names, "post_brief"), 1, "{names:?}");
        assert_eq!(names[0], "post_brief", "{names:?}");
        assert_eq!(count(&names, "follow_up"), 1, "{names:?}");
        // Not while silenced, and never without an alert channel.
        st.incidents[0].brief_posted = false;
        let web: BTreeSet<String> = ["web".to_string()].into();
        assert!(run(&mut st, &[(60, vec![failing("web")])], &web, &c, &[]).is_empty());
        let quiet = PlanConfig {
            alerting: false,
            ..c
        };
        let names = run(&mut st, &[(65, vec![failing("web")])], &none, &quiet, &[]);
        assert_eq!(count(&names, "post_brief"), 0, "{names:?}");
    }

    #[test]
    fn escalation_reason_table() {
        let cases: Vec<(ServiceSummary, Option<&str>)> = vec![
            (healthy("web"), None),
            (failing("web"), Some("no fix")),
            (
                ServiceSummary {
                    blocked_by: Some("docker".into()),
                    ..failing("web")
                },
                None,
            ),
            (
                with_fix(failing("web"), FixDecision::Run, Some(Outcome::Failed)),
                Some("did not verify (still exited)"),
            ),
            (
                with_fix(failing("web"), FixDecision::Run, Some(Outcome::Verified)),
                None,
            ),
            (
                with_fix(failing("web"), FixDecision::Run, Some(Outcome::Pending)),
                None,
            ),
            (
                with_fix(
                    failing("web"),
                    FixDecision::SkipBudgetSpent {
                        next_allowed_at_ms: T0,
                    },
                    None,
                ),
                Some("budget is spent"),
            ),
            (
                with_fix(
                    failing("web"),
                    FixDecision::SkipGrace { until_ms: T0 },
                    None,
                ),
                None,
            ),
            (
                with_fix(failing("web"), FixDecision::SkipStarting, None),
                None,
            ),
        ];
        for (s, want) in cases {
            let got = escalation_reason(&s);
            match want {
                None => assert_eq!(got, None, "{:?}", s.fix),
                Some(frag) => assert!(got.as_deref().unwrap_or("").contains(frag), "{got:?}"),
            }
        }
        // No fix report this cycle: the budget and the last attempt decide.
        let mut s = with_fix(failing("web"), FixDecision::Run, None);
        s.fix = None;
        assert_eq!(escalation_reason(&s), None);
        s.budget.as_mut().unwrap().left = 0;
        assert!(escalation_reason(&s).unwrap().contains("budget"));
        s.budget.as_mut().unwrap().left = 1;
        s.tried.push(Attempt {
            at_ms: T0,
            action: "restart_container".into(),
            issue: "x".into(),
            outcome: Outcome::Failed,
            detail: None,
        });
        assert!(escalation_reason(&s).unwrap().contains("did not verify"));
    }

    #[test]
    fn many_failing_cycles_open_one_incident_with_one_task_and_one_alert() {
        let mut st = EscalationState::default();
        let cycles: Vec<_> = (0..20).map(|i| (i * 5, vec![failing("web")])).collect();
        let names = run(&mut st, &cycles, &BTreeSet::new(), &cfg(), &[]);
        assert_eq!(count(&names, "open"), 1);
        assert_eq!(count(&names, "create_task"), 1);
        assert_eq!(count(&names, "post_alert"), 1);
        // 95 minutes unacknowledged: one follow-up, no reminder yet.
        assert_eq!(count(&names, "follow_up"), 1);
        assert_eq!(count(&names, "remind"), 0);
        let inc = &st.incidents[0];
        assert_eq!(inc.key, incident_key("web", "web", T0));
        assert!(
            inc.details.contains("no fix is configured"),
            "{}",
            inc.details
        );
        assert!(inc.details.contains("container exited (137)"));
    }

    #[test]
    fn a_failed_post_or_task_is_owed_again_next_cycle_once_done_never() {
        let mut st = EscalationState::default();
        let c = cfg();
        let none = BTreeSet::new();
        let names = run(
            &mut st,
            &[(0, vec![failing("web")]), (5, vec![failing("web")])],
            &none,
            &c,
            &["post_alert", "create_task"],
        );
        assert_eq!(count(&names, "post_alert"), 2);
        assert_eq!(count(&names, "create_task"), 2);
        assert_eq!(count(&names, "open"), 1);
        let names = run(
            &mut st,
            &[(10, vec![failing("web")]), (15, vec![failing("web")])],
            &none,
            &c,
            &[],
        );
        assert_eq!(
            (count(&names, "post_alert"), count(&names, "create_task")),
            (1, 1)
        );
        // The follow-up clock starts at the successful post.
        assert_eq!(st.incidents[0].alerted_ms, Some(T0 + 10 * MIN));
        let names = run(&mut st, &[(35, vec![failing("web")])], &none, &c, &[]);
        assert_eq!(names, Vec::<&str>::new());
        let names = run(&mut st, &[(40, vec![failing("web")])], &none, &c, &[]);
        assert_eq!(names, ["follow_up"]);
    }

    #[test]
    fn an_acknowledged_alert_gets_no_follow_up_and_a_reminder_only_after_the_interval() {
        let mut st = EscalationState::default();
        let c = cfg();
        let none = BTreeSet::new();
        run(&mut st, &[(0, vec![failing("web")])], &none, &c, &[]);
        st.incidents[0].acked = Some(Ack {
            by: "u1".into(),
            at_ms: T0 + MIN,
            how: AckHow::Reaction,
        });
        // Up to 235 minutes after the ack: nothing at all.
        let cycles: Vec<_> = (1..48).map(|i| (i * 5, vec![failing("web")])).collect();
        let names = run(&mut st, &cycles, &none, &c, &[]);
        assert!(names.is_empty(), "{names:?}");
        // 4 h after the ack, still failing: one reminder, then quiet again.
        let cycles: Vec<_> = (48..90).map(|i| (i * 5, vec![failing("web")])).collect();
        let names = run(&mut st, &cycles, &none, &c, &[]);
        assert_eq!(names, ["remind"], "{names:?}");
    }

    #[test]
    fn unacknowledged_alerts_are_reminded_every_interval() {
        let mut st = EscalationState::default();
        let c = cfg();
        let cycles: Vec<_> = (0..=200).map(|i| (i * 5, vec![failing("web")])).collect();
        let names = run(&mut st, &cycles, &BTreeSet::new(), &c, &[]);
        // 1000 minutes: follow-up at 30, reminders at 240, 480, 720, 960.
        assert_eq!(count(&names, "follow_up"), 1);
        assert_eq!(count(&names, "remind"), 4);
        // No on-call configured: no follow-up, reminders still.
        let mut st = EscalationState::default();
        let quiet = PlanConfig {
            follow_up: false,
            ..c
        };
        let names = run(&mut st, &cycles, &BTreeSet::new(), &quiet, &[]);
        assert_eq!(
            (count(&names, "follow_up"), count(&names, "remind")),
            (0, 4)
        );
    }

    #[test]
    fn an_incident_that_never_reached_chat_is_announced_late_once() {
        let none = BTreeSet::new();
        let c = cfg();
        let mut st = EscalationState::default();
        // Mattermost down while it fails, and still down when it recovers
        // (the executor keeps an incident whose step failed from closing).
        let down = &["post_alert", "announce_late", "close"];
        let names = run(
            &mut st,
            &[(0, vec![failing("web")]), (5, vec![healthy("web")])],
            &none,
            &c,
            down,
        );
        assert_eq!(count(&names, "announce_late"), 1, "{names:?}");
        assert_eq!(count(&names, "post_recovery"), 0, "no thread to post in");
        assert_eq!(st.incidents.len(), 1, "kept until it is announced");
        // Back: announced once, closed; nothing more.
        let names = run(
            &mut st,
            &[(10, vec![healthy("web")]), (15, vec![healthy("web")])],
            &none,
            &c,
            &[],
        );
        assert_eq!(count(&names, "announce_late"), 1, "{names:?}");
        assert_eq!(count(&names, "post_alert"), 0, "{names:?}");
        assert_eq!(count(&names, "close"), 1);
        assert!(st.incidents.is_empty());
        assert!(st.closed[0].recovery_posted);
        // Silenced or without an alert channel: never announced.
        for (silenced, c) in [
            (BTreeSet::from(["web".to_string()]), cfg()),
            (
                none.clone(),
                PlanConfig {
                    alerting: false,
                    ..cfg()
                },
            ),
        ] {
            let mut st = EscalationState::default();
            let names = run(
                &mut st,
                &[(0, vec![failing("web")]), (5, vec![healthy("web")])],
                &silenced,
                &c,
                &["post_alert"],
            );
            assert_eq!(count(&names, "announce_late"), 0, "{names:?}");
        }
    }

    #[test]
    fn recovery_posts_comments_moves_resolves_and_closes_once() {
        let none = BTreeSet::new();
        for (move_card, resolve) in [(false, false), (true, true)] {
            let c = PlanConfig {
                move_card,
                resolve,
                ..cfg()
            };
            let mut st = EscalationState::default();
            let names = run(
                &mut st,
                &[
                    (0, vec![failing("web")]),
                    (5, vec![healthy("web")]),
                    (10, vec![healthy("web")]),
                    (15, vec![healthy("web")]),
                ],
                &none,
                &c,
                &[],
            );
            assert_eq!(count(&names, "mark_recovered"), 1);
            assert_eq!(count(&names, "post_recovery"), 1);
            assert_eq!(count(&names, "comment_card"), 1);
            assert_eq!(count(&names, "move_card_done"), usize::from(move_card));
            assert_eq!(count(&names, "resolve_mc"), usize::from(resolve));
            assert_eq!(count(&names, "close"), 1);
            assert!(st.incidents.is_empty());
            assert_eq!(st.closed.len(), 1);
            assert_eq!(st.closed[0].recovered_ms, Some(T0 + 5 * MIN));
        }
    }

    #[test]
    fn a_failed_closing_step_is_retried_and_given_up_after_a_day() {
        let none = BTreeSet::new();
        let c = cfg();
        let mut st = EscalationState::default();
        run(&mut st, &[(0, vec![failing("web")])], &none, &c, &[]);
        let names = run(
            &mut st,
            &[(5, vec![healthy("web")]), (10, vec![healthy("web")])],
            &none,
            &c,
            &["comment_card", "close"],
        );
        assert_eq!(count(&names, "comment_card"), 2);
        assert_eq!(count(&names, "post_recovery"), 1);
        let names = run(
            &mut st,
            &[(5 + 24 * 60 + 1, vec![healthy("web")])],
            &none,
            &c,
            &[],
        );
        assert_eq!(names, ["close"]);
        assert!(st.incidents.is_empty());
    }

    #[test]
    fn blocked_or_unchecked_services_neither_open_nor_recover() {
        let none = BTreeSet::new();
        let c = cfg();
        let mut st = EscalationState::default();
        run(&mut st, &[(0, vec![failing("web")])], &none, &c, &[]);
        let blocked = ServiceSummary {
            failing: false,
            blocked_by: Some("docker".into()),
            ..failing("web")
        };
        let names = run(&mut st, &[(5, vec![blocked]), (10, vec![])], &none, &c, &[]);
        assert!(names.is_empty(), "{names:?}");
        assert!(st.incidents[0].is_open());
    }

    #[test]
    fn silence_suppresses_alerts_records_recovery_and_alerts_when_it_ends() {
        let c = cfg();
        let web: BTreeSet<String> = ["web".to_string()].into();
        let none = BTreeSet::new();
        // Failing during the silence: nothing at all.
        let mut st = EscalationState::default();
        let cycles: Vec<_> = (0..12).map(|i| (i * 5, vec![failing("web")])).collect();
        let names = run(&mut st, &cycles, &web, &c, &[]);
        assert!(names.is_empty(), "{names:?}");
        // The silence ends, still failing: the alert goes out then.
        let names = run(&mut st, &[(60, vec![failing("web")])], &none, &c, &[]);
        assert_eq!(names, ["open", "create_task", "post_alert", "post_brief"]);
        // An alerted incident silenced later: no follow-up, no reminder,
        // and its recovery is recorded without a post.
        let cycles: Vec<_> = (13..100).map(|i| (i * 5, vec![failing("web")])).collect();
        let names = run(&mut st, &cycles, &web, &c, &[]);
        assert!(names.is_empty(), "{names:?}");
        let names = run(&mut st, &[(500, vec![healthy("web")])], &web, &c, &[]);
        assert_eq!(
            names,
            ["mark_recovered", "post_recovery", "comment_card", "close"]
        );
        assert!(st.closed[0].recovered_in_silence);
    }

    #[test]
    fn a_new_failure_after_recovery_is_a_new_incident() {
        let none = BTreeSet::new();
        let c = cfg();
        let mut st = EscalationState::default();
        let mut again = failing("web");
        again.failing_since_ms = Some(T0 + 60 * MIN);
        let names = run(
            &mut st,
            &[
                (0, vec![failing("web")]),
                (30, vec![healthy("web")]),
                (60, vec![again.clone()]),
                (65, vec![again]),
            ],
            &none,
            &c,
            &[],
        );
        assert_eq!(count(&names, "open"), 2);
        assert_eq!(count(&names, "post_alert"), 2);
        assert_eq!(st.closed.len(), 1);
        assert_ne!(st.closed[0].key, st.incidents[0].key);
    }

    #[test]
    fn without_an_alert_channel_only_tasks_and_cards() {
        let c = PlanConfig {
            alerting: false,
            ..cfg()
        };
        let mut st = EscalationState::default();
        let names = run(
            &mut st,
            &[
                (0, vec![failing("web")]),
                (60, vec![failing("web")]),
                (65, vec![healthy("web")]),
            ],
            &BTreeSet::new(),
            &c,
            &[],
        );
        assert_eq!(
            names,
            [
                "open",
                "create_task",
                "mark_recovered",
                "comment_card",
                "close"
            ]
        );
    }
}
