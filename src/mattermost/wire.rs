//! The Mattermost API v4 objects the agent reads and writes, as the server
//! sends them (`server/public/model`): only the fields the agent uses;
//! unknown fields are ignored, absent ones default.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A Mattermost user as the API returns it (fields we use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    /// User id.
    pub(crate) id: String,
    /// Username (without @).
    pub(crate) username: String,
    /// Bot accounts never get a reply.
    pub(crate) is_bot: bool,
    /// Space-separated roles.
    roles: String,
    /// Non-zero when deactivated.
    pub(crate) delete_at: i64,
}

/// A team.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Team {
    /// Team id.
    pub(crate) id: String,
    /// URL name, which the config uses.
    name: String,
    /// Name shown in the UI.
    display_name: String,
}

/// A channel as listed for a member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Channel {
    /// Channel id.
    pub(crate) id: String,
    /// Owning team; "" for direct and group messages.
    pub(crate) team_id: String,
    /// `O` public, `P` private, `D` direct, `G` group.
    #[serde(rename = "type")]
    kind: String,
    /// URL name.
    pub(crate) name: String,
    /// Name shown in the UI.
    display_name: String,
    /// create_at of the newest post: the cheap "anything new?" test.
    pub(crate) last_post_at: i64,
    /// Number of posts, for status output.
    pub(crate) total_msg_count: i64,
    /// Non-zero when archived.
    delete_at: i64,
}

/// A post (fields we use; unknown ones are ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Post {
    /// Post id.
    pub(crate) id: String,
    /// Server time of creation, epoch ms.
    pub(crate) create_at: i64,
    /// Bumped by edits, reactions, pins, replies and deletion.
    pub(crate) update_at: i64,
    /// Set when the message was edited.
    pub(crate) edit_at: i64,
    /// Non-zero when deleted.
    pub(crate) delete_at: i64,
    /// Author.
    pub(crate) user_id: String,
    /// Channel.
    pub(crate) channel_id: String,
    /// Thread root; "" for a top-level post.
    pub(crate) root_id: String,
    /// Text.
    pub(crate) message: String,
    /// Non-empty for system messages.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// Free-form properties (`from_bot`, `from_webhook`, our reply tag).
    pub(crate) props: Map<String, Value>,
}

/// True when a boolean-ish prop is set: the server writes `"true"`
/// (string) but older integrations send a JSON boolean.
pub(crate) fn prop_flag(props: &Map<String, Value>, key: &str) -> bool {
    match props.get(key) {
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

impl Post {
    /// True when a boolean-ish prop is set: the server writes `"true"`
    /// (string) but older integrations send a JSON boolean.
    pub(crate) fn prop_flag(&self, key: &str) -> bool {
        prop_flag(&self.props, key)
    }

    /// A string prop, if present.
    pub(crate) fn prop_str(&self, key: &str) -> Option<&str> {
        self.props.get(key).and_then(Value::as_str)
    }
}

/// An emoji reaction on a post: how a team member acknowledges an alert
/// without writing a word.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Reaction {
    /// Who reacted.
    pub(crate) user_id: String,
    /// The post reacted to.
    pub(crate) post_id: String,
    /// The emoji, without colons (`+1`, `eyes`).
    pub(crate) emoji_name: String,
    /// When (epoch ms, server clock).
    pub(crate) create_at: i64,
}

/// A list of posts: iterate `order`; `posts` may hold extra thread roots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PostList {
    /// Ids of the posts this answer is about, newest first.
    pub(crate) order: Vec<String>,
    /// The posts by id, including thread context not in `order`.
    pub(crate) posts: HashMap<String, Post>,
    /// Paging hints from the server.
    next_post_id: String,
    /// Paging hints from the server.
    prev_post_id: String,
    /// Paging hint from the server.
    has_next: bool,
}

/// Body of `POST /api/v4/posts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct CreatePost {
    /// Target channel.
    pub(crate) channel_id: String,
    /// Text (already sanitised and capped by the caller).
    pub(crate) message: String,
    /// Thread root, or "" for a top-level post.
    pub(crate) root_id: String,
    /// Props, e.g. the reply tag that makes replies idempotent.
    pub(crate) props: Map<String, Value>,
}
