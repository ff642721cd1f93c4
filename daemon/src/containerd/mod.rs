//! The one containerd client: connecting over the API socket, the namespace header on every
//! call, a deadline on every call and every stream message, and gRPC statuses turned into
//! one typed error.
//!
//! Owns how layerguard speaks to containerd, for the containers watcher, the image content
//! store and the responder alike. It knows no containerd service's semantics: callers pick
//! the service and the request, and map [`ContainerdError`] to what it means for them.

use containerd_client::tonic::{self, metadata::MetadataValue, transport::Channel, Code, Request};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// gRPC metadata key containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The deadlines of every talk with containerd (`[containerd]` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the socket accepts us.
    pub connect: Duration,
    /// For a unary call's answer, and for a stream's response headers.
    pub call: Duration,
    /// Between two messages of a stream being read (a content blob's chunks).
    pub stream: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            call: Duration::from_secs(10),
            stream: Duration::from_secs(60),
        }
    }
}

/// What can go wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket did not accept a connection.
    #[error("cannot connect to containerd at {socket}: {source}")]
    Connect {
        /// containerd's socket.
        socket: PathBuf,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
    /// No answer within the deadline.
    #[error("containerd {call} did not answer within {timeout:?}")]
    Timeout {
        /// The call (`Images.Get`, ...).
        call: &'static str,
        /// The deadline it had.
        timeout: Duration,
    },
    /// containerd answered with an error status.
    #[error("containerd {call} failed: {code:?}: {message}")]
    Call {
        /// The call.
        call: &'static str,
        /// The gRPC status code.
        code: Code,
        /// containerd's message.
        message: String,
    },
    /// The namespace cannot be a gRPC header value.
    #[error("containerd namespace {0:?} cannot be sent as gRPC metadata")]
    BadNamespace(String),
}

impl ContainerdError {
    /// The gRPC status code containerd answered with, if it answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Call { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True for NotFound: no such image, container, task or blob.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// True when the connection (not the one request) is the problem: a caller holding a
    /// connection should drop it and connect again.
    pub fn is_connection_loss(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Call { code, .. } => matches!(
                code,
                Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
            ),
            Self::BadNamespace(_) => false,
        }
    }

    /// A status containerd answered `call` with.
    pub fn from_status(call: &'static str, status: tonic::Status) -> Self {
        Self::Call {
            call,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// Where containerd is and how long to wait for it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Containerd {
    socket: PathBuf,
    timeouts: Timeouts,
}

impl Containerd {
    /// containerd at `socket`, with these deadlines.
    pub fn new(socket: impl Into<PathBuf>, timeouts: Timeouts) -> Self {
        Self {
            socket: socket.into(),
            timeouts,
        }
    }

    /// containerd's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The deadlines of every call.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// A connection (lazy in tonic's sense: a dead socket fails here, a containerd that
    /// goes away later fails the next call).
    pub async fn connect(&self) -> Result<Connection, ContainerdError> {
        let client = tokio::time::timeout(
            self.timeouts.connect,
            containerd_client::Client::from_path(&self.socket),
        )
        .await
        .map_err(|_| ContainerdError::Timeout {
            call: "connect",
            timeout: self.timeouts.connect,
        })?
        .map_err(|source| ContainerdError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        Ok(Connection {
            channel: client.channel(),
            timeouts: self.timeouts,
        })
    }
}

/// One connection to containerd, shared by the services it serves. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connection {
    channel: Channel,
    timeouts: Timeouts,
}

impl Connection {
    /// containerd's service clients (`.images()`, `.tasks()`, ...) on this connection.
    pub fn client(&self) -> containerd_client::Client {
        containerd_client::Client::from(self.channel.clone())
    }

    /// The deadlines of every call.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Waits for the answer to `call` (a unary call, or a stream's start) within the call
    /// deadline.
    pub async fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ContainerdError> {
        self.within(call, self.timeouts.call, fut)
            .await
            .map(tonic::Response::into_inner)
    }

    /// The next message of a stream `call` started, within the stream deadline; `None` at
    /// its end.
    pub async fn next<T>(
        &self,
        call: &'static str,
        stream: &mut tonic::Streaming<T>,
    ) -> Result<Option<T>, ContainerdError> {
        self.within(call, self.timeouts.stream, stream.message())
            .await
    }

    async fn within<T>(
        &self,
        call: &'static str,
        timeout: Duration,
        fut: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, ContainerdError> {
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(ContainerdError::Timeout { call, timeout }),
            Ok(Err(status)) => Err(ContainerdError::from_status(call, status)),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

/// A request in containerd namespace `namespace` (containerd reads it from a gRPC header;
/// without it every call fails with FailedPrecondition).
pub fn request<T>(message: T, namespace: &str) -> Result<Request<T>, ContainerdError> {
    let value = MetadataValue::try_from(namespace)
        .map_err(|_| ContainerdError::BadNamespace(namespace.to_string()))?;
    let mut req = Request::new(message);
    req.metadata_mut().insert(NAMESPACE_HEADER, value);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_socket_and_a_bad_namespace_are_errors_that_say_so() {
        let c = Containerd::new("/nonexistent/containerd.sock", Timeouts::default());
        let e = c.connect().await.unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/containerd.sock"),
            "{e}"
        );
        assert!(e.is_connection_loss());
        let e = request((), "bad\nname").unwrap_err();
        assert!(matches!(e, ContainerdError::BadNamespace(_)));
        assert!(!e.is_connection_loss());
        assert!(request((), "k8s.io").is_ok());
    }

    #[test]
    fn statuses_keep_their_code() {
        let e = ContainerdError::from_status("Images.Get", tonic::Status::not_found("gone"));
        assert!(e.is_not_found() && !e.is_connection_loss());
        assert_eq!(
            e.to_string(),
            "containerd Images.Get failed: NotFound: gone"
        );
        let e = ContainerdError::from_status("Tasks.List", tonic::Status::unavailable("down"));
        assert!(e.is_connection_loss());
    }
}
