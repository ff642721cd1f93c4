//! `layerguard.v1.ContainerService`: the live container table with verdict counts.
//!
//! Owns the read side only: [`ContainerDirectory`] is what the containers stage exposes
//! (a snapshot, taken when asked), and verdict counts come from [`Metrics`]. It must not
//! hold or update container state itself.

use super::convert::timestamp;
use crate::containers::ContainerList;
use crate::identity::{ContainerInfo, ContainerKey};
use crate::metrics::{Metrics, VerdictCounts};
use layerguard_proto::v1 as pb;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// One container as the API shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSnapshot {
    pub namespace: String,
    pub id: String,
    pub image: Option<String>,
    pub manifest_digest: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub container_name: Option<String>,
    /// Host pid of the task's init process; 0 without a task.
    pub task_pid: u32,
    /// The task's mount namespace, when known.
    pub mnt_ns: Option<u32>,
    pub running: bool,
    pub started_at: Option<SystemTime>,
}

impl ContainerSnapshot {
    /// From the containers stage's identity and task (`containers::table`).
    pub fn from_table(info: &ContainerInfo, task: Option<&crate::containers::table::Task>) -> Self {
        Self {
            namespace: info.namespace.clone(),
            id: info.id.clone(),
            image: info.image.clone(),
            manifest_digest: info.manifest_digest.clone(),
            pod_name: info.pod_name.clone(),
            pod_namespace: info.pod_namespace.clone(),
            container_name: info.container_name.clone(),
            task_pid: task.map_or(0, |t| t.pid),
            mnt_ns: task.and_then(|t| t.mnt_ns),
            running: task.is_some_and(|t| t.exited_at.is_none()),
            started_at: task.and_then(|t| t.started_at),
        }
    }

    pub fn key(&self) -> ContainerKey {
        ContainerKey::new(self.namespace.clone(), self.id.clone())
    }
}

/// The node's containers, as the containers stage knows them right now. Called per
/// request from an async task: keep it quick (copy out of a lock, no I/O).
pub trait ContainerDirectory: Send + Sync + 'static {
    fn snapshot(&self) -> Vec<ContainerSnapshot>;
}

/// The containers stage's published table.
pub struct LiveDirectory(pub watch::Receiver<ContainerList>);

impl ContainerDirectory for LiveDirectory {
    fn snapshot(&self) -> Vec<ContainerSnapshot> {
        self.0
            .borrow()
            .iter()
            .map(|c| ContainerSnapshot::from_table(&c.info, c.task.as_ref()))
            .collect()
    }
}

#[cfg(test)]
/// A directory that knows no containers (before the stage is wired, and in tests).
pub struct NoContainers;

#[cfg(test)]
impl ContainerDirectory for NoContainers {
    fn snapshot(&self) -> Vec<ContainerSnapshot> {
        Vec::new()
    }
}

impl<F> ContainerDirectory for F
where
    F: Fn() -> Vec<ContainerSnapshot> + Send + Sync + 'static,
{
    fn snapshot(&self) -> Vec<ContainerSnapshot> {
        self()
    }
}

pub struct ContainerApi {
    directory: Arc<dyn ContainerDirectory>,
    metrics: Arc<Metrics>,
}

impl ContainerApi {
    pub fn new(directory: Arc<dyn ContainerDirectory>, metrics: Arc<Metrics>) -> Self {
        Self { directory, metrics }
    }
}

fn counts(c: VerdictCounts) -> pb::VerdictCounts {
    pb::VerdictCounts {
        verified: c.verified,
        alerted: c.alerted,
        unverifiable: c.unverifiable,
        skipped: c.skipped,
    }
}

/// The listing, filtered and in (namespace, id) order.
pub fn list(
    directory: &dyn ContainerDirectory,
    metrics: &Metrics,
    namespaces: &[String],
) -> Vec<pb::Container> {
    let mut all = directory.snapshot();
    all.retain(|c| namespaces.is_empty() || namespaces.contains(&c.namespace));
    all.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
    all.into_iter()
        .map(|c| {
            let verdicts = metrics.verdicts(&c.key());
            let signature = metrics.signature(&c.key());
            pb::Container {
                signature: signature.as_ref().map(|s| s.state.to_string()),
                signature_key: signature.and_then(|s| s.key),
                task_pid: c.task_pid,
                running: c.running,
                started_at: c.started_at.map(timestamp),
                image_verdict: verdicts.image.map(str::to_string),
                verdicts: Some(counts(verdicts)),
                namespace: c.namespace,
                id: c.id,
                image: c.image,
                manifest_digest: c.manifest_digest,
                pod_name: c.pod_name,
                pod_namespace: c.pod_namespace,
                container_name: c.container_name,
            }
        })
        .collect()
}

#[tonic::async_trait]
impl pb::container_service_server::ContainerService for ContainerApi {
    async fn list(
        &self,
        request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(pb::ListContainersResponse {
            containers: list(
                self.directory.as_ref(),
                &self.metrics,
                &req.containerd_namespaces,
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Verdict;

    #[test]
    fn listing_is_sorted_filtered_and_carries_verdicts() {
        let dir = || {
            vec![
                ContainerSnapshot {
                    namespace: "k8s.io".into(),
                    id: "b".into(),
                    running: true,
                    task_pid: 42,
                    mnt_ns: None,
                    ..ContainerSnapshot::default()
                },
                ContainerSnapshot {
                    namespace: "default".into(),
                    id: "z".into(),
                    ..ContainerSnapshot::default()
                },
                ContainerSnapshot {
                    namespace: "k8s.io".into(),
                    id: "a".into(),
                    ..ContainerSnapshot::default()
                },
            ]
        };
        let m = Metrics::new();
        m.record_verdict(
            Some(&ContainerKey::new("k8s.io", "b")),
            Verdict::Alerted,
            Some("untrusted"),
            "untrusted_image",
        );
        m.record_verdict(
            Some(&ContainerKey::new("k8s.io", "b")),
            Verdict::Verified,
            None,
            "verified",
        );
        let all = list(&dir, &m, &[]);
        let ids: Vec<_> = all.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["z", "a", "b"]);
        let b = &all[2];
        assert_eq!(b.task_pid, 42);
        assert_eq!(b.verdicts.unwrap().alerted, 1);
        assert_eq!(b.verdicts.unwrap().verified, 1);
        assert_eq!(b.image_verdict.as_deref(), Some("untrusted"));
        assert_eq!(all[1].image_verdict, None, "no exec judged in a: not known");
        let k8s = list(&dir, &m, &["k8s.io".into()]);
        assert_eq!(k8s.len(), 2);
        assert!(list(&NoContainers, &m, &[]).is_empty());
    }
}
