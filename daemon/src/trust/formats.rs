//! The signature formats cosign writes, parsed into what a key checks: the signed bytes,
//! the DER signature, the image digests the signed payload names, and any tlog entries.
//!
//! Owns parsing only, strictly and within size limits: cosign's simple-signing `.sig`
//! manifest (payload layer + `dev.cosignproject.cosign/signature` annotation) and the
//! Sigstore bundle (v0.3, also v0.2) with a DSSE envelope around an in-toto statement.
//! Nothing here verifies a signature or decides a verdict; every problem is a sentence
//! that ends up as a `signature_invalid` reason.

use super::rekor::TlogEntry;
use crate::image::digest::Digest;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The layer media type of a simple-signing payload.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation that carries the payload's signature (base64 DER).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The annotation that carries a Rekor bundle (SET and entry) for the signature.
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// The annotation of a keyless signature's certificate.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// The artifact type (and layer media type) of a Sigstore bundle v0.3.
pub const BUNDLE_V03_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const BUNDLE_V02_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle+json;version=0.2";
/// DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// A signature payload or bundle larger than this is refused.
pub const MAX_SIGNATURE_BYTES: u64 = 1024 * 1024;
/// Signature layers read from one `.sig` manifest, and DSSE signatures from one bundle:
/// more is no real signer's doing, and each costs a read and a check per key.
pub const MAX_SIGNATURES_PER_SOURCE: usize = 16;
/// The predicate type cosign gives an image signature in a DSSE bundle; statements of any
/// other type are attestations (SBOM, provenance, scans), not signatures.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// Which format a signature came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// cosign's `.sig` image: a simple-signing payload layer.
    SimpleSigning,
    /// A Sigstore bundle with a DSSE envelope.
    Bundle,
}

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SimpleSigning => "cosign-simple-signing",
            Self::Bundle => "sigstore-bundle-dsse",
        }
    }
}

/// One signature, parsed and ready for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub format: Format,
    /// The bytes the signature covers: the payload, or the DSSE PAE.
    pub signed: Vec<u8>,
    /// ASN.1 DER ECDSA signature.
    pub signature: Vec<u8>,
    /// Image manifest digests the signed payload names.
    pub digests: Vec<Digest>,
    /// The signer's key hint (bundle `publicKey.hint` or DSSE `keyid`), if any.
    pub key_hint: Option<String>,
    /// Transparency-log entries that come with it.
    pub tlog: Vec<TlogEntry>,
}

/// A signature found somewhere, parsed or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Where it was found, for evidence ("containerd default/repo:sha256-ab.sig layer 0",
    /// "/etc/layerguard/signatures/app.sigstore.json").
    pub source: String,
    /// The signature, or why it is not one.
    pub parsed: Result<Candidate, String>,
}

fn b64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("{what} is not valid base64: {e}"))
}

/// The layer descriptor of a `.sig` manifest, as far as signatures need it.
#[derive(Deserialize)]
struct SigLayer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SigManifest {
    #[serde(default)]
    layers: Vec<SigLayer>,
}

/// A layer of a `.sig` manifest whose payload is still to be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleSigningLayer {
    pub index: usize,
    /// The payload's digest (`None` when the layer's is malformed: then `signature` says so).
    pub digest: Option<Digest>,
    pub size: u64,
    /// The payload's signature, or why the layer has none usable.
    pub signature: Result<Vec<u8>, String>,
    /// `dev.sigstore.cosign/bundle`, when present.
    pub rekor_bundle: Option<String>,
}

/// The signature layers of a cosign `.sig` manifest (simple-signing payload layers).
/// Other layers are ignored; a manifest with none is an error.
pub fn simple_signing_layers(manifest: &[u8]) -> Result<Vec<SimpleSigningLayer>, String> {
    let m: SigManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the signature manifest is not valid JSON: {e}"))?;
    let mut out = Vec::new();
    let layers = m
        .layers
        .into_iter()
        .enumerate()
        .filter(|(_, l)| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .take(MAX_SIGNATURES_PER_SOURCE);
    for (index, layer) in layers {
        // A bad layer is a bad signature of its own; the manifest's other layers (cosign
        // adds one per signature) are still judged.
        let digest = Digest::parse(&layer.digest);
        let signature = if let Err(e) = &digest {
            Err(format!("signature layer {index}: bad digest: {e}"))
        } else if layer.size > MAX_SIGNATURE_BYTES {
            Err(format!(
                "signature layer {index} claims {} bytes, more than the {MAX_SIGNATURE_BYTES}-byte limit",
                layer.size
            ))
        } else if layer.annotations.contains_key(CERTIFICATE_ANNOTATION) {
            Err("a keyless signature (Fulcio certificate): keyless verification is not supported yet".to_string())
        } else {
            match layer.annotations.get(SIGNATURE_ANNOTATION) {
                None => Err(format!(
                    "layer {index} has no {SIGNATURE_ANNOTATION} annotation"
                )),
                Some(s) => b64(SIGNATURE_ANNOTATION, s),
            }
        };
        out.push(SimpleSigningLayer {
            index,
            digest: digest.ok(),
            size: layer.size,
            signature,
            rekor_bundle: layer.annotations.get(REKOR_BUNDLE_ANNOTATION).cloned(),
        });
    }
    if out.is_empty() {
        return Err(format!(
            "the signature manifest has no {SIMPLE_SIGNING_MEDIA_TYPE} layer"
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct SimplePayload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: CriticalImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// A simple-signing signature: the payload (already checked against its layer digest by
/// the reader) and the layer's annotations.
pub fn simple_signing(layer: &SimpleSigningLayer, payload: &[u8]) -> Result<Candidate, String> {
    let signature = layer.signature.clone()?;
    let p: SimplePayload = serde_json::from_slice(payload)
        .map_err(|e| format!("the simple-signing payload is not what cosign writes: {e}"))?;
    if p.critical.kind != "cosign container image signature" {
        return Err(format!(
            "the payload's critical.type is {:?}, not \"cosign container image signature\"",
            p.critical.kind
        ));
    }
    let digest = Digest::parse(&p.critical.image.docker_manifest_digest).map_err(|e| {
        format!("the payload's critical.image.docker-manifest-digest is not a sha256 digest: {e}")
    })?;
    let tlog = match &layer.rekor_bundle {
        Some(text) => vec![TlogEntry::from_cosign_annotation(text)?],
        None => Vec::new(),
    };
    Ok(Candidate {
        format: Format::SimpleSigning,
        signed: payload.to_vec(),
        signature,
        digests: vec![digest],
        key_hint: None,
        tlog,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: Option<VerificationMaterial>,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    public_key: Option<PublicKeyHint>,
    certificate: Option<serde_json::Value>,
    x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<super::rekor::BundleTlogEntry>,
}

#[derive(Deserialize)]
struct PublicKeyHint {
    #[serde(default)]
    hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
    #[serde(default)]
    keyid: Option<String>,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType", default)]
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: BTreeMap<String, String>,
}

/// How [`bundle`]'s error starts for a valid attestation (not a signature, so not a bad
/// one either): finders leave it out.
pub const NOT_A_SIGNATURE: &str = "not a signature";

/// DSSE's pre-authentication encoding: what a DSSE signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The signatures of a Sigstore bundle (one per DSSE signature), or why it is not one we
/// verify.
pub fn bundle(bytes: &[u8]) -> Result<Vec<Candidate>, String> {
    if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
        return Err(format!(
            "the bundle is {} bytes, more than the {MAX_SIGNATURE_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let b: Bundle =
        serde_json::from_slice(bytes).map_err(|e| format!("not a Sigstore bundle: {e}"))?;
    if b.media_type != BUNDLE_V03_MEDIA_TYPE && b.media_type != BUNDLE_V02_MEDIA_TYPE {
        return Err(format!(
            "bundle media type {:?} is not {BUNDLE_V03_MEDIA_TYPE}",
            b.media_type
        ));
    }
    let material = b
        .verification_material
        .ok_or("the bundle has no verificationMaterial")?;
    if material.certificate.is_some() || material.x509_certificate_chain.is_some() {
        return Err(
            "a keyless bundle (Fulcio certificate): keyless verification is not supported yet"
                .into(),
        );
    }
    let hint = material
        .public_key
        .ok_or("the bundle's verificationMaterial has no publicKey")?
        .hint
        .filter(|h| !h.is_empty());
    let envelope = match (b.dsse_envelope, b.message_signature) {
        (Some(e), _) => e,
        (None, Some(_)) => {
            return Err("a messageSignature bundle signs a blob, not an image (cosign signs images with a DSSE envelope)".into())
        }
        (None, None) => return Err("the bundle has no dsseEnvelope".into()),
    };
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(format!(
            "DSSE payloadType {:?} is not {IN_TOTO_PAYLOAD_TYPE}",
            envelope.payload_type
        ));
    }
    let payload = b64("the DSSE payload", &envelope.payload)?;
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| format!("the DSSE payload is not an in-toto statement: {e}"))?;
    if !statement.kind.starts_with("https://in-toto.io/Statement/") {
        return Err(format!(
            "the statement's _type {:?} is not an in-toto statement",
            statement.kind
        ));
    }
    if statement.predicate_type != COSIGN_SIGN_PREDICATE {
        return Err(format!(
            "{NOT_A_SIGNATURE}: an attestation of predicate type {:?}, not an image signature ({COSIGN_SIGN_PREDICATE})",
            statement.predicate_type
        ));
    }
    let mut digests = Vec::new();
    for s in &statement.subject {
        if let Some(hex) = s.digest.get("sha256") {
            let d = Digest::parse(&format!("sha256:{hex}"))
                .map_err(|e| format!("a statement subject has a bad sha256 digest: {e}"))?;
            digests.push(d);
        }
    }
    if digests.is_empty() {
        return Err("the statement has no subject with a sha256 digest".into());
    }
    if envelope.signatures.is_empty() {
        return Err("the DSSE envelope has no signature".into());
    }
    let tlog = material
        .tlog_entries
        .into_iter()
        .map(TlogEntry::from_bundle)
        .collect::<Result<Vec<_>, _>>()?;
    let signed = pae(&envelope.payload_type, &payload);
    envelope
        .signatures
        .into_iter()
        .take(MAX_SIGNATURES_PER_SOURCE)
        .map(|s| {
            Ok(Candidate {
                format: Format::Bundle,
                signed: signed.clone(),
                signature: b64("the DSSE signature", &s.sig)?,
                digests: digests.clone(),
                key_hint: hint.clone().or(s.keyid.filter(|k| !k.is_empty())),
                tlog: tlog.clone(),
            })
        })
        .collect()
}

/// The digests a bundle's statement names, read leniently (no other check), to tell which
/// image a bundle in a directory is for: a bundle whose signature is broken is still
/// reported against its image.
pub fn bundle_subjects(bytes: &[u8]) -> Vec<Digest> {
    let subjects = || -> Option<Vec<Digest>> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let payload = v.get("dsseEnvelope")?.get("payload")?.as_str()?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .ok()?;
        let statement: serde_json::Value = serde_json::from_slice(&payload).ok()?;
        Some(
            statement
                .get("subject")?
                .as_array()?
                .iter()
                .filter_map(|s| s.get("digest")?.get("sha256")?.as_str())
                .filter_map(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
                .collect(),
        )
    };
    subjects().unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::trust::keys::tests::{key_pair, sign};

    pub fn payload_for(digest: &Digest) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"layerguard.test/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    pub fn sig_manifest(payload: &[u8], signature_b64: &str) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                "digest": Digest::of(b"{}").to_string()},
            "layers": [{"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "size": payload.len(),
                "digest": Digest::of(payload).to_string(),
                "annotations": {SIGNATURE_ANNOTATION: signature_b64}}]
        })
        .to_string()
        .into_bytes()
    }

    pub fn bundle_for(key: &p256::ecdsa::SigningKey, digest: &Digest) -> Vec<u8> {
        bundle_of(key, digest, COSIGN_SIGN_PREDICATE)
    }

    pub fn bundle_of(key: &p256::ecdsa::SigningKey, digest: &Digest, predicate: &str) -> Vec<u8> {
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"app","digest":{{"sha256":"{}"}}}}],"predicateType":"{predicate}","predicate":{{}}}}"#,
            digest.hex()
        );
        let sig = sign(key, &pae(IN_TOTO_PAYLOAD_TYPE, statement.as_bytes()));
        let e = base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "mediaType": BUNDLE_V03_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": "h"}},
            "dsseEnvelope": {"payload": e.encode(statement), "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": e.encode(sig)}]}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn simple_signing_parses_and_names_its_digest() {
        let (k, pk) = key_pair(1);
        let image = Digest::of(b"image manifest");
        let payload = payload_for(&image);
        let sig = sign(&k, &payload);
        let e = base64::engine::general_purpose::STANDARD;
        let layers = simple_signing_layers(&sig_manifest(&payload, &e.encode(&sig))).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].digest, Some(Digest::of(&payload)));
        let c = simple_signing(&layers[0], &payload).unwrap();
        assert_eq!(c.digests, vec![image]);
        assert!(pk.verifies(&c.signed, &c.signature));
    }

    #[test]
    fn bundles_parse_into_pae_and_subjects() {
        let (k, pk) = key_pair(1);
        let image = Digest::of(b"image manifest");
        let c = bundle(&bundle_for(&k, &image)).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].digests, vec![image]);
        assert!(c[0]
            .signed
            .starts_with(b"DSSEv1 28 application/vnd.in-toto+json "));
        assert!(pk.verifies(&c[0].signed, &c[0].signature));
        assert_eq!(c[0].key_hint.as_deref(), Some("h"));
        assert_eq!(bundle_subjects(&bundle_for(&k, &image)), vec![image]);
    }

    #[test]
    fn malformed_signatures_say_what_is_wrong() {
        let image = Digest::of(b"m");
        let payload = payload_for(&image);
        for (manifest, want) in [
            (b"{".to_vec(), "not valid JSON"),
            (
                br#"{"layers":[]}"#.to_vec(),
                "has no application/vnd.dev.cosign.simplesigning",
            ),
        ] {
            let e = simple_signing_layers(&manifest).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let bad = simple_signing_layers(br#"{"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:zz","size":1}]}"#).unwrap();
        assert!(bad[0]
            .signature
            .as_ref()
            .unwrap_err()
            .contains("bad digest"));
        let layers = simple_signing_layers(&sig_manifest(&payload, "!!!")).unwrap();
        let e = simple_signing(&layers[0], &payload).unwrap_err();
        assert!(e.contains("not valid base64"), "{e}");
        let layers = simple_signing_layers(&sig_manifest(&payload, "AAAA")).unwrap();
        let e = simple_signing(&layers[0], b"{\"critical\":{}}").unwrap_err();
        assert!(e.contains("not what cosign writes"), "{e}");

        let (k, _) = key_pair(1);
        let good = String::from_utf8(bundle_for(&k, &image)).unwrap();
        for (text, want) in [
            ("[]".to_string(), "not a Sigstore bundle"),
            (
                good.replace("v0.3", "v9"),
                "is not application/vnd.dev.sigstore.bundle.v0.3",
            ),
            (
                good.replace("\"publicKey\":{\"hint\":\"h\"}", "\"certificate\":{}"),
                "keyless",
            ),
            (
                good.replace("application/vnd.in-toto+json", "text/plain"),
                "payloadType",
            ),
            (
                good.replace("\"payload\":\"", "\"payload\":\"%"),
                "not valid base64",
            ),
        ] {
            let e = bundle(text.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(bundle_subjects(b"nope").is_empty());
        // An attestation by the same key is not a signature of the image.
        let attestation = bundle_of(&k, &image, "https://slsa.dev/provenance/v1");
        assert!(bundle(&attestation)
            .unwrap_err()
            .starts_with(NOT_A_SIGNATURE));
    }
}
