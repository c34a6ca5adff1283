//! Admitting what a read brought: the skip rules, each decision audited
//! once, the authors named, the survivors made [`NewPost`]s.

use std::collections::HashMap;
use std::sync::Arc;

use crate::mattermost::client::Client;
use crate::mattermost::poll::skip::{author_skip, skip_reason, Skip};
use crate::mattermost::poll::{users, MmState, NewPost};
use crate::mattermost::wire::Post;
use crate::observe::audit::{self, Event};

use super::Reader;

impl Reader {
    /// Applies the skip rules to `rows`, names the authors, and makes the
    /// survivors [`NewPost`]s, oldest first.
    pub(super) async fn admit(
        &mut self,
        client: &Client,
        state: &mut MmState,
        rows: Vec<Post>,
        since_ms: i64,
        backlog: Option<i64>,
    ) -> Vec<NewPost> {
        let Some(cur) = self.current.as_mut() else {
            return Vec::new();
        };
        let no_names: Vec<String> = Vec::new();
        for p in &rows {
            cur.answered.note(p, &self.own_id);
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut skipped = Vec::new();
        for p in rows {
            let known = state.users.get(&p.user_id);
            let rule = skip_reason(
                &p,
                known,
                since_ms,
                &self.own_id,
                &state.ignored_ids,
                &no_names,
                &state.handled,
            )
            .or_else(|| {
                (backlog.is_none() && cur.answered.covers(&p, self.cut.as_ref()))
                    .then_some(Skip::AnsweredBeforeCutOver)
            });
            if let Some(s) = rule {
                if s == Skip::AlreadyHandled && backlog.is_none() {
                    cur.seen.push((p.id.clone(), p.create_at));
                }
                skipped.push((s, p.id, p.channel_id, p.user_id));
                continue;
            }
            out.push(NewPost {
                username: p.user_id.as_str().into(),
                is_bot: false,
                team: Arc::clone(&cur.team),
                channel_id: Arc::clone(&cur.channel_id),
                channel_name: Arc::clone(&cur.channel_name),
                user_id: p.user_id.into(),
                id: p.id,
                root_id: p.root_id,
                message: p.message,
                create_at: p.create_at,
                update_at: p.update_at,
                props: p.props,
            });
        }
        for (s, id, channel, user) in skipped {
            self.skip(s, &id, &channel, &user);
        }
        users::refresh_authors(client, state, &out, self.now_ms).await;
        let mut names: HashMap<Arc<str>, Arc<str>> = HashMap::new();
        let mut authors: HashMap<Arc<str>, Arc<str>> = HashMap::new();
        let mut kept = Vec::with_capacity(out.len());
        for mut p in out {
            let user = state.users.get(&*p.user_id);
            let rule = author_skip(&p.user_id, user, &state.ignored_ids, &self.ignored_names);
            if let Some(s) = rule {
                self.skip(s, &p.id, &p.channel_id, &p.user_id);
                continue;
            }
            // One copy of each author's id and name for the batch.
            p.user_id = Arc::clone(authors.entry(Arc::clone(&p.user_id)).or_insert(p.user_id));
            if let Some(u) = user {
                let name = names
                    .entry(Arc::clone(&p.user_id))
                    .or_insert_with(|| u.username.as_str().into());
                p.username = Arc::clone(name);
            } else {
                p.username = Arc::clone(&p.user_id);
            }
            p.is_bot = user.is_some_and(|u| u.is_bot);
            kept.push(p);
        }
        kept.sort_unstable_by(|a, b| (a.create_at, &a.id).cmp(&(b.create_at, &b.id)));
        kept
    }

    /// Counts a skipped post; one a rule decided about goes into the audit
    /// trail once (the overlap reads it again next cycle).
    pub(super) fn skip(&mut self, s: Skip, id: &str, channel: &str, user: &str) {
        self.outcome.skipped.add(s);
        if !s.is_decision() {
            return;
        }
        let since = self.since_ms;
        let seen = self
            .audited
            .get_or_insert_with(|| audit::recent_values("post_skipped", "post", since - 60_000));
        if seen.insert(id.to_string()) {
            audit::record(Event::PostSkipped {
                post: id.to_string(),
                channel: channel.to_string(),
                author: user.to_string(),
                reason: s.code().into(),
            });
        }
    }
}
