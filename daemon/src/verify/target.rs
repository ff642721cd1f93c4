//! Finding and reading the file that actually ran, from the host, without ever following
//! a path out of the container.
//!
//! Owns the two ways in: `/proc/PID/exe` (the very file the kernel executed, even if
//! deleted or replaced since, checked against the event's device and inode), and the
//! container's root (`/proc/PID/root`) opened with `openat2(RESOLVE_IN_ROOT)` for processes
//! already gone and for scripts, so that an absolute symlink in the image resolves inside
//! the image and never on the host.

use super::hash::sha256_hex;
use crate::sensor::FileIdentity;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;

const DELETED_SUFFIX: &str = " (deleted)";

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
pub fn open_exe(pid: u32, expect: FileIdentity) -> Result<Opened, String> {
    let via = format!("/proc/{pid}/exe");
    let file = File::open(&via).map_err(|e| format!("{via}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{via}: {e}"))?;
    if (meta.dev(), meta.ino()) != (expect.dev, expect.ino) {
        return Err(format!(
            "{via} is another file now (dev {} ino {}, event had dev {} ino {}): the pid exec'd again or was reused",
            meta.dev(),
            meta.ino(),
            expect.dev,
            expect.ino
        ));
    }
    Ok(Opened { file, via })
}

/// The path of a live process's executable inside its container (`/proc/PID/exe`'s target),
/// without the " (deleted)" the kernel appends.
pub fn exe_path(pid: u32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = target.to_string_lossy();
    Some(s.strip_suffix(DELETED_SUFFIX).unwrap_or(&s).to_string())
}

/// The mount namespace (inode) of a live process.
pub fn mnt_ns_of(pid: u32) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino() as u32)
}

/// The working directory of a live process, inside its container.
pub fn cwd(pid: u32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// Makes `path` absolute against `cwd` (both container paths), without `.` components or
/// repeated slashes (`./x.sh` in /tmp is `/tmp/x.sh`, as the alert shows it). `..` is left
/// to the resolver, which follows symlinks and clamps it at the container root.
pub fn absolute(path: &str, cwd: Option<&str>) -> String {
    let base = if path.starts_with('/') {
        ""
    } else {
        cwd.unwrap_or("/")
    };
    let mut out = String::with_capacity(base.len() + path.len() + 1);
    for part in base.split('/').chain(path.split('/')) {
        if !part.is_empty() && part != "." {
            out.push('/');
            out.push_str(part);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Opens `path` inside the root filesystem of `root_pid` (a live process of the container).
/// Symlinks resolve inside that root; magic links are refused.
pub fn open_in_root(root_pid: u32, path: &str) -> Result<Opened, String> {
    let via = format!("/proc/{root_pid}/root{path}");
    let root = File::open(format!("/proc/{root_pid}/root")).map_err(|e| format!("{via}: {e}"))?;
    let cpath = CString::new(path.trim_start_matches('/'))
        .map_err(|_| format!("{via}: path contains a NUL byte"))?;
    let file = openat2(
        &root,
        &cpath,
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| format!("{via}: {e}"))?;
    Ok(Opened { file, via })
}

/// Hashes an opened file, refusing anything that is not a regular file.
pub fn hash_opened(opened: Opened, limit: u64) -> Result<String, String> {
    let meta = opened
        .file
        .metadata()
        .map_err(|e| format!("{}: {e}", opened.via))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", opened.via));
    }
    sha256_hex(std::io::BufReader::new(opened.file), limit)
        .map_err(|e| format!("{}: {e}", opened.via))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_the_cwd() {
        assert_eq!(absolute("./x.sh", Some("/app")), "/app/x.sh");
        assert_eq!(absolute("./x.sh", Some("/")), "/x.sh");
        assert_eq!(absolute("a/./b//c", Some("/app/")), "/app/a/b/c");
        assert_eq!(absolute("/tmp/./x", None), "/tmp/x");
        assert_eq!(absolute("../x", Some("/app")), "/app/../x");
        assert_eq!(absolute(".", Some("/")), "/");
        assert_eq!(absolute("x", Some("/")), "/x");
        assert_eq!(absolute("/bin/sh", Some("/app")), "/bin/sh");
        assert_eq!(absolute("x", None), "/x");
    }

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
        assert!(open_exe(me, wrong).unwrap_err().contains("another file"));
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
