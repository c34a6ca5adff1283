//! Test tiers that need something the machine may lack (a real dockerd,
//! `systemd-analyze`). Every such test says the same two things the same
//! way: `skipped: <tier>: <why>` where the tool is missing (a failure
//! instead under `CI=true`, where `.ci/run` has set the tool up), and
//! `tier-ran: <tier>` once it has run to the end. Both lines go to the
//! process's own stdout and stderr, past the test harness's capture, so a
//! plain `cargo test` shows them and `.ci/run` can count the tiers that ran.

use std::io::Write;

/// The tool for `tier` is missing: a failure under `CI=true`, else a
/// `skipped:` line. The caller returns without testing anything.
pub fn missing(tier: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("tier {tier} cannot run under CI: {why}");
    }
    let _ = writeln!(std::io::stderr().lock(), "skipped: {tier}: {why}");
}

/// `tier` ran to the end (its assertions held).
pub fn ran(tier: &str) {
    let _ = writeln!(std::io::stdout().lock(), "tier-ran: {tier}");
}
