//! Incident response on one container: quarantine (pause), release (resume) and kill,
//! through containerd's Tasks API in the container's namespace.
//!
//! Owns the containerd calls and their errors. It must not decide *when* to respond: a
//! caller (a responder over the API today) does, and the API logs who asked and why.
//!
//! Each action opens its own connection: actions are rare, and a fresh connection is
//! right after a containerd restart, when a long-lived channel would fail its first call.

use containerd_client::services::v1::{
    GetRequest, KillRequest, PauseTaskRequest, ResumeTaskRequest,
};
use containerd_client::tonic::{Code, Request, Status};
use containerd_client::types::v1::Status as TaskStatus;
use containerd_client::Client;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connecting and each call give up after this: a responder waits for an answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerAction {
    /// Freeze every process of the task (cgroup freezer); state is kept for forensics.
    Pause,
    /// Thaw a paused task.
    Release,
    /// SIGKILL to every process of the task.
    Kill,
}

impl ContainerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Release => "release",
            Self::Kill => "kill",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("containerd at {socket} is not reachable: {message}")]
    Unavailable { socket: PathBuf, message: String },
    #[error("no task for container {namespace}/{id} (no such container, or it is not running)")]
    NoTask { namespace: String, id: String },
    #[error("containerd refused to {action} {namespace}/{id}: {message}")]
    Refused {
        action: &'static str,
        namespace: String,
        id: String,
        message: String,
    },
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("namespace {0:?} cannot be sent to containerd")]
    BadNamespace(String),
}

/// Acts on containers through containerd's socket.
#[derive(Clone, Debug)]
pub struct Responder {
    socket: PathBuf,
}

impl Responder {
    pub fn new(containerd_socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: containerd_socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Applies `action` to the task of `namespace/id` and returns the task's status
    /// afterwards (`paused`, `running`, `stopped`, ...).
    pub async fn act(
        &self,
        namespace: &str,
        id: &str,
        action: ContainerAction,
    ) -> Result<String, ResponseError> {
        if namespace.is_empty() {
            return Err(ResponseError::Empty {
                what: "containerd namespace",
            });
        }
        if id.is_empty() {
            return Err(ResponseError::Empty {
                what: "container id",
            });
        }
        let unavailable = |message: String| ResponseError::Unavailable {
            socket: self.socket.clone(),
            message,
        };
        let client = tokio::time::timeout(CALL_TIMEOUT, Client::from_path(&self.socket))
            .await
            .map_err(|_| unavailable("connect timed out".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let mut tasks = client.tasks();
        let container_id = id.to_string();
        let refused = |status: Status| match status.code() {
            Code::NotFound => ResponseError::NoTask {
                namespace: namespace.to_string(),
                id: id.to_string(),
            },
            Code::Unavailable => unavailable(status.message().to_string()),
            _ => ResponseError::Refused {
                action: action.as_str(),
                namespace: namespace.to_string(),
                id: id.to_string(),
                message: status.message().to_string(),
            },
        };
        let timed_out = |_| unavailable(format!("{} timed out", action.as_str()));
        let result = match action {
            ContainerAction::Pause => {
                let req = request(PauseTaskRequest { container_id }, namespace)?;
                tokio::time::timeout(CALL_TIMEOUT, tasks.pause(req))
                    .await
                    .map_err(timed_out)?
                    .map(drop)
            }
            ContainerAction::Release => {
                let req = request(ResumeTaskRequest { container_id }, namespace)?;
                tokio::time::timeout(CALL_TIMEOUT, tasks.resume(req))
                    .await
                    .map_err(timed_out)?
                    .map(drop)
            }
            ContainerAction::Kill => {
                let req = request(
                    KillRequest {
                        container_id,
                        exec_id: String::new(),
                        signal: libc::SIGKILL as u32,
                        all: true,
                    },
                    namespace,
                )?;
                tokio::time::timeout(CALL_TIMEOUT, tasks.kill(req))
                    .await
                    .map_err(timed_out)?
                    .map(drop)
            }
        };
        result.map_err(refused)?;
        let req = request(
            GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            },
            namespace,
        )?;
        let got = tokio::time::timeout(CALL_TIMEOUT, tasks.get(req))
            .await
            .map_err(timed_out)?
            .map_err(refused)?
            .into_inner();
        let status = got
            .process
            .map(|p| TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown))
            .unwrap_or(TaskStatus::Unknown);
        Ok(status.as_str_name().to_ascii_lowercase())
    }
}

fn request<T>(message: T, namespace: &str) -> Result<Request<T>, ResponseError> {
    crate::containers::watcher::request(message, namespace)
        .map_err(|_| ResponseError::BadNamespace(namespace.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn empty_names_and_a_dead_socket_are_errors_that_say_so() {
        let r = Responder::new("/nonexistent/containerd.sock");
        let e = r.act("", "x", ContainerAction::Pause).await.unwrap_err();
        assert_eq!(e.to_string(), "containerd namespace must not be empty");
        let e = r
            .act("default", "", ContainerAction::Kill)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "container id must not be empty");
        let e = r
            .act("default", "x", ContainerAction::Release)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ResponseError::Unavailable { .. })
                && e.to_string().contains("/nonexistent/containerd.sock"),
            "{e}"
        );
    }
}
