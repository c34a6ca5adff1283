//! The dependencies: MC (the command's program, or the ledger), and
//! Mattermost, Ollama and Planka probed with their configured timeouts.
//! Judging what a probe found ([`mm_findings`], [`ollama_findings`]) is
//! pure and table-tested.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::files::{dir_state, DirState};
use super::{finding, Finding, Level};
use crate::config::Config;
use crate::mattermost::{self, Client as MmClient, MmState, MmStatus};
use crate::ollama::{self, Purpose};
use crate::paths::expand_tilde;
use crate::tasks::mc::{self, McConfig};
use crate::tasks::planka::PlankaConfig;

/// Tasks the MC command could not confirm: an operator checks MC. Those
/// dropped from the state's list count too.
pub(super) fn uncertain_finding(tasks: &crate::tasks::outbox::TaskState) -> Option<Finding> {
    let first = tasks.uncertain.last()?;
    let dropped = match tasks.uncertain_dropped {
        0 => String::new(),
        n => format!(", the {n} oldest no longer listed (the log names each)"),
    };
    Some(finding(
        "mc uncertain tasks",
        Level::Warn,
        format!(
            "{} task(s) to check in MC by hand{dropped} (newest: {} \"{}\": {}); see `ops-agent status`",
            tasks.uncertain_total(),
            first.source,
            first.title,
            first.why
        ),
    ))
}

pub(super) fn mc_finding(cfg: &McConfig, ledger_path: &Path) -> Finding {
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

pub(super) async fn probe_mattermost(config: &Config, state: &MmState) -> Vec<Finding> {
    match MmClient::from_config(&config.mattermost, &config.paths.token_cache) {
        Ok(client) => mm_findings(&mattermost::status(&client, &config.mattermost, state).await),
        Err(e) => vec![unusable_credentials(config.mattermost.required, &e)],
    }
}

/// No Mattermost client: a failure once the config names teams (every
/// cycle then runs degraded), only a warning on a machine where nothing is
/// configured yet. Pure.
fn unusable_credentials(required: bool, e: &anyhow::Error) -> Finding {
    if required {
        finding(
            "mattermost",
            Level::Fail,
            format!("no usable credentials: {e:#}; every cycle runs without chat"),
        )
    } else {
        finding(
            "mattermost",
            Level::Warn,
            format!(
                "not configured: {e:#}; cycles skip chat (set mattermost.teams and token_file)"
            ),
        )
    }
}

/// Mattermost findings from a status check. Pure.
fn mm_findings(s: &MmStatus) -> Vec<Finding> {
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

pub(super) async fn probe_ollama(cfg: &ollama::OllamaConfig) -> Vec<Finding> {
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
fn ollama_findings(
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
            format!("{e}; classification falls back to the rules and the model, and replies are not written"),
        )];
    }
    let mut out = vec![finding(
        "ollama",
        Level::Ok,
        format!("{} answers GET /api/tags", crate::scrub::url(&cfg.url)),
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
pub(super) fn planka_credential(cfg: &PlankaConfig) -> Result<String, String> {
    let Some(secret) = cfg.credential() else {
        return Err("planka is not enabled".into());
    };
    let user = match (cfg.api_key(), cfg.username.as_deref()) {
        (None, Some(u)) => format!("user {u}, password from "),
        _ => "API key from ".to_string(),
    };
    secret
        .read()
        .map(|_| format!("{user}{}", secret.describe()))
        .map_err(|e| format!("{e:#}"))
}

/// Planka as a cycle would use it, read-only: the server answers, the
/// credential is there, one login verdict, then each team's board (found,
/// its list there, the agent an editor). It reuses the cycle's cached token
/// and logs out any session it had to open; it never accepts the terms.
pub(super) async fn probe_planka(
    cfg: &PlankaConfig,
    cache: &std::path::Path,
    alert_channel: &str,
) -> Vec<Finding> {
    if !cfg.enabled() {
        return vec![finding(
            "planka",
            Level::Ok,
            "disabled (no planka.username or API key): tasks get no cards",
        )];
    }
    let mut out = Vec::new();
    let url = format!("{}/api/bootstrap", cfg.url.trim().trim_end_matches('/'));
    let shown = crate::scrub::url(&url);
    let probe = async {
        let http =
            crate::http::client(cfg.timeout_secs.get(), true).map_err(|e| format!("{e:#}"))?;
        let resp = http.get(&url).send().await.map_err(|e| {
            format!(
                "GET {shown}: unreachable ({})",
                crate::scrub::text(&e.to_string())
            )
        })?;
        Ok::<u16, String>(resp.status().as_u16())
    };
    out.push(match probe.await {
        // 404: Planka 1.x has no /api/bootstrap, but it answered.
        Ok(s) if s < 500 => finding(
            "planka",
            Level::Ok,
            format!(
                "{} answers (GET /api/bootstrap: HTTP {s})",
                crate::scrub::url(&cfg.url)
            ),
        ),
        Ok(s) => finding(
            "planka",
            Level::Warn,
            format!("GET {shown}: HTTP {s}; cards wait in the outbox"),
        ),
        Err(e) => finding(
            "planka",
            Level::Warn,
            format!("{e}; cards wait in the outbox"),
        ),
    });
    let reachable = out.iter().all(|f| f.level == Level::Ok);
    let credential = planka_credential(cfg);
    out.push(match &credential {
        Ok(what) => finding("planka credentials", Level::Ok, what.clone()),
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
    } else if let Some(f) = incident_board_finding(cfg, alert_channel) {
        out.push(f);
    }
    if !reachable || credential.is_err() {
        return out;
    }
    let client = match crate::tasks::planka::PlankaClient::read_only(cfg, Some(cache.into())) {
        Ok(c) => c,
        Err(e) => {
            out.push(finding("planka login", Level::Fail, format!("{e:#}")));
            return out;
        }
    };
    // One verdict on the login: a wrong password is one line, not one per
    // team, and the boards are read only with a session that works.
    match client.whoami().await {
        Ok(who) => {
            out.push(finding("planka login", Level::Ok, who));
            for team in cfg.boards.keys() {
                let name = format!("planka board for {team}");
                out.push(match client.check_team(team).await {
                    Ok(what) => finding(name, Level::Ok, what),
                    Err(e) => finding(
                        name,
                        Level::Fail,
                        format!("{e:#}; cards for {team} wait in the outbox"),
                    ),
                });
            }
        }
        Err(e) => out.push(
            match e.downcast_ref::<crate::tasks::planka::TermsPending>() {
                Some(t) if t.accept_terms => finding("planka login", Level::Warn, format!("{e:#}")),
                _ => finding(
                    "planka login",
                    Level::Fail,
                    format!("{e:#}; no card can be made"),
                ),
            },
        ),
    }
    client.close().await;
    out
}

/// Which board incident cards go on: `planka.incident_team`, else the alert
/// channel's team; a warning when neither names a team with a board.
fn incident_board_finding(cfg: &PlankaConfig, alert_channel: &str) -> Option<Finding> {
    let incident = cfg.incident_team.trim();
    let alert_team = alert_channel
        .split_once('/')
        .map(|(t, _)| t.trim())
        .filter(|t| !t.is_empty());
    let (team, why) = match (incident.is_empty(), alert_team) {
        (false, _) => (incident, "planka.incident_team"),
        (true, Some(t)) => (t, "the team of mattermost.alert_channel"),
        (true, None) => {
            return Some(finding(
                "planka incident cards",
                Level::Warn,
                "no mattermost.alert_channel and no planka.incident_team: incidents get a task but no card",
            ))
        }
    };
    Some(if cfg.boards.contains_key(team) {
        finding(
            "planka incident cards",
            Level::Ok,
            format!("on the board of {team} ({why})"),
        )
    } else {
        finding(
            "planka incident cards",
            Level::Warn,
            format!("{why} is '{team}', which has no [planka.boards.{team}]: incidents get no card; set planka.incident_team"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mattermost::TeamStatus;

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
        assert!(f[0]
            .reason
            .contains("falls back to the rules and the model"));
    }

    #[test]
    fn missing_mattermost_credentials_fail_only_when_chat_is_required() {
        let e =
            anyhow::anyhow!("environment variable X is not set").context("mattermost.token_env");
        let f = unusable_credentials(false, &e);
        assert_eq!(f.level, Level::Warn);
        assert!(
            f.reason.starts_with("not configured: mattermost.token_env"),
            "{f:?}"
        );
        let f = unusable_credentials(true, &e);
        assert_eq!(f.level, Level::Fail);
        assert!(f.reason.contains("X is not set"), "{f:?}");
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
