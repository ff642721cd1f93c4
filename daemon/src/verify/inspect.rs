//! The blocking part of judging an exec: finding and hashing the binary and the script
//! that ran, on the blocking pool, within a deadline.
//!
//! Owns the order of the ways in (the process's own `/proc/PID/exe`, then a live root of
//! the container), the recovery of names the event could not carry whole (from `/proc`,
//! while the process lives), and the hash cache fill. Every file it opens is a regular
//! file opened without blocking ([`target::open_in_root`]), its size checked before a
//! byte is read, its hashing stopped at the deadline. It decides no verdict: it reports
//! facts ([`FileFacts`]), or why they could not be had ([`Unreadable`]).

use super::judge::{cached_hash, content_key};
use super::paths::{Claim, ExecPaths, Recovery, ScriptClaim};
use super::target;
use super::verdict::{FileFacts, Unreadable};
use super::Shared;
use crate::process::absolute;
use crate::sensor::ExecEvent;
use std::time::Instant;

/// What was found about the file(s) of one exec.
pub(super) struct Inspection {
    pub binary: FileFacts,
    pub script: Option<FileFacts>,
}

/// Live processes of the container to open paths through, when the process that exec'd
/// is gone: at most this many found by scanning `/proc` as a last resort.
const SCANNED_ROOTS: usize = 4;

/// Finds and hashes the executed file (and the script it runs). Blocking; stops reading
/// at `deadline`.
pub(super) fn inspect(
    shared: &Shared,
    exec: &ExecEvent,
    paths: &ExecPaths,
    roots: &[u32],
    deadline: Instant,
) -> Inspection {
    let roots = usable_roots(exec, roots);
    let binary = inspect_binary(shared, exec, &paths.binary, &roots, deadline);
    let script = paths
        .script
        .as_ref()
        .and_then(|s| inspect_script(shared, exec, s, &roots, deadline));
    Inspection { binary, script }
}

/// Only processes still in the exec's mount namespace show the container's root: any
/// other (a host parent, a reused pid) would resolve paths on the wrong tree. When none
/// of those the daemon knows is left, a scan of `/proc` finds one (a container that ran
/// before the daemon started, or whose known processes all exited).
fn usable_roots(exec: &ExecEvent, roots: &[u32]) -> Vec<u32> {
    let ns = exec.process.mnt_ns;
    let live: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|&p| crate::procfs::mnt_ns_of(p).ok() == Some(ns))
        .collect();
    if !live.is_empty() {
        return live;
    }
    crate::procfs::pids_in_namespace(ns, SCANNED_ROOTS)
}

/// A path the event could not name, from `/proc` while the process lives.
fn recover(exec: &ExecEvent, recovery: &Recovery) -> Option<String> {
    let pid = exec.process.tgid;
    let cwd = || exec.cwd.clone().or_else(|| crate::procfs::cwd(pid));
    match recovery {
        Recovery::Exe => target::exe_path_checked(pid, exec.file),
        Recovery::Cwd { relative } => Some(absolute(relative, Some(&crate::procfs::cwd(pid)?))),
        Recovery::Argument { index } => {
            let arg = crate::procfs::argument(pid, *index)?;
            let cwd = if arg.starts_with('/') { None } else { cwd() };
            if !arg.starts_with('/') && cwd.is_none() {
                return None;
            }
            Some(absolute(&arg, cwd.as_deref()))
        }
        Recovery::Fd { .. } => None,
    }
}

/// The path a claim names, recovered from `/proc` if it must be; else why not.
fn claimed_path(exec: &ExecEvent, claim: &Claim) -> Result<String, Unreadable> {
    match claim {
        Claim::Known(p) => Ok(p.clone()),
        Claim::Unknown {
            reason, recovery, ..
        } => recover(exec, recovery).ok_or_else(|| {
            Unreadable::PathUnknown(format!(
                "{reason}, and /proc no longer tells (the process is gone)"
            ))
        }),
    }
}

fn inspect_binary(
    shared: &Shared,
    exec: &ExecEvent,
    claim: &Claim,
    roots: &[u32],
    deadline: Instant,
) -> FileFacts {
    let limit = shared.config.max_file_bytes;
    let pid = exec.process.tgid;
    let path = claimed_path(exec, claim);
    let shown = path.clone().unwrap_or_else(|_| claim.shown().to_string());
    let facts = |actual| FileFacts {
        path: shown.clone(),
        actual,
        memfd: exec.memfd,
        deleted: exec.deleted,
        upper_layer: exec.upper_layer,
        runtime: false,
    };
    if let Err(why) = &path {
        return facts(Err(why.clone()));
    }
    // The kernel told the size: a file too large to hash is not opened at all.
    if !exec.memfd && exec.size > limit {
        return facts(Err(Unreadable::TooLarge {
            path: shown.clone(),
            size: exec.size,
            limit,
        }));
    }
    let key = content_key(exec);
    let cached = if exec.memfd {
        None
    } else {
        cached_hash(shared, &key)
    };
    let actual = match cached {
        Some(h) => Ok(h),
        None => {
            let hashed = match target::open_exe(pid, exec.file) {
                Ok(opened) => target::hash_opened(opened, limit, deadline),
                Err(live_err) if exec.memfd => Err(live_err),
                Err(live_err) => open_checked_in_roots(roots, &shown, exec)
                    .and_then(|o| target::hash_opened(o, limit, deadline))
                    .map_err(|e| match e {
                        Unreadable::Failed(e) | Unreadable::Missing(e) => {
                            Unreadable::Failed(format!("{live_err}; {e}"))
                        }
                        other => other,
                    }),
            };
            if let (Ok(h), false) = (&hashed, exec.memfd) {
                shared
                    .hashes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, *h);
            }
            hashed
        }
    };
    let runtime = exec.memfd && actual.as_ref().is_ok_and(|h| shared.runtime.contains(h));
    FileFacts {
        runtime,
        ..facts(actual)
    }
}

fn inspect_script(
    shared: &Shared,
    exec: &ExecEvent,
    script: &ScriptClaim,
    roots: &[u32],
    deadline: Instant,
) -> Option<FileFacts> {
    let limit = shared.config.max_file_bytes;
    let facts = |path: String, actual| FileFacts {
        path,
        actual,
        memfd: false,
        deleted: false,
        upper_layer: false,
        runtime: false,
    };
    let (path, opened) = match &script.claim {
        Claim::Unknown {
            recovery: Recovery::Fd { fd },
            shown,
            reason,
        } => match target::open_fd_of(exec.process.tgid, *fd) {
            Ok((opened, path)) => (path, Ok(opened)),
            Err(e) => {
                let why = Unreadable::PathUnknown(format!("{reason}: {e}"));
                return Some(facts(shown.clone(), Err(why)));
            }
        },
        claim => match claimed_path(exec, claim) {
            Ok(path) => {
                let opened = open_in_roots(roots, &path);
                (path, opened)
            }
            Err(why) => return Some(facts(claim.shown().to_string(), Err(why))),
        },
    };
    // `sh -c ...` style runs name no file: only a file that is there counts as a script,
    // except for a `#!` exec, whose script certainly ran.
    if !script.certain && matches!(opened, Err(Unreadable::Missing(_))) {
        return None;
    }
    let actual = opened.and_then(|o| target::hash_opened(o, limit, deadline));
    Some(facts(path, actual))
}

/// Opens `path` in the first live root of the container.
fn open_in_roots(roots: &[u32], path: &str) -> Result<target::Opened, Unreadable> {
    let mut last = Unreadable::Failed(format!(
        "no live process of the container to open {path} through"
    ));
    for &root in roots {
        match target::open_in_root(root, path) {
            Ok(o) => return Ok(o),
            // Another root sees the same tree: only a root that is gone is worth retrying.
            Err(e @ Unreadable::Failed(_)) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Opens `path` in the first live root of the container whose file is the one that ran.
fn open_checked_in_roots(
    roots: &[u32],
    path: &str,
    exec: &ExecEvent,
) -> Result<target::Opened, Unreadable> {
    use std::os::unix::fs::MetadataExt;
    let mut last = Unreadable::Failed(format!(
        "no live process of the container to open {path} through"
    ));
    for &root in roots {
        match target::open_in_root(root, path) {
            Ok(o) => {
                let meta = o
                    .file
                    .metadata()
                    .map_err(|e| Unreadable::Failed(e.to_string()))?;
                if (meta.dev(), meta.ino()) == (exec.file.dev, exec.file.ino) {
                    return Ok(o);
                }
                last = Unreadable::Failed(format!(
                    "{} is another file than the one that ran (replaced since)",
                    o.via
                ));
            }
            Err(e @ (Unreadable::Failed(_) | Unreadable::Missing(_))) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
