//! Where an image's signatures are found, offline: containerd's content store (cosign's
//! `<repo>:sha256-<hex>.sig` images, the OCI 1.1 referrers tag `<repo>:sha256-<hex>`, and
//! any image record whose manifest has the image as its `subject`) and the directories of
//! `trust.signature_dirs` (Sigstore bundles, and OCI layouts as `cosign save` writes them).
//!
//! Owns finding and reading: every blob is checked against the digest that named it and
//! bounded in size; every signature found becomes a [`Found`], parsed or with the reason it
//! is not a signature. It must not verify signatures or decide a verdict (`judge` does).
//! A store that does not answer is an error, so the verdict is `unverifiable`, not
//! `unsigned`.

use super::formats::{self, Found, BUNDLE_V03_MEDIA_TYPE, SIMPLE_SIGNING_MEDIA_TYPE};
use crate::image::content::{ContentError, ContentStore};
use crate::image::digest::Digest;
use crate::image::ContainerdStore;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Manifests and indexes of signatures are small; more than this is not one.
const MAX_MANIFEST_BYTES: u64 = 256 * 1024;
/// Files looked at in one signature directory (and its subdirectories).
const MAX_DIR_FILES: usize = 10_000;
/// Entries of one OCI layout's `index.json` looked at.
const MAX_LAYOUT_ENTRIES: usize = 256;
/// Signatures judged for one image, wherever found (the rest are left out, with a warning).
pub const MAX_FOUND: usize = 64;
/// How deep signature directories are walked.
const MAX_DIR_DEPTH: usize = 4;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `cosign save` marks the signature manifests of a layout with this `kind` annotation.
const COSIGN_KIND: &str = "kind";
const COSIGN_SIGS: &str = "dev.cosignproject.cosign/sigs";

/// Where blobs are read from.
enum Blobs<'a> {
    Containerd(&'a ContainerdStore),
    Layout(PathBuf),
}

impl Blobs<'_> {
    /// The blob, checked against its digest.
    async fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, ReadError> {
        let bytes = match self {
            Self::Containerd(store) => {
                let blob = store.open(*digest).await.map_err(ReadError::from)?;
                blob.read_to_vec(limit).await.map_err(ReadError::from)?
            }
            Self::Layout(dir) => {
                let path = dir.join("blobs").join("sha256").join(digest.hex());
                read_regular(&path, limit).map_err(ReadError::Bad)?
            }
        };
        if Digest::of(&bytes) != *digest {
            return Err(ReadError::Bad(format!(
                "blob {digest} does not match its digest (the store holds other content)"
            )));
        }
        Ok(bytes)
    }
}

/// A regular file (no symlink, FIFO or device: a read of one could block or never end)
/// of at most `limit` bytes, read within that bound even if it grows meanwhile.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > limit {
        return Err(format!(
            "{} is {} bytes, more than the {limit}-byte limit",
            path.display(),
            meta.len()
        ));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if out.len() as u64 > limit {
        return Err(format!(
            "{} grew past the {limit}-byte limit while it was read",
            path.display()
        ));
    }
    Ok(out)
}

/// A failure to read: the store is away (the verdict waits), or the blob is bad (the
/// signature is invalid).
#[derive(Debug)]
pub enum ReadError {
    Unavailable(String),
    Bad(String),
}

impl From<ContentError> for ReadError {
    fn from(e: ContentError) -> Self {
        match e {
            ContentError::Unavailable { message } => Self::Unavailable(message),
            other => Self::Bad(other.to_string()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    subject: Option<Desc>,
    #[serde(default)]
    manifests: Vec<Desc>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `<repo>` of a reference: without its tag or digest.
pub fn repository(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    match no_digest.rfind(':') {
        Some(colon) if !no_digest[colon..].contains('/') => &no_digest[..colon],
        _ => no_digest,
    }
}

/// A signature manifest or index: its bytes, or (inner error) the one `Found` saying why a
/// bad blob is no signature. A store that does not answer is the outer error.
async fn read_manifest(
    blobs: &Blobs<'_>,
    digest: &Digest,
    source: &str,
) -> Result<Result<Vec<u8>, Vec<Found>>, ReadError> {
    match blobs.read(digest, MAX_MANIFEST_BYTES).await {
        Ok(b) => Ok(Ok(b)),
        Err(ReadError::Bad(reason)) => Ok(Err(vec![Found {
            source: source.to_string(),
            parsed: Err(reason),
        }])),
        Err(e) => Err(e),
    }
}

/// The signatures of one signature manifest (`.sig` image or referrer): simple-signing
/// layers, bundle layers, or the reason it holds neither.
async fn from_manifest(
    blobs: &Blobs<'_>,
    digest: &Digest,
    source: &str,
) -> Result<Vec<Found>, ReadError> {
    let bytes = match read_manifest(blobs, digest, source).await? {
        Ok(b) => b,
        Err(unreadable) => return Ok(unreadable),
    };
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            return Ok(vec![Found {
                source: source.to_string(),
                parsed: Err(format!("the signature manifest is not valid JSON: {e}")),
            }])
        }
    };
    if let Some(mt) = manifest
        .media_type
        .as_deref()
        .filter(|m| *m != OCI_MANIFEST && !m.contains("docker.distribution.manifest.v2"))
    {
        return Ok(vec![Found {
            source: source.to_string(),
            parsed: Err(format!(
                "the signature's media type is {mt:?}, not an image manifest"
            )),
        }]);
    }
    let mut out = Vec::new();
    let is_bundle = |d: &Desc| d.media_type == BUNDLE_V03_MEDIA_TYPE;
    let bundle_artifact = manifest.artifact_type.as_deref() == Some(BUNDLE_V03_MEDIA_TYPE)
        || manifest
            .config
            .as_ref()
            .is_some_and(|c| c.media_type == BUNDLE_V03_MEDIA_TYPE);
    let mut attestations = 0;
    let bundle_layers = manifest
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| is_bundle(l) || (bundle_artifact && l.media_type.contains("json")))
        .take(formats::MAX_SIGNATURES_PER_SOURCE);
    for (i, layer) in bundle_layers {
        let at = format!("{source} layer {i}");
        let parsed = match Digest::parse(&layer.digest) {
            Err(e) => Err(format!("bad layer digest: {e}")),
            Ok(d) => match blobs.read(&d, formats::MAX_SIGNATURE_BYTES).await {
                Ok(bytes) => match formats::bundle(&bytes) {
                    Ok(cs) => {
                        out.extend(cs.into_iter().map(|c| Found {
                            source: at.clone(),
                            parsed: Ok(c),
                        }));
                        continue;
                    }
                    Err(e) if e.starts_with(formats::NOT_A_SIGNATURE) => {
                        attestations += 1;
                        continue;
                    }
                    Err(e) => Err(e),
                },
                Err(ReadError::Bad(reason)) => Err(reason),
                Err(e) => return Err(e),
            },
        };
        out.push(Found { source: at, parsed });
    }
    if manifest
        .layers
        .iter()
        .any(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
    {
        match formats::simple_signing_layers(&bytes) {
            Err(reason) => out.push(Found {
                source: source.to_string(),
                parsed: Err(reason),
            }),
            Ok(layers) => {
                for layer in layers {
                    let at = format!("{source} layer {}", layer.index);
                    let parsed = match (&layer.signature, layer.digest) {
                        (Err(reason), _) => Err(reason.clone()),
                        (Ok(_), None) => Err("the layer has no digest".into()),
                        (Ok(_), Some(d)) => {
                            match blobs.read(&d, formats::MAX_SIGNATURE_BYTES).await {
                                Ok(payload) => formats::simple_signing(&layer, &payload),
                                Err(ReadError::Bad(reason)) => {
                                    Err(format!("the payload: {reason}"))
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    };
                    out.push(Found { source: at, parsed });
                }
            }
        }
    }
    if out.is_empty() && attestations == 0 {
        out.push(Found {
            source: source.to_string(),
            parsed: Err(
                "the manifest has neither a simple-signing payload nor a Sigstore bundle layer"
                    .into(),
            ),
        });
    }
    Ok(out)
}

/// Signatures for `digests` in containerd's namespace of `store`.
pub async fn from_containerd(
    store: &ContainerdStore,
    reference: &str,
    digests: &[Digest],
) -> Result<Vec<Found>, ReadError> {
    let blobs = Blobs::Containerd(store);
    let ns = store.namespace().to_string();
    let mut repos = vec![repository(reference).to_string()];
    let normalized = crate::image::containerd::docker_normalize(reference);
    if repository(&normalized) != repos[0] {
        repos.push(repository(&normalized).to_string());
    }
    let mut found = Vec::new();
    let mut seen_manifests: Vec<Digest> = Vec::new();
    for repo in &repos {
        for d in digests {
            // cosign's tag for the signatures of `d`.
            let name = format!("{repo}:sha256-{}.sig", d.hex());
            if let Some(target) = store.image_target(&name).await.map_err(ReadError::from)? {
                seen_manifests.push(target.digest);
                found.extend(
                    from_manifest(&blobs, &target.digest, &format!("containerd {ns}/{name}"))
                        .await?,
                );
            }
            // The OCI 1.1 referrers tag schema: an index of the referrers of `d`.
            let name = format!("{repo}:sha256-{}", d.hex());
            if let Some(target) = store.image_target(&name).await.map_err(ReadError::from)? {
                if target.media_type == OCI_INDEX {
                    found.extend(
                        referrers_in_index(
                            &blobs,
                            &target.digest,
                            &format!("containerd {ns}/{name}"),
                            &mut seen_manifests,
                        )
                        .await?,
                    );
                }
            }
        }
    }
    // Referrer manifests imported as images of their own, whatever their name.
    for (name, target) in store.list_images().await.map_err(ReadError::from)? {
        if target.media_type != OCI_MANIFEST
            || target.size > MAX_MANIFEST_BYTES
            || seen_manifests.contains(&target.digest)
        {
            continue;
        }
        let bytes = match blobs.read(&target.digest, MAX_MANIFEST_BYTES).await {
            Ok(b) => b,
            // Not a signature of ours, and not our business to judge.
            Err(ReadError::Bad(_)) => continue,
            // containerd went away mid-scan: "unsigned" would be a guess.
            Err(e) => return Err(e),
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
            continue;
        };
        let names_ours = m
            .subject
            .as_ref()
            .and_then(|s| Digest::parse(&s.digest).ok())
            .is_some_and(|s| digests.contains(&s));
        if names_ours {
            seen_manifests.push(target.digest);
            found.extend(
                from_manifest(
                    &blobs,
                    &target.digest,
                    &format!("containerd {ns}/{name} (referrer)"),
                )
                .await?,
            );
        }
    }
    Ok(found)
}

/// The signature manifests an index of referrers lists.
async fn referrers_in_index(
    blobs: &Blobs<'_>,
    index: &Digest,
    source: &str,
    seen: &mut Vec<Digest>,
) -> Result<Vec<Found>, ReadError> {
    let bytes = match read_manifest(blobs, index, source).await? {
        Ok(b) => b,
        Err(unreadable) => return Ok(unreadable),
    };
    let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
        return Ok(vec![Found {
            source: source.into(),
            parsed: Err("the referrers index is not valid JSON".into()),
        }]);
    };
    let mut out = Vec::new();
    for desc in m.manifests {
        let signature_kind = matches!(
            desc.artifact_type.as_deref(),
            Some(BUNDLE_V03_MEDIA_TYPE) | Some("application/vnd.dev.cosign.artifact.sig.v1+json")
        );
        if !signature_kind {
            continue;
        }
        let Ok(d) = Digest::parse(&desc.digest) else {
            continue;
        };
        if seen.contains(&d) || desc.size > MAX_MANIFEST_BYTES {
            continue;
        }
        seen.push(d);
        out.extend(from_manifest(blobs, &d, &format!("{source} -> {d}")).await?);
    }
    Ok(out)
}

/// Signatures for `digests` in the signature directories. Unreadable entries are skipped
/// with a warning: a directory is the operator's, and one bad file must not hide the rest.
pub async fn from_dirs(dirs: &[PathBuf], digests: &[Digest]) -> Result<Vec<Found>, ReadError> {
    let mut found = Vec::new();
    for dir in dirs {
        let mut files = Vec::new();
        let mut layouts = Vec::new();
        walk(dir, 0, &mut files, &mut layouts);
        for layout in layouts {
            found.extend(from_layout(&layout, digests).await?);
        }
        for path in files {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.len() > formats::MAX_SIGNATURE_BYTES {
                tracing::warn!(path = %path.display(), bytes = meta.len(), "signature file too large; skipped");
                continue;
            }
            let bytes = match read_regular(&path, formats::MAX_SIGNATURE_BYTES) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read a signature file");
                    continue;
                }
            };
            // Only a bundle whose statement names one of our digests is ours.
            if !formats::bundle_subjects(&bytes)
                .iter()
                .any(|d| digests.contains(d))
            {
                continue;
            }
            let source = path.display().to_string();
            match formats::bundle(&bytes) {
                Ok(cs) => found.extend(cs.into_iter().map(|c| Found {
                    source: source.clone(),
                    parsed: Ok(c),
                })),
                Err(reason) if reason.starts_with(formats::NOT_A_SIGNATURE) => {}
                Err(reason) => found.push(Found {
                    source,
                    parsed: Err(reason),
                }),
            }
        }
    }
    Ok(found)
}

/// `*.json` files and OCI layout directories under `dir`, bounded.
fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>, layouts: &mut Vec<PathBuf>) {
    if depth > MAX_DIR_DEPTH {
        return;
    }
    if dir.join("oci-layout").is_file() {
        layouts.push(dir.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            if depth == 0 {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read trust.signature_dirs entry");
            }
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if files.len() >= MAX_DIR_FILES {
            tracing::warn!(dir = %dir.display(), limit = MAX_DIR_FILES, "too many files in a signature directory; the rest are not read");
            return;
        }
        // No symlinks: the directory is what the operator put there.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, depth + 1, files, layouts);
        } else if meta.is_file() && path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
}

/// Signatures for `digests` in an OCI layout: manifests tagged `sha256-<hex>.sig` for one
/// of them, `cosign save`'s signature manifests next to one of them, and referrers of one.
async fn from_layout(dir: &Path, digests: &[Digest]) -> Result<Vec<Found>, ReadError> {
    let source = dir.display().to_string();
    let index = match read_regular(&dir.join("index.json"), MAX_MANIFEST_BYTES) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(layout = %source, error = %e, "cannot read the layout's index.json");
            return Ok(Vec::new());
        }
    };
    let Ok(index) = serde_json::from_slice::<Manifest>(&index) else {
        tracing::warn!(layout = %source, "the layout's index.json is not valid JSON");
        return Ok(Vec::new());
    };
    let blobs = Blobs::Layout(dir.to_path_buf());
    let holds_ours = index
        .manifests
        .iter()
        .any(|m| Digest::parse(&m.digest).is_ok_and(|d| digests.contains(&d)));
    let tags: Vec<String> = digests
        .iter()
        .map(|d| format!("sha256-{}.sig", d.hex()))
        .collect();
    let mut found = Vec::new();
    let mut seen: Vec<Digest> = Vec::new();
    // Bounded: a layout listing thousands of entries is not cosign's.
    for m in index.manifests.iter().take(MAX_LAYOUT_ENTRIES) {
        let Ok(d) = Digest::parse(&m.digest) else {
            continue;
        };
        if seen.contains(&d) {
            continue;
        }
        seen.push(d);
        let name = m
            .annotations
            .get(REF_NAME)
            .map(String::as_str)
            .unwrap_or("");
        let tagged = tags.iter().any(|t| name.ends_with(t.as_str()));
        let saved_with_ours =
            holds_ours && m.annotations.get(COSIGN_KIND).map(String::as_str) == Some(COSIGN_SIGS);
        let at = format!(
            "{source} {}",
            if name.is_empty() {
                d.to_string()
            } else {
                name.to_string()
            }
        );
        if tagged || saved_with_ours {
            found.extend(from_manifest(&blobs, &d, &at).await?);
            continue;
        }
        if m.media_type == OCI_MANIFEST && m.size <= MAX_MANIFEST_BYTES {
            let Ok(bytes) = blobs.read(&d, MAX_MANIFEST_BYTES).await else {
                continue;
            };
            let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
                continue;
            };
            if manifest
                .subject
                .as_ref()
                .and_then(|s| Digest::parse(&s.digest).ok())
                .is_some_and(|s| digests.contains(&s))
            {
                found.extend(from_manifest(&blobs, &d, &format!("{at} (referrer)")).await?);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_drop_tag_and_digest() {
        assert_eq!(repository("reg.io/app:1"), "reg.io/app");
        assert_eq!(repository("reg.io:5000/app"), "reg.io:5000/app");
        assert_eq!(repository("reg.io:5000/app:2"), "reg.io:5000/app");
        assert_eq!(repository("reg.io/app@sha256:ab"), "reg.io/app");
        assert_eq!(repository("reg.io/app:1@sha256:ab"), "reg.io/app");
        assert_eq!(repository("alpine"), "alpine");
    }

    #[tokio::test]
    async fn bundles_and_layouts_in_directories_are_found_by_digest() {
        use crate::trust::formats::tests as f;
        use crate::trust::keys::tests::{key_pair, sign};
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let (k, _) = key_pair(1);
        let ours = Digest::of(b"ours");
        let theirs = Digest::of(b"theirs");
        std::fs::write(dir.path().join("a.sigstore.json"), f::bundle_for(&k, &ours)).unwrap();
        std::fs::write(
            dir.path().join("b.sigstore.json"),
            f::bundle_for(&k, &theirs),
        )
        .unwrap();
        std::fs::write(dir.path().join("junk.json"), b"{not json").unwrap();
        // A layout with a `.sig` manifest tagged for `ours`.
        let layout = dir.path().join("layout");
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let payload = f::payload_for(&ours);
        let sig = base64::engine::general_purpose::STANDARD.encode(sign(&k, &payload));
        let manifest = f::sig_manifest(&payload, &sig);
        for blob in [&payload, &manifest] {
            std::fs::write(
                layout.join("blobs/sha256").join(Digest::of(blob).hex()),
                blob,
            )
            .unwrap();
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": Digest::of(&manifest).to_string(), "size": manifest.len(),
            "annotations": {REF_NAME: format!("layerguard.test/app:sha256-{}.sig", ours.hex())}}]});
        std::fs::write(layout.join("index.json"), index.to_string()).unwrap();

        let found = from_dirs(&[dir.path().to_path_buf()], &[ours])
            .await
            .unwrap();
        let formats: Vec<_> = found
            .iter()
            .map(|f| f.parsed.as_ref().map(|c| c.format).unwrap())
            .collect();
        assert_eq!(
            formats,
            vec![formats::Format::SimpleSigning, formats::Format::Bundle],
            "{found:?}"
        );
        assert!(
            from_dirs(&[dir.path().to_path_buf()], &[Digest::of(b"none")])
                .await
                .unwrap()
                .is_empty()
        );
    }
}
