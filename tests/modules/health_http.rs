//! HTTP checks against fake endpoints: grading, concurrency under
//! timeouts, the re-probe of a flaky endpoint, and TLS verification
//! against a self-signed certificate.

use std::time::{Duration, Instant};

use crate::support::http_endpoints::FakeEndpoints;
use ops_agent::health::{
    self, CheckConfig, CheckKind, Checks, ExpectStatus, HealthConfig, HealthContext, Status,
};
use ops_agent::time::Secs;

fn http(name: &str, url: String) -> CheckConfig {
    let mut c = CheckConfig::new(name, CheckKind::Http);
    c.url = Some(url);
    c
}

fn ctx(pause_ms: u64) -> HealthContext {
    HealthContext::new(&HealthConfig {
        reprobe_pause_ms: pause_ms,
        docker_host: Some("tcp://127.0.0.1:1".into()),
        ..Default::default()
    })
}

#[tokio::test]
async fn endpoints_are_graded() {
    let fake = FakeEndpoints::start().await;
    fake.set_slow_ms(300);
    let mut ok = http("ok", fake.url("/ok"));
    ok.body_contains = Some("\"status\":\"OK\"".into());
    let mut slow = http("slow", fake.url("/slow"));
    slow.latency_warn_ms = Some(100);
    let mut wrong = http("wrong", fake.url("/wrong-body"));
    wrong.body_contains = Some("OK".into());
    let err = http("err", fake.url("/500"));
    let mut range = http("range", fake.url("/status/302"));
    range.expect_status = Some(ExpectStatus::Text("200-399".into()));
    let mut head = http("head", fake.url("/ok"));
    head.method = Some("HEAD".into());
    let missing = http("missing", fake.url("/nope"));
    let checks = vec![ok, slow, wrong, err, range, head, missing];
    let checks = Checks::from(checks);
    let results = health::run_all(&ctx(10), &checks).await;
    let want = [
        ("ok", Status::Ok, "HTTP 200"),
        ("slow", Status::Warn, "(warn at 100 ms)"),
        ("wrong", Status::Critical, "body lacks 'OK'"),
        ("err", Status::Critical, "HTTP 500, expected 200"),
        ("range", Status::Ok, "HTTP 302"),
        ("head", Status::Ok, "HEAD "),
        ("missing", Status::Critical, "HTTP 404"),
    ];
    for (r, (name, status, needle)) in results.iter().zip(want) {
        assert_eq!((r.name.as_str(), r.status), (name, status), "{r:?}");
        assert!(r.reason.contains(needle), "{name}: {}", r.reason);
    }
    assert!(fake
        .requests()
        .contains(&("HEAD".to_string(), "/ok".to_string())));
    // Failed ones were probed twice (the re-probe), good ones once.
    let count = |p: &str| fake.requests().iter().filter(|(_, q)| q == p).count();
    assert_eq!(count("/500"), 2);
    assert_eq!(count("/slow"), 1);
}

#[tokio::test]
async fn hanging_endpoints_cost_their_timeout_not_the_sum() {
    let fake = FakeEndpoints::start().await;
    let checks: Vec<CheckConfig> = (0..6)
        .map(|i| {
            let mut c = http(&format!("hang-{i}"), fake.url("/hang"));
            c.timeout_secs = Secs::new(1);
            c
        })
        .collect();
    let checks = Checks::from(checks);
    let started = Instant::now();
    let results = health::run_all(&ctx(10), &checks).await;
    let took = started.elapsed();
    for r in &results {
        // The client's timeout or run_one's, whichever fires first.
        assert!(r.status.is_failure(), "{r:?}");
        assert!(r.reason.contains("no answer within 1s"), "{}", r.reason);
        assert!(r.reprobed);
    }
    // Six checks probed twice at 1 s each would be 12 s in sequence; run
    // concurrently it is two timeouts plus the pause.
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[tokio::test]
async fn a_flaky_endpoint_passes_on_reprobe_and_a_down_one_does_not() {
    let fake = FakeEndpoints::start().await;
    fake.fail_next(1);
    let flaky = http("flaky", fake.url("/flaky"));
    let down = http("down", "http://127.0.0.1:1/".into());
    let results = health::run_all(&ctx(50), &Checks::from(vec![flaky, down])).await;
    assert_eq!(results[0].status, Status::Ok);
    assert!(
        results[0].reprobed && results[0].reason.contains("first probe: GET"),
        "{}",
        results[0].reason
    );
    assert!(
        results[0].reason.contains("HTTP 503"),
        "{}",
        results[0].reason
    );
    assert_eq!(results[1].status, Status::Critical);
    assert!(
        results[1].reason.contains("cannot connect"),
        "{}",
        results[1].reason
    );
}

#[tokio::test]
async fn a_self_signed_certificate_is_critical_by_default() {
    let fake = FakeEndpoints::start_tls().await;
    let url = fake.url("/ok");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let check = http("tls", url.clone());
    assert_eq!(check.verify_tls, None, "the default is what is under test");
    let results = health::run_all(&ctx(10), &Checks::from(vec![check])).await;
    let r = &results[0];
    assert_eq!(r.status, Status::Critical, "{r:?}");
    assert!(
        r.reason.starts_with(&format!("GET {url}: ")),
        "{}",
        r.reason
    );
    assert!(r.reason.contains("certificate"), "{}", r.reason);
    assert!(r.reason.contains("UnknownIssuer"), "{}", r.reason);
    // Refused during the handshake: no request ever reached the endpoint.
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[tokio::test]
async fn verify_tls_false_accepts_a_self_signed_certificate() {
    let fake = FakeEndpoints::start_tls().await;
    let mut check = http("tls", fake.url("/ok"));
    check.verify_tls = Some(false);
    check.body_contains = Some("\"status\":\"OK\"".into());
    let results = health::run_all(&ctx(10), &Checks::from(vec![check])).await;
    let r = &results[0];
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert!(r.reason.contains("HTTP 200"), "{}", r.reason);
    assert!(!r.reprobed, "{r:?}");
    assert_eq!(fake.requests(), [("GET".to_string(), "/ok".to_string())]);
}
