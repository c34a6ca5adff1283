//! The check inventory: one `[[checks]]` table per check (the Gatus habit:
//! checks are data), its kind and kind-specific keys, its parent, and the one
//! fix the agent may take when it fails ([`FixSpec`]; data here, decided on
//! and run by [`crate::fix`]). [`Checks`] is the validated set as it runs.
//!
//! A new check kind starts here: a [`CheckKind`] variant, its keys in
//! [`CheckConfig::validate`], then a probe beside [`super::run`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::time::Secs;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The name of the Docker engine check that is added when docker checks
/// exist and none of kind `docker_engine` is configured.
pub(crate) const IMPLICIT_ENGINE_CHECK: &str = "docker-engine";

/// What kind of probe a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Usage of the volume that holds `path`.
    Disk,
    /// Used memory of the host.
    Memory,
    /// A container (`container`): exists, running, healthy.
    Docker,
    /// The Docker engine itself answers; the parent of every docker check so
    /// that "Docker unreachable" is one result, not one per container.
    DockerEngine,
    /// An HTTP endpoint (`url`): status, body, latency.
    Http,
    /// A launchd job (`label`) on macOS.
    Launchd,
    /// A systemd user unit (`unit`) on Linux.
    Systemd,
}

impl CheckKind {
    /// The config spelling of the kind.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckKind::Disk => "disk",
            CheckKind::Memory => "memory",
            CheckKind::Docker => "docker",
            CheckKind::DockerEngine => "docker_engine",
            CheckKind::Http => "http",
            CheckKind::Launchd => "launchd",
            CheckKind::Systemd => "systemd",
        }
    }
}

/// `expect_status`: a code (`200`, `"200"`) or an inclusive range
/// (`"200-399"`). Both spellings are accepted because TOML users write
/// either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExpectStatus {
    /// A single code written as a TOML integer.
    Code(u16),
    /// `"200"` or `"200-399"`.
    Text(String),
}

impl ExpectStatus {
    /// The inclusive range of accepted codes, or an error naming the value.
    pub(crate) fn range(&self) -> Result<(u16, u16)> {
        let valid = |c: u16| (100..=599).contains(&c);
        let (lo, hi) = match self {
            ExpectStatus::Code(c) => (*c, *c),
            ExpectStatus::Text(t) => {
                let t = t.trim();
                let parse = |s: &str| s.trim().parse::<u16>().ok();
                match t.split_once('-') {
                    Some((a, b)) => match (parse(a), parse(b)) {
                        (Some(a), Some(b)) => (a, b),
                        _ => bail!("'{t}' is not a status code or a range like \"200-399\""),
                    },
                    None => match parse(t) {
                        Some(c) => (c, c),
                        None => bail!("'{t}' is not a status code or a range like \"200-399\""),
                    },
                }
            }
        };
        if !valid(lo) || !valid(hi) || lo > hi {
            bail!("{lo}-{hi} is not a range of HTTP status codes (100-599, low first)");
        }
        Ok((lo, hi))
    }
}

/// One `[[checks]]` table. Kind-specific keys are optional here and
/// [`CheckConfig::validate`] rejects keys that do not apply to the kind, so a
/// typo never silently turns a check off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Unique name, used in logs, `health --check NAME` and state.
    pub name: String,
    /// Which probe to run.
    pub(crate) kind: CheckKind,
    /// The service this check belongs to (fixes and incidents are per
    /// service); defaults to the check's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Upper bound for the probe; a probe that takes longer is `unknown`.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: Secs,
    /// disk: a path on the volume to watch (`~` expands to home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    /// disk, memory: percent used at which the result is `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) warn_pct: Option<f64>,
    /// disk, memory: percent used at which the result is `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) critical_pct: Option<f64>,
    /// docker: the container's name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// docker, docker_engine: the engine under `[health.engines]` (absent:
    /// the default engine, `[health] docker_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// docker: restarts by the engine's restart policy allowed within
    /// `restart_window_mins`; more, while it still restarts, is a crash
    /// loop (critical, escalated, never restarted by the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// docker: the window `max_restarts` counts in, in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_window_mins: Option<u64>,
    /// http: the URL to request.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::scrub::serialize_opt_url"
    )]
    pub url: Option<String>,
    /// http: the method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// http: accepted status code or range (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<ExpectStatus>,
    /// http: a substring the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// http: a slower answer is `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_warn_ms: Option<u64>,
    /// http: verify the certificate (default true); false only for an
    /// endpoint the operator knows is self-signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_tls: Option<bool>,
    /// http: an owner-only file holding `user:password`, sent as basic
    /// auth (a password written into `url` would be in the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) basic_auth_file: Option<PathBuf>,
    /// http: an owner-only file holding one header line sent with each
    /// request (`Authorization: Bearer …`, `X-Api-Key: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) header_file: Option<PathBuf>,
    /// launchd: the job label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// systemd: the user unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The check this one depends on: while it fails, this one is reported
    /// as blocked, neither fixed nor counted. Docker checks default to the
    /// Docker engine check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Consecutive failed cycles before the check counts as failing (2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_after: Option<u32>,
    /// Consecutive good cycles before a failing check counts as recovered (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) recover_after: Option<u32>,
    /// The one action the agent may take when this check fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixSpec>,
}

fn default_timeout_secs() -> Secs {
    Secs::new(5)
}

/// The flap guard's default: one failed cycle (already re-probed) is not an
/// incident yet.
const DEFAULT_FAIL_AFTER: u32 = 2;
/// One good cycle ends an incident by default.
const DEFAULT_RECOVER_AFTER: u32 = 1;
/// A container its restart policy restarted more than 3 times in the
/// window is crash-looping: a healthy service is restarted by its policy
/// rarely (a crash, a daemon restart), a broken one about once a minute
/// (dockerd's back-off stops growing at a minute).
const DEFAULT_MAX_RESTARTS: u32 = 3;
/// The window of `max_restarts`: an hour, like the fix budget's.
const DEFAULT_RESTART_WINDOW_MINS: u64 = 60;
/// The longest `restart_window_mins`: a day.
const MAX_RESTART_WINDOW_MINS: u64 = 24 * 60;

const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

impl CheckConfig {
    /// A check with only the common keys set; the kind-specific ones are
    /// filled in by the caller.
    pub fn new(name: &str, kind: CheckKind) -> CheckConfig {
        CheckConfig {
            name: name.to_string(),
            kind,
            service: None,
            timeout_secs: default_timeout_secs(),
            path: None,
            warn_pct: None,
            critical_pct: None,
            container: None,
            engine: None,
            max_restarts: None,
            restart_window_mins: None,
            url: None,
            method: None,
            expect_status: None,
            body_contains: None,
            latency_warn_ms: None,
            verify_tls: None,
            basic_auth_file: None,
            header_file: None,
            label: None,
            unit: None,
            parent: None,
            fail_after: None,
            recover_after: None,
            fix: None,
        }
    }

    /// The service name fixes and incidents are keyed by.
    pub(crate) fn service(&self) -> &str {
        self.service.as_deref().unwrap_or(&self.name)
    }

    /// Consecutive failures before the check is failing.
    pub(crate) fn fail_after(&self) -> u32 {
        self.fail_after.unwrap_or(DEFAULT_FAIL_AFTER)
    }

    /// Consecutive successes before a failing check has recovered.
    pub(crate) fn recover_after(&self) -> u32 {
        self.recover_after.unwrap_or(DEFAULT_RECOVER_AFTER)
    }

    /// Restarts by the engine's restart policy allowed in the window.
    pub(crate) fn max_restarts(&self) -> u32 {
        self.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS)
    }

    /// The window of `max_restarts`, in minutes.
    pub(crate) fn restart_window_mins(&self) -> u64 {
        self.restart_window_mins
            .unwrap_or(DEFAULT_RESTART_WINDOW_MINS)
    }

    /// The probe's time budget.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout_secs.get()
    }

    /// The runbook's system checks: the root volume, the home volume and
    /// memory, with the runbook thresholds (disk 85/90 %, memory 90 %).
    pub(crate) fn defaults() -> Vec<CheckConfig> {
        let base = |name: &str, kind, path: Option<&str>, warn: f64, crit: f64| CheckConfig {
            path: path.map(str::to_string),
            warn_pct: Some(warn),
            critical_pct: Some(crit),
            ..CheckConfig::new(name, kind)
        };
        vec![
            base("disk-root", CheckKind::Disk, Some("/"), 85.0, 90.0),
            base("disk-home", CheckKind::Disk, Some("~"), 85.0, 90.0),
            base("memory", CheckKind::Memory, None, 90.0, 90.0),
        ]
    }

    /// The kind-specific keys that are set, by config name.
    fn specific_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut add = |set: bool, k| {
            if set {
                keys.push(k)
            }
        };
        add(self.path.is_some(), "path");
        add(self.warn_pct.is_some(), "warn_pct");
        add(self.critical_pct.is_some(), "critical_pct");
        add(self.container.is_some(), "container");
        add(self.engine.is_some(), "engine");
        add(self.max_restarts.is_some(), "max_restarts");
        add(self.restart_window_mins.is_some(), "restart_window_mins");
        add(self.url.is_some(), "url");
        add(self.method.is_some(), "method");
        add(self.expect_status.is_some(), "expect_status");
        add(self.body_contains.is_some(), "body_contains");
        add(self.latency_warn_ms.is_some(), "latency_warn_ms");
        add(self.verify_tls.is_some(), "verify_tls");
        add(self.basic_auth_file.is_some(), "basic_auth_file");
        add(self.header_file.is_some(), "header_file");
        add(self.label.is_some(), "label");
        add(self.unit.is_some(), "unit");
        keys
    }

    /// Checks the keys that depend on the kind. `at` names the table in
    /// errors, e.g. `checks[2] ("disk-home")`.
    fn validate(&self, at: &str) -> Result<()> {
        if self.name.trim().is_empty() {
            bail!("{at}: name must not be empty");
        }
        if self.timeout_secs.is_zero() {
            bail!("{at}: timeout_secs must be more than 0, got 0");
        }
        let kind = self.kind.as_str();
        let (allowed, required): (&[&str], Option<&str>) = match self.kind {
            CheckKind::Disk => (&["path", "warn_pct", "critical_pct"], Some("path")),
            CheckKind::Memory => (&["warn_pct", "critical_pct"], None),
            CheckKind::Docker => (
                &["container", "engine", "max_restarts", "restart_window_mins"],
                Some("container"),
            ),
            CheckKind::DockerEngine => (&["engine"], None),
            CheckKind::Http => (
                &[
                    "url",
                    "method",
                    "expect_status",
                    "body_contains",
                    "latency_warn_ms",
                    "verify_tls",
                    "basic_auth_file",
                    "header_file",
                ],
                Some("url"),
            ),
            CheckKind::Launchd => (&["label"], Some("label")),
            CheckKind::Systemd => (&["unit"], Some("unit")),
        };
        for key in self.specific_keys() {
            if !allowed.contains(&key) {
                bail!("{at}: key '{key}' does not apply to kind '{kind}'");
            }
        }
        if let Some(req) = required {
            let value = match req {
                "path" => &self.path,
                "container" => &self.container,
                "url" => &self.url,
                "label" => &self.label,
                _ => &self.unit,
            };
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                bail!("{at}: kind '{kind}' needs a '{req}'");
            }
        }
        for (key, v) in [
            ("warn_pct", self.warn_pct),
            ("critical_pct", self.critical_pct),
        ] {
            if let Some(v) = v {
                if !(0.0..=100.0).contains(&v) {
                    bail!("{at}: {key} must be between 0 and 100, got {v}");
                }
            }
        }
        if let (Some(w), Some(c)) = (self.warn_pct, self.critical_pct) {
            if w > c {
                bail!("{at}: warn_pct ({w}) must not be above critical_pct ({c})");
            }
        }
        for (key, v) in [
            ("name", Some(&self.name)),
            ("service", self.service.as_ref()),
            ("container", self.container.as_ref()),
            ("label", self.label.as_ref()),
            ("unit", self.unit.as_ref()),
            ("parent", self.parent.as_ref()),
        ] {
            if let Some(v) = v.filter(|v| v.trim() != v.as_str()) {
                bail!(
                    "{at}: {key} '{v}' has leading or trailing blanks (names are matched \
                     exactly; remove them)"
                );
            }
        }
        if let Some(c) = &self.container {
            if !super::docker::valid_container_name(c) {
                bail!(
                    "{at}: container '{c}' is not a Docker container name \
                     (letters, digits, '_', '.', '-'; starting with a letter or digit)"
                );
            }
        }
        for (key, v) in [
            ("path", &self.path),
            ("label", &self.label),
            ("unit", &self.unit),
            ("url", &self.url),
        ] {
            if v.as_deref().is_some_and(|v| v.contains('\0')) {
                bail!("{at}: {key} contains a NUL byte");
            }
        }
        for (key, v) in [("label", &self.label), ("unit", &self.unit)] {
            if let Some(v) = v {
                check_daemon_name(&format!("{at}: {key}"), v)?;
            }
        }
        if let Some(url) = &self.url {
            let parsed = reqwest::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            let Some(parsed) = parsed else {
                bail!(
                    "{at}: url '{}' is not an http(s) URL",
                    crate::scrub::url(url)
                );
            };
            let in_url = !parsed.username().is_empty() || parsed.password().is_some();
            if in_url && (self.basic_auth_file.is_some() || self.header_file.is_some()) {
                bail!(
                    "{at}: url carries credentials and so does basic_auth_file or header_file; \
                     keep them in the file only"
                );
            }
        }
        if self.basic_auth_file.is_some() && self.header_file.is_some() {
            bail!("{at}: basic_auth_file and header_file: set one, not both");
        }
        if let Some(m) = &self.method {
            if !HTTP_METHODS.contains(&m.as_str()) {
                bail!(
                    "{at}: method '{m}' is not one of {}",
                    HTTP_METHODS.join(", ")
                );
            }
        }
        if let Some(e) = &self.expect_status {
            if let Err(err) = e.range() {
                bail!("{at}: expect_status: {err}");
            }
        }
        if self.latency_warn_ms == Some(0) {
            bail!("{at}: latency_warn_ms must be at least 1, got 0");
        }
        if self.max_restarts == Some(0) {
            bail!("{at}: max_restarts must be at least 1, got 0");
        }
        if let Some(w) = self.restart_window_mins {
            if w == 0 || w > MAX_RESTART_WINDOW_MINS {
                bail!(
                    "{at}: restart_window_mins must be between 1 and {MAX_RESTART_WINDOW_MINS} \
                     (a day), got {w}"
                );
            }
        }
        for (key, v) in [
            ("fail_after", self.fail_after),
            ("recover_after", self.recover_after),
        ] {
            if v == Some(0) {
                bail!("{at}: {key} must be at least 1, got 0");
            }
        }
        if let Some(p) = &self.parent {
            if p == &self.name {
                bail!("{at}: parent '{p}' is the check itself");
            }
        }
        if let Some(fix) = &self.fix {
            fix.validate(&format!("{at}: fix"), self.kind)?;
        }
        Ok(())
    }
}

/// The longest launchd label or systemd unit name (systemd's own limit).
const MAX_DAEMON_NAME: usize = 255;

/// A launchd label or systemd unit name reaches `launchctl` and
/// `systemctl` as an argument: one starting with `-` would be read as an
/// option, and a name longer than systemd allows never names a unit.
pub(crate) fn check_daemon_name(key: &str, name: &str) -> Result<()> {
    if name.starts_with('-') {
        bail!("{key} '{name}' starts with '-', which the service manager would read as an option");
    }
    if name.len() > MAX_DAEMON_NAME {
        bail!(
            "{key} is {} characters long; a unit name or label has at most {MAX_DAEMON_NAME}",
            name.len()
        );
    }
    Ok(())
}

/// Checks what single tables cannot: unique names, parents that exist, no
/// parent cycles, at most one `docker_engine` check per engine, and the
/// implicit engine checks' names left free. [`Checks::validate`] calls this after
/// each table's own [`CheckConfig::validate`].
fn validate_checks(checks: &[CheckConfig]) -> Result<()> {
    let mut names = BTreeSet::new();
    for (i, c) in checks.iter().enumerate() {
        if !names.insert(c.name.as_str()) {
            bail!(
                "checks[{i}] (\"{}\"): name is used by another check",
                c.name
            );
        }
    }
    // One engine check per engine; the implicit one's name stays free.
    let mut explicit: BTreeMap<Option<&str>, &CheckConfig> = BTreeMap::new();
    for c in checks.iter().filter(|c| c.kind == CheckKind::DockerEngine) {
        let key = c.engine.as_deref();
        if let Some(other) = explicit.insert(key, c) {
            bail!(
                "checks: only one check may have kind 'docker_engine' for {}, found '{}' and '{}'",
                engine_words(key),
                other.name,
                c.name
            );
        }
    }
    let implicit: BTreeSet<String> = checks
        .iter()
        .filter(|c| c.kind == CheckKind::Docker && !explicit.contains_key(&c.engine.as_deref()))
        .map(|c| implicit_engine_check(c.engine.as_deref()))
        .collect();
    if let Some((i, c)) = checks
        .iter()
        .enumerate()
        .find(|(_, c)| implicit.contains(&c.name))
    {
        bail!(
            "checks[{i}] (\"{}\"): the name '{}' is reserved for the implicit Docker engine check; give it kind 'docker_engine' or another name",
            c.name,
            c.name
        );
    }
    let by_name: BTreeMap<&str, &CheckConfig> =
        checks.iter().map(|c| (c.name.as_str(), c)).collect();
    for (i, c) in checks.iter().enumerate() {
        let at = format!("checks[{i}] (\"{}\")", c.name);
        if let Some(p) = &c.parent {
            if !by_name.contains_key(p.as_str()) && !implicit.contains(p) {
                bail!("{at}: parent '{p}' is not the name of a check");
            }
        }
        // Walk up the parents; a chain longer than the list is a cycle.
        let mut seen = vec![c.name.as_str()];
        let mut cur = c;
        while let Some(p) = cur.parent.as_deref() {
            if seen.contains(&p) {
                bail!("{at}: parent chain loops: {} -> {p}", seen.join(" -> "));
            }
            seen.push(p);
            match by_name.get(p) {
                Some(next) => cur = next,
                None => break,
            }
        }
    }
    Ok(())
}

/// The configured checks plus an implicit engine check for each engine
/// that docker checks use without a `docker_engine` check of their own,
/// and every docker check without a parent parented to its engine's
/// check. Idempotent.
fn effective_checks(checks: &[CheckConfig]) -> Vec<CheckConfig> {
    let mut out = checks.to_vec();
    // Each engine the docker checks use, in order of first use.
    let mut used: Vec<Option<String>> = Vec::new();
    for c in checks.iter().filter(|c| c.kind == CheckKind::Docker) {
        if !used.contains(&c.engine) {
            used.push(c.engine.clone());
        }
    }
    let mut parents: Vec<(Option<String>, String)> = Vec::new();
    let mut added = 0;
    for engine in used {
        let name = match out
            .iter()
            .find(|c| c.kind == CheckKind::DockerEngine && c.engine == engine)
        {
            Some(e) => e.name.clone(),
            None => {
                let name = implicit_engine_check(engine.as_deref());
                let mut e = CheckConfig::new(&name, CheckKind::DockerEngine);
                e.service = Some(match &engine {
                    None => "docker".to_string(),
                    Some(n) => format!("docker-{n}"),
                });
                e.engine = engine.clone();
                e.fail_after = Some(1);
                out.insert(added, e);
                added += 1;
                name
            }
        };
        parents.push((engine, name));
    }
    for c in out.iter_mut() {
        if c.kind == CheckKind::Docker && c.parent.is_none() {
            c.parent = parents
                .iter()
                .find(|(e, _)| *e == c.engine)
                .map(|(_, n)| n.clone());
        }
    }
    out
}

/// The implicit engine check's name: `docker-engine` for the default
/// engine, `docker-engine-<name>` for one under `[health.engines]`.
fn implicit_engine_check(engine: Option<&str>) -> String {
    match engine {
        None => IMPLICIT_ENGINE_CHECK.to_string(),
        Some(n) => format!("{IMPLICIT_ENGINE_CHECK}-{n}"),
    }
}

/// `[health.engines]` names: lowercase letters, digits, `_` and `-` (they
/// become part of check and service names).
pub(crate) fn valid_engine_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

fn engine_words(engine: Option<&str>) -> String {
    match engine {
        None => "the default engine".to_string(),
        Some(n) => format!("engine '{n}'"),
    }
}

/// The checks as they run, derived once from the `[[checks]]` tables: the
/// configured ones plus the implicit Docker engine check when docker checks
/// exist without one, every docker check without a parent parented to it.
/// Everything that runs, counts or names checks takes this, so the
/// derivation happens in one place; it reads as the effective slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Checks {
    configured: Vec<CheckConfig>,
    effective: Vec<CheckConfig>,
}

impl Checks {
    /// Derives the effective list (no validation: see [`Checks::validate`]).
    pub fn new(configured: Vec<CheckConfig>) -> Checks {
        let effective = effective_checks(&configured);
        Checks {
            configured,
            effective,
        }
    }

    /// The tables as the operator wrote them (what `config check` prints).
    pub(crate) fn configured(&self) -> &[CheckConfig] {
        &self.configured
    }

    /// Checks each table, then the set (names, parents, engines).
    pub(crate) fn validate(&self) -> Result<()> {
        for (i, c) in self.configured.iter().enumerate() {
            c.validate(&format!("checks[{i}] (\"{}\")", c.name))?;
        }
        validate_checks(&self.configured)
    }

    /// The check with this name.
    pub(crate) fn get(&self, name: &str) -> Option<&CheckConfig> {
        self.effective.iter().find(|c| c.name == name)
    }

    /// The fix of a service: the first check of the service that has one
    /// (a service's HTTP check may fail while the fix lives on its
    /// container).
    pub(crate) fn service_fix(&self, service: &str) -> Option<(&CheckConfig, &FixSpec)> {
        self.effective
            .iter()
            .filter(|c| c.service() == service)
            .find_map(|c| c.fix.as_ref().map(|f| (c, f)))
    }

    /// Every service name, sorted and unique.
    pub(crate) fn services(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .effective
            .iter()
            .map(|c| c.service().to_string())
            .collect();
        set.into_iter().collect()
    }
}

impl std::ops::Deref for Checks {
    type Target = [CheckConfig];
    fn deref(&self) -> &[CheckConfig] {
        &self.effective
    }
}

impl From<Vec<CheckConfig>> for Checks {
    fn from(configured: Vec<CheckConfig>) -> Checks {
        Checks::new(configured)
    }
}

impl Serialize for Checks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.configured.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Checks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Checks, D::Error> {
        Vec::<CheckConfig>::deserialize(d).map(Checks::new)
    }
}

/// What a fix does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixAction {
    /// `POST /containers/{container}/restart` (docker checks).
    RestartContainer,
    /// `launchctl kickstart -k gui/<uid>/<label>` (launchd checks).
    Kickstart,
    /// `systemctl --user restart <unit>` (systemd checks).
    RestartUnit,
    /// The configured `command` argv, run without a shell.
    Command,
}

impl FixAction {
    /// The config spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FixAction::RestartContainer => "restart_container",
            FixAction::Kickstart => "kickstart",
            FixAction::RestartUnit => "restart_unit",
            FixAction::Command => "command",
        }
    }
}

/// A check's `fix = { … }` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixSpec {
    /// The action.
    pub action: FixAction,
    /// For `command`: program and arguments (absolute program path advised;
    /// no shell, no expansion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Wait after the action before re-checking: a restarted service needs
    /// a moment before it answers.
    #[serde(default = "default_settle_secs")]
    pub settle_secs: Secs,
    /// After an attempt the service is left alone this long, so a slow boot
    /// is never restarted again mid-way.
    #[serde(default = "default_start_grace_secs")]
    pub start_grace_secs: Secs,
    /// Upper bound for the action itself (the command, launchctl,
    /// systemctl, or the container's stop + start).
    #[serde(default = "default_action_timeout_secs")]
    pub timeout_secs: Secs,
}

fn default_settle_secs() -> Secs {
    Secs::new(10)
}
fn default_start_grace_secs() -> Secs {
    Secs::new(60)
}
fn default_action_timeout_secs() -> Secs {
    Secs::new(60)
}

impl FixSpec {
    /// A spec with the default timings.
    pub fn new(action: FixAction) -> FixSpec {
        FixSpec {
            action,
            command: None,
            settle_secs: default_settle_secs(),
            start_grace_secs: default_start_grace_secs(),
            timeout_secs: default_action_timeout_secs(),
        }
    }

    /// Checks that the action fits the check's kind and that `command`
    /// comes exactly with the `command` action. `at` names the table.
    fn validate(&self, at: &str, kind: CheckKind) -> Result<()> {
        let action = self.action.as_str();
        let needs = match self.action {
            FixAction::RestartContainer => Some(CheckKind::Docker),
            FixAction::Kickstart => Some(CheckKind::Launchd),
            FixAction::RestartUnit => Some(CheckKind::Systemd),
            FixAction::Command => None,
        };
        if let Some(k) = needs {
            if k != kind {
                bail!(
                    "{at}.action: '{action}' only fits checks of kind '{}', this one is '{}'; use action = \"command\" instead",
                    k.as_str(),
                    kind.as_str()
                );
            }
        }
        match (&self.command, self.action) {
            (None, FixAction::Command) => {
                bail!("{at}: action 'command' needs command = [\"/path/to/program\", \"arg\", …]")
            }
            (Some(c), FixAction::Command) => {
                if c.first().is_none_or(|p| p.trim().is_empty()) {
                    bail!("{at}.command: must start with a program, got {c:?}");
                }
            }
            (Some(_), _) => {
                bail!("{at}: key 'command' only applies to action 'command', not '{action}'")
            }
            (None, _) => {}
        }
        if self.timeout_secs.is_zero() {
            bail!("{at}.timeout_secs must be more than 0, got 0");
        }
        if self.settle_secs > Secs::new(600) {
            bail!(
                "{at}.settle_secs must be at most 600, got {}",
                self.settle_secs
            );
        }
        Ok(())
    }

    /// One line saying what the action does, for logs and dry runs.
    pub(crate) fn describe(&self, check: &CheckConfig) -> String {
        match self.action {
            FixAction::RestartContainer => format!(
                "restart container {}",
                check.container.as_deref().unwrap_or("?")
            ),
            FixAction::Kickstart => format!(
                "launchctl kickstart -k gui/{}/{}",
                crate::process::current_uid(),
                check.label.as_deref().unwrap_or("?")
            ),
            FixAction::RestartUnit => format!(
                "systemctl --user restart {}",
                check.unit.as_deref().unwrap_or("?")
            ),
            FixAction::Command => format!("run {:?}", self.command.clone().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        for (i, c) in CheckConfig::defaults().iter().enumerate() {
            c.validate(&format!("checks[{i}]")).unwrap();
        }
    }

    #[test]
    fn keys_that_do_not_fit_the_kind_are_named() {
        let mut c = CheckConfig::defaults().pop().unwrap();
        c.path = Some("/".into());
        let err = c
            .validate("checks[2] (\"memory\")")
            .unwrap_err()
            .to_string();
        assert!(err.contains("checks[2]") && err.contains("'path'"), "{err}");
        let mut d = CheckConfig::defaults().remove(0);
        d.warn_pct = Some(95.0);
        let err = d.validate("checks[0]").unwrap_err().to_string();
        assert!(err.contains("warn_pct (95)"), "{err}");
    }

    fn parse_checks(toml_text: &str) -> Result<Vec<CheckConfig>> {
        #[derive(Deserialize)]
        struct W {
            checks: Vec<CheckConfig>,
        }
        let w: W = toml::from_str(toml_text)?;
        for (i, c) in w.checks.iter().enumerate() {
            c.validate(&format!("checks[{i}] (\"{}\")", c.name))?;
        }
        validate_checks(&w.checks)?;
        Ok(w.checks)
    }

    #[test]
    fn every_kind_parses_with_its_keys() {
        let checks = parse_checks(
            r#"
[[checks]]
name = "mattermost"
kind = "docker"
container = "mattermost"
fail_after = 3
max_restarts = 5
restart_window_mins = 30
fix = { action = "restart_container", settle_secs = 15 }
[[checks]]
name = "mattermost-http"
kind = "http"
service = "mattermost"
parent = "mattermost"
url = "http://localhost:8065/api/v4/system/ping"
expect_status = "200-299"
body_contains = "OK"
latency_warn_ms = 2000
[[checks]]
name = "planka-http"
kind = "http"
url = "https://planka.local/"
expect_status = 200
verify_tls = false
method = "HEAD"
[[checks]]
name = "ops-agent"
kind = "launchd"
label = "com.john.ops-agent"
fix = { action = "kickstart" }
[[checks]]
name = "backup"
kind = "systemd"
unit = "backup.service"
fix = { action = "command", command = ["/usr/bin/systemctl", "--user", "start", "backup.service"], timeout_secs = 30 }
"#,
        )
        .unwrap();
        assert_eq!(checks[0].fail_after(), 3);
        assert_eq!(
            (checks[0].max_restarts(), checks[0].restart_window_mins()),
            (5, 30)
        );
        assert_eq!(
            (checks[1].max_restarts(), checks[1].restart_window_mins()),
            (DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW_MINS)
        );
        assert_eq!(checks[0].fix.as_ref().unwrap().settle_secs, Secs::new(15));
        assert_eq!(
            checks[0].fix.as_ref().unwrap().start_grace_secs,
            Secs::new(60)
        );
        assert_eq!(checks[1].service(), "mattermost");
        assert_eq!(checks[2].recover_after(), 1);
        let eff = Checks::new(checks.clone());
        assert_eq!(eff[0].name, IMPLICIT_ENGINE_CHECK);
        assert_eq!(eff[1].parent.as_deref(), Some(IMPLICIT_ENGINE_CHECK));
        assert_eq!(eff.configured(), &checks[..]);
        assert_eq!(effective_checks(&eff), eff.to_vec(), "idempotent");
        validate_checks(&eff).unwrap();
    }

    #[test]
    fn validation_names_check_and_key() {
        let table = [
            ("kind = \"docker\"\n", "needs a 'container'"),
            (
                "kind = \"docker\"\ncontainer = \"x\"\nurl = \"http://x/\"\n",
                "key 'url' does not apply to kind 'docker'",
            ),
            (
                "kind = \"http\"\nurl = \"htp:/x\"\n",
                "url 'htp:/x' is not an http(s) URL",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nexpect_status = \"2xx\"\n",
                "expect_status: '2xx'",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nmethod = \"get\"\n",
                "method 'get'",
            ),
            (
                "kind = \"launchd\"\nlabel = \"l\"\nfix = { action = \"restart_unit\" }\n",
                "fix.action: 'restart_unit' only fits checks of kind 'systemd'",
            ),
            (
                "kind = \"memory\"\nfail_after = 0\n",
                "fail_after must be at least 1",
            ),
            (
                "kind = \"memory\"\nparent = \"nope\"\n",
                "parent 'nope' is not the name of a check",
            ),
            (
                "kind = \"memory\"\nparent = \"c\"\n",
                "parent 'c' is the check itself",
            ),
            (
                "kind = \"docker\"\ncontainer = \" web\"\n",
                "container ' web' has leading or trailing blanks",
            ),
            (
                "kind = \"systemd\"\nunit = \"web.service \"\n",
                "unit 'web.service ' has leading or trailing blanks",
            ),
            (
                "kind = \"memory\"\nservice = \"web \"\n",
                "service 'web ' has leading or trailing blanks",
            ),
            (
                "kind = \"docker\"\ncontainer = \"w\"\nmax_restarts = 0\n",
                "max_restarts must be at least 1, got 0",
            ),
            (
                "kind = \"docker\"\ncontainer = \"w\"\nrestart_window_mins = 1441\n",
                "restart_window_mins must be between 1 and 1440 (a day), got 1441",
            ),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nmax_restarts = 5\n",
                "key 'max_restarts' does not apply to kind 'http'",
            ),
        ];
        for (body, needle) in table {
            let text = format!("[[checks]]\nname = \"c\"\n{body}");
            let err = format!("{:#}", parse_checks(&text).unwrap_err());
            assert!(
                err.contains("checks[0] (\"c\")") || err.contains(needle),
                "{err}"
            );
            assert!(err.contains(needle), "{body}: {err}");
        }
        let cyc = "[[checks]]\nname = \"a\"\nkind = \"memory\"\nparent = \"b\"\n[[checks]]\nname = \"b\"\nkind = \"memory\"\nparent = \"a\"\n";
        let err = format!("{:#}", parse_checks(cyc).unwrap_err());
        assert!(err.contains("loops"), "{err}");
        let reserved = "[[checks]]\nname = \"docker-engine\"\nkind = \"memory\"\n[[checks]]\nname = \"w\"\nkind = \"docker\"\ncontainer = \"w\"\n";
        let err = format!("{:#}", parse_checks(reserved).unwrap_err());
        assert!(err.contains("reserved"), "{err}");
    }

    #[test]
    fn each_engine_gets_its_own_engine_check_and_parents() {
        let text = "[[checks]]\nname = \"web\"\nkind = \"docker\"\ncontainer = \"web\"\n\
                    [[checks]]\nname = \"db\"\nkind = \"docker\"\ncontainer = \"db\"\nengine = \"build1\"\n\
                    [[checks]]\nname = \"b1\"\nkind = \"docker_engine\"\nengine = \"build2\"\n\
                    [[checks]]\nname = \"ci\"\nkind = \"docker\"\ncontainer = \"ci\"\nengine = \"build2\"\n";
        let checks = Checks::new(parse_checks(text).unwrap());
        let row = |n: &str| {
            let c = checks.get(n).unwrap();
            (
                c.kind,
                c.engine.clone(),
                c.parent.clone(),
                c.service().to_string(),
            )
        };
        assert_eq!(
            row("docker-engine"),
            (CheckKind::DockerEngine, None, None, "docker".into())
        );
        assert_eq!(
            row("docker-engine-build1"),
            (
                CheckKind::DockerEngine,
                Some("build1".into()),
                None,
                "docker-build1".into()
            )
        );
        assert_eq!(row("web").2.as_deref(), Some("docker-engine"));
        assert_eq!(row("db").2.as_deref(), Some("docker-engine-build1"));
        assert_eq!(
            row("ci").2.as_deref(),
            Some("b1"),
            "the explicit engine check"
        );
        assert!(checks.get("docker-engine-build2").is_none());
        assert_eq!(checks.len(), 6);

        let two = "[[checks]]\nname = \"e1\"\nkind = \"docker_engine\"\nengine = \"x\"\n\
                   [[checks]]\nname = \"e2\"\nkind = \"docker_engine\"\nengine = \"x\"\n";
        let err = format!("{:#}", parse_checks(two).unwrap_err());
        assert!(err.contains("for engine 'x', found 'e1' and 'e2'"), "{err}");
        let reserved = "[[checks]]\nname = \"docker-engine-x\"\nkind = \"memory\"\n\
                        [[checks]]\nname = \"w\"\nkind = \"docker\"\ncontainer = \"w\"\nengine = \"x\"\n";
        let err = format!("{:#}", parse_checks(reserved).unwrap_err());
        assert!(err.contains("'docker-engine-x' is reserved"), "{err}");
        let http =
            "[[checks]]\nname = \"h\"\nkind = \"http\"\nurl = \"http://x/\"\nengine = \"x\"\n";
        let err = format!("{:#}", parse_checks(http).unwrap_err());
        assert!(
            err.contains("key 'engine' does not apply to kind 'http'"),
            "{err}"
        );
    }

    /// The inventory template at the end of `config example` (commented
    /// there); uncommented it must parse and validate.
    #[test]
    fn inventory_template_is_valid() {
        let text: String = include_str!("inventory_example.toml")
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .unwrap_or(l.strip_prefix('#').unwrap_or(l))
            })
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct W {
            checks: Vec<CheckConfig>,
        }
        let w: W = toml::from_str(&text).unwrap();
        let kinds = |k| w.checks.iter().filter(|c| c.kind == k).count();
        assert_eq!(kinds(CheckKind::Docker), 8);
        assert_eq!(kinds(CheckKind::Http), 6);
        assert_eq!(kinds(CheckKind::Launchd) + kinds(CheckKind::Systemd), 4);
        for (i, c) in w.checks.iter().enumerate() {
            c.validate(&format!("checks[{i}]")).unwrap();
        }
        validate_checks(&w.checks).unwrap();
    }

    #[test]
    fn spec_validation_names_the_key() {
        let at = "checks[0] (\"web\"): fix";
        let mut s = FixSpec::new(FixAction::Kickstart);
        let e = s.validate(at, CheckKind::Docker).unwrap_err().to_string();
        assert!(e.contains("fix.action") && e.contains("'launchd'"), "{e}");
        s.action = FixAction::Command;
        let e = s.validate(at, CheckKind::Http).unwrap_err().to_string();
        assert!(e.contains("needs command"), "{e}");
        s.command = Some(vec!["".into()]);
        assert!(s.validate(at, CheckKind::Http).is_err());
        s.command = Some(vec!["/usr/bin/true".into()]);
        s.validate(at, CheckKind::Http).unwrap();
        let mut r = FixSpec::new(FixAction::RestartContainer);
        r.command = Some(vec!["/bin/x".into()]);
        let e = r.validate(at, CheckKind::Docker).unwrap_err().to_string();
        assert!(e.contains("'command' only applies"), "{e}");
    }
}
