//! `ops-agent doctor`: everything an operator checks when something is off,
//! in one command. Each line is ok, warn or fail with the reason:
//!
//! * the config (where it came from, whether it is valid);
//! * every state-like file (exists? a symlink? ours? owner-only? parses?)
//!   and whether its directory is writable, plus the cycle lock;
//! * MC (the command's program exists and is executable, or the built-in
//!   ledger can be written);
//! * Mattermost (configured? ping? token valid? each team), Ollama (tags
//!   reachable? both models pulled?) and Planka (enabled? reachable?
//!   credentials present?), probed concurrently with their configured
//!   timeouts.
//!
//! **fail** means the cycle cannot do a core job until someone acts (no
//! Mattermost, state that cannot be saved, no MC); **warn** means it runs
//! degraded or will repair it by itself (Ollama down: keyword rules; Planka
//! down: cards wait in the outbox; a corrupt file: set aside). Exit 1 when
//! anything fails, else 0. Doctor writes nothing (a password login may
//! refresh the Mattermost token cache, as a cycle would).
//!
//! Gathering facts does I/O; judging them ([`judge_file`], [`mm_findings`],
//! [`ollama_findings`]) and rendering ([`render`]) are pure and table-tested.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::config::{Config, ConfigSource};
use crate::mattermost::{self, Client as MmClient, MmState, MmStatus};
use crate::ollama::{self, Purpose};
use crate::paths::expand_tilde;
use crate::secret::Secret;
use crate::state::{RuntimeState, Stats};
use crate::tasks::ledger;
use crate::tasks::mc::{self, McConfig};
use crate::tasks::planka::PlankaConfig;

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Degraded or self-repairing; worth a look.
    Warn,
    /// A core job cannot work until someone acts.
    Fail,
}

impl Level {
    /// The word in the text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One checked thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was checked ("state file", "mattermost team basic").
    pub check: String,
    /// How bad.
    pub level: Level,
    /// Why, in one line (never a secret).
    pub reason: String,
}

fn finding(check: impl Into<String>, level: Level, reason: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        level,
        reason: reason.into(),
    }
}

/// How many findings of each level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Fine.
    pub ok: usize,
    /// Worth a look.
    pub warn: usize,
    /// Must be fixed.
    pub fail: usize,
}

/// What `doctor --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// True when nothing failed (the exit code is 0 exactly then).
    pub ok: bool,
    /// Findings per level.
    pub counts: Counts,
    /// Every finding, in check order.
    pub checks: Vec<Finding>,
}

impl Report {
    /// Counts the findings.
    pub fn new(checks: Vec<Finding>) -> Report {
        let mut counts = Counts::default();
        for f in &checks {
            match f.level {
                Level::Ok => counts.ok += 1,
                Level::Warn => counts.warn += 1,
                Level::Fail => counts.fail += 1,
            }
        }
        Report {
            ok: counts.fail == 0,
            counts,
            checks,
        }
    }
}

/// The text form: one aligned line per finding, then a summary. Pure.
pub fn render(r: &Report) -> String {
    let w = r.checks.iter().map(|f| f.check.len()).max().unwrap_or(0);
    let mut s = String::new();
    for f in &r.checks {
        s += &format!("{:<4}  {:<w$}  {}\n", f.level.as_str(), f.check, f.reason);
    }
    s += &format!(
        "{}: {} ok, {} warn, {} fail\n",
        if r.ok { "healthy" } else { "PROBLEMS" },
        r.counts.ok,
        r.counts.warn,
        r.counts.fail
    );
    s
}

/// `ops-agent doctor` with a loaded config.
pub fn run(config: &Config, source: &ConfigSource, json: bool) -> Result<ExitCode> {
    let first = finding("config", Level::Ok, format!("{source}: valid"));
    output(examine(config, vec![first])?, json)
}

/// `ops-agent doctor` when the config did not load: one failed check, and
/// everything else examined against the built-in defaults.
pub fn run_with_broken_config(error: &anyhow::Error, json: bool) -> Result<ExitCode> {
    let defaults = Config::from_toml("", "built-in defaults")?;
    let first = vec![
        finding("config", Level::Fail, format!("{error:#}")),
        finding(
            "config",
            Level::Warn,
            "the checks below use the built-in defaults",
        ),
    ];
    output(examine(&defaults, first)?, json)
}

fn output(report: Report, json: bool) -> Result<ExitCode> {
    if json {
        super::print_json(&report, "the doctor report")?;
    } else {
        super::print_text(&render(&report))?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FATAL)
    })
}

fn examine(config: &Config, mut out: Vec<Finding>) -> Result<Report> {
    let p = &config.paths;
    let json_as = |parse: fn(&[u8]) -> Result<(), String>| Content::Json(parse);
    let files: [(&str, &Path, Content); 7] = [
        ("state file", &p.state, json_as(parses::<RuntimeState>)),
        (
            "token cache",
            &p.token_cache,
            json_as(parses::<serde_json::Value>),
        ),
        (
            "fix history",
            &p.fix_history,
            json_as(parses::<serde_json::Value>),
        ),
        ("stats file", &p.stats, json_as(parses::<Stats>)),
        ("task ledger", &p.ledger, Content::Ledger),
        ("activity log", &p.log, Content::Text),
        (
            "planka token cache",
            &p.planka_token_cache,
            json_as(parses::<serde_json::Value>),
        ),
    ];
    for (name, path, content) in files {
        out.push(judge_file(name, path, &inspect(path, content)));
    }
    // Cached team ids, shown when the server is unreachable.
    let mm_state = crate::store::peek::<RuntimeState>(&p.state)
        .ok()
        .flatten()
        .map(|rt| rt.mattermost)
        .unwrap_or_default();
    out.push(lock_finding(&p.lock));
    out.push(mc_finding(&config.mc, &p.ledger));

    let rt = super::runtime()?;
    let (mm, llm, planka) = rt.block_on(async {
        tokio::join!(
            probe_mattermost(config, &mm_state),
            probe_ollama(&config.ollama),
            probe_planka(&config.planka),
        )
    });
    out.extend(mm);
    out.extend(llm);
    out.extend(planka);
    Ok(Report::new(out))
}

// ---------------------------------------------------------------- files

/// How a file's content is checked.
#[derive(Clone, Copy)]
enum Content {
    /// One JSON document; the function says whether it parses.
    Json(fn(&[u8]) -> Result<(), String>),
    /// The JSON-lines task ledger.
    Ledger,
    /// Free text (the activity log): not parsed.
    Text,
}

fn parses<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether the directory a file lives in lets the agent save it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    /// Exists and is writable.
    Writable,
    /// Exists, but we cannot create files in it.
    NotWritable(PathBuf),
    /// Missing; the first save creates it (its nearest ancestor is writable).
    Creatable(PathBuf),
    /// Missing, and its nearest existing ancestor is not writable.
    NotCreatable(PathBuf),
}

/// What `inspect` found out about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// Something is at the path.
    pub exists: bool,
    /// It is a symlink (refused by every reader and writer).
    pub symlink: bool,
    /// It is a regular file.
    pub regular: bool,
    /// Owner uid when it is not us.
    pub foreign_owner: Option<u32>,
    /// Permission bits (`0o600`).
    pub mode: u32,
    /// Why the content does not parse (JSON files).
    pub parse_error: Option<String>,
    /// Unreadable lines (the ledger).
    pub skipped_lines: usize,
    /// Its directory.
    pub dir: DirState,
}

/// Judges one file's facts. Pure.
pub fn judge_file(name: &str, path: &Path, f: &FileFacts) -> Finding {
    let p = path.display();
    let (level, reason) = if f.symlink {
        (
            Level::Fail,
            format!("{p} is a symlink (possibly planted by another user); the agent refuses it: remove it"),
        )
    } else if f.exists && !f.regular {
        (Level::Fail, format!("{p} is not a regular file; remove it"))
    } else if let Some(uid) = f.foreign_owner {
        (
            Level::Fail,
            format!("{p} is owned by uid {uid}, not by us; the agent refuses it: remove it"),
        )
    } else if let DirState::NotWritable(d) = &f.dir {
        (
            Level::Fail,
            format!(
                "{p}: directory {} is not writable, saves will fail",
                d.display()
            ),
        )
    } else if let DirState::NotCreatable(d) = &f.dir {
        (
            Level::Fail,
            format!(
                "{p}: directory is missing and {} is not writable, saves will fail",
                d.display()
            ),
        )
    } else if let Some(e) = &f.parse_error {
        (
            Level::Warn,
            format!("{p} does not parse ({e}); the next cycle moves it aside and starts fresh"),
        )
    } else if f.skipped_lines > 0 {
        (
            Level::Warn,
            format!(
                "{p}: {} unreadable line(s) are skipped (a torn last line after a crash is harmless)",
                f.skipped_lines
            ),
        )
    } else if f.exists && f.mode & 0o077 != 0 {
        (
            Level::Warn,
            format!(
                "{p} is readable by others (mode {:04o}); chmod 600 it",
                f.mode & 0o7777
            ),
        )
    } else if !f.exists {
        match &f.dir {
            DirState::Creatable(d) => (
                Level::Ok,
                format!("{p} absent; the first save creates {}", d.display()),
            ),
            _ => (Level::Ok, format!("{p} absent (created when first needed)")),
        }
    } else {
        (
            Level::Ok,
            format!("{p} owner-only, parses, directory writable"),
        )
    };
    finding(name, level, reason)
}

/// Gathers the facts about one file without changing anything.
fn inspect(path: &Path, content: Content) -> FileFacts {
    let mut f = FileFacts {
        exists: false,
        symlink: false,
        regular: false,
        foreign_owner: None,
        mode: 0,
        parse_error: None,
        skipped_lines: 0,
        dir: dir_state(path),
    };
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return f;
    };
    f.exists = true;
    f.symlink = meta.file_type().is_symlink();
    f.regular = meta.file_type().is_file();
    f.mode = meta.permissions().mode();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        f.foreign_owner = Some(meta.uid());
    }
    if f.symlink || !f.regular || f.foreign_owner.is_some() {
        return f;
    }
    match content {
        Content::Text => {}
        Content::Json(parse) => match crate::files::read_private_bytes(path) {
            Ok(Some(bytes)) => f.parse_error = parse(&bytes).err(),
            Ok(None) => f.exists = false,
            Err(e) => f.parse_error = Some(format!("{e:#}")),
        },
        Content::Ledger => match crate::files::read_private_bytes(path) {
            Ok(Some(bytes)) => f.skipped_lines = ledger::parse(&bytes).skipped.len(),
            Ok(None) => f.exists = false,
            Err(e) => f.parse_error = Some(format!("{e:#}")),
        },
    }
    f
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

fn dir_state(path: &Path) -> DirState {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        return if writable(dir) {
            DirState::Writable
        } else {
            DirState::NotWritable(dir.to_path_buf())
        };
    }
    let ancestor = dir
        .ancestors()
        .skip(1)
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("/"));
    if writable(ancestor) {
        DirState::Creatable(dir.to_path_buf())
    } else {
        DirState::NotCreatable(ancestor.to_path_buf())
    }
}

fn lock_finding(path: &Path) -> Finding {
    match crate::lock::holder(path) {
        Ok(None) => finding(
            "lock",
            Level::Ok,
            format!("{} free (no cycle running)", path.display()),
        ),
        Ok(Some(h)) => finding(
            "lock",
            Level::Ok,
            format!("{} held by {h} (a cycle is running)", path.display()),
        ),
        Err(e) => finding("lock", Level::Fail, format!("{e:#}")),
    }
}

// ---------------------------------------------------------------- MC

fn mc_finding(cfg: &McConfig, ledger_path: &Path) -> Finding {
    if !cfg.uses_command() {
        return match dir_state(ledger_path) {
            DirState::Writable | DirState::Creatable(_) => finding(
                "mc",
                Level::Ok,
                format!("built-in ledger {} (no mc.command)", ledger_path.display()),
            ),
            DirState::NotWritable(d) | DirState::NotCreatable(d) => finding(
                "mc",
                Level::Fail,
                format!(
                    "built-in ledger {}: {} is not writable, no task can be filed",
                    ledger_path.display(),
                    d.display()
                ),
            ),
        };
    }
    let name = &cfg.command[0];
    let Some(found) = mc::find_program(cfg) else {
        return finding(
            "mc",
            Level::Fail,
            format!("mc.command: program '{name}' not found (absolute, ~/ or on PATH); no task can be filed"),
        );
    };
    let mode = std::fs::metadata(&found)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o111 == 0 {
        return finding(
            "mc",
            Level::Fail,
            format!(
                "mc.command: {} is not executable (chmod +x it)",
                found.display()
            ),
        );
    }
    let p = expand_tilde(name);
    let on_path = if p.components().count() > 1 {
        ""
    } else {
        " on PATH"
    };
    finding(
        "mc",
        Level::Ok,
        format!(
            "command {}{on_path} (timeout {} s)",
            p.display(),
            cfg.timeout_secs
        ),
    )
}

// ---------------------------------------------------------------- Mattermost

async fn probe_mattermost(config: &Config, state: &MmState) -> Vec<Finding> {
    match MmClient::from_config(&config.mattermost, &config.paths.token_cache) {
        Ok(client) => mm_findings(&mattermost::status(&client, &config.mattermost, state).await),
        Err(e) => vec![finding(
            "mattermost",
            Level::Fail,
            format!("not configured: {e:#}"),
        )],
    }
}

/// Mattermost findings from a status check. Pure.
pub fn mm_findings(s: &MmStatus) -> Vec<Finding> {
    let version = s.server_version.as_deref().unwrap_or("version unknown");
    let mut out = vec![match &s.ping_error {
        None => finding(
            "mattermost",
            Level::Ok,
            format!("{} answers ping (server {version})", s.url),
        ),
        Some(e) => finding("mattermost", Level::Fail, format!("ping failed: {e}")),
    }];
    if s.ping_error.is_some() && s.user.is_none() && s.user_error.is_none() {
        // Unreachable: status() stopped there, so the rest is unknown.
        return out;
    }
    out.push(match (&s.user, &s.user_error) {
        (Some(u), _) => finding("mattermost auth", Level::Ok, format!("@{u} ({})", s.auth)),
        (None, Some(e)) => finding(
            "mattermost auth",
            Level::Fail,
            format!("{} refused: {e}", s.auth),
        ),
        (None, None) => finding("mattermost auth", Level::Fail, "users/me gave no user"),
    });
    for t in &s.teams {
        let name = format!("mattermost team {}", t.name);
        out.push(match (&t.error, t.resolved) {
            (None, true) => finding(
                name,
                Level::Ok,
                format!(
                    "{} channel(s) visible",
                    t.channels.map_or("?".into(), |c| c.to_string())
                ),
            ),
            (Some(e), _) => finding(name, Level::Fail, e.clone()),
            (None, false) => finding(name, Level::Fail, "not resolved"),
        });
    }
    out
}

// ---------------------------------------------------------------- Ollama

async fn probe_ollama(cfg: &ollama::OllamaConfig) -> Vec<Finding> {
    let client = match ollama::Client::from_config(cfg) {
        Ok(c) => c,
        Err(e) => return vec![finding("ollama", Level::Fail, format!("{e:#}"))],
    };
    let classify = client
        .has_model(&cfg.classify_model, Purpose::Classify)
        .await
        .map_err(|e| e.to_string());
    let reply = match &classify {
        // The model list is cached: no second request, and no second
        // timeout when the server is down.
        Err(e) => Err(e.clone()),
        Ok(_) => client
            .has_model(&cfg.reply_model, Purpose::Reply)
            .await
            .map_err(|e| e.to_string()),
    };
    ollama_findings(cfg, &classify, &reply)
}

/// Ollama findings from the two model lookups. Pure.
pub fn ollama_findings(
    cfg: &ollama::OllamaConfig,
    classify: &Result<bool, String>,
    reply: &Result<bool, String>,
) -> Vec<Finding> {
    if cfg.backend == ollama::Backend::Openai {
        return vec![finding(
            "ollama",
            Level::Ok,
            format!(
                "{} (openai backend: models are not listed; a missing one shows on first use)",
                cfg.url
            ),
        )];
    }
    if let Err(e) = classify {
        return vec![finding(
            "ollama",
            Level::Warn,
            format!("{e}; classification falls back to keyword rules and replies are not written"),
        )];
    }
    let mut out = vec![finding(
        "ollama",
        Level::Ok,
        format!("{} answers GET /api/tags", cfg.url),
    )];
    for (what, model, res) in [
        ("classify", &cfg.classify_model, classify),
        ("reply", &cfg.reply_model, reply),
    ] {
        let name = format!("ollama {what} model");
        out.push(match res {
            Ok(true) => finding(name, Level::Ok, format!("{model} present")),
            Ok(false) => finding(
                name,
                Level::Warn,
                format!("{model} not pulled (run `ollama pull {model}`)"),
            ),
            Err(e) => finding(name, Level::Warn, e.clone()),
        });
    }
    out
}

// ---------------------------------------------------------------- Planka

/// Whether the credential Planka will use is present (never its value).
fn planka_credential(cfg: &PlankaConfig) -> Result<String, String> {
    if let Some(var) = &cfg.api_key_env {
        return Secret::from_env(var)
            .map(|_| format!("API key from env {var}"))
            .map_err(|e| format!("planka.api_key_env: {e:#}"));
    }
    let user = cfg.username.as_deref().unwrap_or("");
    if let Some(f) = &cfg.password_file {
        return Secret::from_file(f)
            .map(|_| format!("user {user}, password from file {}", f.display()))
            .map_err(|e| format!("planka.password_file: {e:#}"));
    }
    Secret::from_env(&cfg.password_env)
        .map(|_| format!("user {user}, password from env {}", cfg.password_env))
        .map_err(|e| format!("planka.password_env: {e:#}"))
}

async fn probe_planka(cfg: &PlankaConfig) -> Vec<Finding> {
    if !cfg.enabled() {
        return vec![finding(
            "planka",
            Level::Ok,
            "disabled (no planka.username or planka.api_key_env): tasks get no cards",
        )];
    }
    let mut out = Vec::new();
    let url = format!("{}/api/bootstrap", cfg.url.trim().trim_end_matches('/'));
    let probe = async {
        let http =
            crate::http::client(cfg.timeout_secs.get(), true).map_err(|e| format!("{e:#}"))?;
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: unreachable ({e})"))?;
        Ok::<u16, String>(resp.status().as_u16())
    };
    out.push(match probe.await {
        // 404: Planka 1.x has no /api/bootstrap, but it answered.
        Ok(s) if s < 500 => finding(
            "planka",
            Level::Ok,
            format!("{} answers (GET /api/bootstrap: HTTP {s})", cfg.url),
        ),
        Ok(s) => finding(
            "planka",
            Level::Warn,
            format!("GET {url}: HTTP {s}; cards wait in the outbox"),
        ),
        Err(e) => finding(
            "planka",
            Level::Warn,
            format!("{e}; cards wait in the outbox"),
        ),
    });
    out.push(match planka_credential(cfg) {
        Ok(what) => finding(
            "planka credentials",
            Level::Ok,
            format!("{what} (the login itself is tried by the first card)"),
        ),
        Err(e) => finding(
            "planka credentials",
            Level::Fail,
            format!("{e}; no card can be made"),
        ),
    });
    if cfg.boards.is_empty() {
        out.push(finding(
            "planka boards",
            Level::Warn,
            "no planka.boards configured: no team gets cards",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mattermost::TeamStatus;

    fn facts() -> FileFacts {
        FileFacts {
            exists: true,
            symlink: false,
            regular: true,
            foreign_owner: None,
            mode: 0o100600,
            parse_error: None,
            skipped_lines: 0,
            dir: DirState::Writable,
        }
    }

    #[test]
    fn mc_program_judgements() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger.jsonl");
        let exe = dir.path().join("mc-exe");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("mc-plain");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let missing = dir.path().join("nope");
        let cases: Vec<(Vec<String>, Level, String)> = vec![
            (vec![], Level::Ok, "built-in ledger".into()),
            (
                vec![exe.display().to_string(), "{title}".into()],
                Level::Ok,
                format!("command {} (timeout", exe.display()),
            ),
            (
                vec![plain.display().to_string()],
                Level::Fail,
                "is not executable".into(),
            ),
            (
                vec![missing.display().to_string()],
                Level::Fail,
                "program '".to_string() + &missing.display().to_string() + "' not found",
            ),
            (vec!["sh".into()], Level::Ok, "command sh on PATH".into()),
            (
                vec!["no-such-mc-tool-on-path".into()],
                Level::Fail,
                "not found".into(),
            ),
        ];
        for (command, level, want) in cases {
            let cfg = McConfig {
                command: command.clone(),
                ..McConfig::default()
            };
            let f = mc_finding(&cfg, &ledger);
            assert_eq!(f.level, level, "{command:?}: {f:?}");
            assert!(f.reason.contains(&want), "{command:?}: {f:?}");
        }
    }

    #[test]
    fn file_judgements() {
        let p = Path::new("/tmp/s.json");
        let cases: Vec<(FileFacts, Level, &str)> = vec![
            (facts(), Level::Ok, "owner-only"),
            (
                FileFacts {
                    symlink: true,
                    regular: false,
                    ..facts()
                },
                Level::Fail,
                "symlink",
            ),
            (
                FileFacts {
                    regular: false,
                    ..facts()
                },
                Level::Fail,
                "not a regular file",
            ),
            (
                FileFacts {
                    foreign_owner: Some(0),
                    ..facts()
                },
                Level::Fail,
                "uid 0",
            ),
            (
                FileFacts {
                    dir: DirState::NotWritable("/tmp".into()),
                    ..facts()
                },
                Level::Fail,
                "not writable",
            ),
            (
                FileFacts {
                    exists: false,
                    dir: DirState::NotCreatable("/".into()),
                    ..facts()
                },
                Level::Fail,
                "missing",
            ),
            (
                FileFacts {
                    parse_error: Some("EOF".into()),
                    ..facts()
                },
                Level::Warn,
                "moves it aside",
            ),
            (
                FileFacts {
                    skipped_lines: 2,
                    ..facts()
                },
                Level::Warn,
                "2 unreadable",
            ),
            (
                FileFacts {
                    mode: 0o100644,
                    ..facts()
                },
                Level::Warn,
                "mode 0644",
            ),
            (
                FileFacts {
                    exists: false,
                    regular: false,
                    dir: DirState::Creatable("/h/x".into()),
                    ..facts()
                },
                Level::Ok,
                "creates /h/x",
            ),
        ];
        for (f, level, word) in cases {
            let got = judge_file("state file", p, &f);
            assert_eq!(got.level, level, "{f:?} → {got:?}");
            assert!(got.reason.contains(word), "{f:?} → {}", got.reason);
        }
    }

    fn mm() -> MmStatus {
        MmStatus {
            url: "http://mm".into(),
            auth: "http://mm (token from env T)".into(),
            ping_ok: true,
            ping_error: None,
            server_version: Some("10.5.0".into()),
            user: Some("opsbot".into()),
            user_id: Some("u".into()),
            user_error: None,
            teams: vec![TeamStatus {
                name: "basic".into(),
                id: Some("t".into()),
                resolved: true,
                channels: Some(2),
                error: None,
            }],
            requests: 4,
        }
    }

    #[test]
    fn mattermost_judgements() {
        let ok = mm_findings(&mm());
        assert!(ok.iter().all(|f| f.level == Level::Ok), "{ok:?}");
        assert!(ok[0].reason.contains("10.5.0"));
        assert_eq!(ok[2].check, "mattermost team basic");

        let mut down = mm();
        down.ping_ok = false;
        down.ping_error = Some("connection refused".into());
        down.user = None;
        let f = mm_findings(&down);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].level, Level::Fail);

        let mut bad = mm();
        bad.user = None;
        bad.user_error = Some("HTTP 401".into());
        bad.teams[0].resolved = false;
        bad.teams[0].error = Some("not authenticated".into());
        let f = mm_findings(&bad);
        assert_eq!(f[1].level, Level::Fail);
        assert!(f[1].reason.contains("401") && !f[1].reason.contains("secret"));
        assert_eq!(f[2].level, Level::Fail);
    }

    #[test]
    fn ollama_judgements() {
        let cfg = ollama::OllamaConfig::default();
        let f = ollama_findings(&cfg, &Ok(true), &Ok(false));
        assert_eq!(
            f.iter().map(|f| f.level).collect::<Vec<_>>(),
            [Level::Ok, Level::Ok, Level::Warn]
        );
        assert!(
            f[2].reason.contains("ollama pull qwen2.5-coder:32b"),
            "{f:?}"
        );
        let down = Err("GET http://x/api/tags: unreachable".to_string());
        let f = ollama_findings(&cfg, &down, &down);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Warn);
        assert!(f[0].reason.contains("keyword rules"));
    }

    #[test]
    fn render_aligns_and_summarises() {
        let r = Report::new(vec![
            finding("config", Level::Ok, "built-in defaults: valid"),
            finding("mattermost team basic", Level::Fail, "no such team"),
            finding("ollama", Level::Warn, "down"),
        ]);
        assert!(!r.ok);
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ok    config                 built-in defaults: valid"
        );
        assert_eq!(lines[1], "FAIL  mattermost team basic  no such team");
        assert_eq!(lines[3], "PROBLEMS: 1 ok, 1 warn, 1 fail");
        assert!(Report::new(vec![finding("x", Level::Warn, "w")]).ok);
    }

    #[test]
    fn planka_credential_never_shows_the_secret() {
        let cfg = PlankaConfig {
            username: Some("agent".into()),
            password_env: "OPS_AGENT_DOCTOR_TEST_UNSET_VAR".into(),
            ..Default::default()
        };
        let e = planka_credential(&cfg).unwrap_err();
        assert!(e.contains("planka.password_env"), "{e}");
    }
}
