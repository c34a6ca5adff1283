//! One cycle, top to bottom: the only place that knows the order of stages.
//!
//! ```text
//! lock -> load state -> chat (poll, classify, file tasks, reply)
//!      -> health checks -> auto-fix (rate limited) -> escalate -> intel
//!      -> save state -> metrics textfile, heartbeat -> unlock
//! ```
//!
//! The audit trail is opened right after the lock, so every decision of
//! the cycle (and a state file set aside while loading) lands in it as it
//! is made; see [`crate::observe`].
//!
//! [`run_once`] is that list; each stage is one call into the room that
//! owns it, and records an [`Outcome`] under its [`Stage`] in the
//! [`CycleReport`], so one stage's failure never stops the later ones. The
//! stage numbers below are those of docs/architecture.md#one-cycle. The time budget
//! ([`CycleBudget`]) ends chat work early enough to leave the health and fix
//! stages their time; work cut short is recorded and carried over, and
//! state is still saved.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::budget::{self, within, CycleBudget};
use crate::chat::{self, ChatRun};
use crate::config::Config;
use crate::escalate::EscalationState;
use crate::fix::{self, FixHistory, ServiceSummary};
use crate::health::{self, HealthContext, Verdict};
use crate::lock::{self, CycleLock};
use crate::mattermost;
use crate::observe::{audit, heartbeat, metrics};
use crate::report::{count_checks, CycleReport, Outcome};
use crate::stage::Stage;
use crate::state::{RuntimeState, Stats};
use crate::store;
use crate::tasks::outbox::{TaskState, Trackers};
use crate::tasks::planka::CachedToken;
use crate::time::elapsed_ms;
use crate::{escalate, intel};

/// Options of one cycle.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunOptions {
    /// Do every read and check but no write to any external system, and
    /// say what would have been done. Nothing is saved: a dry run must not
    /// move the chat cursor over posts it did not really handle.
    pub(crate) dry_run: bool,
}

/// Runs one cycle. Errors mean the cycle could not run at all (lock held,
/// state unsafe to use, state not saved); everything else is in the report.
pub(crate) async fn run_once(config: &Config, opts: RunOptions) -> Result<CycleReport> {
    let mut cycle = Cycle::start(config, opts)?;
    let trackers = trackers(config)?;
    let chat = cycle.chat(&trackers).await?; // 1-4
    let ctx = HealthContext::new(&config.health);
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
    cycle
        .escalate(&chat, &services, &silenced, &trackers, &ctx)
        .await; // 7
    cycle.send_intel().await; // 8
    let saved = cycle.finish(); // 9
    cycle.write_metrics(&saved); // 10: for Prometheus
    cycle.ping_heartbeat().await; // 11: for the dead-man's switch
    cycle.save_stats(saved)
}

/// One cycle's working set: config, budget, the loaded state and the
/// report being written. Held only inside [`run_once`].
struct Cycle<'a> {
    config: &'a Config,
    opts: RunOptions,
    started: Instant,
    now: DateTime<Utc>,
    budget: CycleBudget,
    runtime: RuntimeState,
    stats: Stats,
    report: CycleReport,
    /// Closed (and synced) before the lock is released.
    _audit: Option<audit::Session>,
    _lock: CycleLock,
}

/// The state file as the chat stage's book: its parts, and a checkpoint
/// that appends what one post changed to the state's journal (never in a
/// dry run).
struct StateBook<'a> {
    runtime: &'a mut RuntimeState,
    journal: PathBuf,
    /// The corrections watch's file: a post's entry goes there once the
    /// journal holds it, so the state never carries the whole window.
    watch: PathBuf,
    dry_run: bool,
}

impl chat::Book for StateBook<'_> {
    fn parts(&mut self) -> chat::Parts<'_> {
        let r = &mut *self.runtime;
        chat::Parts {
            cursor: &mut r.last_check_ms,
            mm: &mut r.mattermost,
            chat: &mut r.chat,
            tasks: &mut r.tasks,
            escalation: &mut r.escalation,
        }
    }

    fn checkpoint(&mut self, post: &str, create_at: i64) -> Result<()> {
        self.checkpoint_many(&[(post, create_at)])
    }

    fn checkpoint_many(&mut self, posts: &[(&str, i64)]) -> Result<()> {
        if self.dry_run || posts.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = posts
            .iter()
            .map(|(post, at)| self.runtime.entry_for(post, *at))
            .collect();
        store::append_entries(&self.journal, &entries)?;
        let ids: Vec<&str> = posts.iter().map(|(post, _)| *post).collect();
        chat::watch::spill(&mut self.runtime.chat, &self.watch, Some(&ids))?;
        Ok(())
    }
}

/// The state file as the escalation stage's book: a checkpoint is a whole
/// save, which is rare (only when escalation acts) and keeps an incident's
/// key from being lost between opening it and alerting.
struct SavingBook<'a> {
    runtime: &'a mut RuntimeState,
    state: &'a Path,
    dry_run: bool,
}

impl escalate::Book for SavingBook<'_> {
    fn parts(&mut self) -> (&mut EscalationState, &mut TaskState) {
        let r = &mut *self.runtime;
        (&mut r.escalation, &mut r.tasks)
    }

    fn checkpoint(&mut self) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        save_state(self.state, &mut *self.runtime)
    }
}

/// Where tasks go, as the config says (MC or the ledger, and Planka).
pub(crate) fn trackers(config: &Config) -> Result<Trackers> {
    let p = &config.paths;
    Trackers::new(
        &config.mc,
        &p.ledger,
        &config.planka,
        &p.planka_token_cache,
        &config.escalation.done_list,
    )
}

/// One atomic save of the runtime state, then the journal it folds in is
/// removed. The watch entries the state still holds fresh go to the watch
/// file first, and the file is synced: after that, the journal's copies of
/// them are not needed.
pub(crate) fn save_state(state: &Path, runtime: &mut RuntimeState) -> Result<()> {
    let watch = chat::watch::path_for(state);
    chat::watch::spill(&mut runtime.chat, &watch, None)?;
    chat::watch::sync(&mut runtime.chat, &watch)?;
    store::save(state, runtime)?;
    crate::files::remove_if_present(&store::journal_path(state))?;
    Ok(())
}

impl<'a> Cycle<'a> {
    /// Takes the lock and loads state and stats (corrupt files are set aside).
    fn start(config: &'a Config, opts: RunOptions) -> Result<Cycle<'a>> {
        let started = Instant::now();
        let deadline = config.agent.deadline();
        let reserve =
            budget::health_reserve(&config.checks, config.health.reprobe_pause(), deadline);
        let budget = CycleBudget::new(tokio::time::Instant::from_std(started), deadline, reserve);
        let now = Utc::now();
        // Files another user left where this agent keeps its own (root
        // trying the README's first command leaves the shared /tmp ones)
        // are named all at once, with their owner and the way out.
        let journal = store::journal_path(&config.paths.state);
        let paths = config.paths.all().map(|(_, p)| p);
        let watch = chat::watch::path_for(&config.paths.state);
        let foreign = crate::files::owned_by_others(
            paths
                .into_iter()
                .chain([journal.as_path(), watch.as_path()]),
        );
        if !foreign.is_empty() {
            return Err(crate::files::left_by_another_user(&foreign));
        }
        let lock = lock::acquire(&config.paths.lock)?;
        // Under the lock, so two cycles started at once rotate once.
        crate::observe::rotate::under_lock(&config.log, &config.paths.log, &config.paths.audit)
            .log();
        let cycle_id = audit::cycle_id(now.timestamp_millis());
        let trail = (!opts.dry_run)
            .then(|| audit::open_or_warn(&config.paths.audit, Some(cycle_id), None))
            .flatten();
        let loaded = store::load::<RuntimeState>(&config.paths.state, now)?;
        let stats_loaded = store::load::<Stats>(&config.paths.stats, now)?;
        let mut runtime = loaded.value;
        runtime.record_set_aside(loaded.set_aside.into_iter().chain(stats_loaded.set_aside));
        // What a cycle that was cut or killed made durable post by post.
        let skipped = store::replay(&journal, |e| runtime.apply(e))?;
        if skipped > 0 {
            tracing::warn!(journal = %journal.display(), skipped, "Skipped unreadable state journal lines (a write cut by a crash).");
        }
        // The token caches are read by their clients; a corrupt one is set
        // aside here so it is reported like the other files.
        let p = &config.paths;
        let caches = [
            store::load::<mattermost::TokenCache>(&p.token_cache, now).map(|l| l.set_aside),
            store::load::<CachedToken>(&p.planka_token_cache, now).map(|l| l.set_aside),
        ];
        for cache in caches {
            match cache {
                Ok(aside) => runtime.record_set_aside(aside),
                Err(e) => tracing::warn!("Token cache not usable, the client logs in again: {e:#}"),
            }
        }
        tracing::info!(
            deadline_secs = config.agent.deadline_secs.as_f64(),
            dry_run = opts.dry_run,
            first_run = !loaded.existed,
            "Cycle started."
        );
        Ok(Cycle {
            config,
            opts,
            started,
            now,
            budget,
            runtime,
            stats: stats_loaded.value,
            report: CycleReport {
                started_ms: now.timestamp_millis(),
                dry_run: opts.dry_run,
                ..Default::default()
            },
            _audit: trail,
            _lock: lock,
        })
    }

    /// Saves the runtime state now, folding the journal in (never in a
    /// dry run).
    fn save(&mut self) -> Result<()> {
        if self.opts.dry_run {
            return Ok(());
        }
        save_state(&self.config.paths.state, &mut self.runtime)
    }

    /// Stages 1–4: the chat half, one call into [`chat::run`].
    async fn chat(&mut self, trackers: &Trackers) -> Result<ChatRun> {
        let c = self.config;
        let watch_file = chat::watch::path_for(&c.paths.state);
        let settings = chat::Settings {
            mattermost: &c.mattermost,
            token_cache: &c.paths.token_cache,
            ollama: &c.ollama,
            classify: &c.classify,
            billing: &c.billing,
            owner: &c.agent.owner,
            escalation: &c.escalation,
            checks: &c.checks,
            first_run_lookback_ms: c.agent.first_run_lookback_mins as i64 * 60_000,
            corrections: &c.corrections,
            corrections_file: &c.paths.corrections,
            watch_file: &watch_file,
        };
        let last = self.runtime.last_cycle.clone();
        let mut book = StateBook {
            runtime: &mut self.runtime,
            journal: store::journal_path(&c.paths.state),
            watch: watch_file.clone(),
            dry_run: self.opts.dry_run,
        };
        let run = chat::run(
            &settings,
            &self.budget,
            trackers.targets(self.opts.dry_run),
            chat::LastChecks {
                results: last.as_ref().map_or(&[], |l| l.checks.as_slice()),
                at_ms: last.as_ref().map_or(0, |l| l.started_ms),
            },
            &mut book,
            &mut self.report,
            self.now,
        )
        .await?;
        for (name, n) in &run.tally.counters {
            self.stats.bump(name, *n);
        }
        self.stats.bump("posts_handled", run.tally.posts_handled);
        self.stats
            .bump("tasks_created", run.tally.tasks_created.into());
        self.stats.bump("replies_posted", run.tally.replies.into());
        let t = &run.tally;
        self.stats.bump("tasks_failed", t.task_errors.len() as u64);
        self.stats.bump("cards_failed", t.card_errors.len() as u64);
        self.stats
            .bump("replies_failed", t.reply_errors.len() as u64);
        Ok(run)
    }

    /// The fix history (a corrupt one is set aside and recorded); an
    /// unusable one (a planted symlink) disables fixes, not the checks.
    fn load_fix_history(&mut self) -> Result<FixHistory, String> {
        match FixHistory::load(&self.config.paths.fix_history, self.now) {
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

    /// Stage 5: every check concurrently, each under its own timeout,
    /// failures re-probed once, then the flap guard.
    async fn check_health(
        &mut self,
        ctx: &HealthContext,
        history: Option<&FixHistory>,
    ) -> Vec<Verdict> {
        let t = Instant::now();
        // The fix history tells our own restarts from unexpected ones; an
        // unreadable one only weakens that distinction here.
        let empty = FixHistory::default();
        let own = history.unwrap_or(&empty);
        let run = health::assess(
            ctx,
            &self.config.checks,
            &mut self.runtime.health,
            own,
            self.now,
        );
        match within(self.budget.deadline, run).await {
            Ok(verdicts) => {
                self.report.checks = verdicts.iter().map(|v| v.result.clone()).collect();
                let counts = Outcome::Ok(count_checks(&self.report.checks));
                self.report.push(Stage::Health, counts, elapsed_ms(t));
                verdicts
            }
            Err(cut) => {
                self.report.deadline_hit = true;
                self.report.push(
                    Stage::Health,
                    Outcome::Skipped(cut.to_string()),
                    elapsed_ms(t),
                );
                Vec::new()
            }
        }
    }

    /// Stage 6: configured actions only, at most N attempts per service per
    /// rolling hour, each verified by re-checking.
    async fn auto_fix(
        &mut self,
        ctx: &HealthContext,
        verdicts: &[Verdict],
        silenced: &BTreeSet<String>,
        history: Result<FixHistory, String>,
    ) -> (Vec<fix::FixReport>, FixHistory) {
        let t = Instant::now();
        let c = self.config;
        let fx = fix::FixContext {
            health: ctx,
            checks: &c.checks,
            history_path: &c.paths.fix_history,
            policy: &c.fix,
        };
        let stage = fix::run::stage(
            &fx,
            verdicts,
            silenced,
            history,
            self.opts.dry_run,
            self.now,
            self.budget.deadline,
        )
        .await;
        self.report.deadline_hit |= stage.deadline_hit;
        self.report.push(Stage::Fix, stage.outcome, elapsed_ms(t));
        self.stats.bump("fixes_run", stage.ran);
        self.stats.bump("fixes_verified", stage.verified);
        for (name, outcome) in [
            ("fixes_failed", fix::Outcome::Failed),
            ("fixes_pending", fix::Outcome::Pending),
        ] {
            let n = stage.fixes.iter().filter(|f| f.outcome == Some(outcome));
            self.stats.bump(name, n.count() as u64);
        }
        (stage.fixes, stage.history)
    }

    /// Expires silences that ran out (logged) and returns the services
    /// still silenced: checked, but neither fixed nor alerted.
    fn active_silences(&mut self) -> BTreeSet<String> {
        let now_ms = self.now.timestamp_millis();
        let silences = &mut self.runtime.escalation.silences;
        for s in silences.expire(now_ms) {
            tracing::info!("Silence ended: {}", s.line(now_ms));
            escalate::silence::audit_ended(&s, None);
        }
        silences.silenced_services(&self.config.checks, now_ms)
    }

    /// Stage 7: an alert and a HIGH task once per incident that cannot be
    /// resolved, a follow-up when nobody acknowledges, a recovery notice.
    async fn escalate(
        &mut self,
        chat: &ChatRun,
        services: &[ServiceSummary],
        silenced: &BTreeSet<String>,
        trackers: &Trackers,
        health: &HealthContext,
    ) {
        let t = Instant::now();
        // Mattermost down: tasks are still made and the alert post is owed.
        let mm = chat.client.as_ref();
        if let Some(mm) = mm {
            // The chat deadline has passed by now; 429 waits may use the rest.
            mm.set_deadline(self.budget.deadline);
        }
        let c = self.config;
        // The brief reads the streaks while the book holds the state.
        let health_state = self.runtime.health.clone();
        let ctx = escalate::Ctx {
            cfg: &c.escalation,
            checks: &c.checks,
            mm,
            alert_channel: &c.mattermost.alert_channel,
            max_chars: c.mattermost.max_reply_chars,
            team_ids: &self.runtime.mattermost.teams.clone(),
            targets: Some(trackers.targets(self.opts.dry_run)),
            owner: &c.agent.owner,
            pass_env: &c.mc.pass_env,
            dry_run: self.opts.dry_run,
            brief: Some(escalate::brief::Sources::new(
                health,
                &health_state,
                &c.ollama,
                self.budget.deadline,
            )),
        };
        let mut book = SavingBook {
            runtime: &mut self.runtime,
            state: &c.paths.state,
            dry_run: self.opts.dry_run,
        };
        let run = escalate::run(&ctx, services, silenced, &mut book, self.now);
        let out = match within(self.budget.deadline, run).await {
            Ok(out) => out,
            Err(cut) => {
                self.report.deadline_hit = true;
                self.report.push(
                    Stage::Escalate,
                    Outcome::Skipped(cut.to_string()),
                    elapsed_ms(t),
                );
                return;
            }
        };
        for line in &out.performed {
            tracing::warn!("Escalation: {line}");
        }
        for (name, n) in out.counters.pairs() {
            self.stats.bump(name, n);
        }
        let quiet = out.errors.is_empty() && out.card_errors.is_empty();
        let outcome = if out.open == 0 && out.performed.is_empty() && quiet {
            Outcome::Skipped("no incidents".into())
        } else {
            out.outcome()
        };
        self.report.push(Stage::Escalate, outcome, elapsed_ms(t));
        if let Some(why) = out.fallback() {
            self.report.fallback(Stage::Escalate, why);
        }
    }

    /// Stage 8: the cycle summary to HiveMind, when configured.
    async fn send_intel(&mut self) {
        let t = Instant::now();
        let now_ms = self.now.timestamp_millis();
        let stage = intel::stage(
            &self.config.intel,
            &self.report,
            &self.runtime.escalation,
            now_ms,
        );
        let outcome = match within(self.budget.deadline, stage).await {
            Ok((o, fallback)) => {
                if let Some(why) = fallback {
                    self.report.fallback(Stage::Intel, why);
                }
                o
            }
            Err(cut) => Outcome::Skipped(cut.to_string()),
        };
        self.report.push(Stage::Intel, outcome, elapsed_ms(t));
    }

    /// Stage 9: saves the state (nothing in a dry run) and logs the
    /// summary; the stats are saved last ([`Cycle::save_stats`]), with the
    /// ping's result.
    fn finish(&mut self) -> Result<()> {
        crate::logging::report_repeats();
        self.report.duration_ms = elapsed_ms(self.started);
        // Optional dependencies handled by their fallback: one warning for
        // the cycle (they do not make it degraded, so nothing pages).
        if !self.report.fallbacks.is_empty() {
            let what: Vec<String> = self
                .report
                .fallbacks
                .iter()
                .map(|f| format!("{}: {}", f.stage, f.why))
                .collect();
            tracing::warn!(
                "Optional dependency down, its fallback stood in (shown, not paged): {}",
                what.join("; ")
            );
        }
        if self.opts.dry_run {
            self.report.push(
                Stage::Save,
                Outcome::Skipped("dry run: nothing saved".into()),
                0,
            );
            tracing::info!("{}", self.report.summary_line());
            return Ok(());
        }
        self.report.push(Stage::Save, Outcome::Ok(String::new()), 0);
        // Up to the final save, which adds four (state and stats, each the
        // file and its directory).
        self.report
            .counts
            .insert("fsyncs".into(), crate::files::fsyncs());
        let mm_requests = self.report.counts.get("mm_requests").copied();
        self.stats.bump("mm_requests", mm_requests.unwrap_or(0));
        self.stats.record_cycle(&self.report, self.now);
        self.runtime.last_cycle = Some(self.report.clone());
        if let Err(e) = self.save() {
            let last = self.report.stages.len() - 1;
            self.report.stages[last].outcome = Outcome::Failed(format!("{e:#}"));
            tracing::error!("{}", self.report.summary_line());
            return Err(e);
        }
        tracing::info!("{}", self.report.summary_line());
        Ok(())
    }

    /// Stage 10: the metrics textfile, written atomically from the stats
    /// and the state just saved (not in a dry run, nor when the save
    /// failed). A failure is a warning, never the cycle's.
    fn write_metrics(&self, saved: &Result<()>) {
        let m = &self.config.metrics;
        let Some(path) = m.path().filter(|_| saved.is_ok() && !self.opts.dry_run) else {
            return;
        };
        let text = metrics::render(&self.stats.metrics(&self.runtime));
        if let Err(e) = metrics::write_textfile(&path, &text, m.mode_bits()) {
            tracing::warn!("Metrics not written: {e:#}");
        }
    }

    /// Stage 11: the heartbeat ping (not in a dry run): success, or
    /// `/fail` for a failed cycle (the state not saved included) or one
    /// degraded too often in a row. It ends by the deadline, never fails
    /// the cycle, and its result goes into the stats.
    async fn ping_heartbeat(&mut self) {
        let h = &self.config.heartbeat;
        if !h.enabled() || self.opts.dry_run {
            return;
        }
        let before = self.stats.heartbeat.as_ref().map_or(0, |r| r.not_ok_streak);
        let (kind, streak) = heartbeat::decide(self.report.overall(), before, h.degraded_tolerance);
        let summary = self.report.summary_line();
        let now_ms = Utc::now().timestamp_millis();
        let rec = heartbeat::ping(h, kind, &summary, self.budget.deadline, now_ms, streak).await;
        if rec.ok {
            tracing::debug!("Heartbeat: {}", rec.line());
        } else {
            tracing::warn!("Heartbeat: {}", rec.line());
        }
        self.stats.heartbeat = Some(rec);
    }

    /// Saves the stats (with the ping's result) after a saved state; hands
    /// back the report, or the error that kept the state from being saved.
    fn save_stats(self, saved: Result<()>) -> Result<CycleReport> {
        saved?;
        if !self.opts.dry_run {
            if let Err(e) = store::save(&self.config.paths.stats, &self.stats) {
                tracing::warn!(error = %format!("{e:#}"), "Stats not saved; counters of this cycle are lost.");
            }
        }
        Ok(self.report)
    }
}
