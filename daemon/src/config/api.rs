//! `[api]`: the gRPC API's listeners, TLS and roles; the keys, their defaults and what a
//! value must be.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a client of the API may do. Ordered: a responder may do everything a viewer may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Subscribe to and list alerts, list containers, read status.
    Viewer,
    /// Also the response calls (kill, pause, ...) that later versions add.
    Responder,
}

impl Role {
    /// The role's name in the config and in log lines.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Responder => "responder",
        }
    }
}

/// Where the API's unix socket is unless `api.socket` says otherwise.
pub const DEFAULT_API_SOCKET: &str = "/run/layerguard/layerguard.sock";

/// `[api]`: the gRPC API (`layerguard.v1`), on a unix socket and, only with mutual TLS,
/// on TCP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API at all (the CLI's watch/alerts/containers/status need it).
    pub enabled: bool,
    /// The unix socket; its directory is created if missing.
    pub socket: PathBuf,
    /// File mode of the socket: who may connect is who may use it. Octal in TOML (0o660).
    pub socket_mode: u32,
    /// Group owning the socket (a name or a numeric gid); unset keeps the daemon's group.
    pub socket_group: Option<String>,
    /// The role of every client of the unix socket.
    pub socket_role: Role,
    /// TCP address for remote clients, e.g. `0.0.0.0:50051`. Requires `tls_cert`,
    /// `tls_key` and `tls_client_ca`: there is no TCP without mutual TLS.
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// PEM server certificate chain and private key for TCP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that client certificates must chain to.
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificate identity -> role. An identity is the subject common name, a DNS
    /// name or a URI (SPIFFE id) in the subject alternative names. A verified client
    /// whose certificate names no listed identity may only call the health service.
    pub roles: std::collections::BTreeMap<String, Role>,
    /// How many alerts a subscriber may fall behind the live stream before it is switched
    /// to catching up from the journal (it is told so). Memory: one shared ring of this
    /// many alerts.
    pub subscriber_queue: usize,
    /// Concurrent Subscribe streams; more are refused with RESOURCE_EXHAUSTED.
    pub max_subscribers: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: DEFAULT_API_SOCKET.into(),
            socket_mode: 0o660,
            socket_group: None,
            socket_role: Role::Responder,
            tcp_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            roles: Default::default(),
            subscriber_queue: 4096,
            max_subscribers: 64,
        }
    }
}

impl ApiConfig {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("api.{key}"), problem));
        if !self.socket.is_absolute() {
            return bad(
                "socket",
                format!("must be an absolute path, not {}", self.socket.display()),
            );
        }
        if self.socket_mode > 0o777 {
            return bad(
                "socket_mode",
                format!(
                    "must be a file mode such as 0o660, not {:#o}",
                    self.socket_mode
                ),
            );
        }
        if self.socket_mode & 0o600 != 0o600 {
            return bad(
                "socket_mode",
                format!(
                    "must let the owner (root) read and write, not {:#o}",
                    self.socket_mode
                ),
            );
        }
        if self.socket_group.as_deref().is_some_and(str::is_empty) {
            return bad("socket_group", "must not be empty when set".into());
        }
        let tls = [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_client_ca", &self.tls_client_ca),
        ];
        if self.tcp_listen.is_some() {
            for (key, value) in tls {
                if value.is_none() {
                    return bad(
                        "tcp_listen",
                        format!(
                            "needs api.{key} as well: TCP is only served with mutual TLS \
                             (api.tls_cert, api.tls_key, api.tls_client_ca)"
                        ),
                    );
                }
            }
        }
        for (key, value) in tls {
            if let Some(p) = value.as_ref().filter(|p| !p.is_absolute()) {
                return bad(
                    key,
                    format!("must be an absolute path, not {}", p.display()),
                );
            }
        }
        if let Some(identity) = self.roles.keys().find(|k| k.trim().is_empty()) {
            return bad("roles", format!("has an empty identity {identity:?}"));
        }
        if !(16..=1 << 20).contains(&self.subscriber_queue) {
            return bad(
                "subscriber_queue",
                format!(
                    "must be between 16 and 1048576, not {}",
                    self.subscriber_queue
                ),
            );
        }
        if !(1..=10_000).contains(&self.max_subscribers) {
            return bad(
                "max_subscribers",
                format!("must be between 1 and 10000, not {}", self.max_subscribers),
            );
        }
        Ok(())
    }
}
