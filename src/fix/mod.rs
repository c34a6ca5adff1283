//! Auto-fix: the configured actions, the rolling-window rate limiter and
//! the verification after an action.
//!
//! Actions come only from the config (a check's `fix` table): restart a
//! container, kickstart a launchd job, restart a systemd user unit, or run a
//! configured argv without a shell. Nothing from chat or an LLM ever picks
//! or shapes an action.
//!
//! Every attempt is written to the fix-history file *before* the action
//! runs, so a cycle killed mid-fix still counts it: the limit counts
//! attempts, not outcomes. [`decide`](policy::decide) is pure; [`run_fixes`] (the cycle) and
//! [`run_manual`] (`ops-agent fix`) do the I/O around it.
//!
//! * [`policy`]: the `[fix]` rate limit, the budget and the decision (pure).
//! * [`history`]: the fix-history file.
//! * [`run`]: the action, its verification, the cycle's stage, `ops-agent fix`.
//! * [`services`]: per-service facts for escalation (health and fix joined).
//! * [`view`]: `fix --history` and `explain`.
//!
//! The action itself is data in the check inventory
//! ([`crate::health::FixSpec`]); a new action starts there.

mod history;
mod policy;
pub(crate) mod run;
mod services;
mod view;

pub use crate::health::{FixAction, FixSpec};
pub use history::{Attempt, FixHistory, Outcome};
pub use policy::{Budget, FixConfig, FixDecision, FixOptions};
pub(crate) use run::no_fix_for;
pub(crate) use run::run_silenced_aware;
pub use run::{run_fixes, run_manual, FixContext, FixReport};
pub use services::{summarize, ServiceSummary};
pub(crate) use view::explain;
pub use view::{history_view, render_history, ServiceHistory};
