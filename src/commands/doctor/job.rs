//! What the scheduled job will see, which an interactive `doctor` run does
//! not: the secret files it reads (ours, owner-only), secrets it would
//! look for in an environment it does not have, and the job itself
//! (installed, loaded, running this binary with this config). Gathering
//! is I/O; [`secret_findings`] and [`job_findings`] are pure and
//! table-tested.

use std::path::{Path, PathBuf};

use super::{finding, Finding, Level};
use crate::config::{Config, ConfigSource};
use crate::schedule::secrets::{self, SecretNeed};
use crate::schedule::{control, launchd, systemd, Homes, Scheduler};
use crate::secret::SecretSource;

/// One line per secret the config reads. `file_check` says whether a file
/// is ours and owner-only; `job_installed` whether a scheduled job (which
/// has no shell variables) will read them. Pure.
fn secret_findings(
    needs: &[SecretNeed],
    file_check: &dyn Fn(&Path) -> Result<(), String>,
    job_installed: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for n in needs {
        let key = n.secret.key;
        let name = format!("secret {key}");
        match &n.secret.source {
            SecretSource::File(p) => out.push(match file_check(p) {
                Ok(()) => finding(
                    name,
                    Level::Ok,
                    format!("{}: ours, owner-only", p.display()),
                ),
                Err(e) if n.required => finding(name, Level::Fail, e),
                Err(e) => finding(name, Level::Warn, e),
            }),
            // Unconfigured Mattermost is reported by the mattermost line.
            SecretSource::Env(_) if !n.required => {}
            SecretSource::Env(var) => {
                let file_key = key.strip_suffix("_env").unwrap_or(key);
                let why = format!(
                    "from environment variable {var}, which a scheduled job (launchd, systemd) does not have; set {file_key}_file"
                );
                out.push(if job_installed {
                    finding(name, Level::Fail, why)
                } else {
                    finding(name, Level::Warn, why)
                });
            }
        }
    }
    out
}

/// What was found out about the installed job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobFacts {
    /// Which scheduler.
    scheduler: Scheduler,
    /// The job files, with their content when present.
    files: Vec<(PathBuf, Option<String>)>,
    /// Each file as `install` would write it now (same order).
    expected: Vec<String>,
    /// The binary `install` would put in the job (this one).
    binary: PathBuf,
    /// Whether the scheduler has the job loaded (`Err`: could not ask).
    loaded: Result<bool, String>,
    /// Whether the program the installed job runs exists.
    program_exists: bool,
}

/// The program an installed job file runs.
fn program_of(scheduler: Scheduler, text: &str) -> Option<String> {
    match scheduler {
        Scheduler::Launchd => launchd::program_arguments(text)?.into_iter().next(),
        Scheduler::Systemd => systemd::exec_program(text),
    }
}

/// Judges the installed job: present, current, loaded. Pure.
fn job_findings(f: &JobFacts) -> Vec<Finding> {
    let flag = f.scheduler.flag();
    let name = "scheduled job";
    let missing: Vec<String> = f
        .files
        .iter()
        .filter(|(_, t)| t.is_none())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if missing.len() == f.files.len() {
        return vec![finding(
            name,
            Level::Warn,
            format!(
                "not installed (no {}): run `ops-agent install {flag}`",
                missing.join(", ")
            ),
        )];
    }
    if !missing.is_empty() {
        return vec![finding(
            name,
            Level::Fail,
            format!(
                "half installed ({} missing): run `ops-agent install {flag} --force`",
                missing.join(", ")
            ),
        )];
    }
    let mut out = Vec::new();
    let current = f
        .files
        .iter()
        .zip(&f.expected)
        .all(|((_, t), e)| t.as_deref() == Some(e.as_str()));
    let program = f
        .files
        .first()
        .and_then(|(_, t)| program_of(f.scheduler, t.as_deref()?));
    let first = f.files[0].0.display();
    out.push(match (&program, current) {
        (_, true) => finding(name, Level::Ok, format!("{first}: current (runs this binary with this config)")),
        (Some(p), false) if !f.program_exists => finding(
            name,
            Level::Fail,
            format!("{first} runs {p}, which does not exist: every scheduled cycle fails; run `ops-agent install {flag} --force`"),
        ),
        (Some(p), false) if Path::new(p) != f.binary => finding(
            name,
            Level::Warn,
            format!(
                "{first} runs {p}, not this binary ({}); run `ops-agent install {flag} --force` from the one to keep",
                f.binary.display()
            ),
        ),
        (_, false) => finding(
            name,
            Level::Warn,
            format!("{first} differs from what install would write now (interval, config path or environment); `ops-agent install {flag} --print` shows it"),
        ),
    });
    out.push(match &f.loaded {
        Ok(true) => finding("scheduled job loaded", Level::Ok, "the scheduler has it"),
        Ok(false) => finding(
            "scheduled job loaded",
            Level::Fail,
            format!("installed but not loaded: no cycle runs; run `ops-agent restart {flag}`"),
        ),
        Err(e) => finding(
            "scheduled job loaded",
            Level::Warn,
            format!("could not ask the scheduler: {e}"),
        ),
    });
    out
}

/// Gathers the facts and judges them: the secrets, then the job of this
/// platform's scheduler (none under Kubernetes, where a CronJob runs it).
pub(super) fn findings(config: &Config, source: &ConfigSource) -> Vec<Finding> {
    let scheduler = Scheduler::native();
    let in_kubernetes = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let homes = Homes::current().ok();
    let paths = homes
        .as_ref()
        .map(|h| h.job_paths(scheduler, &config.schedule))
        .unwrap_or_default();
    let installed = !in_kubernetes && paths.iter().any(|p| p.exists());
    let needs = secrets::needs(&config.mattermost, &config.planka, &config.ollama);
    let file_check = |p: &Path| {
        let p = crate::paths::expand_tilde(&p.to_string_lossy());
        crate::secret::check_readable(&p).map_err(|e| format!("{e:#}"))
    };
    let mut out = secret_findings(&needs, &file_check, installed);
    if in_kubernetes {
        out.push(finding(
            "scheduled job",
            Level::Ok,
            "in Kubernetes: the CronJob schedules the agent (no launchd or systemd job here)",
        ));
        return out;
    }
    let planned = match super::super::install::plan(config, source, scheduler, None) {
        Ok(p) => p,
        Err(e) => {
            out.push(finding("scheduled job", Level::Warn, format!("{e:#}")));
            return out;
        }
    };
    let files: Vec<(PathBuf, Option<String>)> = planned
        .files
        .iter()
        .map(|f| (f.path.clone(), std::fs::read_to_string(&f.path).ok()))
        .collect();
    let program = files
        .first()
        .and_then(|(_, t)| program_of(scheduler, t.as_deref()?));
    let loaded = if files.iter().any(|(_, t)| t.is_some()) {
        ask_loaded(scheduler, config)
    } else {
        Ok(false)
    };
    let facts = JobFacts {
        scheduler,
        expected: planned.files.iter().map(|f| f.text.clone()).collect(),
        files,
        binary: planned.spec.binary.clone(),
        loaded,
        program_exists: program.is_some_and(|p| Path::new(&p).is_file()),
    };
    out.extend(job_findings(&facts));
    out
}

fn ask_loaded(scheduler: Scheduler, config: &Config) -> Result<bool, String> {
    let rt = super::super::runtime().map_err(|e| format!("{e:#}"))?;
    let mut ran = Vec::new();
    match scheduler {
        Scheduler::Launchd => rt
            .block_on(control::launchd_loaded(
                &config.schedule.launchd_label,
                &mut ran,
            ))
            .map_err(|e| format!("{e:#}")),
        Scheduler::Systemd => {
            let timer = format!("{}.timer", config.schedule.systemd_unit);
            match rt.block_on(control::systemd_state(&timer, &mut ran)) {
                Ok(s) if s == "active" => Ok(true),
                Ok(s) if s.contains("bus") || s.contains("XDG_RUNTIME_DIR") => {
                    Err(format!("systemctl --user: {s}"))
                }
                Ok(_) => Ok(false),
                Err(e) => Err(format!("{e:#}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretRef;

    #[test]
    fn secret_table() {
        let good = Path::new("/good");
        let check = |p: &Path| {
            if p == good {
                Ok(())
            } else {
                Err("secret file /bad has mode 644; it must be owner-only (chmod 600)".to_string())
            }
        };
        let need = |secret, required| SecretNeed { secret, required };
        let cases = [
            (
                need(SecretRef::file("mattermost.token_file", good), true),
                false,
                Some(Level::Ok),
            ),
            (
                need(
                    SecretRef::file("mattermost.token_file", "/bad".as_ref()),
                    true,
                ),
                false,
                Some(Level::Fail),
            ),
            (
                need(
                    SecretRef::file("mattermost.token_file", "/bad".as_ref()),
                    false,
                ),
                false,
                Some(Level::Warn),
            ),
            (
                need(SecretRef::env("mattermost.token_env", "T"), false),
                true,
                None,
            ),
            (
                need(SecretRef::env("planka.password_env", "P"), true),
                false,
                Some(Level::Warn),
            ),
            (
                need(SecretRef::env("planka.password_env", "P"), true),
                true,
                Some(Level::Fail),
            ),
        ];
        for (n, installed, want) in cases {
            let f = secret_findings(std::slice::from_ref(&n), &check, installed);
            assert_eq!(
                f.first().map(|f| f.level),
                want,
                "{n:?} installed={installed}: {f:?}"
            );
        }
        let f = secret_findings(
            &[need(SecretRef::env("planka.password_env", "P"), true)],
            &check,
            true,
        );
        assert!(f[0].reason.contains("set planka.password_file"), "{f:?}");
    }

    fn facts(files: &[Option<&str>], loaded: Result<bool, String>) -> JobFacts {
        JobFacts {
            scheduler: Scheduler::Systemd,
            files: files
                .iter()
                .enumerate()
                .map(|(i, t)| (PathBuf::from(format!("/u/{i}")), t.map(str::to_string)))
                .collect(),
            expected: vec![
                "ExecStart=/usr/local/bin/ops-agent run-once\n".into(),
                "timer\n".into(),
            ],
            binary: "/usr/local/bin/ops-agent".into(),
            loaded,
            program_exists: true,
        }
    }

    #[test]
    fn job_table() {
        let current = "ExecStart=/usr/local/bin/ops-agent run-once\n";
        let levels = |f: &JobFacts| job_findings(f).iter().map(|x| x.level).collect::<Vec<_>>();
        assert_eq!(levels(&facts(&[None, None], Ok(false))), [Level::Warn]);
        assert!(job_findings(&facts(&[None, None], Ok(false)))[0]
            .reason
            .contains("ops-agent install --systemd"));
        assert_eq!(
            levels(&facts(&[Some(current), None], Ok(true))),
            [Level::Fail]
        );
        assert_eq!(
            levels(&facts(&[Some(current), Some("timer\n")], Ok(true))),
            [Level::Ok, Level::Ok]
        );
        assert_eq!(
            levels(&facts(&[Some(current), Some("timer\n")], Ok(false))),
            [Level::Ok, Level::Fail]
        );
        assert_eq!(
            levels(&facts(
                &[Some(current), Some("timer\n")],
                Err("no bus".into())
            )),
            [Level::Ok, Level::Warn]
        );
        let old = "ExecStart=/opt/old/ops-agent run-once\n";
        let f = facts(&[Some(old), Some("timer\n")], Ok(true));
        let found = job_findings(&f);
        assert_eq!(found[0].level, Level::Warn);
        assert!(
            found[0]
                .reason
                .contains("runs /opt/old/ops-agent, not this binary"),
            "{found:?}"
        );
        let gone = JobFacts {
            program_exists: false,
            ..f
        };
        assert_eq!(job_findings(&gone)[0].level, Level::Fail);
        let other = facts(&[Some(current), Some("timer every 60\n")], Ok(true));
        assert!(job_findings(&other)[0]
            .reason
            .contains("differs from what install would write"));
    }
}
