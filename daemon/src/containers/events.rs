//! What containerd's event messages mean for the containers table: each topic the table
//! cares about, decoded into a [`Change`]. Pure: the watcher owns the stream and acts on
//! the changes.

use containerd_client::events::{
    ContainerCreate, ContainerDelete, ContainerUpdate, NamespaceCreate, TaskCreate, TaskDelete,
    TaskExit, TaskStart,
};
use prost::Message;
use std::time::SystemTime;

/// What one containerd event means for the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Created or updated: fetch it (the event does not carry the labels).
    Container(String),
    ContainerDeleted(String),
    TaskStarted {
        container_id: String,
        pid: u32,
    },
    TaskExited {
        container_id: String,
        pid: u32,
        /// When the shim reaped it (wall clock), if containerd said.
        exited_at: Option<SystemTime>,
    },
    NamespaceCreated(String),
}

/// Decodes an event payload by its topic. Topics the table does not care about give
/// `None`. Exec processes (`ctr exec`, `kubectl exec`) share the container's mount
/// namespace, so only the init process's start and exit matter.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Option<Change>, prost::DecodeError> {
    Ok(Some(match topic {
        "/containers/create" => Change::Container(ContainerCreate::decode(payload)?.id),
        "/containers/update" => Change::Container(ContainerUpdate::decode(payload)?.id),
        "/containers/delete" => Change::ContainerDeleted(ContainerDelete::decode(payload)?.id),
        "/tasks/create" => {
            let e = TaskCreate::decode(payload)?;
            Change::TaskStarted {
                container_id: e.container_id,
                pid: e.pid,
            }
        }
        "/tasks/start" => {
            let e = TaskStart::decode(payload)?;
            Change::TaskStarted {
                container_id: e.container_id,
                pid: e.pid,
            }
        }
        "/tasks/exit" => {
            let e = TaskExit::decode(payload)?;
            return Ok(task_exited(e.id, e.container_id, e.pid, e.exited_at));
        }
        "/tasks/delete" => {
            let e = TaskDelete::decode(payload)?;
            return Ok(task_exited(e.id, e.container_id, e.pid, e.exited_at));
        }
        "/namespaces/create" => Change::NamespaceCreated(NamespaceCreate::decode(payload)?.name),
        _ => return Ok(None),
    }))
}

/// A task's exit or deletion, if it is the container's init task: an exec'd process (its
/// own `id`) ending says nothing about the container.
fn task_exited(
    id: String,
    container_id: String,
    pid: u32,
    exited_at: Option<prost_types::Timestamp>,
) -> Option<Change> {
    (id.is_empty() || id == container_id).then(|| Change::TaskExited {
        container_id,
        pid,
        exited_at: system_time(exited_at),
    })
}

/// A containerd timestamp as wall-clock time, when it has one that fits.
pub(super) fn system_time(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|t| SystemTime::try_from(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_by_topic() {
        let start = TaskStart {
            container_id: "c1".into(),
            pid: 42,
        };
        assert_eq!(
            decode("/tasks/start", &start.encode_to_vec()).unwrap(),
            Some(Change::TaskStarted {
                container_id: "c1".into(),
                pid: 42
            })
        );
        let create = TaskCreate {
            container_id: "c1".into(),
            pid: 41,
            ..Default::default()
        };
        assert!(matches!(
            decode("/tasks/create", &create.encode_to_vec()).unwrap(),
            Some(Change::TaskStarted { pid: 41, .. })
        ));
        let init_exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            ..Default::default()
        };
        assert_eq!(
            decode("/tasks/exit", &init_exit.encode_to_vec()).unwrap(),
            Some(Change::TaskExited {
                container_id: "c1".into(),
                pid: 42,
                exited_at: None,
            })
        );
        let exec_exit = TaskExit {
            container_id: "c1".into(),
            id: "exec-1".into(),
            pid: 77,
            ..Default::default()
        };
        assert_eq!(
            decode("/tasks/exit", &exec_exit.encode_to_vec()).unwrap(),
            None
        );
        let delete = ContainerDelete { id: "c1".into() };
        assert_eq!(
            decode("/containers/delete", &delete.encode_to_vec()).unwrap(),
            Some(Change::ContainerDeleted("c1".into()))
        );
        let ns = NamespaceCreate {
            name: "moby".into(),
            ..Default::default()
        };
        assert_eq!(
            decode("/namespaces/create", &ns.encode_to_vec()).unwrap(),
            Some(Change::NamespaceCreated("moby".into()))
        );
        assert_eq!(decode("/images/create", b"").unwrap(), None);
        assert!(decode("/tasks/start", b"\xff\xff").is_err());
    }
}
