//! Builds OCI images in Rust, from bytes or host files, layer by layer, and imports them into
//! a private containerd. No registry and no Docker are involved.
//!
//! Owns image *construction* and the builder's own model of the result: every digest (blob,
//! diff_id, chain id, config, manifest) and the merged file set the container should see,
//! computed independently of containerd so tests can compare the two. Entries are written
//! with fixed owner and mtime, so the same builder always produces the same digests.
//!
//! Conventions: file content hashes in [`MergedKind::File`] are bare lowercase hex (what the
//! daemon records per file); OCI digests are `sha256:<hex>`. Paths are absolute (`/bin/sh`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use flate2::write::GzEncoder;
use serde_json::json;

use crate::containerd::{Ctr, SNAPSHOTTER};
use crate::util::{describe_output, sha256_digest, sha256_hex};

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// containerd's `ctr images import` names the image after this index annotation.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// mtime of every tar entry: any fixed value keeps digests reproducible; this one is a
/// plausible date rather than 1970 so `ls -l` output in a failing test looks normal.
const ENTRY_MTIME: u64 = 1_700_000_000;
const DEFAULT_DIR_MODE: u32 = 0o755;
const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How a layer blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

#[derive(Debug, Clone)]
enum Content {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

#[derive(Debug, Clone)]
enum EntryKind {
    File(Content),
    Dir,
    Symlink(String),
    /// Target is an absolute image path.
    HardLink(String),
    Whiteout,
    Opaque,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Normalised absolute path, e.g. `/bin/sh`.
    path: String,
    kind: EntryKind,
    mode: u32,
}

/// One layer: an ordered list of tar entries. Missing parent directories are added when the
/// layer is built (with the mode they already have in lower layers, else 0755), the way
/// image builders emit them.
#[derive(Debug, Clone)]
pub struct Layer {
    entries: Vec<Entry>,
    compression: Compression,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    /// An empty gzip-compressed layer.
    pub fn new() -> Self {
        Layer {
            entries: Vec::new(),
            compression: Compression::Gzip,
        }
    }

    /// Stores this layer uncompressed (blob digest == diff_id).
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    fn push(mut self, path: &str, kind: EntryKind, mode: u32) -> Self {
        self.entries.push(Entry {
            path: normalize(path),
            kind,
            mode,
        });
        self
    }

    /// Regular file with the given content and permission bits (may include setuid etc.).
    pub fn file(self, path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.push(path, EntryKind::File(Content::Bytes(content.into())), mode)
    }

    /// Regular file whose content is read from `host_path` when the image is built.
    pub fn file_from_host(self, path: &str, host_path: impl Into<PathBuf>, mode: u32) -> Self {
        self.push(path, EntryKind::File(Content::Host(host_path.into())), mode)
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.push(path, EntryKind::Dir, mode)
    }

    /// Symlink at `path` pointing at `target` (stored verbatim, relative or absolute).
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.push(path, EntryKind::Symlink(target.to_owned()), 0o777)
    }

    /// Hard link at `path` to the image path `target`, a file added earlier in this same
    /// layer. containerd's overlayfs applier extracts into the bare upper dir, so a link to
    /// a lower layer's file fails at import ("link ...: no such file or directory").
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.push(path, EntryKind::HardLink(normalize(target)), 0)
    }

    /// Deletes `path` (and anything under it) from lower layers: a `.wh.NAME` entry.
    pub fn whiteout(self, path: &str) -> Self {
        self.push(path, EntryKind::Whiteout, 0o644)
    }

    /// Hides every lower-layer entry under the directory `path`: `DIR/.wh..wh..opq`.
    pub fn opaque_dir(self, path: &str) -> Self {
        self.push(path, EntryKind::Opaque, 0o644)
    }
}

fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn parent_of(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

fn file_name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What a path is in the merged (container) view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergedKind {
    /// Regular file; `sha256` is bare lowercase hex of its content. Hard links show up as
    /// files with their target's content.
    File {
        sha256: String,
        size: u64,
    },
    Dir,
    Symlink {
        target: String,
    },
}

/// One path of the merged view as the builder predicts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedFile {
    pub kind: MergedKind,
    /// Permission bits (no file type bits).
    pub mode: u32,
    /// Index into [`BuiltImage::layers`] of the layer that last wrote this path.
    pub layer: usize,
}

/// One layer of a built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    /// Digest of the blob as stored (compressed if gzip).
    pub blob_digest: String,
    /// Digest of the uncompressed tar, as listed in the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// containerd's snapshot key for the image up to and including this layer.
    pub chain_id: String,
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
}

/// A built image: digests, the predicted merged file set, and the blobs themselves.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Name the image gets in containerd, e.g. `layerguard.test/busybox:latest`.
    pub reference: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Base layer first.
    pub layers: Vec<BuiltLayer>,
    /// Merged view keyed by absolute path; `/` itself is not listed.
    pub files: BTreeMap<String, MergedFile>,
    blobs: BTreeMap<String, Vec<u8>>,
}

/// Builds an image from layers plus a few config fields.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    reference: String,
    layers: Vec<Layer>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    labels: BTreeMap<String, String>,
}

impl ImageBuilder {
    /// `reference` is the full name containerd will list, e.g. `layerguard.test/app:1`.
    pub fn new(reference: &str) -> Self {
        ImageBuilder {
            reference: reference.to_owned(),
            layers: Vec::new(),
            entrypoint: None,
            cmd: None,
            env: vec![DEFAULT_PATH_ENV.to_owned()],
            labels: BTreeMap::new(),
        }
    }

    /// Appends a layer on top of the ones added so far.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Adds `KEY=VALUE` to the config's environment (a PATH is there by default).
    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.to_owned());
        self
    }

    /// Image config label (`config.Labels`).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Builds every blob in memory and predicts the merged view.
    pub fn build(&self) -> Result<BuiltImage> {
        ensure!(
            !self.layers.is_empty(),
            "image {} has no layers",
            self.reference
        );
        let mut files: BTreeMap<String, MergedFile> = BTreeMap::new();
        let mut blobs = BTreeMap::new();
        let mut layers = Vec::new();
        let mut chain_id = String::new();

        for (index, layer) in self.layers.iter().enumerate() {
            let tar = build_layer_tar(layer, index, &mut files)
                .with_context(|| format!("building layer {index} of {}", self.reference))?;
            let diff_id = sha256_digest(&tar);
            let (blob, media_type) = match layer.compression {
                Compression::Gzip => {
                    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
                    gz.write_all(&tar)?;
                    (gz.finish()?, MEDIA_TYPE_LAYER_GZIP)
                }
                Compression::None => (tar, MEDIA_TYPE_LAYER_TAR),
            };
            chain_id = if index == 0 {
                diff_id.clone()
            } else {
                sha256_digest(format!("{chain_id} {diff_id}").as_bytes())
            };
            let blob_digest = sha256_digest(&blob);
            layers.push(BuiltLayer {
                blob_digest: blob_digest.clone(),
                diff_id,
                chain_id: chain_id.clone(),
                media_type: media_type.to_owned(),
                size: blob.len() as u64,
            });
            blobs.insert(blob_digest, blob);
        }

        let (os, architecture) = host_platform();
        let mut config = json!({
            "architecture": architecture,
            "os": os,
            "config": { "Env": self.env },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
            },
            "history": layers.iter().enumerate().map(|(i, _)| json!({
                "created_by": format!("layerguard-tests layer {i}"),
            })).collect::<Vec<_>>(),
        });
        if let Some(ep) = &self.entrypoint {
            config["config"]["Entrypoint"] = json!(ep);
        }
        if let Some(cmd) = &self.cmd {
            config["config"]["Cmd"] = json!(cmd);
        }
        if !self.labels.is_empty() {
            config["config"]["Labels"] = json!(self.labels);
        }
        let config_bytes = serde_json::to_vec(&config)?;
        let config_digest = sha256_digest(&config_bytes);

        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {
                "mediaType": MEDIA_TYPE_CONFIG,
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.blob_digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        blobs.insert(config_digest.clone(), config_bytes);
        blobs.insert(manifest_digest.clone(), manifest_bytes);

        Ok(BuiltImage {
            reference: self.reference.clone(),
            manifest_digest,
            config_digest,
            layers,
            files,
            blobs,
        })
    }

    /// Builds and imports into `containerd` namespace `ns` (unpacked for overlayfs).
    pub fn import(&self, containerd: &Ctr, ns: &str) -> Result<BuiltImage> {
        let image = self.build()?;
        image.import(containerd, ns)?;
        Ok(image)
    }
}

/// OCI os/architecture of this host, as containerd's default platform matcher expects.
fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

/// The tag part of a reference (`latest` for `a/b:latest`), for the OCI ref-name annotation.
fn tag_of(reference: &str) -> &str {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

impl BuiltImage {
    /// Bytes of a blob (layer, config or manifest) by digest.
    pub fn blob(&self, digest: &str) -> Option<&[u8]> {
        self.blobs.get(digest).map(Vec::as_slice)
    }

    /// The image config JSON.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.blobs[&self.config_digest]).expect("config is JSON")
    }

    /// The uncompressed tar of layer `index`.
    pub fn layer_tar(&self, index: usize) -> Result<Vec<u8>> {
        let layer = self.layers.get(index).context("no such layer")?;
        let blob = &self.blobs[&layer.blob_digest];
        if layer.media_type == MEDIA_TYPE_LAYER_GZIP {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(blob.as_slice()),
                &mut out,
            )?;
            Ok(out)
        } else {
            Ok(blob.clone())
        }
    }

    /// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/*`) as one tar.
    pub fn write_oci_archive(&self, path: &Path) -> Result<()> {
        let manifest_size = self.blobs[&self.manifest_digest].len();
        let (os, architecture) = host_platform();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [{
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": self.manifest_digest,
                "size": manifest_size,
                "platform": { "architecture": architecture, "os": os },
                "annotations": {
                    ANNOTATION_CONTAINERD_NAME: self.reference,
                    ANNOTATION_REF_NAME: tag_of(&self.reference),
                },
            }],
        });
        let file =
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut tar = tar::Builder::new(file);
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(&mut tar, "index.json", &serde_json::to_vec(&index)?)?;
        append_dir(&mut tar, "blobs", 0o755)?;
        append_dir(&mut tar, "blobs/sha256", 0o755)?;
        for (digest, data) in &self.blobs {
            let hex = digest
                .strip_prefix("sha256:")
                .context("digest without sha256:")?;
            append_bytes(&mut tar, &format!("blobs/sha256/{hex}"), data)?;
        }
        tar.into_inner()?.sync_all()?;
        Ok(())
    }

    /// The same layer blobs under an edited config: `edit` changes the config JSON, then the
    /// config and manifest are re-serialized and re-digested, so manifest -> config still
    /// verifies and only what the config *says* differs. `layers` and `files` keep describing
    /// the blobs as built, i.e. the truth a config can be made to contradict (for example a
    /// wrong `rootfs.diff_ids` entry).
    pub fn with_config(mut self, edit: impl FnOnce(&mut serde_json::Value)) -> Result<Self> {
        let mut config = self.config_json();
        edit(&mut config);
        let config_bytes = serde_json::to_vec(&config)?;
        let config_digest = sha256_digest(&config_bytes);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&self.blobs[&self.manifest_digest])?;
        manifest["config"]["digest"] = json!(config_digest);
        manifest["config"]["size"] = json!(config_bytes.len());
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        self.blobs.remove(&self.config_digest);
        self.blobs.remove(&self.manifest_digest);
        self.blobs.insert(config_digest.clone(), config_bytes);
        self.blobs.insert(manifest_digest.clone(), manifest_bytes);
        self.config_digest = config_digest;
        self.manifest_digest = manifest_digest;
        Ok(self)
    }

    /// Imports into namespace `ns` with `ctr images import` (which also unpacks into the
    /// overlayfs snapshotter) and checks that containerd lists the image under its name.
    pub fn import(&self, containerd: &Ctr, ns: &str) -> Result<()> {
        self.import_with(containerd, ns, &["--snapshotter", SNAPSHOTTER])
    }

    /// Like [`import`](Self::import), but only into the content store (`--no-unpack`): no
    /// snapshots, so no container can run it. containerd's unpacker checks every layer
    /// against the config's `rootfs.diff_ids` and refuses the whole import on a mismatch, so
    /// an image whose config lies about its layers enters the store only this way, as it
    /// does on a node that pulls without unpacking.
    pub fn import_packed(&self, containerd: &Ctr, ns: &str) -> Result<()> {
        self.import_with(containerd, ns, &["--no-unpack"])
    }

    fn import_with(&self, containerd: &Ctr, ns: &str, flags: &[&str]) -> Result<()> {
        let archive = tempfile::Builder::new()
            .prefix("lg-image-")
            .suffix(".tar")
            .tempfile_in(containerd.dir())
            .context("creating image archive")?;
        self.write_oci_archive(archive.path())?;
        let path = archive.path().to_string_lossy().into_owned();
        let mut args = vec!["images", "import"];
        args.extend_from_slice(flags);
        args.push(&path);
        let out = containerd.ctr_ns(ns, &args)?;
        if !out.status.success() {
            bail!("importing {}: {}", self.reference, describe_output(&out));
        }
        let names = containerd.ctr_ok(ns, &["images", "ls", "-q"])?;
        if !names.lines().any(|l| l.trim() == self.reference) {
            bail!(
                "after import, containerd does not list {} (it has {:?}); import said: {}",
                self.reference,
                names.lines().collect::<Vec<_>>(),
                describe_output(&out)
            );
        }
        Ok(())
    }
}

fn base_header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(entry_type);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(ENTRY_MTIME);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let mut h = base_header(tar::EntryType::Regular, 0o644, data.len() as u64);
    tar.append_data(&mut h, path, data)
        .with_context(|| format!("tar entry {path}"))
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str, mode: u32) -> Result<()> {
    let mut h = base_header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        .with_context(|| format!("tar dir {path}"))
}

/// Writes one layer's uncompressed tar and applies it to `files`, the merged view so far,
/// the way containerd's applier would.
fn build_layer_tar(
    layer: &Layer,
    index: usize,
    files: &mut BTreeMap<String, MergedFile>,
) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let explicit_dirs: Vec<&str> = layer
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Dir))
        .map(|e| e.path.as_str())
        .collect();
    let mut emitted_dirs: Vec<String> = Vec::new();
    let mut files_this_layer: Vec<&str> = Vec::new();

    // Whiteouts and opaque markers only ever hide lower layers, whatever their position in
    // the tar (containerd tracks which paths this layer unpacked), so apply them first.
    for e in &layer.entries {
        match &e.kind {
            EntryKind::Whiteout => remove_subtree(files, &e.path, true),
            EntryKind::Opaque => {
                remove_subtree(files, &e.path, false);
            }
            _ => {}
        }
    }

    for e in &layer.entries {
        ensure!(e.path != "/", "layer {index} has an entry for / itself");
        // An opaque marker lives inside its directory, so the directory itself is a parent.
        let parents_of = if matches!(e.kind, EntryKind::Opaque) {
            Some(e.path.as_str())
        } else {
            parent_of(&e.path)
        };
        let mut missing = Vec::new();
        let mut p = parents_of;
        while let Some(dir) = p {
            if dir == "/" {
                break;
            }
            missing.push(dir.to_owned());
            p = parent_of(dir);
        }
        for dir in missing.into_iter().rev() {
            if emitted_dirs.contains(&dir) || explicit_dirs.contains(&dir.as_str()) {
                continue;
            }
            let mode = match files.get(&dir) {
                Some(MergedFile {
                    kind: MergedKind::Dir,
                    mode,
                    ..
                }) => *mode,
                Some(other) => bail!("{dir} is needed as a directory but is {other:?}"),
                None => DEFAULT_DIR_MODE,
            };
            append_dir(&mut tar, &dir[1..], mode)?;
            // A dir that already existed keeps the layer that made it: re-emitting its
            // metadata does not change what an exec of something under it should match.
            files.entry(dir.clone()).or_insert(MergedFile {
                kind: MergedKind::Dir,
                mode,
                layer: index,
            });
            emitted_dirs.push(dir);
        }

        let rel = &e.path[1..];
        match &e.kind {
            EntryKind::File(content) => {
                let data = match content {
                    Content::Bytes(b) => b.clone(),
                    Content::Host(p) => {
                        fs::read(p).with_context(|| format!("reading host file {}", p.display()))?
                    }
                };
                let mut h = base_header(tar::EntryType::Regular, e.mode, data.len() as u64);
                tar.append_data(&mut h, rel, data.as_slice())?;
                files_this_layer.push(&e.path);
                replace(
                    files,
                    &e.path,
                    MergedFile {
                        kind: MergedKind::File {
                            sha256: sha256_hex(&data),
                            size: data.len() as u64,
                        },
                        mode: e.mode & 0o7777,
                        layer: index,
                    },
                );
            }
            EntryKind::Dir => {
                append_dir(&mut tar, rel, e.mode)?;
                emitted_dirs.push(e.path.clone());
                replace(
                    files,
                    &e.path,
                    MergedFile {
                        kind: MergedKind::Dir,
                        mode: e.mode & 0o7777,
                        layer: index,
                    },
                );
            }
            EntryKind::Symlink(target) => {
                let mut h = base_header(tar::EntryType::Symlink, e.mode, 0);
                tar.append_link(&mut h, rel, target)?;
                replace(
                    files,
                    &e.path,
                    MergedFile {
                        kind: MergedKind::Symlink {
                            target: target.clone(),
                        },
                        mode: 0o777,
                        layer: index,
                    },
                );
            }
            EntryKind::HardLink(target) => {
                ensure!(
                    files_this_layer.contains(&target.as_str()),
                    "hard link {} -> {target}: the target must be a file added earlier in the \
                     same layer (containerd cannot link across layers)",
                    e.path
                );
                let linked = match files.get(target) {
                    Some(
                        f @ MergedFile {
                            kind: MergedKind::File { .. },
                            ..
                        },
                    ) => f.clone(),
                    other => bail!("hard link {} -> {target}: target is {other:?}", e.path),
                };
                let mut h = base_header(tar::EntryType::Link, linked.mode, 0);
                tar.append_link(&mut h, rel, &target[1..])?;
                replace(
                    files,
                    &e.path,
                    MergedFile {
                        layer: index,
                        ..linked
                    },
                );
            }
            EntryKind::Whiteout => {
                let parent = parent_of(&e.path).unwrap_or("/");
                let name = format!("{WHITEOUT_PREFIX}{}", file_name_of(&e.path));
                let path = if parent == "/" {
                    name
                } else {
                    format!("{}/{name}", &parent[1..])
                };
                append_bytes_mode(&mut tar, &path, e.mode)?;
            }
            EntryKind::Opaque => {
                append_bytes_mode(&mut tar, &format!("{rel}/{OPAQUE_MARKER}"), e.mode)?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

fn append_bytes_mode<W: Write>(tar: &mut tar::Builder<W>, path: &str, mode: u32) -> Result<()> {
    let mut h = base_header(tar::EntryType::Regular, mode, 0);
    tar.append_data(&mut h, path, std::io::empty())
        .with_context(|| format!("tar entry {path}"))
}

/// Removes everything under `path`, and `path` itself when `including_self`.
fn remove_subtree(files: &mut BTreeMap<String, MergedFile>, path: &str, including_self: bool) {
    let prefix = format!("{path}/");
    files.retain(|k, _| !(k.starts_with(&prefix) || (including_self && k == path)));
}

/// Inserts `new` at `path` as containerd's applier does: a non-directory replacing a
/// directory removes the directory's subtree; a directory over a directory keeps it.
fn replace(files: &mut BTreeMap<String, MergedFile>, path: &str, new: MergedFile) {
    let was_dir = matches!(files.get(path), Some(f) if f.kind == MergedKind::Dir);
    if was_dir && new.kind != MergedKind::Dir {
        remove_subtree(files, path, false);
    }
    files.insert(path.to_owned(), new);
}

/// Applets linked to `/bin/busybox` in [`busybox_layer`]. The list covers what tests use to
/// poke at a container: file ops, process listing, hashing and shell.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "cp",
    "mv",
    "ln",
    "rm",
    "chmod",
    "chown",
    "touch",
    "mkdir",
    "rmdir",
    "sleep",
    "true",
    "false",
    "echo",
    "printf",
    "test",
    "env",
    "id",
    "ps",
    "kill",
    "head",
    "tail",
    "wc",
    "grep",
    "sed",
    "stat",
    "readlink",
    "sha256sum",
    "dd",
    "sync",
    "uname",
    "find",
    "xargs",
    "date",
    "tee",
    "mount",
    "dirname",
    "basename",
    "which",
];

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Path of the host's static busybox (Debian `busybox-static`).
pub fn host_busybox() -> Result<PathBuf> {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let p = Path::new(candidate);
        if p.exists() {
            ensure!(
                is_static_elf(p)?,
                "{candidate} is dynamically linked; the image has no libc: apt-get install -y busybox-static"
            );
            return Ok(p.to_path_buf());
        }
    }
    bail!("no /bin/busybox: apt-get install -y busybox-static")
}

/// An ELF without a PT_INTERP program header needs no dynamic loader.
fn is_static_elf(path: &Path) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        data.len() > 64 && &data[..4] == b"\x7fELF" && data[4] == 2,
        "{} is not a 64-bit ELF",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        ensure!(o + 4 <= data.len(), "truncated ELF program headers");
        if u32::from_le_bytes(data[o..o + 4].try_into()?) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A base layer: static `/bin/busybox` with applet symlinks, `/tmp` (1777), minimal
/// `/etc/passwd` and `/etc/group`, and the mount-point dirs runc would otherwise create in
/// the container's upper dir.
pub fn busybox_layer() -> Result<Layer> {
    let busybox = host_busybox()?;
    let mut layer = Layer::new()
        .dir("/bin", 0o755)
        .file_from_host("/bin/busybox", busybox, 0o755);
    for applet in BUSYBOX_APPLETS {
        layer = layer.symlink(&format!("/bin/{applet}"), "busybox");
    }
    Ok(layer
        .dir("/etc", 0o755)
        .file("/etc/passwd", PASSWD, 0o644)
        .file("/etc/group", GROUP, 0o644)
        .dir("/tmp", 0o1777)
        .dir("/root", 0o700)
        .dir("/proc", 0o555)
        .dir("/sys", 0o555)
        .dir("/dev", 0o755))
}

/// An image builder whose first layer is [`busybox_layer`]; add more layers on top.
pub fn busybox_image(reference: &str) -> Result<ImageBuilder> {
    Ok(ImageBuilder::new(reference)
        .layer(busybox_layer()?)
        .cmd(&["/bin/sh"]))
}

/// Busybox plus two layers doing every operation layerguard must see through: the second
/// overrides a file, whiteouts one, makes a directory opaque, adds a symlink and a hard
/// link. Used wherever a test compares an index or a container with the merged view.
pub fn overlay_test_image(reference: &str) -> Result<ImageBuilder> {
    Ok(busybox_image(reference)?
        .layer(
            Layer::new()
                .file("/app/config", "version=1\n", 0o644)
                .file("/app/remove-me", "doomed\n", 0o644)
                .file("/app/data/old", "old\n", 0o644)
                .file("/app/run.sh", "#!/bin/sh\necho from-run-sh\n", 0o755),
        )
        .layer(
            Layer::new()
                .file("/app/config", "version=2\n", 0o600)
                .whiteout("/app/remove-me")
                .opaque_dir("/app/data")
                .file("/app/data/new", "new\n", 0o644)
                .symlink("/app/current", "config")
                .file("/app/tool.sh", "#!/bin/sh\necho from-tool\n", 0o755)
                .hardlink("/app/tool-again.sh", "/app/tool.sh"),
        ))
}

/// Writes an OCI archive whose `index.json` names an image index (two platforms) instead
/// of a manifest, the way multi-platform images arrive from a registry.
pub fn import_as_index(containerd: &Ctr, ns: &str, image: &BuiltImage) -> String {
    let manifest = image.blob(&image.manifest_digest).expect("manifest blob");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other_arch = if arch == "s390x" { "ppc64le" } else { "s390x" };
    let bogus = format!("sha256:{}", "0".repeat(64));
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [
            {"mediaType": MEDIA_TYPE_MANIFEST, "digest": bogus, "size": 1,
             "platform": {"os": "linux", "architecture": other_arch}},
            {"mediaType": MEDIA_TYPE_MANIFEST, "digest": image.manifest_digest,
             "size": manifest.len(), "platform": {"os": "linux", "architecture": arch}},
        ],
    }))
    .unwrap();
    let index_digest = crate::util::sha256_digest(&index);
    let layout = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [{
            "mediaType": MEDIA_TYPE_INDEX, "digest": index_digest, "size": index.len(),
            "annotations": {"io.containerd.image.name": image.reference},
        }],
    }))
    .unwrap();
    let mut blobs: Vec<(String, Vec<u8>)> = vec![(index_digest.clone(), index)];
    let mut digests = vec![image.manifest_digest.clone(), image.config_digest.clone()];
    digests.extend(image.layers.iter().map(|l| l.blob_digest.clone()));
    for d in digests {
        blobs.push((d.clone(), image.blob(&d).expect("blob").to_vec()));
    }
    let archive = containerd
        .dir()
        .join(format!("{}.tar", crate::container::unique_id("index")));
    write_layout(&archive, &layout, &blobs);
    let out = containerd
        .ctr_ok(
            ns,
            &[
                "images",
                "import",
                "--snapshotter",
                "overlayfs",
                archive.to_str().unwrap(),
            ],
        )
        .expect("import index archive");
    let _ = std::fs::remove_file(&archive);
    let listed = containerd.ctr_ok(ns, &["images", "ls"]).expect("images ls");
    assert!(
        listed.contains(&index_digest),
        "containerd should list the image by its index digest; import said {out:?}, ls:\n{listed}"
    );
    index_digest
}

fn write_layout(path: &Path, index_json: &[u8], blobs: &[(String, Vec<u8>)]) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).expect("archive"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).expect("tar entry");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index_json);
    for (digest, data) in blobs {
        add(
            &format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap()),
            data,
        );
    }
    tar.into_inner()
        .expect("finish tar")
        .flush()
        .expect("flush");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(files: &BTreeMap<String, MergedFile>, p: &str) -> MergedKind {
        files
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing"))
            .kind
            .clone()
    }

    #[test]
    fn merged_view_follows_whiteouts_opaque_dirs_and_replacement() {
        let img = ImageBuilder::new("x/y:1")
            .layer(
                Layer::new()
                    .file("/a/one", "1", 0o644)
                    .file("/a/two", "2", 0o644)
                    .file("/b/keep", "k", 0o644)
                    .file("/c/f", "f", 0o644)
                    .file("/d", "d", 0o644),
            )
            .layer(
                Layer::new()
                    .whiteout("/a/one")
                    .opaque_dir("/b")
                    .file("/b/new", "n", 0o600)
                    .symlink("/c", "/a")
                    .hardlink("/b/new-again", "/b/new"),
            )
            .build()
            .unwrap();
        let f = &img.files;
        assert!(!f.contains_key("/a/one"));
        assert!(!f.contains_key("/b/keep"));
        assert!(
            !f.contains_key("/c/f"),
            "symlink over a dir removes the dir's subtree"
        );
        assert_eq!(f["/b/new"].mode, 0o600);
        assert_eq!(f["/b/new"].layer, 1);
        assert_eq!(
            file(f, "/c"),
            MergedKind::Symlink {
                target: "/a".into()
            }
        );
        assert_eq!(file(f, "/b/new-again"), file(f, "/b/new"));
        assert_eq!(f["/a/two"].layer, 0);
        let cross_layer = ImageBuilder::new("x/y:1")
            .layer(Layer::new().file("/f", "f", 0o644))
            .layer(Layer::new().hardlink("/g", "/f"))
            .build();
        assert!(
            cross_layer.is_err(),
            "links across layers cannot be imported"
        );
        assert_eq!(img.layers.len(), 2);
        assert_ne!(img.layers[0].blob_digest, img.layers[0].diff_id);
        assert_eq!(img.layers[0].chain_id, img.layers[0].diff_id);
        assert_eq!(
            img.config_json()["rootfs"]["diff_ids"][1],
            json!(img.layers[1].diff_id)
        );
    }

    #[test]
    fn layer_tar_holds_whiteout_markers_and_implicit_parents() {
        let img = ImageBuilder::new("x/y:1")
            .layer(Layer::new().dir("/t", 0o1777).file("/t/x", "x", 0o644))
            .layer(
                Layer::new()
                    .compression(Compression::None)
                    .whiteout("/t/x")
                    .opaque_dir("/o"),
            )
            .build()
            .unwrap();
        assert_eq!(img.layers[1].blob_digest, img.layers[1].diff_id);
        let tar = img.layer_tar(1).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["t/", "t/.wh.x", "o/", "o/.wh..wh..opq"]);
        assert_eq!(
            entries[0].1, 0o1777,
            "implicit parent keeps the lower dir's mode"
        );
    }

    #[test]
    fn edited_config_is_resealed_under_its_real_digests() {
        let img = ImageBuilder::new("x/y:1")
            .layer(Layer::new().file("/f", "f", 0o644))
            .layer(Layer::new().file("/g", "g", 0o644))
            .build()
            .unwrap();
        let honest = img.clone();
        let lie = honest.layers[0].diff_id.clone();
        let img = img
            .with_config(|c| c["rootfs"]["diff_ids"][1] = json!(lie))
            .unwrap();
        assert_eq!(img.layers, honest.layers, "the blobs are untouched");
        assert_eq!(img.config_json()["rootfs"]["diff_ids"][1], json!(lie));
        assert_ne!(img.config_digest, honest.config_digest);
        assert_eq!(
            sha256_digest(img.blob(&img.config_digest).unwrap()),
            img.config_digest
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(img.blob(&img.manifest_digest).unwrap()).unwrap();
        assert_eq!(manifest["config"]["digest"], json!(img.config_digest));
        assert_eq!(
            sha256_digest(img.blob(&img.manifest_digest).unwrap()),
            img.manifest_digest
        );
        assert!(img.blob(&honest.config_digest).is_none());
        assert!(img.blob(&honest.manifest_digest).is_none());
    }

    #[test]
    fn digests_are_reproducible() {
        let build = || {
            ImageBuilder::new("x/y:1")
                .layer(Layer::new().file("/f", "same", 0o644))
                .build()
                .unwrap()
        };
        assert_eq!(build().manifest_digest, build().manifest_digest);
    }
}
