//! Network isolation of a container: an nftables table in the container's network
//! namespace that drops every packet but loopback, added and removed with `nft` run inside
//! that namespace (`nsenter --net`).
//!
//! Owns the ruleset and the two commands. The container keeps running; its sockets stay
//! open but carry nothing. A container that shares the host's network namespace is refused:
//! isolating it would cut the node off.

use std::io::Write;
use std::process::{Command, Stdio};

/// The table layerguard adds (and only ever removes its own).
pub const TABLE: &str = "layerguard_isolate";

const RULESET: &str = "table inet layerguard_isolate {
  chain input {
    type filter hook input priority -300; policy drop;
    iif \"lo\" accept
  }
  chain output {
    type filter hook output priority -300; policy drop;
    oif \"lo\" accept
  }
}
";

/// Why isolation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    #[error(
        "the container shares the host's network namespace: isolating it would cut the node off"
    )]
    HostNetwork,
    #[error("cannot read the network namespace of pid {pid}: {source}")]
    Namespace {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("nft in the container's network namespace failed: {0}")]
    Nft(String),
}

fn netns_inode(pid: u32) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/net"))?.ino())
}

fn nft(pid: u32, args: &[&str], input: Option<&str>) -> Result<String, IsolateError> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("nft")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            IsolateError::Nft(format!(
                "cannot run nsenter/nft (is nftables installed?): {e}"
            ))
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| IsolateError::Nft(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| IsolateError::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(IsolateError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_own_namespace(pid: u32) -> Result<(), IsolateError> {
    let theirs = netns_inode(pid).map_err(|source| IsolateError::Namespace { pid, source })?;
    // The host's namespace is pid 1's (the daemon runs with the host's pid namespace);
    // the daemon's own is refused too (a DaemonSet with hostNetwork). pid 1's is not
    // always readable (ptrace access checks): then the daemon's own is what is known.
    let own = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|source| IsolateError::Namespace {
            pid: std::process::id(),
            source,
        })?;
    let host = netns_inode(1).ok();
    if theirs == own || host == Some(theirs) {
        return Err(IsolateError::HostNetwork);
    }
    Ok(())
}

/// Isolates the network namespace of `pid` (the container's task). Doing it twice is the
/// same as once.
pub fn isolate(pid: u32) -> Result<(), IsolateError> {
    check_own_namespace(pid)?;
    // One transaction: create (if missing), flush by deleting, define. A second isolate
    // replaces the rules with no moment without them.
    let script = format!("table inet {TABLE}\ndelete table inet {TABLE}\n{RULESET}");
    nft(pid, &["-f", "-"], Some(&script)).map(|_| ())
}

/// Removes the isolation of `pid`'s network namespace; `Ok(false)` when there was none.
pub fn release(pid: u32) -> Result<bool, IsolateError> {
    check_own_namespace(pid)?;
    let tables = nft(pid, &["list", "tables"], None)?;
    if !tables
        .lines()
        .any(|l| l.trim() == format!("table inet {TABLE}"))
    {
        return Ok(false);
    }
    nft(pid, &["delete", "table", "inet", TABLE], None).map(|_| true)
}
