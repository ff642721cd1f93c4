//! `layerguard.v1.BaselineService`: the baselines, listed, shown, locked, relearned,
//! exported and imported (viewer reads; responder changes, enforced by the access table).
//!
//! Owns turning calls into [`baseline::Command`]s and replies into messages, and the audit
//! line of every change. The baselines are the analyzer's: nothing is kept here.

use super::auth::Peer;
use crate::baseline::model::{rfc3339, Baseline};
use crate::baseline::{self, Command, Handle};
use layerguard_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::info;

pub struct BaselineApi {
    handle: Option<Handle>,
}

impl BaselineApi {
    pub fn new(handle: Option<Handle>) -> Self {
        Self { handle }
    }

    fn handle(&self) -> Result<&Handle, Status> {
        self.handle.as_ref().ok_or_else(|| {
            Status::failed_precondition("the baseline is off (baseline.enabled = false)")
        })
    }

    async fn one(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<Baseline, String>>) -> Command,
    ) -> Result<Response<pb::BaselineResponse>, Status> {
        let b = self
            .handle()?
            .ask(make)
            .await
            .map_err(Status::unavailable)?
            .map_err(Status::not_found)?;
        Ok(Response::new(response(&b)))
    }
}

/// The summary `list` shows.
pub fn summary(b: &Baseline) -> pb::BaselineSummary {
    let execs = b.execs.values().map(|e| e.parents.len() as u64).sum();
    pb::BaselineSummary {
        id: b.key.id(),
        key: b.key.to_string(),
        containerd_namespace: b.key.containerd_namespace.clone(),
        pod_namespace: b.key.pod_namespace.clone(),
        workload: b.key.workload.clone(),
        container: b.key.container.clone(),
        manifest: b.key.manifest.clone(),
        state: b.state.as_str().into(),
        partial: !b.partial.is_empty(),
        partial_reasons: b.partial.clone(),
        entries: b.entries() as u64,
        execs,
        writes: b.writes.len() as u64,
        learning_since: rfc3339(b.learning_since),
        monitoring_since: b.monitoring_since.map(rfc3339),
        last_seen: rfc3339(b.last_seen),
        seeded_from: b.seeded_from.clone(),
        name_source: serde_json::to_value(b.name_source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    }
}

fn response(b: &Baseline) -> pb::BaselineResponse {
    pb::BaselineResponse {
        summary: Some(summary(b)),
        document_json: serde_json::to_string_pretty(b).unwrap_or_default(),
    }
}

fn caller<T>(r: &Request<T>) -> String {
    r.extensions()
        .get::<Arc<Peer>>()
        .map(|p| p.identity.clone())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl pb::baseline_service_server::BaselineService for BaselineApi {
    async fn list(
        &self,
        _r: Request<pb::ListBaselinesRequest>,
    ) -> Result<Response<pb::ListBaselinesResponse>, Status> {
        let all = self
            .handle()?
            .ask(Command::List)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(pb::ListBaselinesResponse {
            baselines: all.iter().map(summary).collect(),
        }))
    }

    async fn get(
        &self,
        r: Request<pb::BaselineRequest>,
    ) -> Result<Response<pb::BaselineResponse>, Status> {
        let id = r.into_inner().id;
        self.one(|tx| Command::Get(id, tx)).await
    }

    async fn export(
        &self,
        r: Request<pb::BaselineRequest>,
    ) -> Result<Response<pb::BaselineResponse>, Status> {
        let id = r.into_inner().id;
        self.one(|tx| Command::Get(id, tx)).await
    }

    async fn lock(
        &self,
        r: Request<pb::BaselineRequest>,
    ) -> Result<Response<pb::BaselineResponse>, Status> {
        let who = caller(&r);
        let id = r.into_inner().id;
        info!(id = %id, caller = %who, "baseline lock asked");
        self.one(|tx| Command::Lock(id, tx)).await
    }

    async fn relearn(
        &self,
        r: Request<pb::BaselineRequest>,
    ) -> Result<Response<pb::BaselineResponse>, Status> {
        let who = caller(&r);
        let id = r.into_inner().id;
        info!(id = %id, caller = %who, "baseline relearn asked");
        self.one(|tx| Command::Relearn(id, tx)).await
    }

    async fn import(
        &self,
        r: Request<pb::ImportBaselineRequest>,
    ) -> Result<Response<pb::BaselineResponse>, Status> {
        let who = caller(&r);
        let doc = baseline::model::from_json(r.into_inner().document_json.as_bytes())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        info!(key = %doc.key, caller = %who, "baseline import asked");
        let doc = Box::new(doc);
        self.one(|tx| Command::Import(doc, tx)).await
    }
}
