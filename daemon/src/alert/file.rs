//! The JSONL file sink (`--alert-log FILE`): one alert per line, appended and flushed per
//! alert, rotated by size to `FILE.1` .. `FILE.N`.
//!
//! Owns the file and its rotation. A write error (full disk, removed directory) is
//! returned to the stage, which reports it once. The file never keeps a torn line: a
//! write that failed half-way is rolled back (the file truncated to its last whole line),
//! and a file that ends mid-line when it is opened (a crash, or a rollback that failed)
//! is cut back to its last newline. Alerts that could not be written wait, bounded, and
//! go out in order before the next one once the file takes writes again.

use super::{Alert, AlertSink, SinkError};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// Alerts kept for the file while it fails; older ones are given up (the journal and the
/// other sinks still have them) and counted.
pub const BACKLOG_ALERTS: usize = 4096;

pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    /// Bytes of whole lines in the file.
    size: u64,
    /// Encoded lines not yet in the file, oldest first.
    backlog: VecDeque<Vec<u8>>,
    /// Lines given up since the file last took a write.
    given_up: u64,
    /// The alert's JSON, or Falco's.
    format: super::AlertFormat,
}

impl FileSink {
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Self {
        Self {
            path: path.into(),
            max_bytes,
            keep,
            file: None,
            size: 0,
            backlog: VecDeque::new(),
            given_up: 0,
            format: super::AlertFormat::Layerguard,
        }
    }

    /// Lines in `format` (`alerts.file_format`).
    pub fn with_format(mut self, format: super::AlertFormat) -> Self {
        self.format = format;
        self
    }

    fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: "alert-log",
            path: self.path.clone(),
            source,
        }
    }

    fn open(&mut self) -> Result<(), SinkError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        let len = f.metadata().map_err(|e| self.io(e))?.len();
        let whole = whole_lines_len(&f, len).map_err(|e| self.io(e))?;
        if whole < len {
            f.set_len(whole).map_err(|e| self.io(e))?;
            warn!(path = %self.path.display(), bytes_cut = len - whole,
                "alert-log: the file ended inside a line (a crash or a failed write); cut back to its last whole line");
        }
        self.size = whole;
        self.file = Some(f);
        Ok(())
    }

    fn rotated(path: &Path, n: u32) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).map_err(|e| self.io(e))?;
            return Ok(());
        }
        let _ = std::fs::remove_file(Self::rotated(&self.path, self.keep));
        for n in (1..self.keep).rev() {
            let from = Self::rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, Self::rotated(&self.path, n + 1)).map_err(|e| self.io(e))?;
            }
        }
        std::fs::rename(&self.path, Self::rotated(&self.path, 1)).map_err(|e| self.io(e))
    }

    /// Writes one whole line, or nothing: a partial write is taken back.
    fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        if self.file.is_none() {
            self.open()?;
        }
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
            self.open()?;
        }
        let file = self.file.as_mut().expect("opened above");
        match file.write_all(line).and_then(|()| file.flush()) {
            Ok(()) => {
                self.size += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Part of the line may be in the file: cut it off, or, if even that fails,
                // let the next open cut back to the last newline.
                let _ = file.set_len(self.size);
                // Reopen next time: the file may have been removed or the disk freed.
                self.file = None;
                Err(self.io(e))
            }
        }
    }
}

/// The length of `file`'s content up to and including its last newline.
fn whole_lines_len(file: &File, len: u64) -> std::io::Result<u64> {
    const STEP: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; STEP as usize];
    while end > 0 {
        let start = end.saturating_sub(STEP);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

impl AlertSink for FileSink {
    fn name(&self) -> &'static str {
        "alert-log"
    }

    fn write(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let encoded = match self.format {
            super::AlertFormat::Layerguard => serde_json::to_vec(alert),
            super::AlertFormat::Falco => serde_json::to_vec(&super::falco::to_falco(alert)),
        };
        let mut line = encoded.map_err(|e| SinkError::Other {
            sink: "alert-log",
            message: e.to_string(),
        })?;
        line.push(b'\n');
        if self.backlog.len() >= BACKLOG_ALERTS {
            self.backlog.pop_front();
            self.given_up += 1;
        }
        self.backlog.push_back(line);
        // Oldest first, so that the file stays in seq order.
        while let Some(next) = self.backlog.front() {
            let next = next.clone();
            self.write_line(&next)?;
            self.backlog.pop_front();
        }
        if self.given_up > 0 {
            warn!(path = %self.path.display(), alerts = self.given_up,
                "alert-log: alerts given up while the file failed (the journal and the other sinks have them)");
            self.given_up = 0;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        if !self.backlog.is_empty() {
            // One last try: space may have come back.
            while let Some(next) = self.backlog.front().cloned() {
                if self.write_line(&next).is_err() {
                    break;
                }
                self.backlog.pop_front();
            }
            if !self.backlog.is_empty() {
                warn!(path = %self.path.display(), alerts = self.backlog.len(),
                    "alert-log: alerts not written at stop (the journal has them)");
            } else {
                info!(path = %self.path.display(), "alert-log: the alerts that waited were written");
            }
        }
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertKind, AlertStage};

    fn alert(stage: &mut AlertStage) -> Alert {
        stage.stamp(crate::fixtures::draft(AlertKind::ExecNotInImage))
    }

    #[test]
    fn appends_one_line_per_alert_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut stage = AlertStage::new("n", 1, vec![]);
        let mut sink = FileSink::new(&path, 600, 2);
        for _ in 0..10 {
            sink.write(&alert(&mut stage)).unwrap();
        }
        sink.close().unwrap();
        let mut seqs = Vec::new();
        for p in [
            FileSink::rotated(&path, 2),
            FileSink::rotated(&path, 1),
            path.clone(),
        ] {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                let a: Alert = serde_json::from_str(line).unwrap();
                seqs.push(a.seq);
            }
            assert!(std::fs::metadata(&p).unwrap().len() <= 600);
        }
        // Only the newest files are kept, and what is kept is contiguous and in order.
        assert!(!FileSink::rotated(&path, 3).exists());
        assert_eq!(*seqs.last().unwrap(), 10);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }

    #[test]
    fn a_failed_write_is_reported_and_the_sink_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("gone");
        let path = sub.join("alerts.jsonl");
        let mut stage = AlertStage::new("n", 1, vec![]);
        let mut sink = FileSink::new(&path, 1 << 20, 1);
        sink.write(&alert(&mut stage)).unwrap();
        // Replace the directory with a file: reopening fails until it is a directory again.
        std::fs::remove_dir_all(&sub).unwrap();
        std::fs::write(&sub, b"not a dir").unwrap();
        sink.file = None;
        let err = sink.write(&alert(&mut stage)).unwrap_err().to_string();
        assert!(err.contains("alerts.jsonl"), "{err}");
        std::fs::remove_file(&sub).unwrap();
        sink.write(&alert(&mut stage)).unwrap();
        // The alert that failed waited and went out first, in order.
        let seqs: Vec<u64> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Alert>(l).unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![2, 3]);
    }

    #[test]
    fn a_torn_line_is_cut_back_when_the_file_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut stage = AlertStage::new("n", 1, vec![]);
        let mut sink = FileSink::new(&path, 1 << 20, 1);
        sink.write(&alert(&mut stage)).unwrap();
        sink.close().unwrap();
        // What a full disk leaves: part of a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"id\":\"n-").unwrap();
        let mut sink = FileSink::new(&path, 1 << 20, 1);
        sink.write(&alert(&mut stage)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            serde_json::from_str::<Alert>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
    }
}
