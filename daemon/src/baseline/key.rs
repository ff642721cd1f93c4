//! Which baseline an event belongs to: the workload key, shared by a workload's replicas and
//! restarts (containerd namespace, pod namespace, workload name, container name, image
//! manifest digest), and the workload name read from a container's labels.
//!
//! Pure functions of a container's identity; nothing here looks anything up.

use crate::identity::ContainerInfo;
use crate::image::digest::Digest;
use serde::{Deserialize, Serialize};

/// The label that names a container's workload outright.
pub const LABEL_WORKLOAD: &str = "io.layerguard.workload";

/// One workload running one image: what a baseline is of.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadKey {
    pub containerd_namespace: String,
    /// The pod's namespace; empty outside Kubernetes.
    pub pod_namespace: String,
    pub workload: String,
    /// The container's name in its pod; empty outside Kubernetes.
    pub container: String,
    /// The image manifest the workload runs.
    pub manifest: String,
}

impl WorkloadKey {
    /// The same key for another image: what an upgrade of this workload is keyed by.
    pub fn same_workload(&self, other: &WorkloadKey) -> bool {
        self.containerd_namespace == other.containerd_namespace
            && self.pod_namespace == other.pod_namespace
            && self.workload == other.workload
            && self.container == other.container
    }

    /// A short stable id for the CLI and file names: the first 16 hex digits of the
    /// sha256 of the key's fields.
    pub fn id(&self) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}\n{}",
            self.containerd_namespace,
            self.pod_namespace,
            self.workload,
            self.container,
            self.manifest
        );
        Digest::of(text.as_bytes()).hex()[..16].to_string()
    }
}

impl std::fmt::Display for WorkloadKey {
    /// `ns/pod-ns/workload/container@sha256:0123abcd`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self
            .manifest
            .strip_prefix("sha256:")
            .map_or(self.manifest.as_str(), |h| &h[..h.len().min(12)]);
        write!(
            f,
            "{}/{}/{}/{}@{short}",
            self.containerd_namespace, self.pod_namespace, self.workload, self.container
        )
    }
}

/// Where a workload name came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameSource {
    /// `io.layerguard.workload`.
    Label,
    /// The pod's name with its owner's suffix stripped.
    PodOwner,
    /// The pod's name as is (no owner suffix recognised).
    Pod,
    /// No pod: the container's id (a baseline per container).
    ContainerId,
}

/// The key of `c`, or `None` before its image manifest is known.
pub fn key_of(c: &ContainerInfo) -> Option<(WorkloadKey, NameSource)> {
    let manifest = c.manifest_digest.clone()?;
    let (workload, source) = workload_name(c);
    Some((
        WorkloadKey {
            containerd_namespace: c.namespace.clone(),
            pod_namespace: c.pod_namespace.clone().unwrap_or_default(),
            workload,
            container: c.container_name.clone().unwrap_or_default(),
            manifest,
        },
        source,
    ))
}

/// The workload a container belongs to: the `io.layerguard.workload` label; else its pod's
/// owner, from the pod name (a Deployment's `web-7d4b9c8f6d-x2x9q` is `web`, a StatefulSet's
/// `db-0` is `db`, a DaemonSet's or Job's `agent-x2x9q` is `agent`, a CronJob's
/// `backup-28173600-x2x9q` is `backup`), checked against the owner labels when the
/// container carries them (`pod-template-hash`, `controller-revision-hash`,
/// `statefulset.kubernetes.io/pod-name`, `job-name`); else the container's id.
pub fn workload_name(c: &ContainerInfo) -> (String, NameSource) {
    let label = |k: &str| c.labels.get(k).filter(|v| !v.is_empty());
    if let Some(w) = label(LABEL_WORKLOAD) {
        return (w.clone(), NameSource::Label);
    }
    let Some(pod) = c.pod_name.as_deref().filter(|p| !p.is_empty()) else {
        return (c.id.clone(), NameSource::ContainerId);
    };
    let owner = if let Some(hash) = label("pod-template-hash") {
        // Deployment: name-<pod-template-hash>-<5>.
        strip_random(pod)
            .and_then(|rest| rest.strip_suffix(hash.as_str()))
            .and_then(|rest| rest.strip_suffix('-'))
    } else if label("statefulset.kubernetes.io/pod-name").is_some() {
        strip_ordinal(pod)
    } else if let Some(job) = label("job-name").or(label("batch.kubernetes.io/job-name")) {
        // A Job's pods are job-<5>; a CronJob's job is cron-<scheduled minute>.
        Some(strip_ordinal(job).unwrap_or(job.as_str()))
    } else if label("controller-revision-hash").is_some() {
        // A DaemonSet (its pods have no ordinal): name-<5>.
        strip_random(pod)
    } else {
        // No owner labels (CRI puts pod labels on the sandbox, not on every container):
        // the shapes alone.
        strip_random(pod)
            .map(|rest| match rest.rsplit_once('-') {
                Some((name, hash)) if is_template_hash(hash) => name,
                _ => rest,
            })
            .or_else(|| strip_ordinal(pod))
    };
    match owner.filter(|o| !o.is_empty()) {
        Some(o) => (o.to_string(), NameSource::PodOwner),
        None => (pod.to_string(), NameSource::Pod),
    }
}

/// `name-x2x9q` -> `name`: the five characters Kubernetes appends to generated names
/// (consonants and digits, no vowels).
fn strip_random(name: &str) -> Option<&str> {
    let (rest, suffix) = name.rsplit_once('-')?;
    let generated = suffix.len() == 5
        && suffix
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b));
    generated.then_some(rest)
}

/// `db-12` -> `db`.
fn strip_ordinal(name: &str) -> Option<&str> {
    let (rest, n) = name.rsplit_once('-')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

/// A ReplicaSet's pod-template-hash: 6 to 10 of the generated-name characters.
fn is_template_hash(s: &str) -> bool {
    (6..=10).contains(&s.len())
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn container(pod: Option<&str>, labels: &[(&str, &str)]) -> ContainerInfo {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(p) = pod {
            l.insert(crate::identity::LABEL_POD_NAME.into(), p.into());
            l.insert(crate::identity::LABEL_POD_NAMESPACE.into(), "shop".into());
            l.insert(crate::identity::LABEL_CONTAINER_NAME.into(), "app".into());
        }
        let mut c = ContainerInfo::new("k8s.io", "c0ffee", Some("web:1".into()), l, None);
        c.manifest_digest = Some(format!("sha256:{}", "ab".repeat(32)));
        c
    }

    #[test]
    fn replicas_and_restarts_share_the_owners_name() {
        let name = |pod, labels: &[(&str, &str)]| workload_name(&container(pod, labels));
        assert_eq!(
            name(
                Some("web-7d4b9c8f6d-x2x9q"),
                &[("pod-template-hash", "7d4b9c8f6d")]
            ),
            ("web".into(), NameSource::PodOwner)
        );
        assert_eq!(name(Some("web-7d4b9c8f6d-x2x9q"), &[]).0, "web");
        assert_eq!(
            name(
                Some("db-2"),
                &[
                    ("statefulset.kubernetes.io/pod-name", "db-2"),
                    ("controller-revision-hash", "db-5f")
                ]
            )
            .0,
            "db"
        );
        assert_eq!(name(Some("db-2"), &[]).0, "db");
        assert_eq!(
            name(Some("agent-x2x9q"), &[("controller-revision-hash", "6c9")]).0,
            "agent"
        );
        assert_eq!(
            name(
                Some("backup-28173600-x2x9q"),
                &[("job-name", "backup-28173600")]
            )
            .0,
            "backup"
        );
        assert_eq!(
            name(Some("migrate-x2x9q"), &[("job-name", "migrate")]).0,
            "migrate"
        );
        // A hash label that does not match the name: the name as is.
        assert_eq!(
            name(
                Some("web-7d4b9c8f6d-x2x9q"),
                &[("pod-template-hash", "zzz")]
            ),
            ("web-7d4b9c8f6d-x2x9q".into(), NameSource::Pod)
        );
        assert_eq!(
            name(Some("standalone"), &[]),
            ("standalone".into(), NameSource::Pod)
        );
        assert_eq!(
            name(
                Some("web-7d4b9c8f6d-x2x9q"),
                &[(LABEL_WORKLOAD, "shop-front")]
            ),
            ("shop-front".into(), NameSource::Label)
        );
        assert_eq!(name(None, &[]), ("c0ffee".into(), NameSource::ContainerId));
    }

    #[test]
    fn the_key_needs_the_manifest_and_has_a_stable_id() {
        let c = container(Some("web-7d4b9c8f6d-x2x9q"), &[]);
        let (k, _) = key_of(&c).unwrap();
        assert_eq!(k.pod_namespace, "shop");
        assert_eq!(k.container, "app");
        assert_eq!(k.id(), key_of(&c).unwrap().0.id());
        assert_eq!(k.id().len(), 16);
        assert_eq!(k.to_string(), "k8s.io/shop/web/app@abababababab");
        let mut other = k.clone();
        other.manifest = "sha256:cd".into();
        assert!(k.same_workload(&other));
        assert_ne!(k.id(), other.id());
        let mut c = c;
        c.manifest_digest = None;
        assert!(key_of(&c).is_none());
    }
}
