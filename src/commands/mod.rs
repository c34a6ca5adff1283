//! What each subcommand does, and the exit codes it ends with. `run-once`
//! and `config` are one call each and live here; every other command has
//! its own module: [`status`], [`stats`], [`reset`], [`classify`], [`eval`], [`mm`]
//! (`mm status`), [`tasks`] (`tasks list|stats`), [`health`] (`health`,
//! `fix`, `explain`), [`silence`], [`doctor`] and [`audit`].
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0    | the cycle ran (even degraded), or the command succeeded |
//! | 1    | fatal: the cycle could not run or its state could not be saved; `mm status`: Mattermost not usable; `doctor`: a check failed; `health`: something not silenced is critical; `fix`: the fix ran and did not verify, or the service is silenced (without `--force`) |
//! | 2    | usage error: clap's, or a name or value the command cannot use (no such check, a bad duration, an install that would overwrite a different file) |
//! | 3    | `health` only: nothing critical, but something not silenced is unknown (a probe timed out, the engine hung) |
//! | 75   | another cycle holds the lock (EX_TEMPFAIL: try again later) |
//! | 78   | bad configuration (EX_CONFIG) |

mod audit;
mod classify;
mod docs;
mod doctor;
mod eval;
mod health;
mod install;
mod mm;
mod reset;
mod silence;
mod stats;
mod status;
mod tasks;

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, ConfigAction, MmAction, TasksAction};
use crate::config::{Config, ConfigSource};
use crate::cycle::{self, RunOptions};
use crate::lock::LockHeld;
use crate::logging;

/// Exit code: fatal error.
const EXIT_FATAL: u8 = 1;
/// Exit code: a usage error (as clap's own).
const EXIT_USAGE: u8 = 2;
/// Exit code: another cycle holds the lock.
const EXIT_LOCKED: u8 = 75;
/// Exit code: bad configuration.
const EXIT_CONFIG: u8 = 78;

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let level = logging::level(cli.verbose, cli.quiet);
    let command = cli.command.unwrap_or(Command::RunOnce { dry_run: false });
    if let Command::Config {
        action: ConfigAction::Example,
    } = command
    {
        print!("{}", crate::config::EXAMPLE);
        return ExitCode::SUCCESS;
    }
    match &command {
        Command::Completions { shell } => return finish(docs::completions(*shell)),
        Command::Man => return finish(docs::man()),
        _ => {}
    }
    let (config, source) = match Config::locate_and_load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) if matches!(command, Command::Doctor { .. }) => {
            // The doctor reports a broken config as one failed check and
            // still examines everything else against the built-in defaults.
            logging::init_stderr_only(cli.log_format, level);
            let Command::Doctor { json } = command else {
                unreachable!("matched above")
            };
            return finish(doctor::run_with_broken_config(&e, json));
        }
        Err(e) => {
            eprintln!("ops-agent: configuration error: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Commands that act write to the activity log; read-only ones only to stderr.
    let writes_log = matches!(
        command,
        Command::RunOnce { .. }
            | Command::Reset { .. }
            | Command::Fix { history: false, .. }
            | Command::Silence { list: false, .. }
            | Command::Install { print: false, .. }
            | Command::Uninstall { .. }
            | Command::Restart { .. }
    );
    if writes_log {
        if let Err(e) = logging::init(cli.log_format, level, Some(&config.paths.log)) {
            logging::init_stderr_only(cli.log_format, level);
            tracing::error!("{e:#}; logging to stderr only");
        }
    } else {
        logging::init_stderr_only(cli.log_format, level);
    }
    let result = match command {
        Command::RunOnce { dry_run } => run_once(&config, &source, dry_run),
        Command::Status { json, check } => status::run(&config, json, check),
        Command::Stats { json, prometheus } => stats::run(&config, json, prometheus),
        Command::Reset { yes } => reset::run(&config, yes),
        Command::Classify {
            text,
            team,
            no_llm,
            json,
        } => classify::run(&config, &text, team.as_deref(), no_llm, json),
        Command::Config {
            action: ConfigAction::Check,
        } => config_check(&config, &source),
        Command::Config {
            action: ConfigAction::Example,
        } => unreachable!("handled above"),
        Command::Mm {
            action: MmAction::Status { json },
        } => mm::status(&config, json),
        Command::Tasks {
            action:
                TasksAction::List {
                    owner,
                    tag,
                    since,
                    json,
                },
        } => tasks::list(&config, owner, tag, since, json),
        Command::Tasks {
            action: TasksAction::Stats { json },
        } => tasks::stats(&config, json),
        Command::Tasks {
            action: TasksAction::Retry { json },
        } => tasks::retry(&config, json),
        Command::Doctor { json } => doctor::run(&config, &source, json),
        Command::Health { json, check } => health::health(&config, json, check.as_deref()),
        Command::Fix {
            history: true,
            json,
            ..
        } => health::history(&config, json),
        Command::Fix {
            service,
            issue,
            dry_run,
            force,
            json,
            ..
        } => health::fix(
            &config,
            service.as_deref().unwrap_or_default(),
            issue.as_deref().unwrap_or_default(),
            crate::fix::FixOptions { dry_run, force },
            json,
        ),
        Command::Explain { check, json } => health::explain(&config, &check, json),
        Command::Eval {
            file,
            no_llm,
            json,
            halves,
        } => eval::run(&config, file.as_deref(), no_llm, json, halves),
        Command::Silence {
            target,
            duration,
            reason,
            list,
            clear,
            json,
        } => {
            let request = match (&clear, list) {
                (Some(id), _) => silence::Request::Clear(id),
                (None, true) => silence::Request::List,
                (None, false) => silence::Request::Add(
                    target.as_deref().unwrap_or_default(),
                    duration.as_deref().unwrap_or_default(),
                    reason.as_deref().unwrap_or_default(),
                ),
            };
            silence::run(&config, request, json)
        }
        Command::Audit {
            since,
            post,
            check,
            json,
        } => audit::run(&config, since, post, check, json),
        Command::Install {
            target,
            interval,
            print,
            force,
        } => install::install(
            &config,
            &source,
            install::InstallOptions {
                scheduler: target.scheduler(),
                interval_secs: interval,
                print,
                force,
            },
        ),
        Command::Uninstall { target } => install::uninstall(&config, target.scheduler()),
        Command::Restart { target } => install::restart(&config, target.scheduler()),
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    };
    finish(result)
}

/// A mistake in what was asked (an unknown check, a bad duration, a file
/// install must not overwrite): exit 2 like clap's own usage errors, so a
/// script can tell it from exit 1 ("something is critical", "failed").
#[derive(Debug)]
struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Marks an error as a usage error (its whole chain becomes the message).
fn usage(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(UsageError(format!("{e:#}")))
}

/// Turns a command's result into the exit code, reporting the error.
fn finish(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                // `ops-agent status --json | head` closing the pipe is not an error.
                return ExitCode::SUCCESS;
            }
            if let Some(held) = e.downcast_ref::<LockHeld>() {
                tracing::warn!(target: logging::FILE_ONLY, "Not starting: {held}.");
                eprintln!("ops-agent: {held}");
                return ExitCode::from(EXIT_LOCKED);
            }
            if e.downcast_ref::<UsageError>().is_some() {
                eprintln!("ops-agent: {e:#}");
                return ExitCode::from(EXIT_USAGE);
            }
            // Once on stderr; the activity log (when this command writes
            // one) gets its own copy.
            tracing::error!(target: logging::FILE_ONLY, "{e:#}");
            eprintln!("ops-agent: {e:#}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The async runtime for commands that talk to servers.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_once(config: &Config, source: &ConfigSource, dry_run: bool) -> Result<ExitCode> {
    tracing::debug!(config = %source, "Configuration loaded.");
    for w in &config.warnings {
        tracing::warn!(config = %source, "Config: {w}");
    }
    runtime()?.block_on(cycle::run_once(config, RunOptions { dry_run }))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `value` as pretty JSON and a newline to stdout.
fn print_json<T: serde::Serialize>(value: &T, what: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).with_context(|| format!("writing {what}"))?;
    writeln!(out).with_context(|| format!("writing {what}"))?;
    Ok(())
}

/// Writes text to stdout (an error, not a panic, when the pipe is closed).
fn print_text(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).context("writing output")?;
    Ok(())
}

/// Prints the effective config; its warnings, each naming its key, go
/// to stderr (stdout stays TOML).
fn config_check(config: &Config, source: &ConfigSource) -> Result<ExitCode> {
    let warnings = config.check_warnings();
    for w in &warnings {
        eprintln!("ops-agent: config warning: {w}");
    }
    match warnings.len() {
        0 => println!("# config: {source}: valid"),
        n => println!("# config: {source}: valid, {n} warning(s) on stderr"),
    }
    print!("{}", config.to_toml()?);
    Ok(ExitCode::SUCCESS)
}
