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

/// The binary's name, as the shells see it.
const BIN: &str = "ops-agent";

/// The completion script for `shell` (e.g. `ops-agent completions bash >
/// ~/.local/share/bash-completion/completions/ops-agent`).
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut buf);
    if shell == clap_complete::Shell::Bash {
        let script = String::from_utf8(buf).context("the bash completion script")?;
        buf = bash_states_named_once(&script, BIN).into_bytes();
    }
    write_out(&buf, "the completion script")
}

/// clap_complete's bash script walks the typed words into a state name
/// (`ops__agent__subcmd__install`: the binary's `-` as `__`) and then
/// offers the flags of the arm with that name; but it names the arms
/// `ops__subcmd__agent__subcmd__install` (the binary's `-` as a
/// subcommand separator), so for a hyphenated binary no subcommand's arm
/// ever matched and `ops-agent install --<TAB>` offered nothing. The arms
/// are renamed to the states the walk produces. Pure.
fn bash_states_named_once(script: &str, bin: &str) -> String {
    let walked = bin.replace('-', "__");
    let armed = bin.replace('-', "__subcmd__");
    if walked == armed {
        return script.to_string();
    }
    script
        .lines()
        .map(|line| {
            let arm = line.trim_start();
            if arm.starts_with(&armed) && arm.ends_with(')') {
                line.replacen(&armed, &walked, 1)
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The words `cmd="…"` assignments (what the walk over the typed words
    /// can reach) and the `…)` arms of the `case "${cmd}"` that offers
    /// flags.
    fn states_and_arms(script: &str) -> (Vec<String>, Vec<String>) {
        let states = script
            .lines()
            .filter_map(|l| l.trim().strip_prefix("cmd=\""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let arms = script
            .split_once("case \"${cmd}\" in")
            .map(|(_, rest)| rest)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("        ") && !l.starts_with("         "))
            .filter_map(|l| l.trim().strip_suffix(')'))
            .map(str::to_string)
            .collect();
        (states, arms)
    }

    #[test]
    fn every_state_the_bash_walk_reaches_has_an_arm() {
        let mut buf = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            BIN,
            &mut buf,
        );
        let raw = String::from_utf8(buf).unwrap();
        let fixed = bash_states_named_once(&raw, BIN);
        let (states, arms) = states_and_arms(&fixed);
        assert!(states.len() > 30, "{states:?}");
        for s in &states {
            assert!(arms.contains(s), "no arm for {s}");
        }
        // The fix is all it changes: renamed arms, nothing else.
        assert_eq!(raw.lines().count(), fixed.lines().count());
        let (_, raw_arms) = states_and_arms(&raw);
        assert!(
            !raw_arms.contains(&"ops__agent__subcmd__install".to_string()),
            "clap_complete fixed its names: drop bash_states_named_once"
        );
        assert_eq!(bash_states_named_once("x\n", "ops"), "x\n");
    }
}
