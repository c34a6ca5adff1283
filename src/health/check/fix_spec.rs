//! A check's one fix, as data: what it does and its timings. Decided on and
//! run by [`crate::fix`].

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{CheckConfig, CheckKind};
use crate::time::Secs;

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
    pub(super) fn validate(&self, at: &str, kind: CheckKind) -> Result<()> {
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
