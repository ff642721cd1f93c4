//! Alert drafts for image signature verdicts.
//!
//! Owns the wording and the evidence of `image_unsigned`, `image_signature_invalid`,
//! `image_key_revoked` and `image_key_expired`; in a policy's `audit` mode the same kinds as
//! `info` records. `signed`, `not_required` and `unverifiable` verdicts make no draft.

use super::judge::{Judgement, SignatureState};
use crate::alert::{AlertDraft, AlertKind, Evidence, Severity, SignatureEvidence, SignatureFound};
use crate::config::TrustMode;
use crate::identity::ContainerInfo;
use crate::process::Forebear;
use crate::sensor::ExecEvent;

/// The draft for a container's image verdict, `None` when nothing is to be said.
pub fn signature_draft(
    j: &Judgement,
    container: &ContainerInfo,
    exec: &ExecEvent,
    ancestry: Vec<Forebear>,
) -> Option<AlertDraft> {
    let kind = match j.state {
        SignatureState::Unsigned => AlertKind::ImageUnsigned,
        SignatureState::SignatureInvalid => AlertKind::ImageSignatureInvalid,
        SignatureState::KeyRevoked => AlertKind::ImageKeyRevoked,
        SignatureState::KeyExpired => AlertKind::ImageKeyExpired,
        SignatureState::Signed { .. }
        | SignatureState::NotRequired
        | SignatureState::Unverifiable => return None,
    };
    let image = container.image.clone().unwrap_or_default();
    let audit = j.mode == Some(TrustMode::Audit);
    let what = match j.state {
        SignatureState::Unsigned => "is not signed",
        SignatureState::SignatureInvalid => "has no valid signature by a trusted key",
        SignatureState::KeyRevoked => "is signed by a revoked key",
        _ => "is signed by a key outside its validity period",
    };
    let summary = format!(
        "{}image {image} of container {} {what}{}",
        if audit { "(audit) " } else { "" },
        container.id,
        j.policy
            .map(|p| format!(
                " (trust.policy[{p}] requires {})",
                j.keys_tried.join(" or ")
            ))
            .unwrap_or_default()
    );
    let path = crate::process::absolute(&exec.filename, exec.cwd.as_deref());
    Some(AlertDraft {
        kind,
        severity: audit.then_some(Severity::Info),
        summary,
        container: container.alert_container(None),
        process: Some(crate::process::exec_actor(exec, &path, ancestry)),
        evidence: Some(Evidence {
            path: Some(path),
            reason: j.reason.chars().take(1024).collect(),
            signature: Some(SignatureEvidence {
                state: j.state.as_str().into(),
                image,
                digests: j.digests.iter().map(|d| d.to_string()).collect(),
                policy: j
                    .policy
                    .map(|p| format!("trust.policy[{p}]"))
                    .unwrap_or_default(),
                mode: j.mode.map(|m| m.as_str()).unwrap_or("enforce").into(),
                keys_tried: j.keys_tried.clone(),
                signatures: found(j),
            }),
            ..Evidence::default()
        }),
        loss: None,
    })
}

/// Signatures shown in one alert; the rest are counted (an alert must stay well inside the
/// journal's record limit whatever a hostile registry attached).
const SHOWN: usize = 16;

fn found(j: &Judgement) -> Vec<SignatureFound> {
    let mut out: Vec<SignatureFound> = j
        .signatures
        .iter()
        .take(SHOWN)
        .map(|s| SignatureFound {
            source: s.source.chars().take(512).collect(),
            format: s.format.into(),
            key: s.key.clone(),
            result: s.result.chars().take(512).collect(),
        })
        .collect();
    if j.signatures.len() > SHOWN {
        out.push(SignatureFound {
            source: format!("{} more", j.signatures.len() - SHOWN),
            format: "omitted".into(),
            key: None,
            result: "not shown in the alert; `layerguard image verify` lists them all".into(),
        });
    }
    out
}
