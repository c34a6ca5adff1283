//! The scale benchmark of issue 14: what one cycle of the **release binary**
//! costs as the work grows, run as a whole process against the fake stack on
//! 127.0.0.1 (`tests/support`: Mattermost, Ollama, Planka, HTTP endpoints).
//!
//! Each scenario runs a few times, each run in a fresh sandbox with fresh
//! fakes (state is carried between cycles only inside one run, where the
//! scenario needs it: the warm-up cycle that sets the cursor, the busy cycle
//! before "idle after busy"). Per scenario it prints the median and the
//! spread (min–max) of wall time, CPU (user + sys, the child's own rusage),
//! peak RSS (the child's own `VmHWM`), the Mattermost requests the fake
//! saw, the fsyncs the agent counted (`last_cycle.counts.fsyncs`: up to the
//! final save, which adds 4; "n/a" for a build that does not count them)
//! and, where the issue defines a floor, the ratio to it. Then the issue's
//! targets, each with its figure and whether it holds.
//!
//! Speed is printed, never asserted: a slow build still gets its table.
//! Correctness is asserted: every post handled once in the measured cycle,
//! one reply per TASK/INCIDENT post, one task per source, the poll within
//! its request bound, every LLM call one a post needs. Failures are listed
//! after the table and make the benchmark exit non-zero.
//!
//! Knobs (environment):
//! - `OPS_AGENT_BENCH_BIN=/path/to/ops-agent`: time another build (e.g. an
//!   older commit's release binary, for before/after) with the same fakes.
//! - `OPS_AGENT_BENCH_RUNS=n`: runs per scenario (default 5; the three long
//!   chat scenarios default to 3, see [`Scenario::long`]).
//! - `OPS_AGENT_BENCH_ONLY=idle,burst`: only scenarios whose key contains
//!   one of these words.
//!
//! Run with `cargo bench --bench scale`; docs/performance.md has a table
//! and the before/after recipe.
// Code that exercises the agent writes its fixtures, starts programs and
// sleeps directly: clippy.toml's invariants bind the agent, not this crate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::Value;

use ops_agent::mattermost::client::MAX_PER_PAGE;
use ops_agent::mattermost::poll::SINCE_CAP;
use ops_agent::mattermost::replies::REPLY_PROP;
use ops_agent::tasks::ledger::{CreateRecord, Record, UpdateRecord};
use ops_agent::tasks::{BillingConfig, PostRef, Task};
use support::agent::{text, Measured, Sandbox};
use support::fault::Fault;
use support::harness::in_background;
use support::http_endpoints::FakeEndpoints;
use support::mattermost::FakeMattermost;
use support::ollama::{dead_url, FakeOllama};
use support::planka::FakePlanka;
use support::world::WorldBuilder;

const TEAMS: [&str; 4] = ["basic", "wizard", "rendrom", "riad"];
const CHANNELS_PER_TEAM: usize = 250;
/// Channels that get posts in the spread scenarios.
const ACTIVE_CHANNELS: usize = 50;
/// The scheduler's interval: the fake's clock moves this much between the
/// posts and the cycle that reads them, and between two measured cycles.
const INTERVAL_MS: i64 = 300_000;
/// `[agent] deadline_secs` for chat scenarios: large enough that even a
/// slow build handles all the work in the one measured cycle, so "every
/// post handled once" can be checked on that cycle. What the work would
/// take of the default deadline is printed (burst). The config requires the
/// deadline below `schedule_interval_secs`, so that is set to an hour.
const DEADLINE_SECS: u64 = 900;
/// The default `[agent] deadline_secs`.
const DEFAULT_DEADLINE_SECS: f64 = 240.0;
/// How long the fake model takes per call in the busy scenario.
const LLM_DELAY: Duration = Duration::from_millis(200);
/// `[ollama] concurrency` in the busy scenario: parallel requests, as
/// Ollama serves them with `OLLAMA_NUM_PARALLEL=4`.
const LLM_CONCURRENCY: u32 = 4;
/// HTTP checks in the health scenario, and how long each endpoint takes.
const HTTP_CHECKS: usize = 20;
const HTTP_DELAY: Duration = Duration::from_secs(1);
/// Lines of the big ledger.
const LEDGER_LINES: usize = 100_000;
/// The issue's memory ceiling, in KiB.
const RSS_CEILING_KIB: u64 = 20 * 1024;
/// Issue 24's ceiling at 100,000 posts of realistic length, in KiB.
const RSS_CEILING_100K_KIB: u64 = 24 * 1024;
/// The default `[log] max_bytes`.
const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// The backlog scenario gives up after this many cycles (a build that
/// cannot catch up is stuck at its first).
const BACKLOG_MAX_CYCLES: usize = 15;

/// What a post is meant to be; the messages are written so that the keyword
/// rules and the fake model agree, so either path must give this label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Routine,
    Task,
    Incident,
}

impl Kind {
    /// The mix of every chat scenario: 80 % ROUTINE, 15 % TASK, 5 % INCIDENT.
    fn of(k: usize) -> Kind {
        match k % 20 {
            0..=2 => Kind::Task,
            3 => Kind::Incident,
            _ => Kind::Routine,
        }
    }

    fn files_task(self) -> bool {
        self != Kind::Routine
    }
}

/// A unique tag per post without vowels or digits, so no tag spells a word
/// or reads as an HTTP status the keyword rules would act on; the one that
/// spells `http` (post 46,311's: the fallback read its routine note as an
/// incident) has its `h` made a `y`, which is not in the alphabet.
fn tag(k: usize) -> String {
    const C: &[u8] = b"bcdfghjklmnpqrstvwxz";
    let t: String = (0..4)
        .rev()
        .map(|i| C[(k / 20usize.pow(i)) % 20] as char)
        .collect();
    t.replace("http", "yttp")
}

fn message(k: usize, kind: Kind) -> String {
    let t = tag(k);
    match kind {
        Kind::Routine => format!("status note {t}: all quiet, nightly reports went out"),
        Kind::Task => format!("please add a redirect for {t} to the new docs page"),
        Kind::Incident => format!("the {t} site is down for everyone, users get 502 errors"),
    }
}

/// Realistic lengths: each message is the scenario's own text repeated to
/// one of these lengths (mean about 400 bytes, as chat in the teams is).
const LENGTHS: [usize; 9] = [60, 90, 120, 180, 250, 350, 500, 800, 1300];

/// Post `k`'s text at a realistic length: its words again and again, so
/// the label it was written for stays the label.
fn realistic(k: usize, kind: Kind) -> String {
    let base = message(k, kind);
    let want = LENGTHS[(k * 7) % LENGTHS.len()];
    let mut text = base.clone();
    while text.len() < want {
        text.push(' ');
        text.push_str(&base);
    }
    text.truncate(want.max(base.len()));
    text
}

/// What the fake model answers: the label the message was written for
/// (for a reply prompt that label is the reply's text, which is fine).
fn model_answer(msg: &str) -> String {
    if msg.contains("is down") {
        "INCIDENT".into()
    } else if msg.contains("please") {
        "TASK".into()
    } else {
        "ROUTINE".into()
    }
}

/// One post the scenario made.
struct Posted {
    id: String,
    kind: Kind,
}

/// Where the LLM is in a chat world.
#[derive(Clone, Copy, PartialEq)]
enum Llm {
    /// Nowhere (connection refused): the keyword rules and templates.
    Away,
    /// The fake, answering after [`LLM_DELAY`] with [`LLM_CONCURRENCY`].
    Slow,
}

/// A Mattermost of 4 teams × 250 channels (and optionally the fake model
/// and Planka), the agent's sandbox wired to it, after one warm-up cycle:
/// the steady state every chat scenario starts from.
struct ChatWorld {
    mm: FakeMattermost,
    llm: Option<FakeOllama>,
    planka: Option<FakePlanka>,
    sb: Sandbox,
    agent: String,
    authors: Vec<String>,
    /// Channel ids; channel `i` is in team `i % 4`.
    channels: Vec<String>,
}

impl ChatWorld {
    /// Builds the world; `ledger`, when given, is copied to the ledger path
    /// before the warm-up cycle.
    fn new(bin: &Path, llm: Llm, planka: bool, ledger: Option<&Path>) -> ChatWorld {
        let mut b = WorldBuilder::new();
        let (mm, me) = b.mattermost(&TEAMS);
        // Teams and channels are made three hours ago, so the first run's
        // 30-minute lookback finds them all idle.
        mm.advance_clock(-3 * 3_600_000);
        let authors: Vec<String> = ["alice", "bob", "carol"]
            .iter()
            .map(|u| mm.add_user(u, "pw"))
            .collect();
        let mut members = vec![me.id.as_str()];
        members.extend(authors.iter().map(String::as_str));
        let team_ids: Vec<String> = TEAMS.iter().map(|t| mm.add_team(t, &members)).collect();
        let channels = (0..TEAMS.len() * CHANNELS_PER_TEAM)
            .map(|i| {
                let team = i % TEAMS.len();
                let name = format!("{}-ch-{:03}", TEAMS[team], i / TEAMS.len());
                mm.add_channel(&team_ids[team], &name, &members)
            })
            .collect();
        mm.advance_clock(3 * 3_600_000);
        let llm = match llm {
            Llm::Away => {
                b.ollama_at(&dead_url());
                None
            }
            Llm::Slow => {
                let llm = b.ollama();
                llm.answer_with(model_answer);
                llm.set_chat_fault(Fault::Slow(LLM_DELAY));
                b.line("ollama", &format!("concurrency = {LLM_CONCURRENCY}"));
                Some(llm)
            }
        };
        let planka = planka.then(|| {
            let boards: Vec<(&str, &str, &str)> = TEAMS.iter().map(|t| (*t, *t, "Inbox")).collect();
            b.planka(&boards)
        });
        b.line("agent", &format!("deadline_secs = {DEADLINE_SECS}"))
            .line("agent", "schedule_interval_secs = 3600");
        let mut sb = b.sandbox();
        sb.bin = bin.to_path_buf();
        if let Some(src) = ledger {
            install_ledger(src, &sb);
        }
        let w = ChatWorld {
            mm,
            llm,
            planka,
            sb,
            agent: me.id,
            authors,
            channels,
        };
        w.cycle();
        w
    }

    /// An unmeasured cycle that must succeed.
    fn cycle(&self) {
        let out = self.sb.run(&["run-once"]);
        assert!(out.status.success(), "cycle failed: {}", text(&out));
    }

    /// An interval passes on the server's clock. The agent takes its cursor
    /// from the server's `Date` header, so a server clock running ahead of
    /// the machine's (by an interval or two here) changes nothing it counts.
    fn wait_interval(&self) {
        self.mm.advance_clock(INTERVAL_MS);
    }

    /// The measured cycle; the fake's request log covers exactly it.
    fn measured_cycle(&self) -> Measured {
        self.mm.clear_requests();
        self.sb.measure(&["run-once"])
    }

    /// `total` posts spread round-robin over the first `n_channels`
    /// channels (which span all four teams), in the scenario mix; the kind
    /// shifts by one each round, so every channel gets its share of each.
    fn post_spread(&self, total: usize, n_channels: usize) -> Vec<Posted> {
        (0..total)
            .map(|k| self.post_one(k, k % n_channels, Kind::of(k + k / n_channels)))
            .collect()
    }

    /// [`ChatWorld::post_spread`] with each post's text from `text`.
    fn post_spread_with(
        &self,
        total: usize,
        n_channels: usize,
        text: fn(usize, Kind) -> String,
    ) -> Vec<Posted> {
        (0..total)
            .map(|k| {
                let kind = Kind::of(k + k / n_channels);
                let author = &self.authors[k % self.authors.len()];
                let id = self
                    .mm
                    .post(&self.channels[k % n_channels], author, &text(k, kind));
                Posted { id, kind }
            })
            .collect()
    }

    /// Post number `k` (its tag), of `kind`, in channel `channel`.
    fn post_one(&self, k: usize, channel: usize, kind: Kind) -> Posted {
        let author = &self.authors[k % self.authors.len()];
        let id = self
            .mm
            .post(&self.channels[channel], author, &message(k, kind));
        Posted { id, kind }
    }

    /// A bulk import of `total` posts into one channel over 5 milliseconds,
    /// in the scenario mix.
    fn post_burst(&self, total: usize) -> Vec<Posted> {
        let ids = self
            .mm
            .post_burst(&self.channels[1], &self.authors[0], total, 5, |k| {
                message(k, Kind::of(k))
            });
        ids.into_iter()
            .enumerate()
            .map(|(k, id)| Posted {
                id,
                kind: Kind::of(k),
            })
            .collect()
    }

    /// Posts handled by every cycle so far (the stats' counter).
    fn handled_total(&self) -> u64 {
        std::fs::read_to_string(self.sb.stats())
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["counters"]["posts_handled"].as_u64())
            .unwrap_or(0)
    }

    /// One reply and one task for each filed post of `posted`, none for
    /// the others, over however many cycles.
    fn check_replies_and_tasks(&self, posted: &[Posted], problems: &mut Vec<String>) {
        let mut replies: BTreeMap<String, usize> = BTreeMap::new();
        for p in self.mm.posts() {
            if p.user_id == self.agent {
                if let Some(to) = p.props.get(REPLY_PROP).and_then(Value::as_str) {
                    *replies.entry(to.to_string()).or_default() += 1;
                }
            }
        }
        let wrong: Vec<String> = posted
            .iter()
            .filter(|p| replies.get(&p.id).copied().unwrap_or(0) != p.kind.files_task() as usize)
            .map(|p| {
                let n = replies.get(&p.id).copied().unwrap_or(0);
                format!("{} ({:?}, {n} replies)", p.id, p.kind)
            })
            .collect();
        if !wrong.is_empty() {
            problems.push(format!(
                "{} posts without exactly their one reply, e.g. {}",
                wrong.len(),
                wrong[..wrong.len().min(5)].join(", ")
            ));
        }
        let tasks = ledger_sources(&self.sb);
        let distinct: BTreeSet<&String> = tasks.iter().collect();
        let filed = posted.iter().filter(|p| p.kind.files_task()).count();
        if tasks.len() != filed || distinct.len() != tasks.len() {
            let expected: BTreeSet<&String> = posted
                .iter()
                .filter(|p| p.kind.files_task())
                .map(|p| &p.id)
                .collect();
            let extra: Vec<&str> = distinct
                .difference(&expected)
                .take(5)
                .map(|s| s.as_str())
                .collect();
            problems.push(format!(
                "{} ledger tasks ({} distinct), expected {filed}; not expected: {extra:?}",
                tasks.len(),
                distinct.len()
            ));
        }
    }

    /// The cycle's counts from the state file.
    fn counts(&self) -> Value {
        self.sb.state_json()["last_cycle"]["counts"].clone()
    }

    /// The exactly-once checks of one measured chat cycle: exit 0, all of
    /// `posted` handled in it, one reply per TASK/INCIDENT post and none to
    /// ROUTINE ones, one ledger task per filed post (plus `old_tasks`),
    /// one card each when Planka is there, the poll's requests within
    /// `poll_bound`, and at most one classify call per post and one reply
    /// call per filed post.
    fn verify(
        &self,
        m: &Measured,
        posted: &[Posted],
        old_tasks: usize,
        poll_bound: u64,
        problems: &mut Vec<String>,
    ) {
        let mut fail = |what: String| problems.push(what);
        if !m.output.status.success() {
            fail(format!("the cycle failed: {}", text(&m.output)));
            return;
        }
        let counts = self.counts();
        let handled = counts["posts_handled"].as_u64().unwrap_or(0);
        if handled != posted.len() as u64 {
            fail(format!("{handled} posts handled of {}", posted.len()));
        }
        let mut replies: BTreeMap<String, usize> = BTreeMap::new();
        for p in self.mm.posts() {
            if p.user_id == self.agent {
                if let Some(to) = p.props.get(REPLY_PROP).and_then(Value::as_str) {
                    *replies.entry(to.to_string()).or_default() += 1;
                }
            }
        }
        let wrong = posted
            .iter()
            .filter(|p| replies.get(&p.id).copied().unwrap_or(0) != p.kind.files_task() as usize)
            .count();
        if wrong > 0 {
            fail(format!(
                "{wrong} posts without exactly their one reply (TASK/INCIDENT) or with one (ROUTINE)"
            ));
        }
        let filed = posted.iter().filter(|p| p.kind.files_task()).count();
        let tasks = ledger_sources(&self.sb);
        if tasks.len() != filed + old_tasks
            || tasks.iter().collect::<BTreeSet<_>>().len() != tasks.len()
        {
            fail(format!(
                "{} ledger tasks ({} distinct sources), expected {}",
                tasks.len(),
                tasks.iter().collect::<BTreeSet<_>>().len(),
                filed + old_tasks
            ));
        }
        if let Some(planka) = &self.planka {
            let cards = planka.cards().len();
            if cards != filed {
                fail(format!("{cards} Planka cards, expected {filed}"));
            }
        }
        if let Some(poll) = counts["mm_requests"].as_u64() {
            if poll > poll_bound {
                fail(format!("the poll sent {poll} requests, bound {poll_bound}"));
            }
        }
        if let Some(llm) = &self.llm {
            let calls = llm.chat_requests().len();
            if calls > posted.len() + filed {
                fail(format!(
                    "{calls} LLM calls for {} posts, {filed} of them filed",
                    posted.len()
                ));
            }
        }
    }

    /// The sample of a measured cycle that handled `work` posts.
    fn sample(&self, m: &Measured, work: usize) -> Sample {
        let counts = self.counts();
        Sample {
            wall: m.wall,
            cpu: m.cpu,
            rss_kib: m.peak_rss_kib,
            mm_requests: Some(self.mm.requests().len() as u64),
            fsyncs: counts["fsyncs"].as_u64(),
            work,
            floor_ratio: None,
        }
    }
}

/// Copies a prepared ledger to the sandbox's ledger path and syncs it, as
/// a ledger that has been on disk a while is: otherwise the agent's first
/// `fdatasync` of an append would also write back the 49 MB just copied
/// and bill the copy to the cycle.
fn install_ledger(src: &Path, sb: &Sandbox) {
    let dst = sb.path("system/agents/state/ops-tasks.jsonl");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, &dst).expect("copying the big ledger");
    std::fs::File::open(&dst)
        .and_then(|f| f.sync_all())
        .expect("syncing the big ledger");
}

/// The task sources in the sandbox's ledger, in file order.
fn ledger_sources(sb: &Sandbox) -> Vec<String> {
    sb.ledger_tasks()
        .iter()
        .filter_map(|t| t["source"].as_str().map(String::from))
        .collect()
}

/// The poll's request bound for `per_channel` new posts in each active
/// channel: one request per team (the channel listing), one `since` per
/// active channel, for a channel past the server's `since` cap the
/// backfill pages down to the cursor and the one that reaches past it, and
/// one batch lookup of authors the agent has not met yet.
fn poll_bound(per_channel: &[usize]) -> u64 {
    let channel = |n: usize| -> u64 {
        if n >= SINCE_CAP {
            2 + (n / MAX_PER_PAGE as usize) as u64
        } else {
            1
        }
    };
    let authors = u64::from(per_channel.iter().any(|&n| n > 0));
    TEAMS.len() as u64 + per_channel.iter().map(|&n| channel(n)).sum::<u64>() + authors
}

/// Posts per channel when `total` are spread over `n` channels.
fn spread(total: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|c| total / n + usize::from(c < total % n))
        .collect()
}

/// One measured run.
struct Sample {
    wall: Duration,
    cpu: Duration,
    rss_kib: u64,
    /// Requests the fake Mattermost saw during the run (None: none there).
    mm_requests: Option<u64>,
    /// `last_cycle.counts.fsyncs` (None: the build does not count them).
    fsyncs: Option<u64>,
    /// Posts (or tasks) the run handled, for per-post figures.
    work: usize,
    /// The figure divided by the issue's floor, where it defines one.
    floor_ratio: Option<f64>,
}

/// What the runs of a scenario share: the binary and prepared files.
struct Ctx {
    bin: PathBuf,
    /// The 100,000-line ledger, written once.
    big_ledger: PathBuf,
}

/// A scenario: runs in fresh worlds, one sample each.
struct Scenario {
    /// Short name, for `OPS_AGENT_BENCH_ONLY`.
    key: &'static str,
    title: &'static str,
    /// What the floor column means for it.
    floor: &'static str,
    /// Takes a minute or more per run: 3 runs unless `OPS_AGENT_BENCH_RUNS`.
    long: bool,
    /// Takes many minutes (it simulates days): one run, whatever
    /// `OPS_AGENT_BENCH_RUNS` says.
    once: bool,
    run: fn(&Ctx, &mut Vec<String>) -> Sample,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            key: "idle",
            title: "idle: 4 teams x 250 channels, nothing new",
            floor: "4 requests",
            long: false,
            once: false,
            run: idle,
        },
        Scenario {
            key: "idle-after-busy",
            title: "idle right after a busy cycle (1,000 posts, 50 channels)",
            floor: "4 requests",
            long: false,
            once: false,
            run: idle_after_busy,
        },
        Scenario {
            key: "busy-llm",
            title: "busy: 1,000 posts in 50 channels, LLM 200 ms/call, Planka, ledger",
            floor: "LLM calls x 0.2 s / 4",
            long: true,
            once: false,
            run: busy_llm,
        },
        Scenario {
            key: "keywords-100",
            title: "100 posts in 50 channels, keyword fallback",
            floor: "",
            long: false,
            once: false,
            run: |c, p| keywords(c, p, 100),
        },
        Scenario {
            key: "keywords-1000",
            title: "1,000 posts in 50 channels, keyword fallback",
            floor: "",
            long: false,
            once: false,
            run: |c, p| keywords(c, p, 1_000),
        },
        Scenario {
            key: "keywords-10000",
            title: "10,000 posts in 50 channels, keyword fallback",
            floor: "",
            long: true,
            once: false,
            run: |c, p| keywords(c, p, 10_000),
        },
        Scenario {
            key: "burst",
            title: "burst: 10,000 posts in 1 channel over 5 ms, keyword fallback",
            floor: "240 s default deadline",
            long: true,
            once: false,
            run: burst,
        },
        Scenario {
            key: "realistic-100k",
            title: "100,000 posts of realistic length in 50 channels, keyword fallback",
            floor: "",
            long: true,
            once: false,
            run: realistic_100k,
        },
        Scenario {
            key: "backlog-200k",
            title: "one channel with 200,000 posts since the cursor, until caught up",
            floor: "cycles to catch up",
            long: true,
            once: true,
            run: backlog_200k,
        },
        Scenario {
            key: "month-day-1",
            title: "idle cycle after 1 day of hourly light cycles (fast clock)",
            floor: "",
            long: true,
            once: true,
            run: |c, p| month(c, p, 1),
        },
        Scenario {
            key: "month-day-30",
            title: "idle cycle after 30 days of hourly light cycles (fast clock)",
            floor: "",
            long: true,
            once: true,
            run: |c, p| month(c, p, 30),
        },
        Scenario {
            key: "http",
            title: "20 HTTP checks answering after 1 s",
            floor: "1 s",
            long: false,
            once: false,
            run: http_checks,
        },
        Scenario {
            key: "ledger-empty",
            title: "a cycle filing 10 tasks, empty ledger",
            floor: "",
            long: false,
            once: false,
            run: |c, p| ten_tasks(c, p, false),
        },
        Scenario {
            key: "ledger-100k",
            title: "a cycle filing 10 tasks, 100,000-line ledger",
            floor: "",
            long: false,
            once: false,
            run: |c, p| ten_tasks(c, p, true),
        },
        Scenario {
            key: "tasks-list",
            title: "tasks list, 100,000-line ledger",
            floor: "",
            long: false,
            once: false,
            run: |c, p| tasks_command(c, p, "list"),
        },
        Scenario {
            key: "tasks-stats",
            title: "tasks stats, 100,000-line ledger",
            floor: "",
            long: false,
            once: false,
            run: |c, p| tasks_command(c, p, "stats"),
        },
    ]
}

/// Nothing new since the warm-up cycle: the floor is one channel listing
/// per team.
fn idle(ctx: &Ctx, problems: &mut Vec<String>) -> Sample {
    let w = ChatWorld::new(&ctx.bin, Llm::Away, false, None);
    w.wait_interval();
    let m = w.measured_cycle();
    w.verify(&m, &[], 0, TEAMS.len() as u64, problems);
    let mut s = w.sample(&m, 0);
    s.floor_ratio = s.mm_requests.map(|r| r as f64 / TEAMS.len() as f64);
    s
}

/// The cycle after a busy one: the busy posts are an interval old (outside
/// the overlap window), so only the agent's own replies, written after the
/// busy cycle's cursor, could make a channel look active. Target: one
/// request per team; the bound asserted is the one every poll has (teams +
/// channels with posts after the cursor).
fn idle_after_busy(ctx: &Ctx, problems: &mut Vec<String>) -> Sample {
    let w = ChatWorld::new(&ctx.bin, Llm::Away, false, None);
    let posted = w.post_spread(1_000, ACTIVE_CHANNELS);
    w.wait_interval();
    w.cycle();
    let busy = w.counts()["posts_handled"].as_u64().unwrap_or(0);
    if busy != posted.len() as u64 {
        problems.push(format!(
            "the busy cycle handled {busy} of {} posts",
            posted.len()
        ));
    }
    w.wait_interval();
    let m = w.measured_cycle();
    let filed = posted.iter().filter(|p| p.kind.files_task()).count();
    w.verify(&m, &[], filed, poll_bound(&[1; ACTIVE_CHANNELS]), problems);
    let mut s = w.sample(&m, 0);
    s.floor_ratio = s.mm_requests.map(|r| r as f64 / TEAMS.len() as f64);
    s
}

/// 1,000 posts with the model answering after 200 ms per call, Planka and
/// the ledger: the floor is the model's time at the configured concurrency
/// for the calls made.
fn busy_llm(ctx: &Ctx, problems: &mut Vec<String>) -> Sample {
    let w = ChatWorld::new(&ctx.bin, Llm::Slow, true, None);
    let posted = w.post_spread(1_000, ACTIVE_CHANNELS);
    w.wait_interval();
    let m = w.measured_cycle();
    let bound = poll_bound(&spread(1_000, ACTIVE_CHANNELS));
    w.verify(&m, &posted, 0, bound, problems);
    let calls = w.llm.as_ref().map_or(0, |l| l.chat_requests().len());
    let floor = LLM_DELAY.as_secs_f64() * calls as f64 / LLM_CONCURRENCY as f64;
    let mut s = w.sample(&m, posted.len());
    s.floor_ratio = (floor > 0.0).then(|| m.wall.as_secs_f64() / floor);
    s
}

/// `n` posts in 50 channels, no LLM: the agent's own cost per post.
fn keywords(ctx: &Ctx, problems: &mut Vec<String>, n: usize) -> Sample {
    let w = ChatWorld::new(&ctx.bin, Llm::Away, false, None);
    let posted = w.post_spread(n, ACTIVE_CHANNELS);
    w.wait_interval();
    let m = w.measured_cycle();
    w.verify(
        &m,
        &posted,
        0,
        poll_bound(&spread(n, ACTIVE_CHANNELS)),
        problems,
    );
    w.sample(&m, posted.len())
}

/// A bulk import into one channel, many posts sharing a millisecond: the
/// server's `since` cap and the backfill pages. The floor column is the
/// share of the default deadline the cycle would use.
fn burst(ctx: &Ctx, problems: &mut Vec<String>) -> Sample {
    let w = ChatWorld::new(&ctx.bin, Llm::Away, false, None);
    // The server's capped `since` answer is the same subset every time.
    w.mm.set_shuffle(false);
    let posted = w.post_burst(10_000);
    w.wait_interval();
    let m = w.measured_cycle();
    w.verify(&m, &posted, 0, poll_bound(&[posted.len()]), problems);
    let mut s = w.sample(&m, posted.len());
    s.floor_ratio = Some(m.wall.as_secs_f64() / DEFAULT_DEADLINE_SECS);
    s
}

/// The largest single file (bytes) and the total of the activity log and
/// the audit trail with their rotated copies.
fn log_disk(sb: &Sandbox) -> (u64, u64) {
    let mut biggest = 0;
    let mut total = 0;
    for base in [sb.log(), sb.audit_path()] {
        for n in 0..=60 {
            let p = if n == 0 {
                base.clone()
            } else {
                PathBuf::from(format!("{}.{n}", base.display()))
            };
            if let Ok(m) = std::fs::metadata(&p) {
                biggest = biggest.max(m.len());
                total += m.len();
            }
        }
    }
    (biggest, total)
}

/// 100,000 posts of realistic length in one cycle: memory must not grow
/// with the backlog (the poll hands posts over as it reads them), and the
/// log and the audit trail stay within `[log] max_bytes` per file.
fn realistic_100k(ctx: &Ctx, problems: &mut Vec<String>) -> Sample {
    const N: usize = 100_000;
    let w = ChatWorld::new(&ctx.bin, Llm::Away, false, None);
    let posted = w.post_spread_with(N, ACTIVE_CHANNELS, realistic);
    w.wait_interval();
    let m = w.measured_cycle();
    w.verify(
        &m,
        &posted,
        0,
        poll_bound(&spread(N, ACTIVE_CHANNELS)),
        problems,
    );
    let (biggest, total) = log_disk(&w.sb);
    eprintln!(
        "realistic-100k: log and audit {:.1} MB on disk, largest file {:.1} MB",
        total as f64 / 1e6,
        biggest as f64 / 1e6
    );
    if biggest > DEFAULT_LOG_MAX_BYTES + 64 * 1024 {
        problems.push(format!(
            "a log file of {biggest} bytes, over [log] max_bytes ({DEFAULT_LOG_MAX_BYTES})"
        ));
    }
    // Taken before the next cycle, which replaces the counts it reads.
    let sample = w.sample(&m, posted.len());
    // The cycles of the next two days must not pay for this one: the idle
    // cycle right after it, and what it loads.
    w.wait_interval();
    let idle = w.measured_cycle();
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    eprintln!(
        "realistic-100k: the idle cycle after it: CPU {:.1} ms, peak RSS {:.1} MiB; state file {:.1} KB, corrections watch file {:.1} MB",
        idle.cpu.as_secs_f64() * 1e3,
        idle.peak_rss_kib as f64 / 1024.0,
        size(w.sb.state()) as f64 / 1e3,
        size(w.sb.watch_file()) as f64 / 1e6,
    );
    if !idle.output.status.success() {
        problems.push("the idle cycle after it failed".into());
    }
    // An active one: a reaction on an early post and a new post in its
    // channel, so the poll brings the post back and the watch file is read.
    let first = &posted[0].id;
    w.mm.react_as(first, &w.authors[1], "+1");
    w.mm.post(&w.channels[0], &w.authors[2], "thanks, all good");
    w.wait_interval();
    let active = w.measured_cycle();
    eprintln!(
        "realistic-100k: an active cycle after it (one watched post touched): CPU {:.1} ms, peak RSS {:.1} MiB",
        active.cpu.as_secs_f64() * 1e3,
        active.peak_rss_kib as f64 / 1024.0,
    );
    if !active.output.status.success() {
        problems.push("the active cycle after it failed".into());
    }
    sample
}

/// One channel with 200,000 posts since the cursor, written over two days
/// (2 % of them requests):
/// cycles run until its backlog is gone (or [`BACKLOG_MAX_CYCLES`]). Every
/// post must be handled once over those cycles, every request answered and
/// filed once. The sample is the whole catch-up: wall and CPU summed, the
/// highest peak RSS of a cycle; the floor column is the cycles it took.
fn backlog_200k(ctx: &Ctx, problems: &mut Vec<String>) -> Sample {
    const N: usize = 200_000;
    let w = ChatWorld::new(&ctx.bin, Llm::Away, false, None);
    let kind = |k: usize| {
        if k % 50 == 0 {
            Kind::Task
        } else {
            Kind::Routine
        }
    };
    // Two days of a busy channel while the agent was down (a weekend).
    const SPAN_MS: i64 = 2 * 86_400_000;
    let ids =
        w.mm.post_burst(&w.channels[1], &w.authors[0], N, SPAN_MS as usize, |k| {
            message(k, kind(k))
        });
    w.mm.advance_clock(SPAN_MS);
    let posted: Vec<Posted> = ids
        .into_iter()
        .enumerate()
        .map(|(k, id)| Posted { id, kind: kind(k) })
        .collect();
    w.wait_interval();
    let handled_before = w.handled_total();
    let (mut wall, mut cpu, mut rss, mut requests) = (Duration::ZERO, Duration::ZERO, 0, 0);
    let mut cycles = 0;
    loop {
        let m = w.measured_cycle();
        cycles += 1;
        wall += m.wall;
        cpu += m.cpu;
        rss = rss.max(m.peak_rss_kib);
        requests += w.mm.requests().len() as u64;
        if !m.output.status.success() {
            problems.push(format!("cycle {cycles} failed: {}", text(&m.output)));
            break;
        }
        eprintln!(
            "backlog-200k: cycle {cycles}: {:.1} s, {:.1} MiB, {} handled so far",
            m.wall.as_secs_f64(),
            m.peak_rss_kib as f64 / 1024.0,
            w.handled_total() - handled_before
        );
        let behind = w.sb.state_json()["mattermost"]["behind"]
            .as_array()
            .is_some_and(|b| !b.is_empty());
        let done = w.handled_total() - handled_before >= N as u64;
        if (!behind && done) || cycles >= BACKLOG_MAX_CYCLES {
            break;
        }
        w.wait_interval();
    }
    let handled = w.handled_total() - handled_before;
    if handled != N as u64 {
        problems.push(format!(
            "{handled} of {N} posts handled after {cycles} cycles"
        ));
    }
    w.check_replies_and_tasks(&posted, problems);
    Sample {
        wall,
        cpu,
        rss_kib: rss,
        mm_requests: Some(requests),
        fsyncs: None,
        work: N,
        floor_ratio: Some(cycles as f64),
    }
}

/// `days` of one light cycle an hour (six posts in one channel, in the
/// scenario mix) on a fast clock (libfaketime moves the agent's clock, the
/// fake's own clock moves with it), then five idle cycles five minutes
/// apart: the sample is their median. An idle cycle at day 30 must cost
/// what one at day 1 does.
fn month(ctx: &Ctx, problems: &mut Vec<String>, days: i64) -> Sample {
    const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    let none = Sample {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
        rss_kib: 0,
        mm_requests: None,
        fsyncs: None,
        work: 0,
        floor_ratio: None,
    };
    if !Path::new(FAKETIME_LIB).exists() {
        problems.push(format!(
            "{FAKETIME_LIB} missing (apt-get install libfaketime): no fast clock"
        ));
        return none;
    }
    let mut w = ChatWorld::new(&ctx.bin, Llm::Away, false, None);
    w.sb.env.push(("LD_PRELOAD".into(), FAKETIME_LIB.into()));
    w.sb.env
        .push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
    w.sb.env.push(("FAKETIME".into(), String::new()));
    let set_clock = |w: &mut ChatWorld| {
        let at = Utc.timestamp_millis_opt(w.mm.now_ms()).unwrap();
        let last = w.sb.env.len() - 1;
        w.sb.env[last].1 = format!("@{}", at.format("%Y-%m-%d %H:%M:%S"));
    };
    let mut k = 0;
    for _ in 0..days * 24 {
        w.mm.advance_clock(3_600_000);
        for _ in 0..6 {
            w.post_one(k, k % ACTIVE_CHANNELS, Kind::of(k));
            k += 1;
        }
        w.mm.advance_clock(1_000);
        set_clock(&mut w);
        w.cycle();
    }
    let state_bytes = std::fs::metadata(w.sb.state()).map_or(0, |m| m.len());
    // The corrections watch over the month: compacted as posts leave the
    // 48-hour window, so it holds about 60 hours of posts at most (the
    // window and the quarter window a compaction waits), never the month.
    let watch = w.sb.watch_lines();
    let oldest_h = watch
        .iter()
        .filter_map(|l| l["create_at"].as_i64())
        .min()
        .map_or(0.0, |t| (w.mm.now_ms() - t) as f64 / 3_600_000.0);
    eprintln!(
        "month: day {days}, corrections watch file {} lines, the oldest {oldest_h:.1} h old",
        watch.len()
    );
    if oldest_h > 61.0 {
        problems.push(format!(
            "the corrections watch file keeps a post {oldest_h:.1} h old (window 48 h, compacted past 60 h)"
        ));
    }
    let mut samples = Vec::new();
    for _ in 0..5 {
        w.wait_interval();
        set_clock(&mut w);
        let m = w.measured_cycle();
        if !m.output.status.success() {
            problems.push(format!("an idle cycle failed: {}", text(&m.output)));
        }
        samples.push(w.sample(&m, 0));
    }
    eprintln!(
        "month: day {days}, {k} posts so far, state file {:.1} KB",
        state_bytes as f64 / 1e3
    );
    samples.sort_by_key(|s| s.cpu);
    samples.swap_remove(2)
}

/// 20 HTTP checks, each endpoint answering after 1 s, nothing else
/// configured: checks run concurrently, so the floor is 1 s.
fn http_checks(ctx: &Ctx, problems: &mut Vec<String>) -> Sample {
    let ep: FakeEndpoints = in_background(FakeEndpoints::start);
    ep.set_slow_ms(HTTP_DELAY.as_millis() as u64);
    let mut b = WorldBuilder::new();
    for i in 0..HTTP_CHECKS {
        b.toml(&format!(
            "[[checks]]\nname = \"web-{i:02}\"\nkind = \"http\"\nurl = \"{}\"\ntimeout_secs = 5\n\n",
            ep.url(&format!("/slow?check={i}"))
        ));
    }
    let mut sb = b.sandbox();
    sb.bin = ctx.bin.clone();
    let m = sb.measure(&["run-once"]);
    if !m.output.status.success() {
        problems.push(format!("the cycle failed: {}", text(&m.output)));
    }
    let probes = ep.requests().iter().filter(|(_, p)| p == "/slow").count();
    if probes != HTTP_CHECKS {
        problems.push(format!("{probes} probes of {HTTP_CHECKS} HTTP checks"));
    }
    let fsyncs = std::fs::read_to_string(sb.state())
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["last_cycle"]["counts"]["fsyncs"].as_u64());
    Sample {
        wall: m.wall,
        cpu: m.cpu,
        rss_kib: m.peak_rss_kib,
        mm_requests: None,
        fsyncs,
        work: HTTP_CHECKS,
        floor_ratio: Some(m.wall.as_secs_f64() / HTTP_DELAY.as_secs_f64()),
    }
}

/// Ten TASK posts in ten channels, keyword fallback, with an empty ledger
/// or the 100,000-line one: filing must not depend on the ledger's size.
fn ten_tasks(ctx: &Ctx, problems: &mut Vec<String>, big: bool) -> Sample {
    let ledger = big.then_some(ctx.big_ledger.as_path());
    let w = ChatWorld::new(&ctx.bin, Llm::Away, false, ledger);
    let old = ledger_sources(&w.sb).len();
    let posted: Vec<Posted> = (0..10).map(|k| w.post_one(k, k, Kind::Task)).collect();
    w.wait_interval();
    let m = w.measured_cycle();
    w.verify(&m, &posted, old, poll_bound(&[1; 10]), problems);
    w.sample(&m, posted.len())
}

/// `tasks list` or `tasks stats` over the 100,000-line ledger: they must
/// stream it (memory flat), whatever its size.
fn tasks_command(ctx: &Ctx, problems: &mut Vec<String>, verb: &str) -> Sample {
    let mut sb = Sandbox::new();
    sb.bin = ctx.bin.clone();
    install_ledger(&ctx.big_ledger, &sb);
    let m = sb.measure(&["tasks", verb]);
    let out = String::from_utf8_lossy(&m.output.stdout);
    if !m.output.status.success() || out.trim().is_empty() {
        problems.push(format!("tasks {verb} failed: {}", text(&m.output)));
    }
    if verb == "list" {
        let tasks = ledger_sources(&sb).len();
        let rows = out.lines().filter(|l| l.contains("OPS-")).count();
        if rows < tasks {
            problems.push(format!("tasks list shows {rows} of {tasks} tasks"));
        }
    }
    Sample {
        wall: m.wall,
        cpu: m.cpu,
        rss_kib: m.peak_rss_kib,
        mm_requests: None,
        fsyncs: None,
        work: 0,
        floor_ratio: None,
    }
}

/// Writes a ledger of `lines` lines the way `src/tasks/ledger/` writes
/// them (its own record types): tasks filed over the last 400 days up to
/// yesterday, each a `create` of a realistic post, most with a Planka card
/// `update`, every fifth later resolved. Returns the file size.
fn write_big_ledger(path: &Path, lines: usize) -> u64 {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("ledger file"));
    let billing = BillingConfig::default();
    let end = Utc::now().timestamp_millis() - 86_400_000;
    let span = 400 * 86_400_000_i64;
    let words = [
        "the",
        "backup",
        "job",
        "on",
        "host",
        "failed",
        "again",
        "last",
        "night",
        "and",
        "the",
        "report",
        "for",
        "client",
        "needs",
        "a",
        "new",
        "export",
        "before",
        "friday",
        "please",
        "check",
        "disk",
        "usage",
        "nginx",
        "config",
        "certificate",
        "renewal",
        "dashboard",
    ];
    let (mut written, mut n) = (0, 0usize);
    while written < lines {
        n += 1;
        let at = Utc
            .timestamp_millis_opt(end - span + span * written as i64 / lines as i64)
            .unwrap();
        let team = TEAMS[n % TEAMS.len()];
        let channel = format!("{team}-ch-{:03}", n % CHANNELS_PER_TEAM);
        let source = format!("h{n:025}");
        let permalink = format!("http://mm.example.lan/{team}/pl/{source}");
        let msg: Vec<&str> = (0..35)
            .map(|i| words[(n * 7 + i * 13) % words.len()])
            .collect();
        let msg = format!("please look at ticket {n}: {}", msg.join(" "));
        let label = if n % 4 == 0 { "INCIDENT" } else { "TASK" };
        let post = PostRef {
            post_id: &source,
            message: &msg,
            author: ["alice", "bob", "carol"][n % 3],
            team,
            channel: &channel,
            permalink: &permalink,
        };
        let task = Task::from_post(post, label, "ops", &billing);
        let id = format!("OPS-{n}");
        let create = CreateRecord {
            id: id.clone(),
            created_at: at,
            backend: "ledger".into(),
            task,
        };
        put(&mut out, &Record::Create(create), &mut written);
        if n % 3 != 0 && written < lines {
            let card = UpdateRecord {
                id: id.clone(),
                at,
                card_id: Some(format!("{}", 1_500_000_000_000_000_000u64 + n as u64)),
                card_url: Some(format!("http://planka.example.lan/cards/{n}")),
                ..UpdateRecord::default()
            };
            put(&mut out, &Record::Update(card), &mut written);
        }
        if n % 5 == 0 && written < lines {
            let done = UpdateRecord {
                id,
                at: at + chrono::Duration::hours(20),
                status: Some("resolved".into()),
                ..UpdateRecord::default()
            };
            put(&mut out, &Record::Update(done), &mut written);
        }
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// One ledger line.
fn put(out: &mut impl std::io::Write, r: &Record, written: &mut usize) {
    serde_json::to_writer(&mut *out, r).unwrap();
    out.write_all(b"\n").unwrap();
    *written += 1;
}

/// A scenario's samples, summarised.
struct Row {
    scenario: &'static Scenario,
    samples: Vec<Sample>,
    /// Runs that failed a correctness check: their figures are shown but
    /// judge no target (a cycle that dropped posts is not fast).
    failed_runs: usize,
}

/// Median and spread of one figure.
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Option<Stat> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }

    /// `median (min–max)`, with `unit` and `prec` decimals; one figure when
    /// all runs agree.
    fn show(&self, prec: usize, unit: &str) -> String {
        let f = |x: f64| format!("{x:.prec$}");
        if f(self.min) == f(self.max) {
            format!("{}{unit}", f(self.median))
        } else {
            format!("{}{unit} ({}–{})", f(self.median), f(self.min), f(self.max))
        }
    }
}

impl Row {
    fn stat(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<Stat> {
        let v: Vec<f64> = self.samples.iter().filter_map(f).collect();
        if v.len() < self.samples.len() {
            return None; // some run lacks the figure: n/a
        }
        Stat::of(v)
    }

    fn wall(&self) -> Stat {
        self.stat(|s| Some(s.wall.as_secs_f64())).unwrap()
    }

    fn cpu(&self) -> Stat {
        self.stat(|s| Some(s.cpu.as_secs_f64())).unwrap()
    }

    /// CPU per post in ms.
    fn cpu_per_post_ms(&self) -> Option<Stat> {
        self.stat(|s| (s.work > 0).then(|| s.cpu.as_secs_f64() * 1000.0 / s.work as f64))
    }

    fn cells(&self) -> Vec<String> {
        let na = || "n/a".to_string();
        let secs = |s: Stat| {
            if s.max < 1.0 {
                Stat {
                    median: s.median * 1000.0,
                    min: s.min * 1000.0,
                    max: s.max * 1000.0,
                }
                .show(0, " ms")
            } else {
                s.show(2, " s")
            }
        };
        let chat = self.samples.iter().all(|s| s.mm_requests.is_some());
        vec![
            match self.failed_runs {
                0 => self.scenario.title.to_string(),
                n => format!("{} (FAILED checks: {n} runs)", self.scenario.title),
            },
            self.samples.len().to_string(),
            secs(self.wall()),
            secs(self.cpu()),
            self.stat(|s| Some(s.rss_kib as f64 / 1024.0))
                .map(|s| s.show(1, " MiB"))
                .unwrap(),
            if chat {
                self.stat(|s| s.mm_requests.map(|r| r as f64))
                    .map(|s| s.show(0, ""))
                    .unwrap_or_else(na)
            } else {
                "–".into()
            },
            self.stat(|s| s.fsyncs.map(|f| f as f64))
                .map(|s| s.show(0, ""))
                .unwrap_or_else(na),
            self.stat(|s| match (s.fsyncs, s.work) {
                (Some(f), w) if w > 0 && chat => Some(f as f64 / w as f64),
                _ => None,
            })
            .map(|s| s.show(2, ""))
            .unwrap_or_else(|| "–".into()),
            match self.stat(|s| s.floor_ratio) {
                Some(r) => format!("{}: ×{}", self.scenario.floor, r.show(2, "")),
                None => "–".into(),
            },
        ]
    }
}

/// Prints rows as a Markdown table.
fn print_table(rows: &[Row]) {
    let head = [
        "scenario",
        "runs",
        "wall",
        "CPU (user+sys)",
        "peak RSS",
        "MM requests",
        "fsyncs",
        "fsyncs/post",
        "vs floor",
    ];
    let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|r| r[i].chars().count())
            .chain([head[i].len()])
            .max()
            .unwrap()
    };
    let widths: Vec<usize> = (0..head.len()).map(width).collect();
    let line = |r: Vec<String>| {
        let padded: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(head.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|&w| "-".repeat(w)).collect());
    for r in cells {
        line(r);
    }
}

/// The issue's targets that the rows measured, each with its figure.
fn print_targets(rows: &[Row]) {
    let row = |key: &str| rows.iter().find(|r| r.scenario.key == key);
    // Whether the target holds, unless a row it rests on failed its checks.
    let judge = |ok: bool, from: &[&Row]| -> String {
        let failed: Vec<&str> = from
            .iter()
            .filter(|r| r.failed_runs > 0)
            .map(|r| r.scenario.key)
            .collect();
        match (failed.is_empty(), ok) {
            (false, _) => format!("not judged ({} failed its checks)", failed.join(", ")),
            (true, true) => "met".into(),
            (true, false) => "MISSED".into(),
        }
    };
    println!("\nTargets (issue 14):");
    if let (Some(k1), Some(k10)) = (row("keywords-1000"), row("keywords-10000")) {
        if let (Some(a), Some(b)) = (k1.cpu_per_post_ms(), k10.cpu_per_post_ms()) {
            let r = b.median / a.median;
            println!(
                "- linear CPU per post: {:.3} ms at 10,000 vs {:.3} ms at 1,000 = ×{r:.2} (target ≤ ×1.3): {}",
                b.median,
                a.median,
                judge(r <= 1.3, &[k1, k10])
            );
        }
    }
    if let (Some(k0), Some(k1)) = (row("keywords-100"), row("keywords-1000")) {
        if let (Some(a), Some(b)) = (k0.cpu_per_post_ms(), k1.cpu_per_post_ms()) {
            println!(
                "  (CPU per post at 100: {:.3} ms; 1,000 vs 100 = ×{:.2})",
                a.median,
                b.median / a.median
            );
        }
    }
    if let Some(b) = row("burst") {
        let w = b.wall();
        println!(
            "- a 10,000-post burst fits one default cycle: {:.1} s of {DEFAULT_DEADLINE_SECS:.0} s ({:.0} %): {}",
            w.median,
            100.0 * w.median / DEFAULT_DEADLINE_SECS,
            judge(w.max < DEFAULT_DEADLINE_SECS / 2.0, &[b])
        );
    }
    if let (Some(e), Some(b)) = (row("ledger-empty"), row("ledger-100k")) {
        let (we, wb) = (e.wall().median, b.wall().median);
        let (ce, cb) = (e.cpu().median, b.cpu().median);
        println!(
            "- filing 10 tasks with a 100,000-line ledger vs empty: wall ×{:.2}, CPU ×{:.2} (target ≤ ×1.5): {}",
            wb / we,
            cb / ce,
            judge(wb / we <= 1.5, &[e, b])
        );
    }
    // Issue 14's ceiling is for its scenarios; issue 24's are below.
    let issue_14 = |r: &&Row| !ISSUE_24.contains(&r.scenario.key);
    let over: Vec<String> = rows
        .iter()
        .filter(issue_14)
        .filter_map(|r| {
            let kib = r.samples.iter().map(|s| s.rss_kib).max()?;
            (kib > RSS_CEILING_KIB)
                .then(|| format!("{:.1} MiB in {}", kib as f64 / 1024.0, r.scenario.title))
        })
        .collect();
    let highest = rows
        .iter()
        .filter(issue_14)
        .flat_map(|r| &r.samples)
        .map(|s| s.rss_kib)
        .max();
    if let Some(kib) = highest {
        println!(
            "- peak RSS ≤ 20 MiB in every scenario: highest {:.1} MiB: {}",
            kib as f64 / 1024.0,
            judge(over.is_empty(), &[])
        );
        for o in over {
            println!("  over: {o}");
        }
    }
    for key in ["idle", "idle-after-busy"] {
        if let Some(r) = row(key) {
            if let Some(req) = r.stat(|s| s.mm_requests.map(|x| x as f64)) {
                println!(
                    "- {}: {} Mattermost requests (target {}, one per team): {}",
                    r.scenario.title,
                    req.show(0, ""),
                    TEAMS.len(),
                    judge(req.max <= TEAMS.len() as f64, &[r])
                );
            }
        }
    }
    for key in ["busy-llm", "keywords-1000", "keywords-10000"] {
        if let Some(r) = row(key) {
            if let Some(f) = r.stat(|s| s.fsyncs.map(|f| f as f64 / s.work.max(1) as f64)) {
                println!(
                    "- fsyncs per post, {}: {:.2} (reported, no target)",
                    r.scenario.title, f.median
                );
            }
        }
    }
    if let Some(r) = row("busy-llm") {
        if let Some(f) = r.stat(|s| s.floor_ratio) {
            println!(
                "- busy cycle vs the LLM floor (calls × 0.2 s / {LLM_CONCURRENCY}): ×{} (reported, no target)",
                f.show(2, "")
            );
        }
    }
    if let Some(r) = row("http") {
        println!(
            "- 20 HTTP checks at 1 s each: {:.2} s (floor 1 s)",
            r.wall().median
        );
    }
    println!("\nTargets (issue 24):");
    if let Some(r) = row("realistic-100k") {
        let kib = r.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        println!(
            "- peak RSS at 100,000 posts of realistic length: {:.1} MiB (target ≤ 24 MiB): {}",
            kib as f64 / 1024.0,
            judge(kib <= RSS_CEILING_100K_KIB, &[r])
        );
    }
    if let Some(r) = row("backlog-200k") {
        let cycles = r.stat(|s| s.floor_ratio).map_or(0.0, |s| s.max);
        let kib = r.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        println!(
            "- a channel with 200,000 posts since the cursor: caught up in {cycles:.0} cycles, every post once, peak RSS {:.1} MiB: {}",
            kib as f64 / 1024.0,
            judge(r.failed_runs == 0, &[])
        );
    }
    if let (Some(d1), Some(d30)) = (row("month-day-1"), row("month-day-30")) {
        let (c1, c30) = (d1.cpu().median, d30.cpu().median);
        let rss = |r: &Row| r.stat(|s| Some(s.rss_kib as f64)).map_or(0.0, |s| s.median);
        let (m1, m30) = (rss(d1), rss(d30));
        let ok = c30 <= 1.2 * c1 && m30 <= 1.2 * m1;
        println!(
            "- idle cycle at day 30 vs day 1: CPU {:.1} vs {:.1} ms (×{:.2}), peak RSS {:.1} vs {:.1} MiB (×{:.2}) (target ≤ ×1.2): {}",
            c30 * 1000.0,
            c1 * 1000.0,
            c30 / c1,
            m30 / 1024.0,
            m1 / 1024.0,
            m30 / m1,
            judge(ok, &[d1, d30])
        );
    }
}

/// The scenarios of issue 24, judged by its own targets.
const ISSUE_24: [&str; 4] = [
    "realistic-100k",
    "backlog-200k",
    "month-day-1",
    "month-day-30",
];

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{key}={v}: not a number"))
    })
}

fn main() {
    let bin = std::env::var_os("OPS_AGENT_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ops-agent")));
    assert!(bin.is_file(), "no binary at {}", bin.display());
    let runs = env_usize("OPS_AGENT_BENCH_RUNS");
    let only: Vec<String> = std::env::var("OPS_AGENT_BENCH_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    // `cargo bench` passes `--bench`; a name filter like libtest's works too.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .chain(only)
        .filter(|s| !s.is_empty())
        .collect();
    let all = Box::leak(scenarios().into_boxed_slice());
    let chosen: Vec<&'static Scenario> = all
        .iter()
        .filter(|s| filter.is_empty() || filter.iter().any(|f| s.key.contains(f.as_str())))
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let big_ledger = dir.path().join("ops-tasks-100k.jsonl");
    let ledger_bytes = if chosen
        .iter()
        .any(|s| s.key.starts_with("ledger") || s.key.starts_with("tasks"))
    {
        write_big_ledger(&big_ledger, LEDGER_LINES)
    } else {
        0
    };
    let ctx = Ctx { bin, big_ledger };

    println!(
        "\nscale: {} (OPS_AGENT_BENCH_BIN to time another build)",
        ctx.bin.display()
    );
    println!(
        "{} teams x {CHANNELS_PER_TEAM} channels; chat cycles with deadline_secs = {DEADLINE_SECS}; \
         posts 80 % ROUTINE, 15 % TASK, 5 % INCIDENT; each run a fresh sandbox and fresh fakes.",
        TEAMS.len()
    );
    if ledger_bytes > 0 {
        println!(
            "big ledger: {LEDGER_LINES} lines, {:.1} MB",
            ledger_bytes as f64 / 1e6
        );
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for sc in chosen {
        let n = if sc.once {
            1
        } else {
            runs.unwrap_or(if sc.long { 3 } else { 5 }).max(1)
        };
        let (mut samples, mut failed_runs) = (Vec::new(), 0);
        for i in 0..n {
            let t = Instant::now();
            let mut found = Vec::new();
            let s = (sc.run)(&ctx, &mut found);
            eprintln!(
                "{:<16} run {}/{n}: wall {:.3} s, CPU {:.3} s, peak RSS {:.1} MiB ({:.1} s with set-up){}",
                sc.key,
                i + 1,
                s.wall.as_secs_f64(),
                s.cpu.as_secs_f64(),
                s.rss_kib as f64 / 1024.0,
                t.elapsed().as_secs_f64(),
                if found.is_empty() { "" } else { " FAILED" }
            );
            failed_runs += usize::from(!found.is_empty());
            problems.extend(
                found
                    .into_iter()
                    .map(|p| format!("{}, run {}: {p}", sc.key, i + 1)),
            );
            samples.push(s);
        }
        rows.push(Row {
            scenario: sc,
            samples,
            failed_runs,
        });
    }
    println!();
    print_table(&rows);
    println!(
        "\nmedian (min–max) over the runs; CPU = the process's user + sys; peak RSS = its own VmHWM;\n\
         MM requests = what the fake Mattermost saw in the measured cycle (replies included);\n\
         fsyncs = last_cycle.counts.fsyncs, up to the final save (which adds 4).",
    );
    print_targets(&rows);
    println!("\nTotal {:.0} s.", started.elapsed().as_secs_f64());
    if !problems.is_empty() {
        eprintln!("\nCorrectness failures:");
        for p in &problems {
            eprintln!("- {p}");
        }
        std::process::exit(1);
    }
}
