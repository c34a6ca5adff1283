//! The Mattermost module against the stateful fake server: polling exactly
//! once, skip rules, request cost, 429/401/down, reply idempotency, status.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use ops_agent::mattermost::client::MmError;
use ops_agent::mattermost::{
    mark_handled, next_cursor, reply_in_thread, start, status, Client, Credentials,
    MattermostConfig, MmErrorKind, MmState, NewPost, PollOutcome,
};
use ops_agent::secret::Secret;
use ops_agent::time::Secs;
use serde_json::{Map, Value};

use crate::support::fault::Fault;
use crate::support::mattermost::{FakeMattermost, PostSpec};

use tokio::time::Instant;

const TEAMS: [&str; 4] = ["basic", "wizard", "rendrom", "riad"];

struct Env {
    fake: FakeMattermost,
    agent: String,
    alice: String,
    john: String,
    bot: String,
    token: String,
    teams: Vec<String>,
}

async fn setup() -> Env {
    let fake = FakeMattermost::start().await;
    let agent = fake.add_user("opsbot", "agent-pw");
    let alice = fake.add_user("alice", "pw");
    let john = fake.add_user("john", "pw");
    let bot = fake.add_bot("ci-bot");
    let token = fake.add_token(&agent);
    let members = [agent.as_str(), alice.as_str(), john.as_str(), bot.as_str()];
    let teams = TEAMS.iter().map(|t| fake.add_team(t, &members)).collect();
    Env {
        fake,
        agent,
        alice,
        john,
        bot,
        token,
        teams,
    }
}

impl Env {
    fn cfg(&self) -> MattermostConfig {
        MattermostConfig {
            url: self.fake.url(),
            timeout_secs: Secs::new(5),
            ..Default::default()
        }
    }

    fn client(&self) -> Client {
        let creds = Credentials::Token {
            token: Secret::new(self.token.clone()),
            source: "test".into(),
        };
        Client::new(&self.fake.url(), creds, Duration::from_secs(5)).unwrap()
    }

    fn login_client(&self, cache: &Path) -> Client {
        let creds = Credentials::Login {
            login_id: "opsbot".into(),
            password: Secret::new("agent-pw"),
            cache_path: cache.to_path_buf(),
        };
        Client::new(&self.fake.url(), creds, Duration::from_secs(5)).unwrap()
    }

    fn channel(&self, team: usize, name: &str) -> String {
        let m = [
            self.agent.as_str(),
            self.alice.as_str(),
            self.john.as_str(),
            self.bot.as_str(),
        ];
        self.fake.add_channel(&self.teams[team], name, &m)
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[derive(Debug)]
/// One poll as a cycle that handles every post makes it: each batch taken
/// as the reader hands it over and marked handled, then the figures.
struct Polled {
    /// The posts in the order they were handed over.
    posts: Vec<NewPost>,
    /// Whether every batch came oldest first.
    batches_sorted: bool,
    outcome: PollOutcome,
}

impl std::ops::Deref for Polled {
    type Target = PollOutcome;
    fn deref(&self) -> &PollOutcome {
        &self.outcome
    }
}

async fn poll(
    client: &Client,
    cfg: &MattermostConfig,
    state: &mut MmState,
    since: i64,
    now: i64,
    deadline: Instant,
) -> Result<Polled, MmError> {
    let mut reader = start(client, cfg, state, since, now, deadline).await?;
    let mut posts = Vec::new();
    let mut batches_sorted = true;
    while let Some(batch) = reader.next_batch(client, state).await {
        batches_sorted &= batch.windows(2).all(|w| w[0].create_at <= w[1].create_at);
        for p in &batch {
            mark_handled(state, &p.id, p.create_at);
        }
        posts.extend(batch);
    }
    reader.finish(state);
    Ok(Polled {
        posts,
        batches_sorted,
        outcome: reader.outcome,
    })
}

async fn poll_all(env: &Env, client: &Client, state: &mut MmState, since: i64) -> Polled {
    let now = env.fake.now_ms();
    poll(client, &env.cfg(), state, since, now, deadline())
        .await
        .expect("poll")
}

fn assert_unique(o: &Polled) -> HashSet<String> {
    let ids: HashSet<String> = o.posts.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids.len(), o.posts.len(), "a post was handed over twice");
    assert!(o.batches_sorted, "a batch not sorted by create_at");
    ids
}

#[tokio::test]
async fn a_thousand_posts_in_fifty_channels_come_back_exactly_once() {
    let env = setup().await;
    let channels: Vec<(String, usize)> = (0..50)
        .map(|i| (env.channel(i % 4, &format!("ch{i}")), i % 4))
        .collect();
    let since = env.fake.now_ms() - 1;
    let mut want = HashSet::new();
    let roots: Vec<String> = channels
        .iter()
        .map(|(c, _)| env.fake.post(c, &env.alice, "root"))
        .collect();
    want.extend(roots.iter().cloned());
    for n in 0..950 {
        let i = n % 50;
        // Some replies, so roots show up in `posts` but not in `order`.
        let id = if n % 4 == 3 {
            env.fake.reply(&roots[i], &env.alice, &format!("reply {n}"))
        } else {
            env.fake
                .post(&channels[i].0, &env.alice, &format!("post {n}"))
        };
        want.insert(id);
    }
    assert_eq!(want.len(), 1000);
    let client = env.client();
    let mut state = MmState::default();
    let o = poll_all(&env, &client, &mut state, since).await;
    assert!(o.complete, "{:?}", o.teams_failed);
    let got = assert_unique(&o);
    assert_eq!(got, want);
    assert_eq!(o.channels_fetched, 50);
    let p = &o.posts[0];
    assert_eq!(&*p.username, "alice");
    assert!(TEAMS.contains(&&*p.team));
    assert!(p.channel_name.starts_with("ch"));
    assert_eq!(o.requests as usize, env.fake.requests().len());
}

#[tokio::test]
async fn a_channel_over_the_since_cap_is_backfilled() {
    let env = setup().await;
    let ch = env.channel(0, "busy");
    let quiet = env.channel(1, "quiet");
    let old = env.fake.post(&ch, &env.alice, "before the cursor");
    let old_quiet = env.fake.post(&quiet, &env.alice, "before the cursor");
    let since = env.fake.now_ms();
    env.fake.advance_clock(5);
    let mut want = HashSet::new();
    for n in 0..1250 {
        want.insert(env.fake.post(&ch, &env.alice, &format!("burst {n}")));
    }
    env.fake.react(&old); // update_at moves, create_at does not: not new
    env.fake.react(&old_quiet); // and last_post_at does not move: not even fetched
    let client = env.client();
    let mut state = MmState::default();
    let o = poll_all(&env, &client, &mut state, since).await;
    assert_eq!(assert_unique(&o), want);
    assert_eq!(o.channels_backfilled, 1);
    assert_eq!(o.skipped.before_cursor, 1);
    assert_eq!(o.channels_fetched, 1);
    assert!(
        env.fake
            .count_requests("GET", &format!("/channels/{ch}/posts"))
            > 7
    );
}

#[tokio::test]
async fn skipped_posts_are_never_handed_over() {
    let env = setup().await;
    let ch = env.channel(0, "town-square");
    let since = env.fake.now_ms();
    env.fake.advance_clock(5);
    let spec = |user: &str, props: &[(&str, &str)], kind: &str| {
        let mut p = Map::new();
        for (k, v) in props {
            p.insert(k.to_string(), Value::String(v.to_string()));
        }
        PostSpec {
            channel_id: ch.clone(),
            user_id: user.into(),
            message: "x".into(),
            kind: kind.into(),
            props: p,
            ..Default::default()
        }
    };
    env.fake.post(&ch, &env.john, "ignored by username");
    env.fake.post(&ch, &env.bot, "bot account");
    env.fake
        .post_spec(spec(&env.alice, &[("from_webhook", "true")], ""));
    env.fake
        .post_spec(spec(&env.alice, &[("from_bot", "true")], ""));
    env.fake
        .post_spec(spec(&env.alice, &[], "system_join_channel"));
    env.fake.post(&ch, &env.agent, "the agent itself");
    let deleted = env.fake.post(&ch, &env.alice, "oops");
    env.fake.delete(&deleted);
    let good = env.fake.post(&ch, &env.alice, "disk full on db1");

    let client = env.client();
    let mut state = MmState::default();
    let o = poll_all(&env, &client, &mut state, since).await;
    let ids: Vec<&str> = o.posts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [good.as_str()]);
    let s = &o.skipped;
    assert_eq!(
        (s.ignored_user, s.bot, s.webhook, s.system, s.own, s.deleted),
        (1, 2, 1, 1, 1, 1),
        "{s:?}"
    );

    // Ignoring by user id works as well as by username.
    let mut cfg = env.cfg();
    cfg.ignored_users = vec![env.alice.clone()];
    let mut state = MmState::default();
    let o = poll(
        &client,
        &cfg,
        &mut state,
        since,
        env.fake.now_ms(),
        deadline(),
    )
    .await
    .unwrap();
    assert!(o.posts.iter().all(|p| *p.user_id != *env.alice));
    assert!(o.posts.iter().any(|p| *p.user_id == *env.john));
}

#[tokio::test]
async fn handled_posts_that_are_edited_or_answered_are_not_handed_over_again() {
    let env = setup().await;
    let ch = env.channel(2, "ops");
    let since = env.fake.now_ms();
    env.fake.advance_clock(5);
    let p = env.fake.post(&ch, &env.alice, "nginx is down");
    let client = env.client();
    let mut state = MmState::default();
    let o1 = poll_all(&env, &client, &mut state, since).await;
    assert_eq!(o1.posts.len(), 1);
    mark_handled(&mut state, &p, o1.posts[0].create_at);
    let cursor = next_cursor(None, since, &o1);
    // Server time at the poll's start, to the second.
    assert!(
        cursor > since - 1000 && cursor < o1.posts[0].create_at + 1000,
        "{cursor}"
    );

    env.fake.advance_clock(1000);
    env.fake.edit(&p, "nginx is down (edited)");
    env.fake.react(&p);
    env.fake.reply(&p, &env.john, "ignored reply");
    let q = env.fake.post(&ch, &env.alice, "and redis too");
    let o2 = poll_all(&env, &client, &mut state, cursor - 120_000).await;
    let ids: Vec<&str> = o2.posts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [q.as_str()]);
    assert_eq!(o2.skipped.already_handled, 1);
}

#[tokio::test]
async fn nothing_new_costs_one_request_per_team() {
    let env = setup().await;
    let chans: Vec<String> = (0..8)
        .map(|i| env.channel(i % 4, &format!("c{i}")))
        .collect();
    let since = env.fake.now_ms();
    env.fake.advance_clock(5);
    for c in &chans {
        env.fake.post(c, &env.alice, "hello");
    }
    let client = env.client();
    let mut state = MmState::default();
    let o1 = poll_all(&env, &client, &mut state, since).await;
    for p in &o1.posts {
        mark_handled(&mut state, &p.id, p.create_at);
    }
    let c1 = next_cursor(None, since, &o1);
    env.fake.advance_clock(300_000);
    let o2 = poll_all(&env, &client, &mut state, c1 - 120_000).await;
    assert!(o2.posts.is_empty());
    let c2 = next_cursor(Some(c1), c1 - 120_000, &o2);
    assert!(c2 > c1);
    env.fake.advance_clock(300_000);
    env.fake.clear_requests();
    let o3 = poll_all(&env, &client, &mut state, c2 - 120_000).await;
    assert!(o3.posts.is_empty() && o3.complete);
    assert_eq!(o3.requests, 4);
    let reqs = env.fake.requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    assert!(reqs
        .iter()
        .all(|r| r.path.ends_with("/channels") && r.path.starts_with("/api/v4/users/me/teams/")));
}

#[tokio::test]
async fn rate_limit_within_the_deadline_is_waited_out() {
    let env = setup().await;
    let ch = env.channel(0, "c");
    let since = env.fake.now_ms();
    env.fake.advance_clock(5);
    let p = env.fake.post(&ch, &env.alice, "hi");
    env.fake.rate_limit_next(2, 1);
    let client = env.client();
    let mut state = MmState::default();
    let o = poll_all(&env, &client, &mut state, since).await;
    assert!(o.complete, "{:?}", o.teams_failed);
    assert_eq!(o.posts.len(), 1);
    assert_eq!(o.posts[0].id, p);
}

#[tokio::test]
async fn rate_limit_past_the_deadline_stops_one_team_and_loses_nothing() {
    let env = setup().await;
    let chans: Vec<String> = (0..4).map(|i| env.channel(i, "c")).collect();
    let client = env.client();
    let mut state = MmState::default();
    let start = env.fake.now_ms();
    poll_all(&env, &client, &mut state, start).await; // warm the caches
    let since = env.fake.now_ms();
    env.fake.advance_clock(5);
    let posts: HashSet<String> = chans
        .iter()
        .map(|c| env.fake.post(c, &env.alice, "x"))
        .collect();

    env.fake.rate_limit_next(1, 120);
    let short = Instant::now() + Duration::from_secs(20);
    let o = poll(
        &client,
        &env.cfg(),
        &mut state,
        since,
        env.fake.now_ms(),
        short,
    )
    .await
    .unwrap();
    assert!(!o.complete);
    assert_eq!(o.teams_failed.len(), 1, "{:?}", o.teams_failed);
    assert!(o.teams_failed[0].1.contains("429"), "{:?}", o.teams_failed);
    assert_eq!(o.posts.len(), 3);
    for p in &o.posts {
        mark_handled(&mut state, &p.id, p.create_at);
    }
    // The cursor stays, so the next cycle gets the stopped team's post.
    assert_eq!(
        next_cursor(Some(since + 120_000), since, &o),
        since + 120_000
    );
    let o2 = poll_all(&env, &client, &mut state, since).await;
    assert!(o2.complete);
    assert_eq!(o2.posts.len(), 1);
    let all: HashSet<String> = o
        .posts
        .iter()
        .chain(&o2.posts)
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(all, posts);
}

#[tokio::test]
async fn expired_session_means_one_relogin_and_a_rewritten_cache() {
    use std::os::unix::fs::PermissionsExt;
    let env = setup().await;
    let ch = env.channel(1, "c");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("mm-token.json");
    let client = env.login_client(&cache);
    let mut state = MmState::default();
    let since = env.fake.now_ms();
    poll_all(&env, &client, &mut state, since).await;
    let first: Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(first["user_id"], env.agent.as_str());
    assert_eq!(first["url"], env.fake.url().as_str());
    assert_eq!(env.fake.count_requests("POST", "/users/login"), 1);

    env.fake.expire_sessions();
    env.fake.advance_clock(5);
    env.fake.post(&ch, &env.alice, "after expiry");
    let o = poll_all(&env, &client, &mut state, since).await;
    assert!(o.complete, "{:?}", o.teams_failed);
    assert_eq!(o.posts.len(), 1);
    assert_eq!(
        env.fake.count_requests("POST", "/users/login"),
        2,
        "exactly one re-login"
    );
    let second: Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_ne!(first["token"], second["token"]);
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The next process reuses the cached session without logging in.
    let next = env.login_client(&cache);
    poll_all(&env, &next, &mut state, since).await;
    assert_eq!(env.fake.count_requests("POST", "/users/login"), 2);

    // A revoked access token is a clear 401, not a loop.
    env.fake.revoke_token(&env.token);
    let err = env.client().me().await.unwrap_err();
    assert_eq!(err.kind, MmErrorKind::Unauthorized);
    assert!(
        err.to_string().contains("/api/v4/users/me: HTTP 401"),
        "{err}"
    );
}

#[tokio::test]
async fn mattermost_down_hanging_or_garbage_gives_a_clear_error() {
    let env = setup().await;
    env.channel(0, "c");
    let client = env.client();
    let mut state = MmState::default();
    let since = env.fake.now_ms() - 1000;
    env.fake.set_fault(Fault::Refuse);
    let err = poll(&client, &env.cfg(), &mut state, since, 0, deadline())
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains(&env.fake.url()), "{err}");

    env.fake.set_fault(Fault::Hang);
    let fast = Client::new(
        &env.fake.url(),
        Credentials::Token {
            token: Secret::new(env.token.clone()),
            source: "t".into(),
        },
        Duration::from_millis(300),
    )
    .unwrap();
    let err = fast.ping().await.unwrap_err();
    assert_eq!(err.kind, MmErrorKind::Timeout, "{err}");

    env.fake.clear_fault();
    poll_all(&env, &client, &mut state, since).await; // caches warm
    env.fake.set_fault(Fault::Garbage);
    let o = poll(&client, &env.cfg(), &mut state, since, 0, deadline())
        .await
        .unwrap();
    assert_eq!(o.teams_failed.len(), 4);
    assert!(
        o.teams_failed[0].1.contains("unexpected response body"),
        "{:?}",
        o.teams_failed
    );

    env.fake.set_fault(Fault::Status(500));
    let o = poll(&client, &env.cfg(), &mut state, since, 0, deadline())
        .await
        .unwrap();
    assert!(
        o.teams_failed[0].1.contains("HTTP 500"),
        "{:?}",
        o.teams_failed
    );
}

#[tokio::test]
async fn a_stale_team_id_is_resolved_again() {
    let env = setup().await;
    let client = env.client();
    let mut state = MmState::default();
    let since = env.fake.now_ms();
    poll_all(&env, &client, &mut state, since).await;
    let old = state.teams["wizard"].clone();
    let new = env.fake.recreate_team("wizard");
    let o = poll_all(&env, &client, &mut state, since).await;
    assert!(o.complete, "{:?}", o.teams_failed);
    assert_ne!(old, new);
    assert_eq!(state.teams["wizard"], new);
}

#[tokio::test]
async fn replies_are_idempotent_threaded_and_neutralised() {
    let env = setup().await;
    let ch = env.channel(3, "support");
    let since = env.fake.now_ms();
    env.fake.advance_clock(5);
    let root = env.fake.post(&ch, &env.john, "thread root");
    let p = env
        .fake
        .reply(&root, &env.alice, "please restart the api @channel");
    let client = env.client();
    let mut state = MmState::default();
    let mut cfg = env.cfg();
    cfg.ignored_users.clear();
    let o = poll(&client, &cfg, &mut state, since, 0, deadline())
        .await
        .unwrap();
    let post = o.posts.iter().find(|x| x.id == p).unwrap().clone();

    let r1 = reply_in_thread(
        &client,
        &post,
        "On it @channel @here @alice",
        &post.id,
        4000,
    )
    .await
    .unwrap();
    assert!(!r1.already_existed);
    // Crash before saving state: a new process, empty state, same post.
    let client2 = env.client();
    let r2 = reply_in_thread(&client2, &post, "On it again", &post.id, 4000)
        .await
        .unwrap();
    assert!(r2.already_existed);
    assert_eq!(r1.post_id, r2.post_id);

    let mine: Vec<_> = env
        .fake
        .thread_replies(&root)
        .into_iter()
        .filter(|x| x.user_id == env.agent)
        .collect();
    assert_eq!(mine.len(), 1);
    let reply = &mine[0];
    assert_eq!(reply.root_id, root, "replies go to the thread root");
    assert_eq!(reply.props["ops_agent_reply_to"], p.as_str());
    assert!(
        !reply.message.contains("@channel") && !reply.message.contains("@here"),
        "{}",
        reply.message
    );
    assert!(reply.message.contains("@alice"));

    // Never to itself: the agent's reply is skipped by the poller and refused here.
    let mut own = post.clone();
    own.user_id = env.agent.as_str().into();
    assert!(reply_in_thread(&client, &own, "x", &own.id, 4000)
        .await
        .is_err());
    let mut bot = post.clone();
    bot.is_bot = true;
    assert!(reply_in_thread(&client, &bot, "x", &bot.id, 4000)
        .await
        .is_err());

    // Long replies are capped.
    let root2 = env.fake.post(&ch, &env.alice, "another");
    let mut p2 = post.clone();
    p2.id = root2.clone();
    p2.root_id = String::new();
    reply_in_thread(&client, &p2, &"y".repeat(10_000), &root2, 500)
        .await
        .unwrap();
    let r = &env.fake.thread_replies(&root2)[0];
    assert_eq!(r.message.chars().count(), 500);
}

#[tokio::test]
async fn mattermost_dropping_connections_is_unreachable_too() {
    let env = setup().await;
    env.channel(0, "c");
    let client = env.client();
    let mut state = MmState::default();
    let since = env.fake.now_ms() - 1000;
    // Accepted, then closed without an answer (the fake's old "down").
    env.fake.set_fault(Fault::Drop);
    let err = poll(&client, &env.cfg(), &mut state, since, 0, deadline())
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains(&env.fake.url()), "{err}");
}

#[tokio::test]
async fn status_reports_ping_version_user_and_teams() {
    let env = setup().await;
    env.fake.set_version("9.11.2");
    env.channel(0, "a");
    env.channel(0, "b");
    let mut cfg = env.cfg();
    cfg.teams.push("nosuchteam".into());
    let client = env.client();
    let s = status(&client, &cfg, &MmState::default()).await;
    assert!(s.ping_ok);
    assert_eq!(s.server_version.as_deref(), Some("9.11.2"));
    assert_eq!(s.user.as_deref(), Some("opsbot"));
    assert_eq!(s.teams[0].channels, Some(2));
    assert!(s.teams[..4].iter().all(|t| t.resolved));
    assert!(!s.teams[4].resolved);
    assert!(!s.ok());
    let text = s.to_string();
    assert!(
        text.contains("nosuchteam") && text.contains("FAILED"),
        "{text}"
    );
    assert!(
        !text.contains(&env.token),
        "the token must never be printed"
    );

    env.fake.set_fault(Fault::Refuse);
    let s = status(&client, &cfg, &MmState::default()).await;
    assert!(!s.ping_ok && s.ping_error.is_some());
}
