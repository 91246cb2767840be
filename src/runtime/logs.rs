//! Container logs in the CRI format kubelet reads (`<RFC3339Nano> <stream> <P|F> <content>`),
//! written by the shim with size-based rotation: `<path>`, then `<path>.1` (newest) up to
//! `<path>.<max_files - 1>`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longer lines are cut into partial (`P`) entries, as containerd does by default.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One CRI log line, newline included.
pub fn format_line(
    time: jiff::Timestamp,
    stream: Stream,
    partial: bool,
    content: &[u8],
) -> Vec<u8> {
    let tag = if partial { "P" } else { "F" };
    let mut line = format!("{time} {} {tag} ", stream.as_str()).into_bytes();
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// Splits a byte stream into log entries: complete lines (without their newline) and, for lines
/// longer than [`MAX_LINE_BYTES`], partial chunks.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`; calls `emit(content, partial)` for every finished entry.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(n) if n <= MAX_LINE_BYTES => {
                    emit(&rest[..n], false);
                    start += n + 1;
                }
                _ if rest.len() >= MAX_LINE_BYTES => {
                    emit(&rest[..MAX_LINE_BYTES], true);
                    start += MAX_LINE_BYTES;
                }
                _ => break,
            }
        }
        self.pending.drain(..start);
    }

    /// End of stream: an unterminated last line is still a full entry.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, false);
            self.pending.clear();
        }
    }
}

/// Appends CRI lines to a log file, rotating it by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    size: u64,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl LogWriter {
    /// Opens (appending) `path`, creating its directory. `max_bytes == 0` disables rotation.
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> Result<Self, LogError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let size = file.metadata().map_err(io_err("stat", path))?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            max_files,
            file,
            size,
        })
    }

    pub fn write_entry(
        &mut self,
        time: jiff::Timestamp,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> Result<(), LogError> {
        let line = format_line(time, stream, partial, content);
        if self.max_bytes > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(&line)
            .map_err(io_err("write", &self.path))?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        let keep = self.max_files.saturating_sub(1);
        if keep == 0 {
            self.file
                .set_len(0)
                .map_err(io_err("truncate", &self.path))?;
            self.size = 0;
            return Ok(());
        }
        let oldest = rotated(&self.path, keep);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &oldest)(e)),
        }
        for n in (1..keep).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                let to = rotated(&self.path, n + 1);
                std::fs::rename(&from, &to).map_err(io_err("rename", &from))?;
            }
        }
        let first = rotated(&self.path, 1);
        std::fs::rename(&self.path, &first).map_err(io_err("rename", &self.path))?;
        *self = Self::open(&self.path.clone(), self.max_bytes, self.max_files)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> jiff::Timestamp {
        "2016-10-06T00:17:09.669794202Z".parse().unwrap()
    }

    #[test]
    fn lines_follow_the_cri_format() {
        let line = format_line(ts(), Stream::Stdout, false, b"hello");
        assert_eq!(line, b"2016-10-06T00:17:09.669794202Z stdout F hello\n");
        let line = format_line(ts(), Stream::Stderr, true, b"x");
        assert_eq!(line, b"2016-10-06T00:17:09.669794202Z stderr P x\n");
    }

    #[test]
    fn splitter_keeps_incomplete_lines_until_their_newline_or_the_end() {
        let mut splitter = LineSplitter::default();
        let mut got = Vec::new();
        splitter.push(b"one\ntw", |c, p| got.push((c.to_vec(), p)));
        assert_eq!(got, vec![(b"one".to_vec(), false)]);
        splitter.push(b"o\nthree", |c, p| got.push((c.to_vec(), p)));
        splitter.finish(|c, p| got.push((c.to_vec(), p)));
        assert_eq!(
            got,
            vec![
                (b"one".to_vec(), false),
                (b"two".to_vec(), false),
                (b"three".to_vec(), false)
            ]
        );
    }

    #[test]
    fn overlong_lines_become_partial_entries() {
        let mut splitter = LineSplitter::default();
        let mut got = Vec::new();
        let mut data = vec![b'a'; MAX_LINE_BYTES + 10];
        data.push(b'\n');
        splitter.push(&data, |c, p| got.push((c.len(), p)));
        assert_eq!(got, vec![(MAX_LINE_BYTES, true), (10, false)]);
    }

    #[test]
    fn rotation_keeps_at_most_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app/0.log");
        let mut writer = LogWriter::open(&path, 100, 3).unwrap();
        for i in 0..20 {
            writer
                .write_entry(ts(), Stream::Stdout, false, format!("line {i}").as_bytes())
                .unwrap();
        }
        assert!(path.exists());
        assert!(rotated(&path, 1).exists());
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for file in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(std::fs::metadata(&file).unwrap().len() <= 100);
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with("stdout F line 19\n"));
    }
}
