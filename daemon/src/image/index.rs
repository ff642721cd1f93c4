//! The merged view of an image: what a container started from it sees at each path, with the
//! content hash of every regular file.
//!
//! Owns: applying layers bottom to top with overlay semantics (whiteouts and opaque markers
//! hide only lower layers; later entries replace earlier ones; a non-directory replaces a whole
//! subtree; directories merge), resolving hard links to their content, and looking paths up
//! with symlinks resolved inside the image (bounded hops, `..` clamped at the root). Pure: no
//! I/O. Never resolves anything against the host filesystem.
//!
//! Parent directories are taken lexically, as containerd's overlay applier writes each layer
//! into its own upper directory: a layer that adds `lib/x` over a lower `lib -> usr/lib`
//! symlink gets a real `lib/` directory that hides the symlink, exactly as overlayfs then
//! shows it.

use std::collections::BTreeMap;
use std::fmt;

use super::digest::Digest;
use super::layer::{Change, LayerFiles};
use super::path::{ancestors, is_within};
use super::tar::{TarEntry, TarKind};

/// Symlinks followed in one lookup before giving up (Linux's own limit is 40).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// Mode of directories a layer implies without listing (containerd and moby use 0755).
pub const IMPLIED_DIR_MODE: u32 = 0o755;

/// What a path is in the merged image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file (with a content hash).
    File,
    /// A directory.
    Dir,
    /// Target as written in the layer; resolved inside the image by `LayerIndex::lookup`.
    Symlink {
        /// The target, verbatim.
        target: Box<str>,
    },
    /// A hard link; `FileEntry::sha256`/`size`/`mode` are those of the file it links to.
    HardLink {
        /// The path it links to (canonical).
        target: Box<str>,
    },
    /// Devices and fifos.
    Other,
}

/// One path of the merged image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileEntry {
    /// Content hash of regular files and hard links; `None` for everything else.
    pub sha256: Option<Digest>,
    /// Bytes of content.
    pub size: u64,
    /// Permission bits plus setuid/setgid/sticky.
    pub mode: u32,
    /// What the path is.
    pub kind: EntryKind,
    /// The layer (blob digest) that put this entry here.
    pub layer: Digest,
}

impl FileEntry {
    /// A regular file (or a hard link to one) with any execute bit.
    pub fn is_executable(&self) -> bool {
        self.sha256.is_some() && self.mode & 0o111 != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeProblem {
    #[error("hard link target {target:?} does not exist")]
    HardLinkTargetMissing { target: String },
    #[error("hard link target {target:?} is a directory")]
    HardLinkToDirectory { target: String },
    #[error("parent {parent:?} is not a directory in the same layer")]
    ParentNotDirectory { parent: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layer {layer_number} ({layer}): entry {path:?}: {problem}")]
pub struct MergeError {
    /// 1-based, bottom layer first.
    pub layer_number: usize,
    pub layer: Digest,
    pub path: String,
    pub problem: MergeProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no such file or directory")]
    NotFound,
    #[error("{path:?} is not a directory")]
    NotADirectory { path: String },
    #[error("more than {MAX_SYMLINK_HOPS} symlinks (a loop?)")]
    TooManyLinks,
}

/// Per-image totals for summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    pub entries: usize,
    /// Regular files, hard links included.
    pub files: usize,
    pub executables: usize,
    pub directories: usize,
    pub symlinks: usize,
}

/// The merged, verified file index of one image.
#[derive(Clone, PartialEq, Eq)]
pub struct LayerIndex {
    /// Canonical paths (see `path`) to entries; the root has no entry.
    entries: BTreeMap<Box<str>, FileEntry>,
    /// Layer blob digests, bottom first.
    layers: Vec<Digest>,
}

impl fmt::Debug for LayerIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerIndex")
            .field("layers", &self.layers)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl LayerIndex {
    /// Applies `layers` bottom to top.
    pub fn merge<'a>(layers: impl IntoIterator<Item = &'a LayerFiles>) -> Result<Self, MergeError> {
        let mut index = Self {
            entries: BTreeMap::new(),
            layers: Vec::new(),
        };
        for layer in layers {
            index.apply(layer)?;
        }
        Ok(index)
    }

    fn apply(&mut self, layer: &LayerFiles) -> Result<(), MergeError> {
        self.layers.push(layer.blob);
        let layer_number = self.layers.len();
        // Whiteouts and opaque markers hide what lower layers left; the layer's own entries
        // are unaffected whatever their order in the archive.
        for change in &layer.changes {
            match change {
                Change::Whiteout(path) => self.remove_tree(path, true),
                Change::Opaque(dir) => self.remove_tree(dir, false),
                Change::Add(_) => {}
            }
        }
        for change in &layer.changes {
            if let Change::Add(entry) = change {
                self.add(entry, layer.blob).map_err(|problem| MergeError {
                    layer_number,
                    layer: layer.blob,
                    path: entry.path.clone(),
                    problem,
                })?;
            }
        }
        Ok(())
    }

    /// Removes everything below `path`, and `path` itself when `including_self`.
    fn remove_tree(&mut self, path: &str, including_self: bool) {
        if path.is_empty() {
            self.entries.clear();
            return;
        }
        if including_self {
            self.entries.remove(path);
        }
        let below = format!("{path}/");
        // '0' is the character after '/', so this range is exactly the keys under `path/`.
        let end = format!("{path}0");
        let doomed: Vec<Box<str>> = self
            .entries
            .range::<str, _>((
                std::ops::Bound::Included(below.as_str()),
                std::ops::Bound::Excluded(end.as_str()),
            ))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            self.entries.remove(&key);
        }
    }

    fn add(&mut self, entry: &TarEntry, layer: Digest) -> Result<(), MergeProblem> {
        for parent in ancestors(&entry.path) {
            match self.entries.get(parent) {
                Some(existing) if existing.kind == EntryKind::Dir => {}
                // A non-directory put there by this same layer: extraction would fail.
                Some(existing) if existing.layer == layer => {
                    return Err(MergeProblem::ParentNotDirectory {
                        parent: parent.to_string(),
                    });
                }
                // Missing, or a lower layer's non-directory: the applier creates the directory
                // in this layer, which hides whatever was below.
                _ => {
                    self.entries.insert(
                        parent.into(),
                        FileEntry {
                            sha256: None,
                            size: 0,
                            mode: IMPLIED_DIR_MODE,
                            kind: EntryKind::Dir,
                            layer,
                        },
                    );
                }
            }
        }

        let new = match &entry.kind {
            TarKind::File => FileEntry {
                sha256: entry.sha256,
                size: entry.size,
                mode: entry.mode,
                kind: EntryKind::File,
                layer,
            },
            TarKind::Dir => FileEntry {
                sha256: None,
                size: 0,
                mode: entry.mode,
                kind: EntryKind::Dir,
                layer,
            },
            TarKind::Symlink(target) => FileEntry {
                sha256: None,
                size: 0,
                mode: entry.mode,
                kind: EntryKind::Symlink {
                    target: target.as_str().into(),
                },
                layer,
            },
            TarKind::HardLink(target) => self.hard_link(target, layer)?,
            TarKind::CharDevice | TarKind::BlockDevice | TarKind::Fifo => FileEntry {
                sha256: None,
                size: 0,
                mode: entry.mode,
                kind: EntryKind::Other,
                layer,
            },
        };

        match self.entries.get_mut(entry.path.as_str()) {
            // Directory over directory: metadata changes, contents merge.
            Some(existing) if existing.kind == EntryKind::Dir && new.kind == EntryKind::Dir => {
                *existing = new;
            }
            // Anything else there goes, subtree and all. (An absent path has no subtree:
            // every entry's ancestors exist.)
            Some(_) => {
                self.remove_tree(&entry.path, true);
                self.entries.insert(entry.path.as_str().into(), new);
            }
            None => {
                self.entries.insert(entry.path.as_str().into(), new);
            }
        }
        Ok(())
    }

    /// A hard link shares its target's inode: same content, same mode. A link to a symlink is
    /// that symlink.
    fn hard_link(&self, target: &str, layer: Digest) -> Result<FileEntry, MergeProblem> {
        let linked =
            self.entries
                .get(target)
                .ok_or_else(|| MergeProblem::HardLinkTargetMissing {
                    target: target.to_string(),
                })?;
        let kind = match &linked.kind {
            EntryKind::Dir => {
                return Err(MergeProblem::HardLinkToDirectory {
                    target: target.to_string(),
                })
            }
            EntryKind::File | EntryKind::HardLink { .. } => EntryKind::HardLink {
                target: target.into(),
            },
            other => other.clone(),
        };
        Ok(FileEntry {
            kind,
            layer,
            ..linked.clone()
        })
    }

    /// The entry a process opening `path` gets: every symlink resolved, the final one too.
    pub fn lookup(&self, path: &str) -> Option<&FileEntry> {
        self.resolve(path, true).ok().map(|(_, entry)| entry)
    }

    /// Like `lookup`, but a final symlink is returned itself (like `lstat`).
    pub fn lookup_no_follow(&self, path: &str) -> Option<&FileEntry> {
        self.resolve(path, false).ok().map(|(_, entry)| entry)
    }

    /// Resolves `path` (absolute or relative, both from the image root) to its canonical path
    /// and entry. `..` at the root stays at the root; absolute symlink targets restart at the
    /// image root, never the host's.
    pub fn resolve(
        &self,
        path: &str,
        follow_final: bool,
    ) -> Result<(String, &FileEntry), LookupError> {
        fn push_components<'a>(stack: &mut Vec<&'a str>, path: &'a str) {
            stack.extend(path.split('/').filter(|c| !c.is_empty() && *c != ".").rev());
        }
        let mut pending: Vec<&str> = Vec::new();
        push_components(&mut pending, path);
        let mut resolved = String::new();
        // Lengths of `resolved` before each component, to pop on `..`.
        let mut marks: Vec<usize> = Vec::new();
        let mut found: Option<&FileEntry> = None;
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            if component == ".." {
                if let Some(mark) = marks.pop() {
                    resolved.truncate(mark);
                }
                found = self.entries.get(resolved.as_str());
                continue;
            }
            let mark = resolved.len();
            if !resolved.is_empty() {
                resolved.push('/');
            }
            resolved.push_str(component);
            let entry = self
                .entries
                .get(resolved.as_str())
                .ok_or(LookupError::NotFound)?;
            let is_last = pending.is_empty();
            match &entry.kind {
                EntryKind::Symlink { target } if !is_last || follow_final => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(LookupError::TooManyLinks);
                    }
                    resolved.truncate(mark);
                    if target.starts_with('/') {
                        resolved.clear();
                        marks.clear();
                    }
                    push_components(&mut pending, target);
                    found = None;
                }
                EntryKind::Dir => {
                    marks.push(mark);
                    found = Some(entry);
                }
                _ if is_last => {
                    marks.push(mark);
                    found = Some(entry);
                }
                _ => {
                    return Err(LookupError::NotADirectory { path: resolved });
                }
            }
        }
        // The root itself (or a path that resolved back to it) has no entry.
        found
            .map(|entry| (resolved, entry))
            .ok_or(LookupError::NotFound)
    }

    /// Entries in path order, paths canonical (no leading slash).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FileEntry)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    /// Paths in the index.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for an image with no files.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Layer blob digests, bottom first.
    pub fn layers(&self) -> &[Digest] {
        &self.layers
    }

    /// Whether a path lies inside `dir` in canonical form (exposed for callers that filter).
    pub fn is_within(path: &str, dir: &str) -> bool {
        is_within(path, dir)
    }

    /// Counts by kind.
    pub fn stats(&self) -> IndexStats {
        let mut stats = IndexStats {
            entries: self.entries.len(),
            ..IndexStats::default()
        };
        for entry in self.entries.values() {
            match entry.kind {
                EntryKind::File | EntryKind::HardLink { .. } if entry.sha256.is_some() => {
                    stats.files += 1;
                    if entry.is_executable() {
                        stats.executables += 1;
                    }
                }
                EntryKind::Dir => stats.directories += 1,
                EntryKind::Symlink { .. } => stats.symlinks += 1,
                _ => {}
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::super::layer::scan_in_memory;
    use super::super::tar::build::TarBuilder;
    use super::*;

    fn layer(tar: Vec<u8>) -> LayerFiles {
        scan_in_memory(&tar).unwrap()
    }

    fn paths(index: &LayerIndex) -> Vec<&str> {
        index.iter().map(|(p, _)| p).collect()
    }

    /// A three-layer image exercising every overlay rule; the expected set is what a container
    /// of it shows (checked against containerd by hand, see the module report).
    fn sample_image() -> (Vec<LayerFiles>, LayerIndex) {
        let base = layer(
            TarBuilder::new()
                .dir("./", 0o755)
                .dir("bin", 0o755)
                .file("bin/busybox", 0o755, b"busybox v1")
                .hardlink("bin/sh", "bin/busybox")
                .symlink("bin/ls", "busybox")
                .dir("etc", 0o755)
                .file("etc/passwd", 0o644, b"root:x:0:0")
                .file("etc/motd", 0o644, b"hello")
                .dir("opt/app", 0o755)
                .file("opt/app/old.conf", 0o644, b"old")
                .dir("opt/app/sub", 0o755)
                .file("opt/app/sub/deep", 0o644, b"deep")
                .dir("var", 0o755)
                .file("var/cache", 0o644, b"a file that becomes a dir")
                .symlink("lib", "usr/lib")
                .dir("usr/lib", 0o755)
                .file("usr/lib/libc.so", 0o755, b"libc")
                .finish(),
        );
        let middle = layer(
            TarBuilder::new()
                .file("bin/busybox", 0o755, b"busybox v2")
                .file("etc/.wh.motd", 0o644, b"")
                .file("opt/app/.wh..wh..opq", 0o644, b"")
                .file("opt/app/new.conf", 0o600, b"new")
                .file("var/cache/item", 0o644, b"item")
                .file("lib/extra.so", 0o644, b"extra")
                .finish(),
        );
        let top = layer(
            TarBuilder::new()
                .file("etc/motd", 0o644, b"back again")
                .file("usr/.wh.lib", 0o644, b"")
                .symlink("loop1", "loop2")
                .symlink("loop2", "/loop1")
                .symlink("escape", "../../../../etc/passwd")
                .dir("bin", 0o700)
                .finish(),
        );
        let layers = vec![base, middle, top];
        let index = LayerIndex::merge(&layers).unwrap();
        (layers, index)
    }

    #[test]
    fn merged_view_matches_overlay_semantics() {
        let (layers, index) = sample_image();
        assert_eq!(
            paths(&index),
            [
                "bin",
                "bin/busybox",
                "bin/ls",
                "bin/sh",
                "escape",
                "etc",
                "etc/motd",
                "etc/passwd",
                "lib",
                "lib/extra.so",
                "loop1",
                "loop2",
                "opt",
                "opt/app",
                "opt/app/new.conf",
                "usr",
                "var",
                "var/cache",
                "var/cache/item",
            ]
        );
        let get = |p: &str| index.lookup_no_follow(p).unwrap();
        // Later layers override; a directory over a directory keeps its contents.
        assert_eq!(get("bin/busybox").sha256, Some(Digest::of(b"busybox v2")));
        assert_eq!(get("bin/busybox").layer, layers[1].blob);
        assert_eq!(get("bin").mode, 0o700);
        // The hard link was resolved when its layer was applied: old content.
        assert_eq!(get("bin/sh").sha256, Some(Digest::of(b"busybox v1")));
        assert!(matches!(get("bin/sh").kind, EntryKind::HardLink { .. }));
        // Whited out, then re-added by a later layer.
        assert_eq!(get("etc/motd").sha256, Some(Digest::of(b"back again")));
        // Opaque directory: lower contents gone, same-layer contents kept.
        assert_eq!(get("opt/app/new.conf").mode, 0o600);
        // A lower file replaced by an implied directory.
        assert_eq!(get("var/cache").kind, EntryKind::Dir);
        // The lower symlink `lib` is hidden by an implied directory (lexical parents).
        assert_eq!(get("lib").kind, EntryKind::Dir);
        assert_eq!(index.stats().files, 7);
        assert_eq!(index.stats().executables, 2);
    }

    #[test]
    fn lookups_resolve_symlinks_inside_the_image() {
        let (_, index) = sample_image();
        assert_eq!(
            index.lookup("/bin/ls").unwrap().sha256,
            Some(Digest::of(b"busybox v2"))
        );
        assert!(matches!(
            index.lookup_no_follow("/bin/ls").unwrap().kind,
            EntryKind::Symlink { .. }
        ));
        // `..` beyond the root clamps at the image root: /etc/passwd of the image.
        assert_eq!(
            index.resolve("escape", true).unwrap().0,
            "etc/passwd".to_string()
        );
        assert_eq!(index.resolve("loop1", true), Err(LookupError::TooManyLinks));
        assert!(index.lookup("loop1").is_none());
        assert_eq!(
            index.resolve("bin/busybox/x", true),
            Err(LookupError::NotADirectory {
                path: "bin/busybox".into()
            })
        );
        assert_eq!(index.resolve("/", true), Err(LookupError::NotFound));
        assert_eq!(index.resolve("nope", true), Err(LookupError::NotFound));
        assert_eq!(
            index.resolve("/usr/../bin/./busybox", true).unwrap().0,
            "bin/busybox"
        );
        assert_eq!(index.resolve("/opt/app/..", true).unwrap().0, "opt");
    }

    #[test]
    fn symlink_to_directory_is_traversed() {
        let l = layer(
            TarBuilder::new()
                .dir("usr/bin", 0o755)
                .file("usr/bin/env", 0o755, b"env")
                .symlink("bin", "usr/bin")
                .symlink("usr/bin/self", ".")
                .finish(),
        );
        let index = LayerIndex::merge([&l]).unwrap();
        assert_eq!(index.resolve("/bin/env", true).unwrap().0, "usr/bin/env");
        assert_eq!(
            index.resolve("/bin/self/self/self/env", true).unwrap().0,
            "usr/bin/env"
        );
    }

    #[test]
    fn hostile_merges_are_refused_with_layer_and_entry() {
        let missing = layer(TarBuilder::new().hardlink("a", "nowhere").finish());
        let err = LayerIndex::merge([&missing]).unwrap_err();
        assert_eq!(err.path, "a");
        assert_eq!(err.layer, missing.blob);
        assert!(matches!(
            err.problem,
            MergeProblem::HardLinkTargetMissing { .. }
        ));

        let to_dir = layer(
            TarBuilder::new()
                .dir("d", 0o755)
                .hardlink("a", "d")
                .finish(),
        );
        assert!(matches!(
            LayerIndex::merge([&to_dir]).unwrap_err().problem,
            MergeProblem::HardLinkToDirectory { .. }
        ));

        let file_parent = layer(
            TarBuilder::new()
                .file("f", 0o644, b"")
                .file("f/child", 0o644, b"")
                .finish(),
        );
        assert!(matches!(
            LayerIndex::merge([&file_parent]).unwrap_err().problem,
            MergeProblem::ParentNotDirectory { .. }
        ));
    }

    #[test]
    fn non_directory_replaces_a_whole_subtree_in_the_same_layer() {
        let l = layer(
            TarBuilder::new()
                .dir("d", 0o755)
                .file("d/x", 0o644, b"x")
                .file("d", 0o644, b"now a file")
                .finish(),
        );
        let index = LayerIndex::merge([&l]).unwrap();
        assert_eq!(paths(&index), ["d"]);
    }

    #[test]
    fn root_opaque_and_whiteout_of_missing_path() {
        let base = layer(TarBuilder::new().file("a", 0o644, b"a").finish());
        let top = layer(
            TarBuilder::new()
                .file(".wh..wh..opq", 0o644, b"")
                .file(".wh.never-existed", 0o644, b"")
                .file("b", 0o644, b"b")
                .finish(),
        );
        let index = LayerIndex::merge([&base, &top]).unwrap();
        assert_eq!(paths(&index), ["b"]);
    }

    #[test]
    fn hard_link_to_symlink_is_that_symlink() {
        let l = layer(
            TarBuilder::new()
                .file("t", 0o755, b"t")
                .symlink("s", "t")
                .hardlink("h", "s")
                .finish(),
        );
        let index = LayerIndex::merge([&l]).unwrap();
        assert_eq!(index.lookup("h").unwrap().sha256, Some(Digest::of(b"t")));
    }
}
