//! The check inventory: one `[[checks]]` table per check (the Gatus habit:
//! checks are data), its kind and kind-specific keys, its parent, and the one
//! fix the agent may take when it fails ([`FixSpec`]; data here, decided on
//! and run by [`crate::fix`]). [`Checks`] is the validated set as it runs.
//!
//! A new check kind starts here: a [`CheckKind`] variant, its keys in
//! [`CheckConfig::validate`], then a probe beside [`super::run`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::time::Secs;
use engine::effective_checks;
use validate::validate_checks;

mod engine;
mod fix_spec;
mod validate;

pub(crate) use engine::valid_engine_name;
pub use fix_spec::{FixAction, FixSpec};
pub(crate) use validate::check_daemon_name;

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
        let text: String = include_str!("../inventory_example.toml")
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
