//! The exec verdict: a pure function of what ran, what the verified image records, and
//! the allowlist. No I/O here, so every rule is unit-tested.

use crate::alert::AlertKind;
use crate::image::digest::Digest;
use serde::{Serialize, Serializer};

/// What the image says about one path, as far as the verdict needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRecord {
    /// A regular file with this content, put there by this layer (blob digest).
    File {
        sha256: Digest,
        layer: Digest,
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
    /// The content that ran, or why it could not be read.
    pub actual: Result<Digest, Unreadable>,
    pub memfd: bool,
    pub deleted: bool,
    pub upper_layer: bool,
    /// The content is a known container runtime binary (runc's memfd self-copy).
    pub runtime: bool,
}

/// Content digests appear as bare hex in verdict records (as `sha256sum` prints them),
/// layer digests as `sha256:...` (as OCI names blobs).
fn hex<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.hex())
}

fn hex_opt<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.hex()),
        None => s.serialize_none(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ExecVerdict {
    Verified,
    Modified {
        #[serde(serialize_with = "hex")]
        expected: Digest,
        layer: Digest,
        #[serde(serialize_with = "hex")]
        actual: Digest,
    },
    NotInImage {
        #[serde(serialize_with = "hex_opt")]
        actual: Option<Digest>,
    },
    Fileless {
        #[serde(serialize_with = "hex_opt")]
        actual: Option<Digest>,
    },
    Deleted {
        #[serde(serialize_with = "hex_opt")]
        actual: Option<Digest>,
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

    /// The content that ran, when it was read.
    pub fn actual(&self) -> Option<Digest> {
        match self {
            Self::Modified { actual, .. } => Some(*actual),
            Self::NotInImage { actual } | Self::Fileless { actual } | Self::Deleted { actual } => {
                *actual
            }
            _ => None,
        }
    }
}

/// Judges one file. Order matters: how the file ran (memfd, deleted) outranks what the
/// image says, and an untrusted image makes every image comparison meaningless.
pub fn judge(file: &FileFacts, image: &ImageState, record: &ImageRecord) -> ExecVerdict {
    let actual = file.actual.as_ref().ok().copied();
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
        Ok(a) => *a,
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
            expected: *sha256,
            layer: *layer,
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

    /// The digest of a short name, for readable tests.
    fn d(name: &str) -> Digest {
        Digest::of(name.as_bytes())
    }

    fn facts(actual: &str) -> FileFacts {
        FileFacts {
            path: "/bin/x".into(),
            actual: Ok(d(actual)),
            memfd: false,
            deleted: false,
            upper_layer: false,
            runtime: false,
        }
    }
    fn rec(sha: &str) -> ImageRecord {
        ImageRecord::File {
            sha256: d(sha),
            layer: d("l1"),
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
                expected: d("aa"),
                layer: d("l1"),
                actual: d("bb")
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
    fn records_show_content_as_hex_and_layers_as_digests() {
        let v = ExecVerdict::Modified {
            expected: d("a"),
            layer: d("l"),
            actual: d("b"),
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["verdict"], "modified");
        assert_eq!(json["expected"], d("a").hex());
        assert_eq!(json["actual"], d("b").hex());
        assert_eq!(json["layer"], d("l").to_string());
        let json = serde_json::to_value(ExecVerdict::NotInImage { actual: None }).unwrap();
        assert_eq!(json["actual"], serde_json::Value::Null);
    }

    #[test]
    fn the_worse_verdict_wins() {
        let ok = ExecVerdict::Verified;
        let drop = ExecVerdict::NotInImage { actual: None };
        let tamper = ExecVerdict::Modified {
            expected: d("a"),
            layer: d("l"),
            actual: d("b"),
        };
        assert_eq!(worse(ok.clone(), drop.clone()), drop);
        assert_eq!(worse(drop.clone(), ok.clone()), drop);
        assert_eq!(worse(drop, tamper.clone()), tamper);
    }
}
