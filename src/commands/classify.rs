//! `ops-agent classify TEXT`: the label a post would get, by which path,
//! and how long it took.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::config::Config;

/// Classifies `text` (`-`: stdin) as the cycle would.
pub(crate) fn run(
    config: &Config,
    text: &str,
    team: Option<&str>,
    no_llm: bool,
    json: bool,
) -> Result<ExitCode> {
    let text = if text == "-" {
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
            .context("reading the message from stdin")?;
        buf
    } else {
        text.to_string()
    };
    let report = super::runtime()?.block_on(crate::classify::command::run(
        &config.ollama,
        &config.classify,
        &config.paths.corrections,
        crate::classify::Post {
            text: &text,
            team: team.unwrap_or(""),
        },
        no_llm,
    ))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("rendering JSON")?
        );
    } else {
        print!("{}", report.render_text());
    }
    Ok(ExitCode::SUCCESS)
}
