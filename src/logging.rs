//! Logging set-up: one line per event, to the activity log and to stderr.
//!
//! The activity log (`~/system/logs/ops-agent.log`) is what operators
//! `tail`; it gets every event at the chosen level. Every field is written
//! with its control characters escaped (a newline becomes `\n`), so text
//! from outside (a server's error body, a post) can never start a line of
//! its own and forge, say, a `cycle ok` summary. stderr gets the same on
//! a terminal, but only warnings and errors when it is not one (under
//! launchd it is a never-rotated file, and a copy of every quiet cycle there
//! would only bury the problems).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

/// The target of events that go to the activity log only: an error the
/// caller also prints to stderr itself (once, as `ops-agent: …`) would
/// otherwise be printed twice there.
pub(crate) const FILE_ONLY: &str = "ops_agent::file_only";

/// Whether to colour stderr: only on a terminal, and never when `NO_COLOR`
/// is set to anything non-empty (no-color.org). Pure.
fn use_color(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn stderr_color() -> bool {
    use_color(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// `2026-11-25T12:00:00.123456Z  INFO ops_agent::cycle: message key=value`.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The level from `-v`/`-q`: default info, `-v` debug, `-vv` trace, `-q` warn.
pub(crate) fn level(verbose: u8, quiet: bool) -> LevelFilter {
    match (quiet, verbose) {
        (true, _) => LevelFilter::WARN,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber. With `log_file`, events also go to that
/// file (appended, owner-only, parent dirs created, a symlink refused); if
/// it cannot be opened the error is returned and nothing is installed, so
/// the caller can report it and fall back to [`init_stderr_only`].
pub(crate) fn init(format: LogFormat, level: LevelFilter, log_file: Option<&Path>) -> Result<()> {
    let file = match log_file {
        Some(p) => Some(
            crate::files::open_append_private(p)
                .with_context(|| format!("opening the activity log {}", p.display()))?,
        ),
        None => None,
    };
    let stderr_level = if std::io::stderr().is_terminal() || level > LevelFilter::INFO {
        level
    } else {
        level.min(LevelFilter::WARN)
    };
    let stderr_layer = layer(format, std::io::stderr, stderr_color())
        .with_filter(stderr_level)
        .with_filter(not_file_only());
    let file_layer = file.map(|f| layer(format, Mutex::new(f), false).with_filter(level));
    tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .context("installing the log subscriber")
}

/// Installs a stderr-only subscriber (read-only subcommands, or when the
/// activity log cannot be opened).
pub(crate) fn init_stderr_only(format: LogFormat, level: LevelFilter) {
    let _ = tracing_subscriber::registry()
        .with(
            layer(format, std::io::stderr, stderr_color())
                .with_filter(level)
                .with_filter(not_file_only()),
        )
        .try_init();
}

fn not_file_only() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool>
{
    tracing_subscriber::filter::filter_fn(|m| m.target() != FILE_ONLY)
}

fn layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => fmt::layer()
            .fmt_fields(escaped_fields())
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    }
}

/// The text format's fields, `message` first and bare, the rest as
/// `name=value`, every control character escaped. (The JSON format needs
/// nothing: JSON strings escape them already.)
fn escaped_fields() -> impl for<'w> fmt::FormatFields<'w> + Send + Sync + 'static {
    fmt::format::debug_fn(|w, field, value| {
        let text = escape_controls(&format!("{value:?}"));
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// `\n`, `\r`, `\t` and `\u{..}` for every control character.
pub(crate) fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_hostile_field_cannot_forge_a_line() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber =
            tracing_subscriber::registry().with(layer(LogFormat::Text, move || out.clone(), false));
        let body = "oops\n2026-01-01T00:00:00Z  INFO ops_agent::cycle: cycle ok\r\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(error = %body, "Planka said: {body}");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("oops\\n2026") && text.contains("\\u{1b}[2J"),
            "{text}"
        );
        assert!(text.starts_with(|c: char| c.is_ascii_digit()), "{text}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_color(true, None));
        assert!(!use_color(false, None));
        assert!(!use_color(true, Some(OsStr::new("1"))));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(use_color(true, Some(OsStr::new(""))));
    }

    #[test]
    fn escaping_table() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(escape_controls("a\nb\tc\u{7}"), "a\\nb\\tc\\u{7}");
    }
}
