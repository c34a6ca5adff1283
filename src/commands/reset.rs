//! `ops-agent reset`: the runbook's "complete reset": delete the runtime
//! state, the token caches and the fix history, so the next cycle behaves
//! like a first run. Stats and the ledger stay.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::lock;

/// Asks (unless `yes`), then deletes under the cycle lock.
pub(crate) fn run(config: &Config, yes: bool) -> Result<ExitCode> {
    let files = config.paths.reset_files();
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("reset needs confirmation: run it in a terminal or pass --yes");
        }
        eprintln!("This deletes the runtime state, the token cache and the fix history:");
        for f in &files {
            eprintln!("  {}", f.display());
        }
        eprint!("The next cycle will behave like a first run. Continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Nothing deleted.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    // Hold the lock so a running cycle cannot write the state back half-reset.
    let _lock = lock::acquire(&config.paths.lock)?;
    for f in &files {
        let removed = crate::files::remove_if_present(f)?;
        tracing::info!(file = %f.display(), removed, "Reset.");
        println!(
            "{} {}",
            if removed { "deleted" } else { "absent " },
            f.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
