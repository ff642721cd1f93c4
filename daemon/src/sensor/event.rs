//! Sensor events decoded from the wire into owned values the rest of the daemon uses.
//!
//! Owns the translation only: kernel device encoding to `st_dev`, NUL-separated argv to
//! strings, flag bits to booleans. Nothing here knows about containers or verdicts.

use super::wire;
use serde::Serialize;
use std::sync::Arc;

/// A file's identity as `stat(2)` would report it (`dev` in the userspace encoding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
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
#[derive(Clone, Copy, Debug, Default, Serialize)]
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

#[derive(Clone, Debug, Default, Serialize)]
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
    /// The filename was longer than the sensor keeps (only `/dev/fd/N/...` names of
    /// execveat can be): `filename` is a prefix and names no file.
    pub filename_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interpreter_truncated: bool,
    /// The working directory inside the container at exec time, as the kernel saw it
    /// (absent when it did not fit: then `cwd_truncated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub cwd_truncated: bool,
    /// The executed file's own path inside the container, read by the kernel when
    /// `filename` is a magic link (`/proc/self/exe`, `/dev/fd/N`); absent otherwise or
    /// when it did not fit (then `exe_path_truncated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_path: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exe_path_truncated: bool,
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

/// What happened to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    /// Its inode was dirtied: created, written, truncated, chmod'ed or touched.
    Write,
    /// A process faulted in pages of a mapping of it, or (syscall hooks) mapped it
    /// executable.
    Map,
    /// Syscall hooks: a name now points at a file (a rename's or a link's destination).
    Linked,
    /// Syscall hooks: a name went away (unlink, or a rename's source).
    Unlinked,
}

/// A write to, or a mapping of, a regular file by a container process, named by the
/// kernel from the file's own dentries; or (syscall hooks) a rename, link or unlink, named
/// by the caller's path and with no inode (`file`, `mode`, `ctime` are 0).
#[derive(Clone, Debug, Serialize)]
pub struct FileEvent {
    pub process: ProcessRef,
    pub op: FileOp,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// The real inode (an overlayfs layer's file, not the overlay's).
    pub file: FileIdentity,
    /// The same inode in the kernel's encoding, as the `lg_clean` map keys it.
    #[serde(skip)]
    pub kernel_dev: u32,
    /// The file's path from the root of the filesystem that holds it (for a container's
    /// file: through its snapshot, `/var/lib/containerd/.../snapshots/N/fs/etc/passwd`).
    /// `None` when the inode had no name, or the names did not fit (`path_truncated`).
    pub host_path: Option<String>,
    /// [`FileOp::Linked`] and [`FileOp::Unlinked`]: the path inside the container. From the
    /// kernel hooks (`path_from_kernel`), the names of the dentry and its parents up to the
    /// task's root; from the syscall hook, the caller's string (joined with the kernel's
    /// name of its cwd or dirfd when relative, and `..` taken lexically), so racy. Either
    /// way the files analyzer judges what is there now.
    pub container_path: Option<String>,
    /// `container_path` is the kernel's (a kernel hook), not the caller's string.
    pub path_from_kernel: bool,
    pub path_truncated: bool,
    pub mode: u32,
    pub size: u64,
    pub nlink: u32,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub memfd: bool,
    pub deleted: bool,
    /// A data write, sent only so that the baseline learns its directory (once per
    /// directory a minute): nothing to judge.
    pub data_dir: bool,
}

/// A kind of sensor record: `enum lg_event_kind` of `ebpf/layerguard.h` (checked against
/// the object's BTF). Loss counters are kept per kind, so a new kind is counted, reported
/// and served with no change to the loss schema or the proto.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Exec,
    Fork,
    Exit,
    File,
}

impl EventKind {
    /// Every kind, in wire order.
    pub const ALL: [EventKind; 4] = [
        EventKind::Exec,
        EventKind::Fork,
        EventKind::Exit,
        EventKind::File,
    ];

    /// The kind's value on the wire (and its index in `lg_lost`).
    pub fn wire(self) -> u32 {
        match self {
            Self::Exec => wire::EVENT_EXEC,
            Self::Fork => wire::EVENT_FORK,
            Self::Exit => wire::EVENT_EXIT,
            Self::File => wire::EVENT_FILE,
        }
    }

    /// The name in loss reports, status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::File => "file",
        }
    }
}

/// Events that could not be delivered, by where they were lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LossCounts {
    /// Records the kernel's ring buffer had no room for, by kind (kinds with none left out).
    pub kernel: std::collections::BTreeMap<EventKind, u64>,
    /// Records the daemon could not decode (should be zero; a wire mismatch otherwise).
    pub undecodable: u64,
}

impl LossCounts {
    pub fn total(&self) -> u64 {
        self.kernel.values().sum::<u64>() + self.undecodable
    }

    /// Lost in the kernel, of one kind.
    pub fn kernel(&self, kind: EventKind) -> u64 {
        self.kernel.get(&kind).copied().unwrap_or(0)
    }
}

/// Process life: the family of exec, fork and exit.
#[derive(Clone, Debug)]
pub enum ProcessEvent {
    /// Shared: several analyzers read the same exec.
    Exec(Arc<ExecEvent>),
    Fork(ForkEvent),
    Exit(ExitEvent),
}

/// What the kernel saw a process do, by family. Every family's events name the process
/// they happened in ([`Observation::process`]), which is all that attribution, loss
/// accounting and the fan-out to analyzers need: a new family adds a variant here and its
/// analyzer, and nothing in between.
#[derive(Clone, Debug)]
pub enum Observation {
    Process(ProcessEvent),
    /// Shared, like execs.
    File(Arc<FileEvent>),
}

impl Observation {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Process(ProcessEvent::Exec(_)) => EventKind::Exec,
            Self::Process(ProcessEvent::Fork(_)) => EventKind::Fork,
            Self::Process(ProcessEvent::Exit(_)) => EventKind::Exit,
            Self::File(_) => EventKind::File,
        }
    }

    /// The process the event happened in (for a fork: the child).
    pub fn process(&self) -> &ProcessRef {
        match self {
            Self::Process(ProcessEvent::Exec(e)) => &e.process,
            Self::Process(ProcessEvent::Fork(f)) => &f.process,
            Self::Process(ProcessEvent::Exit(x)) => &x.process,
            Self::File(f) => &f.process,
        }
    }

    /// Another process the event names (the parent of an exec or a fork), which may be
    /// known to a container when the event's own pid is not yet.
    pub fn related_pid(&self) -> Option<u32> {
        match self {
            Self::Process(ProcessEvent::Exec(e)) => Some(e.ppid),
            Self::Process(ProcessEvent::Fork(f)) => Some(f.parent_tgid),
            Self::Process(ProcessEvent::Exit(_)) | Self::File(_) => None,
        }
    }

    /// True when the process is alive as the event arrives (it just exec'd), so that its
    /// ancestry in `/proc` is worth reading.
    pub fn process_is_alive(&self) -> bool {
        matches!(self, Self::Process(ProcessEvent::Exec(_)))
    }

    /// The exec this is, if it is one.
    pub fn as_exec(&self) -> Option<&Arc<ExecEvent>> {
        match self {
            Self::Process(ProcessEvent::Exec(e)) => Some(e),
            _ => None,
        }
    }
}

/// What the sensor hands on: an observation, or a report of losses.
#[derive(Clone, Debug)]
pub enum SensorEvent {
    Observed(Observation),
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
    #[error("file record with unknown operation {0}")]
    FileOp(u32),
    #[error("exec record of {len} bytes: its {field} ends at byte {end} of its strings, past the {available} the record carries")]
    StringsOverrun {
        len: usize,
        field: &'static str,
        end: usize,
        available: usize,
    },
}

/// Bytes up to the first NUL (all of them if none), as text.
fn cstr(bytes: &[u8]) -> String {
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

/// Joins the kernel's leaf-first, NUL-terminated names into a path (`/` for none).
fn walked_path(names: &[u8]) -> String {
    let names = names.strip_suffix(&[0]).unwrap_or(names);
    let mut path = String::with_capacity(names.len() + 1);
    if !names.is_empty() {
        for name in names.rsplit(|&b| b == 0) {
            path.push('/');
            path.push_str(&String::from_utf8_lossy(name));
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// The path a caller named: its string (NUL-terminated) made absolute with `base`, the
/// names of the directory it starts from (leaf first, as [`walked_path`] reads them; unused
/// for an absolute string), with `.` dropped and `..` taken lexically (never above `/`).
fn caller_path(string: &[u8], base: &[u8]) -> String {
    let string = String::from_utf8_lossy(string.strip_suffix(&[0]).unwrap_or(string));
    let base = if string.starts_with('/') {
        String::new()
    } else {
        walked_path(base)
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/').chain(string.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The packed strings of an exec record, cut along the lengths it carries.
struct Strings<'a> {
    filename: &'a [u8],
    interp: Option<&'a [u8]>,
    cwd: &'a [u8],
    exe: Option<&'a [u8]>,
    argv: &'a [u8],
}

fn split_strings<'a>(w: &wire::ExecEvent, record: &'a [u8]) -> Result<Strings<'a>, DecodeError> {
    let record_len = record.len();
    let strings = &record[wire::EXEC_MIN_LEN..];
    let available = strings.len();
    let mut at = 0usize;
    let mut take = |field: &'static str, len: usize| -> Result<&'a [u8], DecodeError> {
        let end = at + len;
        if end > available {
            return Err(DecodeError::StringsOverrun {
                len: record_len,
                field,
                end,
                available,
            });
        }
        let slice = &strings[at..end];
        at = end;
        Ok(slice)
    };
    let flag = |bit: u32| w.flags & bit != 0;
    let filename = take("filename", w.filename_len as usize + 1)?;
    let interp = if flag(wire::EXEC_HAS_INTERP) {
        Some(take("interp", w.interp_len as usize + 1)?)
    } else {
        None
    };
    let cwd = take("cwd", w.cwd_len as usize)?;
    let exe = if flag(wire::EXEC_HAS_EXE) {
        Some(take("exe path", w.exe_len as usize)?)
    } else {
        None
    };
    let argv = take("argv", w.argv_len as usize)?;
    Ok(Strings {
        filename: &filename[..filename.len() - 1],
        interp: interp.map(|i| &i[..i.len() - 1]),
        cwd,
        exe,
        argv,
    })
}

fn decode_exec(w: &wire::ExecEvent, record: &[u8]) -> Result<ExecEvent, DecodeError> {
    let flag = |bit: u32| w.flags & bit != 0;
    let strings = split_strings(w, record)?;
    let cwd_truncated = flag(wire::EXEC_CWD_TRUNCATED);
    let exe_path_truncated = flag(wire::EXEC_EXE_TRUNCATED);
    Ok(ExecEvent {
        process: ProcessRef::from_wire(&w.hdr),
        ppid: w.ppid,
        uid: w.uid,
        gid: w.gid,
        comm: cstr(&w.comm),
        filename: cstr(strings.filename),
        interpreter: strings.interp.map(cstr),
        argv: split_argv(strings.argv),
        argc: w.argc as u32,
        argv_truncated: flag(wire::EXEC_ARGV_TRUNCATED),
        filename_truncated: flag(wire::EXEC_FILENAME_TRUNCATED),
        interpreter_truncated: flag(wire::EXEC_INTERP_TRUNCATED),
        cwd: (flag(wire::EXEC_HAS_CWD) && !cwd_truncated).then(|| walked_path(strings.cwd)),
        cwd_truncated,
        exe_path: strings.exe.filter(|_| !exe_path_truncated).map(walked_path),
        exe_path_truncated,
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
    })
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

fn decode_file(bytes: &[u8]) -> Result<FileEvent, DecodeError> {
    let min = std::mem::size_of::<wire::FileEvent>();
    let w: wire::FileEvent = match wire::read(bytes) {
        Some(w) if bytes.len() <= wire::FILE_RECORD_MAX => w,
        _ => {
            return Err(DecodeError::Size {
                kind: wire::EVENT_FILE,
                len: bytes.len(),
                expected: format!("{min} to {}", wire::FILE_RECORD_MAX),
            })
        }
    };
    let available = bytes.len() - min;
    let names_len = w.names_len as usize;
    if names_len > available {
        return Err(DecodeError::StringsOverrun {
            len: bytes.len(),
            field: "names",
            end: names_len,
            available,
        });
    }
    let flag = |bit: u32| w.flags & bit != 0;
    let path_truncated = flag(wire::FILE_PATH_TRUNCATED);
    let names = &bytes[min..min + names_len];
    let by_caller = flag(wire::FILE_CALLER_PATH);
    let by_kernel = flag(wire::FILE_KERNEL_PATH);
    let named =
        !by_caller && !by_kernel && !flag(wire::FILE_NO_NAME) && !path_truncated && names_len > 0;
    let caller_len = (w.caller_len as usize).min(names_len);
    let op = match w.op {
        wire::FILE_WRITE => FileOp::Write,
        wire::FILE_MAP => FileOp::Map,
        wire::FILE_LINKED => FileOp::Linked,
        wire::FILE_UNLINKED => FileOp::Unlinked,
        op => return Err(DecodeError::FileOp(op)),
    };
    Ok(FileEvent {
        process: ProcessRef::from_wire(&w.hdr),
        op,
        uid: w.uid,
        gid: w.gid,
        comm: cstr(&w.comm),
        file: FileIdentity::from_wire(&w.file),
        kernel_dev: w.file.dev,
        host_path: named.then(|| walked_path(names)),
        container_path: if path_truncated || names_len == 0 {
            None
        } else if by_caller && caller_len > 0 {
            Some(caller_path(&names[..caller_len], &names[caller_len..]))
        } else if by_kernel {
            // No string: the walked names are the whole (absolute) path.
            Some(caller_path(&[], names))
        } else {
            None
        },
        path_from_kernel: by_kernel,
        path_truncated,
        mode: w.mode,
        size: w.size,
        nlink: w.nlink,
        ctime_sec: w.ctime_sec,
        ctime_nsec: w.ctime_nsec,
        memfd: flag(wire::FILE_MEMFD),
        deleted: flag(wire::FILE_DELETED),
        data_dir: flag(wire::FILE_DATA_DIR),
    })
}

fn observed(e: ProcessEvent) -> SensorEvent {
    SensorEvent::Observed(Observation::Process(e))
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<SensorEvent, DecodeError> {
    let hdr: wire::EventHeader =
        wire::read(bytes).ok_or(DecodeError::Short { len: bytes.len() })?;
    match hdr.kind {
        wire::EVENT_EXEC => {
            let w: wire::ExecEvent = match wire::read(bytes) {
                Some(w) if bytes.len() <= wire::EXEC_RECORD_MAX => w,
                _ => {
                    return Err(DecodeError::Size {
                        kind: hdr.kind,
                        len: bytes.len(),
                        expected: format!("{} to {}", wire::EXEC_MIN_LEN, wire::EXEC_RECORD_MAX),
                    })
                }
            };
            Ok(observed(ProcessEvent::Exec(Arc::new(decode_exec(
                &w, bytes,
            )?))))
        }
        wire::EVENT_FORK => {
            let w: wire::ForkEvent = exact(hdr.kind, bytes)?;
            Ok(observed(ProcessEvent::Fork(ForkEvent {
                process: ProcessRef::from_wire(&w.hdr),
                parent_tgid: w.parent_tgid,
            })))
        }
        wire::EVENT_EXIT => {
            let w: wire::ExitEvent = exact(hdr.kind, bytes)?;
            Ok(observed(ProcessEvent::Exit(ExitEvent {
                process: ProcessRef::from_wire(&w.hdr),
                exit_code: w.exit_code,
            })))
        }
        wire::EVENT_FILE => Ok(SensorEvent::Observed(Observation::File(Arc::new(
            decode_file(bytes)?,
        )))),
        kind => Err(DecodeError::UnknownKind { kind }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// An exec record as the sensor packs it: `cwd` and `exe` leaf first.
    pub(crate) fn exec_record(
        filename: &str,
        interp: Option<&str>,
        cwd: &[&str],
        exe: Option<&[&str]>,
        argv: &[u8],
    ) -> Vec<u8> {
        exec_record_with(filename, interp, cwd, exe, argv, |_| {})
    }

    /// [`exec_record`] with the fixed part edited before it is packed.
    pub(crate) fn exec_record_with(
        filename: &str,
        interp: Option<&str>,
        cwd: &[&str],
        exe: Option<&[&str]>,
        argv: &[u8],
        edit: impl FnOnce(&mut wire::ExecEvent),
    ) -> Vec<u8> {
        // SAFETY: ExecEvent is Pod; all-zero is a valid value.
        let mut w: wire::ExecEvent = unsafe { std::mem::zeroed() };
        w.hdr.kind = wire::EVENT_EXEC;
        w.hdr.tgid = 42;
        let mut strings: Vec<u8> = Vec::new();
        strings.extend_from_slice(filename.as_bytes());
        strings.push(0);
        w.filename_len = filename.len() as u16;
        if let Some(i) = interp {
            w.flags |= wire::EXEC_HAS_INTERP;
            strings.extend_from_slice(i.as_bytes());
            strings.push(0);
            w.interp_len = i.len() as u16;
        }
        w.flags |= wire::EXEC_HAS_CWD;
        let names = |parts: &[&str]| -> Vec<u8> {
            parts.iter().flat_map(|p| p.bytes().chain([0])).collect()
        };
        let c = names(cwd);
        strings.extend_from_slice(&c);
        w.cwd_len = c.len() as u16;
        if let Some(exe) = exe {
            w.flags |= wire::EXEC_HAS_EXE;
            let e = names(exe);
            strings.extend_from_slice(&e);
            w.exe_len = e.len() as u16;
        }
        strings.extend_from_slice(argv);
        w.argv_len = argv.len() as u16;
        edit(&mut w);
        // SAFETY: reading the bytes of a Pod struct.
        let head = unsafe {
            std::slice::from_raw_parts(
                (&w as *const wire::ExecEvent).cast::<u8>(),
                std::mem::size_of::<wire::ExecEvent>(),
            )
        };
        let mut record = head.to_vec();
        record.extend_from_slice(&strings);
        record
    }

    fn exec_of(bytes: &[u8]) -> ExecEvent {
        match decode(bytes).unwrap() {
            SensorEvent::Observed(o) => o.as_exec().expect("an exec").as_ref().clone(),
            other => panic!("not an exec: {other:?}"),
        }
    }

    #[test]
    fn exec_records_decode() {
        let mut bytes = exec_record(
            "./x.sh",
            Some("/bin/sh"),
            &["bin", "usr"],
            None,
            b"sh\0x.sh\0",
        );
        bytes[std::mem::offset_of!(wire::ExecEvent, flags)] |= wire::EXEC_UPPER_LAYER as u8;
        let e = exec_of(&bytes);
        assert_eq!(e.process.tgid, 42);
        assert_eq!(e.filename, "./x.sh");
        assert_eq!(e.interpreter.as_deref(), Some("/bin/sh"));
        assert_eq!(e.argv, vec!["sh", "x.sh"]);
        assert_eq!(e.cwd.as_deref(), Some("/usr/bin"));
        assert!(e.upper_layer && !e.memfd && !e.deleted);
        assert_eq!(e.exe_path, None);

        // A plain exec at the root: no interpreter, no names.
        let e = exec_of(&exec_record("/bin/ls", None, &[], None, b"ls\0/\0"));
        assert_eq!(e.filename, "/bin/ls");
        assert_eq!(e.argv, vec!["ls", "/"]);
        assert_eq!((e.interpreter, e.cwd.as_deref()), (None, Some("/")));

        // A magic link carries the file's own path.
        let e = exec_of(&exec_record(
            "/proc/self/exe",
            None,
            &[],
            Some(&["busybox", "bin"]),
            b"sh\0",
        ));
        assert_eq!(e.exe_path.as_deref(), Some("/bin/busybox"));
    }

    #[test]
    fn long_paths_decode_whole() {
        let deep: Vec<String> = (0..200).map(|i| format!("d{i}")).collect();
        let leaf_first: Vec<&str> = deep.iter().rev().map(String::as_str).collect();
        let long_name = "n".repeat(255);
        let filename = format!("/{}/{long_name}", deep.join("/"));
        assert!(filename.len() > 255 && filename.len() < wire::PATH_MAX);
        let e = exec_of(&exec_record(&filename, None, &leaf_first, None, b"x\0"));
        assert_eq!(e.filename, filename);
        assert_eq!(e.cwd.unwrap(), format!("/{}", deep.join("/")));
        assert!(!e.filename_truncated && !e.cwd_truncated);
    }

    #[test]
    fn truncated_walks_give_no_path() {
        let mut bytes = exec_record("x", None, &["leaf"], None, b"x\0");
        let flags = std::mem::offset_of!(wire::ExecEvent, flags);
        bytes[flags + 1] |= (wire::EXEC_CWD_TRUNCATED >> 8) as u8;
        let e = exec_of(&bytes);
        assert!(e.cwd_truncated);
        assert_eq!(e.cwd, None, "a leaf part is not the cwd");
    }

    #[test]
    fn lengths_past_the_record_are_errors() {
        let mut bytes = exec_record("/bin/ls", None, &[], None, b"ls\0");
        let argv_len = std::mem::offset_of!(wire::ExecEvent, argv_len);
        bytes[argv_len..argv_len + 2].copy_from_slice(&500u16.to_le_bytes());
        assert!(matches!(
            decode(&bytes).unwrap_err(),
            DecodeError::StringsOverrun { field: "argv", .. }
        ));
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

    /// A file record as the sensor packs it: `names` is its names part, as is.
    fn file_record(op: u32, flags: u32, caller_len: u16, names: &[u8]) -> Vec<u8> {
        // SAFETY: FileEvent is Pod; all-zero is a valid value.
        let mut w: wire::FileEvent = unsafe { std::mem::zeroed() };
        w.hdr.kind = wire::EVENT_FILE;
        w.hdr.tgid = 7;
        w.op = op;
        w.flags = flags;
        w.caller_len = caller_len;
        w.names_len = names.len() as u16;
        // SAFETY: a Pod value viewed as its bytes.
        let fixed = unsafe {
            std::slice::from_raw_parts(
                (&w as *const wire::FileEvent).cast::<u8>(),
                std::mem::size_of::<wire::FileEvent>(),
            )
        };
        [fixed, names].concat()
    }

    fn file(bytes: &[u8]) -> FileEvent {
        match decode(bytes).unwrap() {
            SensorEvent::Observed(Observation::File(f)) => (*f).clone(),
            _ => panic!("not a file event"),
        }
    }

    #[test]
    fn file_records_name_the_file_from_its_dentries_or_the_callers_path() {
        let f = file(&file_record(wire::FILE_WRITE, 0, 0, b"passwd\0etc\0fs\0"));
        assert_eq!(
            (f.op, f.host_path.as_deref()),
            (FileOp::Write, Some("/fs/etc/passwd"))
        );
        assert_eq!(f.container_path, None);
        // `mv ../x.sh ./job` run in /etc/cron.d/sub: a relative string and the cwd's names.
        let names = b"./job\0sub\0cron.d\0etc\0";
        let f = file(&file_record(
            wire::FILE_LINKED,
            wire::FILE_CALLER_PATH,
            6,
            names,
        ));
        assert_eq!(f.op, FileOp::Linked);
        assert_eq!(f.host_path, None);
        assert_eq!(f.container_path.as_deref(), Some("/etc/cron.d/sub/job"));
        let names = b"../../passwd\0sub\0cron.d\0etc\0";
        let f = file(&file_record(
            wire::FILE_UNLINKED,
            wire::FILE_CALLER_PATH,
            13,
            names,
        ));
        assert_eq!(f.container_path.as_deref(), Some("/etc/passwd"));
        // Absolute: the base is not used; `..` never climbs above the root.
        let names = b"/../etc//./shadow\0tmp\0";
        let f = file(&file_record(
            wire::FILE_UNLINKED,
            wire::FILE_CALLER_PATH,
            18,
            names,
        ));
        assert_eq!(f.container_path.as_deref(), Some("/etc/shadow"));
        // A base that did not fit names nothing.
        let f = file(&file_record(
            wire::FILE_LINKED,
            wire::FILE_CALLER_PATH | wire::FILE_PATH_TRUNCATED,
            2,
            b"x\0",
        ));
        assert_eq!(f.container_path, None);
        // A kernel hook: the dentry's names up to the task's root, no string.
        let f = file(&file_record(
            wire::FILE_UNLINKED,
            wire::FILE_KERNEL_PATH,
            0,
            b"passwd\0etc\0",
        ));
        assert_eq!(
            (f.container_path.as_deref(), f.path_from_kernel, f.host_path),
            (Some("/etc/passwd"), true, None)
        );
        let f = file(&file_record(
            wire::FILE_LINKED,
            wire::FILE_KERNEL_PATH | wire::FILE_PATH_TRUNCATED,
            0,
            b"job\0",
        ));
        assert_eq!(f.container_path, None);
        assert!(matches!(
            decode(&file_record(9, 0, 0, b"")),
            Err(DecodeError::FileOp(9))
        ));
    }
}
