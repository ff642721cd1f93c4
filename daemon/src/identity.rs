//! What the node knows about one container, and what the containers stage attaches to an
//! event: the vocabulary every later stage (and the API, the metrics) speaks.
//!
//! Owns the data types: the key a container is known by, its identity (image, digests, CRI
//! pod fields), and the [`Attribution`] an event leaves the containers stage with,
//! including how that serializes into a log record. No I/O and no lookups happen here. A
//! leaf: it depends on no other module of the daemon.

use crate::alert::AlertContainer;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// CRI (kubelet) labels containerd keeps on every container it creates for a pod.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// A container is only unique within its containerd namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerKey {
    pub namespace: String,
    pub id: String,
}

impl ContainerKey {
    pub fn new(namespace: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for ContainerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.id)
    }
}

/// One container as containerd describes it. Shared (`Arc`) by every event attributed to
/// it, so attributing an event costs a reference count, not a copy of the labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub namespace: String,
    pub id: String,
    /// The image reference the container was created from (`docker.io/library/x:1`).
    pub image: Option<String>,
    /// The image manifest the container runs: the platform manifest when the image is an
    /// index, else the image target itself.
    pub manifest_digest: Option<String>,
    /// The image index (manifest list) the manifest was picked from, if there was one.
    pub index_digest: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: Option<SystemTime>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub container_name: Option<String>,
}

impl ContainerInfo {
    /// Builds the identity and copies the CRI pod fields out of the labels.
    pub fn new(
        namespace: impl Into<String>,
        id: impl Into<String>,
        image: Option<String>,
        labels: BTreeMap<String, String>,
        created_at: Option<SystemTime>,
    ) -> Self {
        let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
        Self {
            namespace: namespace.into(),
            id: id.into(),
            image: image.filter(|i| !i.is_empty()),
            manifest_digest: None,
            index_digest: None,
            pod_name: label(LABEL_POD_NAME),
            pod_namespace: label(LABEL_POD_NAMESPACE),
            pod_uid: label(LABEL_POD_UID),
            container_name: label(LABEL_CONTAINER_NAME),
            labels,
            created_at,
        }
    }

    /// What the table holds for a container it has only seen a task of (its create event
    /// was missed or its lookup failed): namespace and id are still right.
    pub fn bare(key: &ContainerKey) -> Self {
        Self {
            namespace: key.namespace.clone(),
            id: key.id.clone(),
            ..Self::default()
        }
    }

    pub fn key(&self) -> ContainerKey {
        ContainerKey::new(self.namespace.clone(), self.id.clone())
    }

    /// The container as alerts show it (`None` for one the containers stage could not
    /// identify); `manifest` is the image manifest the verdict used, when known.
    pub fn alert_container(&self, manifest: Option<String>) -> Option<AlertContainer> {
        (!self.id.is_empty()).then(|| AlertContainer {
            namespace: self.namespace.clone(),
            id: self.id.clone(),
            image: self.image.clone(),
            manifest_digest: manifest.or_else(|| self.manifest_digest.clone()),
            pod_name: self.pod_name.clone(),
            pod_namespace: self.pod_namespace.clone(),
            pod_uid: self.pod_uid.clone(),
            container_name: self.container_name.clone(),
        })
    }
}

/// Why an event left the stage without a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnresolvedReason {
    /// containerd is up but named no container with the event's mount namespace (or an
    /// ancestor's pid) within the pending timeout.
    NotFound { waited_ms: u64 },
    /// The pending timeout passed while containerd was unreachable.
    ContainerdUnavailable { waited_ms: u64 },
    /// The pending queue was full; the oldest waiting event was let go early.
    QueueFull { waited_ms: u64 },
    /// The daemon stopped while the event was waiting.
    ShuttingDown { waited_ms: u64 },
}

impl UnresolvedReason {
    /// A stable phrase for the `reason` field: consumers match on it, so no numbers in it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "no container known for this mount namespace",
            Self::ContainerdUnavailable { .. } => "containerd unavailable",
            Self::QueueFull { .. } => "pending queue full",
            Self::ShuttingDown { .. } => "daemon shutting down",
        }
    }

    pub fn waited_ms(&self) -> u64 {
        match *self {
            Self::NotFound { waited_ms }
            | Self::ContainerdUnavailable { waited_ms }
            | Self::QueueFull { waited_ms }
            | Self::ShuttingDown { waited_ms } => waited_ms,
        }
    }
}

impl fmt::Display for UnresolvedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (waited {} ms)", self.as_str(), self.waited_ms())
    }
}

/// Where an event came from, as far as the stage could tell.
#[derive(Clone, Debug)]
pub enum Attribution {
    Container(Arc<ContainerInfo>),
    /// The host's own mount namespace.
    Host,
    Unresolved(UnresolvedReason),
}

impl Attribution {
    #[cfg(test)]
    pub fn container(&self) -> Option<&ContainerInfo> {
        match self {
            Attribution::Container(c) => Some(c),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Container(_) => "container",
            Self::Host => "host",
            Self::Unresolved(_) => "unresolved",
        }
    }
}

/// The `container` object of a record. Labels are left out (they can be kilobytes, and the
/// pod fields carry what an alert needs); absent fields are omitted, not null.
impl Serialize for Attribution {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        match self {
            Self::Container(c) => {
                map.serialize_entry("namespace", &c.namespace)?;
                map.serialize_entry("id", &c.id)?;
                let optional = [
                    ("image", &c.image),
                    ("manifest_digest", &c.manifest_digest),
                    ("index_digest", &c.index_digest),
                    ("pod_name", &c.pod_name),
                    ("pod_namespace", &c.pod_namespace),
                    ("pod_uid", &c.pod_uid),
                    ("container_name", &c.container_name),
                ];
                for (key, value) in optional {
                    if let Some(v) = value {
                        map.serialize_entry(key, v)?;
                    }
                }
            }
            Self::Host => {}
            Self::Unresolved(reason) => {
                map.serialize_entry("reason", reason.as_str())?;
                map.serialize_entry("waited_ms", &reason.waited_ms())?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_labels_become_pod_fields() {
        let labels: BTreeMap<String, String> = [
            (LABEL_POD_NAME, "web-0"),
            (LABEL_POD_NAMESPACE, "shop"),
            (LABEL_POD_UID, "u-1"),
            (LABEL_CONTAINER_NAME, "nginx"),
            ("other", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = ContainerInfo::new("k8s.io", "abc", Some("img:1".into()), labels, None);
        assert_eq!(c.pod_name.as_deref(), Some("web-0"));
        assert_eq!(c.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(c.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(c.container_name.as_deref(), Some("nginx"));
        assert_eq!(c.labels.len(), 5);
    }

    #[test]
    fn attribution_serializes_without_labels_or_nulls() {
        let mut c = ContainerInfo::new(
            "default",
            "c1",
            Some("img:1".into()),
            [("big".to_string(), "x".repeat(100))].into(),
            None,
        );
        c.manifest_digest = Some("sha256:aa".into());
        let v = serde_json::to_value(Attribution::Container(Arc::new(c))).unwrap();
        assert_eq!(v["kind"], "container");
        assert_eq!(v["namespace"], "default");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["image"], "img:1");
        assert_eq!(v["manifest_digest"], "sha256:aa");
        assert!(v.get("index_digest").is_none());
        assert!(v.get("labels").is_none());
        assert!(v.get("pod_name").is_none());

        let v = serde_json::to_value(Attribution::Host).unwrap();
        assert_eq!(v, serde_json::json!({"kind": "host"}));

        let v = serde_json::to_value(Attribution::Unresolved(UnresolvedReason::QueueFull {
            waited_ms: 3,
        }))
        .unwrap();
        assert_eq!(v["kind"], "unresolved");
        assert_eq!(v["reason"], "pending queue full");
        assert_eq!(v["waited_ms"], 3);
    }
}
