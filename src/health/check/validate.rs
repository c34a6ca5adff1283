//! What a `[[checks]]` table may say, and what the set of them may: every
//! rule names the table (`checks[2] ("disk-home")`) and the key.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};

use super::engine::{engine_words, implicit_engine_check};
use super::{CheckConfig, CheckKind};

/// The longest `restart_window_mins`: a day.
const MAX_RESTART_WINDOW_MINS: u64 = 24 * 60;

const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

impl CheckConfig {
    /// Checks the keys that depend on the kind. `at` names the table in
    /// errors, e.g. `checks[2] ("disk-home")`.
    pub(super) fn validate(&self, at: &str) -> Result<()> {
        if self.name.trim().is_empty() {
            bail!("{at}: name must not be empty");
        }
        if self.timeout_secs.is_zero() {
            bail!("{at}: timeout_secs must be more than 0, got 0");
        }
        self.keys_fit_kind(at)?;
        self.percentages(at)?;
        self.names(at)?;
        self.http(at)?;
        self.counts(at)?;
        if let Some(fix) = &self.fix {
            fix.validate(&format!("{at}: fix"), self.kind)?;
        }
        Ok(())
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

    /// Only the keys of its kind, and the one its kind needs.
    fn keys_fit_kind(&self, at: &str) -> Result<()> {
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
        Ok(())
    }

    /// `warn_pct` and `critical_pct`: percentages, in order.
    fn percentages(&self, at: &str) -> Result<()> {
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
        Ok(())
    }

    /// Names are matched exactly and reach Docker, launchctl and systemctl
    /// as arguments: no blanks around them, no NUL, no option.
    fn names(&self, at: &str) -> Result<()> {
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
            if !crate::health::docker::valid_container_name(c) {
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
        Ok(())
    }

    /// The HTTP keys: an http(s) URL, credentials in one place, a known
    /// method, a valid status range.
    fn http(&self, at: &str) -> Result<()> {
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
        Ok(())
    }

    /// The counts and windows: at least 1, a window at most a day, no
    /// check its own parent.
    fn counts(&self, at: &str) -> Result<()> {
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
pub(super) fn validate_checks(checks: &[CheckConfig]) -> Result<()> {
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
