//! The files analyzer's decisions, as pure functions of the event, the image's record at
//! the path and the content read: what a write could mean before anything is read (most
//! writes mean nothing: data files), and what a write or a mapping means once the content
//! is known. No I/O here.

use super::layers::Layer;
use crate::config::FilesConfig;
use crate::image::digest::Digest;
use crate::sensor::WatchedDirs;
use crate::verify::allowlist::glob;
use crate::verify::verdict::ImageRecord;

/// The path rules of `[files]`.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    sensitive: Vec<String>,
    critical: Vec<String>,
    protect: Vec<String>,
}

impl Rules {
    pub fn new(config: &FilesConfig) -> Self {
        Self {
            sensitive: config.sensitive_globs().map(str::to_string).collect(),
            critical: config.critical.clone(),
            protect: config.protect.clone(),
        }
    }

    fn matches(list: &[String], path: &str) -> bool {
        list.iter().any(|g| glob(g, path))
    }

    /// True for image files whose changed content is an alert: executables, shared
    /// libraries and `files.protect` paths.
    pub fn guarded(&self, path: &str, image_mode: u32) -> bool {
        image_mode & 0o111 != 0 || is_library_name(path) || Self::matches(&self.protect, path)
    }
}

/// The [`WatchedDirs`] of `config`: the names of the directories that hold a sensitive or
/// protected path (`etc`, `.ssh`; `fs` for a path at the container's root, whose directory
/// is the layer's own), cut to `max_name` (the kernel's key length, NUL included); `every`
/// when a glob's directory is itself a wildcard, so that no name can do.
pub fn watched_dirs(config: &FilesConfig, max_name: usize) -> WatchedDirs {
    let mut out = WatchedDirs::default();
    for glob in config
        .sensitive_globs()
        .chain(config.protect.iter().map(String::as_str))
    {
        let dir = glob.rsplit_once('/').map_or("", |(d, _)| d);
        let name = dir.rsplit('/').next().unwrap_or("");
        if name.contains(['*', '?']) {
            out.every = true;
            continue;
        }
        // The container's root is the layer directory, `.../snapshots/N/fs`.
        let name = if name.is_empty() { "fs" } else { name };
        let mut cut = name.to_string();
        while cut.len() > max_name - 1 {
            cut.pop();
        }
        if !out.names.contains(&cut) {
            out.names.push(cut);
        }
    }
    out
}

/// `libc.so.6`, `x.so`: the names the dynamic loader maps.
pub fn is_library_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

/// What a write could be about, from its path and mode alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concern {
    /// A `files.sensitive` path.
    Sensitive { critical: bool },
    /// Executable, a library by name, or protected: the content and the image decide.
    Candidate,
}

/// `None` for the writes that cannot alert (data files): they are dropped without a
/// look at the image or the file.
pub fn write_concern(rules: &Rules, path: &str, mode: u32) -> Option<Concern> {
    sensitive_concern(rules, path).or_else(|| {
        (mode & 0o111 != 0 || is_library_name(path) || Rules::matches(&rules.protect, path))
            .then_some(Concern::Candidate)
    })
}

/// A `files.sensitive` path's concern, `None` for any other path. All that a name going
/// away could be about (an image file removed is not a changed one).
pub fn sensitive_concern(rules: &Rules, path: &str) -> Option<Concern> {
    Rules::matches(&rules.sensitive, path).then(|| Concern::Sensitive {
        critical: Rules::matches(&rules.critical, path),
    })
}

/// What the files analyzer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    ImageModified {
        expected: Digest,
        layer: Digest,
        actual: Digest,
    },
    ExecutableCreated {
        actual: Option<Digest>,
    },
    SensitiveWrite {
        critical: bool,
        actual: Option<Digest>,
        /// What the image has at the path, when it has a file there.
        expected: Option<(Digest, Digest)>,
    },
    LibraryModified {
        expected: Digest,
        layer: Digest,
        actual: Digest,
        /// Where the mapped file is: the writable layer, or an image layer changed on the
        /// host.
        in_layer: Layer,
    },
    LibraryNotInImage {
        actual: Digest,
    },
    LibraryFileless {
        actual: Option<Digest>,
        memfd: bool,
    },
}

/// A write in the writable layer, once its content is known (`actual`: `None` when it
/// could not be read or was over the size limit). `image_mode` is the mode the image
/// records at the path, when it has a file there.
pub fn judge_write(
    rules: &Rules,
    concern: Concern,
    path: &str,
    mode: u32,
    record: &ImageRecord,
    image_mode: Option<u32>,
    actual: Option<Digest>,
) -> Option<Finding> {
    let same_as_image = match record {
        ImageRecord::File { sha256, .. } => actual.as_ref() == Some(sha256),
        _ => false,
    };
    if same_as_image {
        // touch, chmod, or content written back as it was: metadata only.
        return None;
    }
    match concern {
        Concern::Sensitive { critical } => Some(Finding::SensitiveWrite {
            critical,
            actual,
            expected: match record {
                ImageRecord::File { sha256, layer } => Some((*sha256, *layer)),
                _ => None,
            },
        }),
        Concern::Candidate => match record {
            ImageRecord::File { sha256, layer } if rules.guarded(path, image_mode.unwrap_or(0)) => {
                actual.map(|actual| Finding::ImageModified {
                    expected: *sha256,
                    layer: *layer,
                    actual,
                })
            }
            ImageRecord::File { .. } | ImageRecord::Missing if mode & 0o111 != 0 => {
                Some(Finding::ExecutableCreated { actual })
            }
            _ => None,
        },
    }
}

/// What a mapping of a file in the container's layers means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapVerdict {
    /// The image's content, or not code: the kernel may stop reporting this inode.
    Clean,
    Alert(Finding),
}

/// A mapping of a file at `path` in `layer`, with its content known: `elf` says whether it
/// is code at all (a data file mapped is nothing to judge).
pub fn judge_map(record: &ImageRecord, layer: Layer, actual: Digest, elf: bool) -> MapVerdict {
    if !elf {
        return MapVerdict::Clean;
    }
    match record {
        ImageRecord::File { sha256, .. } if *sha256 == actual => MapVerdict::Clean,
        ImageRecord::File { sha256, layer: l } => MapVerdict::Alert(Finding::LibraryModified {
            expected: *sha256,
            layer: *l,
            actual,
            in_layer: layer,
        }),
        ImageRecord::NotAFile | ImageRecord::Missing => {
            MapVerdict::Alert(Finding::LibraryNotInImage { actual })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: u8) -> Digest {
        Digest::from_bytes([b; 32])
    }

    fn rules() -> Rules {
        Rules::new(&FilesConfig {
            protect: vec!["/app/config.yaml".into()],
            ..Default::default()
        })
    }

    #[test]
    fn data_writes_need_no_look() {
        let r = rules();
        assert_eq!(write_concern(&r, "/tmp/data.log", 0o100644), None);
        assert_eq!(write_concern(&r, "/var/lib/dpkg/status", 0o100644), None);
        assert_eq!(
            write_concern(&r, "/tmp/x", 0o100755),
            Some(Concern::Candidate)
        );
        assert_eq!(
            write_concern(&r, "/usr/lib/libz.so.1", 0o100644),
            Some(Concern::Candidate)
        );
        assert_eq!(
            write_concern(&r, "/app/config.yaml", 0o100644),
            Some(Concern::Candidate)
        );
        assert_eq!(
            write_concern(&r, "/etc/ld.so.preload", 0o100644),
            Some(Concern::Sensitive { critical: true })
        );
        assert_eq!(
            write_concern(&r, "/etc/cron.d/job", 0o100644),
            Some(Concern::Sensitive { critical: false })
        );
        assert_eq!(
            write_concern(&r, "/home/app/.ssh/authorized_keys", 0o100600),
            Some(Concern::Sensitive { critical: false })
        );
    }

    #[test]
    fn the_kernel_watches_the_directories_of_sensitive_and_protected_paths() {
        let w = watched_dirs(&FilesConfig::default(), 32);
        for name in [
            "etc",
            ".ssh",
            "ld.so.conf.d",
            "sudoers.d",
            "cron.d",
            "cron",
            "crontabs",
            "profile.d",
        ] {
            assert!(w.names.iter().any(|n| n == name), "{name}: {w:?}");
        }
        assert!(!w.every, "{w:?}");
        let c = FilesConfig {
            protect: vec!["/app.yaml".into(), "/srv/*/config".into()],
            ..Default::default()
        };
        let w = watched_dirs(&c, 32);
        assert!(w.names.iter().any(|n| n == "fs"), "{w:?}");
        assert!(w.every, "a wildcard directory watches every write");
        let c = FilesConfig {
            protect: vec![format!("/{}/x", "d".repeat(40))],
            ..Default::default()
        };
        assert!(watched_dirs(&c, 32).names.iter().any(|n| n.len() == 31));
    }

    #[test]
    fn writes_are_judged_by_content_against_the_image() {
        let r = rules();
        let image = ImageRecord::File {
            sha256: d(1),
            layer: d(9),
        };
        let exe = 0o100755;
        // touch or chmod of an image binary: same content.
        let j = |concern, path, mode, rec: &ImageRecord, im, actual| {
            judge_write(&r, concern, path, mode, rec, im, actual)
        };
        assert_eq!(
            j(
                Concern::Candidate,
                "/bin/ls",
                exe,
                &image,
                Some(exe),
                Some(d(1))
            ),
            None
        );
        assert_eq!(
            j(
                Concern::Candidate,
                "/bin/ls",
                exe,
                &image,
                Some(exe),
                Some(d(2))
            ),
            Some(Finding::ImageModified {
                expected: d(1),
                layer: d(9),
                actual: d(2)
            })
        );
        assert_eq!(
            j(
                Concern::Candidate,
                "/tmp/x",
                exe,
                &ImageRecord::Missing,
                None,
                Some(d(3))
            ),
            Some(Finding::ExecutableCreated { actual: Some(d(3)) })
        );
        // An image data file made executable with new content is a new executable.
        assert_eq!(
            j(
                Concern::Candidate,
                "/etc/motd",
                exe,
                &image,
                Some(0o100644),
                Some(d(4))
            ),
            Some(Finding::ExecutableCreated { actual: Some(d(4)) })
        );
        // A library without exec bits that the image lacks: left to the mapping check.
        assert_eq!(
            j(
                Concern::Candidate,
                "/tmp/x.so",
                0o100644,
                &ImageRecord::Missing,
                None,
                Some(d(5))
            ),
            None
        );
        let sensitive = Concern::Sensitive { critical: false };
        assert_eq!(
            j(
                sensitive,
                "/etc/passwd",
                0o100644,
                &image,
                Some(0o100644),
                Some(d(1))
            ),
            None,
            "written back unchanged"
        );
        assert_eq!(
            j(
                sensitive,
                "/etc/passwd",
                0o100644,
                &image,
                Some(0o100644),
                Some(d(6))
            ),
            Some(Finding::SensitiveWrite {
                critical: false,
                actual: Some(d(6)),
                expected: Some((d(1), d(9)))
            })
        );
    }

    #[test]
    fn mappings_of_code_are_judged_and_data_is_clean() {
        let image = ImageRecord::File {
            sha256: d(1),
            layer: d(9),
        };
        assert_eq!(
            judge_map(&image, Layer::Lower(0), d(1), true),
            MapVerdict::Clean
        );
        assert_eq!(
            judge_map(&ImageRecord::Missing, Layer::Upper, d(7), false),
            MapVerdict::Clean
        );
        assert_eq!(
            judge_map(&image, Layer::Lower(1), d(2), true),
            MapVerdict::Alert(Finding::LibraryModified {
                expected: d(1),
                layer: d(9),
                actual: d(2),
                in_layer: Layer::Lower(1)
            })
        );
        assert_eq!(
            judge_map(&ImageRecord::Missing, Layer::Upper, d(7), true),
            MapVerdict::Alert(Finding::LibraryNotInImage { actual: d(7) })
        );
    }
}
