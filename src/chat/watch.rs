//! The corrections watch on disk. Every post of the corrections window is
//! watched (its label can be corrected for `window_hours`), and after a
//! busy day that is tens of thousands of posts: held in memory and carried
//! in the state file they cost a busy cycle some 300 bytes each, and every
//! idle cycle of the next two days a load and a save of all of them. So the
//! watch lives in its own file next to the state, `<state>.watch`, one
//! JSON line per post, appended as posts are handled and read as a stream
//! only when something asks for it (a watched post the poll brought back,
//! or the sweep). The state keeps only the entries the file cannot say
//! right: handled but not written there yet, a correction pending, or
//! corrected ([`Watched::in_file`]: that copy overrides the file's line).
//!
//! Nothing is lost in a crash: an entry is written here only after the
//! state's journal holds it (the post's checkpoint), and the file is synced
//! before the journal is removed (the cycle's save); a crash in between
//! writes the journal's copy again, an identical line, which readers take
//! as one. A line is never changed in place.
//!
//! The file is compacted (rewritten without the lines out of the window or
//! overridden by the state) once its oldest line is a quarter of a window
//! past the window: about every `window_hours / 4`, never every cycle.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::progress::{ChatState, Watched};
use crate::files;

/// Spilled entries are written in pieces of about this size.
const WRITE_PIECE: usize = 64 * 1024;

/// The watch file next to a state file: `<state>.watch`.
pub(crate) fn path_for(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".watch");
    PathBuf::from(name)
}

/// One line of the file, as written.
#[derive(Serialize)]
struct LineOut<'a> {
    post: &'a str,
    #[serde(flatten)]
    watched: &'a Watched,
}

/// One line of the file, as read.
#[derive(Deserialize)]
struct LineIn {
    post: String,
    #[serde(flatten)]
    watched: Watched,
}

/// An entry the file does not have yet, and that can go there as it is.
fn fresh(w: &Watched) -> bool {
    !w.in_file && w.pending.is_none()
}

/// Writes the state's fresh entries to the file (`only`: just those
/// posts') and drops them from the state. Unsynced: the journal holds them
/// until [`sync`] has run. Returns how many were written.
pub(crate) fn spill(chat: &mut ChatState, file: &Path, only: Option<&[&str]>) -> Result<usize> {
    let ids: Vec<String> = match only {
        Some(posts) => posts
            .iter()
            .filter(|id| chat.watch.get(**id).is_some_and(fresh))
            .map(|id| id.to_string())
            .collect(),
        None => chat
            .watch
            .iter()
            .filter(|(_, w)| fresh(w))
            .map(|(id, _)| id.clone())
            .collect(),
    };
    let mut buf = Vec::new();
    if !ids.is_empty() && !crate::jsonl::ends_clean(file)? {
        // A line a crash cut: the next one starts on its own line.
        buf.push(b'\n');
    }
    let mut written = 0;
    for (i, id) in ids.iter().enumerate() {
        let w = &chat.watch[id];
        serde_json::to_writer(
            &mut buf,
            &LineOut {
                post: id,
                watched: w,
            },
        )
        .with_context(|| format!("encoding a line of {}", file.display()))?;
        buf.push(b'\n');
        if buf.len() >= WRITE_PIECE || i + 1 == ids.len() {
            files::append_unsynced_private(file, &buf)?;
            chat.watch_unsynced = true;
            buf.clear();
            for done in &ids[written..=i] {
                if let Some(w) = chat.watch.remove(done) {
                    let oldest = chat.watch_file_oldest_ms.get_or_insert(w.create_at);
                    *oldest = (*oldest).min(w.create_at);
                }
            }
            written = i + 1;
        }
    }
    Ok(written)
}

/// Makes what [`spill`] wrote durable; after it the journal's copies are
/// not needed. Nothing to do (no open, no fsync) when this process wrote
/// nothing: an idle cycle never touches the file.
pub(crate) fn sync(chat: &mut ChatState, file: &Path) -> Result<()> {
    if chat.watch_unsynced {
        files::sync_if_present(file)?;
        chat.watch_unsynced = false;
    }
    Ok(())
}

/// True when the file holds no line (or there is no file).
pub(crate) fn is_empty(file: &Path) -> bool {
    std::fs::symlink_metadata(file).map_or(true, |m| m.len() == 0)
}

/// The lines of the file one pass chose, to be read back a few at a time:
/// a sweep over tens of thousands of posts holds their offsets, not them.
pub(crate) struct Scan {
    file: Option<File>,
    /// Offsets of the chosen lines, in file order.
    offsets: Vec<u64>,
    /// Lines that could not be read (a torn last line, garbage).
    pub(crate) unreadable: usize,
}

impl Scan {
    /// No line chosen.
    pub(crate) fn empty() -> Scan {
        Scan {
            file: None,
            offsets: Vec::new(),
            unreadable: 0,
        }
    }

    /// The lines of the file inside the window (`create_at > cutoff_ms`)
    /// that `choose` takes; a post the state holds is never taken (its
    /// copy there overrides the line).
    pub(crate) fn of(
        file: &Path,
        chat: &ChatState,
        cutoff_ms: i64,
        mut choose: impl FnMut(&str, &Watched) -> bool,
    ) -> Result<Scan> {
        let Some(f) = files::open_private_read(file)? else {
            return Ok(Scan::empty());
        };
        let reader = f
            .try_clone()
            .with_context(|| format!("opening {}", file.display()))?;
        let mut offsets = Vec::new();
        let mut unreadable = 0;
        crate::jsonl::for_each_forward_at(reader, |_, at, line| {
            match line.map(|l| serde_json::from_slice::<LineIn>(&l)) {
                Ok(Ok(l)) => {
                    let w = &l.watched;
                    if w.create_at > cutoff_ms
                        && !chat.watch.contains_key(&l.post)
                        && choose(&l.post, w)
                    {
                        offsets.push(at);
                    }
                }
                Ok(Err(_)) | Err(_) => unreadable += 1,
            }
            true
        })
        .with_context(|| format!("reading {}", file.display()))?;
        Ok(Scan {
            file: Some(f),
            offsets,
            unreadable,
        })
    }

    /// How many lines were chosen.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// The chosen entries, each read back as it is asked for and given as
    /// the state would hold it ([`Watched::in_file`]); a line that no
    /// longer reads is passed over.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Result<(String, Watched)>> + '_ {
        self.offsets.iter().filter_map(|&at| {
            let read = self
                .file
                .as_ref()
                .context("the watch file is gone")
                .and_then(|f| {
                    crate::jsonl::read_line_at(f, at).context("reading the watch file again")
                });
            match read {
                Ok(Ok(bytes)) => serde_json::from_slice::<LineIn>(&bytes).ok().map(|l| {
                    let mut w = l.watched;
                    w.in_file = true;
                    Ok((l.post, w))
                }),
                Ok(Err(_)) => None,
                Err(e) => Some(Err(e)),
            }
        })
    }
}

/// What a compaction did.
#[derive(Debug, PartialEq)]
pub(crate) struct Compacted {
    /// Lines kept.
    pub(crate) kept: usize,
    /// Lines dropped (out of the window, overridden, unreadable).
    pub(crate) dropped: usize,
}

/// Rewrites the file without its lines out of the window or overridden by
/// the state, once its oldest line is a quarter of a window past it.
/// `None` when it was not due.
pub(crate) fn compact_if_due(
    chat: &mut ChatState,
    file: &Path,
    window_ms: i64,
    now_ms: i64,
) -> Result<Option<Compacted>> {
    let cutoff = now_ms - window_ms;
    match chat.watch_file_oldest_ms {
        Some(oldest) if oldest <= cutoff - window_ms / 4 => {}
        _ => return Ok(None),
    }
    let Some(src) = files::open_private_read(file)? else {
        chat.watch_file_oldest_ms = None;
        return Ok(None);
    };
    let mut done = Compacted {
        kept: 0,
        dropped: 0,
    };
    let mut oldest: Option<i64> = None;
    let hot = &chat.watch;
    files::write_private_atomic_with(file, |out| {
        let mut failed = None;
        crate::jsonl::for_each_forward(src, |_, line| {
            let keep = match &line {
                Ok(bytes) => match serde_json::from_slice::<LineIn>(bytes) {
                    Ok(l) if l.watched.create_at > cutoff && !hot.contains_key(&l.post) => {
                        Some((bytes, l.watched.create_at))
                    }
                    _ => None,
                },
                Err(_) => None,
            };
            let Some((bytes, at)) = keep else {
                done.dropped += 1;
                return true;
            };
            if let Err(e) = out.write_all(bytes).and_then(|_| out.write_all(b"\n")) {
                failed = Some(e);
                return false;
            }
            done.kept += 1;
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
            true
        })?;
        failed.map_or(Ok(()), Err)
    })
    .with_context(|| format!("compacting {}", file.display()))?;
    chat.watch_file_oldest_ms = oldest;
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::progress::PendingCorrection;
    use crate::classify::Label;

    fn entry(at: i64) -> Watched {
        Watched {
            create_at: at,
            team: "acme".into(),
            channel_id: "ch".into(),
            channel_name: "town-square".into(),
            author: "ana".into(),
            label: Some(Label::Task),
            reply_id: Some(format!("r{at}")),
            task_id: Some(format!("T-{at}")),
            ..Default::default()
        }
    }

    fn read_all(file: &Path, chat: &ChatState, cutoff: i64) -> Vec<(String, Watched)> {
        let scan = Scan::of(file, chat, cutoff, |_, _| true).unwrap();
        scan.entries().map(Result::unwrap).collect()
    }

    #[test]
    fn spilled_entries_leave_the_state_and_read_back_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_for(&dir.path().join("s.json"));
        let mut chat = ChatState::default();
        for (id, at) in [("a", 10), ("b", 5), ("c", 20)] {
            chat.watch.insert(id.into(), entry(at));
        }
        // A pending one and a corrected one stay: the file must not have
        // them (the first is not done, the second overrides a line).
        let mut pending = entry(7);
        pending.pending = Some(Box::<PendingCorrection>::default());
        chat.watch.insert("pending".into(), pending);
        let mut corrected = entry(8);
        corrected.in_file = true;
        chat.watch.insert("corrected".into(), corrected);

        assert_eq!(spill(&mut chat, &file, Some(&["a"])).unwrap(), 1);
        assert_eq!(spill(&mut chat, &file, Some(&["pending", "a"])).unwrap(), 0);
        assert_eq!(spill(&mut chat, &file, None).unwrap(), 2);
        let kept: Vec<&str> = chat.watch.keys().map(String::as_str).collect();
        assert_eq!(kept, ["corrected", "pending"]);
        assert_eq!(chat.watch_file_oldest_ms, Some(5));

        let back = read_all(&file, &chat, 0);
        let ids: Vec<&str> = back.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let mut want = entry(10);
        want.in_file = true;
        assert_eq!(back[0].1, want);
        // The window and the state's copies are honoured.
        assert_eq!(read_all(&file, &chat, 9).len(), 2);
        chat.watch.insert("b".into(), entry(5));
        let ids: Vec<String> = read_all(&file, &chat, 0).into_iter().map(|e| e.0).collect();
        assert_eq!(ids, ["a", "c"]);
    }

    #[test]
    fn a_torn_or_garbage_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_for(&dir.path().join("s.json"));
        let mut chat = ChatState::default();
        chat.watch.insert("a".into(), entry(10));
        spill(&mut chat, &file, None).unwrap();
        files::append_unsynced_private(&file, b"not json\n{\"post\":\"b\",\"create_").unwrap();
        let scan = Scan::of(&file, &chat, 0, |_, _| true).unwrap();
        assert_eq!((scan.len(), scan.unreadable), (1, 2));
        // The next entry starts on a line of its own, and reads back.
        chat.watch.insert("c".into(), entry(20));
        spill(&mut chat, &file, None).unwrap();
        let scan = Scan::of(&file, &chat, 0, |_, _| true).unwrap();
        assert_eq!((scan.len(), scan.unreadable), (2, 2));
    }

    #[test]
    fn compaction_is_due_a_quarter_window_late_and_keeps_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_for(&dir.path().join("s.json"));
        let mut chat = ChatState::default();
        let window = 400;
        for at in [100, 300, 600, 900] {
            chat.watch.insert(format!("p{at}"), entry(at));
        }
        spill(&mut chat, &file, None).unwrap();
        // Overridden by the state: dropped from the file.
        let mut corrected = entry(900);
        corrected.in_file = true;
        chat.watch.insert("p900".into(), corrected);

        // Oldest 100; at now 550 the cutoff is 150, due at 50: not yet.
        assert_eq!(compact_if_due(&mut chat, &file, window, 550).unwrap(), None);
        // At now 600 the cutoff is 200 and 100 <= 200 - 100: due.
        let done = compact_if_due(&mut chat, &file, window, 600).unwrap();
        assert_eq!(
            done,
            Some(Compacted {
                kept: 2,
                dropped: 2
            })
        );
        assert_eq!(chat.watch_file_oldest_ms, Some(300));
        let ids: Vec<String> = read_all(&file, &ChatState::default(), 0)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(ids, ["p300", "p600"]);
    }

    #[test]
    fn a_state_an_older_version_wrote_with_the_whole_watch_is_moved_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_for(&dir.path().join("s.json"));
        let old = r#"{"watch": {
            "a": {"create_at": 10, "team": "acme", "label": "TASK", "reply_id": "r"},
            "b": {"create_at": 11, "team": "acme", "label": "ROUTINE",
                  "pending": {"to": "TASK", "by": "john", "at_ms": 12, "done": []}}
        }}"#;
        let mut chat: ChatState = serde_json::from_str(old).unwrap();
        assert_eq!(spill(&mut chat, &file, None).unwrap(), 1);
        let kept: Vec<&str> = chat.watch.keys().map(String::as_str).collect();
        assert_eq!(kept, ["b"], "the pending one stays until it is carried out");
        let back = read_all(&file, &chat, 0);
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].0.as_str(), back[0].1.reply_id.as_deref()),
            ("a", Some("r"))
        );
    }

    #[test]
    fn a_missing_file_is_an_empty_watch() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_for(&dir.path().join("s.json"));
        assert!(is_empty(&file));
        let mut chat = ChatState::default();
        sync(&mut chat, &file).unwrap();
        let scan = Scan::of(&file, &ChatState::default(), 0, |_, _| true).unwrap();
        assert_eq!(scan.len(), 0);
        assert_eq!(scan.entries().count(), 0);
    }
}
