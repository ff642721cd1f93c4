//! `layerguard.v1.ResponseService`: pause (quarantine), release and kill of a container,
//! for callers with the `responder` role (the access table enforces that before a call
//! reaches this module).
//!
//! Owns turning a call into a [`Responder`] action and the audit line: who asked, what,
//! why, and what came of it. The containerd work is `respond`'s.

use super::auth::Peer;
use crate::respond::{ContainerAction, Responder, ResponseError};
use layerguard_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

pub struct ResponseApi {
    responder: Responder,
    /// Responses by action and result (the Prometheus endpoint).
    metrics: Arc<crate::metrics::Metrics>,
    /// Every response is reported as an alert too.
    reports: tokio::sync::mpsc::Sender<crate::alert::AlertDraft>,
}

impl ResponseApi {
    pub fn new(
        responder: Responder,
        metrics: Arc<crate::metrics::Metrics>,
        reports: tokio::sync::mpsc::Sender<crate::alert::AlertDraft>,
    ) -> Self {
        Self {
            responder,
            metrics,
            reports,
        }
    }

    /// The response as an alert (never blocks the call: a full queue is logged).
    fn report(
        &self,
        action: ContainerAction,
        caller: &str,
        namespace: &str,
        id: &str,
        outcome: Result<&str, String>,
        reason: &str,
    ) {
        use crate::respond::stage::{response_draft, Origin};
        let container = crate::alert::AlertContainer {
            namespace: namespace.to_string(),
            id: id.to_string(),
            ..Default::default()
        };
        let why = if reason.is_empty() {
            "no reason given".to_string()
        } else {
            format!("reason: {reason}")
        };
        let draft = match outcome {
            Ok(status) => response_draft(
                action.as_str(),
                &Origin::Caller(caller.to_string()),
                container,
                "taken",
                false,
                Some(status.to_string()),
                why,
            ),
            Err(e) => response_draft(
                action.as_str(),
                &Origin::Caller(caller.to_string()),
                container,
                "failed",
                false,
                None,
                format!("{e} ({why})"),
            ),
        };
        if self.reports.try_send(draft).is_err() {
            warn!(action = action.as_str(), container_id = %id, "the response's alert could not be queued");
        }
    }

    async fn act(
        &self,
        request: Request<pb::ContainerActionRequest>,
        action: ContainerAction,
    ) -> Result<Response<pb::ContainerActionResponse>, Status> {
        let caller = request
            .extensions()
            .get::<Arc<Peer>>()
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        let req = request.into_inner();
        let (namespace, id) = (req.containerd_namespace, req.container_id);
        match self.responder.act(&namespace, &id, action).await {
            Ok(task_status) => {
                self.metrics.record_response(action.as_str(), "taken");
                self.report(
                    action,
                    &caller,
                    &namespace,
                    &id,
                    Ok(&task_status),
                    &req.reason,
                );
                info!(action = action.as_str(), namespace = %namespace, container_id = %id,
                    caller = %caller, reason = %req.reason, task_status = %task_status,
                    "container response done");
                Ok(Response::new(pb::ContainerActionResponse { task_status }))
            }
            Err(e) => {
                self.metrics.record_response(action.as_str(), "failed");
                self.report(
                    action,
                    &caller,
                    &namespace,
                    &id,
                    Err(e.to_string()),
                    &req.reason,
                );
                warn!(action = action.as_str(), namespace = %namespace, container_id = %id,
                    caller = %caller, reason = %req.reason, error = %e,
                    "container response failed");
                Err(status_of(&e))
            }
        }
    }
}

fn status_of(e: &ResponseError) -> Status {
    let message = e.to_string();
    match e {
        ResponseError::NoTask { .. } => Status::not_found(message),
        ResponseError::Unavailable { .. } => Status::unavailable(message),
        ResponseError::Empty { .. } | ResponseError::BadNamespace(_) => {
            Status::invalid_argument(message)
        }
        ResponseError::Refused { .. } | ResponseError::Isolate { .. } => {
            Status::failed_precondition(message)
        }
    }
}

#[tonic::async_trait]
impl pb::response_service_server::ResponseService for ResponseApi {
    async fn pause(
        &self,
        request: Request<pb::ContainerActionRequest>,
    ) -> Result<Response<pb::ContainerActionResponse>, Status> {
        self.act(request, ContainerAction::Pause).await
    }

    async fn release(
        &self,
        request: Request<pb::ContainerActionRequest>,
    ) -> Result<Response<pb::ContainerActionResponse>, Status> {
        self.act(request, ContainerAction::Release).await
    }

    async fn isolate(
        &self,
        request: Request<pb::ContainerActionRequest>,
    ) -> Result<Response<pb::ContainerActionResponse>, Status> {
        self.act(request, ContainerAction::Isolate).await
    }

    async fn kill(
        &self,
        request: Request<pb::ContainerActionRequest>,
    ) -> Result<Response<pb::ContainerActionResponse>, Status> {
        self.act(request, ContainerAction::Kill).await
    }
}
