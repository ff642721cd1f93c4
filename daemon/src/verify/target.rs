//! Finding and reading the file that actually ran, from the host, without ever following
//! a path out of the container.
//!
//! Owns the two ways in: `/proc/PID/exe` (the very file the kernel executed, even if
//! deleted or replaced since, checked against the event's device and inode), and the
//! container's root (`/proc/PID/root`) opened with `openat2(RESOLVE_IN_ROOT)` for processes
//! already gone and for scripts, so that an absolute symlink in the image resolves inside
//! the image and never on the host.

use super::hash::{digest_of, HashError};
use super::verdict::Unreadable;
use crate::image::digest::Digest;
use crate::sensor::FileIdentity;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Instant;

/// `struct open_how` of openat2(2); libc's is non-exhaustive, so it cannot be built.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(2) relative to `dir`.
fn openat2(dir: &File, path: &CString, flags: i32, resolve: u64) -> std::io::Result<File> {
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 reads `how` (its size given) and the NUL-terminated path, both alive
    // for the call. A returned fd is new and owned by the File below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// The executed file as found, or why it could not be.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    /// Where it was found (for evidence), e.g. `/proc/123/exe`.
    pub via: String,
}

/// The executable of a live process, if it still is the file of the event.
pub fn open_exe(pid: u32, expect: FileIdentity) -> Result<Opened, Unreadable> {
    let via = format!("/proc/{pid}/exe");
    let failed = |e: std::io::Error| Unreadable::Failed(format!("{via}: {e}"));
    // What execve ran is a regular file; O_NONBLOCK all the same, so nothing waits.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&via)
        .map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    if (meta.dev(), meta.ino()) != (expect.dev, expect.ino) {
        return Err(Unreadable::Failed(format!(
            "{via} is another file now (dev {} ino {}, event had dev {} ino {}): the pid exec'd again or was reused",
            meta.dev(),
            meta.ino(),
            expect.dev,
            expect.ino
        )));
    }
    Ok(Opened { file, via })
}

/// The path inside its container of a live process's executable, if it still is the
/// file of the event (a name the sensor could not keep whole).
pub fn exe_path_checked(pid: u32, expect: FileIdentity) -> Option<String> {
    let via = format!("/proc/{pid}/exe");
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&via)
        .ok()?;
    let meta = handle.metadata().ok()?;
    if (meta.dev(), meta.ino()) != (expect.dev, expect.ino) {
        return None;
    }
    crate::procfs::exe_path(pid)
}

/// Opens `path` inside the root filesystem of `root_pid` (a live process of the container).
/// Symlinks resolve inside that root; magic links are refused. Only a regular file is
/// opened for reading: the path is first opened `O_PATH` (which runs no driver's or
/// FIFO's open and so cannot block or have side effects), its type checked, and only
/// then reopened through the daemon's own `/proc/self/fd`, which reaches the same inode
/// without resolving the path again.
pub fn open_in_root(root_pid: u32, path: &str) -> Result<Opened, Unreadable> {
    let via = format!("/proc/{root_pid}/root{path}");
    let root = File::open(format!("/proc/{root_pid}/root"))
        .map_err(|e| Unreadable::Failed(format!("{via}: {e}")))?;
    let cpath = CString::new(path.trim_start_matches('/'))
        .map_err(|_| Unreadable::Failed(format!("{via}: path contains a NUL byte")))?;
    let handle = openat2(
        &root,
        &cpath,
        libc::O_PATH | libc::O_CLOEXEC,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOENT) {
            Unreadable::Missing(format!("{via}: {e}"))
        } else {
            Unreadable::Failed(format!("{via}: {e}"))
        }
    })?;
    reopen_regular(&handle, via)
}

/// Opens for reading the regular file behind an `O_PATH` handle (or any descriptor),
/// refusing everything else before any open of it runs.
fn reopen_regular(handle: &File, via: String) -> Result<Opened, Unreadable> {
    let meta = handle
        .metadata()
        .map_err(|e| Unreadable::Failed(format!("{via}: {e}")))?;
    check_regular(&meta, &via)?;
    let again = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&again)
        .map_err(|e| Unreadable::Failed(format!("{via}: {e}")))?;
    Ok(Opened { file, via })
}

/// Opens the regular file at `rel` under the host directory `dir` (a container's layer
/// directory) for reading, without following any symlink or leaving `dir`
/// (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: the kernel named a real file, so a symlink on
/// the way is a container swapping the path) and without running any open but a regular
/// file's (`O_PATH` first, as [`open_in_root`]).
pub fn open_regular_beneath(dir: &std::path::Path, rel: &str) -> Result<Opened, Unreadable> {
    let via = format!("{}/{}", dir.display(), rel.trim_start_matches('/'));
    let failed = |e: std::io::Error| {
        if e.raw_os_error() == Some(libc::ENOENT) {
            Unreadable::Missing(format!("{via}: {e}"))
        } else {
            Unreadable::Failed(format!("{via}: {e}"))
        }
    };
    let base = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(failed)?;
    let cpath = CString::new(rel.trim_start_matches('/'))
        .map_err(|_| Unreadable::Failed(format!("{via}: path contains a NUL byte")))?;
    let handle = match openat2(
        &base,
        &cpath,
        libc::O_PATH | libc::O_CLOEXEC,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    ) {
        // A seccomp filter may refuse openat2 so (systemd's RestrictSUIDSGID=, older
        // container runtimes' default profiles): the same rules, one component at a time.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => open_beneath_by_components(&base, rel),
        other => other,
    }
    .map_err(failed)?;
    reopen_regular(&handle, via)
}

/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` with plain openat: `..` refused
/// (EXDEV, as openat2), every component opened `O_PATH | O_NOFOLLOW`, the ones before the
/// last also `O_DIRECTORY` (a symlink there fails). A symlink as the last component opens
/// as the link itself, which the caller's regular-file check refuses.
fn open_beneath_by_components(base: &File, rel: &str) -> std::io::Result<File> {
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
    }
    let mut current: Option<File> = None;
    for (i, part) in parts.iter().enumerate() {
        let name =
            CString::new(*part).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        if i + 1 < parts.len() {
            flags |= libc::O_DIRECTORY;
        }
        let dir = current.as_ref().unwrap_or(base);
        // SAFETY: a NUL-terminated name and a live directory descriptor; a returned fd is
        // new and owned by the File below.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        current = Some(unsafe { File::from_raw_fd(fd) });
    }
    Ok(current.expect("at least one component"))
}

/// A descriptor of a live process (`/proc/PID/fd/N`): the file a `/dev/fd/N` name opens,
/// and its path inside the container.
pub fn open_fd_of(pid: u32, fd: u32) -> Result<(Opened, String), Unreadable> {
    let via = format!("/proc/{pid}/fd/{fd}");
    let target = std::fs::read_link(&via)
        .map_err(|e| Unreadable::Failed(format!("{via}: {e}")))?
        .to_string_lossy()
        .into_owned();
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&via)
        .map_err(|e| Unreadable::Failed(format!("{via}: {e}")))?;
    let path = target
        .strip_suffix(crate::procfs::DELETED_SUFFIX)
        .unwrap_or(&target)
        .to_string();
    Ok((reopen_regular(&handle, via)?, path))
}

fn check_regular(meta: &std::fs::Metadata, via: &str) -> Result<(), Unreadable> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a file"
    };
    Err(Unreadable::NotRegular {
        via: via.to_string(),
        what,
    })
}

/// Hashes an opened regular file: its size is checked against `limit` before a byte is
/// read, and reading stops at `deadline`.
pub fn hash_opened(opened: Opened, limit: u64, deadline: Instant) -> Result<Digest, Unreadable> {
    let meta = opened
        .file
        .metadata()
        .map_err(|e| Unreadable::Failed(format!("{}: {e}", opened.via)))?;
    check_regular(&meta, &opened.via)?;
    if meta.len() > limit {
        return Err(Unreadable::TooLarge {
            path: opened.via,
            size: meta.len(),
            limit,
        });
    }
    match digest_of(std::io::BufReader::new(opened.file), limit, Some(deadline)) {
        Ok(h) => Ok(h),
        Err(HashError::Deadline { read }) => Err(Unreadable::TimedOut {
            via: opened.via,
            detail: format!("{read} bytes read"),
        }),
        Err(HashError::TooLarge { .. }) => Err(Unreadable::TooLarge {
            path: opened.via,
            size: meta.len().max(limit + 1),
            limit,
        }),
        Err(HashError::Io(e)) => Err(Unreadable::Failed(format!("{}: {e}", opened.via))),
    }
}

#[cfg(test)]
mod tests {
    /// The openat2 fallback keeps its rules: a file beneath opens, `..`, a symlinked
    /// directory and a final symlink do not yield a regular file.
    #[test]
    fn the_component_walk_stays_beneath_and_follows_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc/sub")).unwrap();
        std::fs::write(d.join("etc/sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("sub", d.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("etc/sub/to-host")).unwrap();
        let base = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(d)
            .unwrap();
        let f = open_beneath_by_components(&base, "/etc/sub/f").unwrap();
        assert!(reopen_regular(&f, "f".into()).is_ok());
        assert_eq!(
            open_beneath_by_components(&base, "etc/../etc/sub/f")
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EXDEV)
        );
        assert!(open_beneath_by_components(&base, "etc/link/f").is_err());
        let link = open_beneath_by_components(&base, "etc/sub/to-host").unwrap();
        assert!(reopen_regular(&link, "to-host".into()).is_err());
    }

    use super::*;

    #[test]
    fn own_exe_is_found_and_checked() {
        let me = std::process::id();
        let meta = std::fs::metadata(format!("/proc/{me}/exe")).unwrap();
        let id = FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        assert!(open_exe(me, id).is_ok());
        let wrong = FileIdentity {
            dev: id.dev,
            ino: id.ino + 1,
        };
        assert!(open_exe(me, wrong)
            .unwrap_err()
            .to_string()
            .contains("another file"));
    }

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        // An image symlink to an absolute host path must resolve under the root, where
        // the target does not exist, and never reach the host's file.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("bin/escape")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", dir.path().join("bin/up")).unwrap();
        let root = File::open(dir.path()).unwrap();
        for p in ["bin/escape", "bin/up"] {
            let r = openat2(
                &root,
                &CString::new(p).unwrap(),
                libc::O_RDONLY,
                libc::RESOLVE_IN_ROOT,
            );
            assert!(
                r.is_err(),
                "{p}: the host's /etc/passwd must not be reachable"
            );
        }
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), b"inside").unwrap();
        let mut f = openat2(
            &root,
            &CString::new("bin/escape").unwrap(),
            libc::O_RDONLY,
            libc::RESOLVE_IN_ROOT,
        )
        .unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "inside");
    }
}
