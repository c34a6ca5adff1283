//! Posting in a thread without loops, mass mentions or duplicates.
//!
//! What a reply says is decided elsewhere (`crate::reply`); this module is
//! the last line of defence on the wire: it applies the chat policy
//! ([`crate::text::for_chat`]) again, refuses to answer the agent itself or a
//! bot, and makes a reply idempotent across a crash by tagging it with the
//! prop [`REPLY_PROP`] = source post id and looking for that tag in the
//! thread before posting.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::client::Client;
use super::poll::NewPost;
use super::wire::{prop_flag, CreatePost};

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
    if *post.user_id == *own || post.props.contains_key(REPLY_PROP) {
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
            channel_id: post.channel_id.to_string(),
            message: crate::text::for_chat(text, max_chars),
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
