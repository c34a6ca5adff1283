//! `ops-agent completions SHELL` and `ops-agent man`: generated from the
//! clap definition at run time, so they never drift from the real flags
//! and no generated file has to be kept in the repository.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

fn write_out(bytes: &[u8], what: &str) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .with_context(|| format!("writing {what}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script for `shell` (e.g. `ops-agent completions bash >
/// ~/.local/share/bash-completion/completions/ops-agent`).
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ops-agent", &mut buf);
    write_out(&buf, "the completion script")
}

/// The manual page in roff: the top page, then one section per
/// subcommand, so `man` shows every flag of every command.
pub(crate) fn man() -> Result<ExitCode> {
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .context("rendering the manual page")?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        // clap names are `&'static str` without its `string` feature; the
        // process prints this page and exits.
        let name: &'static str =
            Box::leak(format!("ops-agent-{}", sub.get_name()).into_boxed_str());
        let sub = sub.clone().name(name).bin_name(name);
        let nested = sub.has_subcommands();
        let mut page = Vec::new();
        let man = clap_mangen::Man::new(sub);
        man.render_name_section(&mut page)
            .and_then(|_| man.render_synopsis_section(&mut page))
            .and_then(|_| man.render_options_section(&mut page))
            .and_then(|_| {
                if nested {
                    man.render_subcommands_section(&mut page)
                } else {
                    Ok(())
                }
            })
            .with_context(|| format!("rendering the manual section of {name}"))?;
        buf.extend_from_slice(&page);
    }
    write_out(&buf, "the manual page")
}
