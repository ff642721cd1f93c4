//! Which alerts a subscriber or a listing wants: `layerguard.v1.AlertFilter`, validated
//! once per request and then matched against every alert.
//!
//! Owns the matching rules (documented on the proto message). Pure: no I/O, no state.

use super::convert::{kind_from_proto, severity_from_proto, ConvertError};
use crate::alert::{Alert, AlertKind, Severity};
use layerguard_proto::v1 as pb;

/// Values per repeated field; a longer list is a mistake or an abuse, not a filter.
pub const MAX_VALUES: usize = 256;
/// A container id filter at least this long, in lowercase hex, also matches ids it is a
/// prefix of (the truncated ids `ctr`, `crictl` and `docker` print).
pub const MIN_ID_PREFIX: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("filter: {0}")]
    Enum(#[from] ConvertError),
    #[error("filter: {field} has {count} values, more than {MAX_VALUES}")]
    TooMany { field: &'static str, count: usize },
    #[error("filter: {field} has an empty value")]
    Empty { field: &'static str },
}

/// What a subscriber or a listing wants; empty fields match everything (see the proto).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only alerts at least this severe.
    pub min_severity: Option<Severity>,
    /// Only these kinds.
    pub kinds: Vec<AlertKind>,
    /// Only these container ids (or 12+ character hex prefixes of them).
    pub container_ids: Vec<String>,
    /// Only these containerd namespaces.
    pub containerd_namespaces: Vec<String>,
    /// Only these Kubernetes pod namespaces.
    pub pod_namespaces: Vec<String>,
    /// Only these images: a full reference, or a repository for all its tags.
    pub image_refs: Vec<String>,
}

impl AlertFilter {
    /// From the wire, validated.
    pub fn from_proto(f: Option<pb::AlertFilter>) -> Result<Self, FilterError> {
        let Some(f) = f else {
            return Ok(Self::default());
        };
        let mut kinds = Vec::new();
        for k in &f.kinds {
            if let Some(k) = kind_from_proto(*k)? {
                kinds.push(k);
            }
        }
        let strings = |field: &'static str, v: Vec<String>| -> Result<Vec<String>, FilterError> {
            if v.len() > MAX_VALUES {
                return Err(FilterError::TooMany {
                    field,
                    count: v.len(),
                });
            }
            if v.iter().any(|s| s.trim().is_empty()) {
                return Err(FilterError::Empty { field });
            }
            Ok(v)
        };
        if f.kinds.len() > MAX_VALUES {
            return Err(FilterError::TooMany {
                field: "kinds",
                count: f.kinds.len(),
            });
        }
        Ok(Self {
            min_severity: severity_from_proto(f.min_severity)?,
            kinds,
            container_ids: strings("container_ids", f.container_ids)?,
            containerd_namespaces: strings("containerd_namespaces", f.containerd_namespaces)?,
            pod_namespaces: strings("pod_namespaces", f.pod_namespaces)?,
            image_refs: strings("image_refs", f.image_refs)?,
        })
    }

    /// To the wire.
    pub fn to_proto(&self) -> pb::AlertFilter {
        pb::AlertFilter {
            min_severity: self
                .min_severity
                .map_or(pb::Severity::Unspecified, super::convert::severity_to_proto)
                as i32,
            kinds: self
                .kinds
                .iter()
                .map(|k| super::convert::kind_to_proto(*k) as i32)
                .collect(),
            container_ids: self.container_ids.clone(),
            containerd_namespaces: self.containerd_namespaces.clone(),
            pod_namespaces: self.pod_namespaces.clone(),
            image_refs: self.image_refs.clone(),
        }
    }

    /// True when the alert passes every field's test.
    pub fn matches(&self, a: &Alert) -> bool {
        if self.min_severity.is_some_and(|min| a.severity < min) {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&a.kind) {
            return false;
        }
        // Node-wide alerts (lost events) pass the container fields: loss can hide alerts
        // of any container, so every subscriber must hear of it.
        let Some(c) = a.container.as_ref() else {
            return true;
        };
        let any = |values: &[String], pred: &dyn Fn(&str) -> bool| {
            values.is_empty() || values.iter().any(|v| pred(v))
        };
        any(&self.container_ids, &|v| id_matches(v, &c.id))
            && any(&self.containerd_namespaces, &|v| v == c.namespace)
            && any(&self.pod_namespaces, &|v| {
                c.pod_namespace.as_deref() == Some(v)
            })
            && any(&self.image_refs, &|v| {
                c.image.as_deref().is_some_and(|i| image_matches(v, i))
            })
    }
}

fn id_matches(filter: &str, id: &str) -> bool {
    filter == id
        || (filter.len() >= MIN_ID_PREFIX
            && filter
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && id.starts_with(filter))
}

/// `filter` equals the reference, or names its repository (no tag, no digest).
fn image_matches(filter: &str, reference: &str) -> bool {
    filter == reference || repository(reference) == filter
}

/// `registry/path/name` of `registry/path/name:tag@sha256:...`.
fn repository(reference: &str) -> &str {
    let no_digest = reference.split_once('@').map_or(reference, |(r, _)| r);
    match no_digest.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::full_alert;

    fn alert(kind: AlertKind, ns: &str, id: &str, pod_ns: Option<&str>, image: &str) -> Alert {
        let mut a = full_alert(1);
        a.kind = kind;
        a.severity = kind.severity();
        let c = a.container.as_mut().unwrap();
        c.namespace = ns.into();
        c.id = id.into();
        c.pod_namespace = pod_ns.map(Into::into);
        c.image = Some(image.into());
        a
    }

    #[test]
    fn an_empty_filter_selects_everything() {
        let f = AlertFilter::from_proto(None).unwrap();
        assert!(f.matches(&full_alert(1)));
        assert_eq!(AlertFilter::from_proto(Some(f.to_proto())).unwrap(), f);
    }

    #[test]
    fn fields_are_anded_and_values_ored() {
        let f = AlertFilter {
            min_severity: Some(Severity::High),
            kinds: vec![AlertKind::ExecNotInImage, AlertKind::ExecModified],
            containerd_namespaces: vec!["default".into(), "k8s.io".into()],
            ..AlertFilter::default()
        };
        let hit = alert(AlertKind::ExecNotInImage, "default", "a", None, "x");
        assert!(f.matches(&hit));
        assert!(!f.matches(&alert(AlertKind::ExecNotInImage, "moby", "a", None, "x")));
        assert!(!f.matches(&alert(AlertKind::ExecFileless, "default", "a", None, "x")));
        let mut low = hit.clone();
        low.severity = Severity::Medium;
        assert!(!f.matches(&low), "below the minimum severity");
    }

    #[test]
    fn container_ids_match_exactly_or_by_a_long_hex_prefix() {
        let hex = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4";
        let f = |v: &str| AlertFilter {
            container_ids: vec![v.into()],
            ..AlertFilter::default()
        };
        let a = |id: &str| alert(AlertKind::ExecModified, "k8s.io", id, None, "x");
        assert!(f(hex).matches(&a(hex)));
        assert!(f(&hex[..12]).matches(&a(hex)));
        assert!(!f(&hex[..6]).matches(&a(hex)), "too short to be a prefix");
        // Chosen ids are never prefixes of one another: test-1 must not select test-10.
        assert!(f("exec-gate-1").matches(&a("exec-gate-1")));
        assert!(!f("exec-gate-1").matches(&a("exec-gate-10")));
    }

    #[test]
    fn pod_namespaces_and_images() {
        let f = AlertFilter {
            pod_namespaces: vec!["shop".into()],
            image_refs: vec!["registry:5000/team/nginx".into()],
            ..AlertFilter::default()
        };
        let tagged = alert(
            AlertKind::ExecModified,
            "k8s.io",
            "a",
            Some("shop"),
            "registry:5000/team/nginx:1.27",
        );
        assert!(f.matches(&tagged));
        let digested = alert(
            AlertKind::ExecModified,
            "k8s.io",
            "a",
            Some("shop"),
            "registry:5000/team/nginx@sha256:abc",
        );
        assert!(f.matches(&digested));
        let other_ns = alert(
            AlertKind::ExecModified,
            "k8s.io",
            "a",
            Some("kube-system"),
            "registry:5000/team/nginx:1.27",
        );
        assert!(!f.matches(&other_ns));
        let no_pod = alert(
            AlertKind::ExecModified,
            "k8s.io",
            "a",
            None,
            "registry:5000/team/nginx:1.27",
        );
        assert!(!f.matches(&no_pod));
        let exact = AlertFilter {
            image_refs: vec!["registry:5000/team/nginx:1.27".into()],
            ..AlertFilter::default()
        };
        assert!(exact.matches(&tagged));
        assert!(!exact.matches(&digested));
        assert_eq!(repository("registry:5000/nginx"), "registry:5000/nginx");
    }

    #[test]
    fn node_wide_alerts_pass_container_fields_but_not_kinds() {
        let mut loss = full_alert(1);
        loss.kind = AlertKind::SensorEventsLost;
        loss.severity = Severity::Medium;
        loss.container = None;
        let scoped = AlertFilter {
            container_ids: vec!["a".into()],
            ..AlertFilter::default()
        };
        assert!(scoped.matches(&loss));
        let kinds = AlertFilter {
            kinds: vec![AlertKind::ExecModified],
            ..AlertFilter::default()
        };
        assert!(!kinds.matches(&loss));
    }

    #[test]
    fn bad_filters_are_refused() {
        let bad_kind = pb::AlertFilter {
            kinds: vec![42],
            ..Default::default()
        };
        assert!(matches!(
            AlertFilter::from_proto(Some(bad_kind)),
            Err(FilterError::Enum(_))
        ));
        let empty = pb::AlertFilter {
            pod_namespaces: vec!["".into()],
            ..Default::default()
        };
        assert_eq!(
            AlertFilter::from_proto(Some(empty)),
            Err(FilterError::Empty {
                field: "pod_namespaces"
            })
        );
        let many = pb::AlertFilter {
            container_ids: vec!["x".into(); MAX_VALUES + 1],
            ..Default::default()
        };
        assert!(matches!(
            AlertFilter::from_proto(Some(many)),
            Err(FilterError::TooMany { .. })
        ));
    }
}
