//! The exec verdict: a pure function of what ran, what the verified image records, and
//! the allowlist. No I/O here, so every rule is unit-tested.

use crate::alert::{AlertKind, Severity};
use serde::Serialize;

/// What the image says about one path, as far as the verdict needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRecord {
    /// A regular file with this sha256 (hex), put there by this layer.
    File {
        sha256: String,
        layer: String,
    },
    /// The path exists but is not a regular file (dir, device) or has no content hash.
    NotAFile,
    Missing,
}

/// The state of the container's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    Verified,
    /// Verification failed: nothing from the image is trusted.
    Untrusted {
        reason: String,
    },
    /// The image could not be indexed (unknown to containerd, containerd down, no image
    /// reference on the container); the reason says which.
    Unavailable {
        reason: String,
    },
}

impl ImageState {
    /// As `ContainerService` reports it (`image_verdict`).
    pub fn name(&self) -> &'static str {
        match self {
            ImageState::Verified => "verified",
            ImageState::Untrusted { .. } => "untrusted",
            ImageState::Unavailable { .. } => "unverifiable",
        }
    }
}

/// Why the content of a file could not be hashed. The kinds the verdict tells apart: a
/// file that is not a regular file, too large, unnamed by the event or too slow to read
/// is `unverifiable` whatever the image says; any other failure to read a path the image
/// does not have is still `not_in_image`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("{via} is {what}, not a regular file: not read")]
    NotRegular { via: String, what: &'static str },
    #[error("{path} is {size} bytes, over verify.max_file_bytes ({limit}): not hashed")]
    TooLarge { path: String, size: u64, limit: u64 },
    /// The event names no file for sure (a name the sensor cut) and `/proc` could not tell.
    #[error("{0}")]
    PathUnknown(String),
    #[error("reading {via} did not finish within verify.inspect_timeout_ms ({detail})")]
    TimedOut { via: String, detail: String },
    /// No such file (in any live root of the container).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Failed(String),
}

impl Unreadable {
    /// True when the verdict cannot say anything about the content, even for a path the
    /// image lacks.
    fn is_unjudgeable(&self) -> bool {
        matches!(
            self,
            Self::NotRegular { .. }
                | Self::TooLarge { .. }
                | Self::PathUnknown(_)
                | Self::TimedOut { .. }
        )
    }
}

/// One file that has to be checked: the executed binary, or the script it interprets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// The path inside the container.
    pub path: String,
    /// sha256 hex of the content that ran, or why it could not be read.
    pub actual: Result<String, Unreadable>,
    pub memfd: bool,
    pub deleted: bool,
    pub upper_layer: bool,
    /// The content is a known container runtime binary (runc's memfd self-copy).
    pub runtime: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ExecVerdict {
    Verified,
    Modified {
        expected: String,
        layer: String,
        actual: String,
    },
    NotInImage {
        actual: Option<String>,
    },
    Fileless {
        actual: Option<String>,
    },
    Deleted {
        actual: Option<String>,
    },
    Unverifiable {
        reason: String,
    },
    UntrustedImage {
        reason: String,
    },
}

impl ExecVerdict {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Modified { .. } => "modified",
            Self::NotInImage { .. } => "not_in_image",
            Self::Fileless { .. } => "fileless",
            Self::Deleted { .. } => "deleted",
            Self::Unverifiable { .. } => "unverifiable",
            Self::UntrustedImage { .. } => "untrusted_image",
        }
    }

    /// The alert this verdict raises; `None` for `verified`.
    pub fn alert_kind(&self) -> Option<AlertKind> {
        Some(match self {
            Self::Verified => return None,
            Self::Modified { .. } => AlertKind::ExecModified,
            Self::NotInImage { .. } => AlertKind::ExecNotInImage,
            Self::Fileless { .. } => AlertKind::ExecFileless,
            Self::Deleted { .. } => AlertKind::ExecDeleted,
            Self::Unverifiable { .. } => AlertKind::ExecUnverifiable,
            Self::UntrustedImage { .. } => AlertKind::ImageUntrusted,
        })
    }

    /// Severity for ordering "the worse verdict wins"; verified is below everything.
    pub fn rank(&self) -> (u8, u8) {
        match self.alert_kind() {
            None => (0, 0),
            Some(k) => (
                1 + k.severity() as u8,
                // Among equal severities, the more specific evidence first.
                match self {
                    Self::Modified { .. } => 4,
                    Self::UntrustedImage { .. } => 3,
                    Self::Fileless { .. } => 2,
                    Self::NotInImage { .. } => 2,
                    _ => 1,
                },
            ),
        }
    }

    pub fn severity(&self) -> Option<Severity> {
        self.alert_kind().map(|k| k.severity())
    }

    pub fn actual_sha256(&self) -> Option<&str> {
        match self {
            Self::Modified { actual, .. } => Some(actual),
            Self::NotInImage { actual } | Self::Fileless { actual } | Self::Deleted { actual } => {
                actual.as_deref()
            }
            _ => None,
        }
    }
}

/// Judges one file. Order matters: how the file ran (memfd, deleted) outranks what the
/// image says, and an untrusted image makes every image comparison meaningless.
pub fn judge(file: &FileFacts, image: &ImageState, record: &ImageRecord) -> ExecVerdict {
    let actual = file.actual.as_ref().ok().cloned();
    if file.memfd {
        return if file.runtime {
            ExecVerdict::Verified
        } else {
            ExecVerdict::Fileless { actual }
        };
    }
    if file.deleted {
        return ExecVerdict::Deleted { actual };
    }
    match image {
        ImageState::Untrusted { reason } => {
            return ExecVerdict::UntrustedImage {
                reason: reason.clone(),
            }
        }
        ImageState::Unavailable { reason } => {
            return ExecVerdict::Unverifiable {
                reason: format!("image not indexed: {reason}"),
            }
        }
        ImageState::Verified => {}
    }
    let actual = match &file.actual {
        Ok(a) => a.clone(),
        Err(why) if why.is_unjudgeable() => {
            let image = match record {
                ImageRecord::Missing => "; the image has no file at this path",
                ImageRecord::NotAFile => "; the image has no regular file at this path",
                ImageRecord::File { .. } => "",
            };
            return ExecVerdict::Unverifiable {
                reason: format!("{}: {why}{image}", file.path),
            };
        }
        Err(why) => {
            // A file the image does not have is an alert even when it cannot be read.
            return match record {
                ImageRecord::Missing => ExecVerdict::NotInImage { actual: None },
                _ => ExecVerdict::Unverifiable {
                    reason: format!("cannot read {}: {why}", file.path),
                },
            };
        }
    };
    match record {
        ImageRecord::File { sha256, .. } if *sha256 == actual => ExecVerdict::Verified,
        ImageRecord::File { sha256, layer } => ExecVerdict::Modified {
            expected: sha256.clone(),
            layer: layer.clone(),
            actual,
        },
        ImageRecord::NotAFile | ImageRecord::Missing => ExecVerdict::NotInImage {
            actual: Some(actual),
        },
    }
}

/// The worse of two verdicts (script vs interpreter); ties keep the first.
pub fn worse(a: ExecVerdict, b: ExecVerdict) -> ExecVerdict {
    if b.rank() > a.rank() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(actual: &str) -> FileFacts {
        FileFacts {
            path: "/bin/x".into(),
            actual: Ok(actual.into()),
            memfd: false,
            deleted: false,
            upper_layer: false,
            runtime: false,
        }
    }
    fn rec(sha: &str) -> ImageRecord {
        ImageRecord::File {
            sha256: sha.into(),
            layer: "sha256:l1".into(),
        }
    }

    #[test]
    fn same_content_is_verified_even_after_copy_up() {
        let mut f = facts("aa");
        f.upper_layer = true; // chmod copy-up: content unchanged
        assert_eq!(
            judge(&f, &ImageState::Verified, &rec("aa")),
            ExecVerdict::Verified
        );
    }

    #[test]
    fn other_content_is_modified_with_both_digests() {
        let v = judge(&facts("bb"), &ImageState::Verified, &rec("aa"));
        assert_eq!(
            v,
            ExecVerdict::Modified {
                expected: "aa".into(),
                layer: "sha256:l1".into(),
                actual: "bb".into()
            }
        );
        assert_eq!(v.alert_kind(), Some(AlertKind::ExecModified));
    }

    #[test]
    fn missing_paths_and_non_files_are_not_in_image() {
        assert!(matches!(
            judge(&facts("bb"), &ImageState::Verified, &ImageRecord::Missing),
            ExecVerdict::NotInImage { actual: Some(_) }
        ));
        assert!(matches!(
            judge(&facts("bb"), &ImageState::Verified, &ImageRecord::NotAFile),
            ExecVerdict::NotInImage { .. }
        ));
        let mut gone = facts("");
        gone.actual = Err(Unreadable::Failed("process exited and file removed".into()));
        assert_eq!(
            judge(&gone, &ImageState::Verified, &ImageRecord::Missing),
            ExecVerdict::NotInImage { actual: None }
        );
        assert!(matches!(
            judge(&gone, &ImageState::Verified, &rec("aa")),
            ExecVerdict::Unverifiable { .. }
        ));
    }

    #[test]
    fn files_that_cannot_be_judged_are_unverifiable_with_the_reason() {
        let cases = [
            Unreadable::NotRegular {
                via: "/proc/1/root/tmp/ff".into(),
                what: "a FIFO",
            },
            Unreadable::TooLarge {
                path: "/proc/1/exe".into(),
                size: 2 << 30,
                limit: 1 << 30,
            },
            Unreadable::PathUnknown("the script argument is cut".into()),
            Unreadable::TimedOut {
                via: "/proc/1/exe".into(),
                detail: "0 bytes read".into(),
            },
        ];
        for why in cases {
            let mut f = facts("");
            f.actual = Err(why.clone());
            for record in [ImageRecord::Missing, rec("aa")] {
                let v = judge(&f, &ImageState::Verified, &record);
                let ExecVerdict::Unverifiable { reason } = &v else {
                    panic!("{why:?} with {record:?}: {v:?}");
                };
                assert!(reason.contains(&why.to_string()), "{reason}");
                if record == ImageRecord::Missing {
                    assert!(reason.contains("the image has no file"), "{reason}");
                }
            }
        }
    }

    #[test]
    fn memfd_is_fileless_unless_it_is_the_runtime() {
        let mut f = facts("rr");
        f.memfd = true;
        assert!(matches!(
            judge(&f, &ImageState::Verified, &ImageRecord::Missing),
            ExecVerdict::Fileless { .. }
        ));
        f.runtime = true;
        assert_eq!(
            judge(&f, &ImageState::Verified, &ImageRecord::Missing),
            ExecVerdict::Verified
        );
    }

    #[test]
    fn deleted_and_untrusted_and_unavailable() {
        let mut f = facts("aa");
        f.deleted = true;
        assert!(matches!(
            judge(&f, &ImageState::Verified, &rec("aa")),
            ExecVerdict::Deleted { .. }
        ));
        let untrusted = ImageState::Untrusted {
            reason: "layer blob mismatch".into(),
        };
        assert!(matches!(
            judge(&facts("aa"), &untrusted, &rec("aa")),
            ExecVerdict::UntrustedImage { .. }
        ));
        let unavailable = ImageState::Unavailable {
            reason: "containerd down".into(),
        };
        assert!(matches!(
            judge(&facts("aa"), &unavailable, &rec("aa")),
            ExecVerdict::Unverifiable { .. }
        ));
    }

    #[test]
    fn the_worse_verdict_wins() {
        let ok = ExecVerdict::Verified;
        let drop = ExecVerdict::NotInImage { actual: None };
        let tamper = ExecVerdict::Modified {
            expected: "a".into(),
            layer: "l".into(),
            actual: "b".into(),
        };
        assert_eq!(worse(ok.clone(), drop.clone()), drop);
        assert_eq!(worse(drop.clone(), ok.clone()), drop);
        assert_eq!(worse(drop, tamper.clone()), tamper);
    }
}
