//! The alert: what layerguard tells a SOC tool or a responder, and the one schema every
//! sink (JSON log, JSONL file, gRPC stream, journal) carries.
//!
//! Owns the types and their JSON shape only. Field names are API: renaming one breaks
//! consumers, so add fields rather than change them. Absent values are omitted, not null.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How bad it is; ordered, so that filters can ask for "at least high".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational records (an allowed verdict, a response taken).
    Info,
    /// Worth a look.
    Medium,
    /// Likely an intrusion.
    High,
    /// An integrity breach.
    Critical,
}

impl Severity {
    /// The name in JSON, filters and flags.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// What an alert is about; its severity follows from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The executed file exists in the image with another digest.
    ExecModified,
    /// No such file in the image (a dropped binary or script).
    ExecNotInImage,
    /// Executed from a memfd or anonymous file.
    ExecFileless,
    /// The executed file had no links left when it ran.
    ExecDeleted,
    /// The file could not be read, or the image could not be indexed.
    ExecUnverifiable,
    /// The container's image failed verification (blob, config or diff_id mismatch).
    ImageUntrusted,
    /// Events were lost in the kernel or in a queue.
    SensorEventsLost,
    /// A file the image records (an executable, a shared library, a `files.protect`
    /// path) now has other content in the container.
    FileImageModified,
    /// A file with an exec bit that the image does not have appeared in the writable layer.
    FileExecutableCreated,
    /// A path of `files.sensitive` was created or written.
    FileSensitiveWrite,
    /// An executable mapping of a file whose content differs from the image's at its path.
    LibraryModified,
    /// An executable mapping of a file the image does not have.
    LibraryNotInImage,
    /// An executable mapping of a memfd or a deleted file.
    LibraryFileless,
    /// A monitoring baseline's workload ran an exe it never ran while it learned.
    BaselineUnexpectedExec,
    /// A learned exe was started by a parent it never had.
    BaselineUnexpectedParent,
    /// A directory the workload never wrote while it learned was written.
    BaselineUnexpectedWrite,
    /// A `[[trust.policy]]` requires a signature of the image and none was found.
    ImageUnsigned,
    /// The image's signatures are all malformed, for another image, or by no trusted key.
    ImageSignatureInvalid,
    /// The image is signed by a revoked key.
    ImageKeyRevoked,
    /// The image is signed by a key outside its validity period.
    ImageKeyExpired,
    /// A response (pause, kill, isolate, release) was taken, by policy or by hand.
    ResponseTaken,
    /// A response was due and did not happen (it failed, a `respond.never` container, the
    /// rate limit).
    ResponseFailed,
}

impl AlertKind {
    /// Every kind, for listings and flag parsing.
    pub const ALL: [AlertKind; 22] = [
        Self::ExecModified,
        Self::ExecNotInImage,
        Self::ExecFileless,
        Self::ExecDeleted,
        Self::ExecUnverifiable,
        Self::ImageUntrusted,
        Self::SensorEventsLost,
        Self::FileImageModified,
        Self::FileExecutableCreated,
        Self::FileSensitiveWrite,
        Self::LibraryModified,
        Self::LibraryNotInImage,
        Self::LibraryFileless,
        Self::BaselineUnexpectedExec,
        Self::BaselineUnexpectedParent,
        Self::BaselineUnexpectedWrite,
        Self::ImageUnsigned,
        Self::ImageSignatureInvalid,
        Self::ImageKeyRevoked,
        Self::ImageKeyExpired,
        Self::ResponseTaken,
        Self::ResponseFailed,
    ];

    /// The name in JSON, filters and flags (`exec_modified`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ExecModified => "exec_modified",
            Self::ExecNotInImage => "exec_not_in_image",
            Self::ExecFileless => "exec_fileless",
            Self::ExecDeleted => "exec_deleted",
            Self::ExecUnverifiable => "exec_unverifiable",
            Self::ImageUntrusted => "image_untrusted",
            Self::SensorEventsLost => "sensor_events_lost",
            Self::FileImageModified => "file_image_modified",
            Self::FileExecutableCreated => "file_executable_created",
            Self::FileSensitiveWrite => "file_sensitive_write",
            Self::LibraryModified => "library_modified",
            Self::LibraryNotInImage => "library_not_in_image",
            Self::LibraryFileless => "library_fileless",
            Self::BaselineUnexpectedExec => "baseline_unexpected_exec",
            Self::BaselineUnexpectedParent => "baseline_unexpected_parent",
            Self::BaselineUnexpectedWrite => "baseline_unexpected_write",
            Self::ImageUnsigned => "image_unsigned",
            Self::ImageSignatureInvalid => "image_signature_invalid",
            Self::ImageKeyRevoked => "image_key_revoked",
            Self::ImageKeyExpired => "image_key_expired",
            Self::ResponseTaken => "response_taken",
            Self::ResponseFailed => "response_failed",
        }
    }

    /// The kind of that name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The severity each kind carries (issue 5's table).
    pub fn severity(&self) -> Severity {
        match self {
            Self::ExecModified
            | Self::ExecFileless
            | Self::ImageUntrusted
            | Self::FileImageModified
            | Self::LibraryModified
            | Self::LibraryFileless
            | Self::ImageSignatureInvalid
            | Self::ImageKeyRevoked => Severity::Critical,
            Self::ExecNotInImage
            | Self::ImageUnsigned
            | Self::ImageKeyExpired
            | Self::ResponseFailed
            | Self::ExecDeleted
            | Self::FileExecutableCreated
            | Self::FileSensitiveWrite
            | Self::LibraryNotInImage => Severity::High,
            // A baseline's unexpected exec of a shell or network tool is raised as high.
            Self::ExecUnverifiable
            | Self::SensorEventsLost
            | Self::BaselineUnexpectedExec
            | Self::BaselineUnexpectedParent
            | Self::BaselineUnexpectedWrite => Severity::Medium,
            Self::ResponseTaken => Severity::Info,
        }
    }
}

/// The container an alert is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertContainer {
    /// containerd namespace (`k8s.io`, `default`, ...).
    pub namespace: String,
    /// The container's id in its namespace.
    pub id: String,
    /// The image reference the container was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's manifest digest (for a multi-platform image, this node's platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Kubernetes pod name (CRI label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Kubernetes pod namespace (CRI label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// Kubernetes pod uid (CRI label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The container's name in its pod (CRI label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// One process in an alert's ancestry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Host pid.
    pub pid: u32,
    /// The executable as the host sees it (`/proc/PID/exe`), if it was still readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// The process that executed the file (for a file alert: the process that wrote or
/// mapped it; `exe` is its executable, `argv` as `/proc` still had it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertProcess {
    /// Host pid (thread group id).
    pub pid: u32,
    /// Host pid of the parent.
    pub ppid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The executed path inside the container, resolved against its cwd when relative.
    pub exe: String,
    /// Arguments as the sensor kept them (up to 4 KiB).
    pub argv: Vec<String>,
    /// True when argv was longer than the sensor keeps.
    #[serde(default)]
    pub argv_truncated: bool,
    /// Parent first, up to 8.
    #[serde(default)]
    pub ancestry: Vec<Ancestor>,
    /// When the exec happened (RFC 3339, microseconds), from the kernel's event: the
    /// alert's own `time` is when it was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_time: Option<String>,
}

/// Why the verdict was reached: what the image says and what actually ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The checked path inside the container (the script, for a script alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// sha256 hex the verified image records at that path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_sha256: Option<String>,
    /// The layer (blob digest) that recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_layer: Option<String>,
    /// sha256 hex of the file that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_sha256: Option<String>,
    /// True when the file lives in the container's writable layer.
    #[serde(default)]
    pub upper_layer: bool,
    /// The interpreter, when a script was executed; `interpreter_verdict` says how it fared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// The interpreter's own verdict (`verified`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter_verdict: Option<String>,
    /// For file alerts: `write`, `map`, `linked` or `unlinked`, what the sensor saw happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_op: Option<String>,
    /// For file alerts: the file's mode when it was seen, octal (`0755`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<String>,
    /// For file alerts: where the file is on the host (its snapshot's directory), for a
    /// responder to look at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// For file alerts: `kernel` when the path is the kernel's (the file's dentries, or
    /// what a kernel hook was handed), `caller` when it is a syscall's string argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_source: Option<String>,
    /// For baseline alerts: the baseline and what it learned instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineEvidence>,
    /// For image signature alerts: the image, its digests, the signatures found and the
    /// keys tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureEvidence>,
    /// For response alerts: what was done, by whom, and what triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseEvidence>,
    /// One sentence, for people.
    pub reason: String,
}

/// Which baseline an alert is about, and what it learned instead of what happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineEvidence {
    /// `ns/pod-ns/workload/container@manifest`.
    pub key: String,
    /// The short id the CLI takes.
    pub id: String,
    /// `monitoring` (a baseline alerts only then).
    pub state: String,
    /// The baseline may miss behaviour (the daemon started late, events were lost).
    pub partial: bool,
    /// When it started learning (RFC 3339).
    pub learned_since: String,
    /// When it started monitoring (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring_since: Option<String>,
    /// What was unexpected.
    pub entry: String,
    /// Some of what was learned instead.
    pub learned_instead: Vec<String>,
    /// Repeats folded since the last alert of the same (baseline, kind, entry).
    #[serde(default)]
    pub repeats: u64,
}

/// What the signature check of an image found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEvidence {
    /// `unsigned`, `signature_invalid`, `key_revoked`, `key_expired` (or `signed`).
    pub state: String,
    /// The image reference the policy matched.
    pub image: String,
    /// The digests signatures were looked for under: the index (what `cosign sign`
    /// signs), then the platform manifest.
    pub digests: Vec<String>,
    /// `trust.policy[N]`.
    pub policy: String,
    /// `enforce` or `audit`.
    pub mode: String,
    /// The keys one of which had to sign it.
    pub keys_tried: Vec<String>,
    /// Every signature found, and what became of it.
    #[serde(default)]
    pub signatures: Vec<SignatureFound>,
}

/// A response to a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEvidence {
    /// `pause`, `kill`, `isolate`, `release`.
    pub action: String,
    /// The `[[respond.policy]]` name, for an automatic response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Who asked, for a response by hand (mTLS identity, or `uid N` on the unix socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The alert that triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_seq: Option<u64>,
    /// ...and its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    /// A `dry_run` policy: nothing was done.
    #[serde(default)]
    pub dry_run: bool,
    /// `taken`, `dry_run`, `failed`, `never` (a `respond.never` container),
    /// `rate_limited`.
    pub result: String,
    /// The task's status afterwards, as containerd reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<String>,
}

/// One signature found for an image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureFound {
    /// Where it was found (`containerd default/repo:sha256-<hex>.sig layer 0`, a file).
    pub source: String,
    /// `cosign-simple-signing`, `sigstore-bundle-dsse`, `unparsable`.
    pub format: String,
    /// The configured key it verified with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `verified with key ...`, or what is wrong with it.
    pub result: String,
}

/// Counts of lost events, for `sensor_events_lost`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "LossRecord")]
pub struct Loss {
    /// Lost in the kernel (ring buffer full), by event kind (`exec`, `fork`, `exit`, ...);
    /// kinds with none are left out.
    pub kernel: BTreeMap<String, u64>,
    /// Records the daemon could not decode.
    pub undecodable: u64,
    /// Lost in a queue inside the daemon, by queue name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<(String, u64)>,
}

/// A `loss` object as any version wrote it: alerts in a journal written before losses
/// were counted per kind carry `kernel_exec`, `kernel_fork` and `kernel_exit`.
#[derive(Deserialize)]
struct LossRecord {
    #[serde(default)]
    kernel: BTreeMap<String, u64>,
    #[serde(default)]
    kernel_exec: u64,
    #[serde(default)]
    kernel_fork: u64,
    #[serde(default)]
    kernel_exit: u64,
    #[serde(default)]
    undecodable: u64,
    #[serde(default)]
    queues: Vec<(String, u64)>,
}

impl From<LossRecord> for Loss {
    fn from(r: LossRecord) -> Self {
        let mut kernel = r.kernel;
        for (kind, n) in [
            ("exec", r.kernel_exec),
            ("fork", r.kernel_fork),
            ("exit", r.kernel_exit),
        ] {
            if n > 0 {
                *kernel.entry(kind.to_string()).or_default() += n;
            }
        }
        Loss {
            kernel,
            undecodable: r.undecodable,
            queues: r.queues,
        }
    }
}

/// An alert, as every sink carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Position in this node's alert sequence: strictly increasing, gap-free, kept across
    /// restarts (the journal remembers it), so a subscriber can resume after the last one.
    pub seq: u64,
    /// Unique id (node name + boot-independent random part); stable in every sink.
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// The node that raised it.
    pub node: String,
    /// How bad it is (from `kind`).
    pub severity: Severity,
    /// What it is about.
    pub kind: AlertKind,
    /// One sentence that says what happened, for people.
    pub summary: String,
    /// The container, when the alert is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<AlertContainer>,
    /// The process, for exec and file alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<AlertProcess>,
    /// What the verdict rests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// For `sensor_events_lost`: what was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_written_before_kinds_were_counted_separately_still_read() {
        let old: Loss = serde_json::from_str(
            r#"{"kernel_exec":3,"kernel_fork":0,"kernel_exit":1,"undecodable":2}"#,
        )
        .unwrap();
        assert_eq!(old.kernel.get("exec"), Some(&3));
        assert_eq!(old.kernel.get("fork"), None);
        assert_eq!(old.kernel.get("exit"), Some(&1));
        assert_eq!(old.undecodable, 2);
        let now = serde_json::to_string(&old).unwrap();
        assert_eq!(now, r#"{"kernel":{"exec":3,"exit":1},"undecodable":2}"#);
        assert_eq!(serde_json::from_str::<Loss>(&now).unwrap(), old);
    }

    #[test]
    fn kinds_round_trip_and_carry_their_severity() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert_eq!(AlertKind::ExecModified.severity(), Severity::Critical);
        assert_eq!(AlertKind::ExecNotInImage.severity(), Severity::High);
        assert_eq!(AlertKind::ExecUnverifiable.severity(), Severity::Medium);
        assert!(Severity::Critical > Severity::High && Severity::High > Severity::Medium);
    }

    #[test]
    fn absent_fields_are_omitted() {
        let a = Alert {
            seq: 1,
            id: "n-1".into(),
            time: "2026-01-01T00:00:00Z".into(),
            node: "n".into(),
            severity: Severity::High,
            kind: AlertKind::ExecNotInImage,
            summary: "x".into(),
            container: None,
            process: None,
            evidence: None,
            loss: None,
        };
        let v = serde_json::to_value(&a).unwrap();
        assert!(v.get("container").is_none());
        assert_eq!(v["kind"], "exec_not_in_image");
        assert_eq!(v["severity"], "high");
        let back: Alert = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }
}
