//! The card flows of the suite against the real server, counted in its
//! database: one card per task on the right board with the right label
//! over repeated runs, an outage and the outbox, a correction's comment
//! and move, an incident's recovery comment and move, kill points in each
//! flow, revoked sessions and the API key.

use serde_json::json;

use crate::real::TIER;
use crate::support::fault::{Fault, Match};
use crate::support::tier;
use crate::{Spec, World};

/// Every source in `posts` has exactly one card in the realm.
fn one_card_each(w: &World, posts: &[String]) {
    let per_source = w.realm.cards_per_source();
    for p in posts {
        let n = per_source
            .iter()
            .find(|(s, _)| s == p)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        assert_eq!(n, 1, "post {p}: {per_source:?}\n{}", w.log());
    }
}

#[test]
fn seventeen_tasks_become_seventeen_cards_on_their_boards_over_repeated_runs() {
    let boards = [
        ("basic", "Basic"),
        ("wizard", "Wizard"),
        ("rendrom", "Rendrom"),
        ("riad", "Riad"),
    ];
    let Some(w) = World::new(Spec {
        boards: &boards,
        ..Spec::default()
    }) else {
        return;
    };
    let work = [
        ("basic", "please rotate the backup keys"),
        ("basic", "the vpn is down for the office"),
        ("basic", "add a dns record for status page"),
        ("basic", "renew the tls certificate of the wiki"),
        ("basic", "clean up the old ci runners"),
        ("wizard", "please deploy the new checkout"),
        ("wizard", "the shop is down, 502 everywhere"),
        ("wizard", "add the redirect from /old to /new"),
        ("wizard", "bump the php version on staging"),
        ("rendrom", "set up the staging database"),
        ("rendrom", "rendering outage on the product pages"),
        ("rendrom", "export the orders of march"),
        ("rendrom", "add a cron for the sitemap"),
        ("riad", "migrate the mailboxes"),
        ("riad", "the booking form is down"),
        ("riad", "raise the upload limit to 50 MB"),
        ("riad", "add monitoring for the api"),
    ];
    let mut posts = Vec::new();
    for (team, text) in work {
        posts.push(w.say(team, text));
    }
    w.say("basic", "thanks, lunch at 1?");
    w.run();
    // Repeated runs, with new chat that is not work and nothing to retry.
    for i in 0..2 {
        w.say("wizard", &format!("thanks {i}"));
        w.run();
    }
    assert_eq!(w.realm.cards(), 17, "{}", w.log());
    one_card_each(&w, &posts);
    for (team, n) in [("basic", 5), ("wizard", 4), ("rendrom", 4), ("riad", 4)] {
        let board = w.realm.board(team);
        assert_eq!(w.realm.cards_on(board), n, "{team}");
        // basic is an internal team; the others are billed.
        let (tag, other) = if team == "basic" {
            ("INTERNAL", "BILLABLE")
        } else {
            ("BILLABLE", "INTERNAL")
        };
        assert_eq!(
            w.realm.labels_named(board, tag),
            1,
            "{team}: one {tag} label"
        );
        assert_eq!(w.realm.labels_named(board, other), 0, "{team}");
    }
    for (p, (team, _)) in posts.iter().zip(work) {
        let (card, list) = w.realm.card_for(p).unwrap();
        assert_eq!(list, "To Do");
        let want = if team == "basic" {
            "INTERNAL"
        } else {
            "BILLABLE"
        };
        assert_eq!(w.realm.labels_of(&card), [want], "post {p}");
        assert!(w.realm.comments_of(&card).is_empty(), "post {p}");
        assert_eq!(w.replies_to(p), 1, "post {p}");
    }
    tier::ran(TIER);
}

#[test]
fn planka_down_degrades_with_the_reason_then_one_card_per_task() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    w.proxy.server().set_fault(Fault::Refuse);
    let posts: Vec<String> = (0..5)
        .map(|i| w.say("basic", &format!("please restart worker {i}")))
        .collect();
    w.run();
    let (outcome, detail) = w.stage("tasks");
    assert_eq!(outcome, "ok", "Planka is optional: {detail}");
    assert!(w.fallback("tasks").is_some(), "the fallback is named");
    assert!(detail.contains("Planka unreachable"), "{detail}");
    for p in &posts {
        assert_eq!(w.replies_to(p), 1, "the answer does not wait for the card");
    }
    assert_eq!(w.realm.cards(), 0);
    w.proxy.server().clear_fault();
    w.heal(2);
    assert_eq!(w.realm.cards(), 5, "{}", w.log());
    one_card_each(&w, &posts);
    assert_eq!(w.stage("tasks").0, "skipped", "nothing left to file");
    tier::ran(TIER);
}

#[test]
fn corrections_comment_once_and_move_the_closed_card_to_done() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    let task = w.say("basic", "please rename the shared drive");
    let incident = w.say("basic", "the wiki is down");
    w.run();
    let (task_card, _) = w.realm.card_for(&task).unwrap();
    let (inc_card, _) = w.realm.card_for(&incident).unwrap();
    w.mm.react_as(&w.reply_to(&task), &w.john, "speech_balloon");
    w.mm.react_as(&w.reply_to(&incident), &w.john, "memo");
    w.say("basic", "thanks");
    w.run();
    for _ in 0..2 {
        w.say("basic", "thanks again");
        w.run();
    }
    let c = w.realm.comments_of(&task_card);
    assert_eq!(c.len(), 1, "{c:?}\n{}", w.log());
    assert!(c[0].contains("relabelled ROUTINE by john"), "{c:?}");
    assert_eq!(w.realm.card_for(&task).unwrap().1, "Done");
    let c = w.realm.comments_of(&inc_card);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(
        c[0].contains("Relabelled TASK by john: priority NORMAL"),
        "{c:?}"
    );
    assert_eq!(w.realm.card_for(&incident).unwrap().1, "To Do");
    assert_eq!(w.realm.cards(), 2);
    tier::ran(TIER);
}

#[test]
fn an_incident_card_is_commented_once_and_moved_to_done_on_recovery() {
    let Some(w) = World::new(Spec {
        alerts: true,
        docker: true,
        ..Spec::default()
    }) else {
        return;
    };
    w.run();
    let rows = w.realm.cards_per_source();
    assert_eq!(rows.len(), 1, "one incident card: {rows:?}\n{}", w.log());
    let key = rows[0].0.clone();
    assert!(key.starts_with("web:web@"), "{key}");
    let (card, list) = w.realm.card_for(&key).unwrap();
    assert_eq!(list, "To Do");
    assert_eq!(w.realm.labels_of(&card), ["INTERNAL"]);
    w.docker
        .as_ref()
        .unwrap()
        .update("web", |c| c.status = "running".into());
    for _ in 0..3 {
        w.run();
    }
    let c = w.realm.comments_of(&card);
    assert_eq!(c.len(), 1, "{c:?}\n{}", w.log());
    assert!(c[0].starts_with("Recovered at"), "{c:?}");
    assert_eq!(w.realm.card_for(&key).unwrap().1, "Done");
    assert_eq!(w.realm.cards(), 1);
    tier::ran(TIER);
}

/// Kills the agent while Planka makes each card (the create served and its
/// answer held: the card exists, the agent never hears of it), while it
/// labels a card, and before a create is served; each later cycle must
/// find what the killed one made.
#[test]
fn killed_during_card_creation__no_duplicate_card_or_label() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    let posts: Vec<String> = (0..16)
        .map(|i| w.say("basic", &format!("please archive project {i}")))
        .collect();
    let mut kills = 0;
    for round in 0..48 {
        let hold = match round % 3 {
            0 => w.proxy.server().hold_answer(Match::post("/cards")),
            1 => w.proxy.server().hold_answer(Match::post("/card-labels")),
            _ => w.proxy.server().hold(Match::post("/cards")),
        };
        let landed = w.kill_at(&hold);
        drop(hold);
        if !landed {
            // Nothing left to make: every card exists.
            break;
        }
        kills += 1;
        if w.sb.state().exists() {
            w.sb.make_outbox_due();
        }
    }
    // At least one kill while each card was made (up to three: its
    // create, its label, a dropped create).
    assert!(
        kills >= posts.len(),
        "{kills} kills landed mid-cycle\n{}",
        w.log()
    );
    w.heal(3);
    assert_eq!(w.realm.cards(), 16, "{}", w.log());
    one_card_each(&w, &posts);
    for p in &posts {
        let (card, _) = w.realm.card_for(p).unwrap();
        assert_eq!(w.realm.labels_of(&card), ["INTERNAL"], "post {p}");
        assert_eq!(w.replies_to(p), 1, "post {p}");
    }
    assert_eq!(w.realm.labels_named(w.realm.board("basic"), "INTERNAL"), 1);
    println!("card creation: {kills} SIGKILLs, 0 duplicates");
    tier::ran(TIER);
}

/// Kills during the incident flow of five services: each card's create
/// and label, then each recovery comment and move to done, committed on
/// the server and not yet recorded by the agent (20 kills).
#[test]
fn killed_during_the_incident_flow__one_card_one_comment_one_move_each() {
    let services = ["web", "api", "db", "cache", "queue"];
    let checks: String = services[1..]
        .iter()
        .map(|s| {
            format!(
                "[[checks]]\nname = \"{s}\"\nkind = \"docker\"\ncontainer = \"{s}\"\n\
                 fail_after = 1\nrecover_after = 1\n"
            )
        })
        .collect();
    let Some(w) = World::new(Spec {
        alerts: true,
        docker: true,
        extra: &checks,
        ..Spec::default()
    }) else {
        return;
    };
    let docker = w.docker.as_ref().unwrap();
    for s in &services[1..] {
        docker.add(crate::support::docker::FakeContainer::exited(s));
    }
    let mut kills = 0;
    for round in 0..10 {
        let m = if round % 2 == 0 {
            Match::post("/cards")
        } else {
            Match::post("/card-labels")
        };
        let hold = w.proxy.server().hold_answer(m);
        kills += usize::from(w.kill_at(&hold));
        drop(hold);
        // Incident keys carry the second they opened.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    w.heal(2);
    for s in services {
        docker.update(s, |c| c.status = "running".into());
    }
    for round in 0..10 {
        let m = if round % 2 == 0 {
            Match::post("/comments")
        } else {
            Match::method("PATCH")
        };
        let hold = w.proxy.server().hold_answer(m);
        kills += usize::from(w.kill_at(&hold));
        drop(hold);
    }
    w.heal(3);
    assert!(kills >= 15, "{kills} kills landed\n{}", w.log());
    let rows = w.realm.cards_per_source();
    assert_eq!(rows.len(), 5, "{rows:?}\n{}", w.log());
    for (key, n) in &rows {
        assert_eq!(*n, 1, "one card for {key}");
        let (card, list) = w.realm.card_for(key).unwrap();
        assert_eq!(w.realm.labels_of(&card), ["INTERNAL"], "{key}");
        assert_eq!(w.realm.comments_of(&card).len(), 1, "{key}\n{}", w.log());
        assert_eq!(list, "Done", "{key}");
    }
    let alerts =
        w.mm.posts()
            .iter()
            .filter(|p| Some(&p.channel_id) == w.alerts.as_ref() && p.root_id.is_empty())
            .count();
    assert_eq!(alerts, 5, "one alert per incident");
    println!("incident flow: {kills} SIGKILLs, 0 duplicates");
    tier::ran(TIER);
}

/// Kills while corrections tell the cards (each comment committed, the
/// agent killed before it hears so) and move them (8 kills).
#[test]
fn killed_during_corrections__one_comment_one_move_each() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    let posts: Vec<String> = (0..4)
        .map(|i| w.say("basic", &format!("please order new toner for printer {i}")))
        .collect();
    w.run();
    for p in &posts {
        w.mm.react_as(&w.reply_to(p), &w.john, "speech_balloon");
    }
    let mut kills = 0;
    for round in 0..8 {
        let m = if round % 2 == 0 {
            Match::post("/comments")
        } else {
            Match::method("PATCH")
        };
        w.say("basic", &format!("thanks {round}"));
        let hold = w.proxy.server().hold_answer(m);
        kills += usize::from(w.kill_at(&hold));
        drop(hold);
    }
    for i in 0..3 {
        w.say("basic", &format!("thanks again {i}"));
        w.run();
    }
    assert!(kills >= 6, "{kills}\n{}", w.log());
    for p in &posts {
        let (card, list) = w.realm.card_for(p).unwrap();
        assert_eq!(w.realm.comments_of(&card).len(), 1, "{p}\n{}", w.log());
        assert_eq!(list, "Done", "{p}");
        let said =
            w.mm.thread_replies(p)
                .iter()
                .filter(|x| x.user_id == w.agent)
                .count();
        assert_eq!(said, 2, "the reply and one announcement: {p}");
    }
    println!("corrections: {kills} SIGKILLs, 0 duplicates");
    tier::ran(TIER);
}

#[test]
fn revoked_sessions_log_in_again_once() {
    let Some(w) = World::new(Spec::default()) else {
        return;
    };
    let first = w.say("basic", "please update the runbook");
    w.run();
    assert_eq!(w.realm.sessions(), 1, "one session, cached");
    // An admin revokes every session of the agent's user (as a password
    // change or "log out everywhere" would).
    w.realm.real.sql(&format!(
        "UPDATE session SET deleted_at = now() WHERE user_id = {}",
        w.realm.user.1
    ));
    w.proxy.clear();
    let second = w.say("basic", "please update the wiki too");
    w.run();
    assert_eq!(
        w.proxy.count("POST", "/api/access-tokens"),
        1,
        "one new login\n{}",
        w.log()
    );
    one_card_each(&w, &[first, second]);
    assert_eq!(w.realm.sessions(), 1);
    tier::ran(TIER);
}

#[test]
fn the_api_key_path_makes_cards_without_a_session() {
    let Some(mut w) = World::new(Spec {
        planka_auth: Some("api_key_env = \"OPS_AGENT_PLANKA_API_KEY\""),
        ..Spec::default()
    }) else {
        return;
    };
    // An admin makes the agent's user an API key, once.
    let v = w.realm.real.admin_ok(
        "POST",
        &format!("/api/users/{}/api-key", w.realm.user.1),
        json!({}),
    );
    let key = v["included"]["apiKey"]
        .as_str()
        .unwrap_or_else(|| panic!("no included.apiKey in {v}"))
        .to_string();
    w.sb.env.push(("OPS_AGENT_PLANKA_API_KEY".into(), key));
    let post = w.say("basic", "please check the api key path");
    w.run();
    one_card_each(&w, &[post]);
    assert_eq!(w.proxy.count("POST", "/api/access-tokens"), 0, "no login");
    assert_eq!(w.realm.sessions(), 0, "no session");
    tier::ran(TIER);
}
