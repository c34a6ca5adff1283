//! How many requests and how much wall-clock time one Mattermost poll costs
//! at the size (4 teams × 250 channels), measured against the fake
//! Mattermost through `ops_agent::mattermost::start` and its reader, the code path the cycle
//! uses, with [`MmState`] and the cursor carried between polls exactly like
//! the cycle does (`mark_handled`, `next_cursor`, `prune_handled`).
//!
//! The fake's clock moves 300 s (the launchd interval) before each poll, so
//! every poll sees what one cycle would. Times are figures only; nothing
//! here asserts speed. What it does assert is correctness: a poll that sends
//! more requests than `teams + active channels + backfill pages` (the
//! issue's target), or that does not return exactly the new posts, panics.
//!
//! Run with `cargo bench --bench mm_poll`.
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[allow(dead_code)]
#[path = "../tests/support/fault.rs"]
mod fault;
#[allow(dead_code)]
#[path = "../tests/support/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/support/mattermost.rs"]
mod mattermost;

use std::time::{Duration, Instant};

use mattermost::FakeMattermost;
use ops_agent::mattermost::client::MAX_PER_PAGE;
use ops_agent::mattermost::poll::SINCE_CAP;
use ops_agent::mattermost::{
    mark_handled, next_cursor, prune_handled, start, Client, Credentials, MattermostConfig,
    MmState, PollOutcome,
};
use ops_agent::secret::Secret;

const TEAMS: [&str; 4] = ["basic", "wizard", "rendrom", "riad"];
const CHANNELS_PER_TEAM: usize = 250;
/// The scheduler's interval: the fake's clock moves this much before a poll.
const INTERVAL_MS: i64 = 300_000;
/// The cycle's first-run lookback (agent.first_run_lookback_mins = 30).
const LOOKBACK_MS: i64 = 30 * 60_000;

/// The world, the agent's client and what the cycle keeps between runs.
struct Bench {
    mm: FakeMattermost,
    client: Client,
    cfg: MattermostConfig,
    state: MmState,
    cursor: Option<i64>,
    /// Channel ids per team, in team order.
    channels: Vec<Vec<String>>,
    authors: Vec<String>,
}

/// One measured poll.
struct Sample {
    requests: u32,
    fake_saw: usize,
    posts: usize,
    elapsed: Duration,
    outcome: PollOutcome,
}

/// One row of the printed table.
struct Row {
    scenario: String,
    runs: usize,
    requests_max: u32,
    expected: u32,
    posts: usize,
    median_ms: f64,
}

impl Bench {
    fn new() -> Bench {
        let mm = FakeMattermost::start_in_background();
        let agent = mm.add_user("opsbot", "agent-pw");
        let token = mm.add_token(&agent);
        let authors: Vec<String> = ["alice", "bob", "carol"]
            .iter()
            .map(|u| mm.add_user(u, "pw"))
            .collect();
        let mut members: Vec<&str> = vec![agent.as_str()];
        members.extend(authors.iter().map(String::as_str));
        let mut channels = Vec::new();
        for team in TEAMS {
            let tid = mm.add_team(team, &members);
            let ids = (0..CHANNELS_PER_TEAM)
                .map(|i| mm.add_channel(&tid, &format!("{team}-ch-{i:03}"), &members))
                .collect();
            channels.push(ids);
        }
        // Channels exist long before the agent's first run.
        mm.advance_clock(2 * LOOKBACK_MS);
        let cfg = MattermostConfig {
            url: mm.url(),
            teams: TEAMS.map(String::from).to_vec(),
            ..Default::default()
        };
        let creds = Credentials::Token {
            token: Secret::new(token),
            source: "bench".into(),
        };
        let client = Client::new(&mm.url(), creds, Duration::from_secs(30)).expect("client");
        Bench {
            mm,
            client,
            cfg,
            state: MmState::default(),
            cursor: None,
            channels,
            authors,
        }
    }

    /// Channel `i` of all 1000, spread over the teams.
    fn channel(&self, i: usize) -> &str {
        &self.channels[i % TEAMS.len()][(i / TEAMS.len()) % CHANNELS_PER_TEAM]
    }

    /// Posts `total` messages spread evenly over `n_channels` channels
    /// starting at channel `first`; returns how many went to each channel.
    fn post(&self, first: usize, n_channels: usize, total: usize) -> Vec<usize> {
        let mut per = vec![0; n_channels];
        for k in 0..total {
            let c = k % n_channels;
            per[c] += 1;
            let author = &self.authors[k % self.authors.len()];
            let msg = format!("please check item {k}: the nightly job on host-{c} looks slow");
            self.mm.post(self.channel(first + c), author, &msg);
        }
        per
    }

    /// One cycle's poll, and afterwards what the cycle does with the state.
    async fn poll(&mut self) -> Sample {
        let overlap_ms = self.cfg.overlap_secs.as_millis() as i64;
        let now_ms = self.mm.now_ms();
        let since_ms = match self.cursor {
            Some(c) => c - overlap_ms,
            None => now_ms - LOOKBACK_MS,
        };
        self.mm.clear_requests();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let started = Instant::now();
        let mut reader = start(
            &self.client,
            &self.cfg,
            &mut self.state,
            since_ms,
            now_ms,
            deadline,
        )
        .await
        .expect("poll against the fake");
        // The cycle handles each batch before the next is read.
        let mut posts = 0;
        while let Some(batch) = reader.next_batch(&self.client, &mut self.state).await {
            for p in &batch {
                mark_handled(&mut self.state, &p.id, p.create_at);
            }
            posts += batch.len();
        }
        reader.finish(&mut self.state);
        let elapsed = started.elapsed();
        let outcome = reader.outcome;
        assert!(
            outcome.complete,
            "incomplete poll: {:?}",
            outcome.teams_failed
        );
        let next = next_cursor(self.cursor, since_ms, &outcome);
        prune_handled(&mut self.state, next, overlap_ms);
        self.cursor = Some(next);
        Sample {
            requests: outcome.requests,
            fake_saw: self.mm.requests().len(),
            posts,
            elapsed,
            outcome,
        }
    }
}

/// Requests one channel's fetch may cost: one `since`, plus the page/before
/// backfill when `since` may have been capped (every page of 200 down to
/// the cursor, and the one that reaches past it).
fn channel_cost(new_posts: usize) -> u32 {
    if new_posts >= SINCE_CAP {
        1 + (new_posts / MAX_PER_PAGE as usize) as u32 + 1
    } else {
        1
    }
}

/// The target for a steady-state poll.
fn target(per_channel: &[usize]) -> u32 {
    TEAMS.len() as u32 + per_channel.iter().map(|&n| channel_cost(n)).sum::<u32>()
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    let mid = v.len() / 2;
    let d = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2
    };
    d.as_secs_f64() * 1000.0
}

/// Checks one sample against the target and the posts expected; these are
/// correctness failures, so they panic.
fn check(scenario: &str, s: &Sample, expected: u32, posts: usize) {
    assert!(
        s.requests <= expected,
        "{scenario}: {} requests, target {expected} (teams + active channels + pages); \
         fetched {} channels, backfilled {}",
        s.requests,
        s.outcome.channels_fetched,
        s.outcome.channels_backfilled
    );
    assert_eq!(
        s.requests as usize, s.fake_saw,
        "{scenario}: the poll counted {} requests, the fake saw {}",
        s.requests, s.fake_saw
    );
    assert_eq!(
        s.posts, posts,
        "{scenario}: {} posts returned, {posts} were new (skipped: {:?})",
        s.posts, s.outcome.skipped
    );
}

fn row(scenario: &str, samples: &[Sample], expected: u32, posts: usize) -> Row {
    for s in samples {
        check(scenario, s, expected, posts);
    }
    Row {
        scenario: scenario.to_string(),
        runs: samples.len(),
        requests_max: samples.iter().map(|s| s.requests).max().unwrap_or(0),
        expected,
        posts,
        median_ms: median_ms(samples.iter().map(|s| s.elapsed).collect()),
    }
}

async fn run() -> Vec<Row> {
    let mut b = Bench::new();
    let mut rows = Vec::new();
    let teams = TEAMS.len() as u32;

    // First run: empty state, so the caches (own user, team ids, ignored
    // users, authors) are filled on the way. Informational.
    let per = b.post(0, 5, 100);
    b.mm.advance_clock(INTERVAL_MS);
    let s = b.poll().await;
    // me + ignored usernames + one lookup and one listing per team + the
    // channels + one batch author lookup.
    let cold = 2 + 2 * teams + target(&per) - teams + 1;
    rows.push(row(
        "first run (cold caches): 100 posts in 5 channels",
        &[s],
        cold,
        100,
    ));

    // Steady state: posts arrive early in the interval, then a quiet interval.
    let runs = 31;
    let (mut active, mut quiet) = (Vec::new(), Vec::new());
    let mut expected_active = 0;
    for r in 0..runs {
        let per = b.post(5 * (r + 1), 5, 100);
        expected_active = target(&per);
        b.mm.advance_clock(INTERVAL_MS);
        active.push(b.poll().await);
        b.mm.advance_clock(INTERVAL_MS);
        quiet.push(b.poll().await);
    }
    rows.push(row(
        "100 new posts in 5 channels",
        &active,
        expected_active,
        100,
    ));
    rows.push(row("nothing new", &quiet, teams, 0));

    // Posts in the last two minutes before a cycle come back in the next
    // cycle's overlap window: their channels are read again, nothing is new.
    let mut overlap = Vec::new();
    for r in 0..runs {
        b.mm.advance_clock(INTERVAL_MS - 60_000);
        b.post(200 + 5 * r, 5, 100);
        b.mm.advance_clock(60_000);
        b.poll().await;
        b.mm.advance_clock(INTERVAL_MS);
        overlap.push(b.poll().await);
    }
    rows.push(row(
        "nothing new, 5 channels posted in overlap window",
        &overlap,
        teams + 5,
        0,
    ));

    let runs = 11;
    let mut big = Vec::new();
    let mut expected_big = 0;
    for r in 0..runs {
        b.mm.advance_clock(INTERVAL_MS);
        let per = b.post(400 + 50 * r, 50, 1000);
        expected_big = target(&per);
        b.mm.advance_clock(INTERVAL_MS);
        big.push(b.poll().await);
    }
    rows.push(row(
        "1,000 new posts across 50 channels",
        &big,
        expected_big,
        1000,
    ));

    // One channel with more than `since` answers: capped, backfilled by pages.
    let runs = 7;
    let mut capped = Vec::new();
    let mut expected_capped = 0;
    for r in 0..runs {
        b.mm.advance_clock(INTERVAL_MS);
        let per = b.post(900 + r, 1, 1500);
        expected_capped = target(&per);
        b.mm.advance_clock(INTERVAL_MS);
        capped.push(b.poll().await);
    }
    for s in &capped {
        assert_eq!(
            s.outcome.channels_backfilled, 1,
            "the capped channel is backfilled"
        );
    }
    rows.push(row(
        "1,500 new posts in 1 channel (since capped, pages)",
        &capped,
        expected_capped,
        1500,
    ));
    rows
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let rows = rt.block_on(run());
    println!(
        "\nmm_poll: {} teams x {CHANNELS_PER_TEAM} channels, poll every {} s, overlap 120 s, \
         channel_concurrency 4 (fake Mattermost on 127.0.0.1)\n",
        TEAMS.len(),
        INTERVAL_MS / 1000
    );
    let w = rows.iter().map(|r| r.scenario.len()).max().unwrap_or(8);
    println!(
        "| {:<w$} | runs | requests | expected | posts | median ms |",
        "scenario"
    );
    println!(
        "|{:-<w$}--|------|----------|----------|-------|-----------|",
        ""
    );
    for r in &rows {
        println!(
            "| {:<w$} | {:>4} | {:>8} | {:>8} | {:>5} | {:>9.1} |",
            r.scenario, r.runs, r.requests_max, r.expected, r.posts, r.median_ms
        );
    }
    println!(
        "\nrequests = the most any run sent (PollOutcome.requests, equal to what the fake saw);\n\
         expected = teams + active channels + backfill pages (first run: + me, ignored users,\n\
         team lookups, author lookup; overlap row: the re-read channels count as active).\n\
         Total {:.1} s.",
        started.elapsed().as_secs_f64()
    );
}
