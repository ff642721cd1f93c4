//! The CLI client of the daemon's API: `layerguard watch`, `alerts`, `containers`,
//! `status`, `respond`, `baseline`. Same binary, so the wire types and the alert JSON are the daemon's own.
//!
//! Owns connecting (unix socket by default; `--endpoint https://...` with a client
//! certificate for a remote node), the shared filter flags, and printing. This is the
//! binary's edge: errors are `anyhow` with context a person can act on.

pub mod baseline;
pub mod format;
pub mod lists;
pub mod respond;
pub mod watch;

use anyhow::bail;
use layerguard::alert::{AlertKind, Severity};
use layerguard::api::client::Target;
use layerguard::api::AlertFilter;
use layerguard::config::DEFAULT_API_SOCKET;
use std::path::PathBuf;
use tonic::transport::Channel;

pub use baseline::{baseline_command, BaselineArgs};
pub use lists::{alerts_command, containers_command, status_command, AlertsArgs, OutputArgs};
pub use respond::{respond_command, RespondArgs};
pub use watch::{watch_command, WatchArgs};

/// Where the daemon is.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectArgs {
    /// The daemon's unix socket.
    #[arg(long, default_value = DEFAULT_API_SOCKET, env = "LAYERGUARD_SOCKET")]
    pub socket: PathBuf,
    /// A remote daemon over mutual TLS, e.g. `https://node-1:50051` (needs --cert, --key,
    /// --ca). Overrides --socket.
    #[arg(long, env = "LAYERGUARD_ENDPOINT")]
    pub endpoint: Option<String>,
    /// PEM client certificate (its identity maps to a role in the daemon's [api.roles]).
    #[arg(long, requires = "endpoint")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "endpoint")]
    pub key: Option<PathBuf>,
    /// PEM CA certificate that signed the daemon's server certificate.
    #[arg(long, requires = "endpoint")]
    pub ca: Option<PathBuf>,
    /// Name to verify in the server certificate (default: the endpoint's host).
    #[arg(long, requires = "endpoint")]
    pub server_name: Option<String>,
}

impl ConnectArgs {
    /// Where, for messages.
    pub fn target(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => self.socket.display().to_string(),
        }
    }

    /// The library's idea of where the daemon is.
    fn to_target(&self) -> anyhow::Result<Target> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(Target::Unix(self.socket.clone()));
        };
        let need = |p: &Option<PathBuf>, flag: &str| -> anyhow::Result<PathBuf> {
            match p {
                Some(p) => Ok(p.clone()),
                None => bail!(
                    "--endpoint needs {flag}: the daemon only accepts TCP clients with a certificate"
                ),
            }
        };
        Ok(Target::Tls {
            endpoint: endpoint.clone(),
            identity: Some((need(&self.cert, "--cert")?, need(&self.key, "--key")?)),
            ca: need(&self.ca, "--ca")?,
            server_name: self.server_name.clone(),
        })
    }
}

/// Opens a channel to the daemon.
pub async fn connect(args: &ConnectArgs) -> anyhow::Result<Channel> {
    Ok(layerguard::api::client::connect(&args.to_target()?).await?)
}

/// The alert filter flags, shared by `watch` and `alerts`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Only alerts at least this severe: info, medium, high, critical.
    #[arg(long, value_parser = parse_severity)]
    pub min_severity: Option<Severity>,
    /// Only these kinds (repeatable), e.g. exec_modified, exec_not_in_image.
    #[arg(long = "kind", value_parser = parse_kind)]
    pub kinds: Vec<AlertKind>,
    /// Only these container ids (repeatable; a 12+ character hex prefix also matches).
    #[arg(long = "container-id")]
    pub container_ids: Vec<String>,
    /// Only these containerd namespaces (repeatable), e.g. k8s.io.
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Only these Kubernetes pod namespaces (repeatable).
    #[arg(long = "pod-namespace")]
    pub pod_namespaces: Vec<String>,
    /// Only these images (repeatable): a full reference, or a repository for all its tags.
    #[arg(long = "image")]
    pub images: Vec<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> AlertFilter {
        AlertFilter {
            min_severity: self.min_severity,
            kinds: self.kinds.clone(),
            container_ids: self.container_ids.clone(),
            containerd_namespaces: self.namespaces.clone(),
            pod_namespaces: self.pod_namespaces.clone(),
            image_refs: self.images.clone(),
        }
    }
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    [
        Severity::Info,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ]
    .into_iter()
    .find(|v| v.as_str() == s.to_ascii_lowercase())
    .ok_or_else(|| format!("`{s}` is not one of info, medium, high, critical"))
}

fn parse_kind(s: &str) -> Result<AlertKind, String> {
    AlertKind::parse(s).ok_or_else(|| {
        let all: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("`{s}` is not one of {}", all.join(", "))
    })
}

/// The error and its causes on one line, without the repeats that transport errors carry
/// (their message often includes their source's).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Turns a gRPC status into one sentence with a hint for the usual causes.
pub fn status_error(what: &str, target: &str, s: tonic::Status) -> anyhow::Error {
    let hint = match s.code() {
        tonic::Code::PermissionDenied => " (your certificate's role does not allow this)",
        tonic::Code::Unavailable => " (daemon not running or shutting down)",
        tonic::Code::Unimplemented => " (the daemon is an older version)",
        _ => "",
    };
    anyhow::anyhow!("{what} at {target}: {:?}: {}{hint}", s.code(), s.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_flags_parse() {
        assert_eq!(parse_severity("HIGH"), Ok(Severity::High));
        assert!(parse_severity("bad").is_err());
        assert_eq!(parse_kind("exec_fileless"), Ok(AlertKind::ExecFileless));
        let err = parse_kind("x").unwrap_err();
        assert!(err.contains("exec_modified"), "{err}");
    }
}
