//! `[trust]`: which keys sign the images this node may run, and which images must be signed.
//! The keys, their defaults and what a value must be; reading key files and judging
//! signatures are `trust/`'s.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// `[trust]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Run the trust analyzer (a restart is needed to turn it on or off; SIGHUP reloads
    /// the rest of the section).
    pub enabled: bool,
    /// Directories of signatures besides containerd's content store: `*.sigstore.json`
    /// (or any `*.json`) bundles and OCI layouts as `cosign save` writes them.
    pub signature_dirs: Vec<PathBuf>,
    /// Rekor's public key (PEM): a signature's transparency-log entry is verified with it
    /// when the signature carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rekor_public_key: Option<PathBuf>,
    /// Accept keyed signatures without a transparency-log entry (cosign
    /// `--insecure-ignore-tlog`; what an offline signer makes). With `false`, every
    /// signature needs an entry verified with `rekor_public_key`.
    pub allow_no_tlog: bool,
    /// A verdict other than `signed` is judged again after this long, so a signature
    /// imported after the first container is found for the next one.
    pub recheck_seconds: u64,
    /// `[[trust.keys]]`.
    pub keys: Vec<TrustKeyConfig>,
    /// `[[trust.policy]]`, first match wins.
    pub policy: Vec<TrustPolicyConfig>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            signature_dirs: Vec::new(),
            rekor_public_key: None,
            allow_no_tlog: true,
            recheck_seconds: 60,
            keys: Vec::new(),
            policy: Vec::new(),
        }
    }
}

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs and verifies.
    Active,
    /// No longer signs; its signatures verify until its `not_after`.
    Retired,
    /// Compromised: its signatures never verify, and say so.
    Revoked,
}

impl KeyStatus {
    /// The name in the config and in evidence.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }
}

/// One `[[trust.keys]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustKeyConfig {
    /// The name policies and evidence use.
    pub id: String,
    /// PEM public key (SPKI, `-----BEGIN PUBLIC KEY-----`, as `cosign generate-key-pair`
    /// writes `cosign.pub`): ECDSA P-256 or P-384.
    pub public_key: PathBuf,
    /// Signatures verify from this time on (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Rfc3339>,
    /// ...and until this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Rfc3339>,
    /// `active`, `retired` or `revoked`.
    #[serde(default = "active")]
    pub status: KeyStatus,
}

fn active() -> KeyStatus {
    KeyStatus::Active
}

/// Whether a policy's failures are alerts or records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustMode {
    /// A missing or bad signature is an alert of its kind's severity.
    Enforce,
    /// The same alert kinds, as `info` records.
    Audit,
}

impl TrustMode {
    /// The name in the config and in evidence.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

/// One `[[trust.policy]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicyConfig {
    /// Image reference globs: `*` matches within one path component, `**` across them.
    /// A reference matches as written and in its Docker-normalized form
    /// (`alpine` is `docker.io/library/alpine:latest`).
    pub images: Vec<String>,
    /// Ids of the keys whose signature the images need (any one of them).
    pub keys: Vec<String>,
    /// `enforce` or `audit`.
    #[serde(default = "enforce")]
    pub mode: TrustMode,
}

fn enforce() -> TrustMode {
    TrustMode::Enforce
}

/// A time as RFC 3339 text (`2027-01-01T00:00:00Z`), also accepted as a bare TOML
/// datetime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TimeValue", into = "String")]
pub struct Rfc3339 {
    text: String,
    time: SystemTime,
}

impl Rfc3339 {
    /// The instant.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// As written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl From<Rfc3339> for String {
    fn from(t: Rfc3339) -> String {
        t.text
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TimeValue {
    Text(String),
    Toml(toml::value::Datetime),
}

impl TryFrom<TimeValue> for Rfc3339 {
    type Error = String;
    fn try_from(v: TimeValue) -> Result<Self, String> {
        let text = match v {
            TimeValue::Text(t) => t,
            TimeValue::Toml(d) => d.to_string(),
        };
        let time = humantime::parse_rfc3339_weak(&text)
            .ok()
            .filter(|_| text.ends_with('Z') || text.ends_with("+00:00"))
            .ok_or_else(|| {
                format!("{text:?} is not an RFC 3339 time in UTC (like 2027-01-01T00:00:00Z)")
            })?;
        Ok(Self { text, time })
    }
}

impl TrustConfig {
    /// `recheck_seconds` as a duration.
    pub fn recheck(&self) -> Duration {
        Duration::from_secs(self.recheck_seconds)
    }

    /// The key of that id.
    pub fn key(&self, id: &str) -> Option<&TrustKeyConfig> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: String, problem: String| Err((key, problem));
        if self.recheck_seconds == 0 {
            return bad("trust.recheck_seconds".into(), "must be at least 1".into());
        }
        if !self.allow_no_tlog && self.rekor_public_key.is_none() {
            return bad(
                "trust.allow_no_tlog".into(),
                "is false, so every signature needs a verified tlog entry, but no \
                 trust.rekor_public_key is set to verify one with"
                    .into(),
            );
        }
        for (i, key) in self.keys.iter().enumerate() {
            let at = |field: &str| format!("trust.keys[{i}].{field}");
            if key.id.trim().is_empty() {
                return bad(at("id"), "must not be empty".into());
            }
            if self.keys[..i].iter().any(|k| k.id == key.id) {
                return bad(at("id"), format!("{:?} is used by another key", key.id));
            }
            if let (Some(from), Some(to)) = (&key.not_before, &key.not_after) {
                if from.time() >= to.time() {
                    return bad(
                        at("not_after"),
                        format!("{} is not after not_before {}", to.text(), from.text()),
                    );
                }
            }
            if key.status == KeyStatus::Retired && key.not_after.is_none() {
                return bad(
                    at("not_after"),
                    format!(
                        "key {:?} is retired, so it needs the time until which its \
                         signatures still verify",
                        key.id
                    ),
                );
            }
        }
        for (i, policy) in self.policy.iter().enumerate() {
            let at = |field: &str| format!("trust.policy[{i}].{field}");
            if policy.images.is_empty() {
                return bad(at("images"), "must name at least one image glob".into());
            }
            if let Some(glob) = policy.images.iter().find(|g| g.trim().is_empty()) {
                return bad(at("images"), format!("has an empty glob {glob:?}"));
            }
            if policy.keys.is_empty() {
                return bad(at("keys"), "must name at least one key id".into());
            }
            if let Some(id) = policy.keys.iter().find(|id| self.key(id).is_none()) {
                let known: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
                return bad(
                    at("keys"),
                    format!("names key {id:?}, which no [[trust.keys]] has (known: {known:?})"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrustConfig, String> {
        let c: TrustConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        c.validate().map_err(|(k, p)| format!("{k} {p}"))?;
        Ok(c)
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse(
            r#"
            signature_dirs = ["/etc/layerguard/signatures"]
            allow_no_tlog = true
            [[keys]]
            id = "release-2026"
            public_key = "/etc/layerguard/keys/release-2026.pub"
            not_before = "2026-01-01T00:00:00Z"
            not_after = 2027-01-01T00:00:00Z
            status = "active"
            [[policy]]
            images = ["registry.example.com/prod/*"]
            keys = ["release-2026"]
            mode = "enforce"
            "#,
        )
        .unwrap();
        let key = c.key("release-2026").unwrap();
        assert_eq!(
            key.not_after.as_ref().unwrap().text(),
            "2027-01-01T00:00:00Z"
        );
        assert!(key.not_before.as_ref().unwrap().time() < key.not_after.as_ref().unwrap().time());
        assert_eq!(c.policy[0].mode, TrustMode::Enforce);
    }

    #[test]
    fn bad_trust_sections_name_the_key_and_the_problem() {
        let key = "[[keys]]\nid = \"k\"\npublic_key = \"/k.pub\"\n";
        for (text, want) in [
            (format!("{key}[[policy]]\nimages = [\"x/*\"]\nkeys = [\"other\"]"), "trust.policy[0].keys names key \"other\""),
            (format!("{key}{key}"), "trust.keys[1].id \"k\" is used"),
            (format!("{key}status = \"retired\""), "trust.keys[0].not_after key \"k\" is retired"),
            (format!("{key}not_after = \"tomorrow\""), "not an RFC 3339 time"),
            (format!("{key}not_before = \"2027-01-01T00:00:00Z\"\nnot_after = \"2026-01-01T00:00:00Z\""), "is not after not_before"),
            (format!("{key}status = \"lost\""), "unknown variant `lost`"),
            (format!("{key}[[policy]]\nimages = []\nkeys = [\"k\"]"), "trust.policy[0].images must name"),
            ("allow_no_tlog = false".into(), "no trust.rekor_public_key"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
