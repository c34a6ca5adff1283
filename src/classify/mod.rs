//! Classification of chat posts into ROUTINE, TASK or INCIDENT.
//!
//! The LLM is asked first ([`prompt`]: a system prompt that knows the team,
//! the team's corrections as worked examples, the post fenced as data,
//! structured output where the server takes it); every label its answer
//! names unambiguously is used, every ambiguous answer falls back
//! ([`parse`]). When the LLM cannot help (none configured, down, too slow,
//! model not pulled, answer unusable) the fallback decides ([`fallback`]:
//! the keyword rules of [`keywords`], the statistical model of [`model`]
//! and the team's corrections), and the [`Decision`] records which path
//! decided (`llm` or `fallback`), why the LLM was not used, and which part
//! of the fallback decided (`rules`, `model`, `correction`), for the log,
//! the audit trail, the stats and the metrics.
//!
//! [`Triage::classify`] never fails: every post gets a label. Only a
//! [`Label`] can leave this module; the model's text never does (except a
//! short excerpt of an unusable answer, for diagnosis).

pub(crate) mod command;
pub(crate) mod corrections;
pub mod data;
pub mod eval;
mod fallback;
mod fold;
pub mod keywords;
mod lessons;
pub mod model;
mod normalize;
mod parse;
mod polite;
mod prompt;

use std::collections::HashMap;

use crate::bounded::Bounded;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::ollama::{self, ChatRequest, LlmError, LlmErrorKind, Purpose};

use corrections::Correction;
pub(crate) use data::Example;
use fallback::FallbackVerdict;
pub use fallback::{Because, Fallback, FallbackPart};
pub use prompt::label_schema;

/// The three labels; nothing else is ever a classification. Ordered by
/// seriousness (ROUTINE < TASK < INCIDENT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Label {
    /// Chatter, thanks, status updates: no task, no reply.
    Routine,
    /// A request for work: a task and a reply.
    Task,
    /// Something is broken now: a task and a reply.
    Incident,
}

impl Label {
    /// All labels, in report order.
    const ALL: [Label; 3] = [Label::Routine, Label::Task, Label::Incident];

    /// The wire/log spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Label::Routine => "ROUTINE",
            Label::Task => "TASK",
            Label::Incident => "INCIDENT",
        }
    }

    /// Whether posts with this label get a task and a reply.
    pub(crate) fn is_actionable(self) -> bool {
        self != Label::Routine
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[classify]` config section: the operator's extra keyword phrases,
/// one list per label, matched like the built-in ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    /// Extra phrases that point to INCIDENT.
    incident_phrases: Vec<String>,
    /// Extra phrases that point to TASK.
    task_phrases: Vec<String>,
    /// Extra phrases that point to ROUTINE.
    routine_phrases: Vec<String>,
}

impl ClassifyConfig {
    /// A phrase without any letter or digit would never match; say so at
    /// start-up instead of silently ignoring it.
    pub(crate) fn validate(&self) -> Result<()> {
        for (key, list) in [
            ("classify.incident_phrases", &self.incident_phrases),
            ("classify.task_phrases", &self.task_phrases),
            ("classify.routine_phrases", &self.routine_phrases),
        ] {
            for p in list {
                if !p.chars().any(char::is_alphanumeric) {
                    bail!("{key}: '{p}' has no letters or digits and can never match");
                }
                if p.chars().count() > 100 {
                    bail!(
                        "{key}: '{}…' is longer than 100 characters",
                        p.chars().take(30).collect::<String>()
                    );
                }
            }
        }
        Ok(())
    }
}

/// Why the fallback decided instead of the LLM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", content = "detail", rename_all = "snake_case")]
pub enum FallbackReason {
    /// No LLM configured, or `--no-llm`.
    NoLlm,
    /// The team corrected this text (or one nearly the same): its label is
    /// remembered, the LLM is not asked.
    Corrected,
    /// No model call fits in the time the cycle has left for chat work.
    NoTime,
    /// The server did not accept a connection.
    Unreachable,
    /// The model did not answer within the classification timeout.
    Timeout,
    /// The model is not pulled on the server.
    ModelMissing,
    /// The model answered, but not with exactly one label (excerpt).
    Unusable(String),
    /// Any other failure (HTTP 500, garbage body), with the error text.
    Error(String),
}

impl FallbackReason {
    /// A stable short name for stats counters and log fields.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            FallbackReason::NoLlm => "no_llm",
            FallbackReason::Corrected => "corrected",
            FallbackReason::NoTime => "no_time",
            FallbackReason::Unreachable => "unreachable",
            FallbackReason::Timeout => "timeout",
            FallbackReason::ModelMissing => "model_missing",
            FallbackReason::Unusable(_) => "unusable",
            FallbackReason::Error(_) => "error",
        }
    }

    /// Maps a model call failure to the reason recorded for the fallback.
    pub(crate) fn from_error(e: &LlmError) -> Self {
        match e.kind {
            LlmErrorKind::Unreachable => FallbackReason::Unreachable,
            LlmErrorKind::Timeout => FallbackReason::Timeout,
            LlmErrorKind::ModelMissing => FallbackReason::ModelMissing,
            LlmErrorKind::BadResponse | LlmErrorKind::Status(_) => {
                FallbackReason::Error(e.to_string())
            }
        }
    }
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FallbackReason::NoLlm => f.write_str("no LLM configured"),
            FallbackReason::Corrected => f.write_str("a correction remembered, LLM not asked"),
            FallbackReason::NoTime => f.write_str("no LLM call fits in the time left"),
            FallbackReason::Unreachable => f.write_str("Ollama unreachable"),
            FallbackReason::Timeout => f.write_str("Ollama timed out"),
            FallbackReason::ModelMissing => f.write_str("model not pulled"),
            FallbackReason::Unusable(a) => write!(f, "unusable answer {a:?}"),
            FallbackReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Which path produced the label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecisionPath {
    /// The model's answer, parsed strictly.
    Llm {
        /// The model that answered.
        model: String,
    },
    /// The fallback, because the LLM could not help.
    Fallback {
        /// Why the LLM was not used.
        reason: FallbackReason,
        /// Which part of the fallback decided.
        part: FallbackPart,
    },
}

/// A post's classification and how it came about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The label.
    pub label: Label,
    /// LLM or fallback, and why.
    pub path: DecisionPath,
    /// Wall time spent, model call included.
    pub elapsed_ms: u64,
    /// What made the fallback (or a correction's memory) decide, with its
    /// figures; `None` on the LLM path, whose answer is its own reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<Because>,
}

impl Decision {
    /// The one explanation of the decision, the same in `ops-agent
    /// classify`, the audit trail and `ops-agent eval`: which part decided
    /// (the LLM, a correction, the model or the rules), why the LLM did
    /// not when it did not, and the figures that decided.
    pub(crate) fn explain(&self) -> String {
        match (&self.path, &self.because) {
            (DecisionPath::Llm { model }, _) => format!("{} by the LLM ({model})", self.label),
            (DecisionPath::Fallback { reason, .. }, because) => {
                let who = because
                    .as_ref()
                    .map_or_else(|| "the fallback".to_string(), |b| b.render(self.label));
                match reason {
                    FallbackReason::NoLlm | FallbackReason::Corrected => {
                        format!("{} by {who}", self.label)
                    }
                    other => format!("{} by {who} [LLM not used: {other}]", self.label),
                }
            }
        }
    }
}

/// A post to classify: its text and the team it was posted in (whose
/// corrections, and only whose, are the LLM's worked examples).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Post<'p> {
    /// The message.
    pub(crate) text: &'p str,
    /// Its team's name; empty when unknown (no worked examples then).
    pub(crate) team: &'p str,
}

impl<'p> Post<'p> {
    /// A post of no known team.
    pub(crate) fn anywhere(text: &'p str) -> Post<'p> {
        Post { text, team: "" }
    }
}

/// Everything that labels the posts of one cycle: the LLM when there is
/// one, the fallback (rules and model) and the team's corrections, which
/// both use. Built once per cycle; the model inside is trained only if a
/// post needs the fallback.
pub(crate) struct Triage<'a> {
    llm: Option<&'a ollama::Client>,
    fallback: Fallback,
    /// Per team, its corrections (index in the list, scrubbed example):
    /// the worked examples of its posts' prompts, never another team's.
    shots: HashMap<String, Vec<(usize, Example)>>,
}

impl<'a> Triage<'a> {
    /// The classifier for `cfg`, taught by `corrections` (oldest first).
    pub(crate) fn new(
        llm: Option<&'a ollama::Client>,
        cfg: &ClassifyConfig,
        corrections: Vec<Correction>,
    ) -> Triage<'a> {
        let mut shots: HashMap<String, Vec<(usize, Example)>> = HashMap::new();
        for (i, c) in corrections.iter().enumerate() {
            if c.team.is_empty() {
                continue;
            }
            // A correction's text is a client's post: it may hold a
            // password, and it goes into a prompt whose answer the reply
            // model may echo.
            let example = Example {
                text: crate::scrub::text(&c.text).into_owned(),
                label: c.label,
            };
            shots.entry(c.team.clone()).or_default().push((i, example));
        }
        Triage {
            llm,
            fallback: Fallback::new(cfg, &corrections),
            shots,
        }
    }

    /// The fallback's answer with its reasons (rules, model, who decided).
    fn fallback_verdict(&self, text: &str) -> FallbackVerdict {
        self.fallback.classify(text)
    }

    /// The fallback's decision, recording why the model was not asked.
    pub(crate) fn fallback_decision(&self, text: &str, reason: FallbackReason) -> Decision {
        let start = tokio::time::Instant::now();
        self.fall_back(text, reason, None, start)
    }

    /// The fallback's decision, with the part that decided and its figures.
    fn fall_back(
        &self,
        text: &str,
        reason: FallbackReason,
        except: Option<usize>,
        start: tokio::time::Instant,
    ) -> Decision {
        let v = self.fallback.classify_except(text, except);
        Decision {
            label: v.label,
            path: DecisionPath::Fallback {
                reason,
                part: v.part,
            },
            elapsed_ms: start.elapsed().as_millis() as u64,
            because: Some(v.because),
        }
    }

    /// The worked examples for `post`: its own team's corrections only
    /// (but `except`), the most similar first.
    fn shots_for(&self, post: Post<'_>, except: Option<usize>) -> Vec<Example> {
        let own: Vec<Example> = self
            .shots
            .get(post.team)
            .map(|list| {
                list.iter()
                    .filter(|(i, _)| Some(*i) != except)
                    .map(|(_, e)| e.clone())
                    .collect()
            })
            .unwrap_or_default();
        prompt::select_shots(&own, post.text)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Asks the model; `Err` is why the fallback must decide.
    async fn ask_llm(
        &self,
        llm: &ollama::Client,
        post: Post<'_>,
        except: Option<usize>,
    ) -> Result<(Label, String), FallbackReason> {
        let model = llm.config().classify_model.clone();
        match llm.has_model(&model, Purpose::Classify).await {
            Ok(true) => {}
            Ok(false) => return Err(FallbackReason::ModelMissing),
            Err(e) => return Err(FallbackReason::from_error(&e)),
        }
        let shots = self.shots_for(post, except);
        let shots: Vec<&Example> = shots.iter().collect();
        let mut req =
            prompt::classify_request(&model, post, &shots, llm.supports_structured_output());
        if llm.thinks(&model) {
            req.max_tokens = prompt::THINKING_MAX_TOKENS;
        }
        let ask = |req: &ChatRequest| {
            let req = req.clone();
            async move {
                llm.chat(&req, Purpose::Classify)
                    .await
                    .map_err(|e| FallbackReason::from_error(&e))
            }
        };
        let mut answer = ask(&req).await?;
        if answer.thought || answer.cut_while_thinking() {
            llm.note_thinker(&model);
        }
        // Cut while thinking: the answer never came; once more with room.
        if answer.cut_while_thinking() && req.max_tokens < prompt::THINKING_MAX_TOKENS {
            req.max_tokens = prompt::THINKING_MAX_TOKENS;
            answer = ask(&req).await?;
        }
        let label = parse::parse_answer(&answer.content).map_err(FallbackReason::Unusable)?;
        Ok((label, model))
    }

    /// Classifies one post. Never fails: when the model cannot help, the
    /// fallback decides and the reason is logged and recorded.
    pub(crate) async fn classify(&self, post: Post<'_>) -> Decision {
        self.classify_except(post, None).await
    }

    /// Classifies one post as if correction `except` (an index in the list
    /// the triage was made with) had not been made: how `ops-agent eval`
    /// scores the corrections, with one triage for all of them.
    ///
    /// A post the team corrected (or one nearly the same) gets the
    /// corrected label without asking the LLM: a person said so about this
    /// very text, and a model that answered otherwise before may again.
    pub(crate) async fn classify_except(&self, post: Post<'_>, except: Option<usize>) -> Decision {
        let start = tokio::time::Instant::now();
        if let Some(r) = self.fallback.recall(post.text, except) {
            let reason = match self.llm {
                Some(_) => FallbackReason::Corrected,
                None => FallbackReason::NoLlm,
            };
            return Decision {
                label: r.label,
                path: DecisionPath::Fallback {
                    reason,
                    part: FallbackPart::Correction,
                },
                elapsed_ms: start.elapsed().as_millis() as u64,
                because: Some(Because::Correction {
                    post: r.post_id,
                    similarity: r.similarity,
                }),
            };
        }
        let outcome = match self.llm {
            None => Err(FallbackReason::NoLlm),
            Some(c) => self.ask_llm(c, post, except).await,
        };
        match outcome {
            Ok((label, model)) => Decision {
                label,
                path: DecisionPath::Llm { model },
                elapsed_ms: start.elapsed().as_millis() as u64,
                because: None,
            },
            Err(reason) => {
                if reason != FallbackReason::NoLlm {
                    let model = self
                        .llm
                        .map(|c| c.config().classify_model.as_str())
                        .unwrap_or("");
                    // Info: in a cycle, its one warning sums up the
                    // fallback (`ops-agent classify` prints the reason);
                    // a condition, so said once per cycle with a count.
                    tracing::info!(
                        target: crate::logging::CONDITION,
                        model,
                        reason = reason.code(),
                        detail = %reason,
                        "Classification fell back to the rules and the model."
                    );
                }
                self.fall_back(post.text, reason, except, start)
            }
        }
    }

    /// Classifies many posts with at most `concurrency` model calls in
    /// flight (the client's `ollama.concurrency`), starting no new post once
    /// `deadline` has passed. Calls already started finish (each is bounded
    /// by the classification timeout), so pass a deadline that leaves at
    /// least that much room before the cycle's own. The texts are borrowed:
    /// the chat stage's posts are classified without a copy of each message.
    pub(crate) async fn classify_many<K>(
        &self,
        posts: Vec<(K, Post<'_>)>,
        deadline: tokio::time::Instant,
    ) -> Batch<K> {
        let limit = self.llm.map_or(1, |c| c.config().concurrency);
        let mut queue = posts.into_iter();
        let mut in_flight = Bounded::new(limit);
        let mut done = Vec::with_capacity(queue.len());
        loop {
            while in_flight.has_room() && tokio::time::Instant::now() < deadline {
                let Some((key, post)) = queue.next() else {
                    break;
                };
                in_flight.push(async move { (key, self.classify(post).await) });
            }
            match in_flight.next().await {
                Some(finished) => done.push(finished),
                None => break,
            }
        }
        Batch {
            done,
            pending: queue.map(|(k, _)| k).collect(),
        }
    }
}

/// Classifies one post without corrections (see [`Triage::classify`]).
pub async fn classify(llm: Option<&ollama::Client>, cfg: &ClassifyConfig, text: &str) -> Decision {
    Triage::new(llm, cfg, Vec::new())
        .classify(Post::anywhere(text))
        .await
}

/// Result of [`classify_many`].
#[derive(Debug)]
pub struct Batch<K> {
    /// Posts classified, in completion order.
    pub done: Vec<(K, Decision)>,
    /// Posts not started before the deadline, in input order: they stay
    /// pending in state and are classified next cycle.
    pub pending: Vec<K>,
}

/// Classifies many posts without corrections (see [`Triage::classify_many`]).
pub async fn classify_many<K: Clone>(
    llm: Option<&ollama::Client>,
    cfg: &ClassifyConfig,
    posts: Vec<(K, String)>,
    deadline: tokio::time::Instant,
) -> Batch<K> {
    let posts = posts
        .iter()
        .map(|(k, text)| (k.clone(), Post::anywhere(text)))
        .collect();
    Triage::new(llm, cfg, Vec::new())
        .classify_many(posts, deadline)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_serde_is_uppercase_and_closed() {
        assert_eq!(
            serde_json::to_string(&Label::Incident).unwrap(),
            "\"INCIDENT\""
        );
        assert_eq!(
            serde_json::from_str::<Label>("\"TASK\"").unwrap(),
            Label::Task
        );
        assert!(serde_json::from_str::<Label>("\"URGENT\"").is_err());
        assert!(serde_json::from_str::<Label>("\"task\"").is_err());
    }

    #[test]
    fn decision_json_shape() {
        let d = Decision {
            label: Label::Task,
            path: DecisionPath::Fallback {
                reason: FallbackReason::Unusable("TASK or INCIDENT".into()),
                part: FallbackPart::Model,
            },
            elapsed_ms: 3,
            because: None,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            json!({"label":"TASK","path":{"kind":"fallback","reason":{"why":"unusable","detail":"TASK or INCIDENT"},"part":"model"},"elapsed_ms":3})
        );
        let v = serde_json::to_value(DecisionPath::Fallback {
            reason: FallbackReason::NoLlm,
            part: FallbackPart::Correction,
        })
        .unwrap();
        assert_eq!(
            v,
            json!({"kind":"fallback","reason":{"why":"no_llm"},"part":"correction"})
        );
        let v = serde_json::to_value(DecisionPath::Llm { model: "m".into() }).unwrap();
        assert_eq!(v, json!({"kind":"llm","model":"m"}));
    }

    #[test]
    fn config_validation() {
        ClassifyConfig::default().validate().unwrap();
        let c = ClassifyConfig {
            task_phrases: vec!["--".into()],
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("classify.task_phrases: '--'"), "{e}");
    }

    #[tokio::test]
    async fn without_llm_the_fallback_decides() {
        let d = classify(None, &ClassifyConfig::default(), "planka is down").await;
        assert_eq!(d.label, Label::Incident);
        assert_eq!(
            d.path,
            DecisionPath::Fallback {
                reason: FallbackReason::NoLlm,
                part: FallbackPart::Model,
            }
        );
    }

    #[tokio::test]
    async fn many_stops_starting_after_the_deadline() {
        let posts: Vec<(u32, String)> = (0..5).map(|i| (i, format!("post {i}"))).collect();
        let past = tokio::time::Instant::now();
        let b = classify_many(None, &ClassifyConfig::default(), posts.clone(), past).await;
        assert!(b.done.is_empty());
        assert_eq!(b.pending, vec![0, 1, 2, 3, 4]);
        let future = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let b = classify_many(None, &ClassifyConfig::default(), posts, future).await;
        assert_eq!(b.done.len(), 5);
        assert!(b.pending.is_empty());
    }
}
