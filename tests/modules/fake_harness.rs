//! The test kit itself: every fault of the shared layer, on the fakes that
//! use it, as a client sees it on the wire.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::docker::FakeDocker;
use crate::support::fault::{padded_json, Fault, Match, Rule};
use crate::support::http_endpoints::FakeEndpoints;
use crate::support::mattermost::FakeMattermost;
use crate::support::ollama::FakeOllama;
use crate::support::planka::{FakePlanka, PASSWORD, USERNAME};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, String) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// One HTTP/1.1 request over a plain socket, read to the end.
fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test]
async fn refuse_closes_the_port_and_clearing_it_comes_back_on_the_same_port_with_state() {
    let dk = FakeDocker::start().await;
    let url = dk.server().url();
    assert_eq!(get(&format!("{url}/_ping")).await.0, 200);

    dk.set_fault(Fault::Refuse);
    assert!(dk.server().is_down());
    let err = std::net::TcpStream::connect(dk.server().addr()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let err = client()
        .get(format!("{url}/_ping"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    dk.clear_fault();
    assert!(!dk.server().is_down());
    assert_eq!(get(&format!("{url}/_ping")).await.0, 200);
    // State survived: both answered pings are on record, the refused one is not.
    let pings = dk.requests().iter().filter(|r| r.path == "/_ping").count();
    assert_eq!(pings, 2);
}

#[tokio::test]
async fn refuse_drops_connections_already_open() {
    let mm = FakeMattermost::start().await;
    let addr = mm.server().addr();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /api/v4/system/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    mm.set_fault(Fault::Refuse);
    // The kept-alive connection is closed under the client.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed, not left hanging")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn hang_never_answers_and_slow_answers_late() {
    let llm = FakeOllama::start().await;
    llm.set_fault(Fault::Hang);
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = quick
        .get(format!("{}/api/tags", llm.url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(llm.requests().len(), 1, "a hung request is still recorded");

    llm.set_fault(Fault::Slow(Duration::from_millis(400)));
    let started = Instant::now();
    let (status, body) = get(&format!("{}/api/tags", llm.url())).await;
    assert_eq!(status, 200);
    assert!(body.contains("llama3.1:8b"), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn status_answers_in_each_service_own_error_shape() {
    let mm = FakeMattermost::start().await;
    mm.set_fault(Fault::Status(503));
    let (status, body) = get(&format!("{}/api/v4/users/me", mm.url())).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 503);
    assert_eq!(v["status_code"], 503);
    assert!(v["id"].is_string() && v["message"].is_string(), "{v}");

    let llm = FakeOllama::start().await;
    llm.set_fault(Fault::Status(500));
    let (status, body) = get(&format!("{}/api/tags", llm.url())).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["error"].is_string()), (500, true), "{v}");

    let dk = FakeDocker::start().await;
    dk.set_fault(Fault::Status(500));
    let (status, body) = get(&format!("{}/containers/json", dk.server().url())).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, v["message"].as_str()),
        (500, Some("Internal Server Error"))
    );

    let pk = FakePlanka::start().await;
    pk.set_fault(Fault::Status(502));
    let (status, body) = get(&format!("{}/api/projects", pk.url)).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["code"].as_str()), (502, Some("E_FAKE")));
}

#[tokio::test]
async fn garbage_oversized_and_endless_bodies() {
    let ep = FakeEndpoints::start().await;
    ep.server().set_fault(Fault::Garbage);
    let (status, body) = get(&ep.url("/ok")).await;
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");

    ep.server().set_fault(Fault::Oversized(3 * 1024 * 1024));
    let r = client().get(ep.url("/ok")).send().await.unwrap();
    assert_eq!(r.content_length(), Some(3 * 1024 * 1024));
    let v: Value = r.json().await.unwrap();
    assert!(v["pad"].is_string());
    assert_eq!(padded_json(3).len(), 3);
    assert_eq!(padded_json(64).len(), 64);

    ep.server().set_fault(Fault::Endless);
    let mut r = client().get(ep.url("/ok")).send().await.unwrap();
    assert_eq!(r.content_length(), None);
    let mut seen = 0;
    while seen < 8 * 1024 * 1024 {
        seen += r.chunk().await.unwrap().expect("the body never ends").len();
    }
}

#[tokio::test]
async fn rate_limited_and_unauthorized_where_the_service_has_them() {
    let mm = FakeMattermost::start().await;
    mm.rate_limit_next(1, 7);
    let r = client()
        .get(format!("{}/api/v4/system/ping", mm.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(
        r.headers().contains_key("x-version-id"),
        "Mattermost's headers stay"
    );
    assert_eq!(
        get(&format!("{}/api/v4/system/ping", mm.url())).await.0,
        200
    );

    // Planka: logins work, authenticated calls get 401.
    let pk = FakePlanka::start().await;
    pk.set_fault(Fault::Unauthorized);
    let login = client()
        .post(format!("{}/api/access-tokens", pk.url))
        .json(&serde_json::json!({"emailOrUsername": USERNAME, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let token = login.json::<Value>().await.unwrap()["item"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client()
        .get(format!("{}/api/projects", pk.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    pk.clear_fault();
    let r = client()
        .get(format!("{}/api/projects", pk.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn a_rule_hits_only_its_method_and_path_and_only_n_times() {
    let mm = FakeMattermost::start().await;
    mm.server().add_rule(
        Rule::new(Fault::Status(500))
            .when(Match::post_to("/api/v4/posts"))
            .times(2),
    );
    let post = || async {
        client()
            .post(format!("{}/api/v4/posts", mm.url()))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // Other requests are untouched.
    assert_eq!(
        get(&format!("{}/api/v4/system/ping", mm.url())).await.0,
        200
    );
    assert_eq!(post().await, 500);
    assert_eq!(post().await, 500);
    // Then the fake answers as Mattermost (401: no token).
    assert_eq!(post().await, 401);
    assert_eq!(mm.count_requests("POST", "/api/v4/posts"), 3);
}

#[test]
fn a_hold_keeps_the_request_until_released_and_says_when_it_arrived() {
    let pk = FakePlanka::start_in_background();
    let gate = pk.server().hold(Match::get("/api/bootstrap"));
    let addr = pk.server().addr();
    let asking = std::thread::spawn(move || {
        raw(
            addr,
            "GET /api/bootstrap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    assert!(gate.wait_arrived(Duration::from_secs(10)));
    assert_eq!(gate.arrived_count(), 1);
    // Recorded before the hold, not answered yet.
    assert_eq!(pk.count("GET", "/api/bootstrap"), 1);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!asking.is_finished(), "held until released");
    gate.release();
    let out = asking.join().unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("2.1.1"),
        "{out}"
    );
    // Other paths were never held.
    let out = raw(
        addr,
        "GET /api/terms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[test]
fn a_held_request_whose_client_died_is_never_served() {
    let mm = FakeMattermost::start_in_background();
    mm.add_user("opsbot", "agent-pw");
    let gate = mm.server().hold(Match::post("/users/login"));
    let body = r#"{"login_id":"opsbot","password":"agent-pw"}"#;
    let mut s = std::net::TcpStream::connect(mm.server().addr()).unwrap();
    write!(
        s,
        "POST /api/v4/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    assert!(gate.wait_arrived(Duration::from_secs(10)));
    drop(s); // the client is killed while its request is held
    std::thread::sleep(Duration::from_millis(500));
    gate.release();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(mm.session_count(), 0, "the login was never served");
    assert_eq!(
        mm.count_requests("POST", "/users/login"),
        1,
        "but it is on record"
    );
}

#[tokio::test]
async fn drop_accepts_and_closes_without_an_answer() {
    let dk = FakeDocker::start().await;
    dk.set_fault(Fault::Drop);
    let err = client()
        .get(format!("{}/_ping", dk.server().url()))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_connect() && !err.is_timeout(), "{err:?}");
    assert_eq!(dk.requests().len(), 1, "it got in and was recorded");
    dk.clear_fault();
    assert_eq!(get(&format!("{}/_ping", dk.server().url())).await.0, 200);
}

#[test]
fn a_background_fake_goes_down_and_up_while_another_runtime_uses_it() {
    let llm = FakeOllama::start_in_background();
    let url = llm.url().to_string();
    llm.set_fault(Fault::Refuse);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async { client().get(format!("{url}/api/tags")).send().await })
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    llm.clear_fault();
    let (status, _) = rt.block_on(get(&format!("{url}/api/tags")));
    assert_eq!(status, 200);
}
