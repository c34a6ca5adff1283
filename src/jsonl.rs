//! The append-only JSON-lines files (the task ledger, the state journal,
//! the audit trail), read in either direction with bounded memory: one
//! line at a time, a line longer than [`MAX_LINE`] skipped (reported, never
//! held), so neither a file's size nor one hostile line can grow the
//! agent's memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

/// The longest line read; a longer one is reported as unreadable.
const MAX_LINE: usize = 1024 * 1024;

/// Backward reads go in blocks of this size.
const BLOCK: usize = 64 * 1024;

/// One line as read: its text, or why it could not be read.
type Line = Result<Vec<u8>, &'static str>;

/// Calls `f` for every line, oldest first, with its 1-based number; `f`
/// returns false to stop. A final line without a newline is passed too
/// (the caller decides what a torn line is).
pub(crate) fn for_each_forward(
    file: File,
    mut f: impl FnMut(usize, Line) -> bool,
) -> std::io::Result<()> {
    for_each_forward_at(file, |n, _, line| f(n, line))
}

/// [`for_each_forward`], with each line's byte offset in the file, for a
/// second pass that reads a few lines back with [`read_line_at`].
pub(crate) fn for_each_forward_at(
    file: File,
    mut f: impl FnMut(usize, u64, Line) -> bool,
) -> std::io::Result<()> {
    let mut r = BufReader::with_capacity(BLOCK, file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    let mut offset = 0u64;
    loop {
        buf.clear();
        let start = offset;
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = r.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if !too_long {
                if buf.len() + take > MAX_LINE + 1 {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(&chunk[..take]);
                }
            }
            r.consume(take);
            offset += take as u64;
            if done {
                break;
            }
        }
        if !any {
            return Ok(());
        }
        line_no += 1;
        let line = if too_long {
            Err("line longer than 1 MiB")
        } else {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            Ok(std::mem::take(&mut buf))
        };
        if !f(line_no, start, line) {
            return Ok(());
        }
    }
}

/// The line that starts at `offset`, as [`for_each_forward_at`] gave it.
pub(crate) fn read_line_at(file: &File, offset: u64) -> std::io::Result<Line> {
    use std::os::unix::fs::FileExt;
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, offset + line.len() as u64)?;
        let part = &chunk[..n];
        let end = part.iter().position(|b| *b == b'\n');
        line.extend_from_slice(&part[..end.unwrap_or(n)]);
        if line.len() > MAX_LINE {
            return Ok(Err("line longer than 1 MiB"));
        }
        if end.is_some() || n == 0 {
            return Ok(Ok(line));
        }
    }
}

/// Lines from the end of a file towards its start, newest first. The
/// trailing part after the last newline (a torn line, or nothing) comes
/// first, as is.
pub(crate) struct Backward {
    file: File,
    /// Bytes not yet read, from the start of the file.
    remaining: u64,
    /// Read but not yet split, in file order.
    carry: Vec<u8>,
    /// The carry grew past [`MAX_LINE`]: the line being assembled is dropped.
    overlong: bool,
    /// The first (last-in-file) piece has been yielded.
    started: bool,
}

impl Backward {
    /// Starts at the end of `file`.
    pub(crate) fn new(mut file: File) -> std::io::Result<Backward> {
        let len = file.seek(SeekFrom::End(0))?;
        Ok(Backward {
            file,
            remaining: len,
            carry: Vec::new(),
            overlong: false,
            started: false,
        })
    }

    /// The next line towards the start, `None` at the start of the file.
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(i) = self.carry.iter().rposition(|b| *b == b'\n') {
                let line = self.carry.split_off(i + 1);
                self.carry.pop();
                let first = !std::mem::replace(&mut self.started, true);
                let overlong = std::mem::take(&mut self.overlong);
                // The piece after the file's last newline is empty when the
                // file ends with one: nothing to report.
                if first && line.is_empty() && !overlong {
                    continue;
                }
                return Ok(Some(if overlong {
                    Err("line longer than 1 MiB")
                } else {
                    Ok(line)
                }));
            }
            if self.remaining == 0 {
                if self.carry.is_empty() && !self.overlong {
                    return Ok(None);
                }
                self.started = true;
                let overlong = std::mem::take(&mut self.overlong);
                let line = std::mem::take(&mut self.carry);
                return Ok(Some(if overlong {
                    Err("line longer than 1 MiB")
                } else {
                    Ok(line)
                }));
            }
            let n = (BLOCK as u64).min(self.remaining);
            self.remaining -= n;
            self.file.seek(SeekFrom::Start(self.remaining))?;
            let mut block = vec![0u8; n as usize];
            self.file.read_exact(&mut block)?;
            block.extend_from_slice(&self.carry);
            self.carry = block;
            if self.carry.len() > MAX_LINE + BLOCK && !self.carry.contains(&b'\n') {
                // One line longer than the cap: keep reading to its start,
                // holding nothing of it.
                self.carry.clear();
                self.overlong = true;
            }
        }
    }
}

/// [`ends_with_newline`] for the file at `path`, opened with the checks of
/// [`crate::files::open_private_read`]; a missing file ends clean.
pub(crate) fn ends_clean(path: &std::path::Path) -> anyhow::Result<bool> {
    use anyhow::Context;
    match crate::files::open_private_read(path)? {
        Some(mut f) => {
            ends_with_newline(&mut f).with_context(|| format!("reading {}", path.display()))
        }
        None => Ok(true),
    }
}

/// Whether a file ends with a newline (or is empty): the next append must
/// end a torn last line first.
pub(crate) fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        let f = File::open(&p).unwrap();
        (dir, f)
    }

    fn backward(bytes: &[u8]) -> Vec<Result<String, &'static str>> {
        let (_d, f) = file_with(bytes);
        let mut b = Backward::new(f).unwrap();
        let mut out = Vec::new();
        while let Some(l) = b.next_line().unwrap() {
            out.push(l.map(|v| String::from_utf8(v).unwrap()));
        }
        out
    }

    fn forward(bytes: &[u8]) -> Vec<(usize, Result<String, &'static str>)> {
        let (_d, f) = file_with(bytes);
        let mut out = Vec::new();
        for_each_forward(f, |n, l| {
            out.push((n, l.map(|v| String::from_utf8(v).unwrap())));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn both_directions_agree_on_lines_torn_ends_and_blank_lines() {
        let table: &[(&[u8], &[&str])] = &[
            (b"", &[]),
            (b"a\n", &["a"]),
            (b"a\nb\n", &["a", "b"]),
            (b"a\nb", &["a", "b"]),
            (b"a\n\nb\n", &["a", "", "b"]),
        ];
        for (bytes, want) in table {
            let fw: Vec<String> = forward(bytes)
                .into_iter()
                .map(|(_, l)| l.unwrap())
                .collect();
            assert_eq!(fw, *want, "forward {bytes:?}");
            let mut bw: Vec<String> = backward(bytes).into_iter().map(|l| l.unwrap()).collect();
            bw.reverse();
            assert_eq!(bw, *want, "backward {bytes:?}");
        }
    }

    #[test]
    fn long_files_and_overlong_lines_stay_bounded() {
        let mut bytes = Vec::new();
        for i in 0..20_000 {
            bytes.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        bytes.extend_from_slice(&vec![b'x'; 3 * MAX_LINE]);
        bytes.extend_from_slice(b"\nlast\n");
        let fw = forward(&bytes);
        assert_eq!(fw.len(), 20_002);
        assert_eq!(fw[20_000].1, Err("line longer than 1 MiB"));
        assert_eq!(fw[20_001].1.as_deref(), Ok("last"));
        let bw = backward(&bytes);
        assert_eq!(bw.len(), 20_002);
        assert_eq!(bw[0].as_deref(), Ok("last"));
        assert_eq!(bw[1], Err("line longer than 1 MiB"));
        assert_eq!(bw[2].as_deref(), Ok("line 19999"));
        assert_eq!(bw[20_001].as_deref(), Ok("line 0"));
    }

    #[test]
    fn a_line_is_read_back_at_the_offset_the_forward_pass_gave() {
        let bytes = b"first\n\nthird line\ntorn";
        let (_d, f) = file_with(bytes);
        let mut seen = Vec::new();
        for_each_forward_at(f.try_clone().unwrap(), |n, at, l| {
            seen.push((n, at, l.unwrap()));
            true
        })
        .unwrap();
        let offsets: Vec<u64> = seen.iter().map(|s| s.1).collect();
        assert_eq!(offsets, [0, 6, 7, 18]);
        for (_, at, line) in seen {
            assert_eq!(read_line_at(&f, at).unwrap().unwrap(), line, "at {at}");
        }
    }

    #[test]
    fn the_last_byte_says_whether_a_line_is_torn() {
        let (_d, mut f) = file_with(b"a\nb");
        assert!(!ends_with_newline(&mut f).unwrap());
        let (_d, mut f) = file_with(b"a\n");
        assert!(ends_with_newline(&mut f).unwrap());
        let (_d, mut f) = file_with(b"");
        assert!(ends_with_newline(&mut f).unwrap());
    }
}
