//! Low-level host plumbing shared by the harness modules: running commands with a deadline,
//! reading `/proc` (mount table, process command lines, start times) and hex digests.
//!
//! Owns nothing stateful. It must not know about containerd, images or the daemon; the
//! modules that do build on these helpers.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// How often a deadline loop re-checks its condition. Short enough that a test waiting on a
/// child does not add visible latency, long enough not to burn one of the two cores.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Lowercase hex of `bytes`. sha2 0.11 digests no longer implement `LowerHex`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Lowercase hex sha256 of `data`, without the `sha256:` prefix.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// OCI digest string (`sha256:<hex>`) of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Runs `cmd` to completion, capturing stdout and stderr, and kills it if it outlives
/// `timeout`. A hung `ctr` or `gcc` must fail the test with its output, not hang the suite.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {shown}"))?;
    // Both pipes are drained on their own threads: a child that fills one pipe while we
    // block on the other would otherwise deadlock.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = match wait_deadline(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            bail!(
                "{shown} did not finish within {timeout:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&stdout).trim(),
                String::from_utf8_lossy(&stderr).trim()
            );
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` to exit; `None` when it is still running at the deadline.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: i32, sig: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(err).with_context(|| format!("kill({pid}, {sig})"))
}

/// Formats an `Output` for an error message: status plus trimmed stdout/stderr.
pub fn describe_output(out: &Output) -> String {
    format!(
        "{}; stdout: {:?}; stderr: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Decodes the octal escapes (`\040` for space, ...) the kernel uses in `/proc/*/mountinfo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &field[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/mountinfo`, reduced to what the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// Per-superblock options, e.g. overlayfs `lowerdir=...,upperdir=...`.
    pub super_options: String,
}

/// Parses a mountinfo table (the text of `/proc/<pid>/mountinfo`).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            // Optional fields end at a lone "-"; fs type, source and super options follow.
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountInfo {
                mount_point: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
                fs_type: fields.get(sep + 1)?.to_string(),
                source: unescape_mountinfo(fields.get(sep + 2)?),
                super_options: fields
                    .get(sep + 3)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first so they
/// can be unmounted in order. The containerd shims and the snapshotter mount in the host
/// namespace, which is ours, so these are exactly what a private containerd leaves behind.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    Ok(found)
}

/// Lazily unmounts everything at or below `dir`, deepest first, until nothing is left.
/// Stacked mounts on one point need one umount each, hence the loop.
pub fn unmount_all_under(dir: &Path) -> Result<()> {
    const MAX_ROUNDS: usize = 16;
    for _ in 0..MAX_ROUNDS {
        let mounts = mounts_under(dir)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for m in &mounts {
            let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes())
                .context("mount point with NUL byte")?;
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                // EINVAL: already gone (a parent's lazy unmount took it along).
                if err.raw_os_error() != Some(libc::EINVAL)
                    && err.raw_os_error() != Some(libc::ENOENT)
                {
                    eprintln!("layerguard-tests: umount2({}) failed: {err}", m.display());
                }
            }
        }
    }
    let left = mounts_under(dir)?;
    if left.is_empty() {
        Ok(())
    } else {
        bail!(
            "mounts still present under {} after {MAX_ROUNDS} rounds: {left:?}",
            dir.display()
        )
    }
}

/// Command line of `pid` split at NULs; `None` for kernel threads and vanished processes.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Every pid whose command line satisfies `pred`, excluding this process.
pub fn pids_matching(pred: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| cmdline(*pid).is_some_and(|args| pred(&args)))
        .collect()
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`). Together
/// with the pid it identifies a process across pid reuse.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after it are
    // counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// True while `pid` is a live (not zombie) process.
pub fn process_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// Waits until every pid in `pids` is gone or the deadline passes; returns the survivors.
pub fn wait_pids_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| process_alive(*p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parses_escaped_points_and_overlay_options() {
        let text = "36 35 0:30 / /tmp/a\\040b rw,relatime shared:1 - overlay overlay rw,lowerdir=/l1:/l2,upperdir=/u,workdir=/w\n";
        let m = &parse_mountinfo(text)[0];
        assert_eq!(m.mount_point, PathBuf::from("/tmp/a b"));
        assert_eq!(m.fs_type, "overlay");
        assert_eq!(
            m.super_options,
            "rw,lowerdir=/l1:/l2,upperdir=/u,workdir=/w"
        );
    }

    #[test]
    fn hex_matches_known_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
