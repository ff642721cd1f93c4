//! The JSONL file sink (`--alert-log FILE`): one alert per line, appended and flushed per
//! alert, rotated by size to `FILE.1` .. `FILE.N`.
//!
//! Owns the file and its rotation. A write error (full disk, removed directory) is
//! returned to the stage, which reports it once; the next alert tries again, reopening the
//! file, so the sink recovers by itself when space comes back.

use super::{Alert, AlertSink, SinkError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl FileSink {
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Self {
        Self {
            path: path.into(),
            max_bytes,
            keep,
            file: None,
            size: 0,
        }
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
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
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
}

impl AlertSink for FileSink {
    fn name(&self) -> &'static str {
        "alert-log"
    }

    fn write(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(alert).map_err(|e| SinkError::Other {
            sink: "alert-log",
            message: e.to_string(),
        })?;
        line.push(b'\n');
        if self.file.is_none() {
            self.open()?;
        }
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
            self.open()?;
        }
        let file = self.file.as_mut().expect("opened above");
        let result = file.write_all(&line).and_then(|()| file.flush());
        match result {
            Ok(()) => {
                self.size += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Reopen next time: the file may have been removed or the disk freed.
                self.file = None;
                Err(self.io(e))
            }
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertDraft, AlertKind, AlertStage};

    fn alert(stage: &mut AlertStage) -> Alert {
        stage.stamp(AlertDraft {
            kind: AlertKind::ExecNotInImage,
            summary: "a dropped binary ran".into(),
            container: None,
            process: None,
            evidence: None,
            loss: None,
        })
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
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
    }
}
