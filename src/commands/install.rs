//! `ops-agent install | uninstall | restart`: the scheduled job, from
//! `cargo build` to a trusted agent in one command. The job is rendered
//! from this binary's absolute path, the config that was loaded, the log
//! paths and the environment the job needs ([`crate::schedule`]), checked
//! for secrets it could not read, written owner-only, and loaded with
//! `launchctl bootstrap gui/<uid>` or `systemctl --user daemon-reload` +
//! `enable --now`. `--print` writes nothing; an existing different file is
//! replaced only with `--force`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{usage, UsageError};
use crate::config::{Config, ConfigSource};
use crate::schedule::{self, control, secrets, Homes, JobFile, JobSpec, Scheduler};

/// What `install` was asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstallOptions {
    /// launchd or systemd.
    pub(crate) scheduler: Scheduler,
    /// Seconds between cycles (default `agent.schedule_interval_secs`).
    pub(crate) interval_secs: Option<u64>,
    /// Print the files, write and load nothing.
    pub(crate) print: bool,
    /// Replace existing files that differ.
    pub(crate) force: bool,
}

/// The job as `install` would write it now, and what is worth saying about
/// it (warnings) — for `install` and for `doctor`'s "is it current?".
pub(crate) struct Planned {
    /// The files.
    pub(crate) files: Vec<JobFile>,
    /// The spec they were rendered from.
    pub(crate) spec: JobSpec,
    /// Things the operator should know (not reasons to refuse).
    warnings: Vec<String>,
}

/// The binary the job should run: this one, by the path it was started as
/// when that names the same file (a package manager's `bin` symlink
/// survives upgrades; the file it points to does not), else its resolved
/// path.
fn binary_path() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this binary's path")?;
    let real = exe.canonicalize().unwrap_or_else(|_| exe.clone());
    let Some(arg0) = std::env::args_os().next().map(PathBuf::from) else {
        return Ok(real);
    };
    let candidate = if arg0.components().count() > 1 {
        std::path::absolute(&arg0).ok()
    } else {
        std::env::var("PATH")
            .ok()
            .and_then(|p| schedule::find_on_path(&arg0.to_string_lossy(), &p))
    };
    Ok(candidate
        .filter(|c| c.canonicalize().is_ok_and(|c| c == real))
        .unwrap_or(real))
}

/// The config file the job is given: the one this command loaded, as an
/// absolute path; none when running on the built-in defaults.
fn config_path(source: &ConfigSource) -> Result<Option<PathBuf>> {
    match source {
        ConfigSource::Flag(p) | ConfigSource::Env(p) | ConfigSource::PlatformDir(p) => {
            Ok(Some(std::path::absolute(p).with_context(|| {
                format!("making {} absolute", p.display())
            })?))
        }
        ConfigSource::Defaults => Ok(None),
    }
}

/// The programs the config runs by bare name, with the key naming each.
fn bare_programs(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |key: String, argv: &[String]| {
        if let Some(p) = argv
            .first()
            .filter(|p| !p.contains('/') && !p.starts_with('~'))
        {
            out.push((key, p.clone()));
        }
    };
    add("mc.command".into(), &config.mc.command);
    add(
        "escalation.resolve_command".into(),
        &config.escalation.resolve_command,
    );
    for c in config.checks.configured() {
        if let Some(cmd) = c.fix.as_ref().and_then(|f| f.command.as_ref()) {
            add(format!("checks \"{}\" fix.command", c.name), cmd);
        }
    }
    out
}

/// Plans the job for `scheduler` from the loaded config and this
/// process's binary, home and environment.
pub(crate) fn plan(
    config: &Config,
    source: &ConfigSource,
    scheduler: Scheduler,
    interval_secs: Option<u64>,
) -> Result<Planned> {
    let mut warnings = Vec::new();
    let configured = config.agent.schedule_interval_secs.as_f64().round() as u64;
    let interval = interval_secs.unwrap_or(configured);
    schedule::check_interval(interval, config.agent.deadline_secs.as_f64()).map_err(usage)?;
    if interval != configured {
        warnings.push(format!(
            "--interval {interval} differs from agent.schedule_interval_secs ({configured}): set it to {interval} so `status` judges OVERDUE by the real schedule"
        ));
    }
    let binary = binary_path()?;
    let shown = binary.display().to_string();
    if shown.contains("/target/debug/") || shown.contains("/target/release/") {
        warnings.push(format!(
            "the job will run {shown}, inside a cargo target directory that a rebuild or `cargo clean` changes; install the binary first (sudo install -m 0755 target/release/ops-agent /usr/local/bin/) and run install from there"
        ));
    }
    let config_file = config_path(source)?;
    if config_file.is_none() {
        warnings.push(
            "no config file: the job runs on the built-in defaults (Mattermost not configured); write one with `ops-agent config example`".into(),
        );
    }
    let shell_path = std::env::var("PATH").unwrap_or_default();
    let mut dirs = Vec::new();
    for (key, program) in bare_programs(config) {
        match schedule::find_on_path(&program, &shell_path) {
            Some(found) => dirs.extend(found.parent().map(Path::to_path_buf)),
            None => warnings.push(format!(
                "{key}: '{program}' is not on this shell's PATH, so the job will not find it either"
            )),
        }
    }
    let mut env = vec![("PATH".to_string(), schedule::job_path(scheduler, &dirs))];
    if config.health.docker_host.is_none() {
        if let Ok(h) = std::env::var("DOCKER_HOST") {
            if !h.trim().is_empty() {
                env.push(("DOCKER_HOST".into(), h));
            }
        }
    }
    let (stdout_log, stderr_log) = schedule::launchd_logs(&config.paths.log);
    let spec = JobSpec {
        binary,
        config: config_file,
        interval_secs: interval,
        env,
        stdout_log,
        stderr_log,
        names: config.schedule.clone(),
    };
    spec.check(scheduler)?;
    let homes = Homes::current()?;
    let files = schedule::render(scheduler, &spec, &homes);
    Ok(Planned {
        files,
        spec,
        warnings,
    })
}

/// Whether the job will find its secrets (files checked as it will read them).
fn judge_secrets(config: &Config) -> secrets::Verdict {
    let needs = secrets::needs(&config.mattermost, &config.planka, &config.ollama);
    let file_ok = |p: &Path| {
        let p = crate::paths::expand_tilde(&p.to_string_lossy());
        crate::secret::check_file(&p).map_err(|e| format!("{e:#}"))
    };
    let env_set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    secrets::judge(&needs, &file_ok, &env_set)
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing output")
}

fn warn(line: &str) {
    eprintln!("warning: {line}");
}

/// What an existing file at a job path means for `install`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Nothing there.
    Absent,
    /// The same bytes: nothing to write.
    Same,
    /// Something else: replaced only with `--force`.
    Different,
}

/// Decides per file, before anything is written. Pure.
fn decide_writes(existing: &[Existing], force: bool) -> std::result::Result<(), usize> {
    match existing.iter().position(|e| *e == Existing::Different) {
        Some(i) if !force => Err(i),
        _ => Ok(()),
    }
}

fn existing(f: &JobFile) -> Existing {
    match std::fs::read(&f.path) {
        Ok(bytes) if bytes == f.text.as_bytes() => Existing::Same,
        Ok(_) => Existing::Different,
        Err(_) if std::fs::symlink_metadata(&f.path).is_ok() => Existing::Different,
        Err(_) => Existing::Absent,
    }
}

/// `ops-agent install --launchd | --systemd`.
pub(crate) fn install(
    config: &Config,
    source: &ConfigSource,
    opts: InstallOptions,
) -> Result<ExitCode> {
    let planned = plan(config, source, opts.scheduler, opts.interval_secs)?;
    let verdict = judge_secrets(config);
    for w in planned.warnings.iter().chain(&verdict.warn) {
        warn(w);
    }
    if opts.print {
        for r in &verdict.refuse {
            warn(&format!("install would refuse: {r}"));
        }
        super::print_text(&schedule::render_print(&planned.files))?;
        return Ok(ExitCode::SUCCESS);
    }
    if !verdict.refuse.is_empty() {
        bail!(
            "not installing a job that could not read its secrets:\n  {}",
            verdict.refuse.join("\n  ")
        );
    }
    let states: Vec<Existing> = planned.files.iter().map(existing).collect();
    if let Err(i) = decide_writes(&states, opts.force) {
        return Err(anyhow::Error::new(UsageError(format!(
            "{} exists and differs from what install would write; --force replaces it \
             (`ops-agent install {} --print` shows the new file)",
            planned.files[i].path.display(),
            opts.scheduler.flag()
        ))));
    }
    say(&format!("binary   {}", planned.spec.binary.display()))?;
    match &planned.spec.config {
        Some(c) => say(&format!("config   {}", c.display()))?,
        None => say("config   (built-in defaults)")?,
    }
    for s in &verdict.ok {
        say(&format!("secret   {s}"))?;
    }
    if opts.scheduler == Scheduler::Launchd {
        crate::files::ensure_parent(&planned.spec.stdout_log)?;
    }
    let before: Vec<Option<Vec<u8>>> = planned
        .files
        .iter()
        .map(|f| std::fs::read(&f.path).ok())
        .collect();
    let mut replaced = false;
    for (f, state) in planned.files.iter().zip(&states) {
        if *state == Existing::Same {
            say(&format!("same     {}", f.path.display()))?;
            continue;
        }
        crate::files::write_private_atomic(&f.path, f.text.as_bytes())
            .with_context(|| format!("writing {}", f.path.display()))?;
        replaced |= *state == Existing::Different;
        say(&format!("wrote    {}", f.path.display()))?;
    }
    let changed = states.iter().any(|s| *s != Existing::Same);
    let mut ran = Vec::new();
    let rt = super::runtime()?;
    if opts.scheduler == Scheduler::Systemd {
        let paths: Vec<&Path> = planned.files.iter().map(|f| f.path.as_path()).collect();
        let verified = rt.block_on(control::verify_units(&paths, &mut ran));
        for r in ran.drain(..) {
            say(&format!("ran      {r}"))?;
        }
        match verified {
            control::Verified::Clean => say("verified the units (systemd-analyze: no complaint)")?,
            control::Verified::NotRun(why) => warn(&format!("units not verified: {why}")),
            control::Verified::Complaints(lines) => {
                put_back(&planned.files, &before)?;
                bail!(
                    "systemd-analyze rejects the units install wrote, so they are not \
                     enabled (the files that were there before are back):\n  {}",
                    lines.join("\n  ")
                );
            }
        }
    }
    let loaded = rt.block_on(load(&planned, opts.scheduler, changed, replaced, &mut ran));
    for r in &ran {
        say(&format!("ran      {r}"))?;
    }
    let what = loaded?;
    say(&format!("loaded   {what}"))?;
    if opts.scheduler == Scheduler::Systemd {
        let mut quiet = Vec::new();
        match rt.block_on(control::lingering(&mut quiet)) {
            Some(true) => {}
            Some(false) => warn(
                "lingering is off: systemd stops your timers when you log out; run `loginctl enable-linger $USER`",
            ),
            None => warn(
                "could not ask loginctl whether lingering is on; without it the timer runs only while you are logged in",
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts back what was at each job path before install wrote there (or
/// removes what it wrote where nothing was).
fn put_back(files: &[JobFile], before: &[Option<Vec<u8>>]) -> Result<()> {
    for (f, old) in files.iter().zip(before) {
        match old {
            Some(bytes) => crate::files::write_private_atomic(&f.path, bytes),
            None => std::fs::remove_file(&f.path).map_err(anyhow::Error::from),
        }
        .with_context(|| format!("putting {} back", f.path.display()))?;
    }
    Ok(())
}

/// Loads (or reloads) the job and checks that the scheduler has it.
async fn load(
    planned: &Planned,
    scheduler: Scheduler,
    changed: bool,
    replaced: bool,
    ran: &mut Vec<String>,
) -> Result<String> {
    let names = &planned.spec.names;
    let every = format!("one cycle every {} s", planned.spec.interval_secs);
    match scheduler {
        Scheduler::Launchd => {
            let label = &names.launchd_label;
            let loaded = control::launchd_loaded(label, ran).await?;
            if loaded && !changed {
                return Ok(format!("{label} was already loaded and current; {every}"));
            }
            if loaded {
                control::launchd_unload(label, ran).await?;
            }
            control::launchd_load(&planned.files[0].path, label, ran).await?;
            if !control::launchd_loaded(label, ran).await? {
                bail!(
                    "launchd did not load {label} (see `launchctl print {}/{label}`)",
                    control::gui_domain()
                );
            }
            Ok(format!(
                "{label} in {}; {every}, the first now",
                control::gui_domain()
            ))
        }
        Scheduler::Systemd => {
            let timer = format!("{}.timer", names.systemd_unit);
            control::systemctl(&["daemon-reload"], ran).await?;
            control::systemctl(&["enable", "--now", &timer], ran).await?;
            if replaced {
                // enable --now leaves an active timer on its old schedule.
                control::systemctl(&["restart", &timer], ran).await?;
            }
            let state = control::systemd_state(&timer, ran).await?;
            if state != "active" {
                bail!(
                    "{timer} is {state} after enable --now (see `systemctl --user status {timer}`)"
                );
            }
            Ok(format!("{timer} is active; {every}, the first within 10 s"))
        }
    }
}

/// `ops-agent uninstall --launchd | --systemd`: unloads the job and removes
/// its files (for systemd also the timer's stamp of its last run); state,
/// logs and the config stay.
pub(crate) fn uninstall(config: &Config, scheduler: Scheduler) -> Result<ExitCode> {
    let homes = Homes::current()?;
    let paths = homes.job_paths(scheduler, &config.schedule);
    let mut ran = Vec::new();
    let rt = super::runtime()?;
    let unloaded: Result<()> = rt.block_on(async {
        match scheduler {
            Scheduler::Launchd => {
                control::launchd_unload(&config.schedule.launchd_label, &mut ran).await?;
            }
            Scheduler::Systemd => {
                if paths.iter().any(|p| p.exists()) {
                    let timer = format!("{}.timer", config.schedule.systemd_unit);
                    control::systemctl(&["disable", "--now", &timer], &mut ran).await?;
                }
            }
        }
        Ok(())
    });
    for r in &ran {
        say(&format!("ran      {r}"))?;
    }
    unloaded?;
    let mut removed = 0;
    for p in &paths {
        match std::fs::remove_file(p) {
            Ok(()) => {
                removed += 1;
                say(&format!("removed  {}", p.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    if scheduler == Scheduler::Systemd {
        let stamp = homes.timer_stamp(&config.schedule);
        match std::fs::remove_file(&stamp) {
            Ok(()) => say(&format!(
                "removed  {} (the timer's last run)",
                stamp.display()
            ))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", stamp.display())),
        }
    }
    if scheduler == Scheduler::Systemd && removed > 0 {
        let mut ran = Vec::new();
        let reloaded = rt.block_on(control::systemctl(&["daemon-reload"], &mut ran));
        for r in &ran {
            say(&format!("ran      {r}"))?;
        }
        reloaded?;
    }
    if removed == 0 {
        say("nothing installed there; nothing removed")?;
    }
    say("kept     state, logs and the config (`ops-agent reset` clears the state)")?;
    Ok(ExitCode::SUCCESS)
}

/// `ops-agent restart --launchd | --systemd`: waits for a running cycle to
/// end (so it is not killed halfway), unloads the job, loads it again and
/// checks that the scheduler has it.
pub(crate) fn restart(config: &Config, scheduler: Scheduler) -> Result<ExitCode> {
    let homes = Homes::current()?;
    let paths = homes.job_paths(scheduler, &config.schedule);
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        bail!(
            "not installed ({} is missing): run `ops-agent install {}`",
            missing.display(),
            scheduler.flag()
        );
    }
    let rt = super::runtime()?;
    rt.block_on(wait_for_cycle(config))?;
    let mut ran = Vec::new();
    let result: Result<String> = rt.block_on(async {
        match scheduler {
            Scheduler::Launchd => {
                let label = &config.schedule.launchd_label;
                control::launchd_unload(label, &mut ran).await?;
                control::launchd_load(&paths[0], label, &mut ran).await?;
                if !control::launchd_loaded(label, &mut ran).await? {
                    bail!("launchd did not load {label} again");
                }
                Ok(format!("{label} unloaded and loaded again"))
            }
            Scheduler::Systemd => {
                let timer = format!("{}.timer", config.schedule.systemd_unit);
                control::systemctl(&["stop", &timer], &mut ran).await?;
                control::systemctl(&["daemon-reload"], &mut ran).await?;
                control::systemctl(&["start", &timer], &mut ran).await?;
                let state = control::systemd_state(&timer, &mut ran).await?;
                if state != "active" {
                    bail!("{timer} is {state} after start");
                }
                Ok(format!("{timer} stopped and started again"))
            }
        }
    });
    for r in &ran {
        say(&format!("ran      {r}"))?;
    }
    say(&format!("loaded   {}", result?))?;
    Ok(ExitCode::SUCCESS)
}

/// Waits, bounded by the cycle deadline, while a cycle holds the lock.
async fn wait_for_cycle(config: &Config) -> Result<()> {
    let limit = config.agent.deadline() + Duration::from_secs(10);
    let until = Instant::now() + limit;
    let mut said = false;
    while let Some(holder) = crate::lock::holder(&config.paths.lock)? {
        if !said {
            say(&format!("waiting  for the running cycle ({holder}) to end"))?;
            said = true;
        }
        if Instant::now() > until {
            bail!(
                "a cycle still holds {} after {} s; try again, or look at `ops-agent status`",
                config.paths.lock.display(),
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_different_file_needs_force() {
        use Existing::*;
        assert_eq!(decide_writes(&[Absent, Absent], false), Ok(()));
        assert_eq!(decide_writes(&[Same, Absent], false), Ok(()));
        assert_eq!(decide_writes(&[Same, Different], false), Err(1));
        assert_eq!(decide_writes(&[Different, Different], true), Ok(()));
    }
}
