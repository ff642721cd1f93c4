//! Real cosign-format signatures without cosign (it is not installable here): keys and
//! signatures from `openssl`, cosign's simple-signing `.sig` image written as an OCI layout
//! and imported with `ctr images import --no-unpack`, Sigstore v0.3 bundles made (and
//! checked) by npm's `@sigstore/sign` / `@sigstore/verify` (`tests/sigstore/bundle.mjs`),
//! and OCI 1.1 referrer manifests carrying a bundle.

use crate::containerd::Ctr;
use crate::oci::{
    ANNOTATION_CONTAINERD_NAME, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

fn sha256(data: &[u8]) -> String {
    crate::util::sha256_digest(data)
}

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// An EC P-256 key pair made by openssl, as `cosign generate-key-pair` makes (PEM files).
pub struct Key {
    pub private: PathBuf,
    pub public: PathBuf,
}

impl Key {
    /// `NAME.key` and `NAME.pub` in `dir`.
    pub fn generate(dir: &Path, name: &str) -> Result<Self> {
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        run(Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&private))?;
        run(Command::new("openssl")
            .args(["ec", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public))?;
        Ok(Self { private, public })
    }

    /// A DER ECDSA-SHA256 signature of `data` (`openssl dgst -sha256 -sign`).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("data");
        std::fs::write(&input, data)?;
        run(Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.private)
            .arg(&input))
    }
}

/// cosign's simple-signing payload for `digest`, exactly as `cosign sign` writes it.
pub fn simple_signing_payload(repository: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repository}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An OCI artifact (manifest + blobs) to import under a name.
pub struct Artifact {
    pub name: String,
    pub manifest: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
}

impl Artifact {
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// cosign's `.sig` image: one simple-signing layer holding `payload`, its signature
    /// (base64 DER) in the layer's annotation. Named `<repo>:sha256-<hex>.sig` for `digest`.
    pub fn cosign_sig(
        repository: &str,
        digest: &str,
        payload: Vec<u8>,
        signature_b64: &str,
    ) -> Self {
        let config = serde_json::to_vec(&json!({
            "architecture": "", "created": "0001-01-01T00:00:00Z", "os": "",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "rootfs": {"type": "layers", "diff_ids": [sha256(&payload)]}, "config": {}
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "size": config.len(), "digest": sha256(&config)},
            "layers": [{"mediaType": SIMPLE_SIGNING, "size": payload.len(), "digest": sha256(&payload),
                "annotations": {SIGNATURE_ANNOTATION: signature_b64}}]
        }))
        .unwrap();
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        Self {
            name: format!("{repository}:sha256-{hex}.sig"),
            manifest,
            blobs: vec![config, payload],
        }
    }

    /// An OCI 1.1 referrer of the manifest `subject` carrying a Sigstore bundle, as cosign
    /// v3 attaches one; imported under `name`.
    pub fn bundle_referrer(
        name: &str,
        subject: &str,
        subject_size: usize,
        bundle: Vec<u8>,
    ) -> Self {
        let empty = b"{}".to_vec();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST, "artifactType": BUNDLE_V03,
            "config": {"mediaType": EMPTY, "size": 2, "digest": sha256(&empty)},
            "layers": [{"mediaType": BUNDLE_V03, "size": bundle.len(), "digest": sha256(&bundle)}],
            "subject": {"mediaType": MEDIA_TYPE_MANIFEST, "size": subject_size, "digest": subject}
        }))
        .unwrap();
        Self {
            name: name.to_string(),
            manifest,
            blobs: vec![empty, bundle],
        }
    }

    /// Writes it into `dir` as `cosign save` lays a signed image out: an OCI layout whose
    /// `index.json` lists the image (`kind: dev.cosignproject.cosign/image`) and this
    /// signature manifest (`kind: dev.cosignproject.cosign/sigs`). The image's own blobs are
    /// left out: only the signature is needed on the node.
    pub fn save_layout(&self, dir: &Path, image_digest: &str, image_size: usize) -> Result<()> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [
                {"mediaType": MEDIA_TYPE_MANIFEST, "digest": image_digest, "size": image_size,
                    "annotations": {"kind": "dev.cosignproject.cosign/image"}},
                {"mediaType": MEDIA_TYPE_MANIFEST, "digest": self.digest(),
                    "size": self.manifest.len(), "annotations": {"kind": "dev.cosignproject.cosign/sigs"}}
            ]
        }))?;
        std::fs::write(dir.join("index.json"), index)?;
        for blob in self.blobs.iter().chain([&self.manifest]) {
            let hex = sha256(blob);
            std::fs::write(dir.join("blobs/sha256").join(&hex["sha256:".len()..]), blob)?;
        }
        Ok(())
    }

    /// Writes it as an OCI layout tar and imports it with `ctr images import --no-unpack`
    /// (containerd cannot unpack signature media types).
    pub fn import(&self, containerd: &Ctr, ns: &str) -> Result<()> {
        let archive = tempfile::Builder::new()
            .prefix("lg-sig-")
            .suffix(".tar")
            .tempfile_in(containerd.dir())?;
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [{"mediaType": MEDIA_TYPE_MANIFEST, "digest": self.digest(),
                "size": self.manifest.len(), "annotations": {ANNOTATION_CONTAINERD_NAME: self.name}}]
        }))?;
        {
            let mut tar = tar::Builder::new(std::fs::File::create(archive.path())?);
            let mut add = |path: &str, data: &[u8]| -> Result<()> {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_mtime(1_700_000_000);
                tar.append_data(&mut h, path, data)?;
                Ok(())
            };
            add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            add("index.json", &index)?;
            for blob in self.blobs.iter().chain([&self.manifest]) {
                let hex = sha256(blob);
                add(&format!("blobs/sha256/{}", &hex["sha256:".len()..]), blob)?;
            }
            tar.into_inner()?.sync_all()?;
        }
        let path = archive.path().to_string_lossy().into_owned();
        let out = containerd.ctr_ns(ns, &["images", "import", "--no-unpack", &path])?;
        if !out.status.success() {
            bail!("importing {}: {out:?}", self.name);
        }
        let names = containerd.ctr_ok(ns, &["images", "ls", "-q"])?;
        if !names.lines().any(|l| l.trim() == self.name) {
            bail!(
                "after import containerd does not list {} ({names})",
                self.name
            );
        }
        Ok(())
    }
}

/// `tests/sigstore`, with its npm packages installed (once).
fn sigstore_tool() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sigstore");
    if !dir.join("node_modules/@sigstore/sign").is_dir() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir))
        .context("installing tests/sigstore's npm packages (make test-deps does this)")?;
    }
    Ok(dir.join("bundle.mjs"))
}

/// A Sigstore bundle v0.3 (DSSE, in-toto statement naming `digest`) signed with `key`, made
/// by `@sigstore/sign`.
pub fn sigstore_bundle(key: &Key, digest: &str, name: &str) -> Result<Vec<u8>> {
    let tool = sigstore_tool()?;
    run(Command::new("node")
        .arg(tool)
        .args(["sign", "--key"])
        .arg(&key.private)
        .args(["--digest", digest, "--name", name]))
}

/// True when `@sigstore/verify` (the reference verifier) accepts the bundle for `digest`
/// with `key`.
pub fn sigstore_verifies(key: &Key, bundle: &Path, digest: &str) -> Result<bool> {
    let tool = sigstore_tool()?;
    let out = Command::new("node")
        .arg(tool)
        .args(["verify", "--pub"])
        .arg(&key.public)
        .arg("--bundle")
        .arg(bundle)
        .args(["--digest", digest])
        .output()?;
    Ok(out.status.success())
}
