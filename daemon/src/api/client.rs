//! Connecting to a daemon's API as a client: over its unix socket, or over TCP with mutual
//! TLS. The `layerguard` CLI is built on this, and so are the API's own tests.
//!
//! Owns the transport only (the socket dial, the TLS identity, the connect deadline); what
//! is asked over the channel is the caller's.

use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// Connecting (and the TLS handshake) gives up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a daemon's API is.
#[derive(Clone, Debug)]
pub enum Target {
    /// The daemon's unix socket.
    Unix(PathBuf),
    /// A remote daemon over mutual TLS.
    Tls {
        /// `https://HOST:PORT`.
        endpoint: String,
        /// PEM client certificate and its private key (the daemon refuses a client
        /// without one; a test may want to see that).
        identity: Option<(PathBuf, PathBuf)>,
        /// PEM CA certificate that signed the daemon's server certificate.
        ca: PathBuf,
        /// Name to verify in the server certificate (default: the endpoint's host).
        server_name: Option<String>,
    },
}

impl Target {
    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Unix(p) => p.display().to_string(),
            Self::Tls { endpoint, .. } => endpoint.clone(),
        }
    }
}

/// Why no channel to the daemon could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket did not answer (the daemon is down, or the caller may not open it).
    #[error(
        "cannot connect to layerguard at {target} (is the daemon running, and may you open \
         its socket? see api.socket_group): {source}"
    )]
    Unix {
        /// The socket's path.
        target: String,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
    /// A TLS file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        /// Which file (`--cert`, ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint is not `https://HOST:PORT`.
    #[error("--endpoint must be https://HOST:PORT (the daemon serves TCP only with TLS), not {0}")]
    NotHttps(String),
    /// TCP or the TLS handshake failed.
    #[error("cannot connect to layerguard at {target}: {source}")]
    Tls {
        /// The endpoint.
        target: String,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Opens a channel to the daemon at `target`.
pub async fn connect(target: &Target) -> Result<Channel, ConnectError> {
    match target {
        Target::Unix(socket) => connect_unix(socket.clone()).await,
        Target::Tls {
            endpoint,
            identity,
            ca,
            server_name,
        } => {
            let read = |what: &'static str, path: &PathBuf| {
                std::fs::read(path).map_err(|source| ConnectError::Read {
                    what,
                    path: path.clone(),
                    source,
                })
            };
            if !endpoint.starts_with("https://") {
                return Err(ConnectError::NotHttps(endpoint.clone()));
            }
            let mut tls =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca", ca)?));
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(
                    read("--cert", cert)?,
                    read("--key", key)?,
                ));
            }
            if let Some(name) = server_name {
                tls = tls.domain_name(name.clone());
            }
            let failed = |source| ConnectError::Tls {
                target: endpoint.clone(),
                source,
            };
            Endpoint::from_shared(endpoint.clone())
                .map_err(failed)?
                .connect_timeout(CONNECT_TIMEOUT)
                .tls_config(tls)
                .map_err(failed)?
                .connect()
                .await
                .map_err(failed)
        }
    }
}

async fn connect_unix(socket: PathBuf) -> Result<Channel, ConnectError> {
    // The URI is required by the HTTP layer but unused: the connector dials the socket.
    let path = socket.clone();
    Endpoint::from_static("http://layerguard.sock")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| ConnectError::Unix {
            target: socket.display().to_string(),
            source,
        })
}
