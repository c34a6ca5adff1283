//! Labelled examples: one JSON object per line with at least `text` and
//! `label` (other keys are ignored), the one format shared by the training
//! sets the model learns from, the files `ops-agent eval` reads and the
//! corrections file, so a correction can be fed to any of them as it is.

use serde::{Deserialize, Serialize};

use super::Label;

/// A post and the label a person gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The post's text.
    pub text: String,
    /// The right label.
    pub label: Label,
}

/// A line that is not an example, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// 1-based line number.
    pub(crate) line: usize,
    /// Why it was refused.
    pub(crate) reason: String,
}

/// Parses one line; `Ok(None)` for a blank one.
fn parse_line(line: &str) -> Result<Option<Example>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str::<Example>(line)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Parses JSON lines: the examples, and the lines that were not examples.
pub fn parse_lines(text: &str) -> (Vec<Example>, Vec<BadLine>) {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(e)) => rows.push(e),
            Ok(None) => {}
            Err(reason) => bad.push(BadLine {
                line: i + 1,
                reason,
            }),
        }
    }
    (rows, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_bad_ones_are_named() {
        let text = "{\"text\":\"planka is down\",\"label\":\"INCIDENT\",\"by\":\"ana\"}\n\n\
                    {\"text\":\"x\",\"label\":\"URGENT\"}\nnot json\n{\"text\":\"thanks\",\"label\":\"ROUTINE\"}\n";
        let (rows, bad) = parse_lines(text);
        assert_eq!(
            rows,
            vec![
                Example {
                    text: "planka is down".into(),
                    label: Label::Incident
                },
                Example {
                    text: "thanks".into(),
                    label: Label::Routine
                }
            ]
        );
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [3, 4]);
    }
}
