//! `ops-agent mm status`: the runbook's "check MM connectivity", answered
//! with facts (ping, version, whose token, each team) plus the cursor age,
//! and an exit code a script can branch on (0 usable, 1 not).

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;

use crate::config::Config;
use crate::mattermost::{self, Client, MmStatus};
use crate::state::RuntimeState;
use crate::store;

use super::status::human_age;

/// What `mm status --json` prints: the server's answers plus the cursor.
#[derive(Debug, Serialize)]
struct MmStatusView {
    /// True when the polling stage would work (ping, token and every team).
    ok: bool,
    /// Why not, in one line, when not ok.
    problem: Option<String>,
    /// The checks; absent when no client could be built (no credentials).
    #[serde(flatten)]
    status: Option<MmStatus>,
    /// The chat cursor from the state file (epoch ms, server clock).
    last_check_ms: Option<i64>,
    /// Age of the cursor in seconds.
    cursor_age_secs: Option<i64>,
}

/// The one-line reason why Mattermost is not usable, or `None` when it is.
/// Pure; the order is the order an operator would fix things in.
fn problem(s: &MmStatus) -> Option<String> {
    if s.ok() {
        return None;
    }
    if let Some(e) = &s.ping_error {
        return Some(format!("Mattermost at {} is not reachable: {e}", s.url));
    }
    if let Some(e) = &s.user_error {
        return Some(format!("the credentials ({}) were refused: {e}", s.auth));
    }
    if s.user.is_none() {
        return Some("the server did not say who the credentials belong to".into());
    }
    let bad: Vec<String> = s
        .teams
        .iter()
        .filter(|t| !t.resolved)
        .map(|t| match &t.error {
            Some(e) => format!("{} ({e})", t.name),
            None => t.name.clone(),
        })
        .collect();
    Some(format!("team(s) not usable: {}", bad.join(", ")))
}

/// The text form: the status table, the cursor, and a verdict line;
/// `url` heads it when no check could run.
fn render(v: &MmStatusView, url: &str) -> String {
    let mut s = match &v.status {
        Some(st) => st.to_string(),
        None => format!("Mattermost  {}\n", crate::scrub::url(url)),
    };
    s += &match (v.last_check_ms, v.cursor_age_secs) {
        (Some(ms), Some(age)) => {
            format!("  cursor    last_check_ms {ms} ({} ago)\n", human_age(age))
        }
        _ => "  cursor    none (first run pending)\n".to_string(),
    };
    s += &match &v.problem {
        None => "ok\n".to_string(),
        Some(p) => format!("NOT OK: {p}\n"),
    };
    s
}

/// Runs `mm status`: exit 0 when usable, 1 when not (the reason is printed).
pub(crate) fn status(config: &Config, json: bool) -> Result<ExitCode> {
    let now_ms = Utc::now().timestamp_millis();
    let rt: RuntimeState = match store::peek(&config.paths.state) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            eprintln!("ops-agent: warning: {e:#}; showing no cursor");
            RuntimeState::default()
        }
    };
    let cursor = rt.last_check_ms;
    let view = match Client::from_config(&config.mattermost, &config.paths.token_cache) {
        Ok(client) => {
            let st = super::runtime()?.block_on(mattermost::status(
                &client,
                &config.mattermost,
                &rt.mattermost,
            ));
            MmStatusView {
                ok: st.ok(),
                problem: problem(&st),
                status: Some(st),
                last_check_ms: cursor,
                cursor_age_secs: cursor.map(|ms| (now_ms - ms) / 1000),
            }
        }
        Err(e) => MmStatusView {
            ok: false,
            problem: Some(format!("Mattermost is not configured: {e:#}")),
            status: None,
            last_check_ms: cursor,
            cursor_age_secs: cursor.map(|ms| (now_ms - ms) / 1000),
        },
    };
    if json {
        super::print_json(&view, "mm status")?;
    } else {
        super::print_text(&render(&view, &config.mattermost.url))?;
    }
    Ok(if view.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FATAL)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mattermost::TeamStatus;

    fn healthy() -> MmStatus {
        MmStatus {
            url: "http://mm".into(),
            auth: "http://mm (token from env X)".into(),
            ping_ok: true,
            ping_error: None,
            server_version: Some("10.5.0".into()),
            user: Some("opsbot".into()),
            user_id: Some("u1".into()),
            user_error: None,
            teams: vec![TeamStatus {
                name: "basic".into(),
                id: Some("t1".into()),
                resolved: true,
                channels: Some(3),
                error: None,
            }],
            requests: 4,
        }
    }

    #[test]
    fn problem_names_the_first_thing_to_fix() {
        assert_eq!(problem(&healthy()), None);

        let mut down = healthy();
        down.ping_ok = false;
        down.ping_error = Some("GET http://mm/api/v4/system/ping: connection refused".into());
        down.user = None;
        let p = problem(&down).unwrap();
        assert!(p.contains("not reachable") && p.contains("refused"), "{p}");

        let mut bad_token = healthy();
        bad_token.user = None;
        bad_token.user_error = Some("HTTP 401".into());
        let p = problem(&bad_token).unwrap();
        assert!(
            p.contains("refused") && p.contains("token from env X"),
            "{p}"
        );

        let mut no_team = healthy();
        no_team.teams[0].resolved = false;
        no_team.teams[0].error = Some("no such team".into());
        let p = problem(&no_team).unwrap();
        assert!(p.contains("basic (no such team)"), "{p}");
    }

    #[test]
    fn render_shows_cursor_and_verdict() {
        let st = healthy();
        let v = MmStatusView {
            ok: true,
            problem: None,
            status: Some(st),
            last_check_ms: Some(1_000),
            cursor_age_secs: Some(90),
        };
        let text = render(&v, "http://mm");
        assert!(text.contains("last_check_ms 1000 (90s ago)"), "{text}");
        assert!(text.ends_with("ok\n"), "{text}");

        let v = MmStatusView {
            ok: false,
            problem: Some("Mattermost is not configured: OPS_AGENT_MM_TOKEN is not set".into()),
            status: None,
            last_check_ms: None,
            cursor_age_secs: None,
        };
        let text = render(&v, "http://mm");
        assert!(text.starts_with("Mattermost  http://mm\n"), "{text}");
        assert!(text.contains("first run pending"), "{text}");
        assert!(
            text.ends_with("NOT OK: Mattermost is not configured: OPS_AGENT_MM_TOKEN is not set\n"),
            "{text}"
        );
    }
}
