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

/// Text for roff: backslashes and hyphens escaped, no line starting
/// with a control character. Pure.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

/// A man section of tagged paragraphs: `.SH`, then per entry the tag in
/// bold and its text.
fn tagged_section(title: &str, entries: &[(String, String)]) -> String {
    let mut s = format!(".SH \"{title}\"\n");
    for (tag, text) in entries {
        s += &format!(".TP\n\\fB{}\\fR\n{}\n", roff(tag), roff(text));
    }
    s
}

/// What each exit code means, for every command (EXIT STATUS).
fn exit_status() -> Vec<(String, String)> {
    use super::{EXIT_CONFIG, EXIT_FATAL, EXIT_LOCKED, EXIT_USAGE};
    [
        (0, "The command did its job. For run-once: the cycle ran, also when a stage was degraded (the summary line and `ops-agent status` say which)."),
        (EXIT_FATAL, "Fatal: the command could not run, or the cycle could not save its state; the message says why. Also: health, a check is critical; fix, the fix did not verify; status --check, the agent is overdue or its last cycle failed; doctor and mm status, something failed."),
        (EXIT_USAGE, "A usage error: an unknown flag or value, a check, service or silence that does not exist, a bad duration, an install that would replace a different job file without --force."),
        (crate::health::view::EXIT_UNKNOWN, "health only: nothing is critical, but a check could not tell (unknown: an engine that hangs, say), so a `health || page` script does not take it for success."),
        (EXIT_LOCKED, "Another cycle holds the lock (EX_TEMPFAIL); it ends within agent.deadline_secs, and the scheduler's next start runs as usual."),
        (EXIT_CONFIG, "The configuration is wrong (EX_CONFIG); the message names the file, the key and the line. Nothing ran. `ops-agent config check` says the same."),
    ]
    .into_iter()
    .map(|(code, text)| (code.to_string(), text.to_string()))
    .collect()
}

/// The variables the agent reads (ENVIRONMENT).
fn environment() -> Vec<(String, String)> {
    [
        ("OPS_AGENT_CONFIG", "The config file when --config is not given (else the platform config directory's config.toml, else the built-in defaults)."),
        ("OPS_AGENT_MM_TOKEN", "The Mattermost token, by default (mattermost.token_env names it). Every *_env key names a variable the same way (mattermost.password_env, planka.password_env, planka.api_key_env, ollama.api_key_env). A scheduled job (launchd, systemd) starts with none of the shell's variables: use the *_file keys there."),
        ("DOCKER_HOST", "The Docker engine when health.docker_host is not set; install writes it into the job."),
        ("HOME", "What ~ in a path of the config stands for."),
        ("XDG_CONFIG_HOME, XDG_DATA_HOME", "Where install writes the systemd user units (XDG_CONFIG_HOME/systemd/user, else ~/.config/systemd/user) and where uninstall finds the timer's stamp (XDG_DATA_HOME/systemd/timers, else ~/.local/share/systemd/timers)."),
        ("PATH", "Where commands the config names by bare name are found; install writes the PATH the job needs into the job."),
        ("NO_COLOR", "When set and not empty, no colour on stderr (colour is used only on a terminal anyway)."),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What each `[paths]` key holds (FILES); a key missing here fails the
/// test below, so the page never omits a file.
const PATH_FILES: &[(&str, &str)] = &[
    ("state", "The runtime state: the chat cursor last_check_ms (epoch ms) and what the next cycle resumes; deleting it is the complete reset (the next cycle is a first run). Next to it, <state>.journal while a cycle runs, and <state>.watch, the posts whose label can still be corrected (`ops-agent reset` removes both)."),
    ("token_cache", "The cached Mattermost session token of a password login (mode 0600)."),
    ("fix_history", "The auto-fix attempts; deleting it resets the per-service budgets."),
    ("stats", "The cumulative stats (`ops-agent stats`); an older daemon's counters are carried over."),
    ("log", "The activity log (`tail -50`); rotated by [log]."),
    ("ledger", "The built-in task ledger, when no [mc] command is configured (`ops-agent tasks`)."),
    ("lock", "The lock that keeps two cycles from overlapping."),
    ("planka_token_cache", "The cached Planka access token (mode 0600)."),
    ("audit", "The audit trail: one JSON line per decision or action (`ops-agent audit`)."),
    ("corrections", "The labels the team corrected by reaction (`ops-agent eval` reads them)."),
];

/// The files the agent reads and writes, at their defaults (FILES).
fn files() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = crate::config::default_paths()
        .iter()
        .map(|(key, path)| {
            let what = PATH_FILES
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, w)| w);
            (
                path.display().to_string(),
                format!("{what} ([paths] {key})"),
            )
        })
        .collect();
    out.extend(
        [
            ("~/.config/ops-agent/config.toml", "The config file on Linux, when neither --config nor OPS_AGENT_CONFIG names one (`ops-agent config example` writes a commented one)."),
            ("~/Library/Application Support/ops-agent/config.toml", "The config file on macOS, likewise."),
            ("~/.config/systemd/user/ops-agent.service, ops-agent.timer", "The systemd user job `install --systemd` writes ([schedule] systemd_unit)."),
            ("~/Library/LaunchAgents/com.john.ops-agent.plist", "The LaunchAgent `install --launchd` writes ([schedule] launchd_label)."),
            ("~/system/logs/ops-agent-launchd.log, ops-agent-launchd-error.log", "launchd's stdout and stderr of the job, next to the activity log."),
        ]
        .map(|(p, w)| (p.to_string(), w.to_string())),
    );
    out
}

/// The manual page in roff: the top page (with EXIT STATUS, ENVIRONMENT
/// and FILES after its subcommands), then one section per subcommand, so
/// `man` shows every flag of every command.
pub(crate) fn man() -> Result<ExitCode> {
    let cmd = Cli::command();
    let mut buf = Vec::new();
    let top = clap_mangen::Man::new(cmd.clone());
    top.render_title(&mut buf)
        .and_then(|_| top.render_name_section(&mut buf))
        .and_then(|_| top.render_synopsis_section(&mut buf))
        .and_then(|_| top.render_description_section(&mut buf))
        .and_then(|_| top.render_options_section(&mut buf))
        .and_then(|_| top.render_subcommands_section(&mut buf))
        .context("rendering the manual page")?;
    buf.extend_from_slice(tagged_section("EXIT STATUS", &exit_status()).as_bytes());
    buf.extend_from_slice(tagged_section("ENVIRONMENT", &environment()).as_bytes());
    buf.extend_from_slice(tagged_section("FILES", &files()).as_bytes());
    top.render_version_section(&mut buf)
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
    fn the_files_section_describes_every_path_key() {
        for (key, _) in crate::config::default_paths() {
            assert!(
                PATH_FILES.iter().any(|(k, w)| *k == key && !w.is_empty()),
                "man FILES: no text for [paths] {key}"
            );
        }
        assert_eq!(roff(".x -y \\z"), "\\&.x \\-y \\ez");
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
