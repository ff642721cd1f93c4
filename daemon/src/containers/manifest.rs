//! Which manifest a container runs: the image target itself, or, when the target is an
//! index (manifest list), the entry for this host's platform.
//!
//! Owns only that choice, as a pure function of the index JSON. Reading the blob is the
//! watcher's job. The `image/` module will parse and verify manifests fully; once it
//! exposes a platform pick this function should defer to it.

use serde::Deserialize;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// An index blob larger than this is not read: real ones are a few KiB, and the watcher
/// must not be made to buffer an arbitrary blob.
pub const MAX_INDEX_BYTES: usize = 4 * 1024 * 1024;

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("image index is not valid JSON: {0}")]
    Json(String),
    #[error("image index has no manifest for {os}/{architecture}")]
    NoMatch { os: String, architecture: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This host, in OCI's names (Rust says `x86_64`, OCI says `amd64`).
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Self {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// The digest of the manifest in `index_json` for `platform`. An exact variant match wins
/// over an entry without a variant; entries that are not image manifests (attestations,
/// nested indexes) are skipped.
pub fn pick_manifest(index_json: &[u8], platform: &Platform) -> Result<String, ManifestError> {
    let index: Index =
        serde_json::from_slice(index_json).map_err(|e| ManifestError::Json(e.to_string()))?;
    let candidates = index.manifests.iter().filter(|m| {
        let manifest = m.media_type.is_empty()
            || m.media_type == OCI_MANIFEST
            || m.media_type == DOCKER_MANIFEST;
        manifest
            && m.platform
                .as_ref()
                .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
    });
    let mut fallback = None;
    for m in candidates {
        let variant = m.platform.as_ref().and_then(|p| p.variant.as_ref());
        if variant == platform.variant.as_ref() {
            return Ok(m.digest.clone());
        }
        if variant.is_none() || fallback.is_none() {
            fallback = Some(m.digest.clone());
        }
    }
    fallback.ok_or_else(|| ManifestError::NoMatch {
        os: platform.os.clone(),
        architecture: platform.architecture.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    const INDEX: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:arm",
         "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:amd",
         "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:att",
         "size": 1, "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
      ]
    }"#;

    #[test]
    fn picks_the_host_platform() {
        assert_eq!(
            pick_manifest(INDEX.as_bytes(), &amd64()).unwrap(),
            "sha256:amd"
        );
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(pick_manifest(INDEX.as_bytes(), &arm).unwrap(), "sha256:arm");
    }

    #[test]
    fn missing_platform_and_bad_json_are_errors() {
        let s390 = Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        };
        assert!(matches!(
            pick_manifest(INDEX.as_bytes(), &s390),
            Err(ManifestError::NoMatch { .. })
        ));
        assert!(matches!(
            pick_manifest(b"{", &amd64()),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn host_platform_uses_oci_names() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        assert_ne!(p.architecture, "x86_64");
    }

    #[test]
    fn media_types() {
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_MANIFEST_LIST));
        assert!(!is_index(OCI_MANIFEST));
    }
}
