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
//!
//! A condition that repeats says so once: a warning whose every field is
//! the same as one already written by this process (the model unreachable
//! for each of 10,000 posts) is counted, not written, and
//! [`report_repeats`] says how often it came. And a cycle that writes more
//! than `[log] max_bytes` rotates the activity log as it goes
//! ([`rotate_within`]), so the disk holds `keep + 1` files of about
//! `max_bytes`, however busy a cycle is.

use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::layer::{Context as LayerCx, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

/// The target of events that go to the activity log only: an error the
/// caller also prints to stderr itself (once, as `ops-agent: …`) would
/// otherwise be printed twice there.
pub(crate) const FILE_ONLY: &str = "ops_agent::file_only";

/// The target of informational events that say a condition of the cycle
/// rather than a step of one post (the model unreachable, again, for the
/// next post): like warnings, they are written once and counted after.
pub(crate) const CONDITION: &str = "ops_agent::condition";

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
        Some(p) => Some(LogFile::open(p)?),
        None => None,
    };
    let stderr_level = if std::io::stderr().is_terminal() || level > LevelFilter::INFO {
        level
    } else {
        level.min(LevelFilter::WARN)
    };
    let stderr_layer = layer(format, std::io::stderr, stderr_color())
        .with_filter(stderr_level)
        .with_filter(not_file_only())
        .with_filter(Repeats::new(file.is_none()));
    let file_layer = file.map(|f| {
        let _ = LOG_FILE.set(Arc::clone(&f));
        layer(format, move || LogHandle(Arc::clone(&f)), false)
            .with_filter(level)
            .with_filter(Repeats::new(true))
    });
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
                .with_filter(not_file_only())
                .with_filter(Repeats::new(true)),
        )
        .try_init();
}

/// The activity log, once [`init`] opened it.
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// Renames a log out of the way, keeping so many old copies: `<file>` to
/// `<file>.1` and so on.
pub(crate) type Rotate = fn(&Path, u32) -> Result<()>;

/// The activity log's file: appended by every event, and rotated by the
/// cycle that holds the lock when it grows past the cap.
struct LogFile {
    inner: Mutex<Opened>,
}

struct Opened {
    file: File,
    path: PathBuf,
    /// Its size as far as this process knows.
    len: u64,
    /// `max_bytes`, `keep` and how to rotate, once the cycle holds the lock.
    cap: Option<(u64, u32, Rotate)>,
}

impl LogFile {
    fn open(path: &Path) -> Result<Arc<LogFile>> {
        let file = crate::files::open_append_private(path)
            .with_context(|| format!("opening the activity log {}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Arc::new(LogFile {
            inner: Mutex::new(Opened {
                file,
                path: path.to_path_buf(),
                len,
                cap: None,
            }),
        }))
    }
}

impl Opened {
    /// Rotates and opens a fresh file when `more` bytes would take the log
    /// past its cap (never for the first line of a file, so a line longer
    /// than the cap is still written, once).
    fn make_room(&mut self, more: u64) -> Option<u64> {
        let (max, keep, rotate) = self.cap?;
        if self.len == 0 || self.len + more <= max {
            return None;
        }
        let rotated = self.len;
        let renamed = rotate(&self.path, keep);
        match renamed.and_then(|()| crate::files::open_append_private(&self.path)) {
            Ok(f) => {
                self.file = f;
                self.len = 0;
                Some(rotated)
            }
            // Go on writing where it was; the next cycle rotates it.
            Err(_) => {
                self.cap = None;
                None
            }
        }
    }
}

/// One event's writer into the [`LogFile`].
struct LogHandle(Arc<LogFile>);

impl Write for LogHandle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut o = self.0.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = o.make_room(buf.len() as u64);
        let n = o.file.write(buf)?;
        o.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The cycle holds the lock: the activity log is rotated by `rotate` now
/// when it is at least `max_bytes` long (it may have been renamed since it
/// was opened, too: it is opened again by its path), and whenever it
/// outgrows `max_bytes` from here on. `None` when no activity log is open;
/// else the size rotated now, if it was.
pub(crate) fn rotate_within(max_bytes: u64, keep: u32, rotate: Rotate) -> Option<Option<u64>> {
    let f = LOG_FILE.get()?;
    let mut o = f.inner.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(file) = crate::files::open_append_private(&o.path) {
        o.len = file.metadata().map(|m| m.len()).unwrap_or(0);
        o.file = file;
    }
    if max_bytes == 0 {
        return Some(None);
    }
    o.cap = Some((max_bytes, keep, rotate));
    Some(if o.len >= max_bytes {
        o.make_room(u64::MAX / 2)
    } else {
        None
    })
}

/// Warnings, errors and conditions written once, counted after: key →
/// (message, whether it was a warning or worse, times seen).
type Seen = Arc<Mutex<HashMap<String, (String, bool, u64)>>>;

/// The repeats of the layer that reports them.
static REPEATS: OnceLock<Seen> = OnceLock::new();

/// A per-layer filter that lets a warning, an error or a [`CONDITION`]
/// through the first time its callsite and fields come, and counts it
/// after.
struct Repeats {
    seen: Seen,
}

impl Repeats {
    /// `report`: this layer's counts are the ones [`report_repeats`] says.
    fn new(report: bool) -> Repeats {
        let seen = Seen::default();
        if report {
            let _ = REPEATS.set(Arc::clone(&seen));
        }
        Repeats { seen }
    }
}

impl<S> Filter<S> for Repeats {
    fn enabled(&self, _meta: &tracing::Metadata<'_>, _cx: &LayerCx<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &LayerCx<'_, S>) -> bool {
        let meta = event.metadata();
        let warning = *meta.level() <= tracing::Level::WARN;
        if !warning && meta.target() != CONDITION {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let key = format!("{:?}{}", meta.callsite(), fields.all);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let entry = seen
            .entry(key)
            .or_insert_with(|| (fields.message, warning, 0));
        entry.2 += 1;
        entry.2 == 1
    }
}

/// An event's fields as text, and its message.
#[derive(Default)]
struct Fields {
    all: String,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.all.push_str(&format!(" {}={text}", field.name()));
        if field.name() == "message" {
            self.message = text;
        }
    }
}

/// Says once, for each warning or condition that came again after it was
/// written, how many more times it came (at its own level); then counts
/// afresh. The cycle calls it at its end.
pub(crate) fn report_repeats() {
    let Some(seen) = REPEATS.get() else {
        return;
    };
    let repeated: Vec<(String, bool, u64)> = {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let out = seen
            .values()
            .filter(|(_, _, n)| *n > 1)
            .map(|(m, w, n)| (m.clone(), *w, n - 1))
            .collect();
        seen.clear();
        out
    };
    for (message, warning, more) in repeated {
        if warning {
            tracing::warn!(times = more, "Repeated {more} more times: {message}");
        } else {
            tracing::info!(times = more, "Repeated {more} more times: {message}");
        }
    }
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
