//! The operator's keys, read from their PEM files, and the trust set a verdict is judged
//! against (keys, policies, the Rekor key), with what changed between two of them.
//!
//! Owns reading key files and checking one signature with one key. It must not decide
//! what a signature means for an image: that is `judge`'s.

use crate::config::{KeyStatus, TrustConfig, TrustMode};
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why the trust section could not be turned into keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("trust key {id:?}: cannot read {path}: {source}")]
    Read {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a public key we can use.
    #[error("trust key {id:?}: {path} is not a PEM ECDSA P-256 or P-384 public key (SPKI, \"BEGIN PUBLIC KEY\"): {reason}")]
    Parse {
        id: String,
        path: PathBuf,
        reason: String,
    },
}

/// An ECDSA public key of a curve cosign uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// From SPKI PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::P256(k));
        }
        match p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            Ok(k) => Ok(Self::P384(k)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// True when `signature` (ASN.1 DER, as cosign and openssl write it) signs `message`.
    /// cosign hashes with SHA-256 whatever the curve; a P-384 signature over SHA-384 (what
    /// `openssl dgst -sha384` makes) is accepted too.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        use sha2::Digest as _;
        match self {
            Self::P256(k) => p256::ecdsa::DerSignature::try_from(signature)
                .is_ok_and(|s| k.verify(message, &s).is_ok()),
            Self::P384(k) => p384::ecdsa::DerSignature::try_from(signature).is_ok_and(|s| {
                k.verify_prehash(&sha2::Sha256::digest(message), &s).is_ok()
                    || k.verify(message, &s).is_ok()
            }),
        }
    }
}

/// One configured key, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustKey {
    pub id: String,
    pub path: PathBuf,
    pub key: PublicKey,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    pub status: KeyStatus,
}

/// Where a key stands at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStanding {
    /// Its signatures verify.
    Valid,
    Revoked,
    /// Past `not_after`.
    Expired,
    /// Before `not_before`.
    NotYetValid,
}

impl TrustKey {
    /// Its standing at `now`: a revoked key never verifies; a retired or active key
    /// verifies within its validity period.
    pub fn standing(&self, now: SystemTime) -> KeyStanding {
        if self.status == KeyStatus::Revoked {
            KeyStanding::Revoked
        } else if self.not_after.is_some_and(|t| now > t) {
            KeyStanding::Expired
        } else if self.not_before.is_some_and(|t| now < t) {
            KeyStanding::NotYetValid
        } else {
            KeyStanding::Valid
        }
    }
}

/// One policy, as judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Its position in the config (`trust.policy[N]`), for evidence.
    pub index: usize,
    pub images: Vec<String>,
    pub keys: Vec<String>,
    pub mode: TrustMode,
}

/// Everything a signature verdict is judged against. Immutable; a reload makes a new one
/// with the next generation.
#[derive(Clone, Debug)]
pub struct TrustSet {
    /// Bumped by every reload: verdicts of an older generation are judged again.
    pub generation: u64,
    pub keys: Vec<TrustKey>,
    pub policies: Vec<Policy>,
    pub rekor: Option<PublicKey>,
    pub allow_no_tlog: bool,
    pub signature_dirs: Vec<PathBuf>,
    pub recheck: std::time::Duration,
}

fn read_key(id: &str, path: &Path) -> Result<PublicKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        id: id.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    PublicKey::from_pem(&text).map_err(|reason| KeyError::Parse {
        id: id.to_string(),
        path: path.to_path_buf(),
        reason,
    })
}

impl TrustSet {
    /// Reads every key file of a validated `[trust]` section.
    pub fn load(config: &TrustConfig, generation: u64) -> Result<Self, KeyError> {
        let mut keys = Vec::with_capacity(config.keys.len());
        for k in &config.keys {
            keys.push(TrustKey {
                id: k.id.clone(),
                path: k.public_key.clone(),
                key: read_key(&k.id, &k.public_key)?,
                not_before: k.not_before.as_ref().map(|t| t.time()),
                not_after: k.not_after.as_ref().map(|t| t.time()),
                status: k.status,
            });
        }
        let rekor = match &config.rekor_public_key {
            Some(path) => Some(read_key("rekor", path)?),
            None => None,
        };
        let policies = config
            .policy
            .iter()
            .enumerate()
            .map(|(index, p)| Policy {
                index,
                images: p.images.clone(),
                keys: p.keys.clone(),
                mode: p.mode,
            })
            .collect();
        Ok(Self {
            generation,
            keys,
            policies,
            rekor,
            allow_no_tlog: config.allow_no_tlog,
            signature_dirs: config.signature_dirs.clone(),
            recheck: config.recheck(),
        })
    }

    /// The key of that id.
    pub fn key(&self, id: &str) -> Option<&TrustKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The first policy one of whose globs matches `reference` (as written or
    /// Docker-normalized).
    pub fn policy_for(&self, reference: &str) -> Option<&Policy> {
        let normalized = crate::image::containerd::docker_normalize(reference);
        self.policies.iter().find(|p| {
            p.images.iter().any(|g| {
                super::policy::glob_matches(g, reference)
                    || super::policy::glob_matches(g, &normalized)
            })
        })
    }

    /// What changed from `old` to this set, in words ("key release-2027 added; key
    /// release-2026: active -> revoked; 2 -> 3 policies"); empty when nothing did.
    pub fn changes_from(&self, old: &TrustSet) -> Vec<String> {
        let mut out = Vec::new();
        for k in &self.keys {
            match old.key(&k.id) {
                None => out.push(format!("key {} added ({})", k.id, k.status.as_str())),
                Some(o) => {
                    if o.status != k.status {
                        out.push(format!(
                            "key {}: {} -> {}",
                            k.id,
                            o.status.as_str(),
                            k.status.as_str()
                        ));
                    }
                    if o.key != k.key {
                        out.push(format!("key {}: new public key", k.id));
                    }
                    if o.not_before != k.not_before || o.not_after != k.not_after {
                        out.push(format!("key {}: validity period changed", k.id));
                    }
                }
            }
        }
        for k in &old.keys {
            if self.key(&k.id).is_none() {
                out.push(format!("key {} removed", k.id));
            }
        }
        if old.policies != self.policies {
            out.push(format!(
                "policies changed ({} -> {})",
                old.policies.len(),
                self.policies.len()
            ));
        }
        if old.rekor != self.rekor {
            out.push("rekor key changed".into());
        }
        if old.allow_no_tlog != self.allow_no_tlog {
            out.push(format!("allow_no_tlog = {}", self.allow_no_tlog));
        }
        if old.signature_dirs != self.signature_dirs {
            out.push("signature_dirs changed".into());
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;

    /// A key pair for tests: the signing key and its verifying key.
    pub fn key_pair(seed: u8) -> (p256::ecdsa::SigningKey, PublicKey) {
        let signing = p256::ecdsa::SigningKey::from_slice(&[seed.max(1); 32]).unwrap();
        let verifying = *signing.verifying_key();
        (signing, PublicKey::P256(verifying))
    }

    /// A DER signature of `message`.
    pub fn sign(key: &p256::ecdsa::SigningKey, message: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = key.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    #[test]
    fn signatures_verify_with_their_key_only() {
        let (a, pa) = key_pair(1);
        let (_, pb) = key_pair(2);
        let sig = sign(&a, b"payload");
        assert!(pa.verifies(b"payload", &sig));
        assert!(!pa.verifies(b"payloaD", &sig));
        assert!(!pb.verifies(b"payload", &sig));
        assert!(!pa.verifies(b"payload", b"not der"));
        let mut flipped = sig.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(!pa.verifies(b"payload", &flipped));
    }

    #[test]
    fn pem_keys_parse_and_bad_files_say_why() {
        use p256::pkcs8::EncodePublicKey;
        let (_, PublicKey::P256(k)) = key_pair(3) else {
            unreachable!()
        };
        let pem = k.to_public_key_pem(Default::default()).unwrap();
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), PublicKey::P256(k));
        assert!(PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        std::fs::write(&path, "hello").unwrap();
        let e = read_key("k", &path).unwrap_err().to_string();
        assert!(e.contains("trust key \"k\"") && e.contains("k.pub"), "{e}");
        let e = read_key("k", &dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
