//! `layerguard.v1.StatusService`: what the daemon runs with (version, kernel features,
//! programs) and how it is doing (event rate and losses, hash cache, containers,
//! subscribers, journal).
//!
//! Owns assembling the answer from what others keep: [`NodeInfo`] (fixed at start),
//! [`Metrics`], the journal's stats and the container directory.

use super::containers::ContainerDirectory;
use super::convert::timestamp;
use crate::alert::journal::Journal;
use crate::metrics::Metrics;
use crate::sensor::KernelFeatures;
use layerguard_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Facts fixed at daemon start.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub node_name: String,
    pub version: String,
    pub kernel: KernelFeatures,
    /// The eBPF programs attached.
    pub programs: Vec<String>,
    /// How file events are hooked (`FileIntegrity.hooks`).
    pub file_hooks: String,
    /// What serves each file role (`FileIntegrity.roles`).
    pub file_hook_roles: Vec<crate::sensor::hooks::RoleHooks>,
    /// Kernel hook families not used, and why (`FileIntegrity.kernel_hooks_refused`).
    pub kernel_hooks_refused: Vec<String>,
}

pub struct StatusApi {
    pub node: NodeInfo,
    pub metrics: Arc<Metrics>,
    pub journal: Arc<Journal>,
    pub containers: Arc<dyn ContainerDirectory>,
}

impl StatusApi {
    pub fn status(&self) -> pb::GetStatusResponse {
        let m = &self.metrics;
        let j = self.journal.stats();
        let containers = self.containers.snapshot();
        pb::GetStatusResponse {
            version: self.node.version.clone(),
            node: self.node.node_name.clone(),
            started_at: Some(timestamp(m.started_at)),
            kernel: Some(pb::KernelFeatures {
                kernel_release: self.node.kernel.kernel_release.clone(),
                btf: self.node.kernel.btf,
                bpf_lsm: self.node.kernel.bpf_lsm,
                lockdown: self.node.kernel.lockdown.clone(),
                fentry: self.node.kernel.fentry.clone(),
            }),
            programs: self.node.programs.clone(),
            events: Some(pb::EventCounts {
                seen: m.events_seen(),
                seen_by_kind: by_name(&m.events),
                lost_kernel: by_name(&m.lost_kernel),
                undecodable: m.undecodable.get(),
                lost_queue: m.lost_queue.get(),
                per_second: m.events_per_second(),
            }),
            hash_cache: Some(pb::HashCache {
                hits: m.hash_cache_hits.get(),
                misses: m.hash_cache_misses.get(),
                hit_rate: m.hash_cache_hit_rate(),
            }),
            containers: containers.len() as u32,
            running_containers: containers.iter().filter(|c| c.running).count() as u32,
            subscribers: m.subscribers.get() as u32,
            alerts: j.published,
            last_alert_seq: j.next_seq.saturating_sub(1),
            journal: Some(pb::JournalStatus {
                enabled: j.enabled,
                dir: j
                    .dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                bytes: j.bytes,
                segments: j.segments as u32,
                first_seq: j.first_seq,
                last_seq: j.last_seq,
            }),
            subscriber_lags: m.subscriber_lags.get(),
            files: m.files.as_ref().map(|f| pb::FileIntegrity {
                hooks: self.node.file_hooks.clone(),
                roles: self
                    .node
                    .file_hook_roles
                    .iter()
                    .map(|r| pb::FileHookRole {
                        role: r.role.name().into(),
                        hooks: r.hooks.clone(),
                    })
                    .collect(),
                kernel_hooks_refused: self.node.kernel_hooks_refused.clone(),
                kernel_hook_calls: f.kernel_hook_calls.get(),
                io_uring_by_container: io_uring_by_container(
                    &f.io_uring_by_mnt_ns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()),
                    &containers,
                ),
                kernel_seen: f.kernel_seen.get(),
                kernel_repeats: f.kernel_repeats.get(),
                kernel_clean_hits: f.kernel_clean_hits.get(),
                io_uring_requests: f.io_uring_requests.get(),
                writes: f.writes.get(),
                mappings: f.mappings.get(),
                inspected: f.inspected.get(),
                marked_clean: f.marked_clean.get(),
                unjudged: f.unjudged.get(),
                outside_layers: f.outside_layers.get(),
                kernel_data_writes: f.kernel_data_writes.get(),
                kernel_syscalls: f.kernel_syscalls.get(),
                names: f.names.get(),
            }),
            webhooks: m
                .webhooks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|w| {
                    use std::sync::atomic::Ordering::Relaxed;
                    pb::WebhookDelivery {
                        url: w.url.clone(),
                        delivered: w.delivered.load(Relaxed),
                        failures: w.failures.load(Relaxed),
                        rejected: w.rejected.load(Relaxed),
                        filtered: w.filtered.load(Relaxed),
                        lost: w.lost.load(Relaxed),
                        next_seq: w.next_seq.load(Relaxed),
                        lag: w.lag(j.next_seq),
                        last_error: w
                            .last_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone(),
                    }
                })
                .collect(),
            signatures: m
                .signature_totals()
                .into_iter()
                .map(|(state, n)| (state.to_string(), n))
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl pb::status_service_server::StatusService for StatusApi {
    async fn get(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        Ok(Response::new(self.status()))
    }
}

/// A per-kind counter as the proto's map, keyed by kind name.
fn by_name(counts: &crate::metrics::ByKind) -> std::collections::BTreeMap<String, u64> {
    counts
        .counts()
        .map(|(k, n)| (k.name().to_string(), n))
        .collect()
}

/// The kernel's io_uring counts per mount namespace, named by the container that has that
/// namespace; a namespace no container in the table has any more is named by its number.
fn io_uring_by_container(
    by_ns: &[(u32, u64)],
    containers: &[super::containers::ContainerSnapshot],
) -> Vec<pb::IoUringRequests> {
    by_ns
        .iter()
        .map(|&(ns, requests)| {
            let c = containers.iter().find(|c| c.mnt_ns == Some(ns));
            pb::IoUringRequests {
                container_id: c.map_or_else(|| format!("mnt_ns:{ns}"), |c| c.id.clone()),
                namespace: c.map(|c| c.namespace.clone()).unwrap_or_default(),
                requests,
            }
        })
        .collect()
}
