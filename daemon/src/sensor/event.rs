//! Sensor events decoded from the wire into owned values the rest of the daemon uses.
//!
//! Owns the translation only: kernel device encoding to `st_dev`, NUL-separated argv to
//! strings, flag bits to booleans. Nothing here knows about containers or verdicts.

use super::wire;
use serde::Serialize;

/// A file's identity as `stat(2)` would report it (`dev` in the userspace encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl FileIdentity {
    fn from_wire(f: &wire::FileId) -> Self {
        Self {
            dev: kernel_dev_to_user(f.dev),
            ino: f.ino,
        }
    }
}

/// The kernel keeps `dev_t` as `major << 20 | minor`; userspace (`st_dev`) uses glibc's
/// `makedev` encoding, which differs once minor numbers exceed 255 (overlay mounts do).
pub fn kernel_dev_to_user(dev: u32) -> u64 {
    let major = dev >> 20;
    let minor = dev & 0xf_ffff;
    libc::makedev(major, minor)
}

/// Who did something: the process as the host sees it, and the namespaces it lives in.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub tgid: u32,
    pub mnt_ns: u32,
    pub pid_ns: u32,
    /// CLOCK_MONOTONIC nanoseconds at the event.
    pub ktime_ns: u64,
}

impl ProcessRef {
    fn from_wire(h: &wire::EventHeader) -> Self {
        Self {
            pid: h.pid,
            tgid: h.tgid,
            mnt_ns: h.mnt_ns,
            pid_ns: h.pid_ns,
            ktime_ns: h.ktime_ns,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ExecEvent {
    pub process: ProcessRef,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// The path as the caller passed it to execve (may be relative or `/dev/fd/N`).
    pub filename: String,
    /// The interpreter, when a `#!` script was executed; then `file` is the interpreter.
    pub interpreter: Option<String>,
    pub argv: Vec<String>,
    pub argc: u32,
    pub argv_truncated: bool,
    pub filename_truncated: bool,
    /// The working directory inside the container, read by the kernel when `filename` is
    /// relative (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub cwd_truncated: bool,
    /// The executed file as the process sees it (the overlay inode on overlayfs).
    pub file: FileIdentity,
    /// The inode behind it: the overlayfs upper or lower file; equal to `file` elsewhere.
    pub real_file: FileIdentity,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub size: u64,
    pub nlink: u32,
    pub mode: u32,
    pub overlay: bool,
    pub upper_layer: bool,
    pub memfd: bool,
    pub deleted: bool,
    /// The kernel counted this exec into a storm (it then wakes the daemon only for a full
    /// batch). How the sensor paces itself, not a fact about the exec: not logged.
    #[serde(skip)]
    pub storm: bool,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ForkEvent {
    pub process: ProcessRef,
    pub parent_tgid: u32,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ExitEvent {
    pub process: ProcessRef,
    pub exit_code: i32,
}

/// Events that could not be delivered, by where they were lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LossCounts {
    pub exec: u64,
    pub fork: u64,
    pub exit: u64,
    /// Records the daemon could not decode (should be zero; a wire mismatch otherwise).
    pub undecodable: u64,
}

impl LossCounts {
    pub fn total(&self) -> u64 {
        self.exec + self.fork + self.exit + self.undecodable
    }
}

#[derive(Clone, Debug)]
pub enum SensorEvent {
    Exec(Box<ExecEvent>),
    Fork(ForkEvent),
    Exit(ExitEvent),
    /// New losses since the previous report (never silent).
    Lost(LossCounts),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error("ring buffer record of kind {kind} has {len} bytes, expected {expected}")]
    Size {
        kind: u32,
        len: usize,
        /// A length, or a range for exec records (which the sensor cuts short).
        expected: String,
    },
    #[error("unknown event kind {kind}")]
    UnknownKind { kind: u32 },
}

fn cstr(bytes: &[u8], len: usize) -> String {
    let bytes = &bytes[..len.min(bytes.len())];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn split_argv(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Joins the kernel's leaf-first cwd names into a path.
fn cwd_path(w: &wire::ExecEvent) -> String {
    let depth = (w.cwd_depth as usize).min(wire::CWD_DEPTH);
    let mut path = String::new();
    for name in w.cwd[..depth].iter().rev() {
        path.push('/');
        path.push_str(&cstr(name, wire::CWD_NAME));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

fn decode_exec(w: &wire::ExecEvent) -> ExecEvent {
    let flag = |bit: u32| w.flags & bit != 0;
    ExecEvent {
        process: ProcessRef::from_wire(&w.hdr),
        ppid: w.ppid,
        uid: w.uid,
        gid: w.gid,
        comm: cstr(&w.comm, wire::COMM_LEN),
        filename: cstr(&w.filename, w.filename_len as usize),
        interpreter: flag(wire::EXEC_HAS_INTERP).then(|| cstr(&w.interp, w.interp_len as usize)),
        argv: split_argv(&w.argv[..(w.argv_len as usize).min(wire::ARGV_LEN)]),
        argc: w.argc as u32,
        argv_truncated: flag(wire::EXEC_ARGV_TRUNCATED),
        filename_truncated: flag(wire::EXEC_FILENAME_TRUNCATED),
        cwd: flag(wire::EXEC_HAS_CWD).then(|| cwd_path(w)),
        cwd_truncated: flag(wire::EXEC_CWD_TRUNCATED),
        file: FileIdentity::from_wire(&w.file),
        real_file: FileIdentity::from_wire(&w.real),
        ctime_sec: w.ctime_sec,
        ctime_nsec: w.ctime_nsec,
        size: w.size,
        nlink: w.nlink,
        mode: w.mode,
        overlay: flag(wire::EXEC_OVERLAY),
        upper_layer: flag(wire::EXEC_UPPER_LAYER),
        memfd: flag(wire::EXEC_MEMFD),
        deleted: flag(wire::EXEC_DELETED),
        storm: flag(wire::EXEC_STORM),
    }
}

fn exact<T: wire::Pod>(kind: u32, bytes: &[u8]) -> Result<T, DecodeError> {
    let expected = std::mem::size_of::<T>();
    if bytes.len() != expected {
        return Err(DecodeError::Size {
            kind,
            len: bytes.len(),
            expected: expected.to_string(),
        });
    }
    Ok(wire::read::<T>(bytes).expect("length checked"))
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<SensorEvent, DecodeError> {
    let hdr: wire::EventHeader =
        wire::read(bytes).ok_or(DecodeError::Short { len: bytes.len() })?;
    match hdr.kind {
        wire::EVENT_EXEC => {
            let w: wire::ExecEvent =
                wire::read_cut(bytes, wire::EXEC_MIN_LEN).ok_or(DecodeError::Size {
                    kind: hdr.kind,
                    len: bytes.len(),
                    expected: format!(
                        "{} to {}",
                        wire::EXEC_MIN_LEN,
                        std::mem::size_of::<wire::ExecEvent>()
                    ),
                })?;
            Ok(SensorEvent::Exec(Box::new(decode_exec(&w))))
        }
        wire::EVENT_FORK => {
            let w: wire::ForkEvent = exact(hdr.kind, bytes)?;
            Ok(SensorEvent::Fork(ForkEvent {
                process: ProcessRef::from_wire(&w.hdr),
                parent_tgid: w.parent_tgid,
            }))
        }
        wire::EVENT_EXIT => {
            let w: wire::ExitEvent = exact(hdr.kind, bytes)?;
            Ok(SensorEvent::Exit(ExitEvent {
                process: ProcessRef::from_wire(&w.hdr),
                exit_code: w.exit_code,
            }))
        }
        kind => Err(DecodeError::UnknownKind { kind }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding_is_translated() {
        // overlay mounts get anonymous devices with minors above 255: major 0, minor 300.
        let user = kernel_dev_to_user(300);
        assert_eq!(libc::major(user), 0);
        assert_eq!(libc::minor(user), 300);
        let sda1 = kernel_dev_to_user((8 << 20) | 1);
        assert_eq!((libc::major(sda1), libc::minor(sda1)), (8, 1));
    }

    #[test]
    fn argv_is_split_on_nul() {
        assert_eq!(
            split_argv(b"/bin/ls\0-l\0/tmp\0"),
            vec!["/bin/ls", "-l", "/tmp"]
        );
        assert_eq!(split_argv(b"truncat"), vec!["truncat"]);
        assert!(split_argv(b"").is_empty());
    }

    #[test]
    fn exec_records_decode() {
        // SAFETY: ExecEvent is Pod; all-zero is a valid value.
        let mut w: wire::ExecEvent = unsafe { std::mem::zeroed() };
        w.hdr.kind = wire::EVENT_EXEC;
        w.hdr.tgid = 42;
        w.flags = wire::EXEC_UPPER_LAYER | wire::EXEC_HAS_INTERP;
        w.filename[..6].copy_from_slice(b"./x.sh");
        w.filename_len = 6;
        w.interp[..7].copy_from_slice(b"/bin/sh");
        w.interp_len = 7;
        w.argv[..8].copy_from_slice(b"sh\0x.sh\0");
        w.argv_len = 8;
        w.flags |= wire::EXEC_HAS_CWD;
        w.cwd[0][..3].copy_from_slice(b"bin");
        w.cwd[1][..3].copy_from_slice(b"usr");
        w.cwd_depth = 2;
        // SAFETY: reading the bytes of a Pod struct.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&w as *const wire::ExecEvent).cast::<u8>(),
                std::mem::size_of::<wire::ExecEvent>(),
            )
        };
        let SensorEvent::Exec(e) = decode(bytes).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(e.process.tgid, 42);
        assert_eq!(e.filename, "./x.sh");
        assert_eq!(e.interpreter.as_deref(), Some("/bin/sh"));
        assert_eq!(e.argv, vec!["sh", "x.sh"]);
        assert_eq!(e.cwd.as_deref(), Some("/usr/bin"));
        assert!(e.upper_layer && !e.memfd && !e.deleted);

        // As the sensor sends a plain exec: cut after the argv bytes in use.
        let mut plain = bytes[..wire::EXEC_MIN_LEN + 8].to_vec();
        plain[std::mem::offset_of!(wire::ExecEvent, flags)..][..4].fill(0);
        let SensorEvent::Exec(e) = decode(&plain).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(e.filename, "./x.sh");
        assert_eq!(e.argv, vec!["sh", "x.sh"]);
        assert_eq!((e.interpreter, e.cwd), (None, None));
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(decode(&[0; 4]).unwrap_err(), DecodeError::Short { len: 4 });
        let mut b = [0u8; 40];
        b[0] = 9;
        assert_eq!(
            decode(&b).unwrap_err(),
            DecodeError::UnknownKind { kind: 9 }
        );
        b[0] = wire::EVENT_EXEC as u8;
        assert!(matches!(decode(&b).unwrap_err(), DecodeError::Size { .. }));
    }
}
