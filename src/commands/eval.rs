//! `ops-agent eval [FILE.jsonl] [--no-llm] [--json]`: how the classifier
//! does on labelled posts (`{"text", "label"}` per line), so an operator can
//! choose a model, check a prompt, and see the fallback's quality on their
//! own traffic. Without a file, the recorded corrections are the posts:
//! each is classified as if it had not been corrected (the other
//! corrections still teach), which measures whether what the team taught
//! carries over to the next post like it.
//!
//! The fallback's model is trained on sets compiled into the binary: rows
//! of those sets score far better than new chat would, so the command
//! counts the scored rows that are in them and says so, and a figure with
//! any is not a hold-out.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::classify::corrections::{self, Correction};
use crate::classify::data::{self, Example};
use crate::classify::eval::{self, Outcome, Report};
use crate::classify::model::is_trained_on;
use crate::classify::Triage;
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

/// Runs the evaluation and prints it.
pub(crate) fn run(
    config: &Config,
    file: Option<&Path>,
    no_llm: bool,
    json: bool,
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

/// The posts to evaluate.
enum Source {
    /// From a file; classified as the cycle would (with the corrections).
    File(Vec<Example>),
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
                    Ok((list, _)) => corrections::examples(&list),
                    Err(e) => {
                        eprintln!("corrections not read, evaluating without them: {e:#}");
                        Vec::new()
                    }
                };
            let triage = Triage::new(llm, &config.classify, taught);
            let far = tokio::time::Instant::now() + std::time::Duration::from_secs(365 * 86_400);
            let posts: Vec<(usize, String)> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (i, r.text.clone()))
                .collect();
            let mut done = triage.classify_many(posts, far).await.done;
            done.sort_by_key(|(i, _)| *i);
            for (i, decision) in done {
                out.push(Outcome {
                    text: rows[i].text.clone(),
                    expected: rows[i].label,
                    decision,
                });
            }
        }
        Source::Corrections(list) => {
            for (i, c) in list.iter().enumerate() {
                let others: Vec<Example> = list
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, c)| c.example())
                    .collect();
                let triage = Triage::new(llm, &config.classify, others);
                out.push(Outcome {
                    text: c.text.clone(),
                    expected: c.label,
                    decision: triage.classify(&c.text).await,
                });
            }
        }
    }
    out
}

/// Reads an evaluation file, refusing one too large to be a list of posts.
fn read_rows(path: &Path) -> Result<(Vec<Example>, Vec<data::BadLine>)> {
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
    Ok(data::parse_lines(&text))
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
        let rows = Source::File(vec![
            Example {
                text: "planka is down for everyone".into(),
                label: crate::classify::Label::Incident,
            },
            Example {
                text: "thanks!".into(),
                label: crate::classify::Label::Routine,
            },
        ]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(classify_all(&config, None, &rows));
        let r = eval::evaluate(&out);
        assert_eq!((r.rows, r.correct), (2, 2));
        assert_eq!(r.paths["fallback/no_llm"], 2);
    }
}
