//! `[planka]` as `config check` judges it (issue 22 item 10): a username
//! Planka itself refuses (`ops-agent`) is a config error naming the key,
//! the spellings Planka takes pass, and `incident_team` must name a team
//! with a board (item 9).

use crate::support::agent::{text, Sandbox};

fn check(planka: &str) -> std::process::Output {
    let mut sb = Sandbox::new();
    sb.extra =
        format!("[planka]\n{planka}\n[planka.boards.basic]\nboard = \"Basic\"\nlist = \"To Do\"\n");
    sb.run(&["config", "check"])
}

#[test]
fn config_check_refuses_a_username_planka_refuses() {
    let out = check("username = \"ops-agent\"");
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("planka.username: 'ops-agent'"), "{t}");
    for ok in [
        "opsagent",
        "ops_agent",
        "ops.agent",
        "ops-agent@example.com",
    ] {
        let out = check(&format!("username = \"{ok}\""));
        assert!(out.status.success(), "{ok}: {}", text(&out));
    }
}

#[test]
fn config_check_wants_the_incident_team_to_have_a_board() {
    let out = check("username = \"ops_agent\"\nincident_team = \"wizard\"");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("planka.incident_team: 'wizard'"));
    let out = check("username = \"ops_agent\"\nincident_team = \"basic\"");
    assert!(out.status.success(), "{}", text(&out));
}
