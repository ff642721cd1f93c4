//! Conversions between the daemon's alert model (`crate::alert`) and the `layerguard.v1`
//! wire types, both ways: the server encodes, the CLI decodes and prints the same JSON
//! the log and file sinks write.
//!
//! Owns the mapping only; it must stay lossless for every field the model has (a test
//! round-trips a fully populated alert), so adding a model field means adding it here.

use crate::alert::{
    Alert, AlertContainer, AlertKind, AlertProcess, Ancestor, BaselineEvidence, Evidence, Loss,
    ResponseEvidence, Severity, SignatureEvidence, SignatureFound,
};
use layerguard_proto::v1 as pb;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("unknown {field} value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("alert {seq} has no {field}")]
    Missing { seq: u64, field: &'static str },
    #[error("alert {seq} has an invalid time: {detail}")]
    Time { seq: u64, detail: String },
}

pub fn severity_to_proto(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// `None` for UNSPECIFIED.
pub fn severity_from_proto(v: i32) -> Result<Option<Severity>, ConvertError> {
    let unknown = ConvertError::UnknownEnum {
        field: "severity",
        value: v,
    };
    Ok(match pb::Severity::try_from(v).map_err(|_| unknown)? {
        pb::Severity::Unspecified => None,
        pb::Severity::Info => Some(Severity::Info),
        pb::Severity::Medium => Some(Severity::Medium),
        pb::Severity::High => Some(Severity::High),
        pb::Severity::Critical => Some(Severity::Critical),
    })
}

pub fn kind_to_proto(k: AlertKind) -> pb::AlertKind {
    match k {
        AlertKind::ExecModified => pb::AlertKind::ExecModified,
        AlertKind::ExecNotInImage => pb::AlertKind::ExecNotInImage,
        AlertKind::ExecFileless => pb::AlertKind::ExecFileless,
        AlertKind::ExecDeleted => pb::AlertKind::ExecDeleted,
        AlertKind::ExecUnverifiable => pb::AlertKind::ExecUnverifiable,
        AlertKind::ImageUntrusted => pb::AlertKind::ImageUntrusted,
        AlertKind::SensorEventsLost => pb::AlertKind::SensorEventsLost,
        AlertKind::FileImageModified => pb::AlertKind::FileImageModified,
        AlertKind::FileExecutableCreated => pb::AlertKind::FileExecutableCreated,
        AlertKind::FileSensitiveWrite => pb::AlertKind::FileSensitiveWrite,
        AlertKind::LibraryModified => pb::AlertKind::LibraryModified,
        AlertKind::LibraryNotInImage => pb::AlertKind::LibraryNotInImage,
        AlertKind::LibraryFileless => pb::AlertKind::LibraryFileless,
        AlertKind::BaselineUnexpectedExec => pb::AlertKind::BaselineUnexpectedExec,
        AlertKind::BaselineUnexpectedParent => pb::AlertKind::BaselineUnexpectedParent,
        AlertKind::BaselineUnexpectedWrite => pb::AlertKind::BaselineUnexpectedWrite,
        AlertKind::ImageUnsigned => pb::AlertKind::ImageUnsigned,
        AlertKind::ImageSignatureInvalid => pb::AlertKind::ImageSignatureInvalid,
        AlertKind::ImageKeyRevoked => pb::AlertKind::ImageKeyRevoked,
        AlertKind::ImageKeyExpired => pb::AlertKind::ImageKeyExpired,
        AlertKind::ResponseTaken => pb::AlertKind::ResponseTaken,
        AlertKind::ResponseFailed => pb::AlertKind::ResponseFailed,
    }
}

/// `None` for UNSPECIFIED.
pub fn kind_from_proto(v: i32) -> Result<Option<AlertKind>, ConvertError> {
    let unknown = ConvertError::UnknownEnum {
        field: "kind",
        value: v,
    };
    Ok(match pb::AlertKind::try_from(v).map_err(|_| unknown)? {
        pb::AlertKind::Unspecified => None,
        pb::AlertKind::ExecModified => Some(AlertKind::ExecModified),
        pb::AlertKind::ExecNotInImage => Some(AlertKind::ExecNotInImage),
        pb::AlertKind::ExecFileless => Some(AlertKind::ExecFileless),
        pb::AlertKind::ExecDeleted => Some(AlertKind::ExecDeleted),
        pb::AlertKind::ExecUnverifiable => Some(AlertKind::ExecUnverifiable),
        pb::AlertKind::ImageUntrusted => Some(AlertKind::ImageUntrusted),
        pb::AlertKind::SensorEventsLost => Some(AlertKind::SensorEventsLost),
        pb::AlertKind::FileImageModified => Some(AlertKind::FileImageModified),
        pb::AlertKind::FileExecutableCreated => Some(AlertKind::FileExecutableCreated),
        pb::AlertKind::FileSensitiveWrite => Some(AlertKind::FileSensitiveWrite),
        pb::AlertKind::LibraryModified => Some(AlertKind::LibraryModified),
        pb::AlertKind::LibraryNotInImage => Some(AlertKind::LibraryNotInImage),
        pb::AlertKind::LibraryFileless => Some(AlertKind::LibraryFileless),
        pb::AlertKind::BaselineUnexpectedExec => Some(AlertKind::BaselineUnexpectedExec),
        pb::AlertKind::BaselineUnexpectedParent => Some(AlertKind::BaselineUnexpectedParent),
        pb::AlertKind::BaselineUnexpectedWrite => Some(AlertKind::BaselineUnexpectedWrite),
        pb::AlertKind::ImageUnsigned => Some(AlertKind::ImageUnsigned),
        pb::AlertKind::ImageSignatureInvalid => Some(AlertKind::ImageSignatureInvalid),
        pb::AlertKind::ImageKeyRevoked => Some(AlertKind::ImageKeyRevoked),
        pb::AlertKind::ImageKeyExpired => Some(AlertKind::ImageKeyExpired),
        pb::AlertKind::ResponseTaken => Some(AlertKind::ResponseTaken),
        pb::AlertKind::ResponseFailed => Some(AlertKind::ResponseFailed),
    })
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// A protobuf timestamp as a system time (`None` when out of range).
pub fn system_time(t: &prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

impl From<&Alert> for pb::Alert {
    fn from(a: &Alert) -> Self {
        pb::Alert {
            seq: a.seq,
            id: a.id.clone(),
            time: humantime::parse_rfc3339(&a.time).ok().map(timestamp),
            node: a.node.clone(),
            severity: severity_to_proto(a.severity) as i32,
            kind: kind_to_proto(a.kind) as i32,
            summary: a.summary.clone(),
            container: a.container.as_ref().map(|c| pb::AlertContainer {
                namespace: c.namespace.clone(),
                id: c.id.clone(),
                image: c.image.clone(),
                manifest_digest: c.manifest_digest.clone(),
                pod_name: c.pod_name.clone(),
                pod_namespace: c.pod_namespace.clone(),
                pod_uid: c.pod_uid.clone(),
                container_name: c.container_name.clone(),
            }),
            process: a.process.as_ref().map(|p| pb::AlertProcess {
                pid: p.pid,
                ppid: p.ppid,
                uid: p.uid,
                gid: p.gid,
                exe: p.exe.clone(),
                argv: p.argv.clone(),
                argv_truncated: p.argv_truncated,
                ancestry: p
                    .ancestry
                    .iter()
                    .map(|x| pb::Ancestor {
                        pid: x.pid,
                        exe: x.exe.clone(),
                    })
                    .collect(),
                exec_time: p
                    .exec_time
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .map(timestamp),
            }),
            evidence: a.evidence.as_ref().map(|e| pb::Evidence {
                path: e.path.clone(),
                expected_sha256: e.expected_sha256.clone(),
                expected_layer: e.expected_layer.clone(),
                actual_sha256: e.actual_sha256.clone(),
                upper_layer: e.upper_layer,
                interpreter: e.interpreter.clone(),
                interpreter_verdict: e.interpreter_verdict.clone(),
                reason: e.reason.clone(),
                file_op: e.file_op.clone(),
                file_mode: e.file_mode.clone(),
                host_path: e.host_path.clone(),
                path_source: e.path_source.clone(),
                baseline: e.baseline.as_ref().map(|b| pb::BaselineEvidence {
                    key: b.key.clone(),
                    id: b.id.clone(),
                    state: b.state.clone(),
                    partial: b.partial,
                    learned_since: b.learned_since.clone(),
                    monitoring_since: b.monitoring_since.clone(),
                    entry: b.entry.clone(),
                    learned_instead: b.learned_instead.clone(),
                    repeats: b.repeats,
                }),
                signature: e.signature.as_ref().map(|g| pb::SignatureEvidence {
                    state: g.state.clone(),
                    image: g.image.clone(),
                    digests: g.digests.clone(),
                    policy: g.policy.clone(),
                    mode: g.mode.clone(),
                    keys_tried: g.keys_tried.clone(),
                    signatures: g
                        .signatures
                        .iter()
                        .map(|f| pb::SignatureFound {
                            source: f.source.clone(),
                            format: f.format.clone(),
                            key: f.key.clone(),
                            result: f.result.clone(),
                        })
                        .collect(),
                }),
                response: e.response.as_ref().map(|r| pb::ResponseEvidence {
                    action: r.action.clone(),
                    rule: r.rule.clone(),
                    caller: r.caller.clone(),
                    trigger_seq: r.trigger_seq,
                    trigger_id: r.trigger_id.clone(),
                    dry_run: r.dry_run,
                    result: r.result.clone(),
                    task_status: r.task_status.clone(),
                }),
            }),
            loss: a.loss.as_ref().map(|l| pb::Loss {
                kernel: l.kernel.iter().map(|(k, n)| (k.clone(), *n)).collect(),
                undecodable: l.undecodable,
                queues: l
                    .queues
                    .iter()
                    .map(|(queue, lost)| pb::QueueLoss {
                        queue: queue.clone(),
                        lost: *lost,
                    })
                    .collect(),
            }),
        }
    }
}

impl TryFrom<pb::Alert> for Alert {
    type Error = ConvertError;

    fn try_from(a: pb::Alert) -> Result<Self, Self::Error> {
        let seq = a.seq;
        let time = a
            .time
            .as_ref()
            .ok_or(ConvertError::Missing { seq, field: "time" })?;
        let time = system_time(time).ok_or_else(|| ConvertError::Time {
            seq,
            detail: format!("{time:?}"),
        })?;
        let kind = kind_from_proto(a.kind)?.ok_or(ConvertError::Missing { seq, field: "kind" })?;
        let severity = severity_from_proto(a.severity)?.ok_or(ConvertError::Missing {
            seq,
            field: "severity",
        })?;
        Ok(Alert {
            seq,
            id: a.id,
            time: humantime::format_rfc3339_micros(time).to_string(),
            node: a.node,
            severity,
            kind,
            summary: a.summary,
            container: a.container.map(|c| AlertContainer {
                namespace: c.namespace,
                id: c.id,
                image: c.image,
                manifest_digest: c.manifest_digest,
                pod_name: c.pod_name,
                pod_namespace: c.pod_namespace,
                pod_uid: c.pod_uid,
                container_name: c.container_name,
            }),
            process: a.process.map(|p| AlertProcess {
                exec_time: p
                    .exec_time
                    .as_ref()
                    .and_then(system_time)
                    .map(|t| humantime::format_rfc3339_micros(t).to_string()),
                pid: p.pid,
                ppid: p.ppid,
                uid: p.uid,
                gid: p.gid,
                exe: p.exe,
                argv: p.argv,
                argv_truncated: p.argv_truncated,
                ancestry: p
                    .ancestry
                    .into_iter()
                    .map(|x| Ancestor {
                        pid: x.pid,
                        exe: x.exe,
                    })
                    .collect(),
            }),
            evidence: a.evidence.map(|e| Evidence {
                path: e.path,
                expected_sha256: e.expected_sha256,
                expected_layer: e.expected_layer,
                actual_sha256: e.actual_sha256,
                upper_layer: e.upper_layer,
                interpreter: e.interpreter,
                interpreter_verdict: e.interpreter_verdict,
                reason: e.reason,
                file_op: e.file_op,
                file_mode: e.file_mode,
                host_path: e.host_path,
                path_source: e.path_source,
                baseline: e.baseline.map(|b| BaselineEvidence {
                    key: b.key,
                    id: b.id,
                    state: b.state,
                    partial: b.partial,
                    learned_since: b.learned_since,
                    monitoring_since: b.monitoring_since,
                    entry: b.entry,
                    learned_instead: b.learned_instead,
                    repeats: b.repeats,
                }),
                signature: e.signature.map(|g| SignatureEvidence {
                    state: g.state,
                    image: g.image,
                    digests: g.digests,
                    policy: g.policy,
                    mode: g.mode,
                    keys_tried: g.keys_tried,
                    signatures: g
                        .signatures
                        .into_iter()
                        .map(|f| SignatureFound {
                            source: f.source,
                            format: f.format,
                            key: f.key,
                            result: f.result,
                        })
                        .collect(),
                }),
                response: e.response.map(|r| ResponseEvidence {
                    action: r.action,
                    rule: r.rule,
                    caller: r.caller,
                    trigger_seq: r.trigger_seq,
                    trigger_id: r.trigger_id,
                    dry_run: r.dry_run,
                    result: r.result,
                    task_status: r.task_status,
                }),
            }),
            loss: a.loss.map(|l| Loss {
                kernel: l.kernel.into_iter().collect(),
                undecodable: l.undecodable,
                queues: l.queues.into_iter().map(|q| (q.queue, q.lost)).collect(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::full_alert;

    #[test]
    fn a_full_alert_round_trips_through_the_wire_type() {
        let a = full_alert(7);
        let wire = pb::Alert::from(&a);
        assert_eq!(wire.kind, pb::AlertKind::ExecModified as i32);
        assert_eq!(wire.time.unwrap().nanos, 123_456_000);
        assert_eq!(Alert::try_from(wire).unwrap(), a);
        let bare = Alert {
            container: None,
            process: None,
            evidence: None,
            loss: None,
            ..full_alert(8)
        };
        assert_eq!(Alert::try_from(pb::Alert::from(&bare)).unwrap(), bare);
    }

    #[test]
    fn every_kind_and_severity_maps_both_ways() {
        for k in AlertKind::ALL {
            assert_eq!(kind_from_proto(kind_to_proto(k) as i32), Ok(Some(k)));
            let s = k.severity();
            assert_eq!(
                severity_from_proto(severity_to_proto(s) as i32),
                Ok(Some(s))
            );
        }
        assert_eq!(kind_from_proto(0), Ok(None));
        assert!(kind_from_proto(99).is_err());
        assert!(severity_from_proto(-1).is_err());
    }

    #[test]
    fn a_wire_alert_without_time_or_kind_is_rejected() {
        let mut w = pb::Alert::from(&full_alert(1));
        w.time = None;
        assert_eq!(
            Alert::try_from(w).unwrap_err(),
            ConvertError::Missing {
                seq: 1,
                field: "time"
            }
        );
        let mut w = pb::Alert::from(&full_alert(1));
        w.kind = 0;
        assert!(Alert::try_from(w).is_err());
    }
}
