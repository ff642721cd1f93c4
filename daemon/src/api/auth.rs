//! Who may call what: the access table (gRPC method path -> what it requires), the peer a
//! connection belongs to (unix socket client, or TLS client certificate identities and
//! their role), and the tower layer that refuses a call beyond the peer's role with
//! PERMISSION_DENIED and logs it.
//!
//! Owns the decision and its logging. It must not authenticate: the transport has done
//! that (socket file mode; TLS handshake against the client CA) before a request exists.
//! Methods missing from the table are refused, so a new method cannot be exposed without
//! deciding who may call it (a test checks the table covers every method of the API).

use crate::config::Role;
use http::{Request, Response};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tracing::warn;

/// What a method requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any peer the transport let in, even one whose identity maps to no role (health
    /// checks from a load balancer or kubelet probe).
    Authenticated,
    /// At least this role.
    Role(Role),
}

/// Method path (`/package.Service/Method`) -> requirement.
#[derive(Clone, Debug)]
pub struct AccessTable(HashMap<String, Access>);

/// The methods of layerguard's API and of the standard services it serves.
pub const PRODUCTION: &[(&str, Access)] = &[
    (
        "/layerguard.v1.AlertService/Subscribe",
        Access::Role(Role::Viewer),
    ),
    (
        "/layerguard.v1.AlertService/List",
        Access::Role(Role::Viewer),
    ),
    (
        "/layerguard.v1.ContainerService/List",
        Access::Role(Role::Viewer),
    ),
    (
        "/layerguard.v1.StatusService/Get",
        Access::Role(Role::Viewer),
    ),
    (
        "/layerguard.v1.ResponseService/Pause",
        Access::Role(Role::Responder),
    ),
    (
        "/layerguard.v1.ResponseService/Release",
        Access::Role(Role::Responder),
    ),
    (
        "/layerguard.v1.ResponseService/Kill",
        Access::Role(Role::Responder),
    ),
    (
        "/layerguard.v1.ResponseService/Isolate",
        Access::Role(Role::Responder),
    ),
    (
        "/layerguard.v1.BaselineService/List",
        Access::Role(Role::Viewer),
    ),
    (
        "/layerguard.v1.BaselineService/Get",
        Access::Role(Role::Viewer),
    ),
    (
        "/layerguard.v1.BaselineService/Export",
        Access::Role(Role::Viewer),
    ),
    (
        "/layerguard.v1.BaselineService/Lock",
        Access::Role(Role::Responder),
    ),
    (
        "/layerguard.v1.BaselineService/Relearn",
        Access::Role(Role::Responder),
    ),
    (
        "/layerguard.v1.BaselineService/Import",
        Access::Role(Role::Responder),
    ),
    ("/grpc.health.v1.Health/Check", Access::Authenticated),
    ("/grpc.health.v1.Health/Watch", Access::Authenticated),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Role(Role::Viewer),
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Role(Role::Viewer),
    ),
];

impl AccessTable {
    pub fn production() -> Self {
        Self::from_entries(PRODUCTION.iter().map(|(p, a)| (p.to_string(), *a)))
    }

    pub fn from_entries(entries: impl IntoIterator<Item = (String, Access)>) -> Self {
        Self(entries.into_iter().collect())
    }

    #[cfg(test)]
    /// Sets or replaces one entry (tests raise a method to `responder`).
    pub fn with(mut self, path: &str, access: Access) -> Self {
        self.0.insert(path.to_string(), access);
        self
    }

    pub fn get(&self, path: &str) -> Option<Access> {
        self.0.get(path).copied()
    }

    /// Ok, or why not (one sentence for the client and the log).
    pub fn decide(&self, path: &str, peer: &Peer) -> Result<(), String> {
        match self.get(path) {
            None => Err(format!(
                "{path} is not a method this server grants access to"
            )),
            Some(Access::Authenticated) => Ok(()),
            Some(Access::Role(need)) => match peer.role {
                Some(have) if have >= need => Ok(()),
                Some(have) => Err(format!(
                    "{path} needs role {}; {} has role {}",
                    need.as_str(),
                    peer.identity,
                    have.as_str()
                )),
                None => Err(format!(
                    "{path} needs role {}; {} has no role (add it under [api.roles])",
                    need.as_str(),
                    peer.identity
                )),
            },
        }
    }
}

/// The client on the other end of a connection, attached to every request on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `unix` or `tls`.
    pub transport: &'static str,
    /// For logs: `uid 1000 pid 4242` or the certificate identity that granted the role.
    pub identity: String,
    pub role: Option<Role>,
}

impl Peer {
    /// A unix socket client: the socket's file mode let it in; every such client gets
    /// the configured socket role.
    pub fn unix(uid: Option<u32>, pid: Option<i32>, role: Role) -> Self {
        let identity = match (uid, pid) {
            (Some(u), Some(p)) => format!("unix uid {u} pid {p}"),
            (Some(u), None) => format!("unix uid {u}"),
            _ => "unix client".to_string(),
        };
        Self {
            transport: "unix",
            identity,
            role: Some(role),
        }
    }

    /// A TLS client with a verified certificate naming `identities`: the highest role
    /// any of them is mapped to.
    pub fn tls(addr: &str, identities: &[String], roles: &BTreeMap<String, Role>) -> Self {
        let granted = identities
            .iter()
            .filter_map(|i| roles.get(i).map(|r| (*r, i)))
            .max_by_key(|(r, _)| *r);
        let identity = match (granted, identities.first()) {
            (Some((_, i)), _) => format!("{i} ({addr})"),
            (None, Some(i)) => format!("{i} ({addr})"),
            (None, None) => format!("certificate without identity ({addr})"),
        };
        Self {
            transport: "tls",
            identity,
            role: granted.map(|(r, _)| r),
        }
    }
}

/// The identities a client certificate carries: subject common names, then DNS names and
/// URIs from the subject alternative names. Empty if it does not parse (the handshake
/// already verified it, so that only means no usable identity).
pub fn certificate_identities(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.push(d.to_string()),
                GeneralName::URI(u) => out.push(u.to_string()),
                _ => {}
            }
        }
    }
    out.dedup();
    out
}

/// Checks every request against the access table before it reaches a service.
#[derive(Clone)]
pub struct AuthLayer {
    table: Arc<AccessTable>,
}

impl AuthLayer {
    pub fn new(table: AccessTable) -> Self {
        Self {
            table: Arc::new(table),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            table: self.table.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    table: Arc<AccessTable>,
}

impl<S> tower::Service<Request<Body>> for AuthService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    // One allocation per call; a call is a whole gRPC request, so it does not show.
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = req.uri().path();
        let verdict = match req.extensions().get::<Arc<Peer>>() {
            Some(peer) => self
                .table
                .decide(path, peer)
                .map_err(|why| (why, peer.clone())),
            // Every connection gets a peer from our listeners; none means a bug, and the
            // safe answer is no.
            None => Err((
                "connection without a peer identity".to_string(),
                Arc::new(Peer {
                    transport: "unknown",
                    identity: "unknown".into(),
                    role: None,
                }),
            )),
        };
        match verdict {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err((why, peer)) => {
                warn!(method = path, peer = %peer.identity, transport = peer.transport,
                    role = peer.role.map_or("none", |r| r.as_str()), reason = %why,
                    "API call refused");
                let status = tonic::Status::permission_denied(why);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tower::{Service, ServiceExt};

    fn viewer() -> Peer {
        Peer::tls(
            "127.0.0.1:1",
            &["siem".into()],
            &BTreeMap::from([("siem".to_string(), Role::Viewer)]),
        )
    }

    #[test]
    fn the_table_covers_every_method_of_the_api() {
        let set = prost_types::FileDescriptorSet::decode(layerguard_proto::v1::FILE_DESCRIPTOR_SET)
            .unwrap();
        let table = AccessTable::production();
        let mut n = 0;
        for file in &set.file {
            for svc in &file.service {
                for m in &svc.method {
                    let path = format!("/{}.{}/{}", file.package(), svc.name(), m.name());
                    assert!(table.get(&path).is_some(), "{path} has no access entry");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 14);
        for verb in ["Pause", "Release", "Kill", "Isolate"] {
            let path = format!("/layerguard.v1.ResponseService/{verb}");
            assert_eq!(table.get(&path), Some(Access::Role(Role::Responder)));
        }
        for (verb, role) in [
            ("List", Role::Viewer),
            ("Get", Role::Viewer),
            ("Export", Role::Viewer),
            ("Lock", Role::Responder),
            ("Relearn", Role::Responder),
            ("Import", Role::Responder),
        ] {
            let path = format!("/layerguard.v1.BaselineService/{verb}");
            assert_eq!(table.get(&path), Some(Access::Role(role)), "{path}");
        }
    }

    #[test]
    fn roles_are_ordered_and_unknown_methods_are_refused() {
        let t = AccessTable::production();
        let v = viewer();
        let r = Peer::unix(Some(0), Some(1), Role::Responder);
        assert!(t
            .decide("/layerguard.v1.AlertService/Subscribe", &v)
            .is_ok());
        assert!(t
            .decide("/layerguard.v1.AlertService/Subscribe", &r)
            .is_ok());
        let why = t
            .decide("/layerguard.v1.ResponseService/Kill", &v)
            .unwrap_err();
        assert!(
            why.contains("needs role responder") && why.contains("siem"),
            "{why}"
        );
        assert!(t.decide("/layerguard.v1.ResponseService/Kill", &r).is_ok());
        assert!(t.decide("/layerguard.v1.Nope/Nope", &r).is_err());
        let nobody = Peer::tls("a", &["stranger".into()], &BTreeMap::new());
        assert_eq!(nobody.role, None);
        assert!(t.decide("/grpc.health.v1.Health/Check", &nobody).is_ok());
        let why = t
            .decide("/layerguard.v1.StatusService/Get", &nobody)
            .unwrap_err();
        assert!(why.contains("no role"), "{why}");
    }

    #[test]
    fn a_certificate_with_several_mapped_identities_gets_the_highest_role() {
        let roles = BTreeMap::from([
            ("a".to_string(), Role::Viewer),
            ("spiffe://x/ir".to_string(), Role::Responder),
        ]);
        let p = Peer::tls("h:1", &["a".into(), "spiffe://x/ir".into()], &roles);
        assert_eq!(p.role, Some(Role::Responder));
        assert!(p.identity.starts_with("spiffe://x/ir"));
    }

    #[test]
    fn identities_come_from_the_common_name_and_alternative_names() {
        let mut params = rcgen::CertificateParams::new(vec!["siem.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "siem-reader");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://c/ns/sec/sa/siem".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_identities(cert.der()),
            vec!["siem-reader", "siem.example", "spiffe://c/ns/sec/sa/siem"]
        );
        assert!(certificate_identities(b"garbage").is_empty());
    }

    #[tokio::test]
    async fn the_layer_refuses_with_permission_denied_and_passes_the_rest() {
        let table = AccessTable::production().with(
            "/layerguard.v1.StatusService/Get",
            Access::Role(Role::Responder),
        );
        let inner = tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::default()))
        });
        let mut svc = tower::Layer::layer(&AuthLayer::new(table), inner);
        let call = |path: &str, peer: Option<Peer>| {
            let mut req = Request::builder().uri(path).body(Body::default()).unwrap();
            if let Some(p) = peer {
                req.extensions_mut().insert(Arc::new(p));
            }
            req
        };
        let grpc_status = |resp: &Response<Body>| {
            resp.headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_string())
        };
        let denied = svc
            .ready()
            .await
            .unwrap()
            .call(call("/layerguard.v1.StatusService/Get", Some(viewer())))
            .await
            .unwrap();
        assert_eq!(
            grpc_status(&denied).as_deref(),
            Some("7"),
            "PERMISSION_DENIED"
        );
        let ok = svc
            .ready()
            .await
            .unwrap()
            .call(call("/layerguard.v1.AlertService/List", Some(viewer())))
            .await
            .unwrap();
        assert_eq!(grpc_status(&ok), None, "passed to the service");
        let no_peer = svc
            .ready()
            .await
            .unwrap()
            .call(call("/layerguard.v1.AlertService/List", None))
            .await
            .unwrap();
        assert_eq!(grpc_status(&no_peer).as_deref(), Some("7"));
    }
}
