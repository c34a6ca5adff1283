//! `ops-agent eval [FILE.jsonl] [--no-llm] [--json] [--halves N]`: how the
//! classifier does on labelled posts (`{"text", "label"}` per line, with an
//! optional `lang` for figures per language and `team` for the team's
//! worked examples), so an operator can choose a model, check a prompt,
//! and see the fallback's quality on their own traffic. Without a file,
//! the recorded corrections are the posts: each is classified as if it had
//! not been corrected (the other corrections still teach), which measures
//! whether what the team taught carries over to the next post like it.
//! `--halves N` measures whether corrections help at all: the halving
//! protocol of [`eval::halvings`] over N seeds.
//!
//! The fallback's model is trained on sets compiled into the binary: rows
//! of those sets score far better than new chat would, so the command
//! counts the scored rows that are in them and says so, and a figure with
//! any is not a hold-out.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::classify::corrections::{self, Correction};
use crate::classify::data;
use crate::classify::eval::{self, Halvings, Outcome, Report};
use crate::classify::model::is_trained_on;
use crate::classify::{Fallback, Label, Post, Triage};
use crate::config::Config;
use crate::ollama;

/// An evaluation file larger than this is refused: it is a list of posts,
/// not a log.
const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Corrections evaluated at most (the newest).
const MAX_CORRECTIONS: usize = 10_000;

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct EvalOutput {
    /// The file, or `corrections` (with its path).
    source: String,
    /// The classification model asked, or `null` with `--no-llm`.
    model: Option<String>,
    /// Lines of the file that were not examples (line numbers).
    skipped_lines: Vec<usize>,
    /// Scored posts whose text is in the embedded training data (0: the
    /// figures are a hold-out for the fallback's model).
    rows_in_training_data: usize,
    /// The figures.
    #[serde(flatten)]
    report: Report,
}

/// One labelled post of an evaluation file: `text` and `label`, and
/// optionally its language (`lang`, for figures per language) and its
/// team (`team`, whose corrections are the LLM's worked examples).
#[derive(Debug, Clone, Deserialize)]
struct Row {
    text: String,
    label: Label,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    team: String,
}

/// Runs the evaluation and prints it.
pub(crate) fn run(
    config: &Config,
    file: Option<&Path>,
    no_llm: bool,
    json: bool,
    halves: Option<u32>,
) -> Result<ExitCode> {
    let (source, rows, skipped) = match file {
        Some(f) => {
            let (rows, bad) = read_rows(f)?;
            for b in &bad {
                eprintln!("{}: line {} skipped: {}", f.display(), b.line, b.reason);
            }
            (
                f.display().to_string(),
                Source::File(rows),
                bad.iter().map(|b| b.line).collect(),
            )
        }
        None => {
            let path = &config.paths.corrections;
            let (list, unreadable) = corrections::load_recent(path, MAX_CORRECTIONS)?;
            if unreadable > 0 {
                eprintln!(
                    "{}: {unreadable} unreadable line(s) skipped",
                    path.display()
                );
            }
            (
                format!("corrections ({})", path.display()),
                Source::Corrections(list),
                Vec::new(),
            )
        }
    };
    if rows.is_empty() {
        bail!("{source}: no labelled posts to evaluate");
    }
    if let (Some(seeds), Source::File(rows)) = (halves, &rows) {
        return run_halves(config, &source, rows, seeds, no_llm, json);
    }
    let client = if no_llm {
        None
    } else {
        Some(ollama::Client::from_config(&config.ollama)?)
    };
    let model = client.as_ref().map(|c| c.config().classify_model.clone());
    let outcomes = super::runtime()?.block_on(classify_all(config, client.as_ref(), &rows));
    let seen = outcomes.iter().filter(|o| is_trained_on(&o.text)).count();
    if seen > 0 {
        eprintln!(
            "{source}: {seen} of {} rows are in the embedded training data: this score is not a hold-out",
            outcomes.len()
        );
    }
    let output = EvalOutput {
        source,
        model,
        skipped_lines: skipped,
        rows_in_training_data: seen,
        report: eval::evaluate(&outcomes),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output).context("rendering JSON")?
        );
    } else {
        let how = output
            .model
            .as_deref()
            .map_or("fallback only (--no-llm)".to_string(), |m| {
                format!("llm {m}")
            });
        println!("{}: {}\n", output.source, how);
        print!("{}", output.report.render_text());
    }
    Ok(ExitCode::SUCCESS)
}

/// What `--halves --json` prints.
#[derive(Debug, Serialize)]
struct HalvesOutput<'a> {
    /// The file.
    source: &'a str,
    /// The figures per split and their summary.
    #[serde(flatten)]
    halvings: &'a Halvings,
}

/// `--halves N`: whether the team's corrections help the fallback on the
/// posts they were not made on (see [`eval::halvings`]). The fallback is
/// built from the shipped model each time, without the corrections file:
/// the only corrections are the protocol's. Exits 1 when they hurt.
fn run_halves(
    config: &Config,
    source: &str,
    rows: &[Row],
    seeds: u32,
    no_llm: bool,
    json: bool,
) -> Result<ExitCode> {
    if !no_llm {
        eprintln!("--halves measures the fallback only: the LLM is not asked");
    }
    let plain = Fallback::new(&config.classify, &[]);
    let expected: Vec<Label> = rows.iter().map(|r| r.label).collect();
    let labels: Vec<Label> = rows.iter().map(|r| plain.classify(&r.text).label).collect();
    let at = chrono::DateTime::from_timestamp(0, 0).unwrap_or_default();
    let halvings = eval::halvings(&expected, &labels, seeds.into(), |wrong, half_b| {
        let taught: Vec<Correction> = wrong
            .iter()
            .map(|&i| Correction {
                text: rows[i].text.clone(),
                label: rows[i].label,
                was: labels[i],
                post_id: format!("row-{}", i + 1),
                team: rows[i].team.clone(),
                by: "eval".into(),
                at,
            })
            .collect();
        let fallback = Fallback::new(&config.classify, &taught);
        half_b
            .iter()
            .map(|&i| fallback.classify(&rows[i].text).label)
            .collect()
    });
    if json {
        let out = HalvesOutput {
            source,
            halvings: &halvings,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("rendering JSON")?
        );
    } else {
        println!(
            "{source}: fallback only, the wrong answers on half A recorded as corrections, half B scored\n"
        );
        print!("{}", halvings.render_text());
    }
    Ok(if halvings.passes {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The posts to evaluate.
enum Source {
    /// From a file; classified as the cycle would (with the corrections).
    File(Vec<Row>),
    /// The corrections themselves; each without itself.
    Corrections(Vec<Correction>),
}

impl Source {
    fn is_empty(&self) -> bool {
        match self {
            Source::File(r) => r.is_empty(),
            Source::Corrections(c) => c.is_empty(),
        }
    }
}

async fn classify_all(
    config: &Config,
    llm: Option<&ollama::Client>,
    rows: &Source,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    match rows {
        Source::File(rows) => {
            let taught =
                match corrections::load_recent(&config.paths.corrections, corrections::LOAD_MAX) {
                    Ok((list, _)) => list,
                    Err(e) => {
                        eprintln!("corrections not read, evaluating without them: {e:#}");
                        Vec::new()
                    }
                };
            let triage = Triage::new(llm, &config.classify, taught);
            let far = tokio::time::Instant::now() + std::time::Duration::from_secs(365 * 86_400);
            let posts: Vec<(usize, Post)> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let post = Post {
                        text: &r.text,
                        team: &r.team,
                    };
                    (i, post)
                })
                .collect();
            let mut done = triage.classify_many(posts, far).await.done;
            done.sort_by_key(|(i, _)| *i);
            for (i, decision) in done {
                out.push(Outcome {
                    text: rows[i].text.clone(),
                    expected: rows[i].label,
                    lang: rows[i].lang.clone(),
                    decision,
                });
            }
        }
        // One triage for all: each correction is classified without its
        // own memory, counts and lean (`Triage::classify_except`), so the
        // cost grows with the corrections, not with their square.
        Source::Corrections(list) => {
            let triage = Triage::new(llm, &config.classify, list.clone());
            for (i, c) in list.iter().enumerate() {
                let post = Post {
                    text: &c.text,
                    team: &c.team,
                };
                out.push(Outcome {
                    text: c.text.clone(),
                    expected: c.label,
                    lang: None,
                    decision: triage.classify_except(post, Some(i)).await,
                });
            }
        }
    }
    out
}

/// Reads an evaluation file, refusing one too large to be a list of posts.
fn read_rows(path: &Path) -> Result<(Vec<Row>, Vec<data::BadLine>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (is it UTF-8 JSON lines?)", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        bail!(
            "{} is larger than {} MiB: not a list of labelled posts",
            path.display(),
            MAX_FILE_BYTES / (1024 * 1024)
        );
    }
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Row>(line) {
            Ok(r) => rows.push(r),
            Err(e) => bad.push(data::BadLine {
                line: i + 1,
                reason: e.to_string(),
            }),
        }
    }
    Ok((rows, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_bounded_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("set.jsonl");
        std::fs::write(
            &p,
            "{\"text\":\"planka is down\",\"label\":\"INCIDENT\"}\nnope\n",
        )
        .unwrap();
        let (rows, bad) = read_rows(&p).unwrap();
        assert_eq!((rows.len(), bad.len(), bad[0].line), (1, 1, 2));
        let e = read_rows(&dir.path().join("missing.jsonl")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.jsonl"));
    }

    #[test]
    fn without_llm_the_fallback_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.paths.corrections = dir.path().join("none.jsonl");
        let row = |text: &str, label, lang: &str| Row {
            text: text.into(),
            label,
            lang: Some(lang.into()),
            team: String::new(),
        };
        let rows = Source::File(vec![
            row("planka is down for everyone", Label::Incident, "en"),
            row("Хвала!", Label::Routine, "sr-cyrl"),
        ]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(classify_all(&config, None, &rows));
        let r = eval::evaluate(&out);
        assert_eq!((r.rows, r.correct), (2, 2));
        assert_eq!(r.paths["fallback/no_llm"], 2);
    }
}
