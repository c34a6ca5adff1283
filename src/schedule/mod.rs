//! The scheduler job that starts the agent every `interval` seconds: a
//! LaunchAgent on macOS ([`launchd`]), a systemd user service and timer on
//! Linux ([`systemd`]). Rendering is pure: the same [`JobSpec`] always
//! gives the same bytes, so `install --print`, the reference plist in the
//! repository and `doctor`'s "is the installed job current?" all compare
//! against one function. [`control`] drives `launchctl` and `systemctl`;
//! [`secrets`] judges whether the job will find its secrets.
//!
//! A scheduled job starts with a bare environment (launchd and systemd pass
//! no shell variables), expands neither `~` nor `$VARS`, and may outlive
//! the build directory it was installed from: every path in a job file is
//! absolute, and the environment it needs is written into it.

pub(crate) mod control;
pub(crate) mod launchd;
pub(crate) mod secrets;
pub(crate) mod systemd;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `[schedule]`: the names the job is installed under, so `install`,
/// `uninstall`, `restart` and `doctor` agree on them (and two agents, one
/// per Mattermost workspace, can live on one host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ScheduleConfig {
    /// The LaunchAgent's label (its plist is `~/Library/LaunchAgents/<label>.plist`).
    pub(crate) launchd_label: String,
    /// The systemd user units' name, without `.service` / `.timer`.
    pub(crate) systemd_unit: String,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            launchd_label: "com.john.ops-agent".into(),
            systemd_unit: "ops-agent".into(),
        }
    }
}

impl ScheduleConfig {
    /// Both names become file names and command arguments: letters,
    /// digits, `.`, `_` and `-` only.
    pub(crate) fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("schedule.launchd_label", &self.launchd_label),
            ("schedule.systemd_unit", &self.systemd_unit),
        ] {
            let ok = !v.is_empty()
                && !v.starts_with('.')
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                bail!(
                    "{key}: '{v}' must be letters, digits, '.', '_' or '-' (not starting with '.')"
                );
            }
        }
        for (key, v) in [
            ("schedule.launchd_label", &self.launchd_label),
            ("schedule.systemd_unit", &self.systemd_unit),
        ] {
            crate::health::check::check_daemon_name(key, v)?;
        }
        if let Some(ext) = [".service", ".timer"]
            .iter()
            .find(|e| self.systemd_unit.ends_with(*e))
        {
            bail!(
                "schedule.systemd_unit: '{}' is the base name; drop '{ext}'",
                self.systemd_unit
            );
        }
        Ok(())
    }
}

/// Which scheduler the job is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scheduler {
    /// A LaunchAgent in the user's `gui/<uid>` domain (macOS).
    Launchd,
    /// A systemd user service plus timer (Linux).
    Systemd,
}

impl Scheduler {
    /// The scheduler of this platform (what `doctor` looks for).
    pub(crate) fn native() -> Scheduler {
        if cfg!(target_os = "macos") {
            Scheduler::Launchd
        } else {
            Scheduler::Systemd
        }
    }

    /// Its name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scheduler::Launchd => "launchd",
            Scheduler::Systemd => "systemd",
        }
    }

    /// The `install` flag that selects it.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Scheduler::Launchd => "--launchd",
            Scheduler::Systemd => "--systemd",
        }
    }

    /// The PATH a job gets when nothing it runs needs more: the system
    /// directories plus the usual package managers' (Homebrew on macOS).
    fn base_path(self) -> &'static str {
        match self {
            Scheduler::Launchd => "/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            Scheduler::Systemd => "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
    }
}

/// Everything a job file is rendered from. Paths are absolute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobSpec {
    /// The agent binary the job runs.
    pub(crate) binary: PathBuf,
    /// The config file (`None`: the job finds it as an interactive run
    /// would, or runs on the built-in defaults).
    pub(crate) config: Option<PathBuf>,
    /// Seconds between cycle starts.
    pub(crate) interval_secs: u64,
    /// The environment the job needs, in order (PATH first).
    pub(crate) env: Vec<(String, String)>,
    /// launchd: where the job's stdout goes (appended, never rotated).
    pub(crate) stdout_log: PathBuf,
    /// launchd: where the job's stderr goes.
    pub(crate) stderr_log: PathBuf,
    /// `[schedule]`.
    pub(crate) names: ScheduleConfig,
}

impl JobSpec {
    /// Refuses a spec that `scheduler`'s job file could not carry
    /// faithfully ([`unfaithful`]), naming the value and the way out; so
    /// nothing is rendered, written or loaded from one. Pure.
    pub(crate) fn check(&self, scheduler: Scheduler) -> Result<()> {
        let mut values: Vec<(&str, &std::ffi::OsStr, bool)> =
            vec![("the binary", self.binary.as_os_str(), true)];
        if let Some(c) = &self.config {
            values.push(("the config file", c.as_os_str(), false));
        }
        if scheduler == Scheduler::Launchd {
            values.push(("launchd's stdout log", self.stdout_log.as_os_str(), false));
            values.push(("launchd's stderr log", self.stderr_log.as_os_str(), false));
        }
        for (k, v) in &self.env {
            values.push(("an environment variable's name", k.as_ref(), false));
            values.push((k.as_str(), v.as_ref(), false));
        }
        for (what, value, executable) in values {
            if let Some(why) = unfaithful(value, executable, scheduler) {
                bail!(
                    "{what} {:?} {why}: a {} job file cannot name it as it is; rename or move it \
                     (or link it from a plain path) and run install from there",
                    Path::new(value),
                    scheduler.name()
                );
            }
        }
        Ok(())
    }

    /// The job's command line: no shell, the config named explicitly so the
    /// job never depends on where it thinks home is.
    fn argv(&self) -> Vec<String> {
        let mut argv = vec![self.binary.display().to_string()];
        if let Some(c) = &self.config {
            argv.push("--config".into());
            argv.push(c.display().to_string());
        }
        argv.push("run-once".into());
        argv
    }
}

/// Why `value` cannot be written into a job file so that the scheduler
/// reads back exactly it, if it cannot: a job file is UTF-8 text (a
/// non-UTF-8 name would become U+FFFD, another file), a control character
/// splits a unit's line into injected lines (newline, CR) or makes the
/// plist invalid XML (XML 1.0 has no way to write most of them), and
/// systemd refuses an executable path holding a quote or a backslash
/// (systemd.service(5), "Executable name contains special characters").
/// Everything else is escaped by the renderers. Pure.
fn unfaithful(value: &std::ffi::OsStr, executable: bool, scheduler: Scheduler) -> Option<String> {
    let Some(text) = value.to_str() else {
        return Some("is not UTF-8".into());
    };
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Some(format!("holds the control character {c:?}"));
    }
    if executable && scheduler == Scheduler::Systemd {
        if let Some(c) = text.chars().find(|c| matches!(c, '"' | '\'' | '\\')) {
            return Some(format!(
                "holds {c:?}, which systemd refuses in the program it starts"
            ));
        }
    }
    None
}

/// One file of a job: where it goes and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobFile {
    /// Absolute path.
    pub(crate) path: PathBuf,
    /// The whole content.
    pub(crate) text: String,
}

/// Where a scheduler's job files live for a user: `home`, the XDG config
/// directory (`$XDG_CONFIG_HOME`, else `~/.config`; systemd reads user
/// units from `<it>/systemd/user`) and the XDG data directory
/// (`$XDG_DATA_HOME`, else `~/.local/share`; systemd keeps a persistent
/// timer's last run in `<it>/systemd/timers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Homes {
    /// The home directory.
    home: PathBuf,
    /// The XDG config directory.
    config_home: PathBuf,
    /// The XDG data directory.
    data_home: PathBuf,
}

impl Homes {
    /// From the home directory, `$XDG_CONFIG_HOME` and `$XDG_DATA_HOME`
    /// (each used only when absolute, as the XDG spec says). Pure.
    fn new(home: &Path, xdg_config_home: Option<&str>, xdg_data_home: Option<&str>) -> Homes {
        let xdg = |value: Option<&str>, default: &str| {
            value
                .filter(|x| x.starts_with('/'))
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(default))
        };
        Homes {
            home: home.to_path_buf(),
            config_home: xdg(xdg_config_home, ".config"),
            data_home: xdg(xdg_data_home, ".local/share"),
        }
    }

    /// This process's (`$HOME`, `$XDG_CONFIG_HOME`, `$XDG_DATA_HOME`).
    pub(crate) fn current() -> Result<Homes> {
        let Some(dirs) = directories::BaseDirs::new() else {
            bail!("no home directory (is HOME set?)");
        };
        let config = std::env::var("XDG_CONFIG_HOME").ok();
        let data = std::env::var("XDG_DATA_HOME").ok();
        Ok(Homes::new(
            dirs.home_dir(),
            config.as_deref(),
            data.as_deref(),
        ))
    }

    /// The file in which systemd keeps the timer's last run
    /// (`Persistent=true`): systemd leaves it behind when the timer is
    /// disabled and its unit removed, so `uninstall` removes it.
    pub(crate) fn timer_stamp(&self, names: &ScheduleConfig) -> PathBuf {
        self.data_home
            .join("systemd/timers")
            .join(format!("stamp-{}.timer", names.systemd_unit))
    }

    /// The paths of the job files a scheduler reads.
    pub(crate) fn job_paths(&self, scheduler: Scheduler, names: &ScheduleConfig) -> Vec<PathBuf> {
        match scheduler {
            Scheduler::Launchd => vec![self
                .home
                .join("Library/LaunchAgents")
                .join(format!("{}.plist", names.launchd_label))],
            Scheduler::Systemd => {
                let dir = self.config_home.join("systemd/user");
                vec![
                    dir.join(format!("{}.service", names.systemd_unit)),
                    dir.join(format!("{}.timer", names.systemd_unit)),
                ]
            }
        }
    }
}

/// Renders the job's files. Pure.
pub(crate) fn render(scheduler: Scheduler, spec: &JobSpec, homes: &Homes) -> Vec<JobFile> {
    let paths = homes.job_paths(scheduler, &spec.names);
    let texts = match scheduler {
        Scheduler::Launchd => vec![launchd::render_plist(spec)],
        Scheduler::Systemd => vec![systemd::render_service(spec), systemd::render_timer(spec)],
    };
    paths
        .into_iter()
        .zip(texts)
        .map(|(path, text)| JobFile { path, text })
        .collect()
}

/// `--print`: each file preceded by a `# <path>` line. Pure.
pub(crate) fn render_print(files: &[JobFile]) -> String {
    let mut out = String::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out += &format!("# {}\n{}", f.path.display(), f.text);
    }
    out
}

/// The job's PATH: the scheduler's base, with the directories of the
/// programs the config runs by bare name (found on the installing shell's
/// PATH) put first, so `node` from a version manager still resolves in
/// the bare environment. Pure.
pub(crate) fn job_path(scheduler: Scheduler, program_dirs: &[PathBuf]) -> String {
    let base: Vec<&str> = scheduler.base_path().split(':').collect();
    let mut dirs: Vec<String> = Vec::new();
    for d in program_dirs {
        let d = d.display().to_string();
        if !base.contains(&d.as_str()) && !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs.extend(base.iter().map(|s| s.to_string()));
    dirs.join(":")
}

/// Finds a bare program name on a PATH value, as a shell would.
pub(crate) fn find_on_path(name: &str, path: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return None;
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|c| c.is_file())
}

/// launchd's log files next to the activity log: `<dir>/<stem>-launchd.log`
/// and `<dir>/<stem>-launchd-error.log`, the names the Node daemon's
/// LaunchAgent used (`~/system/logs/ops-agent-launchd-error.log`), so the
/// runbook's `tail` commands still find them.
pub(crate) fn launchd_logs(activity_log: &Path) -> (PathBuf, PathBuf) {
    let dir = activity_log.parent().unwrap_or(Path::new("/"));
    let stem = activity_log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ops-agent".into());
    (
        dir.join(format!("{stem}-launchd.log")),
        dir.join(format!("{stem}-launchd-error.log")),
    )
}

/// Why an interval cannot be used, if it cannot: the deadline must end a
/// cycle before the next one is due. Pure.
pub(crate) fn check_interval(interval_secs: u64, deadline_secs: f64) -> Result<()> {
    if interval_secs < 10 {
        bail!("--interval {interval_secs}: at least 10 seconds");
    }
    if (interval_secs as f64) <= deadline_secs {
        bail!(
            "--interval {interval_secs}: must be longer than agent.deadline_secs ({deadline_secs}) so cycles never queue up"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> JobSpec {
        JobSpec {
            binary: "/usr/local/bin/ops-agent".into(),
            config: Some("/home/ann/.config/ops-agent/config.toml".into()),
            interval_secs: 300,
            env: vec![("PATH".into(), Scheduler::Systemd.base_path().into())],
            stdout_log: "/home/ann/system/logs/ops-agent-launchd.log".into(),
            stderr_log: "/home/ann/system/logs/ops-agent-launchd-error.log".into(),
            names: ScheduleConfig::default(),
        }
    }

    #[test]
    fn names_are_checked() {
        ScheduleConfig::default().validate().unwrap();
        let bad = |label: &str, unit: &str| {
            ScheduleConfig {
                launchd_label: label.into(),
                systemd_unit: unit.into(),
            }
            .validate()
            .unwrap_err()
            .to_string()
        };
        assert!(bad("a b", "u").contains("schedule.launchd_label: 'a b'"));
        assert!(bad("l", "../x").contains("schedule.systemd_unit"));
        assert!(bad("l", "ops.service").contains("drop '.service'"));
        assert!(bad("", "u").contains("launchd_label"));
    }

    #[test]
    fn job_files_go_where_each_scheduler_reads_them() {
        let h = Homes::new(Path::new("/home/ann"), None, None);
        let names = ScheduleConfig::default();
        assert_eq!(
            h.job_paths(Scheduler::Launchd, &names),
            [PathBuf::from(
                "/home/ann/Library/LaunchAgents/com.john.ops-agent.plist"
            )]
        );
        assert_eq!(
            h.job_paths(Scheduler::Systemd, &names),
            [
                PathBuf::from("/home/ann/.config/systemd/user/ops-agent.service"),
                PathBuf::from("/home/ann/.config/systemd/user/ops-agent.timer"),
            ]
        );
        assert_eq!(
            h.timer_stamp(&names),
            PathBuf::from("/home/ann/.local/share/systemd/timers/stamp-ops-agent.timer")
        );
        let x = Homes::new(Path::new("/home/ann"), Some("/xdg"), Some("/data"));
        assert_eq!(x.config_home, PathBuf::from("/xdg"));
        assert_eq!(
            x.timer_stamp(&names),
            PathBuf::from("/data/systemd/timers/stamp-ops-agent.timer")
        );
        let rel = Homes::new(Path::new("/home/ann"), Some("relative"), Some("rel"));
        assert_eq!(rel.config_home, PathBuf::from("/home/ann/.config"));
        assert_eq!(rel.data_home, PathBuf::from("/home/ann/.local/share"));
    }

    #[test]
    fn argv_names_the_config_and_runs_one_cycle() {
        let mut s = spec();
        assert_eq!(
            s.argv(),
            [
                "/usr/local/bin/ops-agent",
                "--config",
                "/home/ann/.config/ops-agent/config.toml",
                "run-once"
            ]
        );
        s.config = None;
        assert_eq!(s.argv(), ["/usr/local/bin/ops-agent", "run-once"]);
    }

    #[test]
    fn what_a_job_file_cannot_carry_is_refused_with_the_value_named() {
        use std::os::unix::ffi::OsStrExt;
        let refused = |s: &JobSpec, sch: Scheduler| s.check(sch).unwrap_err().to_string();
        spec().check(Scheduler::Systemd).unwrap();
        spec().check(Scheduler::Launchd).unwrap();
        // What the renderers escape is fine for both.
        let mut ok = spec();
        ok.binary = "/opt/a b/$x/100%/;#/ops-agent".into();
        ok.config = Some("/home/ann/\"q\" 'y' \\z $HOME %h.toml".into());
        ok.check(Scheduler::Systemd).unwrap();
        ok.check(Scheduler::Launchd).unwrap();
        let mut s = spec();
        s.config = Some("/home/ann/x\n[Service]\nExecStartPre=/bin/sh.toml".into());
        for sch in [Scheduler::Systemd, Scheduler::Launchd] {
            let e = refused(&s, sch);
            assert!(
                e.contains("the config file \"/home/ann/x\\n[Service]"),
                "{e}"
            );
            assert!(e.contains("control character '\\n'"), "{e}");
        }
        let mut s = spec();
        s.binary = "/opt/x\ry/ops-agent".into();
        assert!(refused(&s, Scheduler::Launchd).contains("'\\r'"));
        let mut s = spec();
        s.binary = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/opt/\xff/ops-agent"));
        let e = refused(&s, Scheduler::Systemd);
        assert!(
            e.contains("the binary \"/opt/\\xFF/ops-agent\" is not UTF-8"),
            "{e}"
        );
        for q in ["\"", "'", "\\"] {
            let mut s = spec();
            s.binary = format!("/opt/a{q}b/ops-agent").into();
            assert!(
                refused(&s, Scheduler::Systemd).contains("systemd refuses"),
                "{q}"
            );
            s.check(Scheduler::Launchd).unwrap();
        }
        let mut s = spec();
        s.env
            .push(("DOCKER_HOST".into(), "tcp://h:2376\u{1b}[2J".into()));
        assert!(refused(&s, Scheduler::Systemd).starts_with("DOCKER_HOST \"tcp://h:2376\\u{1b}"));
        let mut s = spec();
        s.stderr_log = "/l/\u{7}.log".into();
        s.check(Scheduler::Systemd).unwrap();
        assert!(refused(&s, Scheduler::Launchd).contains("launchd's stderr log"));
    }

    #[test]
    fn print_heads_each_file_with_its_path() {
        let files = vec![
            JobFile {
                path: "/a".into(),
                text: "one\n".into(),
            },
            JobFile {
                path: "/b".into(),
                text: "two\n".into(),
            },
        ];
        assert_eq!(render_print(&files), "# /a\none\n\n# /b\ntwo\n");
    }

    #[test]
    fn path_table() {
        let base = Scheduler::Systemd.base_path();
        assert_eq!(job_path(Scheduler::Systemd, &[]), base);
        let nvm = PathBuf::from("/home/ann/.nvm/versions/node/v20/bin");
        assert_eq!(
            job_path(
                Scheduler::Systemd,
                &[nvm.clone(), "/usr/bin".into(), nvm.clone()]
            ),
            format!("{}:{base}", nvm.display())
        );
        assert!(job_path(Scheduler::Launchd, &[]).contains("/opt/homebrew/bin"));
    }

    #[test]
    fn launchd_logs_sit_next_to_the_activity_log() {
        assert_eq!(
            launchd_logs(Path::new("/Users/ann/system/logs/ops-agent.log")),
            (
                PathBuf::from("/Users/ann/system/logs/ops-agent-launchd.log"),
                PathBuf::from("/Users/ann/system/logs/ops-agent-launchd-error.log")
            )
        );
    }

    #[test]
    fn interval_table() {
        check_interval(300, 240.0).unwrap();
        check_interval(60, 45.0).unwrap();
        assert!(check_interval(240, 240.0).is_err());
        assert!(check_interval(5, 1.0)
            .unwrap_err()
            .to_string()
            .contains("at least 10"));
    }

    #[test]
    fn find_on_path_is_like_a_shell() {
        assert!(find_on_path("sh", "/nonexistent:/bin:/usr/bin").is_some());
        assert_eq!(find_on_path("./sh", "/bin"), None);
        assert_eq!(find_on_path("no-such-program-x", "/bin"), None);
    }
}
