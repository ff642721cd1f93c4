//! Where the API listens: the unix socket (created atomically with its mode and group, so
//! no client can connect before access is set) and, only when configured, TCP with
//! mutual TLS (rustls; a client certificate from the configured CA is required).
//!
//! Owns the listeners, the TLS handshake and the [`Peer`] every connection carries into
//! the request extensions. A failed handshake (no certificate, another CA, plain TCP)
//! never reaches gRPC; it is logged with the remote address.

use super::auth::{certificate_identities, Peer};
use super::ApiError;
use crate::config::{ApiConfig, Role};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// A client that has not finished its TLS handshake by then is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more connections wait in the kernel's backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Accepted connections waiting for the gRPC server to pick them up.
const ACCEPT_QUEUE: usize = 64;
/// Pause after a failed accept (EMFILE and friends) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One accepted connection, with who is on the other end.
pub enum Conn {
    Unix(UnixStream, Arc<Peer>),
    Tls(Box<TlsStream<TcpStream>>, Arc<Peer>),
}

impl Conn {
    pub fn peer(&self) -> &Arc<Peer> {
        match self {
            Conn::Unix(_, p) | Conn::Tls(_, p) => p,
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Arc<Peer>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer().clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Unix(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The listeners, bound and ready to accept.
pub struct Listeners {
    pub unix: UnixListener,
    /// Removes the socket file when the API goes, however it goes.
    pub socket_file: SocketFile,
    pub socket_role: Role,
    pub tls: Option<TlsListener>,
}

/// The unix socket file this daemon bound: removed on drop, unless another daemon has
/// bound the same path since (a socket of another inode is left alone).
pub struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            path: path.to_path_buf(),
            id: std::fs::symlink_metadata(path)
                .ok()
                .map(|m| (m.dev(), m.ino())),
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now.is_none() || now != self.id {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove the API socket");
            }
        }
    }
}

/// The TCP side: the port, the TLS settings, and the identity -> role map.
pub struct TlsListener {
    pub listener: TcpListener,
    pub acceptor: TlsAcceptor,
    pub roles: Arc<BTreeMap<String, Role>>,
}

impl Listeners {
    /// Binds the unix socket and, if configured, the TCP port. Errors name the path or
    /// address and what to do.
    pub async fn bind(config: &ApiConfig) -> Result<Self, ApiError> {
        let tls = match config.tcp_listen {
            None => None,
            Some(addr) => {
                let acceptor = tls_acceptor(config)?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ApiError::Tcp { addr, source })?;
                Some(TlsListener {
                    listener,
                    acceptor,
                    roles: Arc::new(config.roles.clone()),
                })
            }
        };
        let unix = bind_unix(
            &config.socket,
            config.socket_mode,
            config.socket_group.as_deref(),
        )?;
        Ok(Self {
            unix,
            socket_file: SocketFile::new(&config.socket),
            socket_role: config.socket_role,
            tls,
        })
    }

    /// The TCP address actually bound (port 0 in tests picks one).
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tls.as_ref().and_then(|t| t.listener.local_addr().ok())
    }

    /// Starts the accept loops; connections arrive on the returned channel until
    /// `shutdown` turns true.
    pub fn accept(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> (mpsc::Receiver<Result<Conn, std::io::Error>>, SocketFile) {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(accept_unix(
            self.unix,
            self.socket_role,
            tx.clone(),
            shutdown.clone(),
        ));
        if let Some(tls) = self.tls {
            tokio::spawn(accept_tls(tls, tx, shutdown));
        }
        (rx, self.socket_file)
    }
}

async fn accept_unix(
    listener: UnixListener,
    role: Role,
    tx: mpsc::Sender<Result<Conn, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let cred = stream.peer_cred().ok();
                let peer = Peer::unix(
                    cred.as_ref().map(|c| c.uid()),
                    cred.as_ref().and_then(|c| c.pid()),
                    role,
                );
                if tx
                    .send(Ok(Conn::Unix(stream, Arc::new(peer))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "API unix socket accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn accept_tls(
    TlsListener {
        listener,
        acceptor,
        roles,
    }: TlsListener,
    tx: mpsc::Sender<Result<Conn, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "API TCP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let roles = roles.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    warn!(remote = %addr, error = %e, "API TLS handshake refused");
                    return;
                }
                Err(_) => {
                    warn!(remote = %addr, timeout_s = TLS_HANDSHAKE_TIMEOUT.as_secs(),
                        "API TLS handshake timed out");
                    return;
                }
            };
            let identities = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| certificate_identities(c.as_ref()))
                .unwrap_or_default();
            let peer = Peer::tls(&addr.to_string(), &identities, &roles);
            info!(remote = %addr, peer = %peer.identity,
                role = peer.role.map_or("none", |r| r.as_str()), "API TLS client connected");
            let _ = tx
                .send(Ok(Conn::Tls(Box::new(stream), Arc::new(peer))))
                .await;
        });
    }
}

/// Binds under a temporary name, sets mode and group, then renames into place: the
/// socket is never reachable with looser permissions than configured.
fn bind_unix(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener, ApiError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let err = |source| ApiError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A live daemon answers; a stale socket from a crash does not.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ApiError::SocketInUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(ApiError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let gid = group.map(resolve_group).transpose()?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    let setup = (|| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = setup {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(listener)
}

/// A group name or a numeric gid.
fn resolve_group(group: &str) -> Result<u32, ApiError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group).map_err(|_| ApiError::Group {
        group: group.to_string(),
        problem: "contains a NUL byte".into(),
    })?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: all-zero is a valid `struct group` (pointers null, ints zero).
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf.len() is its size; getgrnam_r
    // writes only within grp and buf.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(ApiError::Group {
            group: group.to_string(),
            problem: "no such group (create it, or set api.socket_group to a gid)".into(),
        });
    }
    Ok(grp.gr_gid)
}

/// The rustls server config: our certificate, and client certificates required and
/// verified against the configured CA.
fn tls_acceptor(config: &ApiConfig) -> Result<TlsAcceptor, ApiError> {
    let need = |p: &Option<PathBuf>, key: &str| {
        p.clone().ok_or_else(|| {
            ApiError::TlsConfig(format!("api.{key} is required with api.tcp_listen"))
        })
    };
    let cert_path = need(&config.tls_cert, "tls_cert")?;
    let key_path = need(&config.tls_key, "tls_key")?;
    let ca_path = need(&config.tls_client_ca, "tls_client_ca")?;
    let tls_err = |path: &Path, problem: String| ApiError::Tls {
        path: path.to_path_buf(),
        problem,
    };
    let certs = load_certs(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| tls_err(&key_path, format!("no usable private key: {e}")))?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for ca in load_certs(&ca_path)? {
        roots
            .add(ca)
            .map_err(|e| tls_err(&ca_path, format!("not a usable CA certificate: {e}")))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let verifier = tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls_err(&ca_path, format!("cannot verify clients with it: {e}")))?;
    let mut server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::TlsConfig(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(&cert_path, format!("does not go with the key: {e}")))?;
    // gRPC is HTTP/2 only.
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let problem = |problem: String| ApiError::Tls {
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(problem("holds no certificate".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[tokio::test]
    async fn the_socket_gets_its_mode_and_group_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/lg.sock");
        let l = bind_unix(&path, 0o660, Some("0")).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), 0);
        // While it is served, a second daemon must not take it over.
        assert!(matches!(
            bind_unix(&path, 0o660, None),
            Err(ApiError::SocketInUse { .. })
        ));
        drop(l);
        // After a crash the file stays behind; the next start replaces it.
        bind_unix(&path, 0o600, None).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_regular_file_at_the_socket_path_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lg.sock");
        std::fs::write(&path, b"precious").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(async { bind_unix(&path, 0o660, None).map(|_| ()) });
        assert!(matches!(r, Err(ApiError::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert_eq!(resolve_group("1234").unwrap(), 1234);
        let err = resolve_group("no-such-group-here").unwrap_err().to_string();
        assert!(err.contains("no-such-group-here"), "{err}");
    }
}
