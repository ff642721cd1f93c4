//! The respond stage: answers published alerts by `[[respond.policy]]` (pause, kill,
//! isolate, or a dry run), within `respond.max_actions_per_minute`, and reports every
//! response, taken or not, as an alert of its own (`response_taken`, `response_failed`).
//!
//! Owns the rate window and which containers it already acted on (one action of a kind per
//! container and daemon run: the exec storm of a frozen container's siblings must not
//! re-pause it a hundred times). It gets alerts from [`RespondSink`] (the alert stage's
//! last sink, never blocking it) and sends its reports to the alert stage's second input,
//! which does not keep the alert stage alive (see `AlertStage::run`).

use super::policy::decide;
use super::{ContainerAction, Responder};
use crate::alert::{
    Alert, AlertContainer, AlertDraft, AlertKind, AlertSink, Evidence, ResponseEvidence, SinkError,
};
use crate::config::{PolicyAction, PolicyMode, RespondConfig};
use crate::metrics::Metrics;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Alerts waiting for the respond stage; beyond it they are not answered (and counted).
pub const QUEUE: usize = 4096;

/// Hands every published alert that could trigger a response to the respond stage.
pub struct RespondSink {
    tx: mpsc::Sender<Arc<Alert>>,
    full: bool,
    dropped: u64,
}

impl RespondSink {
    pub fn new(tx: mpsc::Sender<Arc<Alert>>) -> Self {
        Self {
            tx,
            full: false,
            dropped: 0,
        }
    }
}

impl AlertSink for RespondSink {
    fn name(&self) -> &'static str {
        "respond"
    }

    fn write(&mut self, alert: &Alert) -> Result<(), SinkError> {
        if alert.container.is_none()
            || matches!(
                alert.kind,
                AlertKind::ResponseTaken | AlertKind::ResponseFailed
            )
        {
            return Ok(());
        }
        match self.tx.try_send(Arc::new(alert.clone())) {
            Ok(()) => {
                self.full = false;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.full {
                    return Ok(());
                }
                self.full = true;
                Err(SinkError::Other {
                    sink: "respond",
                    message: format!(
                        "the respond stage is {QUEUE} alerts behind; alert {} is not answered by policy ({} so far)",
                        alert.seq, self.dropped
                    ),
                })
            }
        }
    }
}

/// Who or what asked for a response.
#[derive(Clone, Debug)]
pub enum Origin {
    /// A `[[respond.policy]]`, for the alert it answered.
    Policy { name: String, trigger: Arc<Alert> },
    /// A caller of ResponseService.
    Caller(String),
}

/// The report of one response.
#[allow(clippy::too_many_arguments)]
pub fn response_draft(
    action: &str,
    origin: &Origin,
    container: AlertContainer,
    result: &str,
    dry_run: bool,
    task_status: Option<String>,
    reason: String,
) -> AlertDraft {
    let failed = !matches!(result, "taken" | "dry_run");
    let (rule, caller, trigger) = match origin {
        Origin::Policy { name, trigger } => (Some(name.clone()), None, Some(trigger)),
        Origin::Caller(c) => (None, Some(c.clone()), None),
    };
    let by = match (&rule, &caller) {
        (Some(r), _) => format!("policy {r}"),
        (_, Some(c)) => format!("caller {c}"),
        _ => "?".into(),
    };
    let summary = format!(
        "{}{action} of container {}/{} by {by}{}: {result}",
        if dry_run { "(dry run) " } else { "" },
        container.namespace,
        container.id,
        trigger
            .map(|t| format!(" (alert {} {})", t.seq, t.kind.as_str()))
            .unwrap_or_default()
    );
    AlertDraft {
        kind: if failed {
            AlertKind::ResponseFailed
        } else {
            AlertKind::ResponseTaken
        },
        severity: None,
        summary,
        container: Some(container),
        process: trigger.and_then(|t| t.process.clone()),
        evidence: Some(Evidence {
            reason,
            response: Some(ResponseEvidence {
                action: action.to_string(),
                rule,
                caller,
                trigger_seq: trigger.map(|t| t.seq),
                trigger_id: trigger.map(|t| t.id.clone()),
                dry_run,
                result: result.to_string(),
                task_status,
            }),
            ..Evidence::default()
        }),
        loss: None,
    }
}

fn container_action(a: PolicyAction) -> ContainerAction {
    match a {
        PolicyAction::Pause => ContainerAction::Pause,
        PolicyAction::Kill => ContainerAction::Kill,
        PolicyAction::Isolate => ContainerAction::Isolate,
    }
}

/// The stage.
pub struct RespondStage {
    config: RespondConfig,
    responder: Responder,
    metrics: Arc<Metrics>,
    own_container: Option<String>,
    window: VecDeque<Instant>,
    /// (namespace, id, action, dry run): answered once, whatever came of it, except a
    /// failure (the next alert tries again).
    acted: HashSet<(String, String, &'static str, bool)>,
}

impl RespondStage {
    pub fn new(config: &RespondConfig, responder: Responder, metrics: Arc<Metrics>) -> Self {
        let own_container = super::policy::own_container_id();
        if let Some(id) = &own_container {
            info!(container = %id, "layerguard runs in a container; no policy acts on it");
        }
        Self {
            config: config.clone(),
            responder,
            metrics,
            own_container,
            window: VecDeque::new(),
            acted: HashSet::new(),
        }
    }

    /// Answers alerts from `alerts` until it closes; reports go to `reports`.
    pub async fn run(
        mut self,
        mut alerts: mpsc::Receiver<Arc<Alert>>,
        reports: mpsc::Sender<AlertDraft>,
    ) {
        while let Some(alert) = alerts.recv().await {
            if let Some(draft) = self.answer(alert).await {
                if reports.send(draft).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn answer(&mut self, alert: Arc<Alert>) -> Option<AlertDraft> {
        let decision = decide(&alert, &self.config, self.own_container.as_deref())?;
        let policy = decision.policy;
        let action = policy.action.as_str();
        let container = alert.container.clone()?;
        let dry_run = policy.mode == PolicyMode::DryRun;
        let key = (
            container.namespace.clone(),
            container.id.clone(),
            action,
            dry_run,
        );
        let origin = Origin::Policy {
            name: policy.name.clone(),
            trigger: alert.clone(),
        };
        if self.acted.contains(&key) {
            return None;
        }
        if let Some(why) = decision.protected {
            self.acted.insert(key);
            self.metrics.record_response(action, "never");
            return Some(response_draft(
                action,
                &origin,
                container,
                "never",
                dry_run,
                None,
                format!("not taken: {why}"),
            ));
        }
        let now = Instant::now();
        while self
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            self.window.pop_front();
        }
        let limit = self.config.max_actions_per_minute as usize;
        if self.window.len() >= limit {
            // Reported once per container: its next alerts would only repeat it.
            self.acted.insert(key);
            self.metrics.record_response(action, "rate_limited");
            return Some(response_draft(
                action,
                &origin,
                container,
                "rate_limited",
                dry_run,
                None,
                format!(
                    "not taken: respond.max_actions_per_minute ({limit}) were taken in the last minute"
                ),
            ));
        }
        self.window.push_back(now);
        self.acted.insert(key);
        if dry_run {
            self.metrics.record_response(action, "dry_run");
            info!(policy = %policy.name, action, container = %container.id, seq = alert.seq,
                "dry run: a response would have been taken");
            return Some(response_draft(
                action,
                &origin,
                container,
                "dry_run",
                true,
                None,
                format!(
                    "policy {} (dry_run) would {action} the container",
                    policy.name
                ),
            ));
        }
        let started = Instant::now();
        let done = self
            .responder
            .act(
                &container.namespace,
                &container.id,
                container_action(policy.action),
            )
            .await;
        let ms = started.elapsed().as_millis() as u64;
        Some(match done {
            Ok(status) => {
                self.metrics.record_response(action, "taken");
                info!(policy = %policy.name, action, container = %container.id, seq = alert.seq,
                    task_status = %status, ms, "response taken by policy");
                response_draft(
                    action,
                    &origin,
                    container,
                    "taken",
                    false,
                    Some(status),
                    format!(
                        "policy {} answered alert {} ({}) in {ms} ms",
                        policy.name,
                        alert.seq,
                        alert.kind.as_str()
                    ),
                )
            }
            Err(e) => {
                // Not acted: the container's next alert tries again.
                self.acted.remove(&(
                    container.namespace.clone(),
                    container.id.clone(),
                    action,
                    false,
                ));
                self.metrics.record_response(action, "failed");
                warn!(policy = %policy.name, action, container = %container.id, seq = alert.seq,
                    error = %e, "response by policy failed");
                response_draft(
                    action,
                    &origin,
                    container,
                    "failed",
                    false,
                    None,
                    e.to_string(),
                )
            }
        })
    }
}
