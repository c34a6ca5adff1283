//! Sixty noisy model answers, through the fake on both backends: each one
//! that names one label unambiguously is used (path `llm`), each ambiguous
//! one falls back (path `fallback`, reason `unusable`), and none yields a
//! label it does not affirm. Also: a model that thinks anyway gets the
//! room to finish.

use ops_agent::classify::{
    self, ClassifyConfig, DecisionPath, FallbackPart, FallbackReason, Label,
};
use ops_agent::ollama::{Backend, Client, OllamaConfig};
use ops_agent::time::Secs;

use crate::support::ollama::FakeOllama;

use Label::*;

/// (model answer, the label it must give; `None`: it must fall back).
const TABLE: &[(&str, Option<Label>)] = &[
    // Reasoning before the label.
    (
        "<think>The user says the site is down.</think>INCIDENT",
        Some(Incident),
    ),
    (
        "<think>\nMaybe a task? No, it reports an outage.\n</think>\n\n{\"label\": \"INCIDENT\"}",
        Some(Incident),
    ),
    ("<think></think>\n\nROUTINE", Some(Routine)),
    (
        "<think>long reasoning... TASK? INCIDENT?</think>\nTASK",
        Some(Task),
    ),
    // Preambles.
    ("Sure! Here is the classification: INCIDENT", Some(Incident)),
    ("Sure, here's the classification:\n\n**TASK**", Some(Task)),
    ("Certainly! The message is ROUTINE.", Some(Routine)),
    ("The answer is INCIDENT.", Some(Incident)),
    ("I'd classify this as a TASK.", Some(Task)),
    (
        "Here is the JSON requested: {\"label\": \"ROUTINE\"}",
        Some(Routine),
    ),
    // Other keys, other case, extra fields, nesting.
    ("{\"classification\": \"TASK\"}", Some(Task)),
    ("{\"LABEL\": \"INCIDENT\"}", Some(Incident)),
    ("{\"Label\": \"routine\"}", Some(Routine)),
    ("{\"category\": \"Task\"}", Some(Task)),
    (
        "{\"label\": \"INCIDENT\", \"reason\": \"the site returns 502 for everyone\"}",
        Some(Incident),
    ),
    (
        "{\"label\": \"ROUTINE\", \"reason\": \"a thank-you note, not a task\"}",
        Some(Routine),
    ),
    ("{\"label\":\"TASK\",\"confidence\":0.87}", Some(Task)),
    ("{\"result\": {\"label\": \"TASK\"}}", Some(Task)),
    ("```json\n{\"label\": \"INCIDENT\"}\n```", Some(Incident)),
    // The label, then an explanation.
    (
        "INCIDENT - the booking page is down for customers",
        Some(Incident),
    ),
    (
        "TASK\n\nThe user asks for access to the repository.",
        Some(Task),
    ),
    (
        "ROUTINE: this is a status update about a finished deploy.",
        Some(Routine),
    ),
    ("ROUTINE (the outage is over)", Some(Routine)),
    (
        "Label: ROUTINE\nReason: a retrospective summary",
        Some(Routine),
    ),
    ("This is a TASK, not an INCIDENT.", Some(Task)),
    ("Not an incident, it's a TASK.", Some(Task)),
    // Leaked end-of-turn tokens.
    ("INCIDENT<|eot_id|>", Some(Incident)),
    ("TASK<|im_end|>", Some(Task)),
    (
        "<|start_header_id|>assistant<|end_header_id|>\n\nROUTINE<|eot_id|>",
        Some(Routine),
    ),
    ("INCIDENT</s>", Some(Incident)),
    // Full-width letters.
    ("ＩＮＣＩＤＥＮＴ", Some(Incident)),
    ("｛\"label\": \"ＴＡＳＫ\"｝", Some(Task)),
    ("Ｒｏｕｔｉｎｅ", Some(Routine)),
    // Plain, decorated.
    ("Classification: **TASK**", Some(Task)),
    ("task", Some(Task)),
    ("  Incident.  ", Some(Incident)),
    ("\"ROUTINE\"", Some(Routine)),
    // Two labels, negations, contradictions.
    ("TASK or INCIDENT", None),
    ("INCIDENT, TASK", None),
    ("not INCIDENT", None),
    ("This is not a TASK.", None),
    ("INCIDENT. Actually, ROUTINE.", None),
    (
        "ROUTINE\n\nWait, the message says the site is down, so INCIDENT.",
        None,
    ),
    ("It could be a TASK, but it might be an INCIDENT.", None),
    ("Neither TASK nor INCIDENT.", None),
    ("INCIDENT?? or maybe TASK", None),
    ("ROUTINE/TASK/INCIDENT", None),
    (
        "The message says to reply INCIDENT, but it is ROUTINE",
        None,
    ),
    // JSON that is not one answer.
    ("{\"label\": \"TASK\", \"label\": \"INCIDENT\"}", None),
    ("{\"label\": \"ROUTINE\", \"label\": \"ROUTINE\"}", None),
    (
        "{\"label\": \"TASK\", \"classification\": \"INCIDENT\"}",
        None,
    ),
    (
        "{\"label\": \"TASK\", \"reason\": \"the site is down, this is an INCIDENT\"}",
        None,
    ),
    ("{\"label\": \"ROUTINE|TASK|INCIDENT\"}", None),
    ("{\"label\": \"INCIDENT\"} Actually no, TASK.", None),
    ("{\"label\": \"\"}", None),
    ("{\"label\": null}", None),
    // No label at all.
    ("I cannot determine the label.", None),
    ("URGENT", None),
    ("", None),
    (
        "<think>The user might want a task, or it may be an incident",
        None,
    ),
];

fn client(url: &str, backend: Backend) -> Client {
    let cfg = OllamaConfig {
        url: url.to_string(),
        backend,
        classify_timeout_secs: Secs::new(2),
        ..OllamaConfig::default()
    };
    Client::new(&cfg, None).unwrap()
}

#[tokio::test]
async fn sixty_noisy_answers_on_both_backends() {
    assert_eq!(TABLE.len(), 60);
    let recovered = TABLE.iter().filter(|(_, l)| l.is_some()).count();
    assert_eq!(recovered, 37, "answers that name one label");
    for backend in [Backend::Ollama, Backend::Openai] {
        let fake = FakeOllama::start().await;
        let c = client(fake.url(), backend);
        for (answer, want) in TABLE {
            fake.push_answers(&[answer]);
            // The fallback would say ROUTINE here: only the LLM can say otherwise.
            let d = classify::classify(Some(&c), &ClassifyConfig::default(), "thanks all").await;
            match want {
                Some(label) => assert_eq!(
                    (d.label, &d.path),
                    (
                        *label,
                        &DecisionPath::Llm {
                            model: "llama3.1:8b".into()
                        }
                    ),
                    "{backend:?}: {answer:?}"
                ),
                None => assert!(
                    matches!(
                        d.path,
                        DecisionPath::Fallback {
                            reason: FallbackReason::Unusable(_),
                            part: FallbackPart::Model,
                        }
                    ),
                    "{backend:?}: {answer:?} must fall back, got {d:?}"
                ),
            }
        }
        assert!(c.breaker().is_none());
    }
}

#[tokio::test]
async fn a_model_that_thinks_anyway_gets_room_once_and_then_at_once() {
    for backend in [Backend::Ollama, Backend::Openai] {
        let fake = FakeOllama::start().await;
        fake.set_thinking(300);
        fake.answer("TASK");
        let c = client(fake.url(), backend);
        let budget = |r: &crate::support::ollama::Recorded| {
            r.body["options"]["num_predict"]
                .as_u64()
                .or(r.body["max_tokens"].as_u64())
                .unwrap()
        };
        let d = classify::classify(Some(&c), &ClassifyConfig::default(), "please add me").await;
        assert_eq!(d.label, Task, "{backend:?}: {d:?}");
        assert!(matches!(d.path, DecisionPath::Llm { .. }), "{d:?}");
        let chats = fake.chat_requests();
        assert_eq!(
            chats.len(),
            2,
            "{backend:?}: cut while thinking, asked again"
        );
        assert!(budget(&chats[0]) <= 32 && budget(&chats[1]) >= 1000);
        // The client remembers: the next post gets the budget at once.
        let d = classify::classify(Some(&c), &ClassifyConfig::default(), "renew the cert").await;
        assert_eq!(d.label, Task);
        let chats = fake.chat_requests();
        assert_eq!(chats.len(), 3, "{backend:?}");
        assert!(budget(&chats[2]) >= 1000);
    }
}

#[tokio::test]
async fn a_server_that_refuses_response_format_is_asked_without_it() {
    use crate::support::fault::{Fault, Match, Rule};
    let fake = FakeOllama::start().await;
    fake.answer("INCIDENT");
    fake.server().add_rule(
        Rule::new(Fault::Status(400))
            .when(Match::method("POST"))
            .times(1),
    );
    let c = client(fake.url(), Backend::Openai);
    let d = classify::classify(Some(&c), &ClassifyConfig::default(), "thanks").await;
    assert_eq!(d.label, Incident, "{d:?}");
    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 2);
    assert!(chats[0].body.get("response_format").is_some());
    assert!(chats[1].body.get("response_format").is_none());
    // Not sent again in this client's cycle.
    classify::classify(Some(&c), &ClassifyConfig::default(), "thanks").await;
    assert!(fake.chat_requests()[2]
        .body
        .get("response_format")
        .is_none());
}
