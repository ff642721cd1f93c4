//! Incident response on one container: quarantine (pause), network isolation, release
//! (resume and lift the isolation) and kill, through containerd's Tasks API in the
//! container's namespace ([`isolate`]: nftables in its network namespace).
//!
//! Owns the actions and their errors. It must not decide *when* to respond: [`policy`]
//! decides (pure), [`stage`] acts on alerts by policy, and the API acts for a responder.
//!
//! Each action opens its own connection: actions are rare, and a fresh connection is
//! right after a containerd restart, when a long-lived channel would fail its first call.

pub mod isolate;
pub mod policy;
pub mod stage;

use crate::containerd::{request, Containerd, ContainerdError};
use containerd_client::services::v1::{
    GetRequest, KillRequest, PauseTaskRequest, ResumeTaskRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::Status as TaskStatus;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerAction {
    /// Freeze every process of the task (cgroup freezer); state is kept for forensics.
    Pause,
    /// Thaw a paused task.
    Release,
    /// SIGKILL to every process of the task.
    Kill,
    /// Drop every packet of the container's network namespace but loopback.
    Isolate,
}

impl ContainerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Release => "release",
            Self::Kill => "kill",
            Self::Isolate => "isolate",
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
    #[error("cannot isolate {namespace}/{id}: {source}")]
    Isolate {
        namespace: String,
        id: String,
        #[source]
        source: isolate::IsolateError,
    },
}

/// Acts on containers through containerd's socket.
#[derive(Clone, Debug)]
pub struct Responder {
    containerd: Containerd,
}

impl Responder {
    pub fn new(containerd: Containerd) -> Self {
        Self { containerd }
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
        let conn = self
            .containerd
            .connect()
            .await
            .map_err(|e| self.error(e, namespace, id, action))?;
        let mut tasks = conn.client().tasks();
        let container_id = id.to_string();
        let fail = |e: ContainerdError| self.error(e, namespace, id, action);
        let isolation_error = |source| ResponseError::Isolate {
            namespace: namespace.to_string(),
            id: id.to_string(),
            source,
        };
        match action {
            ContainerAction::Isolate => {
                let pid = self.task_pid(&conn, namespace, id, action).await?;
                isolate::isolate(pid).map_err(isolation_error)?;
            }
            ContainerAction::Release => {
                // A release ends a quarantine and an isolation, whichever are in place.
                let pid = self.task_pid(&conn, namespace, id, action).await?;
                let lifted = match isolate::release(pid) {
                    Ok(lifted) => lifted,
                    Err(isolate::IsolateError::HostNetwork) => false,
                    Err(e) => return Err(isolation_error(e)),
                };
                let req = request(ResumeTaskRequest { container_id }, namespace).map_err(fail)?;
                let resumed = conn.call("Tasks.Resume", tasks.resume(req)).await;
                if let Err(e) = resumed {
                    // Not paused: fine when the release was for an isolation.
                    if !lifted {
                        return Err(fail(e));
                    }
                }
            }
            ContainerAction::Pause => {
                let req = request(PauseTaskRequest { container_id }, namespace).map_err(fail)?;
                conn.call("Tasks.Pause", tasks.pause(req))
                    .await
                    .map_err(fail)?;
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
                )
                .map_err(fail)?;
                conn.call("Tasks.Kill", tasks.kill(req))
                    .await
                    .map_err(fail)?;
            }
        }
        let req = request(
            GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            },
            namespace,
        )
        .map_err(fail)?;
        let got = conn.call("Tasks.Get", tasks.get(req)).await.map_err(fail)?;
        let status = got
            .process
            .map(|p| TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown))
            .unwrap_or(TaskStatus::Unknown);
        Ok(status.as_str_name().to_ascii_lowercase())
    }

    /// The host pid of the task's init process.
    async fn task_pid(
        &self,
        conn: &crate::containerd::Connection,
        namespace: &str,
        id: &str,
        action: ContainerAction,
    ) -> Result<u32, ResponseError> {
        let req = request(
            GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            },
            namespace,
        )
        .map_err(|e| self.error(e, namespace, id, action))?;
        let got = conn
            .call("Tasks.Get", conn.client().tasks().get(req))
            .await
            .map_err(|e| self.error(e, namespace, id, action))?;
        // A stopped task still reports its old pid, which may belong to another process
        // by now: only a running or paused task's pid is the container's.
        got.process
            .filter(|p| {
                matches!(
                    TaskStatus::try_from(p.status),
                    Ok(TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing)
                )
            })
            .map(|p| p.pid)
            .filter(|pid| *pid > 0)
            .ok_or_else(|| ResponseError::NoTask {
                namespace: namespace.to_string(),
                id: id.to_string(),
            })
    }

    /// What a containerd failure means for the action.
    fn error(
        &self,
        e: ContainerdError,
        namespace: &str,
        id: &str,
        action: ContainerAction,
    ) -> ResponseError {
        match e {
            ContainerdError::BadNamespace(ns) => ResponseError::BadNamespace(ns),
            e if e.is_not_found() => ResponseError::NoTask {
                namespace: namespace.to_string(),
                id: id.to_string(),
            },
            e if e.is_connection_loss() || e.code() == Some(Code::Unavailable) => {
                ResponseError::Unavailable {
                    socket: self.containerd.socket().to_path_buf(),
                    message: e.to_string(),
                }
            }
            e => ResponseError::Refused {
                action: action.as_str(),
                namespace: namespace.to_string(),
                id: id.to_string(),
                message: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn empty_names_and_a_dead_socket_are_errors_that_say_so() {
        let r = Responder::new(Containerd::new(
            "/nonexistent/containerd.sock",
            crate::containerd::Timeouts::default(),
        ));
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
