//! Watching the watcher: what lets someone outside the agent see that it
//! runs and what it decided, without reading its state files.
//!
//! * [`audit`]: one JSON line per decision or action (post skipped or
//!   labelled, task, card, reply, fix, escalation step, silence, file set
//!   aside), written as each happens, so "why did it do that?" has an
//!   answer after the fact; [`query`] reads it back for `ops-agent audit`.
//! * [`metrics`]: the Prometheus text format, written atomically at the
//!   end of every cycle for node_exporter's textfile collector, and
//!   printed by `ops-agent stats --prometheus`.
//! * [`heartbeat`]: a dead-man's switch pinged at the end of every cycle
//!   (healthchecks.io style), so a cycle that never runs is noticed by
//!   someone who is not the agent.
//! * [`rotate`]: size-based rotation of the activity log, the audit trail
//!   and the scheduler's own output files at the start of a cycle, so no
//!   log fills the disk.
//!
//! This room sits low: every stage may record audit events, so it imports
//! no stage, and no state type. What it shows arrives as plain data (the
//! [`audit::Event`]s, a [`metrics::Snapshot`]); the rooms above build it.

pub(crate) mod audit;
pub(crate) mod heartbeat;
pub(crate) mod metrics;
pub(crate) mod query;
pub(crate) mod rotate;

pub(crate) use heartbeat::HeartbeatConfig;
pub(crate) use metrics::MetricsConfig;
pub(crate) use rotate::LogConfig;
