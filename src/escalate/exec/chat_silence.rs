//! A silence asked for in chat: judged by the escalation's rules, made once
//! per post, answered in the post's thread.

use anyhow::Result;

use crate::escalate::silence::{self, ChatAnswer, SilenceRequest};
use crate::escalate::{EscalationConfig, EscalationState};
use crate::health::Checks;
use crate::mattermost::{reply_in_thread, Client, NewPost};
use crate::observe::audit::{self, Event};

/// What a chat silence command is judged by, and the cap of its answer:
/// the chat stage's settings, as the escalation room reads them.
#[derive(Clone, Copy)]
pub struct SilenceRules<'a> {
    /// `[escalation]`: who may silence (`silence_allowlist`).
    pub cfg: &'a EscalationConfig,
    /// The configured checks: what can be silenced.
    pub checks: &'a Checks,
    /// `mattermost.max_reply_chars`: the answer's cap.
    pub max_chars: usize,
}

/// Answers the chat silence command of one polled post (parsed once, by
/// the chat stage's router): the silence is made (allowed users only, once
/// per post) and the answer is posted in the thread; the caller then marks
/// the post handled without classifying it. An error (the reply failed)
/// leaves the post pending; the retry makes no second silence.
pub async fn answer_silence_post(
    mm: &Client,
    post: &NewPost,
    request: Result<SilenceRequest, String>,
    rules: SilenceRules<'_>,
    state: &mut EscalationState,
    now_ms: i64,
) -> Result<ChatAnswer> {
    let answer = silence::answer_chat(
        request,
        &post.username,
        &post.id,
        &rules.cfg.silence_allowlist,
        &rules.checks.services(),
        &mut state.silences,
        now_ms,
    );
    match &answer {
        ChatAnswer::Created(s) => {
            tracing::warn!(target = %s.target, by = %s.by, until = %crate::time::rfc3339_ms(s.until_ms), "Silence created from chat: {}", s.reason);
            silence::audit_created(s);
        }
        ChatAnswer::Refused => {
            tracing::info!(user = %post.username, post = %post.id, "Silence request refused: not on the allowlist.");
            audit::record(Event::SilenceRefused {
                post: post.id.clone(),
                by: post.username.to_string(),
                why: "not on escalation.silence_allowlist".into(),
            });
        }
        ChatAnswer::Invalid(why) => {
            tracing::info!(post = %post.id, "Silence request not understood: {why}");
            audit::record(Event::SilenceRefused {
                post: post.id.clone(),
                by: post.username.to_string(),
                why: audit::detail(&format!("not understood: {why}")),
            });
        }
    }
    reply_in_thread(
        mm,
        post,
        &answer.reply_text(&post.username, now_ms),
        &post.id,
        rules.max_chars,
    )
    .await?;
    Ok(answer)
}
