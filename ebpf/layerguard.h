/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The wire contract between the kernel sensor and the daemon: every struct the BPF
 * programs put into the ring buffer or a map that userspace reads. The Rust mirror is
 * daemon/src/sensor/wire.rs; a test compares both layouts against the BTF of the
 * compiled object, so change them together.
 *
 * Rules that keep the two sides honest: fixed-width types only, explicit padding,
 * every struct a multiple of 8 bytes.
 */
#ifndef LAYERGUARD_WIRE_H
#define LAYERGUARD_WIRE_H

#include <linux/types.h>

#define LG_COMM_LEN 16
/* PATH_MAX, NUL included: execve refuses longer names, so a filename always fits. */
#define LG_PATH_MAX 4096
/* NAME_MAX + NUL: one path component of a cwd or exe walk. */
#define LG_NAME_MAX 256
/* BINPRM_BUF_SIZE: the interpreter of a #! line cannot be longer. */
#define LG_INTERP_MAX 256
/* argv bytes kept (NUL separated); more is cut and LG_EXEC_ARGV_TRUNCATED set. Long enough
 * for a shell and a PATH_MAX script argument. */
#define LG_ARGV_MAX 4096
/*
 * The strings of an exec record are packed one after another (see struct lg_exec_event).
 * Every write starts below LG_STRINGS_SPAN, a power of two so that a mask proves the
 * bound to the verifier, and is at most LG_PATH_MAX long: hence the size. The longest
 * record uses 4096 + 256 + 4096 + 4096 + 4096 bytes, below the span.
 */
#define LG_STRINGS_SPAN 16384
#define LG_STRINGS_LEN (LG_STRINGS_SPAN + LG_PATH_MAX)

/*
 * Every record on the ring starts with its kind. Loss counters are indexed by it (the
 * lg_lost map), so a new kind needs no new counter, loss schema or proto field: add it
 * here, before LG_EVENT_KINDS.
 */
enum lg_event_kind {
	LG_EVENT_EXEC = 1,
	LG_EVENT_FORK = 2,
	LG_EVENT_EXIT = 3,
	LG_EVENT_FILE = 4,	/* a file written or mapped (struct lg_file_record) */
	LG_EVENT_KINDS = 5,	/* one past the last kind: the size of lg_lost */
};

/* lg_exec_event.flags */
#define LG_EXEC_UPPER_LAYER (1u << 0)	/* the executed file lives in an overlayfs upper dir */
#define LG_EXEC_MEMFD (1u << 1)		/* executed from a memfd or anonymous inode */
#define LG_EXEC_DELETED (1u << 2)	/* no links left when it ran */
#define LG_EXEC_OVERLAY (1u << 3)	/* the file was seen through overlayfs */
#define LG_EXEC_ARGV_TRUNCATED (1u << 4)
#define LG_EXEC_FILENAME_TRUNCATED (1u << 5)
#define LG_EXEC_INTERP_TRUNCATED (1u << 6)
#define LG_EXEC_HAS_INTERP (1u << 7)	/* bprm->interp differs from bprm->filename (#! script) */
#define LG_EXEC_HAS_CWD (1u << 8)	/* the cwd walk ran (every exec) */
#define LG_EXEC_CWD_TRUNCATED (1u << 9)	/* the cwd did not fit: its names are a leaf part only */
#define LG_EXEC_STORM (1u << 10)	/* counted into an exec storm: no wake-up of its own */
#define LG_EXEC_HAS_EXE (1u << 11)	/* exe names present: filename is a magic link (/proc/, /dev/fd/) */
#define LG_EXEC_EXE_TRUNCATED (1u << 12)	/* the exe path did not fit */

/*
 * An exec storm: more than LG_STORM_EXECS execs within LG_STORM_WINDOW_MS, in this window
 * or the last (see in_storm in sensor.bpf.c). The kernel does not wake the daemon for the
 * execs of a storm, so the daemon needs the window too: it keeps draining on its own
 * timer for as long as the kernel may still count a new exec into a storm.
 */
enum lg_storm {
	LG_STORM_WINDOW_MS = 50,
	LG_STORM_EXECS = 10,
};

/* Indexes of the per-CPU counters in the lg_stats map. (Records the ring buffer had no
 * room for are counted per kind in lg_lost.) */
enum lg_stat {
	LG_STAT_EXEC_SEEN = 0,
	LG_STAT_HOST_FILTERED = 1,	/* dropped in the kernel: host mount namespace */
	LG_STAT_READ_ERRORS = 2,	/* a kernel read failed; the event went out incomplete */
	LG_STAT_WAKEUPS = 3,	/* submits that woke the daemon (BPF_RB_FORCE_WAKEUP) */
	LG_STAT_FILE_SEEN = 4,	/* writes, and mappings not judged clean, of regular files in containers */
	LG_STAT_FILE_REPEATS = 5,	/* not sent: the same file, parent and mode sent lately */
	LG_STAT_MAP_CLEAN_HITS = 6,	/* not sent: a mapping of an inode the daemon judged clean */
	LG_STAT_IO_URING = 7,	/* io_uring requests submitted in containers (not inspected) */
	LG_STAT_FILE_DATA = 8,	/* writes not sent: no exec bit, no library name, no watched directory */
	LG_STAT_SYSCALLS = 9,	/* syscall hooks: renames, links, unlinks and exec mappings seen in containers */
	LG_STAT_KERNEL_HOOKS = 10,	/* kernel hooks (fentry, BPF LSM): the same, seen in containers */
	LG_STAT_COUNT = 11,
};

struct lg_event_header {
	__u32 kind;		/* enum lg_event_kind */
	__u32 cpu;
	__u64 ktime_ns;		/* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 pid;		/* thread id, host pid namespace */
	__u32 tgid;		/* process id, host pid namespace */
	__u32 mnt_ns;		/* mount namespace inode */
	__u32 pid_ns;		/* pid namespace inode */
};

/* Identity of an inode as the kernel sees it; dev is the kernel encoding (major << 20 | minor). */
struct lg_file_id {
	__u64 ino;
	__u32 dev;
	__u32 _pad;
};

struct lg_exec_event {
	struct lg_event_header hdr;
	__u32 ppid;		/* tgid of the real parent */
	__u32 uid;
	__u32 gid;
	__u32 flags;		/* LG_EXEC_* */
	struct lg_file_id file;	/* as seen by the process (the overlay inode on overlayfs) */
	struct lg_file_id real;	/* the upper or lower inode behind it; same as file elsewhere */
	__s64 ctime_sec;	/* of the real inode */
	__u32 ctime_nsec;
	__u32 nlink;		/* of the inode as seen */
	__u64 size;		/* of the real inode */
	__u32 mode;
	__u16 argc;
	__u16 filename_len;	/* bytes of filename, without its NUL */
	__u16 interp_len;	/* bytes of interp, without its NUL (LG_EXEC_HAS_INTERP) */
	__u16 cwd_len;		/* bytes of the cwd names, NULs included */
	__u16 exe_len;		/* bytes of the exe names, NULs included (LG_EXEC_HAS_EXE) */
	__u16 argv_len;		/* bytes of argv, NUL separated */
	char comm[LG_COMM_LEN];
};

/*
 * An exec record on the ring: the fixed part, then its strings, packed, in this order,
 * each right after the one before:
 *   filename NUL            as the caller passed it to execve
 *   interp NUL              the interpreter of a #! script (LG_EXEC_HAS_INTERP)
 *   cwd names               the working directory inside the task's root, one
 *                           NUL-terminated name per component, leaf first (a process
 *                           gone before the daemon looks can no longer tell it)
 *   exe names               the executed file's path, the same way (LG_EXEC_HAS_EXE:
 *                           only when filename is a magic link such as /proc/self/exe)
 *   argv                    argv_len bytes
 * The record ends after argv: most execs need a few hundred of these bytes, and the copy
 * into the ring buffer was a third of the exec program's time. The reader takes the
 * fixed part as a struct and the strings as the bytes after it.
 */
struct lg_exec_record {
	struct lg_exec_event event;
	char strings[LG_STRINGS_LEN];
};

struct lg_fork_event {
	struct lg_event_header hdr;	/* the child */
	__u32 parent_tgid;
	__u32 _pad;
};

struct lg_exit_event {
	struct lg_event_header hdr;
	__s32 exit_code;
	__u32 _pad;
};

/* What happened to the file of an lg_file_event. */
enum lg_file_op {
	LG_FILE_WRITE = 1,	/* its inode was dirtied: created, written, truncated, chmod, touch */
	LG_FILE_MAP = 2,	/* a process faulted in pages of a mapping of it, or mapped it executable */
	/* Seen by the kernel hooks (files.kernel_hooks) or the opt-in syscall hooks
	 * (files.syscall_hooks) only: */
	LG_FILE_LINKED = 3,	/* a name now points at a file: a rename's or link's destination */
	LG_FILE_UNLINKED = 4,	/* a name went away: unlink, or a rename's source */
};

/* lg_file_event.flags */
#define LG_FILE_PATH_TRUNCATED (1u << 0)	/* names did not reach the filesystem's root */
#define LG_FILE_MEMFD (1u << 1)		/* a memfd (tmpfs, "memfd:" name) */
#define LG_FILE_DELETED (1u << 2)	/* no links left */
#define LG_FILE_NO_NAME (1u << 3)	/* the inode had no dentry to name it */
#define LG_FILE_CALLER_PATH (1u << 4)	/* names: the caller's path string, then its base directory */
#define LG_FILE_DATA_DIR (1u << 5)	/* a data write, sent only for its directory (the baseline) */
#define LG_FILE_KERNEL_PATH (1u << 6)	/* names: the path inside the task's root, from the kernel's dentry and mount */

/*
 * A write or a mapping of a regular file by a container process. The file is the real
 * inode (on overlayfs: the upper or lower layer's file, as the page cache and writeback
 * see it), named from its own dentries, not from a string the caller passed: the names
 * run leaf first up to the root of the filesystem that holds it (for a container's file,
 * through .../snapshots/N/fs/, which tells the daemon the layer).
 *
 * LG_FILE_LINKED and LG_FILE_UNLINKED records have no ctime, size or nlink (0). From the
 * syscall hook (LG_FILE_CALLER_PATH) they have no inode either (file and mode are 0):
 * rename, link and unlink hand the sensor only the caller's string. Their names are that
 * string (caller_len bytes, NUL included) and, when it is relative, the names of the
 * directory it starts from (the cwd or the dirfd's file, leaf first, crossing mounts, up
 * to the task's root: a path inside the container). From the kernel hooks
 * (LG_FILE_KERNEL_PATH) the names are the dentry's and its parents', leaf first, crossing
 * mounts, up to the task's root; file and mode are the named file's (the one moved,
 * linked or removed; file is its layer's inode). These hooks run before the kernel makes
 * the change.
 */
struct lg_file_event {
	struct lg_event_header hdr;
	__u32 op;		/* enum lg_file_op */
	__u32 flags;		/* LG_FILE_* */
	struct lg_file_id file;	/* the real inode */
	__s64 ctime_sec;
	__u32 ctime_nsec;
	__u32 mode;
	__u64 size;
	__u32 nlink;
	__u32 dirty_flags;	/* LG_FILE_WRITE: the kernel's I_DIRTY_* bits */
	__u32 uid;		/* of the acting task */
	__u32 gid;
	__u16 names_len;	/* bytes of names, NULs included */
	__u16 caller_len;	/* LG_FILE_CALLER_PATH: bytes of the caller's string, NUL included */
	__u16 _pad[2];
	char comm[LG_COMM_LEN];
};

/* Names are written below LG_PATH_MAX (a mask proves it) and each is up to LG_NAME_MAX. */
#define LG_FILE_NAMES_LEN (LG_PATH_MAX + LG_NAME_MAX)

struct lg_file_record {
	struct lg_file_event event;
	char names[LG_FILE_NAMES_LEN];
};

/*
 * An inode the daemon judged clean for mappings (its content is what the image records,
 * or not code at all), or is judging: the kernel sends no more mapping events for it
 * while its ctime is unchanged (counted in LG_STAT_MAP_CLEAN_HITS). Key: struct lg_file_id.
 */
struct lg_clean_inode {
	__s64 ctime_sec;
	__u32 ctime_nsec;
	__u32 _pad;
};

/* Bytes of a directory name in lg_watch_dirs (names are cut there, NUL included). */
#define LG_WATCH_NAME_LEN 32

#endif
