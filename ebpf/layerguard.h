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
#define LG_PATH_LEN 256
#define LG_ARGV_LEN 512
#define LG_CWD_DEPTH 16		/* path components of the cwd kept */
#define LG_CWD_NAME 32		/* bytes per component, NUL included */

enum lg_event_kind {
	LG_EVENT_EXEC = 1,
	LG_EVENT_FORK = 2,
	LG_EVENT_EXIT = 3,
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
#define LG_EXEC_HAS_CWD (1u << 8)	/* cwd was read (only for relative filenames) */
#define LG_EXEC_CWD_TRUNCATED (1u << 9)	/* deeper than LG_CWD_DEPTH or a name cut */
#define LG_EXEC_STORM (1u << 10)	/* counted into an exec storm: no wake-up of its own */

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

/* Indexes of the per-CPU counters in the lg_stats map. */
enum lg_stat {
	LG_STAT_EXEC_SEEN = 0,
	LG_STAT_EXEC_LOST = 1,	/* ring buffer full: the event is gone */
	LG_STAT_FORK_LOST = 2,
	LG_STAT_EXIT_LOST = 3,
	LG_STAT_HOST_FILTERED = 4,	/* dropped in the kernel: host mount namespace */
	LG_STAT_READ_ERRORS = 5,	/* a kernel read failed; the event went out incomplete */
	LG_STAT_WAKEUPS = 6,	/* submits that woke the daemon (BPF_RB_FORCE_WAKEUP) */
	LG_STAT_COUNT = 8,
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
	__u16 argv_len;		/* bytes used in argv, NUL separated */
	__u16 filename_len;	/* without the NUL */
	__u16 interp_len;
	__u16 cwd_depth;	/* components in cwd, leaf first */
	__u16 _pad;
	char comm[LG_COMM_LEN];
	char filename[LG_PATH_LEN];	/* as the caller passed it */
	/*
	 * The record on the ring ends after the last field in use: after argv_len bytes of
	 * argv when neither interp nor cwd is set, after interp when only interp is, whole
	 * otherwise. Most execs need a quarter of the struct, and the copy into the ring
	 * buffer was a third of the exec program's time. What is cut is zero to the reader.
	 */
	char argv[LG_ARGV_LEN];
	char interp[LG_PATH_LEN];	/* the interpreter, when LG_EXEC_HAS_INTERP */
	/* The working directory inside the task's root, when filename is relative (a process
	 * that is gone before the daemon looks can no longer tell it): one name per slot,
	 * leaf first, so that no write needs a variable offset the verifier must bound. */
	char cwd[LG_CWD_DEPTH][LG_CWD_NAME];
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

#endif
