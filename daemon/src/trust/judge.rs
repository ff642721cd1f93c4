//! The signature verdict of an image: a pure function of the image's digests, the
//! signatures found for it, the trust set and the time.
//!
//! Owns the rules: one signature that verifies with a key of the image's policy, valid at
//! this time, with its tlog entry checked as configured, makes the image `signed`; a
//! revoked key's signature is `key_revoked`; an expired or not yet valid key's is
//! `key_expired`; anything else found is `signature_invalid`; nothing found is `unsigned`.
//! Several signatures: `signed` wins, then revoked, invalid, expired.

use super::formats::{Candidate, Found};
use super::keys::{KeyStanding, Policy, TrustSet};
use crate::config::TrustMode;
use crate::image::digest::Digest;
use std::time::SystemTime;

/// The signature state of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureState {
    /// No policy matches the image: nothing is required and nothing alerts.
    NotRequired,
    /// A signature verified with a key of the image's policy.
    Signed {
        /// The key's id.
        key: String,
    },
    /// A policy requires a signature and none was found.
    Unsigned,
    /// Signatures were found; none is valid (malformed, for another image, by no key of
    /// the policy, its tlog entry failing).
    SignatureInvalid,
    /// Signed by a revoked key of the policy.
    KeyRevoked,
    /// Signed by a key of the policy outside its validity period.
    KeyExpired,
    /// The signatures could not be looked for (containerd unreachable, the image's digest
    /// unknown): judged again at the container's next exec.
    Unverifiable,
}

impl SignatureState {
    /// The name in evidence, listings and status.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotRequired => "not_required",
            Self::Signed { .. } => "signed",
            Self::Unsigned => "unsigned",
            Self::SignatureInvalid => "signature_invalid",
            Self::KeyRevoked => "key_revoked",
            Self::KeyExpired => "key_expired",
            Self::Unverifiable => "unverifiable",
        }
    }

    /// Every name, for status.
    pub const NAMES: [&'static str; 7] = [
        "not_required",
        "signed",
        "unsigned",
        "signature_invalid",
        "key_revoked",
        "key_expired",
        "unverifiable",
    ];
}

/// What became of one signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureReport {
    /// Where it was found.
    pub source: String,
    /// `cosign-simple-signing`, `sigstore-bundle-dsse`, or `unparsable`.
    pub format: &'static str,
    /// The key it verified with, if any.
    pub key: Option<String>,
    /// `verified`, or what is wrong.
    pub result: String,
}

/// An image's verdict and everything that explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// The verdict.
    pub state: SignatureState,
    /// One sentence.
    pub reason: String,
    /// `trust.policy[N]`, when one matched.
    pub policy: Option<usize>,
    /// The policy's mode.
    pub mode: Option<TrustMode>,
    /// The digests signatures were looked for under (index, then platform manifest).
    pub digests: Vec<Digest>,
    /// Every signature found, and what became of it.
    pub signatures: Vec<SignatureReport>,
    /// The keys a signature had to verify with (the policy's).
    pub keys_tried: Vec<String>,
    /// When this verdict must be judged again (a key's validity ends or begins).
    pub valid_until: Option<SystemTime>,
}

/// How one signature fared, ordered from worst for the image to best.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Expired,
    Invalid,
    Revoked,
    Signed,
}

fn rank(o: Outcome) -> u8 {
    // Which outcome the image's verdict takes when several signatures disagree.
    match o {
        Outcome::Signed => 3,
        Outcome::Revoked => 2,
        Outcome::Invalid => 1,
        Outcome::Expired => 0,
    }
}

fn short(d: &Digest) -> String {
    format!("sha256:{}", &d.hex()[..12])
}

/// One signature against the policy's keys.
fn judge_one(
    c: &Candidate,
    digests: &[Digest],
    policy: &Policy,
    trust: &TrustSet,
    now: SystemTime,
) -> (Outcome, Option<String>, String) {
    if !c.digests.iter().any(|d| digests.contains(d)) {
        let named: Vec<String> = c.digests.iter().map(|d| d.to_string()).collect();
        let ours: Vec<String> = digests.iter().map(short).collect();
        return (
            Outcome::Invalid,
            None,
            format!(
                "its payload names {}, not this image ({})",
                named.join(", "),
                ours.join(", ")
            ),
        );
    }
    // Policy keys first; then the other configured keys, to explain who did sign it.
    let ordered = policy
        .keys
        .iter()
        .filter_map(|id| trust.key(id))
        .chain(trust.keys.iter().filter(|k| !policy.keys.contains(&k.id)));
    let Some(key) = ordered
        .into_iter()
        .find(|k| k.key.verifies(&c.signed, &c.signature))
    else {
        return (
            Outcome::Invalid,
            None,
            format!(
                "the signature verifies with none of the configured keys ({})",
                trust
                    .keys
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    let id = Some(key.id.clone());
    if !policy.keys.contains(&key.id) {
        return (
            Outcome::Invalid,
            id,
            format!(
                "signed by key {}, which trust.policy[{}] does not accept (it needs {})",
                key.id,
                policy.index,
                policy.keys.join(" or ")
            ),
        );
    }
    match key.standing(now) {
        KeyStanding::Revoked => {
            return (
                Outcome::Revoked,
                id,
                format!("signed by key {}, which is revoked", key.id),
            )
        }
        KeyStanding::Expired => {
            return (
                Outcome::Expired,
                id,
                format!(
                    "signed by key {}, whose validity ended at {}",
                    key.id,
                    rfc3339(key.not_after)
                ),
            )
        }
        KeyStanding::NotYetValid => {
            return (
                Outcome::Expired,
                id,
                format!(
                    "signed by key {}, which is not valid before {}",
                    key.id,
                    rfc3339(key.not_before)
                ),
            )
        }
        KeyStanding::Valid => {}
    }
    let mut verified = match (&trust.rekor, c.tlog.is_empty()) {
        (_, true) if !trust.allow_no_tlog => {
            return (
                Outcome::Invalid,
                id,
                format!(
                    "signed by key {}, but without a tlog entry, which trust.allow_no_tlog = false requires",
                    key.id
                ),
            )
        }
        (Some(rekor), false) => {
            // A bundle's entries are shared by its signatures: one entry that verifies
            // and carries this signature is enough.
            let checked: Vec<Result<(), String>> =
                c.tlog.iter().map(|e| e.verify(rekor, &c.signature)).collect();
            if let (false, Some(Err(e))) =
                (checked.iter().any(|r| r.is_ok()), checked.iter().find(|r| r.is_err()))
            {
                return (
                    Outcome::Invalid,
                    id,
                    format!("signed by key {}, but {e}", key.id),
                );
            }
            (
                Outcome::Signed,
                id,
                format!("verified with key {} and its tlog entry", key.id),
            )
        }
        (None, false) => (
            Outcome::Signed,
            id,
            format!(
                "verified with key {} (its tlog entry was not checked: no trust.rekor_public_key)",
                key.id
            ),
        ),
        (_, true) => (
            Outcome::Signed,
            id,
            format!("verified with key {}", key.id),
        ),
    };
    // A retired key's signature says so: it stops verifying at the key's `not_after`.
    if verified.0 == Outcome::Signed && key.status == crate::config::KeyStatus::Retired {
        verified.2.push_str(&format!(
            " (a retired key, valid until {})",
            rfc3339(key.not_after)
        ));
    }
    verified
}

fn rfc3339(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "-".into())
}

/// The verdict for an image known as `reference` with `digests`, given the signatures
/// found for those digests.
pub fn judge(
    reference: &str,
    digests: &[Digest],
    found: &[Found],
    trust: &TrustSet,
    now: SystemTime,
) -> Judgement {
    let Some(policy) = trust.policy_for(reference) else {
        return Judgement {
            state: SignatureState::NotRequired,
            reason: format!("no [[trust.policy]] matches {reference}"),
            policy: None,
            mode: None,
            digests: digests.to_vec(),
            signatures: Vec::new(),
            keys_tried: Vec::new(),
            valid_until: None,
        };
    };
    let mut reports = Vec::with_capacity(found.len());
    let mut best: Option<(Outcome, String, Option<String>)> = None;
    for f in found {
        let (outcome, key, result) = match &f.parsed {
            Err(reason) => (Outcome::Invalid, None, reason.clone()),
            Ok(c) => judge_one(c, digests, policy, trust, now),
        };
        reports.push(SignatureReport {
            source: f.source.clone(),
            format: f
                .parsed
                .as_ref()
                .map(|c| c.format.as_str())
                .unwrap_or("unparsable"),
            key: key.clone(),
            result: result.clone(),
        });
        if best
            .as_ref()
            .is_none_or(|(b, _, _)| rank(outcome) > rank(*b))
        {
            best = Some((outcome, format!("{}: {result}", f.source), key));
        }
    }
    let (state, reason, valid_until) = match best {
        None => (
            SignatureState::Unsigned,
            format!(
                "no signature found for {reference} ({}); trust.policy[{}] requires one by {}",
                digests.iter().map(short).collect::<Vec<_>>().join(", "),
                policy.index,
                policy.keys.join(" or ")
            ),
            Some(now + trust.recheck),
        ),
        Some((outcome, reason, key)) => {
            let state = match outcome {
                Outcome::Signed => SignatureState::Signed {
                    key: key.clone().unwrap_or_default(),
                },
                Outcome::Revoked => SignatureState::KeyRevoked,
                Outcome::Invalid => SignatureState::SignatureInvalid,
                Outcome::Expired => SignatureState::KeyExpired,
            };
            let until = match (&state, key.as_deref().and_then(|k| trust.key(k))) {
                (SignatureState::Signed { .. }, Some(k)) => k.not_after,
                _ => Some(now + trust.recheck),
            };
            (state, reason, until)
        }
    };
    Judgement {
        state,
        reason,
        policy: Some(policy.index),
        mode: Some(policy.mode),
        digests: digests.to_vec(),
        signatures: reports,
        keys_tried: policy.keys.clone(),
        valid_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyStatus;
    use crate::trust::formats::{self, tests as f};
    use crate::trust::keys::tests::{key_pair, sign};
    use crate::trust::keys::{PublicKey, TrustKey};
    use crate::trust::rekor::tests::entry_for;
    use base64::Engine;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn key(id: &str, key: PublicKey, status: KeyStatus) -> TrustKey {
        TrustKey {
            id: id.into(),
            path: format!("/keys/{id}.pub").into(),
            key,
            not_before: None,
            not_after: None,
            status,
        }
    }

    fn trust(keys: Vec<TrustKey>, policy_keys: &[&str]) -> TrustSet {
        TrustSet {
            generation: 1,
            keys,
            policies: vec![Policy {
                index: 0,
                images: vec!["layerguard.test/*".into()],
                keys: policy_keys.iter().map(|s| s.to_string()).collect(),
                mode: TrustMode::Enforce,
            }],
            rekor: None,
            allow_no_tlog: true,
            signature_dirs: vec![],
            recheck: Duration::from_secs(60),
        }
    }

    fn simple(signer: &p256::ecdsa::SigningKey, names: &Digest) -> Found {
        let payload = f::payload_for(names);
        let sig = base64::engine::general_purpose::STANDARD.encode(sign(signer, &payload));
        let layers = formats::simple_signing_layers(&f::sig_manifest(&payload, &sig)).unwrap();
        Found {
            source: "repo:sha256-x.sig".into(),
            parsed: formats::simple_signing(&layers[0], &payload),
        }
    }

    #[test]
    fn each_state_follows_from_keys_signatures_and_time() {
        let image = Digest::of(b"image");
        let index = Digest::of(b"index");
        let other = Digest::of(b"other image");
        let (a, pa) = key_pair(1);
        let (b, pb) = key_pair(2);
        let (c, _) = key_pair(3);
        let now = SystemTime::UNIX_EPOCH + 20_000 * DAY;
        let set = trust(
            vec![
                key("a", pa.clone(), KeyStatus::Active),
                key("b", pb.clone(), KeyStatus::Active),
            ],
            &["a"],
        );
        let digests = [index, image];
        let j = |found: &[Found], set: &TrustSet| {
            judge("layerguard.test/app:1", &digests, found, set, now)
        };

        assert_eq!(
            j(&[simple(&a, &image)], &set).state,
            SignatureState::Signed { key: "a".into() }
        );
        // The index digest is what `cosign sign` signs.
        assert_eq!(
            j(&[simple(&a, &index)], &set).state,
            SignatureState::Signed { key: "a".into() }
        );
        assert_eq!(j(&[], &set).state, SignatureState::Unsigned);
        let wrong_key = j(&[simple(&b, &image)], &set);
        assert_eq!(wrong_key.state, SignatureState::SignatureInvalid);
        assert!(
            wrong_key
                .reason
                .contains("signed by key b, which trust.policy[0] does not accept"),
            "{}",
            wrong_key.reason
        );
        let unknown = j(&[simple(&c, &image)], &set);
        assert!(
            unknown
                .reason
                .contains("none of the configured keys (a, b)"),
            "{}",
            unknown.reason
        );
        let elsewhere = j(&[simple(&a, &other)], &set);
        assert_eq!(elsewhere.state, SignatureState::SignatureInvalid);
        assert!(
            elsewhere.reason.contains(&format!("names {other}")),
            "{}",
            elsewhere.reason
        );
        let broken = Found {
            source: "x".into(),
            parsed: Err("broken base64".into()),
        };
        assert_eq!(
            j(std::slice::from_ref(&broken), &set).state,
            SignatureState::SignatureInvalid
        );
        // One good signature is enough.
        assert_eq!(
            j(&[broken, simple(&a, &image)], &set).state,
            SignatureState::Signed { key: "a".into() }
        );

        let mut revoked = set.clone();
        revoked.keys[0].status = KeyStatus::Revoked;
        assert_eq!(
            j(&[simple(&a, &image)], &revoked).state,
            SignatureState::KeyRevoked
        );

        let mut expired = set.clone();
        expired.keys[0].not_after = Some(now - DAY);
        let e = j(&[simple(&a, &image)], &expired);
        assert_eq!(e.state, SignatureState::KeyExpired);
        assert!(e.reason.contains("validity ended"), "{}", e.reason);
        expired.keys[0].not_after = None;
        expired.keys[0].not_before = Some(now + DAY);
        assert_eq!(
            j(&[simple(&a, &image)], &expired).state,
            SignatureState::KeyExpired
        );

        // A retired key verifies until its not_after, and the verdict says when to look again.
        let mut retired = set.clone();
        retired.keys[0].status = KeyStatus::Retired;
        retired.keys[0].not_after = Some(now + DAY);
        let r = j(&[simple(&a, &image)], &retired);
        assert_eq!(r.state, SignatureState::Signed { key: "a".into() });
        assert_eq!(r.valid_until, Some(now + DAY));
        assert!(r.reason.contains("retired"));
        let later = judge(
            "layerguard.test/app:1",
            &digests,
            &[simple(&a, &image)],
            &retired,
            now + 2 * DAY,
        );
        assert_eq!(later.state, SignatureState::KeyExpired);

        // Several active keys at once.
        let mut both = set.clone();
        both.policies[0].keys.push("b".into());
        assert_eq!(
            j(&[simple(&b, &image)], &both).state,
            SignatureState::Signed { key: "b".into() }
        );

        // Not covered by any policy.
        let none = judge("elsewhere.test/app:1", &digests, &[], &set, now);
        assert_eq!(none.state, SignatureState::NotRequired);
    }

    #[test]
    fn bundles_are_judged_like_simple_signatures() {
        let image = Digest::of(b"image");
        let (a, pa) = key_pair(1);
        let set = trust(vec![key("a", pa, KeyStatus::Active)], &["a"]);
        let found: Vec<Found> = formats::bundle(&f::bundle_for(&a, &image))
            .unwrap()
            .into_iter()
            .map(|c| Found {
                source: "b.sigstore.json".into(),
                parsed: Ok(c),
            })
            .collect();
        let j = judge(
            "layerguard.test/app",
            &[image],
            &found,
            &set,
            SystemTime::now(),
        );
        assert_eq!(j.state, SignatureState::Signed { key: "a".into() });
        assert_eq!(j.signatures[0].format, "sigstore-bundle-dsse");
    }

    #[test]
    fn tlog_entries_are_checked_as_configured() {
        let image = Digest::of(b"image");
        let (a, pa) = key_pair(1);
        let (rekor, rekor_pub) = key_pair(9);
        let mut set = trust(vec![key("a", pa, KeyStatus::Active)], &["a"]);
        let plain = simple(&a, &image);
        let mut logged = plain.clone();
        if let Ok(c) = &mut logged.parsed {
            c.tlog = vec![entry_for(&rekor, &c.signature.clone())];
        }
        let now = SystemTime::now();
        let j = |found: &Found, set: &TrustSet| {
            judge(
                "layerguard.test/app",
                &[image],
                std::slice::from_ref(found),
                set,
                now,
            )
        };
        assert!(j(&logged, &set).reason.contains("not checked"));
        set.rekor = Some(rekor_pub);
        assert!(j(&logged, &set).reason.contains("and its tlog entry"));
        assert_eq!(
            j(&plain, &set).state,
            SignatureState::Signed { key: "a".into() }
        );
        set.allow_no_tlog = false;
        assert_eq!(j(&plain, &set).state, SignatureState::SignatureInvalid);
        assert_eq!(
            j(&logged, &set).state,
            SignatureState::Signed { key: "a".into() }
        );
        let (_, other) = key_pair(7);
        set.rekor = Some(other);
        assert_eq!(j(&logged, &set).state, SignatureState::SignatureInvalid);
    }
}
