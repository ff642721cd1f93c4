//! The image formats: descriptors, media types, indexes, manifests and configs (OCI and
//! Docker schema 2), and choosing this node's manifest from an index.
//!
//! Owns: turning verified JSON bytes into typed values, strictly. Pure: no I/O, no hashing.
//! Bytes reach these parsers only after their digest was checked by the caller.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Manifests, indexes and configs are small; anything bigger is refused before it is read so a
/// hostile descriptor cannot make us buffer gigabytes of "JSON".
pub const MAX_METADATA_BLOB_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    #[error("{what} {digest}: malformed JSON: {detail}")]
    Malformed {
        what: &'static str,
        digest: Digest,
        detail: String,
    },
    #[error("{what} {digest}: bad descriptor #{position}: {detail}")]
    BadDescriptor {
        what: &'static str,
        digest: Digest,
        position: usize,
        detail: String,
    },
    #[error("{what} {digest}: mediaType field {inner:?} contradicts its descriptor's {outer:?}")]
    MediaTypeConflict {
        what: &'static str,
        digest: Digest,
        outer: String,
        inner: String,
    },
    #[error("{what} {digest}: unsupported schemaVersion {version}")]
    SchemaVersion {
        what: &'static str,
        digest: Digest,
        version: u64,
    },
    #[error("config {digest}: rootfs.type is {found:?}, expected \"layers\"")]
    RootfsType { digest: Digest, found: String },
}

/// What a media type says a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Index,
    Manifest,
    Config,
    /// A filesystem layer; the compression is sniffed from the bytes, as containerd does, but
    /// only media types that name a layer are accepted at all.
    Layer,
    Unsupported,
}

impl MediaKind {
    pub fn of(media_type: &str) -> Self {
        match media_type {
            OCI_INDEX | DOCKER_MANIFEST_LIST => Self::Index,
            OCI_MANIFEST | DOCKER_MANIFEST => Self::Manifest,
            OCI_CONFIG | DOCKER_CONFIG => Self::Config,
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Self::Layer,
            // Encrypted layers (`+encrypted`), schema 1 and anything else: we cannot verify
            // their contents, so they are not trusted.
            _ => Self::Unsupported,
        }
    }
}

/// An OS/architecture pair as images and nodes spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI spelling.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Self {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an image built for `candidate` runs here. A missing variant matches, and arm64
    /// without a variant is v8, as containerd's platform matcher normalizes it.
    pub fn accepts(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        let normalize = |v: Option<&str>| match (self.architecture.as_str(), v) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match (
            normalize(self.variant.as_deref()),
            normalize(candidate.variant.as_deref()),
        ) {
            (_, None) | (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A verified pointer to a blob: what it is, its address, and its exact size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// A descriptor as JSON spells it, before the digest is validated.
#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    #[allow(dead_code)] // parsed so its shape is checked; not used
    annotations: Option<BTreeMap<String, String>>,
}

impl RawDescriptor {
    fn validate(self) -> Result<Descriptor, String> {
        let digest = Digest::parse(&self.digest).map_err(|e| e.to_string())?;
        let size = u64::try_from(self.size).map_err(|_| format!("negative size {}", self.size))?;
        Ok(Descriptor {
            media_type: self.media_type,
            digest,
            size,
            platform: self.platform,
        })
    }
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u64,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    manifests: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u64,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: RawDescriptor,
    layers: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
struct RawConfig {
    rootfs: RawRootfs,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<Digest>,
}

fn check_media_type(
    what: &'static str,
    digest: Digest,
    outer: &str,
    inner: Option<String>,
) -> Result<(), OciError> {
    // The mediaType inside the document must agree with the descriptor that led to it, or one
    // blob could be read as two different things.
    match inner {
        Some(inner) if inner != outer => Err(OciError::MediaTypeConflict {
            what,
            digest,
            outer: outer.to_string(),
            inner,
        }),
        _ => Ok(()),
    }
}

fn descriptors(
    what: &'static str,
    digest: Digest,
    raw: Vec<RawDescriptor>,
    offset: usize,
) -> Result<Vec<Descriptor>, OciError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, d)| {
            d.validate().map_err(|detail| OciError::BadDescriptor {
                what,
                digest,
                position: i + offset,
                detail,
            })
        })
        .collect()
}

/// Decodes a JSON document of the kind `what`, naming it and its digest on failure.
fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: Digest,
    bytes: &[u8],
) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|e| OciError::Malformed {
        what,
        digest,
        detail: e.to_string(),
    })
}

/// What an index and a manifest share: schema version 2, and a media type that agrees with
/// the descriptor that led to them.
fn check_header(
    what: &'static str,
    desc: &Descriptor,
    schema_version: u64,
    media_type: Option<String>,
) -> Result<(), OciError> {
    if schema_version != 2 {
        return Err(OciError::SchemaVersion {
            what,
            digest: desc.digest,
            version: schema_version,
        });
    }
    check_media_type(what, desc.digest, &desc.media_type, media_type)
}

pub fn parse_index(bytes: &[u8], desc: &Descriptor) -> Result<Index, OciError> {
    const WHAT: &str = "index";
    let raw: RawIndex = decode(WHAT, desc.digest, bytes)?;
    check_header(WHAT, desc, raw.schema_version, raw.media_type)?;
    Ok(Index {
        manifests: descriptors(WHAT, desc.digest, raw.manifests, 0)?,
    })
}

pub fn parse_manifest(bytes: &[u8], desc: &Descriptor) -> Result<Manifest, OciError> {
    const WHAT: &str = "manifest";
    let raw: RawManifest = decode(WHAT, desc.digest, bytes)?;
    check_header(WHAT, desc, raw.schema_version, raw.media_type)?;
    let mut config = descriptors(WHAT, desc.digest, vec![raw.config], 0)?;
    Ok(Manifest {
        config: config.remove(0),
        // Layer positions count from 1 in messages so "descriptor #1" is the config.
        layers: descriptors(WHAT, desc.digest, raw.layers, 1)?,
    })
}

pub fn parse_config(bytes: &[u8], digest: Digest) -> Result<Config, OciError> {
    let raw: RawConfig = decode("config", digest, bytes)?;
    if raw.rootfs.kind != "layers" {
        return Err(OciError::RootfsType {
            digest,
            found: raw.rootfs.kind,
        });
    }
    let diff_ids = raw
        .rootfs
        .diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Digest::parse(d).map_err(|e| OciError::BadDescriptor {
                what: "config rootfs.diff_ids",
                digest,
                position: i,
                detail: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Config { diff_ids })
}

/// Picks the manifest for `platform`: the first exact match, else the first entry without a
/// platform (containerd accepts those). Nested indexes are returned as-is for the caller to
/// follow. Attestation manifests carry `unknown/unknown` and so never match.
pub fn select_manifest<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    let wanted = |d: &&Descriptor| {
        matches!(
            MediaKind::of(&d.media_type),
            MediaKind::Manifest | MediaKind::Index
        )
    };
    index
        .manifests
        .iter()
        .filter(wanted)
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.accepts(p)))
        .or_else(|| {
            index
                .manifests
                .iter()
                .filter(wanted)
                .find(|d| d.platform.is_none())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            platform: None,
        }
    }

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    fn amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    #[test]
    fn media_types_are_classified() {
        assert_eq!(MediaKind::of(OCI_INDEX), MediaKind::Index);
        assert_eq!(MediaKind::of(DOCKER_MANIFEST_LIST), MediaKind::Index);
        assert_eq!(MediaKind::of(OCI_MANIFEST), MediaKind::Manifest);
        assert_eq!(MediaKind::of(DOCKER_MANIFEST), MediaKind::Manifest);
        assert_eq!(MediaKind::of(DOCKER_CONFIG), MediaKind::Config);
        for layer in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            assert_eq!(MediaKind::of(layer), MediaKind::Layer, "{layer}");
        }
        for bad in [
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "",
        ] {
            assert_eq!(MediaKind::of(bad), MediaKind::Unsupported, "{bad}");
        }
    }

    #[test]
    fn parses_docker_and_oci_manifests() {
        for mt in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}",
                "config":{{"mediaType":"x","digest":"{}","size":3}},
                "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":10}}]}}"#,
                d(1),
                d(2)
            );
            let m = parse_manifest(body.as_bytes(), &desc(mt, body.as_bytes())).unwrap();
            assert_eq!(m.config.digest.to_string(), d(1));
            assert_eq!(m.layers[0].size, 10);
        }
    }

    #[test]
    fn manifest_without_media_type_field_is_accepted() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":3}},"layers":[]}}"#,
            d(1)
        );
        assert!(parse_manifest(body.as_bytes(), &desc(OCI_MANIFEST, body.as_bytes())).is_ok());
    }

    #[test]
    fn rejects_contradicting_media_type_and_bad_fields() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","config":{{"mediaType":"x","digest":"{}","size":3}},"layers":[]}}"#,
            d(1)
        );
        let err = parse_manifest(body.as_bytes(), &desc(OCI_MANIFEST, body.as_bytes()));
        assert!(matches!(err, Err(OciError::MediaTypeConflict { .. })));

        let negative = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":-1}},"layers":[]}}"#,
            d(1)
        );
        let err = parse_manifest(negative.as_bytes(), &desc(OCI_MANIFEST, b"")).unwrap_err();
        assert!(err.to_string().contains("negative size"), "{err}");

        let md5 = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"md5:00","size":1},"layers":[]}"#;
        assert!(matches!(
            parse_manifest(md5.as_bytes(), &desc(OCI_MANIFEST, b"")),
            Err(OciError::BadDescriptor { .. })
        ));

        let dup = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":3}},"layers":[],"layers":[]}}"#,
            d(1)
        );
        assert!(matches!(
            parse_manifest(dup.as_bytes(), &desc(OCI_MANIFEST, b"")),
            Err(OciError::Malformed { .. })
        ));

        let v1 = r#"{"schemaVersion":1,"manifests":[]}"#;
        assert!(matches!(
            parse_index(v1.as_bytes(), &desc(OCI_INDEX, b"")),
            Err(OciError::SchemaVersion { .. })
        ));
    }

    #[test]
    fn config_diff_ids_are_validated() {
        let ok = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            d(3)
        );
        assert_eq!(
            parse_config(ok.as_bytes(), Digest::of(b""))
                .unwrap()
                .diff_ids,
            vec![Digest::of(&[3])]
        );
        let wrong_type = r#"{"rootfs":{"type":"other","diff_ids":[]}}"#;
        assert!(matches!(
            parse_config(wrong_type.as_bytes(), Digest::of(b"")),
            Err(OciError::RootfsType { .. })
        ));
        let bad = r#"{"rootfs":{"type":"layers","diff_ids":["sha256:zz"]}}"#;
        assert!(parse_config(bad.as_bytes(), Digest::of(b"")).is_err());
    }

    fn index_with(platforms: &[(&str, &str, Option<&str>)]) -> Index {
        let entries: Vec<String> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let variant = variant.map(|v| format!(r#","variant":"{v}""#)).unwrap_or_default();
                format!(
                    r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"{os}","architecture":"{arch}"{variant}}}}}"#,
                    d(i as u8)
                )
            })
            .collect();
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            entries.join(",")
        );
        parse_index(body.as_bytes(), &desc(OCI_INDEX, body.as_bytes())).unwrap()
    }

    #[test]
    fn selects_this_nodes_platform() {
        let index = index_with(&[
            ("unknown", "unknown", None),
            ("linux", "arm64", Some("v8")),
            ("linux", "amd64", None),
        ]);
        let picked = select_manifest(&index, &amd64()).unwrap();
        assert_eq!(picked.digest.to_string(), d(2));

        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        assert_eq!(
            select_manifest(&index, &arm).unwrap().digest.to_string(),
            d(1)
        );

        let only_other = index_with(&[("linux", "s390x", None), ("windows", "amd64", None)]);
        assert!(select_manifest(&only_other, &amd64()).is_none());
    }

    #[test]
    fn arm_variants_must_agree() {
        let v6 = index_with(&[("linux", "arm", Some("v6"))]);
        let v7 = Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: Some("v7".into()),
        };
        assert!(select_manifest(&v6, &v7).is_none());
    }

    #[test]
    fn host_platform_is_oci_spelled() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_ne!(host.architecture, "x86_64");
    }
}
