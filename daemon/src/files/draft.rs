//! Turning a finding of the files analyzer into an alert: kind, severity, one sentence,
//! and the evidence (expected and actual digests, layer, where the file is, the process
//! with its ancestry). Pure apart from reading the acting process's argv from `/proc`.

use super::judge::Finding;
use super::layers::{Layer, Located};
use crate::alert::{AlertDraft, AlertKind, Evidence, Severity};
use crate::identity::ContainerInfo;
use crate::process::Forebear;
use crate::sensor::{FileEvent, FileOp};

/// The alert kind of a finding.
pub fn kind_of(f: &Finding) -> AlertKind {
    match f {
        Finding::ImageModified { .. } => AlertKind::FileImageModified,
        Finding::ExecutableCreated { .. } => AlertKind::FileExecutableCreated,
        Finding::SensitiveWrite { .. } => AlertKind::FileSensitiveWrite,
        Finding::LibraryModified { .. } => AlertKind::LibraryModified,
        Finding::LibraryNotInImage { .. } => AlertKind::LibraryNotInImage,
        Finding::LibraryFileless { .. } => AlertKind::LibraryFileless,
    }
}

/// The digest the alert reports as what is there now.
pub fn actual_of(f: &Finding) -> Option<crate::image::digest::Digest> {
    match f {
        Finding::ImageModified { actual, .. }
        | Finding::LibraryModified { actual, .. }
        | Finding::LibraryNotInImage { actual } => Some(*actual),
        Finding::ExecutableCreated { actual }
        | Finding::SensitiveWrite { actual, .. }
        | Finding::LibraryFileless { actual, .. } => *actual,
    }
}

/// Everything an alert about a file says, besides the finding.
pub struct Subject<'a> {
    pub event: &'a FileEvent,
    pub container: &'a ContainerInfo,
    pub manifest: Option<String>,
    /// The acting process first, then its parents.
    pub ancestry: Vec<Forebear>,
    /// Where the file is, when it is in the container's layers (not for a memfd).
    pub located: Option<&'a Located>,
    /// Said after the reason (a writer still busy, a process gone before it was read).
    pub note: Option<String>,
}

fn what(f: &Finding, op: FileOp, path: &str, image: &str) -> String {
    match f {
        Finding::SensitiveWrite { .. } if op == FileOp::Unlinked => {
            format!("{path}, a sensitive file, was removed or renamed away")
        }
        Finding::SensitiveWrite { .. } if op == FileOp::Linked => {
            format!("{path}, a sensitive file, was replaced by a rename or a link")
        }
        Finding::ImageModified { .. } if op == FileOp::Linked => format!(
            "{path} was replaced in the container by a rename or a link: it no longer has \
             {image}'s content"
        ),
        Finding::ImageModified { .. } => {
            format!("{path} was changed in the container: it no longer has {image}'s content")
        }
        Finding::ExecutableCreated { actual: _ } => {
            format!("{path} is a new executable file that {image} does not have")
        }
        Finding::SensitiveWrite { expected, .. } => match expected {
            Some(_) => format!("{path}, a sensitive file, was rewritten with new content"),
            None => format!("{path}, a sensitive file, was created"),
        },
        Finding::LibraryModified { in_layer, .. } => match in_layer {
            Layer::Upper => {
                format!("{path} was mapped executable with content changed in the container")
            }
            Layer::Lower(_) => format!(
                "{path} was mapped executable from an image layer whose file was changed \
                 on the host"
            ),
        },
        Finding::LibraryNotInImage { .. } => {
            format!("{path} was mapped executable, and {image} has no such file")
        }
        Finding::LibraryFileless { memfd: true, .. } => {
            format!("{path} (a memfd) was mapped executable: code with no file behind it")
        }
        Finding::LibraryFileless { .. } => {
            format!("{path} was mapped executable after its last link was removed")
        }
    }
}

/// The alert for `finding`.
pub fn draft(finding: &Finding, s: Subject<'_>) -> AlertDraft {
    let kind = kind_of(finding);
    let path = s
        .located
        .map(|l| l.path.clone())
        .or_else(|| s.event.host_path.clone())
        .unwrap_or_else(|| format!("inode {}", s.event.file.ino));
    let image = s.container.image.as_deref().unwrap_or("its image");
    let severity = match finding {
        Finding::SensitiveWrite { critical: true, .. } => Some(Severity::Critical),
        _ => None,
    };
    let (expected_sha256, expected_layer) = match finding {
        Finding::ImageModified {
            expected, layer, ..
        }
        | Finding::LibraryModified {
            expected, layer, ..
        } => (Some(expected.hex()), Some(layer.to_string())),
        Finding::SensitiveWrite {
            expected: Some((d, l)),
            ..
        } => (Some(d.hex()), Some(l.to_string())),
        _ => (None, None),
    };
    let mut reason = what(finding, s.event.op, &path, image);
    if let Some(note) = &s.note {
        reason.push_str(&format!(" ({note})"));
    }
    let op = match s.event.op {
        FileOp::Write => "write",
        FileOp::Map => "map",
        FileOp::Linked => "linked",
        FileOp::Unlinked => "unlinked",
    };
    AlertDraft {
        kind,
        severity,
        summary: format!(
            "{}: {path} in {} ({image})",
            kind.as_str(),
            if s.container.id.is_empty() {
                format!("mount namespace {}", s.event.process.mnt_ns)
            } else {
                format!("container {}", s.container.id)
            }
        ),
        container: s.container.alert_container(s.manifest),
        process: Some(crate::process::file_actor(s.event, s.ancestry.clone())),
        evidence: Some(Evidence {
            path: Some(path),
            expected_sha256,
            expected_layer,
            actual_sha256: actual_of(finding).map(|d| d.hex()),
            upper_layer: s.located.is_some_and(|l| l.layer == Layer::Upper),
            file_op: Some(op.into()),
            // A name that went away has no mode left to show.
            file_mode: (s.event.mode != 0).then(|| format!("{:04o}", s.event.mode & 0o7777)),
            host_path: s.located.map(|l| l.host.display().to_string()),
            path_source: Some(
                if s.event.container_path.is_some() && !s.event.path_from_kernel {
                    "caller"
                } else {
                    "kernel"
                }
                .into(),
            ),
            reason,
            ..Default::default()
        }),
        loss: None,
    }
}
