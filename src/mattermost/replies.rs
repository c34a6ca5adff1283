//! Posting in a thread without loops, mass mentions or duplicates.
//!
//! What a reply says is decided elsewhere (`crate::reply`); this module is
//! the last line of defence on the wire: it neutralises `@channel`, `@all`
//! and `@here`, caps the length, refuses to answer the agent itself or a
//! bot, and makes a reply idempotent across a crash by tagging it with the
//! prop [`REPLY_PROP`] = source post id and looking for that tag in the
//! thread before posting.

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde_json::{Map, Value};

use super::client::{prop_flag, Client, CreatePost};
use super::poll::NewPost;

/// Post prop naming the post a reply answers; how a repeated cycle finds
/// the reply it already wrote.
pub const REPLY_PROP: &str = "ops_agent_reply_to";

/// A reply in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyOutcome {
    /// Id of the reply post.
    pub post_id: String,
    /// True when the reply already existed (a crash after posting) and nothing was sent.
    pub already_existed: bool,
}

/// Breaks `@channel`, `@all` and `@here` (any case) with a zero-width space
/// so they render as text and notify nobody; `@alice` stays a mention.
pub fn neutralize_mass_mentions(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re =
        RE.get_or_init(|| Regex::new(r"[@＠]((?i-u:channel|all|here))\b").expect("valid regex"));
    re.replace_all(text, "@\u{200B}$1").into_owned()
}

/// Caps `text` at `max_chars` characters (not bytes), marking the cut.
pub fn cap_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some(_) => {
            let keep = max_chars.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            format!("{}…", &text[..end])
        }
    }
}

/// Neutralise, then cap: what every post the agent writes goes through.
pub fn safe_text(text: &str, max_chars: usize) -> String {
    cap_chars(&neutralize_mass_mentions(text), max_chars)
}

/// Replies to `post` in its thread (root = the post's root, or the post),
/// tagged with `source_post_id`. When a reply by the agent with that tag is
/// already in the thread, returns it instead of posting a second one.
pub async fn reply_in_thread(
    client: &Client,
    post: &NewPost,
    text: &str,
    source_post_id: &str,
    max_chars: usize,
) -> Result<ReplyOutcome> {
    let own = client.own_id().await?;
    if post.user_id == own || post.props.contains_key(REPLY_PROP) {
        bail!(
            "refusing to reply to post {}: it is the agent's own post",
            post.id
        );
    }
    let flag = |k: &str| prop_flag(&post.props, k);
    if post.is_bot || flag("from_bot") || flag("from_webhook") {
        bail!(
            "refusing to reply to post {}: it was written by a bot or webhook",
            post.id
        );
    }
    let root = if post.root_id.is_empty() {
        post.id.clone()
    } else {
        post.root_id.clone()
    };
    let thread = client
        .thread(&root)
        .await
        .with_context(|| format!("looking for an earlier reply to post {source_post_id}"))?;
    let earlier = thread
        .posts
        .values()
        .filter(|p| p.user_id == own && p.delete_at == 0)
        .filter(|p| p.prop_str(REPLY_PROP) == Some(source_post_id))
        .min_by_key(|p| p.create_at);
    if let Some(p) = earlier {
        return Ok(ReplyOutcome {
            post_id: p.id.clone(),
            already_existed: true,
        });
    }
    let mut props = Map::new();
    props.insert(REPLY_PROP.into(), Value::String(source_post_id.to_string()));
    let created = client
        .create_post(&CreatePost {
            channel_id: post.channel_id.clone(),
            message: safe_text(text, max_chars),
            root_id: root,
            props,
        })
        .await
        .with_context(|| format!("replying to post {source_post_id}"))?;
    Ok(ReplyOutcome {
        post_id: created.id,
        already_existed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_mentions_are_neutralised_and_personal_ones_kept() {
        let cases = [
            ("ping @channel now", "ping @\u{200B}channel now"),
            ("@ALL, @Here!", "@\u{200B}ALL, @\u{200B}Here!"),
            ("＠here", "@\u{200B}here"),
            (
                "@alice @allison @channels-team",
                "@alice @allison @channels-team",
            ),
            ("mail a@here.com", "mail a@\u{200B}here.com"),
            ("no mentions", "no mentions"),
        ];
        for (input, want) in cases {
            assert_eq!(neutralize_mass_mentions(input), want, "{input}");
        }
    }

    #[test]
    fn cap_counts_chars_not_bytes() {
        assert_eq!(cap_chars("héllo", 10), "héllo");
        assert_eq!(cap_chars("héllo", 5), "héllo");
        assert_eq!(cap_chars("héllo wörld", 5), "héll…");
        assert_eq!(cap_chars("ééééé", 3).chars().count(), 3);
        let s = safe_text(&"@channel ".repeat(1000), 100);
        assert_eq!(s.chars().count(), 100);
        assert!(!s.contains("@channel"));
    }
}
