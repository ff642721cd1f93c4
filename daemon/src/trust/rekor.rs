//! Transparency-log (Rekor) entries that come with a signature, and their offline check:
//! the signed entry timestamp (SET, Rekor's promise to include the entry) verified with the
//! operator's pinned Rekor key, and the entry's body naming the very signature it comes
//! with.
//!
//! Owns the two encodings (cosign's `dev.sigstore.cosign/bundle` annotation and a Sigstore
//! bundle's `tlogEntries`) and the check. Inclusion proofs against a checkpoint are not
//! verified (an entry with only a proof is reported as not verifiable).

use super::keys::PublicKey;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// One entry, in the shape the SET signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogEntry {
    /// The entry's body, base64 (as Rekor returns it).
    pub body: String,
    pub integrated_time: i64,
    /// Hex sha256 of the log's public key (SPKI DER).
    pub log_id: String,
    pub log_index: i64,
    /// The SET (DER ECDSA), absent when only an inclusion proof came.
    pub set: Option<Vec<u8>>,
}

/// What the SET signs: Rekor's canonical JSON (RFC 8785; keys in this order, no spaces).
#[derive(Serialize)]
struct SetPayload<'a> {
    body: &'a str,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logID")]
    log_id: &'a str,
    #[serde(rename = "logIndex")]
    log_index: i64,
}

#[derive(Deserialize)]
struct CosignAnnotation {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: CosignPayload,
}

#[derive(Deserialize)]
struct CosignPayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// A bundle's `tlogEntries[]` item (int64 fields are JSON strings in the protobuf JSON
/// mapping).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleTlogEntry {
    log_index: String,
    log_id: LogId,
    integrated_time: String,
    #[serde(default)]
    inclusion_promise: Option<InclusionPromise>,
    canonicalized_body: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogId {
    key_id: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionPromise {
    signed_entry_timestamp: String,
}

fn b64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("tlog entry: {what} is not valid base64: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TlogEntry {
    /// From cosign's `dev.sigstore.cosign/bundle` annotation.
    pub fn from_cosign_annotation(text: &str) -> Result<Self, String> {
        let a: CosignAnnotation = serde_json::from_str(text)
            .map_err(|e| format!("the dev.sigstore.cosign/bundle annotation is malformed: {e}"))?;
        Ok(Self {
            body: a.payload.body,
            integrated_time: a.payload.integrated_time,
            log_id: a.payload.log_id,
            log_index: a.payload.log_index,
            set: Some(b64("SignedEntryTimestamp", &a.set)?),
        })
    }

    /// From a bundle's `tlogEntries[]`.
    pub fn from_bundle(e: BundleTlogEntry) -> Result<Self, String> {
        let int = |what: &str, s: &str| {
            s.parse::<i64>()
                .map_err(|_| format!("tlog entry: {what} {s:?} is not an integer"))
        };
        Ok(Self {
            body: e.canonicalized_body,
            integrated_time: int("integratedTime", &e.integrated_time)?,
            log_id: hex(&b64("logId.keyId", &e.log_id.key_id)?),
            log_index: int("logIndex", &e.log_index)?,
            set: match e.inclusion_promise {
                Some(p) => Some(b64("signedEntryTimestamp", &p.signed_entry_timestamp)?),
                None => None,
            },
        })
    }

    /// The bytes the SET signs.
    pub fn set_payload(&self) -> Vec<u8> {
        serde_json::to_vec(&SetPayload {
            body: &self.body,
            integrated_time: self.integrated_time,
            log_id: &self.log_id,
            log_index: self.log_index,
        })
        .expect("a SET payload always serializes")
    }

    /// Checks the entry with Rekor's key: the SET verifies, the log is that key's, and the
    /// body carries `signature` (the signature being judged).
    pub fn verify(&self, rekor: &PublicKey, signature: &[u8]) -> Result<(), String> {
        let set = self.set.as_ref().ok_or(
            "the tlog entry has no signed entry timestamp (inclusion proofs are not verified yet)",
        )?;
        if let Some(id) = rekor.log_id() {
            if !self.log_id.eq_ignore_ascii_case(&id) {
                return Err(format!(
                    "the tlog entry is from log {}, not from the log of trust.rekor_public_key ({id})",
                    self.log_id
                ));
            }
        }
        if !rekor.verifies(&self.set_payload(), set) {
            return Err(format!(
                "the tlog entry's signed entry timestamp (log index {}) does not verify with trust.rekor_public_key",
                self.log_index
            ));
        }
        let body = b64("body", &self.body)?;
        let body: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("tlog entry: the body is not JSON: {e}"))?;
        if !carries_signature(&body, signature) {
            return Err(format!(
                "the tlog entry (log index {}) is for another signature",
                self.log_index
            ));
        }
        Ok(())
    }
}

/// True when a string somewhere in `body` is `signature`, base64-encoded once (hashedrekord,
/// dsse) or twice (intoto's envelope).
fn carries_signature(body: &serde_json::Value, signature: &[u8]) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let once = engine.encode(signature);
    let twice = engine.encode(&once);
    match body {
        serde_json::Value::String(s) => *s == once || *s == twice,
        serde_json::Value::Array(items) => items.iter().any(|v| carries_signature(v, signature)),
        serde_json::Value::Object(map) => map.values().any(|v| carries_signature(v, signature)),
        _ => false,
    }
}

impl PublicKey {
    /// The Rekor log id of this key: hex sha256 of its SPKI DER.
    pub fn log_id(&self) -> Option<String> {
        use p256::pkcs8::EncodePublicKey;
        use sha2::Digest as _;
        let der = match self {
            Self::P256(k) => k.to_public_key_der().ok()?,
            Self::P384(k) => k.to_public_key_der().ok()?,
        };
        Some(hex(&sha2::Sha256::digest(der.as_bytes())))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::trust::keys::tests::{key_pair, sign};

    /// A tlog entry for `signature`, its SET made with `rekor`.
    pub fn entry_for(rekor: &p256::ecdsa::SigningKey, signature: &[u8]) -> TlogEntry {
        let e = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({"apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"signature": {"content": e.encode(signature)}}});
        let public = PublicKey::P256(*rekor.verifying_key());
        let mut entry = TlogEntry {
            body: e.encode(body.to_string()),
            integrated_time: 1_780_000_000,
            log_id: public.log_id().unwrap(),
            log_index: 42,
            set: None,
        };
        entry.set = Some(sign(rekor, &entry.set_payload()));
        entry
    }

    #[test]
    fn the_set_payload_is_canonical_json() {
        let e = TlogEntry {
            body: "Ym9keQ==".into(),
            integrated_time: 5,
            log_id: "ab".into(),
            log_index: 7,
            set: None,
        };
        assert_eq!(
            String::from_utf8(e.set_payload()).unwrap(),
            r#"{"body":"Ym9keQ==","integratedTime":5,"logID":"ab","logIndex":7}"#
        );
    }

    #[test]
    fn entries_verify_only_for_their_log_and_signature() {
        let (rekor, rekor_pub) = key_pair(9);
        let (_, other_log) = key_pair(8);
        let sig = b"the signature".to_vec();
        let entry = entry_for(&rekor, &sig);
        assert_eq!(entry.verify(&rekor_pub, &sig), Ok(()));
        let e = entry.verify(&rekor_pub, b"another signature").unwrap_err();
        assert!(e.contains("for another signature"), "{e}");
        let e = entry.verify(&other_log, &sig).unwrap_err();
        assert!(e.contains("not from the log"), "{e}");
        let mut tampered = entry.clone();
        tampered.log_index = 43;
        let e = tampered.verify(&rekor_pub, &sig).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let mut no_set = entry;
        no_set.set = None;
        assert!(no_set
            .verify(&rekor_pub, &sig)
            .unwrap_err()
            .contains("inclusion proofs"));
    }

    #[test]
    fn both_encodings_parse() {
        let a = TlogEntry::from_cosign_annotation(
            r#"{"SignedEntryTimestamp":"AAAA","Payload":{"body":"e30=","integratedTime":1,"logIndex":2,"logID":"ff"}}"#,
        )
        .unwrap();
        assert_eq!((a.log_index, a.log_id.as_str()), (2, "ff"));
        let b: BundleTlogEntry = serde_json::from_str(
            r#"{"logIndex":"2","logId":{"keyId":"/w=="},"kindVersion":{"kind":"hashedrekord","version":"0.0.1"},"integratedTime":"1","inclusionPromise":{"signedEntryTimestamp":"AAAA"},"canonicalizedBody":"e30="}"#,
        )
        .unwrap();
        assert_eq!(TlogEntry::from_bundle(b).unwrap(), a);
        assert!(TlogEntry::from_cosign_annotation("{}")
            .unwrap_err()
            .contains("malformed"));
    }
}
