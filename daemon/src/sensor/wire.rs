//! The Rust mirror of `ebpf/layerguard.h`: the exact bytes the kernel sensor writes.
//!
//! Owns nothing but layout. Decoding into owned, checked events lives in `event.rs`.
//! `tests::layouts_match_the_compiled_object` compares every struct here with the BTF of
//! the object clang built from the header, so a change on one side alone fails the tests.

// Every constant of the header is mirrored here, used or not: the layout test compares
// them with the object's BTF, so the two sides cannot drift apart unseen.
#![allow(dead_code)]

pub const COMM_LEN: usize = 16;
pub const PATH_MAX: usize = 4096;
pub const NAME_MAX: usize = 256;
pub const INTERP_MAX: usize = 256;
pub const ARGV_MAX: usize = 4096;
pub const STRINGS_SPAN: usize = 16384;
pub const STRINGS_LEN: usize = STRINGS_SPAN + PATH_MAX;

/// `enum lg_event_kind`: the first field of every record, and the index of its loss
/// counter in `lg_lost` (which has `EVENT_KINDS` entries).
pub const EVENT_EXEC: u32 = 1;
pub const EVENT_FORK: u32 = 2;
pub const EVENT_EXIT: u32 = 3;
pub const EVENT_FILE: u32 = 4;
pub const EVENT_KINDS: u32 = 5;

pub const EXEC_UPPER_LAYER: u32 = 1 << 0;
pub const EXEC_MEMFD: u32 = 1 << 1;
pub const EXEC_DELETED: u32 = 1 << 2;
pub const EXEC_OVERLAY: u32 = 1 << 3;
pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 4;
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 5;
pub const EXEC_INTERP_TRUNCATED: u32 = 1 << 6;
pub const EXEC_HAS_INTERP: u32 = 1 << 7;
pub const EXEC_HAS_CWD: u32 = 1 << 8;
pub const EXEC_CWD_TRUNCATED: u32 = 1 << 9;
pub const EXEC_STORM: u32 = 1 << 10;
pub const EXEC_HAS_EXE: u32 = 1 << 11;
pub const EXEC_EXE_TRUNCATED: u32 = 1 << 12;

/// `enum lg_storm`: what the kernel counts as an exec storm.
pub const STORM_WINDOW_MS: u64 = 50;
pub const STORM_EXECS: u32 = 10;

/// Indexes of the per-CPU counters in the `lg_stats` map (`enum lg_stat`).
pub const STAT_EXEC_SEEN: u32 = 0;
pub const STAT_HOST_FILTERED: u32 = 1;
pub const STAT_READ_ERRORS: u32 = 2;
pub const STAT_WAKEUPS: u32 = 3;
pub const STAT_FILE_SEEN: u32 = 4;
pub const STAT_FILE_REPEATS: u32 = 5;
pub const STAT_MAP_CLEAN_HITS: u32 = 6;
pub const STAT_IO_URING: u32 = 7;
pub const STAT_FILE_DATA: u32 = 8;
pub const STAT_SYSCALLS: u32 = 9;
pub const STAT_KERNEL_HOOKS: u32 = 10;
pub const STAT_COUNT: u32 = 11;

/// Bytes of a directory name key of `lg_watch_dirs`.
pub const WATCH_NAME_LEN: usize = 32;

/// `enum lg_file_op`.
pub const FILE_WRITE: u32 = 1;
pub const FILE_MAP: u32 = 2;
pub const FILE_LINKED: u32 = 3;
pub const FILE_UNLINKED: u32 = 4;

pub const FILE_PATH_TRUNCATED: u32 = 1 << 0;
pub const FILE_MEMFD: u32 = 1 << 1;
pub const FILE_DELETED: u32 = 1 << 2;
pub const FILE_NO_NAME: u32 = 1 << 3;
pub const FILE_CALLER_PATH: u32 = 1 << 4;
pub const FILE_DATA_DIR: u32 = 1 << 5;
pub const FILE_KERNEL_PATH: u32 = 1 << 6;

pub const FILE_NAMES_LEN: usize = PATH_MAX + NAME_MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    pub cpu: u32,
    pub ktime_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub mnt_ns: u32,
    pub pid_ns: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileId {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    pub file: FileId,
    pub real: FileId,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub nlink: u32,
    pub size: u64,
    pub mode: u32,
    pub argc: u16,
    pub filename_len: u16,
    pub interp_len: u16,
    pub cwd_len: u16,
    pub exe_len: u16,
    pub argv_len: u16,
    pub comm: [u8; COMM_LEN],
}

/// `struct lg_exec_record`: an [`ExecEvent`] followed by up to [`STRINGS_LEN`] bytes of
/// strings (filename NUL, interp NUL with `EXEC_HAS_INTERP`, cwd names, exe names with
/// `EXEC_HAS_EXE`, argv), packed, each right after the one before. The record on the
/// ring ends after argv; the reader takes the fixed part as a struct and the strings as
/// the bytes after it, so only what the kernel sent is copied.
pub const EXEC_RECORD_MAX: usize = std::mem::size_of::<ExecEvent>() + STRINGS_LEN;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    pub hdr: EventHeader,
    pub parent_tgid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub hdr: EventHeader,
    pub exit_code: i32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    pub hdr: EventHeader,
    pub op: u32,
    pub flags: u32,
    pub file: FileId,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub mode: u32,
    pub size: u64,
    pub nlink: u32,
    pub dirty_flags: u32,
    pub uid: u32,
    pub gid: u32,
    pub names_len: u16,
    pub caller_len: u16,
    pub _pad: [u16; 2],
    pub comm: [u8; COMM_LEN],
}

/// `struct lg_file_record`: a [`FileEvent`] and `names_len` bytes of names after it
/// (leaf first, each NUL-terminated); the ring carries only the bytes in use.
pub const FILE_RECORD_MAX: usize = std::mem::size_of::<FileEvent>() + FILE_NAMES_LEN;

/// `struct lg_clean_inode`: the value of `lg_clean`, keyed by [`FileId`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CleanInode {
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub _pad: u32,
}

/// Marks the wire structs as plain bytes: any bit pattern is a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs made of integers and integer arrays.
pub unsafe trait Pod: Copy {}
unsafe impl Pod for EventHeader {}
unsafe impl Pod for ExecEvent {}
unsafe impl Pod for ForkEvent {}
unsafe impl Pod for ExitEvent {}
unsafe impl Pod for FileEvent {}

/// The shortest exec record: the fixed part alone. The lengths in it say how much of the
/// strings after it is meant; the decoder checks them against the record's length.
pub const EXEC_MIN_LEN: usize = std::mem::size_of::<ExecEvent>();

/// Reads a wire struct from the front of a ring buffer record; `None` if it is too short.
pub fn read<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: T is Pod (any bit pattern is valid) and the length was checked; ring buffer
    // records are only 8-byte aligned, hence read_unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::btf_layout::{BtfLayouts, StructLayout};
    use std::mem::{offset_of, size_of};

    fn layouts() -> BtfLayouts {
        BtfLayouts::from_elf(crate::sensor::SENSOR_OBJECT).expect("parse the sensor object's BTF")
    }

    fn check(layouts: &BtfLayouts, c_name: &str, size: usize, fields: &[(&str, usize)]) {
        let s: &StructLayout = layouts
            .get(c_name)
            .unwrap_or_else(|| panic!("struct {c_name} is not in the sensor object's BTF"));
        assert_eq!(
            s.size, size,
            "size of struct {c_name}: C {} vs Rust {size}",
            s.size
        );
        let c_fields: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
        let rust_fields: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(c_fields, rust_fields, "fields of struct {c_name} differ");
        for (name, off) in fields {
            let m = s.members.iter().find(|m| m.name == *name).unwrap();
            assert_eq!(
                m.offset_bytes, *off,
                "offset of {c_name}.{name}: C {} vs Rust {off}",
                m.offset_bytes
            );
        }
    }

    macro_rules! fields {
        ($t:ty: $($f:ident),* $(,)?) => {
            &[$((stringify!($f), offset_of!($t, $f))),*]
        };
    }

    #[test]
    fn layouts_match_the_compiled_object() {
        let l = layouts();
        check(
            &l,
            "lg_event_header",
            size_of::<EventHeader>(),
            fields!(EventHeader: kind, cpu, ktime_ns, pid, tgid, mnt_ns, pid_ns),
        );
        check(
            &l,
            "lg_file_id",
            size_of::<FileId>(),
            fields!(FileId: ino, dev, _pad),
        );
        check(
            &l,
            "lg_exec_event",
            size_of::<ExecEvent>(),
            fields!(ExecEvent: hdr, ppid, uid, gid, flags, file, real, ctime_sec, ctime_nsec,
                nlink, size, mode, argc, filename_len, interp_len, cwd_len, exe_len, argv_len,
                comm),
        );
        check(
            &l,
            "lg_exec_record",
            EXEC_RECORD_MAX,
            &[("event", 0), ("strings", size_of::<ExecEvent>())],
        );
        check(
            &l,
            "lg_fork_event",
            size_of::<ForkEvent>(),
            fields!(ForkEvent: hdr, parent_tgid, _pad),
        );
        check(
            &l,
            "lg_exit_event",
            size_of::<ExitEvent>(),
            fields!(ExitEvent: hdr, exit_code, _pad),
        );
        check(
            &l,
            "lg_file_event",
            size_of::<FileEvent>(),
            fields!(FileEvent: hdr, op, flags, file, ctime_sec, ctime_nsec, mode, size, nlink,
                dirty_flags, uid, gid, names_len, caller_len, _pad, comm),
        );
        check(
            &l,
            "lg_file_record",
            FILE_RECORD_MAX,
            &[("event", 0), ("names", size_of::<FileEvent>())],
        );
        check(
            &l,
            "lg_clean_inode",
            size_of::<CleanInode>(),
            fields!(CleanInode: ctime_sec, ctime_nsec, _pad),
        );
    }

    #[test]
    fn enums_match_the_compiled_object() {
        let l = layouts();
        let check = |c_name: &str, values: &[(&str, i64)]| {
            let c = l
                .enum_values(c_name)
                .unwrap_or_else(|| panic!("enum {c_name} is not in the sensor object's BTF"));
            let mut c_names: Vec<&str> = c.keys().map(String::as_str).collect();
            let mut rust_names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
            c_names.sort_unstable();
            rust_names.sort_unstable();
            assert_eq!(c_names, rust_names, "values of enum {c_name} differ");
            for (name, v) in values {
                assert_eq!(c[*name], *v, "{c_name}::{name}: C {} vs Rust {v}", c[*name]);
            }
        };
        check(
            "lg_event_kind",
            &[
                ("LG_EVENT_EXEC", EVENT_EXEC.into()),
                ("LG_EVENT_FORK", EVENT_FORK.into()),
                ("LG_EVENT_EXIT", EVENT_EXIT.into()),
                ("LG_EVENT_FILE", EVENT_FILE.into()),
                ("LG_EVENT_KINDS", EVENT_KINDS.into()),
            ],
        );
        check(
            "lg_stat",
            &[
                ("LG_STAT_EXEC_SEEN", STAT_EXEC_SEEN.into()),
                ("LG_STAT_HOST_FILTERED", STAT_HOST_FILTERED.into()),
                ("LG_STAT_READ_ERRORS", STAT_READ_ERRORS.into()),
                ("LG_STAT_WAKEUPS", STAT_WAKEUPS.into()),
                ("LG_STAT_FILE_SEEN", STAT_FILE_SEEN.into()),
                ("LG_STAT_FILE_REPEATS", STAT_FILE_REPEATS.into()),
                ("LG_STAT_MAP_CLEAN_HITS", STAT_MAP_CLEAN_HITS.into()),
                ("LG_STAT_IO_URING", STAT_IO_URING.into()),
                ("LG_STAT_FILE_DATA", STAT_FILE_DATA.into()),
                ("LG_STAT_SYSCALLS", STAT_SYSCALLS.into()),
                ("LG_STAT_KERNEL_HOOKS", STAT_KERNEL_HOOKS.into()),
                ("LG_STAT_COUNT", STAT_COUNT.into()),
            ],
        );
        check(
            "lg_file_op",
            &[
                ("LG_FILE_WRITE", FILE_WRITE.into()),
                ("LG_FILE_MAP", FILE_MAP.into()),
                ("LG_FILE_LINKED", FILE_LINKED.into()),
                ("LG_FILE_UNLINKED", FILE_UNLINKED.into()),
            ],
        );
        check(
            "lg_storm",
            &[
                ("LG_STORM_WINDOW_MS", STORM_WINDOW_MS as i64),
                ("LG_STORM_EXECS", STORM_EXECS.into()),
            ],
        );
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(read::<ForkEvent>(&[0u8; 8]).is_none());
        assert!(read::<ForkEvent>(&[0u8; 40]).is_some());
    }
}
