//! The log sink: every alert as one JSON record on the daemon's output (journald, `kubectl
//! logs`), in the same line shape as every other record.

use super::{Alert, AlertSink, SinkError};
use crate::logging;

pub struct LogSink;

impl AlertSink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn write(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let level = match alert.severity {
            super::Severity::Info => "INFO",
            _ => "WARN",
        };
        #[derive(serde::Serialize)]
        struct Record<'a> {
            alert: &'a Alert,
        }
        logging::record(level, "layerguard::alert", "alert", &Record { alert });
        Ok(())
    }
}
