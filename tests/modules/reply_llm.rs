//! Reply text through the fake Ollama: generated with the task reference,
//! sanitized, and the templated fallback without a usable model.

use ops_agent::chat::reply::{self, ReplyContext, ReplyKind, ReplyPath};
use ops_agent::classify::FallbackReason;
use ops_agent::ollama::{Client, OllamaConfig};
use ops_agent::time::Secs;

use crate::support::fault::Fault;
use crate::support::ollama::{dead_url, FakeOllama};

fn client(url: &str) -> Client {
    let cfg = OllamaConfig {
        url: url.to_string(),
        classify_timeout_secs: Secs::new(1),
        reply_timeout_secs: Secs::new(1),
        ..OllamaConfig::default()
    };
    Client::new(&cfg, None).unwrap()
}

fn ctx(kind: ReplyKind, message: &str) -> ReplyContext {
    ReplyContext {
        kind,
        message: message.to_string(),
        team: "wizard".into(),
        channel: "Ops Alerts".into(),
        author: "ana".into(),
        task_id: "MC-142".into(),
        task_url: Some("https://planka.example.com/cards/77".into()),
    }
}

#[tokio::test]
async fn reply_is_generated_from_the_context_with_the_task_reference() {
    let fake = FakeOllama::start().await;
    fake.answer("Thanks Ana — the Planka 502 is tracked as MC-142, we're on it.");
    let c = ctx(ReplyKind::Incident, "planka returns 502 since 10 min");
    let r = reply::compose(Some(&client(fake.url())), &c).await;
    assert_eq!(
        r.path,
        ReplyPath::Llm {
            model: "qwen2.5-coder:32b".into()
        }
    );
    assert_eq!(
        r.text,
        "Thanks Ana — the Planka 502 is tracked as MC-142, we're on it."
    );

    let chat = &fake.chat_requests()[0];
    assert_eq!(chat.body["model"], "qwen2.5-coder:32b");
    assert_eq!(chat.body["stream"], false);
    let user = chat.body["messages"][1]["content"].as_str().unwrap();
    for want in [
        "Team: wizard",
        "Channel: Ops Alerts",
        "Author: ana",
        "Label: INCIDENT",
        "MC-142 (https://planka.example.com/cards/77)",
    ] {
        assert!(user.contains(want), "{want} missing from {user}");
    }
    assert_eq!(
        crate::support::ollama::fenced_message(user),
        "planka returns 502 since 10 min"
    );
    let system = chat.body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("SAME LANGUAGE"));
}

#[tokio::test]
async fn reply_that_forgets_the_task_gets_it_appended() {
    let fake = FakeOllama::start().await;
    fake.answer("Klar, ich lege den Kanal an.");
    let r = reply::compose(
        Some(&client(fake.url())),
        &ctx(ReplyKind::Task, "Kannst du bitte einen Kanal anlegen?"),
    )
    .await;
    assert!(
        r.text.starts_with("Klar, ich lege den Kanal an."),
        "{}",
        r.text
    );
    assert_eq!(
        r.text,
        "Klar, ich lege den Kanal an.\n\n(TASK: MC-142 (https://planka.example.com/cards/77))",
        "the reference on a line of its own"
    );
}

#[tokio::test]
async fn model_output_is_sanitized() {
    let fake = FakeOllama::start().await;
    let secret = "Sup3rS3cretPassw0rd";
    fake.answer(&format!(
        "@channel heads up: MC-142 created. Your password={secret} was noted.\n```\nsudo rm -rf"
    ));
    let msg = format!("can you fix the db login? password={secret}");
    let r = reply::compose(Some(&client(fake.url())), &ctx(ReplyKind::Task, &msg)).await;
    assert!(!r.text.contains("@channel"), "{}", r.text);
    assert!(!r.text.contains(secret), "{}", r.text);
    assert!(r.text.contains("[redacted]"));
    assert_eq!(r.text.matches("```").count() % 2, 0, "{}", r.text);
    assert!(r.text.chars().count() <= reply::MAX_REPLY_CHARS);

    fake.answer(&"very long ".repeat(500));
    let r = reply::compose(Some(&client(fake.url())), &ctx(ReplyKind::Task, "x")).await;
    assert!(
        r.text.chars().count() <= reply::MAX_REPLY_CHARS,
        "{}",
        r.text.len()
    );
    assert!(r.text.contains("MC-142"));
}

#[tokio::test]
async fn template_without_ollama_or_on_failure() {
    let c = ctx(ReplyKind::Incident, "mattermost is down");
    let r = reply::compose(None, &c).await;
    assert_eq!(
        r.path,
        ReplyPath::Template {
            reason: FallbackReason::NoLlm
        }
    );
    assert!(
        r.text.contains("INCIDENT") && r.text.contains("MC-142"),
        "{}",
        r.text
    );

    let r = reply::compose(Some(&client(&dead_url())), &c).await;
    assert_eq!(
        r.path,
        ReplyPath::Template {
            reason: FallbackReason::Unreachable
        }
    );

    let fake = FakeOllama::start().await;
    fake.set_chat_fault(Fault::Hang);
    let r = reply::compose(Some(&client(fake.url())), &c).await;
    assert_eq!(
        r.path,
        ReplyPath::Template {
            reason: FallbackReason::Timeout
        }
    );
    assert_eq!(r.text, reply::template(&c));

    let fake = FakeOllama::start().await;
    fake.set_models(&["llama3.1:8b"]);
    let r = reply::compose(Some(&client(fake.url())), &c).await;
    assert_eq!(
        r.path,
        ReplyPath::Template {
            reason: FallbackReason::ModelMissing
        }
    );

    let fake = FakeOllama::start().await;
    fake.answer("   ");
    let r = reply::compose(Some(&client(fake.url())), &c).await;
    assert!(
        matches!(
            r.path,
            ReplyPath::Template {
                reason: FallbackReason::Unusable(_)
            }
        ),
        "{:?}",
        r.path
    );
}
