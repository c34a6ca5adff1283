//! One cycle, top to bottom: the only place that knows the order of stages.
//!
//! ```text
//! lock -> load state -> poll Mattermost -> classify -> create tasks -> reply
//!      -> health checks -> auto-fix (rate limited) -> escalate -> intel
//!      -> save state -> unlock
//! ```
//!
//! [`run_once`] is that list; each stage is a method of [`Cycle`] that
//! records an [`Outcome`] in the [`CycleReport`], so one stage's failure
//! never stops the later ones. The cycle honours a deadline: the chat stages
//! end early enough to leave the health and fix stages their time, work cut
//! short is recorded and carried over, and state is still saved.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::chat::{self, Act, Tally};
use crate::config::Config;
use crate::fix::ServiceSummary;
use crate::health::Verdict;
use crate::lock::CycleLock;
use crate::mattermost::{self, NewPost, PollOutcome};
use crate::report::{count_checks, CycleReport, Outcome};
use crate::state::{RuntimeState, Stats};
use crate::store;
use crate::tasks::mc::McBackend;
use crate::tasks::outbox::{self, Targets};
use crate::tasks::planka::PlankaClient;
use crate::{escalate, fix, health, intel, lock, ollama, silence};

/// Options of one cycle.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Do every read and check but no write to any external system, and
    /// say what would have been done. Nothing is saved: a dry run must not
    /// move the chat cursor over posts it did not really handle.
    pub dry_run: bool,
}

/// Runs one cycle. Errors mean the cycle could not run at all (lock held,
/// state unsafe to use, state not saved); everything else is in the report.
pub async fn run_once(config: &Config, opts: RunOptions) -> Result<CycleReport> {
    let mut cycle = Cycle::start(config, opts)?;
    let chat = cycle.poll_mattermost().await; // 1
    let llm = cycle.llm_for(&chat);
    let trackers = Trackers::new(config)?;
    cycle.classify(&chat, llm.as_ref()).await; // 2
    cycle
        .file_tasks_and_reply(&chat, llm.as_ref(), &trackers)
        .await?; // 3-4
    cycle.move_cursor(&chat);
    let ctx = health::HealthContext::new(&config.health);
    let history = cycle.load_fix_history();
    let verdicts = cycle.check_health(&ctx, history.as_ref().ok()).await; // 5
    let silenced = cycle.active_silences();
    let (fixes, history) = cycle.auto_fix(&ctx, &verdicts, &silenced, history).await; // 6
    let services = fix::summarize(
        &config.checks,
        &verdicts,
        &fixes,
        &history,
        &config.fix,
        cycle.now,
    );
    cycle.escalate(&chat, &services, &silenced, &trackers).await; // 7
    cycle.send_intel().await; // 8
    cycle.finish() // 9
}

/// MC and Planka, built once and shared by the tasks and escalation stages.
struct Trackers {
    mc: McBackend,
    planka: Option<PlankaClient>,
}

impl Trackers {
    /// Fails only on what config validation already rules out (a bad id
    /// regex), so a failure here means the cycle cannot run at all.
    fn new(config: &Config) -> Result<Trackers> {
        let mc = McBackend::from_config(&config.mc, config.paths.ledger.clone())?;
        let planka = if config.planka.enabled() {
            PlankaClient::new(
                &config.planka,
                Some(config.paths.planka_token_cache.clone()),
            )
            .map_err(|e| tracing::warn!("Planka not usable, cards wait in the outbox: {e:#}"))
            .ok()
        } else {
            None
        };
        Ok(Trackers { mc, planka })
    }

    /// Where tasks go.
    fn targets(&self, dry_run: bool) -> Targets<'_> {
        Targets {
            mc: &self.mc,
            planka: self.planka.as_ref(),
            dry_run,
        }
    }
}

/// What the chat stages work on.
struct Chat {
    /// `None`: no credentials, so nothing to read and nothing before now
    /// is unhandled. Kept when Mattermost is down, for the escalation
    /// stage (an alert post is then owed, not skipped).
    client: Option<mattermost::Client>,
    /// `None`: not polled this cycle (not configured, down, or cut by the
    /// deadline); the cursor then stays where it was.
    poll: Option<PollOutcome>,
}

impl Chat {
    fn posts(&self) -> &[NewPost] {
        self.poll.as_ref().map_or(&[], |p| p.posts.as_slice())
    }
}

/// One cycle's working set: config, deadlines, the loaded state and the
/// report being written. Held only inside [`run_once`].
struct Cycle<'a> {
    config: &'a Config,
    opts: RunOptions,
    started: Instant,
    now: DateTime<Utc>,
    /// The whole cycle ends here.
    deadline: tokio::time::Instant,
    /// Chat work stops here, leaving the health and fix stages their time.
    chat_deadline: tokio::time::Instant,
    /// The poll's `since` (the cursor minus the overlap window).
    since_ms: i64,
    runtime: RuntimeState,
    stats: Stats,
    report: CycleReport,
    tally: Tally,
    _lock: CycleLock,
}

impl<'a> Cycle<'a> {
    /// Takes the lock and loads state and stats (corrupt files are set aside).
    fn start(config: &'a Config, opts: RunOptions) -> Result<Cycle<'a>> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + config.agent.deadline());
        let now = Utc::now();
        let lock = lock::acquire(&config.paths.lock)?;
        let loaded = store::load::<RuntimeState>(&config.paths.state, now)?;
        let stats_loaded = store::load::<Stats>(&config.paths.stats, now)?;
        let mut runtime = loaded.value;
        runtime.record_set_aside(loaded.set_aside.into_iter().chain(stats_loaded.set_aside));
        tracing::info!(
            deadline_secs = config.agent.deadline_secs,
            dry_run = opts.dry_run,
            first_run = !loaded.existed,
            "Cycle started."
        );
        let now_ms = now.timestamp_millis();
        let since_ms = match runtime.last_check_ms {
            Some(c) => c - config.mattermost.overlap_secs as i64 * 1000,
            None => now_ms - config.agent.first_run_lookback_mins as i64 * 60_000,
        };
        Ok(Cycle {
            config,
            opts,
            started,
            now,
            deadline,
            chat_deadline: deadline - health_reserve(config),
            since_ms,
            runtime,
            stats: stats_loaded.value,
            report: CycleReport {
                started_ms: now_ms,
                dry_run: opts.dry_run,
                ..Default::default()
            },
            tally: Tally::default(),
            _lock: lock,
        })
    }

    /// Saves the runtime state now (never in a dry run).
    fn save(&self) -> Result<()> {
        if self.opts.dry_run {
            return Ok(());
        }
        store::save(&self.config.paths.state, &self.runtime)
    }

    /// Stage 1: every new post of the configured teams.
    async fn poll_mattermost(&mut self) -> Chat {
        let t = Instant::now();
        let config = self.config;
        let client =
            match mattermost::Client::from_config(&config.mattermost, &config.paths.token_cache) {
                Ok(c) => c,
                Err(e) => {
                    self.report.push(
                        "mattermost",
                        Outcome::Skipped(format!("not configured: {e:#}")),
                        ms(t),
                    );
                    return Chat {
                        client: None,
                        poll: None,
                    };
                }
            };
        let poll = mattermost::poll(
            &client,
            &config.mattermost,
            &mut self.runtime.mattermost,
            self.since_ms,
            self.now.timestamp_millis(),
            self.chat_deadline,
        );
        match within(self.chat_deadline, poll).await {
            Ok(Ok(outcome)) => {
                self.report
                    .counts
                    .insert("mm_requests".into(), outcome.requests.into());
                self.report
                    .counts
                    .insert("posts_new".into(), outcome.posts.len() as u64);
                let detail = format!(
                    "{} new, {} skipped, {} requests",
                    outcome.posts.len(),
                    outcome.skipped.total(),
                    outcome.requests
                );
                let result = if outcome.teams_failed.is_empty() {
                    Outcome::Ok(detail)
                } else {
                    let failed: Vec<String> = outcome
                        .teams_failed
                        .iter()
                        .map(|(t, why)| format!("{t}: {why}"))
                        .collect();
                    tracing::warn!(
                        "Teams not polled fully (retried next cycle): {}",
                        failed.join("; ")
                    );
                    Outcome::Degraded(format!("{detail}; {}", failed.join("; ")))
                };
                self.report.push("mattermost", result, ms(t));
                Chat {
                    client: Some(client),
                    poll: Some(outcome),
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("Mattermost unusable, chat skipped this cycle: {e}");
                self.report
                    .counts
                    .insert("mm_requests".into(), client.requests().into());
                self.report
                    .push("mattermost", Outcome::Degraded(e.to_string()), ms(t));
                Chat {
                    client: Some(client),
                    poll: None,
                }
            }
            Err(cut) => {
                self.report.deadline_hit = true;
                self.report
                    .push("mattermost", Outcome::Skipped(cut.to_string()), ms(t));
                Chat {
                    client: Some(client),
                    poll: None,
                }
            }
        }
    }

    /// The LLM client, built only when there are posts to work on.
    fn llm_for(&self, chat: &Chat) -> Option<ollama::Client> {
        if chat.posts().is_empty() {
            return None;
        }
        ollama::Client::from_config(&self.config.ollama)
            .map_err(|e| tracing::warn!("LLM not usable, keyword rules and templates only: {e:#}"))
            .ok()
    }

    /// Stage 2: ROUTINE, TASK or INCIDENT for each post without a label; posts
    /// not reached before the deadline stay unlabelled for the next cycle.
    async fn classify(&mut self, chat: &Chat, llm: Option<&ollama::Client>) {
        let t = Instant::now();
        // Silence commands are answered by plain code, and replies in an
        // alert's thread belong to the escalation stage: neither is classified.
        let posts: Vec<NewPost> = chat
            .posts()
            .iter()
            .filter(|p| self.silence_command(p).is_none() && !self.in_alert_thread(p))
            .cloned()
            .collect();
        if posts.is_empty() {
            self.report
                .push("classify", Outcome::Skipped("no new posts".into()), 0);
            return;
        }
        // A call started after this point could outlive the chat deadline.
        let stop_starting = self
            .chat_deadline
            .checked_sub(Duration::from_secs(
                self.config.ollama.classify_timeout_secs,
            ))
            .unwrap_or(self.chat_deadline);
        let work = chat::classify_posts(
            llm,
            &self.config.classify,
            &posts,
            &mut self.runtime.chat,
            &mut self.stats,
            stop_starting,
            &mut self.tally,
        );
        let cut = within(self.chat_deadline, work).await.err();
        let tally = &self.tally;
        let detail = format!("{} by llm, {} by keywords", tally.by_llm, tally.by_keywords);
        let outcome = match cut {
            Some(cut) => Outcome::Degraded(format!("{detail}; {cut}, the rest next cycle")),
            None if tally.unclassified > 0 => Outcome::Degraded(format!(
                "{detail}; {} left for next cycle (deadline)",
                tally.unclassified
            )),
            None => Outcome::Ok(detail),
        };
        if matches!(outcome, Outcome::Degraded(_)) {
            self.report.deadline_hit = true;
        }
        self.report.push("classify", outcome, ms(t));
    }

    /// Stages 3–4: retries the task outbox, then per post in `create_at` order the
    /// task and the reply naming it, saving state after each post, so a
    /// crash in between repeats nothing.
    async fn file_tasks_and_reply(
        &mut self,
        chat: &Chat,
        llm: Option<&ollama::Client>,
        trackers: &Trackers,
    ) -> Result<()> {
        let t = Instant::now();
        let config = self.config;
        let targets = trackers.targets(self.opts.dry_run);
        let retried = within(
            self.chat_deadline,
            outbox::retry_outbox(targets, &mut self.runtime.tasks, self.now),
        )
        .await
        .unwrap_or_default();
        let mut posts_done = 0u64;
        if let (Some(client), Some(outcome)) = (&chat.client, &chat.poll) {
            let last = self.runtime.last_cycle.clone();
            let act = Act {
                config,
                mm: client,
                llm,
                targets,
                last_checks: last.as_ref().map_or(&[], |c| c.checks.as_slice()),
                last_checks_ms: last.as_ref().map_or(0, |c| c.started_ms),
            };
            for post in &outcome.posts {
                if self.silence_command(post).is_some() {
                    if self.answer_silence(client, post).await? {
                        posts_done += 1;
                    }
                    continue;
                }
                if self.in_alert_thread(post) {
                    // An acknowledgement, read by the escalation stage from the thread.
                    if !self.opts.dry_run {
                        mattermost::mark_handled(
                            &mut self.runtime.mattermost,
                            &post.id,
                            post.create_at,
                        );
                        posts_done += 1;
                    }
                    continue;
                }
                let Some(mut progress) = self.runtime.chat.progress.get(&post.id).cloned() else {
                    continue; // not classified yet
                };
                let progress_label_is_actionable =
                    progress.label.is_some_and(|l| l.is_actionable());
                let step = chat::act_on_post(
                    &act,
                    post,
                    &mut progress,
                    &mut self.runtime.tasks,
                    self.now,
                    &mut self.tally,
                );
                let result = within(self.chat_deadline, step).await;
                match result {
                    Ok(Ok(true)) if !self.opts.dry_run => {
                        self.runtime.chat.progress.remove(&post.id);
                        mattermost::mark_handled(
                            &mut self.runtime.mattermost,
                            &post.id,
                            post.create_at,
                        );
                        posts_done += 1;
                    }
                    Ok(Ok(_)) => {
                        self.runtime.chat.progress.insert(post.id.clone(), progress);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(post = %post.id, "Post not handled, retried next cycle: {e:#}");
                        self.runtime.chat.progress.insert(post.id.clone(), progress);
                    }
                    Err(cut) => {
                        self.report.deadline_hit = true;
                        tracing::warn!(post = %post.id, "Post left for next cycle: {cut}");
                        self.runtime.chat.progress.insert(post.id.clone(), progress);
                        break;
                    }
                }
                // Save after every external write (task, card, reply), so a
                // crash repeats none; ROUTINE posts wrote nothing and are
                // saved with the rest at the end.
                if progress_label_is_actionable {
                    self.save()?;
                }
            }
        }
        for line in &self.tally.would {
            tracing::info!("[dry-run] would {line}");
        }
        let tally = &self.tally;
        let outbox_left = self.runtime.tasks.outbox.len();
        let idle = chat.posts().is_empty() && retried.is_empty() && outbox_left == 0;
        let detail = format!(
            "{} created, {} existing, {} outbox retried, {} queued",
            tally.tasks_created,
            tally.tasks_existing,
            retried.len(),
            outbox_left
        );
        let tasks = if idle {
            Outcome::Skipped("nothing to file".into())
        } else if tally.task_errors.is_empty() {
            Outcome::Ok(detail)
        } else {
            Outcome::Degraded(format!("{detail}; {}", tally.task_errors.join("; ")))
        };
        let detail = format!("{} posted", tally.replies);
        let reply = if chat.posts().is_empty() {
            Outcome::Skipped("no new posts".into())
        } else if tally.reply_errors.is_empty() {
            Outcome::Ok(detail)
        } else {
            Outcome::Degraded(format!("{detail}; {}", tally.reply_errors.join("; ")))
        };
        self.report.push("tasks", tasks, ms(t));
        self.report.push("reply", reply, 0);
        self.report
            .counts
            .insert("posts_handled".into(), posts_done);
        self.stats.bump("posts_handled", posts_done);
        self.stats
            .bump("tasks_created", self.tally.tasks_created.into());
        self.stats.bump("replies_posted", self.tally.replies.into());
        Ok(())
    }

    /// Moves `last_check_ms` only over posts that were fully handled.
    fn move_cursor(&mut self, chat: &Chat) {
        let now_ms = self.now.timestamp_millis();
        match (&chat.client, &chat.poll) {
            (_, Some(outcome)) => {
                let rt = &mut self.runtime;
                let next = mattermost::next_cursor(
                    rt.last_check_ms,
                    self.since_ms,
                    outcome,
                    &rt.mattermost,
                );
                let overlap_ms = self.config.mattermost.overlap_secs as i64 * 1000;
                mattermost::prune_handled(&mut rt.mattermost, next, overlap_ms, now_ms);
                // Progress of posts not seen for a week (their team keeps
                // failing) is dropped; a later retry still finds the task
                // and the reply.
                let week_ago = now_ms - 7 * 24 * 3600 * 1000;
                rt.chat.progress.retain(|_, p| p.create_at > week_ago);
                rt.last_check_ms = Some(next);
            }
            (None, None) => self.runtime.last_check_ms = Some(now_ms),
            (Some(_), None) => {}
        }
    }

    /// The fix history (a corrupt one is set aside and recorded); an
    /// unusable one (a planted symlink) disables fixes, not the checks.
    fn load_fix_history(&mut self) -> Result<fix::FixHistory, String> {
        match fix::FixHistory::load(&self.config.paths.fix_history, self.now) {
            Ok((history, aside)) => {
                self.runtime.record_set_aside(aside);
                Ok(history)
            }
            Err(e) => {
                tracing::error!("{e:#}; no fix will be attempted this cycle");
                Err(format!("{e:#}"))
            }
        }
    }

    /// Stage 5: every check concurrently, each under its own timeout, failures
    /// re-probed once, then the flap guard.
    async fn check_health(
        &mut self,
        ctx: &health::HealthContext,
        history: Option<&fix::FixHistory>,
    ) -> Vec<Verdict> {
        let t = Instant::now();
        let results = match within(self.deadline, health::run_all(ctx, &self.config.checks)).await {
            Ok(results) => results,
            Err(cut) => {
                self.report.deadline_hit = true;
                self.report
                    .push("health", Outcome::Skipped(cut.to_string()), ms(t));
                return Vec::new();
            }
        };
        // The fix history tells our own restarts from unexpected ones; an
        // unreadable one only weakens that distinction here.
        let empty = fix::FixHistory::default();
        let history = history.unwrap_or(&empty);
        let verdicts = self
            .runtime
            .health
            .record(&self.config.checks, &results, history, self.now);
        for v in verdicts
            .iter()
            .filter(|v| v.result.status != health::Status::Ok)
        {
            let r = &v.result;
            tracing::warn!(check = %r.name, status = r.status.as_str(), failing = v.failing, "{}", r.reason);
        }
        self.report.checks = verdicts.iter().map(|v| v.result.clone()).collect();
        self.report.push(
            "health",
            Outcome::Ok(count_checks(&self.report.checks)),
            ms(t),
        );
        verdicts
    }

    /// Stage 6: configured actions only, at most N attempts per service per
    /// rolling hour, each verified by re-checking.
    async fn auto_fix(
        &mut self,
        ctx: &health::HealthContext,
        verdicts: &[Verdict],
        silenced: &BTreeSet<String>,
        history: Result<fix::FixHistory, String>,
    ) -> (Vec<fix::FixReport>, fix::FixHistory) {
        let t = Instant::now();
        // A silenced service is still checked, but never fixed.
        let fixable: Vec<Verdict> = verdicts
            .iter()
            .filter(|v| !silenced.contains(&v.result.service))
            .cloned()
            .collect();
        let failing = fixable.iter().filter(|v| v.failing).count();
        let mut history = match history {
            Ok(history) => history,
            Err(e) => {
                let why = format!("fix history unusable, no fix attempted: {e}");
                self.report.push("fix", Outcome::Failed(why), 0);
                return (Vec::new(), fix::FixHistory::default());
            }
        };
        if failing == 0 {
            self.report
                .push("fix", Outcome::Skipped("nothing failing".into()), 0);
            return (Vec::new(), history);
        }
        let run = fix::run_fixes(
            ctx,
            &self.config.checks,
            &fixable,
            &mut history,
            &self.config.paths.fix_history,
            &self.config.fix,
            self.opts.dry_run,
            self.now,
        );
        let fixes = match within(self.deadline, run).await {
            Ok(fixes) => fixes,
            Err(cut) => {
                self.report.deadline_hit = true;
                self.report
                    .push("fix", Outcome::Skipped(cut.to_string()), ms(t));
                return (Vec::new(), history);
            }
        };
        for f in &fixes {
            tracing::warn!("Fix: {}", f.line());
        }
        let verified = fixes
            .iter()
            .filter(|f| f.outcome == Some(fix::Outcome::Verified))
            .count();
        let ran = fixes.iter().filter(|f| f.outcome.is_some()).count();
        let detail = format!("{failing} failing, {ran} fixes run, {verified} verified");
        let outcome = if ran > verified {
            Outcome::Degraded(detail)
        } else {
            Outcome::Ok(detail)
        };
        self.report.push("fix", outcome, ms(t));
        self.stats.bump("fixes_run", ran as u64);
        self.stats.bump("fixes_verified", verified as u64);
        (fixes, history)
    }

    /// Expires silences that ran out (logged) and returns the services
    /// still silenced: checked, but neither fixed nor alerted.
    fn active_silences(&mut self) -> BTreeSet<String> {
        let now_ms = self.now.timestamp_millis();
        for s in self.runtime.escalation.silences.expire(now_ms) {
            tracing::info!("Silence ended: {}", s.line(now_ms));
        }
        self.runtime
            .escalation
            .silences
            .silenced_services(&self.config.checks, now_ms)
    }

    /// Stage 7: an alert and a HIGH task once per incident that cannot be
    /// resolved, a follow-up when nobody acknowledges, a recovery notice.
    async fn escalate(
        &mut self,
        chat: &Chat,
        services: &[ServiceSummary],
        silenced: &BTreeSet<String>,
        trackers: &Trackers,
    ) {
        let t = Instant::now();
        // Mattermost down: tasks are still made and the alert post is owed.
        let mm = chat.client.as_ref();
        if let Some(mm) = mm {
            // The chat deadline has passed by now; 429 waits may use the rest.
            mm.set_deadline(self.deadline);
        }
        let config = self.config;
        let ctx = escalate::Ctx {
            cfg: &config.escalation,
            checks: &config.checks,
            mm,
            alert_channel: &config.mattermost.alert_channel,
            max_chars: config.mattermost.max_reply_chars,
            team_ids: &self.runtime.mattermost.teams.clone(),
            targets: Some(trackers.targets(self.opts.dry_run)),
            owner: &config.agent.owner,
            pass_env: &config.mc.pass_env,
            dry_run: self.opts.dry_run,
        };
        let run = escalate::run(
            &ctx,
            services,
            silenced,
            &mut self.runtime.escalation,
            &mut self.runtime.tasks,
            self.now,
        );
        match within(self.deadline, run).await {
            Ok(out) => {
                // Alerts and tasks just made: save now, so a crash before the
                // end of the cycle cannot lose the record of them.
                if !out.performed.is_empty() {
                    if let Err(e) = self.save() {
                        tracing::error!("State not saved after escalating: {e:#}");
                    }
                }
                for line in &out.performed {
                    tracing::warn!("Escalation: {line}");
                }
                for (name, n) in out.counters.pairs() {
                    self.stats.bump(name, n);
                }
                let outcome = if out.open == 0 && out.performed.is_empty() && out.errors.is_empty()
                {
                    Outcome::Skipped("no incidents".into())
                } else {
                    out.outcome()
                };
                self.report.push("escalate", outcome, ms(t));
            }
            Err(cut) => {
                self.report.deadline_hit = true;
                self.report
                    .push("escalate", Outcome::Skipped(cut.to_string()), ms(t));
            }
        }
    }

    /// Stage 8: the cycle summary to HiveMind, when configured.
    async fn send_intel(&mut self) {
        let t = Instant::now();
        let stage = intel::stage(
            &self.config.intel,
            &self.report,
            &self.runtime.escalation,
            self.now.timestamp_millis(),
        );
        let outcome = match within(self.deadline, stage).await {
            Ok(o) => o,
            Err(cut) => Outcome::Skipped(cut.to_string()),
        };
        self.report.push("intel", outcome, ms(t));
    }

    /// A reply in the thread of one of the agent's alerts.
    fn in_alert_thread(&self, post: &NewPost) -> bool {
        !post.root_id.is_empty() && self.runtime.escalation.is_alert_thread(&post.root_id)
    }

    /// The agent's `@name silence ...` command in a post, if it is one.
    fn silence_command(&self, post: &NewPost) -> Option<()> {
        let me = self.runtime.mattermost.me.as_ref()?;
        silence::parse_command(&post.message, &me.username).map(|_| ())
    }

    /// Answers a silence command (created, refused or not understood) in
    /// its thread; true when done (the post is then handled).
    async fn answer_silence(&mut self, mm: &mattermost::Client, post: &NewPost) -> Result<bool> {
        let Some(me) = self.runtime.mattermost.me.clone() else {
            return Ok(false);
        };
        if self.opts.dry_run {
            tracing::info!(post = %post.id, "[dry-run] would answer a silence command");
            return Ok(false);
        }
        let answered = escalate::answer_silence_post(
            mm,
            post,
            &me.username,
            &self.config.escalation,
            &self.config.checks,
            &mut self.runtime.escalation,
            self.config.mattermost.max_reply_chars,
            self.now.timestamp_millis(),
        )
        .await;
        match answered {
            Ok(Some(_)) => {
                mattermost::mark_handled(&mut self.runtime.mattermost, &post.id, post.create_at);
                self.save()?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                tracing::warn!(post = %post.id, "Silence command not answered, retried next cycle: {e:#}");
                Ok(false)
            }
        }
    }

    /// Stage 9: saves state and stats (nothing in a dry run) and logs the summary.
    fn finish(mut self) -> Result<CycleReport> {
        self.report.duration_ms = ms(self.started);
        if self.opts.dry_run {
            self.report
                .push("save", Outcome::Skipped("dry run: nothing saved".into()), 0);
            tracing::info!("{}", self.report.summary_line());
            return Ok(self.report);
        }
        self.report.push("save", Outcome::Ok(String::new()), 0);
        self.stats.record_cycle(&self.report, self.now);
        self.runtime.last_cycle = Some(self.report.clone());
        if let Err(e) = self.save() {
            let last = self.report.stages.len() - 1;
            self.report.stages[last].outcome = Outcome::Failed(format!("{e:#}"));
            tracing::error!("{}", self.report.summary_line());
            return Err(e);
        }
        if let Err(e) = store::save(&self.config.paths.stats, &self.stats) {
            tracing::warn!(error = %format!("{e:#}"), "Stats not saved; counters of this cycle are lost.");
        }
        tracing::info!("{}", self.report.summary_line());
        Ok(self.report)
    }
}

/// Time kept free for the health and fix stages at the end of the cycle:
/// the slowest check twice (probe and re-probe) with the re-probe pause,
/// plus the slowest fix (action, settle, re-check), at most half the deadline.
fn health_reserve(config: &Config) -> Duration {
    let slowest = config
        .checks
        .iter()
        .map(|c| c.timeout_secs)
        .max()
        .unwrap_or(0);
    let slowest_fix = config
        .checks
        .iter()
        .filter_map(|c| {
            c.fix
                .as_ref()
                .map(|f| f.timeout_secs + f.settle_secs + c.timeout_secs)
        })
        .max()
        .unwrap_or(0);
    let reserve = Duration::from_secs(2 * slowest + slowest_fix + 1)
        + Duration::from_millis(config.health.reprobe_pause_ms);
    reserve.min(config.agent.deadline() / 2)
}

/// Why a stage did not finish.
#[derive(Debug)]
enum Cut {
    BeforeStart,
    Midway,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cut::BeforeStart => "deadline reached before the stage started",
            Cut::Midway => "cut short by the cycle deadline",
        })
    }
}

/// Runs a stage unless the deadline has passed, and cuts it at the deadline.
async fn within<T>(deadline: tokio::time::Instant, fut: impl Future<Output = T>) -> Result<T, Cut> {
    if tokio::time::Instant::now() >= deadline {
        return Err(Cut::BeforeStart);
    }
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| Cut::Midway)
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
