//! MC, the team's task tracker, reached through a configured external command.
//!
//! The command is an argv template (`[mc] command`), run WITHOUT a shell:
//! chat text becomes a placeholder value inside one argv element and is never
//! split, globbed or interpreted. The child gets a clean environment (PATH,
//! HOME and the variables `pass_env` names), a timeout after which its whole
//! process group is killed, and its stdout must name the new task's id (a
//! JSON field or a regex capture). Anything else is an error carrying the
//! stderr tail, so the operator sees why MC refused.
//!
//! With no command configured, the built-in [`super::ledger`] is MC; see
//! [`McBackend`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::ledger::Ledger;
use super::ledger::{Attempt, AttemptEnd};
use super::Task;
use crate::paths::expand_tilde;
use crate::process::{run_argv, run_argv_watched, tail, CommandError, Failure};
use crate::time::Secs;

/// Placeholders an argv element may contain; each is a [`Task`] field.
const PLACEHOLDERS: &[&str] = &[
    "title",
    "description",
    "priority",
    "tag",
    "owner",
    "source",
    "label",
    "team",
    "channel",
    "author",
    "permalink",
];

/// The shortest `mc.timeout_secs`: no program starts and answers faster.
const MIN_TIMEOUT_SECS: f64 = 0.1;

/// `[mc]`: how to reach MC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McConfig {
    /// argv template, e.g. `["node", "~/system/tools/mc.js", "create",
    /// "--title", "{title}", ...]`. Empty: the built-in ledger is MC.
    pub command: Vec<String>,
    /// The command is killed after this many seconds.
    pub timeout_secs: Secs,
    /// Field of the JSON object on stdout holding the new id; a dotted path
    /// (`task.id`) reaches into nested objects.
    pub id_json_field: String,
    /// Regex whose first capture group is the id, for tools that print
    /// text (`Created task (MC-\d+)`). Tried when stdout is not JSON.
    pub id_regex: Option<String>,
    /// Names of environment variables passed through to the command (its
    /// API token, say); everything else but PATH and HOME is cleared.
    pub pass_env: Vec<String>,
    /// Optional lookup, argv template like `command` (e.g. `["node",
    /// "~/system/tools/mc.js", "find", "--source", "{source}"]`): prints the
    /// id of the task made for `{source}` (read like `command`'s), or
    /// nothing when there is none. Used before any second attempt whose
    /// first may have made the task, so exactly-once holds even when the
    /// agent was killed while the command ran.
    pub find: Vec<String>,
}

impl Default for McConfig {
    fn default() -> Self {
        McConfig {
            command: Vec::new(),
            timeout_secs: Secs::new(30),
            id_json_field: "id".to_string(),
            id_regex: None,
            pass_env: Vec::new(),
            find: Vec::new(),
        }
    }
}

/// Checks an argv template from the config (`key` names it in errors): the
/// program is a plain, non-empty value and every `{placeholder}` is one of
/// `known`, so a typo fails at start-up instead of reaching the command.
pub(crate) fn validate_argv_template(key: &str, argv: &[String], known: &[&str]) -> Result<()> {
    if let Some(first) = argv.first() {
        if first.trim().is_empty() {
            bail!("{key}: the program (first element) is empty");
        }
        if first.contains('{') {
            bail!("{key}: the program '{first}' must not contain a placeholder");
        }
    }
    let ph = Regex::new(r"\{([a-z_]+)\}").expect("static regex");
    for arg in argv {
        for cap in ph.captures_iter(arg) {
            if !known.contains(&&cap[1]) {
                bail!(
                    "{key}: unknown placeholder '{{{}}}' in '{arg}'; known: {}",
                    &cap[1],
                    known.join(", ")
                );
            }
        }
    }
    Ok(())
}

impl McConfig {
    /// Checks the section without I/O; errors name the key and the bad value.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.timeout_secs.as_f64() < MIN_TIMEOUT_SECS {
            bail!(
                "mc.timeout_secs: {} is too short for any program to start and answer; \
                 use at least {MIN_TIMEOUT_SECS} (default 30)",
                self.timeout_secs
            );
        }
        validate_argv_template("mc.command", &self.command, PLACEHOLDERS)?;
        validate_argv_template("mc.find", &self.find, PLACEHOLDERS)?;
        if !self.find.is_empty() && self.command.is_empty() {
            bail!("mc.find: only used with mc.command (the built-in ledger needs no lookup)");
        }
        if !self.find.is_empty() && !self.find.iter().any(|a| a.contains("{source}")) {
            bail!(
                "mc.find: no argument holds {{source}}: the lookup could not say which post's \
                 task it looks for, and every answer would be taken for every post"
            );
        }
        if self.id_json_field.trim().is_empty() {
            bail!("mc.id_json_field: must name a field (default \"id\")");
        }
        if let Some(re) = &self.id_regex {
            let compiled = Regex::new(re)
                .with_context(|| format!("mc.id_regex: '{re}' is not a valid regex"))?;
            if compiled.captures_len() < 2 {
                bail!("mc.id_regex: '{re}' has no capture group for the id");
            }
        }
        for v in &self.pass_env {
            crate::secret::check_env_name("mc.pass_env", v)?;
        }
        Ok(())
    }

    /// True when an external command is configured (else the ledger is MC).
    pub(crate) fn uses_command(&self) -> bool {
        !self.command.is_empty()
    }
}

/// Where tasks go: the external command, or the built-in ledger. Both keep
/// the ledger as the agent's own journal (see [`super::outbox`]).
#[derive(Debug, Clone)]
pub enum McBackend {
    /// An external MC command; the ledger journals what it created.
    Command(McCommand, Ledger),
    /// The built-in ledger is MC.
    Ledger(Ledger),
}

impl McBackend {
    /// Chooses the backend from config; `ledger_path` is `[paths] ledger`
    /// with `~` already expanded (the config loader does that).
    pub fn from_config(cfg: &McConfig, ledger_path: PathBuf) -> Result<McBackend> {
        let ledger = Ledger::new(ledger_path);
        if cfg.uses_command() {
            Ok(McBackend::Command(McCommand::new(cfg)?, ledger))
        } else {
            Ok(McBackend::Ledger(ledger))
        }
    }

    /// The ledger (journal or MC itself).
    pub(crate) fn ledger(&self) -> &Ledger {
        match self {
            McBackend::Command(_, l) | McBackend::Ledger(l) => l,
        }
    }

    /// A short name for logs and status (`command` or `ledger`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            McBackend::Command(..) => "command",
            McBackend::Ledger(_) => "ledger",
        }
    }
}

/// A validated, ready-to-run MC command.
#[derive(Debug, Clone)]
pub struct McCommand {
    template: Vec<String>,
    find: Vec<String>,
    timeout: Duration,
    id_json_field: String,
    id_regex: Option<Regex>,
    pass_env: Vec<String>,
}

impl McCommand {
    /// Validates `cfg` and compiles its regex; `cfg.command` must be non-empty.
    pub fn new(cfg: &McConfig) -> Result<McCommand> {
        cfg.validate()?;
        if cfg.command.is_empty() {
            bail!("mc.command: empty; the built-in ledger is used instead");
        }
        Ok(McCommand {
            template: cfg.command.clone(),
            find: cfg.find.clone(),
            timeout: cfg.timeout_secs.get(),
            id_json_field: cfg.id_json_field.clone(),
            id_regex: cfg.id_regex.as_deref().map(Regex::new).transpose()?,
            pass_env: cfg.pass_env.clone(),
        })
    }

    /// The argv for `task`: `~` expanded in the template, then placeholders
    /// substituted (values inserted literally, never re-scanned).
    fn argv(&self, task: &Task) -> Vec<String> {
        fill(&self.template, task)
    }

    /// Whether `[mc] find` is configured.
    pub(crate) fn has_find(&self) -> bool {
        !self.find.is_empty()
    }

    /// The command's timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The environment variables passed to MC commands (`mc.pass_env`).
    pub(crate) fn pass_env(&self) -> &[String] {
        &self.pass_env
    }

    /// Runs the command for `task` and returns the new task's id from its
    /// stdout; `on_spawn` learns the process group as soon as it runs. A
    /// failure says whether the task may exist anyway ([`CreateError`]).
    pub async fn create(
        &self,
        task: &Task,
        on_spawn: impl FnOnce(u32),
    ) -> Result<String, CreateError> {
        let argv = self.argv(task);
        let run =
            run_argv_watched(&argv, self.timeout, &self.pass_env, "MC command", on_spawn).await;
        let out = run.map_err(
            |e| match e.downcast_ref::<CommandError>().map(|c| c.failure) {
                Some(Failure::TimedOut) => CreateError::Unknown(e),
                _ => CreateError::Failed(e),
            },
        )?;
        // Exit 0 without an id: MC may well have made the task.
        self.id_of(&out, &argv[0]).map_err(CreateError::Unknown)
    }

    /// Runs `[mc] find` for `task`: the id of the task MC has for its
    /// source, `None` when MC has none. Any failure is an error: it cannot
    /// tell.
    pub(crate) async fn find(&self, task: &Task) -> Result<Option<String>> {
        let argv = fill(&self.find, task);
        let out = run_argv(&argv, self.timeout, &self.pass_env, "MC find").await?;
        let printed = out.stdout.trim();
        if printed.is_empty() {
            return Ok(None);
        }
        // A lookup may print the bare id (`MC-12`), as list tools do.
        if !printed.contains(char::is_whitespace) && is_plausible_id(printed) {
            return Ok(Some(printed.to_string()));
        }
        self.id_of(&out, &argv[0]).map(Some)
    }

    fn id_of(&self, out: &crate::process::CommandOutput, program: &str) -> Result<String> {
        if let Some(note) = out.cap_note() {
            tracing::warn!(program = %program, "MC command printed more than the agent keeps: {note}.");
        }
        parse_id(&out.stdout, &self.id_json_field, self.id_regex.as_ref()).with_context(|| {
            format!(
                "MC command {program}: exited 0 but printed no task id (stdout: {:?}; stderr: {}{})",
                tail(out.stdout.as_bytes(), 200),
                if out.stderr.is_empty() {
                    "(empty)"
                } else {
                    &out.stderr
                },
                out.cap_note().map(|n| format!("; {n}")).unwrap_or_default()
            )
        })
    }
}

/// Why the MC command made no id.
#[derive(Debug)]
pub enum CreateError {
    /// It did nothing (could not start, exited non-zero): a retry is safe.
    Failed(anyhow::Error),
    /// It may have made the task (killed at its timeout, exit 0 without an
    /// id): a retry could make a second one.
    Unknown(anyhow::Error),
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::Failed(e) | CreateError::Unknown(e) if f.alternate() => write!(f, "{e:#}"),
            CreateError::Failed(e) | CreateError::Unknown(e) => write!(f, "{e}"),
        }
    }
}

impl CreateError {
    /// The underlying error.
    pub(crate) fn into_error(self) -> anyhow::Error {
        match self {
            CreateError::Failed(e) | CreateError::Unknown(e) => e,
        }
    }
}

/// What to do for a source the MC command has no task for yet, from its
/// earlier attempts (oldest first). Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NextStep {
    /// Run the command (attempt number; `extra`: an earlier attempt may
    /// have made the task, so this one may make a second).
    Create {
        /// The attempt's number.
        attempt: u32,
        /// A possible duplicate, shown as uncertain.
        extra: bool,
    },
    /// Ask `[mc] find` first.
    Find,
    /// An earlier attempt may still be running; try again next cycle.
    Wait(String),
    /// Attempts whose outcome is unknown are used up and there is no
    /// lookup: never run it again; an operator checks MC.
    GiveUp(String),
}

/// Whose attempts [`next_step`] judges, for the words of its answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempted<'a> {
    /// The command: "MC command", "resolve command".
    pub(crate) command: &'a str,
    /// What an attempt that worked did: "made the task".
    pub(crate) work: &'a str,
    /// Whether MC can be asked whether the work is done (`[mc] find`).
    pub(crate) can_ask: bool,
    /// Why it cannot, for the give-up message.
    pub(crate) no_ask: &'a str,
}

/// The MC command's create attempts.
pub(crate) const CREATE: Attempted<'static> = Attempted {
    command: "MC command",
    work: "made the task",
    can_ask: false,
    no_ask: "no [mc] find is configured to ask",
};

/// The next step (see [`NextStep`]). `alive` tells whether an attempt's
/// command still runs; an attempt without a recorded process group counts
/// as running for twice the command's timeout after it started.
pub(crate) fn next_step(
    attempts: &[Attempt],
    who: Attempted<'_>,
    now_ms: i64,
    timeout_ms: i64,
    alive: impl Fn(u32) -> bool,
) -> NextStep {
    let command = who.command;
    let next = attempts.last().map_or(1, |a| a.attempt + 1);
    if let Some(running) = attempts.iter().rev().find(|a| a.outcome.is_none()) {
        let started = running.at.timestamp_millis();
        match running.pgid {
            Some(pgid) if alive(pgid) => {
                return NextStep::Wait(format!(
                    "attempt {} of the {command} (process group {pgid}) is still running",
                    running.attempt
                ))
            }
            None if now_ms - started < 2 * timeout_ms => {
                return NextStep::Wait(format!(
                    "attempt {} of the {command} may still be running",
                    running.attempt
                ))
            }
            _ => {}
        }
    }
    let unknown = attempts
        .iter()
        .filter(|a| a.outcome != Some(AttemptEnd::Failed))
        .count();
    match unknown {
        0 => NextStep::Create {
            attempt: next,
            extra: false,
        },
        _ if who.can_ask => NextStep::Find,
        1 => NextStep::Create {
            attempt: next,
            extra: true,
        },
        n => NextStep::GiveUp(format!(
            "{n} attempts of the {command} ended without telling whether they {}, and {}",
            who.work, who.no_ask
        )),
    }
}

fn fill(template: &[String], task: &Task) -> Vec<String> {
    template
        .iter()
        .map(|t| substitute(&expand_tilde(t).to_string_lossy(), task))
        .collect()
}

/// Replaces `{placeholder}`s in one template element. A value is inserted
/// as is and never scanned again, so a title containing `{source}` stays
/// literal; unknown `{words}` are kept (validation rejects them earlier).
fn substitute(template: &str, task: &Task) -> String {
    substitute_with(template, |name| field(task, name))
}

/// [`substitute`] with any placeholder set: `lookup` gives a name's value,
/// `None` keeps `{name}` literally. Values are never re-scanned.
pub(crate) fn substitute_with<'a>(
    template: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after
            .find('}')
            .and_then(|close| lookup(&after[..close]).map(|v| (v, close)));
        match value {
            Some((v, close)) => {
                push_bounded(&mut out, v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The most of one placeholder's value that goes into an argument. Linux
/// refuses a single argument over 128 KiB (and all of them over ~2 MiB)
/// with E2BIG, which would fail the command every cycle and keep its post
/// pending forever; a long post's description is cut, with a marker.
const MAX_VALUE_BYTES: usize = 32 * 1024;

fn push_bounded(out: &mut String, v: &str) {
    if v.len() <= MAX_VALUE_BYTES {
        out.push_str(v);
        return;
    }
    let mut end = MAX_VALUE_BYTES;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&v[..end]);
    out.push_str(&format!("…[cut: {} of {} bytes]", v.len() - end, v.len()));
}

fn field<'a>(task: &'a Task, name: &str) -> Option<&'a str> {
    Some(match name {
        "title" => &task.title,
        "description" => &task.description,
        "priority" => task.priority.as_str(),
        "tag" => task.tag.as_str(),
        "owner" => &task.owner,
        "source" => &task.source,
        "label" => &task.label,
        "team" => &task.team,
        "channel" => &task.channel,
        "author" => &task.author,
        "permalink" => &task.permalink,
        _ => return None,
    })
}

/// Finds the id in a command's stdout: the JSON object (the whole output,
/// else its last JSON-looking line) at the dotted `json_field`, else the
/// first capture of `regex`. The id must be short and printable, since it
/// is shown in replies and stored in state.
fn parse_id(stdout: &str, json_field: &str, regex: Option<&Regex>) -> Result<String> {
    let mut candidates: Vec<&str> = vec![stdout.trim()];
    candidates.extend(
        stdout
            .lines()
            .rev()
            .map(str::trim)
            .filter(|l| l.starts_with('{')),
    );
    for c in candidates {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(c) {
            let mut cur = &v;
            let mut found = true;
            for part in json_field.split('.') {
                match cur.get(part) {
                    Some(next) => cur = next,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            if found {
                let id = match cur {
                    serde_json::Value::String(s) => s.trim().to_string(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                if is_plausible_id(&id) {
                    return Ok(id);
                }
            }
        }
    }
    if let Some(re) = regex {
        if let Some(id) = re
            .captures(stdout)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().trim().to_string())
        {
            if is_plausible_id(&id) {
                return Ok(id);
            }
        }
    }
    match regex {
        Some(re) => bail!(
            "no JSON field '{json_field}' and no match for /{}/",
            re.as_str()
        ),
        None => bail!("no JSON field '{json_field}' (set mc.id_regex for tools that print text)"),
    }
}

fn is_plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && !id.chars().any(char::is_control)
}

/// For `doctor`: where the program of the template is (absolute,
/// `~`-relative, or the first match on PATH), if anywhere.
pub(crate) fn find_program(cfg: &McConfig) -> Option<PathBuf> {
    let p = expand_tilde(cfg.command.first()?);
    if p.components().count() > 1 {
        return p.is_file().then_some(p);
    }
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(&p))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{Priority, Tag};

    fn task() -> Task {
        Task {
            title: "it's $(rm -rf /) `x` {source}".into(),
            description: "d".into(),
            owner: "ops".into(),
            tag: Tag::Billable,
            priority: Priority::High,
            source: "post1".into(),
            label: "INCIDENT".into(),
            team: "wizard".into(),
            channel: "dev".into(),
            author: "al".into(),
            permalink: "http://x/pl/1".into(),
        }
    }

    #[test]
    fn substitute_table() {
        let t = task();
        for (tpl, want) in [
            ("{title}", "it's $(rm -rf /) `x` {source}"),
            ("--p={priority}/{tag}", "--p=HIGH/BILLABLE"),
            ("{unknown}", "{unknown}"),
            ("{", "{"),
            ("{{source}}", "{post1}"),
            (
                "{owner}{label}{team}{channel}{author}",
                "opsINCIDENTwizarddeval",
            ),
            ("{permalink}", "http://x/pl/1"),
        ] {
            assert_eq!(substitute(tpl, &t), want, "{tpl}");
        }
    }

    #[test]
    fn parse_id_table() {
        let re = Regex::new(r"Created task (MC-\d+)").unwrap();
        for (out, field, want) in [
            (r#"{"id":"MC-123"}"#, "id", Some("MC-123")),
            (r#"{"id":42}"#, "id", Some("42")),
            (
                "log line\n{\"task\":{\"id\":\"MC-9\"}}\n",
                "task.id",
                Some("MC-9"),
            ),
            ("Created task MC-77\n", "id", Some("MC-77")),
            ("garbage", "id", None),
            (r#"{"id":""}"#, "id", None),
            (r#"{"other":1}"#, "id", None),
        ] {
            assert_eq!(
                parse_id(out, field, Some(&re)).ok().as_deref(),
                want,
                "{out}"
            );
        }
        assert!(parse_id("Created task MC-77", "id", None).is_err());
    }

    #[test]
    fn validate_names_the_key() {
        let bad = |c: McConfig| c.validate().unwrap_err().to_string();
        assert!(bad(McConfig {
            command: vec!["mc".into(), "{titel}".into()],
            ..Default::default()
        })
        .contains("{titel}"));
        assert!(bad(McConfig {
            timeout_secs: Secs::new(0),
            ..Default::default()
        })
        .contains("mc.timeout_secs"));
        assert!(bad(toml::from_str("timeout_secs = 0.000001").unwrap())
            .contains("mc.timeout_secs: 0.000001 is too short"));
        assert!(bad(McConfig {
            command: vec!["mc".into(), "{source}".into()],
            find: vec!["mc".into(), "find".into(), "{title}".into()],
            ..Default::default()
        })
        .contains("mc.find: no argument holds {source}"));
        assert!(bad(McConfig {
            id_regex: Some("MC-\\d+".into()),
            ..Default::default()
        })
        .contains("capture group"));
        assert!(bad(McConfig {
            id_regex: Some("(".into()),
            ..Default::default()
        })
        .contains("mc.id_regex"));
        assert!(bad(McConfig {
            pass_env: vec!["A B".into()],
            ..Default::default()
        })
        .contains("mc.pass_env"));
        assert!(bad(McConfig {
            command: vec!["{title}".into()],
            ..Default::default()
        })
        .contains("program"));
        McConfig::default().validate().unwrap();
    }

    #[test]
    fn a_huge_value_is_cut_with_a_marker_so_the_command_always_starts() {
        let big = "é".repeat(100_000);
        let out = substitute_with("--description={d}", |n| (n == "d").then_some(big.as_str()));
        assert!(out.len() < MAX_VALUE_BYTES + 100, "{}", out.len());
        assert!(out.starts_with("--description=éé"));
        assert!(
            out.ends_with("of 200000 bytes]"),
            "{}",
            &out[out.len() - 40..]
        );
        let small = substitute_with("{d}", |_| Some("short"));
        assert_eq!(small, "short");
    }

    #[test]
    fn next_step_table() {
        use chrono::TimeZone;
        let t0 = chrono::Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let now = t0.timestamp_millis() + 600_000;
        let timeout = 30_000;
        let a = |n: u32, pgid: Option<u32>, outcome: Option<AttemptEnd>, mins_ago: i64| Attempt {
            attempt: n,
            at: chrono::DateTime::from_timestamp_millis(now - mins_ago * 60_000).unwrap(),
            pgid,
            outcome,
        };
        let (failed, unknown) = (Some(AttemptEnd::Failed), Some(AttemptEnd::Unknown));
        let create = |attempt, extra| NextStep::Create { attempt, extra };
        type Row = (&'static str, Vec<Attempt>, bool, NextStep);
        let table: Vec<Row> = vec![
            ("first attempt", vec![], false, create(1, false)),
            ("after clean failures", vec![a(1, Some(9), failed, 9), a(2, Some(9), failed, 4)], false, create(3, false)),
            ("killed mid-command, group alive", vec![a(1, Some(7), None, 1)], false, NextStep::Wait("attempt 1 of the MC command (process group 7) is still running".into())),
            ("killed before the group was recorded, recently", vec![a(1, None, None, 0)], true, NextStep::Wait("attempt 1 of the MC command may still be running".into())),
            ("killed mid-command, group gone, with a lookup", vec![a(1, Some(8), None, 9)], true, NextStep::Find),
            ("one unknown, no lookup: one extra attempt", vec![a(1, Some(8), unknown, 9)], false, create(2, true)),
            ("an old group-less attempt counts as unknown", vec![a(1, None, None, 9)], false, create(2, true)),
            ("unknown then a clean failure: still uncertain", vec![a(1, Some(8), unknown, 9), a(2, Some(8), failed, 5)], false, create(3, true)),
            ("two unknowns, no lookup: give up", vec![a(1, Some(8), unknown, 9), a(2, Some(8), unknown, 5)], false, NextStep::GiveUp("2 attempts of the MC command ended without telling whether they made the task, and no [mc] find is configured to ask".into())),
            ("two unknowns with a lookup: ask", vec![a(1, Some(8), unknown, 9), a(2, Some(8), unknown, 5)], true, NextStep::Find),
        ];
        for (name, attempts, has_find, want) in table {
            let who = Attempted {
                can_ask: has_find,
                ..CREATE
            };
            let got = next_step(&attempts, who, now, timeout, |pgid| pgid == 7);
            assert_eq!(got, want, "{name}");
        }
    }
}
