//! One cycle, top to bottom: the only place that knows the order of stages.
//!
//! ```text
//! lock -> load state -> poll Mattermost -> classify -> create tasks -> reply
//!      -> health checks -> auto-fix (rate limited) -> save state -> unlock
//! ```
//!
//! Each stage yields an [`Outcome`] into the [`CycleReport`]; one stage's
//! failure never stops the later ones. The cycle honours a deadline: the
//! chat stages must end early enough to leave the health stage its time,
//! work cut short is recorded and carried over, and state is still saved.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;

use crate::chat::{self, Act, Tally};
use crate::config::Config;
use crate::mattermost::{self, NewPost};
use crate::report::{count_checks, CycleReport, Outcome};
use crate::state::{self, RuntimeState, Stats};
use crate::tasks::mc::McBackend;
use crate::tasks::outbox::{self, Targets};
use crate::tasks::planka::PlankaClient;
use crate::{fix, health, lock, ollama};

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
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + config.agent.deadline());
    let chat_deadline = deadline - health_reserve(config);
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let _lock = lock::acquire(&config.paths.lock)?;

    let loaded = state::load::<RuntimeState>(&config.paths.state, now)?;
    let stats_loaded = state::load::<Stats>(&config.paths.stats, now)?;
    let mut runtime = loaded.value;
    let mut stats = stats_loaded.value;
    runtime.record_set_aside(loaded.set_aside.into_iter().chain(stats_loaded.set_aside));
    tracing::info!(
        deadline_secs = config.agent.deadline_secs,
        dry_run = opts.dry_run,
        first_run = !loaded.existed,
        "Cycle started."
    );
    let mut report = CycleReport {
        started_ms: now_ms,
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let save = |runtime: &RuntimeState| -> Result<()> {
        if opts.dry_run {
            Ok(())
        } else {
            state::save(&config.paths.state, runtime)
        }
    };

    // 1. Mattermost: every new post of the configured teams.
    let t = Instant::now();
    let since_ms = match runtime.last_check_ms {
        Some(c) => c - config.mattermost.overlap_secs as i64 * 1000,
        None => now_ms - config.agent.first_run_lookback_mins as i64 * 60_000,
    };
    let mut chat_configured = true;
    let mut polled = None;
    match mattermost::Client::from_config(&config.mattermost, &config.paths.token_cache) {
        Err(e) => {
            chat_configured = false;
            report.push(
                "mattermost",
                Outcome::Skipped(format!("not configured: {e:#}")),
                ms(t),
            );
        }
        Ok(client) => {
            let poll = mattermost::poll(
                &client,
                &config.mattermost,
                &mut runtime.mattermost,
                since_ms,
                now_ms,
                chat_deadline,
            );
            match within(chat_deadline, poll).await {
                Ok(Ok(outcome)) => {
                    report
                        .counts
                        .insert("mm_requests".into(), outcome.requests.into());
                    report
                        .counts
                        .insert("posts_new".into(), outcome.posts.len() as u64);
                    let detail = format!(
                        "{} new, {} skipped, {} requests",
                        outcome.posts.len(),
                        outcome.skipped.total(),
                        outcome.requests
                    );
                    let outcome_word = if outcome.teams_failed.is_empty() {
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
                    report.push("mattermost", outcome_word, ms(t));
                    polled = Some((client, outcome));
                }
                Ok(Err(e)) => {
                    tracing::warn!("Mattermost unusable, chat skipped this cycle: {e}");
                    report
                        .counts
                        .insert("mm_requests".into(), client.requests().into());
                    report.push("mattermost", Outcome::Degraded(e.to_string()), ms(t));
                }
                Err(cut) => {
                    report.deadline_hit = true;
                    report.push("mattermost", Outcome::Skipped(cut.to_string()), ms(t));
                }
            }
        }
    }
    let posts: &[NewPost] = polled.as_ref().map_or(&[], |(_, o)| o.posts.as_slice());
    let llm = if posts.is_empty() {
        None
    } else {
        match ollama::Client::from_config(&config.ollama) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("LLM not usable, keyword rules and templates only: {e:#}");
                None
            }
        }
    };
    let mut tally = Tally::default();

    // 2. Classify: ROUTINE, TASK or INCIDENT for each post without a label.
    let t = Instant::now();
    if posts.is_empty() {
        report.push("classify", Outcome::Skipped("no new posts".into()), 0);
    } else {
        let stop_starting = chat_deadline
            .checked_sub(Duration::from_secs(config.ollama.classify_timeout_secs))
            .unwrap_or(chat_deadline);
        let work = chat::classify_posts(
            llm.as_ref(),
            &config.classify,
            posts,
            &mut runtime.chat,
            &mut stats,
            stop_starting,
            &mut tally,
        );
        let cut = within(chat_deadline, work).await.err();
        let detail = format!("{} by llm, {} by keywords", tally.by_llm, tally.by_keywords);
        let outcome = match cut {
            Some(cut) => {
                report.deadline_hit = true;
                Outcome::Degraded(format!("{detail}; {cut}, the rest next cycle"))
            }
            None if tally.unclassified > 0 => {
                report.deadline_hit = true;
                Outcome::Degraded(format!(
                    "{detail}; {} left for next cycle (deadline)",
                    tally.unclassified
                ))
            }
            None => Outcome::Ok(detail),
        };
        report.push("classify", outcome, ms(t));
    }

    // 3–4. Tasks, then the reply naming the task, post by post in create_at
    // order, saving state after each, so a crash in between repeats nothing.
    let t = Instant::now();
    let mut posts_done = 0u32;
    let mc = McBackend::from_config(&config.mc, config.paths.ledger.clone());
    let planka = if config.planka.enabled() {
        match PlankaClient::new(
            &config.planka,
            Some(config.paths.planka_token_cache.clone()),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("Planka not usable, cards wait in the outbox: {e:#}");
                None
            }
        }
    } else {
        None
    };
    match (&mc, &polled) {
        (Err(e), _) => {
            report.push(
                "tasks",
                Outcome::Failed(format!("MC not usable: {e:#}")),
                ms(t),
            );
            report.push("reply", Outcome::Skipped("no tasks".into()), 0);
        }
        (Ok(mc), polled) => {
            let targets = Targets {
                mc,
                planka: planka.as_ref(),
                dry_run: opts.dry_run,
            };
            let retried = within(
                chat_deadline,
                outbox::retry_outbox(targets, &mut runtime.tasks, now),
            )
            .await
            .unwrap_or_default();
            let outbox_left = runtime.tasks.outbox.len();
            if let Some((client, _)) = polled {
                let act = Act {
                    config,
                    mm: client,
                    llm: llm.as_ref(),
                    targets,
                };
                for post in posts {
                    let Some(mut progress) = runtime.chat.progress.get(&post.id).cloned() else {
                        continue; // not classified yet
                    };
                    let step = chat::act_on_post(
                        &act,
                        post,
                        &mut progress,
                        &mut runtime.tasks,
                        now,
                        &mut tally,
                    );
                    match within(chat_deadline, step).await {
                        Ok(Ok(true)) if !opts.dry_run => {
                            runtime.chat.progress.remove(&post.id);
                            mattermost::mark_handled(
                                &mut runtime.mattermost,
                                &post.id,
                                post.create_at,
                            );
                            posts_done += 1;
                        }
                        Ok(Ok(_)) => {
                            runtime.chat.progress.insert(post.id.clone(), progress);
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(post = %post.id, "Post not handled, retried next cycle: {e:#}");
                            runtime.chat.progress.insert(post.id.clone(), progress);
                        }
                        Err(cut) => {
                            report.deadline_hit = true;
                            tracing::warn!(post = %post.id, "Post left for next cycle: {cut}");
                            runtime.chat.progress.insert(post.id.clone(), progress);
                            break;
                        }
                    }
                    save(&runtime)?;
                }
            }
            for line in &tally.would {
                tracing::info!("[dry-run] would {line}");
            }
            let idle = posts.is_empty() && retried.is_empty() && outbox_left == 0;
            let detail = format!(
                "{} created, {} existing, {} outbox retried, {} queued",
                tally.tasks_created,
                tally.tasks_existing,
                retried.len(),
                outbox_left
            );
            report.push(
                "tasks",
                if idle {
                    Outcome::Skipped("nothing to file".into())
                } else if tally.task_errors.is_empty() {
                    Outcome::Ok(detail)
                } else {
                    Outcome::Degraded(format!("{detail}; {}", tally.task_errors.join("; ")))
                },
                ms(t),
            );
            let detail = format!("{} posted", tally.replies);
            report.push(
                "reply",
                if posts.is_empty() {
                    Outcome::Skipped("no new posts".into())
                } else if tally.reply_errors.is_empty() {
                    Outcome::Ok(detail)
                } else {
                    Outcome::Degraded(format!("{detail}; {}", tally.reply_errors.join("; ")))
                },
                0,
            );
        }
    }
    report
        .counts
        .insert("posts_handled".into(), posts_done.into());
    stats.bump("posts_handled", posts_done.into());
    stats.bump("tasks_created", tally.tasks_created.into());
    stats.bump("replies_posted", tally.replies.into());

    // The cursor moves only over posts that were fully handled.
    match &polled {
        Some((_, outcome)) => {
            let next = mattermost::next_cursor(
                runtime.last_check_ms,
                since_ms,
                outcome,
                &runtime.mattermost,
            );
            let overlap_ms = config.mattermost.overlap_secs as i64 * 1000;
            mattermost::prune_handled(&mut runtime.mattermost, next, overlap_ms, now_ms);
            // Progress of posts not seen for a week (their team keeps failing)
            // is dropped; a later retry still finds the task and the reply.
            let week_ago = now_ms - 7 * 24 * 3600 * 1000;
            runtime.chat.progress.retain(|_, p| p.create_at > week_ago);
            runtime.last_check_ms = Some(next);
        }
        // Nothing to read, so nothing before now is unhandled.
        None if !chat_configured => runtime.last_check_ms = Some(now_ms),
        // Mattermost down or cut: the cursor stays where it was.
        None => {}
    }

    // 5. Health checks: every check concurrently, each under its own
    // timeout, failures re-probed once, then the flap guard.
    let t = Instant::now();
    let ctx = health::HealthContext::new(&config.health);
    let history = match fix::FixHistory::load(&config.paths.fix_history, now) {
        Ok((history, aside)) => {
            runtime.record_set_aside(aside);
            Ok(history)
        }
        Err(e) => Err(format!("{e:#}")),
    };
    let verdicts = match within(deadline, health::run_all(&ctx, &config.checks)).await {
        Ok(results) => {
            let empty = fix::FixHistory::default();
            let verdicts = runtime.health.record(
                &config.checks,
                &results,
                history.as_ref().unwrap_or(&empty),
                now,
            );
            for v in verdicts
                .iter()
                .filter(|v| v.result.status != health::Status::Ok)
            {
                let r = &v.result;
                tracing::warn!(check = %r.name, status = r.status.as_str(), failing = v.failing, "{}", r.reason);
            }
            report.checks = verdicts.iter().map(|v| v.result.clone()).collect();
            report.push("health", Outcome::Ok(count_checks(&report.checks)), ms(t));
            verdicts
        }
        Err(cut) => {
            report.deadline_hit = true;
            report.push("health", Outcome::Skipped(cut.to_string()), ms(t));
            Vec::new()
        }
    };

    // 6. Auto-fix: configured actions only, at most N attempts per service
    // per rolling hour, each verified by re-checking.
    let t = Instant::now();
    let failing = verdicts.iter().filter(|v| v.failing).count();
    match history {
        _ if failing == 0 => report.push("fix", Outcome::Skipped("nothing failing".into()), 0),
        Err(e) => report.push(
            "fix",
            Outcome::Failed(format!("fix history unusable, no fix attempted: {e}")),
            0,
        ),
        Ok(mut history) => {
            let run = fix::run_fixes(
                &ctx,
                &config.checks,
                &verdicts,
                &mut history,
                &config.paths.fix_history,
                &config.fix,
                opts.dry_run,
                now,
            );
            match within(deadline, run).await {
                Ok(fixes) => {
                    for f in &fixes {
                        tracing::warn!("Fix: {}", f.line());
                    }
                    let verified = fixes
                        .iter()
                        .filter(|f| f.outcome == Some(fix::Outcome::Verified))
                        .count();
                    let ran = fixes.iter().filter(|f| f.outcome.is_some()).count();
                    let detail = format!("{failing} failing, {ran} fixes run, {verified} verified");
                    report.push(
                        "fix",
                        if ran > verified {
                            Outcome::Degraded(detail)
                        } else {
                            Outcome::Ok(detail)
                        },
                        ms(t),
                    );
                    stats.bump("fixes_run", ran as u64);
                    stats.bump("fixes_verified", verified as u64);
                }
                Err(cut) => {
                    report.deadline_hit = true;
                    report.push("fix", Outcome::Skipped(cut.to_string()), ms(t));
                }
            }
        }
    }

    // 9. Save state and stats.
    report.duration_ms = ms(started);
    if opts.dry_run {
        report.push("save", Outcome::Skipped("dry run: nothing saved".into()), 0);
        tracing::info!("{}", report.summary_line());
        return Ok(report);
    }
    report.push("save", Outcome::Ok(String::new()), 0);
    stats.record_cycle(&report, now);
    runtime.last_cycle = Some(report.clone());
    if let Err(e) = save(&runtime) {
        let last = report.stages.len() - 1;
        report.stages[last].outcome = Outcome::Failed(format!("{e:#}"));
        tracing::error!("{}", report.summary_line());
        return Err(e);
    }
    if let Err(e) = state::save(&config.paths.stats, &stats) {
        tracing::warn!(error = %format!("{e:#}"), "Stats not saved; counters of this cycle are lost.");
    }
    tracing::info!("{}", report.summary_line());
    Ok(report)
}

/// Time kept free for the health stage at the end of the cycle: the
/// slowest check's timeout plus a margin, at most half the deadline.
fn health_reserve(config: &Config) -> Duration {
    let slowest = config
        .checks
        .iter()
        .map(|c| c.timeout_secs)
        .max()
        .unwrap_or(0);
    Duration::from_secs(slowest + 3).min(config.agent.deadline() / 2)
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
