//! Issue 22's defects, one test each, against the real server (the names
//! say the item). Each failed before its fix; the report says how.

use serde_json::json;

use crate::real::TIER;
use crate::support::agent::{doctor_line, text};
use crate::support::fault::Fault;
use crate::support::tier;
use crate::{Spec, World};

/// Item 1: An incident that recovers while Planka is down: its card, made once
/// Planka is back, is closed (in "Done") and says what it missed.
#[test]
fn item1_an_incident_that_recovers_while_planka_is_down_gets_a_closed_card() {
    let Some(w) = World::new(Spec {
        alerts: true,
        docker: true,
        ..Spec::default()
    }) else {
        return;
    };
    w.proxy.server().set_fault(Fault::Refuse);
    w.run();
    w.docker
        .as_ref()
        .unwrap()
        .update("web", |c| c.status = "running".into());
    w.run();
    w.proxy.server().clear_fault();
    w.heal(2);
    let rows = w.realm.cards_per_source();
    assert_eq!(rows.len(), 1, "{rows:?}\n{}", w.log());
    let (card, list) = w.realm.card_for(&rows[0].0).unwrap();
    assert_eq!(list, "Done", "made closed\n{}", w.log());
    let c = w.realm.comments_of(&card);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].contains("Recovered at"), "{c:?}");
    assert_eq!(w.realm.labels_of(&card), ["INTERNAL"]);
    tier::ran(TIER);
}

/// Item 1: A correction to ROUTINE while Planka is down: the card is made
/// closed, with the correction as its comment.
#[test]
fn item1_a_correction_while_planka_is_down_gets_a_closed_card() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    w.proxy.server().set_fault(Fault::Refuse);
    let post = w.say("basic", "please move the printer to room 4");
    w.run();
    w.mm.react_as(&w.reply_to(&post), &w.john, "speech_balloon");
    w.say("basic", "thanks");
    w.run();
    w.proxy.server().clear_fault();
    w.heal(2);
    let (card, list) = w.realm.card_for(&post).expect("one card");
    assert_eq!(list, "Done", "{}", w.log());
    let c = w.realm.comments_of(&card);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].contains("relabelled ROUTINE by john"), "{c:?}");
    tier::ran(TIER);
}

/// Item 1: The incident is Planka itself: its card waits for Planka, which is
/// the recovery; the card must not appear open after the incident closed.
#[test]
fn item1_when_the_incident_is_planka_its_card_is_not_left_open() {
    let Some(w) = World::new(Spec {
        alerts: true,
        ..Spec::default()
    }) else {
        return;
    };
    // The agent checks Planka through the same proxy it files cards through.
    let check = format!(
        "[[checks]]\nname = \"planka\"\nkind = \"http\"\nurl = \"{}/api/bootstrap\"\n\
         fail_after = 1\nrecover_after = 1\ntimeout_secs = 2\n",
        w.proxy.url
    );
    let mut sb = w.sb;
    sb.extra.push_str(&check);
    let w = World { sb, ..w };
    w.proxy.server().set_fault(Fault::Refuse);
    w.run();
    w.proxy.server().clear_fault();
    w.run();
    w.heal(2);
    let rows = w.realm.cards_per_source();
    assert_eq!(rows.len(), 1, "{rows:?}\n{}", w.log());
    assert!(rows[0].0.starts_with("planka:planka@"), "{rows:?}");
    let (card, list) = w.realm.card_for(&rows[0].0).unwrap();
    assert_eq!(list, "Done", "{}", w.log());
    assert_eq!(w.realm.comments_of(&card).len(), 1);
    tier::ran(TIER);
}

/// Item 2: A Planka that hangs costs one timeout per cycle, and every post is
/// answered in that cycle.
#[test]
fn item2_a_hung_planka_costs_one_timeout_and_every_reply_goes_out() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    let posts: Vec<String> = (0..10)
        .map(|i| w.say("basic", &format!("please reset the password of user{i}")))
        .collect();
    w.proxy.server().set_fault(Fault::Hang);
    let (out, wall, _) = w.sb.run_measured(&["run-once"]);
    assert!(out.status.success(), "{}", text(&out));
    for p in &posts {
        assert_eq!(w.replies_to(p), 1, "post {p}\n{}", w.log());
    }
    let hung = w.proxy.passed().len();
    assert_eq!(hung, 1, "one request waited its 3 s; the rest were skipped");
    let (outcome, detail) = w.stage("tasks");
    assert_eq!(outcome, "ok", "Planka is optional: {detail}");
    assert!(w.fallback("tasks").is_some(), "the fallback is named");
    assert!(
        detail.contains("skipped for the rest of this cycle"),
        "{detail}"
    );
    println!("frozen Planka: 10/10 replies, 1 Planka request, cycle {wall:?}");
    w.proxy.server().clear_fault();
    w.heal(1);
    assert_eq!(w.realm.cards(), 10);
    tier::ran(TIER);
}

/// Item 3: Cards on a board of 20,000 cards: made (the board's answer is past
/// the 16 MiB the agent read per answer), and later ones without reading
/// the board at all.
#[test]
fn item3_cards_on_a_20000_card_board_without_reading_the_board_per_card() {
    let Some(w) = World::new(Spec {
        // The one read of the board (its lists and labels) takes about 3 s
        // at 20,000 cards on this server.
        planka_lines: "timeout_secs = 10",
        ..Spec::default()
    }) else {
        return;
    };
    let board = w.realm.board("basic").clone();
    crate::real::seed_cards(&w.realm.real, &board, 20_000);
    let first: Vec<String> = (0..2)
        .map(|i| w.say("basic", &format!("please check printer {i}")))
        .collect();
    w.run();
    for p in &first {
        assert!(w.realm.card_for(p).is_some(), "post {p}\n{}", w.log());
    }
    w.proxy.clear();
    let second: Vec<String> = (0..3)
        .map(|i| w.say("basic", &format!("please check scanner {i}")))
        .collect();
    w.run();
    for p in &second {
        assert!(w.realm.card_for(p).is_some(), "post {p}\n{}", w.log());
    }
    let lists = |method: &str| {
        w.proxy
            .passed()
            .iter()
            .filter(|p| p.method == method && p.path.starts_with("/api/lists/"))
            .count()
    };
    assert_eq!(
        w.proxy.count("GET", "/api/boards/"),
        0,
        "the board is not read"
    );
    assert_eq!(lists("GET"), 0, "no search for new cards");
    assert_eq!(lists("POST"), 3, "one create per card");
    assert_eq!(w.realm.cards_on(&board), 20_005);
    tier::ran(TIER);
}

/// Items 4 and 8: A wrong password is one failed login per cycle, and the tasks
/// stage says the reason once.
#[test]
fn item4_a_wrong_password_is_one_login_per_cycle_and_one_reason() {
    let Some(mut w) = World::new(Spec::default()) else {
        return;
    };
    w.sb.env.retain(|(k, _)| k != "OPS_AGENT_PLANKA_PASSWORD");
    w.sb.env.push((
        "OPS_AGENT_PLANKA_PASSWORD".into(),
        "Wrong-Password-1".into(),
    ));
    for i in 0..6 {
        w.say("basic", &format!("please fix the backup job {i}"));
    }
    w.run();
    assert_eq!(
        w.proxy.count("POST", "/api/access-tokens"),
        1,
        "{}",
        w.log()
    );
    let (outcome, detail) = w.stage("tasks");
    assert_eq!(outcome, "ok", "Planka is optional: {detail}");
    assert!(w.fallback("tasks").is_some(), "the fallback is named");
    assert_eq!(
        detail.matches("Invalid credentials").count(),
        1,
        "one reason: {detail}"
    );
    assert!(detail.contains("6 times"), "{detail}");
    w.heal(1);
    assert_eq!(
        w.proxy.count("POST", "/api/access-tokens"),
        2,
        "one per cycle"
    );
    assert_eq!(w.realm.cards(), 0);
    tier::ran(TIER);
}

/// Item 5: A deleted incident card: noted once, then left alone; the stage is
/// not degraded for a day.
#[test]
fn item5_a_deleted_incident_card_is_noted_once_and_left_alone() {
    let Some(w) = World::new(Spec {
        alerts: true,
        docker: true,
        ..Spec::default()
    }) else {
        return;
    };
    w.run();
    let rows = w.realm.cards_per_source();
    let (card, _) = w.realm.card_for(&rows[0].0).unwrap();
    let (status, v) = w
        .realm
        .real
        .admin("DELETE", &format!("/api/cards/{card}"), None);
    assert_eq!(status, 200, "{v}");
    w.docker
        .as_ref()
        .unwrap()
        .update("web", |c| c.status = "running".into());
    w.proxy.clear();
    for _ in 0..3 {
        w.run();
        let (outcome, detail) = w.stage("escalate");
        assert_ne!(outcome, "degraded", "{detail}\n{}", w.log());
        assert_eq!(w.fallback("escalate"), None, "{detail}");
    }
    // One look found it gone; nothing asked after it since.
    let asked = w
        .proxy
        .passed()
        .iter()
        .filter(|p| p.path.contains(&card))
        .count();
    assert_eq!(asked, 1, "{:?}", w.proxy.passed());
    let gone = w.sb.audit_events("card_gone");
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0]["card"], card.as_str());
    assert!(w.sb.state_json()["escalation"]["incidents"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    tier::ran(TIER);
}

/// Item 6: `doctor` leaves no session and accepts no terms; it judges a viewer,
/// and a wrong password is one verdict.
#[test]
fn item6_doctor_is_read_only_and_judges_roles_and_logins() {
    let Some(w) = World::new(Spec {
        boards: &[
            ("basic", "Basic"),
            ("wizard", "Wizard"),
            ("rendrom", "Rendrom"),
            ("riad", "Riad"),
        ],
        ..Spec::default()
    }) else {
        return;
    };
    let doctor = |w: &World| {
        let out = w.sb.run(&["doctor"]);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            text(&out),
        )
    };
    // A fresh user has not accepted the terms: doctor says so, accepts
    // nothing and leaves no session (not even the pending one).
    let (s, t) = doctor(&w);
    assert!(!w.realm.terms_accepted(), "{t}");
    assert!(doctor_line(&s, "planka login").starts_with("warn  "), "{t}");
    assert_eq!(w.realm.sessions(), 0, "{t}");
    w.say("basic", "please label the cables");
    w.run();
    assert!(w.realm.terms_accepted(), "the cycle accepts them");
    assert_eq!(w.realm.sessions(), 1);
    for _ in 0..3 {
        let (s, t) = doctor(&w);
        assert!(doctor_line(&s, "planka login").starts_with("ok    "), "{t}");
        for team in ["basic", "wizard", "rendrom", "riad"] {
            let line = doctor_line(&s, &format!("planka board for {team}"));
            assert!(line.starts_with("ok    "), "{t}");
        }
    }
    assert_eq!(w.realm.sessions(), 1, "doctor reused the cycle's session");
    // Only a viewer of one board: FAIL, naming the fix.
    let riad = w.realm.board("riad").id.clone();
    let rows = w.realm.real.sql(&format!(
        "UPDATE board_membership SET role = 'viewer' WHERE board_id = {riad} AND user_id = {} RETURNING id",
        w.realm.user.1
    ));
    assert_eq!(rows.len(), 1);
    let (s, t) = doctor(&w);
    let line = doctor_line(&s, "planka board for riad");
    assert!(
        line.starts_with("FAIL  ") && line.contains("viewer") && line.contains("editor"),
        "{t}"
    );
    // A wrong password: one login verdict, no line per team.
    let mut sb = w.sb;
    sb.env.retain(|(k, _)| k != "OPS_AGENT_PLANKA_PASSWORD");
    sb.env.push((
        "OPS_AGENT_PLANKA_PASSWORD".into(),
        "Wrong-Password-1".into(),
    ));
    std::fs::remove_file(sb.path("tmp/planka-token.json")).unwrap();
    let out = sb.run(&["doctor"]);
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(doctor_line(&s, "planka login").starts_with("FAIL  "), "{s}");
    let planka_fails = s
        .lines()
        .filter(|l| l.starts_with("FAIL") && l.contains("planka"))
        .count();
    assert_eq!(planka_fails, 1, "{s}");
    assert!(!s.contains("planka board for"), "{s}");
    tier::ran(TIER);
}

/// Item 7: Board and list names match as the docs say: trimmed, any case.
#[test]
fn item7_board_and_list_names_match_trimmed_and_in_any_case() {
    let Some(w) = World::new(Spec {
        boards: &[("basic", "Basic"), ("wizard", "Wizard")],
        names: &[("basic", "basic ", " to do"), ("wizard", "WIZARD", "TO DO")],
        ..Spec::default()
    }) else {
        return;
    };
    let a = w.say("basic", "please water the plants");
    let b = w.say("wizard", "please renew the domain");
    w.run();
    assert!(w.realm.card_for(&a).is_some(), "{}", w.log());
    assert!(w.realm.card_for(&b).is_some(), "{}", w.log());
    tier::ran(TIER);
}

/// Item 8: A viewer's 403 names the board and the fix.
#[test]
fn item8_a_viewers_refusal_names_the_board_and_the_fix() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    let basic = w.realm.board("basic").id.clone();
    w.realm.real.sql(&format!(
        "UPDATE board_membership SET role = 'viewer' WHERE board_id = {basic} AND user_id = {}",
        w.realm.user.1
    ));
    w.say("basic", "please print the report");
    w.run();
    let (outcome, detail) = w.stage("tasks");
    assert_eq!(outcome, "ok", "Planka is optional: {detail}");
    assert!(w.fallback("tasks").is_some(), "the fallback is named");
    assert!(
        detail.contains("board 'Basic'") && detail.contains("make the agent an editor"),
        "{detail}"
    );
    tier::ran(TIER);
}

/// Item 8: A replaced API key is reported as an API key problem.
#[test]
fn item8_a_replaced_api_key_is_named_as_such() {
    let Some(mut w) = World::new(Spec {
        planka_auth: Some("api_key_env = \"OPS_AGENT_PLANKA_API_KEY\""),
        ..Spec::default()
    }) else {
        return;
    };
    let key = |w: &World| {
        w.realm.real.admin_ok(
            "POST",
            &format!("/api/users/{}/api-key", w.realm.user.1),
            json!({}),
        )["included"]["apiKey"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old = key(&w);
    w.sb.env.push(("OPS_AGENT_PLANKA_API_KEY".into(), old));
    w.say("basic", "please check the key");
    w.run();
    assert_eq!(w.realm.cards(), 1, "{}", w.log());
    // The admin makes a new key: the old one stops working.
    key(&w);
    w.say("basic", "please check the key again");
    w.run();
    let (outcome, detail) = w.stage("tasks");
    assert_eq!(outcome, "ok", "Planka is optional: {detail}");
    assert!(w.fallback("tasks").is_some(), "the fallback is named");
    assert!(detail.contains("rejected the API key"), "{detail}");
    assert!(detail.contains("planka.api_key_env"), "{detail}");
    tier::ran(TIER);
}

/// Item 9: Incident cards go on the board `planka.incident_team` names, also
/// with no alert channel.
#[test]
fn item9_incident_cards_go_on_the_configured_board_without_an_alert_channel() {
    let Some(w) = World::new(Spec {
        boards: &[("basic", "Basic"), ("wizard", "Wizard")],
        docker: true,
        planka_lines: "incident_team = \"wizard\"",
        ..Spec::default()
    }) else {
        return;
    };
    w.run();
    let wizard = w.realm.board("wizard").clone();
    assert_eq!(w.realm.cards_on(&wizard), 1, "{}", w.log());
    assert_eq!(w.realm.cards_on(w.realm.board("basic")), 0);
    tier::ran(TIER);
}

/// Item 11: The card says not to edit its marker line away; waiting cards go
/// as soon as Planka answers, and `tasks retry` sends them at once.
#[test]
fn item11_waiting_cards_go_when_planka_answers_or_on_tasks_retry() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    w.proxy.server().set_fault(Fault::Refuse);
    let a = w.say("basic", "please check the fire alarm");
    w.run();
    w.proxy.server().clear_fault();
    // `tasks retry`: now, not at the backoff.
    let out = w.sb.run(&["tasks", "retry"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("card made"),
        "{}",
        text(&out)
    );
    let (card, _) = w.realm.card_for(&a).unwrap();
    let desc = w.realm.real.sql(&format!(
        "SELECT replace(description, E'\\n', ' ') FROM card WHERE id = {card}"
    ));
    assert!(desc[0].contains("keep it"), "{desc:?}");
    // Another outage; Planka answers again: the next cycle sends the
    // waiting card without waiting out its backoff.
    w.proxy.server().set_fault(Fault::Refuse);
    let b = w.say("basic", "please check the sprinklers");
    w.run();
    w.proxy.server().clear_fault();
    w.run();
    assert!(w.realm.card_for(&b).is_some(), "{}", w.log());
    assert_eq!(w.realm.cards(), 2);
    tier::ran(TIER);
}
