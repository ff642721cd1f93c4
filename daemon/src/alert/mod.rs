//! The alert stage: stamps each alert draft with its sequence number, id, time and node,
//! and hands it to every sink in order.
//!
//! Owns the sequence (gap-free and increasing; a durable sink such as the journal may
//! seed it at start) and the sinks. A sink that fails says so once per failure streak and
//! the others keep going: a full disk must not silence the log or the stream.

pub(crate) mod falco;
pub(crate) mod file;
pub(crate) mod journal;
pub(crate) mod log;
mod model;

pub use model::{
    Alert, AlertContainer, AlertKind, AlertProcess, Ancestor, BaselineEvidence, Evidence, Loss,
    ResponseEvidence, Severity, SignatureEvidence, SignatureFound,
};

use tokio::sync::mpsc;
use tracing::{error, info};

/// How an alert is written for a receiver (`alerts.file_format`, a webhook's `format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// The alert's own JSON (README "Alerts").
    Layerguard,
    /// Falco's JSON output, as Falcosidekick accepts it.
    Falco,
}

/// Everything of an alert but what the stage stamps on it.
#[derive(Clone, Debug)]
pub(crate) struct AlertDraft {
    pub kind: AlertKind,
    /// When the alert is more (or less) severe than its kind says (a sensitive write to
    /// `/etc/ld.so.preload` is critical); `None`: the kind's severity.
    pub severity: Option<Severity>,
    pub summary: String,
    pub container: Option<AlertContainer>,
    pub process: Option<AlertProcess>,
    pub evidence: Option<Evidence>,
    pub loss: Option<Loss>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
    #[error("{sink}: cannot write {path}: {source}")]
    Io {
        sink: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{sink}: {message}")]
    Other { sink: &'static str, message: String },
}

/// Somewhere alerts go. `write` is called in sequence order, from one task.
pub(crate) trait AlertSink: Send {
    fn name(&self) -> &'static str;
    fn write(&mut self, alert: &Alert) -> Result<(), SinkError>;
    /// Called once when the stage stops, after the last alert.
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

struct SinkSlot {
    sink: Box<dyn AlertSink>,
    failing: bool,
    failed_writes: u64,
}

pub(crate) struct AlertStage {
    node: String,
    next_seq: u64,
    sinks: Vec<SinkSlot>,
}

/// What the stage did over its life, reported when it stops.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct AlertStats {
    pub alerts: u64,
    pub last_seq: u64,
    /// Failed writes per sink (the alert still reached the other sinks).
    pub failed_writes: Vec<(String, u64)>,
}

impl AlertStage {
    /// `first_seq` is 1 on a fresh node, or one past the journal's last alert.
    pub fn new(node: impl Into<String>, first_seq: u64, sinks: Vec<Box<dyn AlertSink>>) -> Self {
        Self {
            node: node.into(),
            next_seq: first_seq.max(1),
            sinks: sinks
                .into_iter()
                .map(|sink| SinkSlot {
                    sink,
                    failing: false,
                    failed_writes: 0,
                })
                .collect(),
        }
    }

    /// Turns a draft into an alert with the next sequence number.
    pub fn stamp(&mut self, draft: AlertDraft) -> Alert {
        let seq = self.next_seq;
        self.next_seq += 1;
        Alert {
            seq,
            id: format!("{}-{}-{seq}", self.node, boot_nonce()),
            time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            node: self.node.clone(),
            severity: draft.severity.unwrap_or_else(|| draft.kind.severity()),
            kind: draft.kind,
            summary: draft.summary,
            container: draft.container,
            process: draft.process,
            evidence: draft.evidence,
            loss: draft.loss,
        }
    }

    pub fn publish(&mut self, alert: &Alert) {
        for slot in &mut self.sinks {
            match slot.sink.write(alert) {
                Ok(()) => {
                    if slot.failing {
                        slot.failing = false;
                        info!(sink = slot.sink.name(), "alert sink recovered");
                    }
                }
                Err(e) => {
                    slot.failed_writes += 1;
                    if !slot.failing {
                        slot.failing = true;
                        error!(sink = slot.sink.name(), error = %e, seq = alert.seq,
                            "alert sink failing; other sinks still receive alerts");
                    }
                }
            }
        }
    }

    /// Publishes the pipeline's drafts until that channel closes, and the responders'
    /// drafts (`responses`: response alerts, by policy or by hand) as they come. Only the
    /// pipeline's channel keeps the stage alive: the responders act on published alerts,
    /// so waiting for them to close would wait forever; their drafts ready at the end are
    /// still published.
    pub async fn run(
        mut self,
        mut drafts: mpsc::Receiver<AlertDraft>,
        mut responses: mpsc::Receiver<AlertDraft>,
    ) -> AlertStats {
        let mut stats = AlertStats::default();
        let mut responses_open = true;
        loop {
            let draft = tokio::select! {
                biased;
                d = drafts.recv() => match d {
                    Some(d) => d,
                    None => break,
                },
                r = responses.recv(), if responses_open => match r {
                    Some(r) => r,
                    None => {
                        responses_open = false;
                        continue;
                    }
                },
            };
            let alert = self.stamp(draft);
            self.publish(&alert);
            stats.alerts += 1;
            stats.last_seq = alert.seq;
        }
        while let Ok(draft) = responses.try_recv() {
            let alert = self.stamp(draft);
            self.publish(&alert);
            stats.alerts += 1;
            stats.last_seq = alert.seq;
        }
        for slot in &mut self.sinks {
            if let Err(e) = slot.sink.close() {
                error!(sink = slot.sink.name(), error = %e, "closing alert sink");
            }
            stats
                .failed_writes
                .push((slot.sink.name().to_string(), slot.failed_writes));
        }
        stats
    }
}

/// A random part for alert ids, fixed per daemon start, so ids stay unique when the
/// sequence restarts on a node without a journal.
fn boot_nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| {
        let mut b = [0u8; 4];
        // SAFETY: getrandom writes at most b.len() bytes into b.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n != b.len() as isize {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            b = t.to_le_bytes();
        }
        b.iter().map(|x| format!("{x:02x}")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Recording(Arc<Mutex<Vec<u64>>>, bool);
    impl AlertSink for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }
        fn write(&mut self, a: &Alert) -> Result<(), SinkError> {
            if self.1 {
                return Err(SinkError::Other {
                    sink: "recording",
                    message: "disk full".into(),
                });
            }
            self.0.lock().unwrap().push(a.seq);
            Ok(())
        }
    }

    fn draft() -> AlertDraft {
        crate::fixtures::draft(AlertKind::ExecNotInImage)
    }

    #[tokio::test]
    async fn sequence_is_gap_free_and_a_failing_sink_does_not_stop_others() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stage = AlertStage::new(
            "node",
            41,
            vec![
                Box::new(Recording(Arc::new(Mutex::new(Vec::new())), true)),
                Box::new(Recording(seen.clone(), false)),
            ],
        );
        let (tx, rx) = mpsc::channel(8);
        for _ in 0..3 {
            tx.send(draft()).await.unwrap();
        }
        drop(tx);
        let stats = stage.run(rx, mpsc::channel(1).1).await;
        assert_eq!(*seen.lock().unwrap(), vec![41, 42, 43]);
        assert_eq!(stats.last_seq, 43);
        assert_eq!(stats.failed_writes[0].1, 3);
    }

    #[test]
    fn severity_follows_kind() {
        let mut s = AlertStage::new("n", 1, vec![]);
        let a = s.stamp(AlertDraft {
            severity: None,
            kind: AlertKind::ExecFileless,
            ..draft()
        });
        assert_eq!(a.severity, Severity::Critical);
        assert!(a.id.starts_with("n-"));
    }
}
