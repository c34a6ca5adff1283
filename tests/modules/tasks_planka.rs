//! Planka client against the stateful fake: v2 and v1 card paths, labels,
//! terms acceptance, API key, token cache, 401 re-login, faults.

use std::collections::BTreeMap;

use ops_agent::tasks::planka::{
    comment_marker, ApiVersion, BoardTarget, Commented, PlankaClient, PlankaConfig,
};
use ops_agent::tasks::{Priority, Tag, Task};
use ops_agent::time::Secs;

use crate::support::fault::Fault;
use crate::support::planka::{FakePlanka, Version, PASSWORD, USERNAME};

const PW_ENV: &str = "OPS_AGENT_TEST_PLANKA_PW";
const KEY_ENV: &str = "OPS_AGENT_TEST_PLANKA_KEY";

fn task(source: &str, team: &str, tag: Tag) -> Task {
    Task {
        title: "Deploy the API".into(),
        description:
            "Deploy the API please\n\n---\nPosted by @alice in wizard/dev\nhttp://mm/wizard/pl/p1"
                .into(),
        owner: "ops".into(),
        tag,
        priority: Priority::Normal,
        source: source.into(),
        label: "TASK".into(),
        team: team.into(),
        channel: "dev".into(),
        author: "alice".into(),
        permalink: "http://mm/wizard/pl/p1".into(),
    }
}

fn config(url: &str) -> PlankaConfig {
    std::env::set_var(PW_ENV, PASSWORD);
    let mut boards = BTreeMap::new();
    boards.insert(
        "wizard".into(),
        BoardTarget {
            project: None,
            board: "Wizard".into(),
            list: "Inbox".into(),
        },
    );
    boards.insert(
        "basic".into(),
        BoardTarget {
            project: Some("Ops".into()),
            board: "Basic".into(),
            list: "Inbox".into(),
        },
    );
    PlankaConfig {
        url: url.into(),
        username: Some(USERNAME.into()),
        password_env: PW_ENV.into(),
        timeout_secs: Secs::new(2),
        boards,
        ..Default::default()
    }
}

async fn fake(version: Version) -> FakePlanka {
    let f = FakePlanka::start().await;
    f.set_version(version);
    f.seed(&[("Wizard", "Inbox"), ("Basic", "Inbox")]);
    f
}

#[tokio::test]
async fn v2_card_with_billable_label_and_snowflake_ids() {
    let f = fake(Version::V2).await;
    let c = PlankaClient::new(&config(&f.url), None).unwrap();
    let card = c
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    assert!(!card.existed);
    assert!(card.card_id.parse::<u64>().unwrap() > (1u64 << 53));
    assert_eq!(card.card_url, format!("{}/cards/{}", f.url, card.card_id));
    let cards = f.cards();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0]["type"], "project");
    // After any card people placed (Planka spaces those 65,536 apart),
    // without reading the list.
    let first = cards[0]["position"].as_f64().unwrap();
    assert!(first >= 65536.0, "{first}");
    assert_eq!(cards[0]["name"], "Deploy the API");
    let desc = cards[0]["description"].as_str().unwrap();
    assert!(
        desc.contains("http://mm/wizard/pl/p1")
            && desc.contains("MC task: OPS-1")
            && desc.contains("ops-agent source: p1")
    );
    assert_eq!(f.label_names_of(&card.card_id), vec!["BILLABLE"]);
    assert_eq!(f.labels()[0]["color"], "berry-red");
    assert_eq!(f.count("POST", "/card-labels"), 1);
    assert_eq!(f.count("GET", "/api/bootstrap"), 1);
    // A second card in the same list goes below the first and reuses the label.
    let card2 = c
        .create_card(&task("p2", "wizard", Tag::Billable), "OPS-2")
        .await
        .unwrap();
    assert!(f.cards()[1]["position"].as_f64().unwrap() > first);
    assert_eq!(f.labels().len(), 1);
    assert_eq!(f.label_names_of(&card2.card_id), vec!["BILLABLE"]);
    // Login happened once; the board was resolved by name once.
    assert_eq!(f.logins(), 1);
    assert_eq!(f.count("GET", "/api/projects"), 1);
}

#[tokio::test]
async fn v1_uses_v1_paths_and_bodies() {
    let f = fake(Version::V1).await;
    let c = PlankaClient::new(&config(&f.url), None).unwrap();
    let card = c
        .create_card(&task("p1", "basic", Tag::Internal), "OPS-1")
        .await
        .unwrap();
    assert_eq!(
        f.count("GET", "/api/bootstrap"),
        1,
        "probe answered 404: v1"
    );
    assert_eq!(f.count("POST", "/card-labels"), 0);
    assert_eq!(
        f.count("POST", &format!("/api/cards/{}/labels", card.card_id)),
        1
    );
    assert!(f.cards()[0].get("type").is_none());
    assert_eq!(f.label_names_of(&card.card_id), vec!["INTERNAL"]);
    c.add_comment(&card.card_id, "resolved p1", "resolved")
        .await
        .unwrap();
    assert_eq!(f.count("POST", "/comment-actions"), 1);
}

/// A comment call repeated with the same key (a step run again after a
/// crash that followed Planka's commit) finds the comment and posts none;
/// another key posts. Both majors, through their own list endpoints.
async fn comment_once(version: Version, list_path: &str, post_path: &str) {
    let f = fake(version).await;
    let c = PlankaClient::new(&config(&f.url), None).unwrap();
    let card = c
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    let id = card.card_id.as_str();
    let key = "recovery web@1700000000";
    let first = c.add_comment(id, key, "Recovered at 10:00.").await.unwrap();
    assert_eq!(first, Commented::Posted);
    let texts = f.comment_texts(id);
    assert_eq!(
        texts,
        vec![format!("Recovered at 10:00.\n\n{}", comment_marker(key))]
    );
    // Asked again (even with a text that changed meanwhile): found, not posted.
    let again = c.add_comment(id, key, "Recovered at 10:01.").await.unwrap();
    assert_eq!(again, Commented::Found);
    assert_eq!(f.comment_texts(id).len(), 1);
    assert_eq!(f.count("POST", post_path), 1);
    assert_eq!(f.count("GET", list_path), 2, "looked before each post");
    // Someone else's comments after it, still within the newest page.
    for i in 0..10 {
        f.add_comment(id, &format!("person {i}"));
    }
    assert_eq!(
        c.add_comment(id, key, "Recovered.").await.unwrap(),
        Commented::Found
    );
    // Another event on the same card is its own comment.
    assert_eq!(
        c.add_comment(id, "close p1:ROUTINE:1", "Closed.")
            .await
            .unwrap(),
        Commented::Posted
    );
    assert_eq!(f.count("POST", post_path), 2);
    // A failed read posts nothing: the step is owed again.
    f.fail_next(list_path, 500);
    assert!(c.add_comment(id, "relabel x", "Relabelled.").await.is_err());
    assert_eq!(f.count("POST", post_path), 2);
}

#[tokio::test]
async fn v2_comment_with_the_same_key_is_posted_once() {
    comment_once(Version::V2, "/comments", "/comments").await;
}

#[tokio::test]
async fn v1_comment_with_the_same_key_is_posted_once() {
    comment_once(Version::V1, "/actions", "/comment-actions").await;
}

#[tokio::test]
async fn fake_pages_comments_newest_first_like_the_server() {
    for version in [Version::V2, Version::V1] {
        let f = fake(version).await;
        let c = PlankaClient::new(&config(&f.url), None).unwrap();
        let card = c
            .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
            .await
            .unwrap();
        for i in 0..60 {
            f.add_comment(&card.card_id, &format!("c{i}"));
        }
        let http = reqwest::Client::new();
        let token = f.token();
        let path = match version {
            Version::V2 => "comments",
            Version::V1 => "actions",
        };
        let get = |q: String| {
            let req = http
                .get(format!("{}/api/cards/{}/{path}{q}", f.url, card.card_id))
                .bearer_auth(&token);
            async move {
                req.send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };
        let text = |v: &serde_json::Value| {
            v["text"]
                .as_str()
                .or(v["data"]["text"].as_str())
                .unwrap()
                .to_string()
        };
        let first = get(String::new()).await;
        let items = first["items"].as_array().unwrap();
        assert_eq!(items.len(), 50, "{version:?}: one page");
        assert_eq!(text(&items[0]), "c59", "{version:?}: newest first");
        assert_eq!(text(&items[49]), "c10");
        if version == Version::V1 {
            assert_eq!(items[0]["type"], "commentCard");
        }
        let last = items[49]["id"].as_str().unwrap();
        let next = get(format!("?beforeId={last}")).await;
        let rest: Vec<String> = next["items"].as_array().unwrap().iter().map(text).collect();
        assert_eq!(rest.len(), 10);
        assert_eq!((rest[0].as_str(), rest[9].as_str()), ("c9", "c0"));
    }
}

#[tokio::test]
async fn configured_version_skips_the_probe() {
    let f = fake(Version::V2).await;
    let cfg = PlankaConfig {
        api_version: ApiVersion::V2,
        ..config(&f.url)
    };
    let c = PlankaClient::new(&cfg, None).unwrap();
    let card = c
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    assert_eq!(f.count("GET", "/api/bootstrap"), 0);
    c.add_comment(&card.card_id, "note p1", "note")
        .await
        .unwrap();
    assert_eq!(f.comments().len(), 1);
}

#[tokio::test]
async fn existing_label_and_existing_card_are_reused() {
    let f = fake(Version::V2).await;
    let c = PlankaClient::new(&config(&f.url), None).unwrap();
    // The card is made, then attaching the label fails (as a crash would
    // interrupt): the retry finds the card by its marker, makes no second one.
    f.fail_next("/card-labels", 500);
    assert!(c
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .is_err());
    let again = c
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    assert!(again.existed);
    assert_eq!(f.cards().len(), 1);
    assert_eq!(f.labels().len(), 1);
    assert_eq!(f.label_names_of(&again.card_id), vec!["BILLABLE"]);
    // Once more: the link exists, so no attach call (and a 409 would be fine).
    let before = f.count("POST", "/card-labels");
    c.create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    assert_eq!(f.count("POST", "/card-labels"), before);
}

#[tokio::test]
async fn terms_acceptance_on_first_v2_login() {
    let f = fake(Version::V2).await;
    f.require_terms(true);
    let c = PlankaClient::new(&config(&f.url), None).unwrap();
    c.create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    assert_eq!(f.count("GET", "/api/terms"), 1);
    assert_eq!(f.count("POST", "/api/access-tokens/accept-terms"), 1);
    // Refusing to accept gives an error that says what to do.
    let f2 = fake(Version::V2).await;
    f2.require_terms(true);
    let cfg = PlankaConfig {
        accept_terms: false,
        ..config(&f2.url)
    };
    let err = PlankaClient::new(&cfg, None)
        .unwrap()
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("accept_terms"), "{err:#}");
}

#[tokio::test]
async fn api_key_is_sent_as_header_without_login() {
    let f = fake(Version::V2).await;
    f.add_api_key("key-123");
    std::env::set_var(KEY_ENV, "key-123");
    let cfg = PlankaConfig {
        username: None,
        api_key_env: Some(KEY_ENV.into()),
        ..config(&f.url)
    };
    assert!(cfg.enabled());
    PlankaClient::new(&cfg, None)
        .unwrap()
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    assert_eq!(f.logins(), 0);
    assert!(f
        .requests()
        .iter()
        .filter(|r| r.path != "/api/bootstrap")
        .all(|r| r.auth == "api-key"));
}

#[tokio::test]
async fn expired_token_relogs_once_and_cache_is_reused() {
    let f = fake(Version::V2).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("planka-token.json");
    let c = PlankaClient::new(&config(&f.url), Some(cache.clone())).unwrap();
    c.create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    assert_eq!(f.logins(), 1);
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(text.contains("tok-"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A new process reuses the cached token: no login.
    let c2 = PlankaClient::new(&config(&f.url), Some(cache.clone())).unwrap();
    c2.create_card(&task("p2", "wizard", Tag::Billable), "OPS-2")
        .await
        .unwrap();
    assert_eq!(f.logins(), 1);
    // Tokens expire: one 401, one re-login, then success.
    f.expire_tokens();
    c2.create_card(&task("p3", "wizard", Tag::Billable), "OPS-3")
        .await
        .unwrap();
    assert_eq!(f.logins(), 2);
    assert_eq!(f.cards().len(), 3);
}

#[tokio::test]
async fn persistent_401_relogs_only_once() {
    let f = fake(Version::V2).await;
    let c = PlankaClient::new(&config(&f.url), None).unwrap();
    f.set_fault(Fault::Unauthorized);
    let err = c
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
    assert_eq!(f.logins(), 2);
    assert_eq!(f.count("GET", "/api/projects"), 2);
}

#[tokio::test]
async fn wrong_password_is_an_error_without_the_password() {
    let f = fake(Version::V2).await;
    std::env::set_var("OPS_AGENT_TEST_PLANKA_BAD_PW", "wrong-pw-xyz");
    let cfg = PlankaConfig {
        password_env: "OPS_AGENT_TEST_PLANKA_BAD_PW".into(),
        ..config(&f.url)
    };
    let err = PlankaClient::new(&cfg, None)
        .unwrap()
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("401") && msg.contains("Invalid credentials"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-pw-xyz"));
}

#[tokio::test]
async fn faults_500_hang_garbage_down_are_errors() {
    let f = fake(Version::V2).await;
    // A client lives for one cycle: each fault is met by a fresh one.
    for (mode, needle) in [
        (Fault::Status(500), "HTTP 500"),
        (Fault::Garbage, "not JSON"),
        (Fault::Hang, "Planka unreachable"),
        (Fault::Refuse, "Planka unreachable"),
    ] {
        f.set_fault(mode);
        let c = PlankaClient::new(&config(&f.url), None).unwrap();
        let err = c
            .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains(needle), "{mode:?}: {err:#}");
    }
    f.clear_fault();
    PlankaClient::new(&config(&f.url), None)
        .unwrap()
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
    assert_eq!(f.cards().len(), 1);
}

#[tokio::test]
async fn a_planka_that_hangs_costs_one_timeout_per_client() {
    let f = fake(Version::V2).await;
    f.set_fault(Fault::Hang);
    let c = PlankaClient::new(&config(&f.url), None).unwrap();
    let first = c
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap_err();
    let hung = f.requests().len();
    assert_eq!(hung, 1, "one request waited for its timeout");
    // Later calls of the same client (the same cycle) fail at once, with
    // the reason, and never reach the server.
    for source in ["p2", "p3"] {
        let err = c
            .create_card(&task(source, "wizard", Tag::Billable), "OPS-1")
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("Planka unreachable")
                && msg.contains("skipped for the rest of this cycle"),
            "{msg}"
        );
    }
    assert!(c.add_comment("1", "k", "x").await.is_err());
    assert_eq!(f.requests().len(), hung, "{first:#}");
    f.clear_fault();
    PlankaClient::new(&config(&f.url), None)
        .unwrap()
        .create_card(&task("p1", "wizard", Tag::Billable), "OPS-1")
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_board_or_list_is_a_clear_error_and_moves_work() {
    let f = fake(Version::V2).await;
    let mut cfg = config(&f.url);
    cfg.boards.insert(
        "riad".into(),
        BoardTarget {
            project: None,
            board: "Nope".into(),
            list: "Inbox".into(),
        },
    );
    cfg.boards.get_mut("basic").unwrap().list = "Trash".into();
    let c = PlankaClient::new(&cfg, None).unwrap();
    let err = c
        .create_card(&task("p1", "riad", Tag::Billable), "OPS-1")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("board 'Nope' not found"),
        "{err:#}"
    );
    let err = c
        .create_card(&task("p1", "basic", Tag::Internal), "OPS-1")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no list 'Trash'"), "{err:#}");
    assert!(f.cards().is_empty());
    // move_card to another list on the board.
    let card = c
        .create_card(&task("p2", "wizard", Tag::Billable), "OPS-2")
        .await
        .unwrap();
    let bid = f.cards()[0]["boardId"].as_str().unwrap().to_string();
    let done = f.add_list(&bid, "Done");
    c.move_card(&card.card_id, "wizard", "Done").await.unwrap();
    assert_eq!(f.cards()[0]["listId"], done.as_str());
}

#[test]
fn background_fake_serves_without_a_test_runtime() {
    use std::io::{Read, Write};
    let f = FakePlanka::start_in_background();
    let mut s = std::net::TcpStream::connect(f.url.trim_start_matches("http://")).unwrap();
    s.write_all(b"GET /api/bootstrap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("2.1.1"),
        "{out}"
    );
    assert_eq!(f.count("GET", "/api/bootstrap"), 1);
}
