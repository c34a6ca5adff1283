//! Deployment as shipped, through the real binary: secrets that reach a
//! scheduled run (a token file, a cycle that says when chat has no token).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::support::agent::{text, Sandbox};
use crate::support::world::{quoted, WorldBuilder};

/// Writes a secret file owner-only, as the docs tell operators to.
fn write_secret(path: &Path, value: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, value.as_bytes()).unwrap();
}

/// The `mattermost` stage of the last cycle: (outcome, detail).
fn mm_stage(sb: &Sandbox) -> (String, String) {
    let v = sb.state_json();
    let stage = v["last_cycle"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "mattermost")
        .cloned()
        .unwrap();
    (
        stage["outcome"].as_str().unwrap().to_string(),
        stage["detail"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn a_cycle_with_teams_named_but_no_token_is_degraded_and_says_why() {
    let mut sb = Sandbox::new();
    sb.extra = "[mattermost]\nurl = \"http://127.0.0.1:9\"\nteams = [\"basic\"]\n".into();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (outcome, detail) = mm_stage(&sb);
    assert_eq!(outcome, "degraded", "{detail}");
    assert!(
        detail.contains("mattermost.token_env") && detail.contains("OPS_AGENT_MM_TOKEN"),
        "{detail}"
    );
    let log = sb.log_text();
    assert!(
        log.contains("cycle degraded in") && log.contains("mattermost=degraded"),
        "{log}"
    );
}

#[test]
fn a_config_without_teams_and_no_token_stays_skipped_not_configured() {
    let sb = Sandbox::new();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (outcome, detail) = mm_stage(&sb);
    assert_eq!(outcome, "skipped", "{detail}");
    assert!(detail.starts_with("not configured:"), "{detail}");
    assert!(sb.log_text().contains("cycle ok in"));
}

#[test]
fn the_token_file_reaches_a_cycle_with_no_token_in_its_environment() {
    let mut b = WorldBuilder::new();
    let (mm, agent) = b.mattermost(&["basic"]);
    let team = mm.add_team("basic", &[&agent.id]);
    mm.add_channel(&team, "ops", &[&agent.id]);
    let token_file = "~/.config/ops-agent/mm-token";
    b.line(
        "mattermost",
        &format!("token_file = {}", quoted(token_file)),
    );
    let mut sb = b.sandbox();
    // The scheduler's bare environment: no OPS_AGENT_MM_TOKEN.
    sb.env.retain(|(k, _)| k != "OPS_AGENT_MM_TOKEN");
    let file = sb.path(".config/ops-agent/mm-token");
    write_secret(&file, &format!("{}\n", agent.token));

    let out = sb.run(&["run-once"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let (outcome, detail) = mm_stage(&sb);
    assert_eq!(outcome, "ok", "{detail}");
    assert!(!t.contains(&agent.token) && !sb.log_text().contains(&agent.token));

    // A token file others can read is refused, and the cycle says so.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = sb.run(&["run-once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (outcome, detail) = mm_stage(&sb);
    assert_eq!(outcome, "degraded", "{detail}");
    assert!(
        detail.contains("mattermost.token_file") && detail.contains("chmod 600"),
        "{detail}"
    );
}
