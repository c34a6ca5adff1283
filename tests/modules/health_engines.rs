//! One agent, several Docker engines: each docker check on the engine it
//! names (plain `tcp://` and TLS with client certificates against the fake
//! engine over TCP), a fix sent to that engine only, and an engine that
//! refuses our certificate, or whose key is not owner-only, blocking only
//! its own containers.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;
use ops_agent::fix::{self, FixAction, FixConfig, FixOptions, FixSpec, Outcome};
use ops_agent::health::docker::EngineConfig;
use ops_agent::health::{
    self, CheckConfig, CheckKind, Checks, HealthConfig, HealthContext, Status,
};
use ops_agent::time::Secs;

use crate::support::docker::{FakeContainer, FakeDocker, OnRestart};
use crate::support::pki::{ClientFiles, Pki};

fn on(engine: &str, name: &str, container: &str) -> CheckConfig {
    let mut c = CheckConfig::new(name, CheckKind::Docker);
    c.container = Some(container.into());
    c.engine = Some(engine.into());
    c.fail_after = Some(1);
    c.fix = Some(FixSpec {
        settle_secs: Secs::new(0),
        ..FixSpec::new(FixAction::RestartContainer)
    });
    c
}

fn tls_engine(host: &str, f: &ClientFiles) -> EngineConfig {
    EngineConfig {
        host: host.into(),
        tls_ca: Some(f.ca()),
        tls_cert: Some(f.cert()),
        tls_key: Some(f.key()),
    }
}

fn ctx(engines: BTreeMap<String, EngineConfig>) -> HealthContext {
    HealthContext::new(&HealthConfig {
        reprobe_pause_ms: 10,
        // The default engine is nowhere: only named engines are used.
        docker_host: Some("tcp://127.0.0.1:1".into()),
        engines,
    })
}

fn status_of<'a>(results: &'a [health::CheckResult], name: &str) -> &'a health::CheckResult {
    results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no result for {name}: {results:?}"))
}

#[tokio::test]
async fn one_agent_watches_two_engines_and_fixes_on_the_right_one() {
    let plain = FakeDocker::start().await;
    plain.add(FakeContainer::exited("web").on_restart(OnRestart::Fixes));
    let pki = Pki::new("build2");
    let secure = FakeDocker::start_tls(pki.server_config()).await;
    secure.add(FakeContainer::healthy("db"));
    // The same name on the other host: a fix must not reach it.
    secure.add(FakeContainer::exited("web"));
    let dir = tempfile::tempdir().unwrap();
    let files = pki.client_files(dir.path());

    let mut engines = BTreeMap::new();
    engines.insert(
        "build1".to_string(),
        EngineConfig {
            host: plain.host(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        },
    );
    engines.insert("build2".to_string(), tls_engine(&secure.host(), &files));
    let ctx = ctx(engines);
    let checks = Checks::new(vec![on("build1", "web", "web"), on("build2", "db", "db")]);
    let results = health::run_all(&ctx, &checks).await;
    let e2 = status_of(&results, "docker-engine-build2");
    assert_eq!(e2.status, Status::Ok, "{e2:?}");
    assert!(e2.reason.contains("at https://127.0.0.1:"), "{}", e2.reason);
    assert_eq!(
        status_of(&results, "docker-engine-build1").status,
        Status::Ok
    );
    assert_eq!(status_of(&results, "db").status, Status::Ok);
    let web = status_of(&results, "web");
    assert_eq!(web.status, Status::Critical, "{web:?}");
    assert!(
        secure
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/containers/db/json")),
        "the TLS engine was asked"
    );
    assert!(!plain
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/containers/db/json")));

    let history = dir.path().join("fix-history.json");
    let (report, _) = fix::run_manual(
        &fix::FixContext {
            health: &ctx,
            checks: &checks,
            history_path: &history,
            policy: &FixConfig::default(),
        },
        "web",
        "exited",
        FixOptions::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Some(Outcome::Verified), "{report:?}");
    assert_eq!(plain.restarts("web"), 1);
    assert_eq!(
        secure.restarts("web"),
        0,
        "the other host's 'web' was not touched"
    );
}

#[tokio::test]
async fn an_engine_that_refuses_our_certificate_blocks_only_its_containers() {
    let pki = Pki::new("prod");
    let secure = FakeDocker::start_tls(pki.server_config()).await;
    secure.add(FakeContainer::healthy("db"));
    let plain = FakeDocker::start().await;
    plain.add(FakeContainer::healthy("web"));
    let dir = tempfile::tempdir().unwrap();
    // A client certificate from another CA (the engine's CA is trusted).
    let stranger = Pki::new("stranger").client_files(&dir.path().join("stranger"));
    std::fs::copy(
        pki.client_files(&dir.path().join("good")).ca(),
        stranger.ca(),
    )
    .unwrap();

    let engines = |f: &ClientFiles| {
        let mut m = BTreeMap::new();
        m.insert("prod".to_string(), tls_engine(&secure.host(), f));
        m.insert(
            "lab".to_string(),
            EngineConfig {
                host: plain.host(),
                tls_ca: None,
                tls_cert: None,
                tls_key: None,
            },
        );
        m
    };
    let checks = Checks::new(vec![on("prod", "db", "db"), on("lab", "web", "web")]);
    let results = health::run_all(&ctx(engines(&stranger)), &checks).await;
    let e = status_of(&results, "docker-engine-prod");
    assert_eq!(e.status, Status::Critical, "{e:?}");
    let db = status_of(&results, "db");
    assert_eq!(
        db.blocked_by.as_deref(),
        Some("docker-engine-prod"),
        "{db:?}"
    );
    assert_eq!(status_of(&results, "web").status, Status::Ok);
    assert!(
        secure.requests().is_empty(),
        "no request got past the handshake"
    );

    // A key others can read is refused before any connection.
    let good = pki.client_files(&dir.path().join("good"));
    set_mode(&good.key(), 0o644);
    let results = health::run_all(&ctx(engines(&good)), &checks).await;
    let e = status_of(&results, "docker-engine-prod");
    assert_eq!(e.status, Status::Critical);
    assert!(
        e.reason.contains("engine 'prod'") && e.reason.contains("chmod 600"),
        "{}",
        e.reason
    );
    set_mode(&good.key(), 0o600);
    let results = health::run_all(&ctx(engines(&good)), &checks).await;
    // Right after the refused handshakes: the first probe answers.
    let e = status_of(&results, "docker-engine-prod");
    assert!(e.status == Status::Ok && !e.reprobed, "{e:?}");
    assert_eq!(status_of(&results, "db").status, Status::Ok);
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}
