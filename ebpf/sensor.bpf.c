// SPDX-License-Identifier: GPL-2.0-only
/*
 * The layerguard kernel sensor: process exec, fork and exit, file writes and file
 * mappings, from BTF tracepoints only (fentry, kprobes and the BPF LSM are not available
 * on the hosts we target, and syscall tracepoints tax every syscall on the node; the one
 * syscall hook, lg_sys_exit, is attached only when the operator opts in).
 *
 * What it owns: deciding in the kernel which events leave it (container mount namespaces
 * only, unless host monitoring is on), reading everything about the executed file that
 * is only true at exec time (inode identity, overlayfs upper/lower, memfd, link count),
 * and counting every event it could not deliver. It does no policy: the daemon judges.
 */
#include <linux/bpf.h>
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "layerguard.h"

char LICENSE[] SEC("license") = "GPL";

#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define TMPFS_MAGIC 0x01021994
#define HUGETLBFS_MAGIC 0x958458f6
#define ANON_INODE_FS_MAGIC 0x09041934
#define S_IFMT 00170000

/* Load-time settings, written by the daemon before load (aya override_global). */
const volatile __u32 host_mnt_ns = 0;
const volatile __u32 monitor_host = 0;
/*
 * When to wake the daemon. Two costs pull apart: an exec the daemon may alert on should
 * not wait for a timer when nothing else is happening (issue 5: exec-to-alert p99 <= 2 ms
 * for a cached binary), while under an exec storm every wake-up costs more than the
 * events it delivers (issue 2: <= 3 % exec overhead). Measured on the 2-core VM, a
 * wake-up forced from the exec path costs the exec'ing workload far more than a timer
 * drain does (0.05 wake-ups per exec cost 2 points of exec overhead, ~150 us each;
 * presumably the woken daemon lands on, or interrupts, the CPU that is exec'ing), so
 * they must stay rare under load.
 *
 * So only exec records ask for a wake-up (forks and exits never need to be seen early and
 * ride along with the next drain), and those requests go through a token bucket: up to
 * WAKE_BURST at once (the execs of a shell one-liner), refilled at one per WAKE_REFILL_NS
 * (40 a second; the latency bench's quiet container execs about 25 a second). A quiet
 * container gets each exec delivered at once (an attack usually looks like that: a few
 * execs, then silence); a storm spends the burst in its first execs and from then on is
 * drained by the daemon's own timer, one drain interval after its last drain. A sustained
 * storm (see in_storm) gets no wake-ups at all, not even the refilled tokens. The bucket
 * is a GCRA, one state word (the "theoretical arrival time"), updated without atomics:
 * CPUs racing on it can at worst grant a wake-up too many, which is harmless. A full
 * batch (wakeup_bytes waiting) always wakes, so the ring never fills while the daemon
 * sleeps.
 */
const volatile __u32 wakeup_bytes = 256 * 1024;
#define WAKE_REFILL_NS (25 * 1000 * 1000)
#define WAKE_BURST 8
__u64 wake_tat = 0;
/*
 * A storm: more than LG_STORM_EXECS execs in LG_STORM_WINDOW_MS (layerguard.h), in this
 * window or the last. Then no exec asks for a wake-up and the daemon's drain timer
 * delivers them (within its drain interval); their records carry LG_EXEC_STORM, which
 * also tells the daemon to stop preempting the workload (see sensor/pace.rs). The bucket
 * alone still let 40 wake-ups a second through a storm: exec bench on/off 1.019 with them,
 * 1.012 with the storm rule (3 x 32 rounds); a quiet container (the latency bench: ~25
 * execs a second) never looks like a storm. Plain globals like wake_tat: a race between
 * CPUs only blurs a window's count.
 */
#define STORM_WINDOW_NS ((__u64)LG_STORM_WINDOW_MS * 1000 * 1000)
__u64 storm_window_start = 0;
__u32 storm_window_execs = 0;
__u32 storm_last_window_execs = 0;

/* Keeps every wire struct and enum in the object's BTF (clang emits BTF only for types that
 * globals, maps and functions reference; the exec event is a map value already), so a test
 * can compare them with the Rust mirror. */
struct lg_wire_types {
	struct lg_fork_event fork;
	struct lg_exit_event exit;
	struct lg_file_record file;
	struct lg_clean_inode clean;
	enum lg_file_op file_op;
	enum lg_event_kind kind;
	enum lg_stat stat;
	enum lg_storm storm;
};
const volatile struct lg_wire_types lg_wire_anchor = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} lg_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LG_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} lg_stats SEC(".maps");

/* Records the ring buffer had no room for, per CPU, indexed by enum lg_event_kind. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LG_EVENT_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} lg_lost SEC(".maps");

/* Exec events are too large for the BPF stack; they are assembled here, then copied. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lg_exec_record);
} lg_exec_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lg_file_record);
} lg_file_scratch SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&lg_stats, &stat);
	if (v)
		*v += 1;
}

static __always_inline void count_lost(__u32 kind)
{
	__u64 *v = bpf_map_lookup_elem(&lg_lost, &kind);
	if (v)
		*v += 1;
}

static __always_inline __u64 batch_full(void)
{
	return bpf_ringbuf_query(&lg_events, BPF_RB_AVAIL_DATA) >= wakeup_bytes;
}

/* Flags for a fork or exit record: no wake-up of its own, only for a full batch. */
static __always_inline __u64 quiet_flags(void)
{
	if (!batch_full())
		return BPF_RB_NO_WAKEUP;
	count(LG_STAT_WAKEUPS);
	return BPF_RB_FORCE_WAKEUP;
}

/* Counts an exec at `now`; true while execs come faster than a storm's threshold. */
static __always_inline int in_storm(__u64 now)
{
	__u64 since = now - storm_window_start;
	if (since >= STORM_WINDOW_NS) {
		storm_last_window_execs = since < 2 * STORM_WINDOW_NS ? storm_window_execs : 0;
		storm_window_start = now;
		storm_window_execs = 0;
	}
	storm_window_execs += 1;
	return storm_window_execs > LG_STORM_EXECS || storm_last_window_execs > LG_STORM_EXECS;
}

/* Submit flags for an exec record at time `now`: a wake-up unless in a storm, if the
 * bucket has a token. A storm is also marked in the record's `flags`. */
static __always_inline __u64 bucket_flags(__u64 now);

static __always_inline __u64 exec_flags(__u64 now, __u32 *flags)
{
	int storm = in_storm(now);
	if (storm)
		*flags |= LG_EXEC_STORM;
	if (quiet_flags() == BPF_RB_FORCE_WAKEUP)
		return BPF_RB_FORCE_WAKEUP;
	if (storm)
		return BPF_RB_NO_WAKEUP;
	return bucket_flags(now);
}

/* Flags for a record that may be an alert, outside the exec storm accounting. */
static __always_inline __u64 exec_wake(__u64 now)
{
	if (quiet_flags() == BPF_RB_FORCE_WAKEUP)
		return BPF_RB_FORCE_WAKEUP;
	if (storm_window_execs > LG_STORM_EXECS || storm_last_window_execs > LG_STORM_EXECS)
		return BPF_RB_NO_WAKEUP;
	return bucket_flags(now);
}

/* A wake-up if the bucket has a token (see wake_tat). */
static __always_inline __u64 bucket_flags(__u64 now)
{
	__u64 tat = wake_tat;
	__u64 tolerance = (__u64)WAKE_REFILL_NS * (WAKE_BURST - 1);
	if (tat > now + tolerance)
		return BPF_RB_NO_WAKEUP;
	wake_tat = (tat > now ? tat : now) + WAKE_REFILL_NS;
	count(LG_STAT_WAKEUPS);
	return BPF_RB_FORCE_WAKEUP;
}

/* Fills the header; returns 0 when the task must not be reported (host, filtered). */
static __always_inline int fill_header(struct lg_event_header *h, struct task_struct *task, __u32 kind)
{
	struct nsproxy *ns = task->nsproxy;
	h->mnt_ns = ns->mnt_ns->ns.inum;
	if (h->mnt_ns == host_mnt_ns && !monitor_host) {
		count(LG_STAT_HOST_FILTERED);
		return 0;
	}
	h->kind = kind;
	h->cpu = bpf_get_smp_processor_id();
	h->ktime_ns = bpf_ktime_get_ns();
	h->pid = task->pid;
	h->tgid = task->tgid;
	h->pid_ns = ns->pid_ns_for_children->ns.inum;
	return 1;
}

static __always_inline int name_starts_with_memfd(struct dentry *d)
{
	char name[8] = {};
	const unsigned char *p = BPF_CORE_READ(d, d_name.name);
	if (bpf_probe_read_kernel_str(name, sizeof(name), p) < 7)
		return 0;
	return name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 'f' && name[4] == 'd' &&
	       name[5] == ':';
}

/* Where a dentry's node in its inode's alias list sits (see struct dentry___anon_u). */
static __always_inline __u32 dentry_alias_offset(void)
{
	if (bpf_core_field_exists(((struct dentry___anon_u *)0)->d_alias))
		return bpf_core_field_offset(struct dentry___anon_u, d_alias);
	return bpf_core_field_offset(struct dentry, d_u.d_alias);
}

/* The inode's ctime, into the two fields every record with a file carries. */
static __always_inline void read_ctime(struct inode *inode, __s64 *sec, __u32 *nsec)
{
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		*sec = BPF_CORE_READ(inode, i_ctime_sec);
		/* Bit 31 is the multigrain "ctime was queried" flag, not time. */
		*nsec = BPF_CORE_READ(inode, i_ctime_nsec) & 0x7fffffff;
	} else if (bpf_core_field_exists(inode->__i_ctime)) {
		*sec = BPF_CORE_READ(inode, __i_ctime.tv_sec);
		*nsec = BPF_CORE_READ(inode, __i_ctime.tv_nsec);
	} else {
		*sec = BPF_CORE_READ(inode, i_ctime.tv_sec);
		*nsec = BPF_CORE_READ(inode, i_ctime.tv_nsec);
	}
}

/*
 * On overlayfs the inode the process sees is embedded in struct ovl_inode. A non-NULL
 * __upperdentry means the file was copied up or created in the container; otherwise the
 * first lower layer that has it holds the real inode.
 *
 * The offsets come from the daemon, read at start from the BTF of the kernel's overlay
 * module (/sys/kernel/btf/overlay) or of vmlinux when overlayfs is built in: CO-RE against
 * vmlinux alone cannot relocate module types (aya 0.14 poisons the access, and the program
 * is refused), and Debian builds overlayfs as a module. Two layouts exist: since 6.5 the
 * lower stack is in an ovl_entry the inode points to (`oe`); before, the inode embeds its
 * first lower path (`lowerpath`). ovl_layout 0: unknown; the sensor then reports the
 * overlay inode itself and counts a read error.
 */
const volatile __u32 ovl_layout = 0;	/* 0 unknown, 1 oe (6.5+), 2 lowerpath (< 6.5) */
const volatile __u32 ovl_vfs_inode_off = 0;
const volatile __u32 ovl_upper_off = 0;
const volatile __u32 ovl_oe_off = 0;
const volatile __u32 ovl_numlower_off = 0;
const volatile __u32 ovl_lowerstack_off = 0;
const volatile __u32 ovl_lowerpath_off = 0;
const volatile __u32 ovl_path_dentry_off = 0;

static __always_inline struct inode *overlay_real_inode(struct inode *inode, __u32 *flags)
{
	if (ovl_layout == 0)
		return 0;
	void *oi = (void *)inode - ovl_vfs_inode_off;
	struct dentry *upper = 0;
	bpf_probe_read_kernel(&upper, sizeof(upper), oi + ovl_upper_off);
	if (upper) {
		*flags |= LG_EXEC_UPPER_LAYER;
		return BPF_CORE_READ(upper, d_inode);
	}
	void *lower;
	if (ovl_layout == 1) {
		void *oe = 0;
		bpf_probe_read_kernel(&oe, sizeof(oe), oi + ovl_oe_off);
		__u32 numlower = 0;
		if (oe)
			bpf_probe_read_kernel(&numlower, sizeof(numlower), oe + ovl_numlower_off);
		if (!numlower)
			return 0;
		lower = oe + ovl_lowerstack_off;
	} else {
		lower = oi + ovl_lowerpath_off;
	}
	struct dentry *ld = 0;
	bpf_probe_read_kernel(&ld, sizeof(ld), lower + ovl_path_dentry_off);
	return ld ? BPF_CORE_READ(ld, d_inode) : 0;
}

/* Strings are written at `off & LG_STRINGS_MASK` (see LG_STRINGS_SPAN in layerguard.h). */
#define LG_STRINGS_MASK (LG_STRINGS_SPAN - 1)

/*
 * State of a path walk (cwd or exe), shared with the bpf_loop callback. It lives in a
 * per-CPU map, not on the stack: the verifier follows stack values precisely through
 * every callback iteration, and an offset that grows per name never converged (it gave
 * up on the program), while a value read back from a map is just a bounded scalar.
 * Pointers are kept as plain numbers for the same reason; they are only ever compared
 * or handed to bpf_probe_read_kernel.
 */
struct path_walk {
	__u64 d;
	__u64 vfs;
	__u64 mnt;
	__u64 root;
	__u64 root_mnt;
	__u32 off;		/* where the next name goes in the exec record's strings */
	__u32 end;		/* no name may end past this */
	__u32 complete;
	__u32 truncated;
	__u32 into_file;	/* write names into lg_file_scratch's names, not the exec record */
	__u32 _pad;
	/* Field offsets, relocated in the main program: aya 0.14 does not apply CO-RE
	 * relocations inside a bpf_loop callback (it poisons them). */
	__u64 off_mnt_root;
	__u64 off_mnt_parent;
	__u64 off_mnt_mountpoint;
	__u64 off_mount_mnt;
	__u64 off_d_parent;
	__u64 off_d_name_name;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_walk);
} lg_walk SEC(".maps");

static __always_inline __u64 read_ptr(__u64 base, __u64 off)
{
	__u64 p = 0;
	bpf_probe_read_kernel(&p, sizeof(p), (void *)(base + off));
	return p;
}

/* One step up from w->d: a name, or a crossing to the parent mount. Returns 1 to stop. */
static long walk_step(__u64 index, void *unused)
{
	__u32 zero = 0;
	struct path_walk *w = bpf_map_lookup_elem(&lg_walk, &zero);
	struct lg_exec_record *r = bpf_map_lookup_elem(&lg_exec_scratch, &zero);
	if (!w || !r)
		return 1;
	if (w->d == w->root && w->vfs == w->root_mnt) {
		w->complete = 1;
		return 1;
	}
	if (w->d == read_ptr(w->vfs, w->off_mnt_root)) {
		__u64 parent = read_ptr(w->mnt, w->off_mnt_parent);
		if (parent == w->mnt) {
			w->complete = 1; /* the namespace's root mount */
			return 1;
		}
		w->d = read_ptr(w->mnt, w->off_mnt_mountpoint);
		w->mnt = parent;
		w->vfs = parent + w->off_mount_mnt;
		return 0;
	}
	/* A name may be up to LG_NAME_MAX with its NUL: only start one that surely fits. */
	__u32 off = w->off;
	if (off + LG_NAME_MAX > w->end) {
		w->truncated = 1;
		return 1;
	}
	const void *name = (void *)read_ptr(w->d, w->off_d_name_name);
	long n;
	if (w->into_file) {
		struct lg_file_record *f = bpf_map_lookup_elem(&lg_file_scratch, &zero);
		if (!f)
			return 1;
		n = bpf_probe_read_kernel_str(&f->names[off & (LG_PATH_MAX - 1)], LG_NAME_MAX, name);
	} else {
		n = bpf_probe_read_kernel_str(&r->strings[off & LG_STRINGS_MASK], LG_NAME_MAX, name);
	}
	if (n <= 0) {
		w->truncated = 1;
		return 1;
	}
	w->off = off + n;
	__u64 parent = read_ptr(w->d, w->off_d_parent);
	if (parent == w->d) {
		/* A root that is neither the task's nor a mount's (a detached tree). */
		w->complete = 1;
		return 1;
	}
	w->d = parent;
	return 0;
}

/*
 * Writes the names of the path from (mnt, dentry) up to the task's root into r->strings
 * at `off` (into_file: into lg_file_scratch's names, which end at LG_PATH_MAX), leaf
 * first, crossing mounts, each NUL-terminated, at most LG_PATH_MAX bytes. Returns the
 * bytes written; sets *truncated when the path did not fit. bpf_loop keeps the verifier's
 * work to one pass over the step, however deep the path.
 */
static __always_inline __u32 walk_path_into(__u32 off, struct vfsmount *vfs, struct dentry *d,
					    struct fs_struct *fs, __u32 *truncated, __u32 into_file)
{
	__u32 zero = 0;
	struct path_walk *w = bpf_map_lookup_elem(&lg_walk, &zero);
	if (!w) {
		*truncated = 1;
		return 0;
	}
	w->d = (__u64)d;
	w->vfs = (__u64)vfs;
	w->root = (__u64)BPF_CORE_READ(fs, root.dentry);
	w->root_mnt = (__u64)BPF_CORE_READ(fs, root.mnt);
	w->off = off;
	w->end = into_file ? LG_PATH_MAX : off + LG_PATH_MAX;
	w->complete = 0;
	w->truncated = 0;
	w->into_file = into_file;
	w->off_mnt_root = bpf_core_field_offset(struct vfsmount, mnt_root);
	w->off_mnt_parent = bpf_core_field_offset(struct mount, mnt_parent);
	w->off_mnt_mountpoint = bpf_core_field_offset(struct mount, mnt_mountpoint);
	w->off_mount_mnt = bpf_core_field_offset(struct mount, mnt);
	w->off_d_parent = bpf_core_field_offset(struct dentry, d_parent);
	/* d_name is a struct qstr whose name pointer sits at its own offset. */
	w->off_d_name_name = bpf_core_field_offset(struct dentry, d_name) +
			     bpf_core_field_offset(struct qstr, name);
	w->mnt = w->vfs - w->off_mount_mnt;
	/* Names take at least two bytes, mount crossings none: room for the deepest path. */
	bpf_loop(LG_PATH_MAX, walk_step, 0, 0);
	if (!w->complete || w->truncated)
		*truncated = 1;
	__u32 written = w->off - off;
	return written > LG_PATH_MAX ? LG_PATH_MAX : written;
}

static __always_inline __u32 walk_path(__u32 off, struct vfsmount *vfs, struct dentry *d,
				       struct fs_struct *fs, __u32 *truncated)
{
	return walk_path_into(off, vfs, d, fs, truncated, 0);
}

/* True for the names that are magic links to the executed file (fexecve, /proc/self/exe). */
static __always_inline int is_magic_link(const char *s)
{
	if (s[0] != '/')
		return 0;
	if (s[1] == 'p' && s[2] == 'r' && s[3] == 'o' && s[4] == 'c' && s[5] == '/')
		return 1;
	return s[1] == 'd' && s[2] == 'e' && s[3] == 'v' && s[4] == '/' && s[5] == 'f' &&
	       s[6] == 'd' && s[7] == '/';
}

/* Copies a kernel string to r->strings at `off`; returns its length without the NUL. */
static __always_inline __u32 put_kernel_str(struct lg_exec_record *r, __u32 off, __u32 max,
					    const char *src, __u32 flag_if_cut)
{
	struct lg_exec_event *e = &r->event;
	long n = bpf_probe_read_kernel_str(&r->strings[off & LG_STRINGS_MASK], max, src);
	if (n <= 0) {
		r->strings[off & LG_STRINGS_MASK] = 0;
		count(LG_STAT_READ_ERRORS);
		return 0;
	}
	if (n == max)
		e->flags |= flag_if_cut;
	return n - 1;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(lg_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	struct lg_exec_record *r = bpf_map_lookup_elem(&lg_exec_scratch, &zero);
	if (!r)
		return 0;
	struct lg_exec_event *e = &r->event;
	count(LG_STAT_EXEC_SEEN);
	if (!fill_header(&e->hdr, task, LG_EVENT_EXEC))
		return 0;

	__u64 ugid = bpf_get_current_uid_gid();
	e->uid = (__u32)ugid;
	e->gid = ugid >> 32;
	e->ppid = task->real_parent->tgid;
	e->flags = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	struct file *file = bprm->file;
	struct inode *inode = file->f_inode;
	struct super_block *sb = inode->i_sb;
	unsigned long magic = sb->s_magic;
	e->file.ino = inode->i_ino;
	e->file.dev = sb->s_dev;
	e->file._pad = 0;
	e->mode = inode->i_mode;
	e->nlink = inode->__i_nlink;
	if (e->nlink == 0)
		e->flags |= LG_EXEC_DELETED;

	struct inode *real = inode;
	if (magic == OVERLAYFS_SUPER_MAGIC) {
		e->flags |= LG_EXEC_OVERLAY;
		struct inode *r = overlay_real_inode(inode, &e->flags);
		if (r)
			real = r;
		else
			count(LG_STAT_READ_ERRORS);
	} else if (magic == ANON_INODE_FS_MAGIC) {
		e->flags |= LG_EXEC_MEMFD;
	} else if (magic == TMPFS_MAGIC || magic == HUGETLBFS_MAGIC) {
		struct dentry *d = file->f_path.dentry;
		if (name_starts_with_memfd(d))
			e->flags |= LG_EXEC_MEMFD;
	}
	e->real.ino = BPF_CORE_READ(real, i_ino);
	e->real.dev = BPF_CORE_READ(real, i_sb, s_dev);
	e->real._pad = 0;
	e->size = BPF_CORE_READ(real, i_size);
	read_ctime(real, &e->ctime_sec, &e->ctime_nsec);

	/* The strings, packed (see struct lg_exec_record). Each offset stays below
	 * LG_STRINGS_SPAN by the sizes in layerguard.h; the masks only prove it. */
	const char *filename = bprm->filename;
	const char *interp = bprm->interp;
	__u32 off = 0;
	e->filename_len = put_kernel_str(r, off, LG_PATH_MAX, filename, LG_EXEC_FILENAME_TRUNCATED);
	off += e->filename_len + 1;
	e->interp_len = 0;
	if (interp && interp != filename) {
		e->flags |= LG_EXEC_HAS_INTERP;
		e->interp_len = put_kernel_str(r, off, LG_INTERP_MAX, interp, LG_EXEC_INTERP_TRUNCATED);
		off += e->interp_len + 1;
	}

	/* The cwd of every exec: it resolves relative names, and the script argument of
	 * `sh x.sh` too, after the process is gone. */
	struct fs_struct *fs = task->fs;
	__u32 cut = 0;
	struct dentry *pwd = BPF_CORE_READ(fs, pwd.dentry);
	struct vfsmount *pwd_mnt = BPF_CORE_READ(fs, pwd.mnt);
	/* Most container processes run at their root: no walk (and no loop set-up) then. */
	e->cwd_len = 0;
	if (pwd != BPF_CORE_READ(fs, root.dentry) || pwd_mnt != BPF_CORE_READ(fs, root.mnt))
		e->cwd_len = walk_path(off & LG_STRINGS_MASK, pwd_mnt, pwd, fs, &cut);
	e->flags |= LG_EXEC_HAS_CWD;
	if (cut)
		e->flags |= LG_EXEC_CWD_TRUNCATED;
	off += e->cwd_len;

	/* A magic link names no path of the file: the file's own path does. */
	e->exe_len = 0;
	if (is_magic_link(r->strings)) {
		cut = 0;
		e->exe_len = walk_path(off & LG_STRINGS_MASK, BPF_CORE_READ(file, f_path.mnt),
				       BPF_CORE_READ(file, f_path.dentry), fs, &cut);
		e->flags |= LG_EXEC_HAS_EXE;
		if (cut)
			e->flags |= LG_EXEC_EXE_TRUNCATED;
		off += e->exe_len;
	}

	/* argv sits in the new image's memory; this tracepoint runs in the exec'ing task. */
	e->argc = bprm->argc;
	struct mm_struct *mm = task->mm;
	unsigned long start = mm->arg_start;
	unsigned long end = mm->arg_end;
	unsigned long len = end > start ? end - start : 0;
	/* One byte short of the buffer so that a power-of-two mask proves the bound to the
	 * verifier. */
	if (len > LG_ARGV_MAX - 1) {
		len = LG_ARGV_MAX - 1;
		e->flags |= LG_EXEC_ARGV_TRUNCATED;
	}
	len &= LG_ARGV_MAX - 1;
	off &= LG_STRINGS_MASK;
	e->argv_len = 0;
	if (len > 0 && bpf_probe_read_user(&r->strings[off], len, (void *)start) == 0)
		e->argv_len = len;
	else if (len > 0) {
		count(LG_STAT_READ_ERRORS);
		len = 0;
	}

	/* Only what is in use goes on the ring (see struct lg_exec_record). */
	__u64 size = __builtin_offsetof(struct lg_exec_record, strings) + off + len;
	if (size > sizeof(*r))
		size = sizeof(*r);
	__u64 wake = exec_flags(e->hdr.ktime_ns, &e->flags);
	if (bpf_ringbuf_output(&lg_events, r, size, wake) != 0)
		count_lost(LG_EVENT_EXEC);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(lg_fork, struct task_struct *parent, struct task_struct *child)
{
	/* Threads share their process's identity; only new processes matter. */
	if (child->pid != child->tgid)
		return 0;
	struct lg_fork_event e = {};
	if (!fill_header(&e.hdr, child, LG_EVENT_FORK))
		return 0;
	e.parent_tgid = parent->tgid;
	if (bpf_ringbuf_output(&lg_events, &e, sizeof(e), quiet_flags()) != 0)
		count_lost(LG_EVENT_FORK);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(lg_exit, struct task_struct *task)
{
	if (task->pid != task->tgid)
		return 0;
	struct lg_exit_event e = {};
	if (!fill_header(&e.hdr, task, LG_EVENT_EXIT))
		return 0;
	e.exit_code = task->exit_code;
	if (bpf_ringbuf_output(&lg_events, &e, sizeof(e), quiet_flags()) != 0)
		count_lost(LG_EVENT_EXIT);
	return 0;
}

/* ---- Files: writes and executable mappings -------------------------------------------
 *
 * Two tracepoints outside syscalls/ see what the files analyzer needs without putting
 * every syscall of the node on the tracing path (see README, "Files"):
 * writeback_mark_inode_dirty fires in the writer's context when a file is created,
 * written, truncated, chmod'ed or touched; mm_filemap_map_pages and mm_filemap_fault when
 * a process faults in pages of a file mapping (ld.so mapping a library, the kernel
 * mapping an executable). Both name the real inode. Both fire far more often than the
 * daemon needs to hear, so the kernel keeps the node's cost down:
 * - container tasks only, regular files only, and never for atime-only dirtying;
 * - a write is sent once per (file, parent directory, mode) per FILE_REPEAT_NS: the daemon
 *   waits for the writer to finish anyway, and a chmod (a new mode) or a rename into the
 *   image's tree (a new parent: overlayfs copies up in a work directory first) is news;
 * - a mapping of an inode the daemon judged clean (lg_clean, same ctime) is only counted,
 *   and an unjudged one is sent once per (file, process) per FILE_REPEAT_NS.
 */
#define S_IFREG 0100000
#define I_DIRTY_TIME (1 << 11)
#define FILE_REPEAT_NS (1000ull * 1000 * 1000)

struct file_repeat_key {
	__u64 ino;
	__u64 other;		/* the parent dentry (writes) or the tgid (mappings) */
	__u32 dev;
	__u32 op;
};

struct file_repeat {
	__u64 at;
	__u32 mode;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct file_repeat_key);
	__type(value, struct file_repeat);
} lg_file_repeat SEC(".maps");

/* Filled by the daemon (struct lg_clean_inode); bounded, the least recently used goes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct lg_file_id);
	__type(value, struct lg_clean_inode);
} lg_clean SEC(".maps");

/* The state of a file's name walk, in a map for the same reasons as struct path_walk. */
struct file_walk {
	__u64 d;
	__u32 off;
	__u32 complete;
	__u64 off_d_parent;
	__u64 off_d_name_name;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct file_walk);
} lg_file_walk SEC(".maps");

/* The task's mount namespace, or 0 when its events must not leave the kernel. */
static __always_inline __u32 container_mnt_ns(struct task_struct *task)
{
	__u32 ns = task->nsproxy->mnt_ns->ns.inum;
	if (ns == host_mnt_ns && !monitor_host)
		return 0;
	return ns;
}

/* One name up from w->d, written leaf first; stops below the filesystem's root. */
static long file_walk_step(__u64 index, void *unused)
{
	__u32 zero = 0;
	struct file_walk *w = bpf_map_lookup_elem(&lg_file_walk, &zero);
	struct lg_file_record *r = bpf_map_lookup_elem(&lg_file_scratch, &zero);
	if (!w || !r)
		return 1;
	__u64 parent = read_ptr(w->d, w->off_d_parent);
	if (!parent || parent == w->d) {
		w->complete = 1;
		return 1;
	}
	__u32 off = w->off;
	if (off + LG_NAME_MAX > LG_PATH_MAX)
		return 1;
	long n = bpf_probe_read_kernel_str(&r->names[off & (LG_PATH_MAX - 1)], LG_NAME_MAX,
					   (void *)read_ptr(w->d, w->off_d_name_name));
	if (n <= 0)
		return 1;
	w->off = off + n;
	w->d = parent;
	return 0;
}

/*
 * The names of the directories that hold a sensitive or protected path (`etc` for
 * /etc/passwd, `.ssh` for /root/.ssh/ files), filled by the daemon from `[files]` before it
 * attaches the programs. A write is only sent when it may matter: an exec bit, a
 * library's name (`*.so`, `*.so.*`), or a parent directory named here. Every other write
 * (data files: most of them) costs the node a map lookup and no record. With
 * watch_every_write set (a glob whose directory is a wildcard) every write is sent.
 */
struct lg_dir_name {
	char name[LG_WATCH_NAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct lg_dir_name);
	__type(value, __u8);
} lg_watch_dirs SEC(".maps");

const volatile __u32 watch_every_write = 0;

/*
 * The behaviour baseline learns which directories a workload writes, and data writes are
 * most writes. With learn_write_dirs set, a data write is sent (LG_FILE_DATA_DIR) only
 * when its (mount namespace, directory) was not sent in the last DIR_RESEND_NS: one record
 * per directory a minute, however many files are written in it.
 */
const volatile __u32 learn_write_dirs = 0;
#define DIR_RESEND_NS (60ull * 1000 * 1000 * 1000)

struct dir_seen_key {
	__u64 dir;		/* the parent dentry */
	__u32 mnt_ns;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct dir_seen_key);
	__type(value, __u64);
} lg_dir_seen SEC(".maps");

/* True when a data write in `parent` is news for the baseline (and records it sent). */
static __always_inline int dir_news(__u32 mnt_ns, struct dentry *parent)
{
	if (!learn_write_dirs || !parent)
		return 0;
	struct dir_seen_key k = { .dir = (__u64)parent, .mnt_ns = mnt_ns };
	__u64 now = bpf_ktime_get_ns();
	__u64 *at = bpf_map_lookup_elem(&lg_dir_seen, &k);
	if (at && now - *at < DIR_RESEND_NS)
		return 0;
	bpf_map_update_elem(&lg_dir_seen, &k, &now, BPF_ANY);
	return 1;
}

/* True when the name (up to its first LG_WATCH_NAME_LEN bytes) has ".so" followed by
 * its end or a dot. */
static __always_inline int library_name(const char *n)
{
	for (int i = 0; i + 3 < LG_WATCH_NAME_LEN; i++) {
		if (n[i] == 0)
			return 0;
		if (n[i] == '.' && n[i + 1] == 's' && n[i + 2] == 'o' && (n[i + 3] == 0 || n[i + 3] == '.'))
			return 1;
	}
	return 0;
}

static __always_inline int write_may_matter(__u32 mode, struct dentry *d, struct dentry *parent)
{
	if (watch_every_write || (mode & 0111))
		return 1;
	struct lg_dir_name key = {};
	bpf_probe_read_kernel_str(key.name, sizeof(key.name), BPF_CORE_READ(d, d_name.name));
	if (library_name(key.name))
		return 1;
	__builtin_memset(&key, 0, sizeof(key));
	if (!parent)
		return 0;
	bpf_probe_read_kernel_str(key.name, sizeof(key.name), BPF_CORE_READ(parent, d_name.name));
	return bpf_map_lookup_elem(&lg_watch_dirs, &key) != 0;
}

/* The scratch file record with its header and acting task filled in, the file zeroed. */
static __always_inline struct lg_file_record *file_record(struct task_struct *task, __u32 mnt_ns,
							  __u32 op)
{
	__u32 zero = 0;
	struct lg_file_record *r = bpf_map_lookup_elem(&lg_file_scratch, &zero);
	if (!r)
		return 0;
	struct lg_file_event *e = &r->event;
	struct nsproxy *ns = task->nsproxy;
	e->hdr.kind = LG_EVENT_FILE;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->hdr.pid = task->pid;
	e->hdr.tgid = task->tgid;
	e->hdr.mnt_ns = mnt_ns;
	e->hdr.pid_ns = ns->pid_ns_for_children->ns.inum;
	e->op = op;
	e->flags = 0;
	e->dirty_flags = 0;
	__u64 ugid = bpf_get_current_uid_gid();
	e->uid = (__u32)ugid;
	e->gid = ugid >> 32;
	e->file.ino = 0;
	e->file.dev = 0;
	e->file._pad = 0;
	e->ctime_sec = 0;
	e->ctime_nsec = 0;
	e->mode = 0;
	e->size = 0;
	e->nlink = 0;
	e->names_len = 0;
	e->caller_len = 0;
	e->_pad[0] = e->_pad[1] = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return r;
}

/* Puts the record on the ring: its fixed part and names_len bytes of names. A record that
 * may be an alert (a write that got past write_may_matter, a rename, a link, an unlink)
 * may wake the daemon like an exec (the same bucket); mappings and a data write's
 * directory wait for the next drain. */
static __always_inline void submit_file(struct lg_file_record *r)
{
	struct lg_file_event *e = &r->event;
	__u64 size = __builtin_offsetof(struct lg_file_record, names) + (e->names_len & (LG_PATH_MAX - 1));
	if (e->names_len >= LG_PATH_MAX)
		size = sizeof(*r);
	if (size > sizeof(*r))
		size = sizeof(*r);
	__u64 wake = e->op == LG_FILE_MAP || (e->flags & LG_FILE_DATA_DIR) ? quiet_flags()
									     : exec_wake(e->hdr.ktime_ns);
	if (bpf_ringbuf_output(&lg_events, r, size, wake) != 0)
		count_lost(LG_EVENT_FILE);
}

/* Sends a file record for `inode` (any kernel pointer: read through CO-RE), named from its
 * own dentries. */
static __always_inline void send_file(struct task_struct *task, __u32 mnt_ns, struct inode *inode,
				      __u32 op, __u32 dirty_flags, __u32 flags)
{
	__u32 zero = 0;
	struct lg_file_record *r = file_record(task, mnt_ns, op);
	struct file_walk *w = bpf_map_lookup_elem(&lg_file_walk, &zero);
	if (!r || !w)
		return;
	struct lg_file_event *e = &r->event;
	e->dirty_flags = dirty_flags;
	e->flags = flags;
	struct super_block *sb = BPF_CORE_READ(inode, i_sb);
	e->file.ino = BPF_CORE_READ(inode, i_ino);
	e->file.dev = BPF_CORE_READ(sb, s_dev);
	e->mode = BPF_CORE_READ(inode, i_mode);
	e->size = BPF_CORE_READ(inode, i_size);
	e->nlink = BPF_CORE_READ(inode, __i_nlink);
	if (e->nlink == 0)
		e->flags |= LG_FILE_DELETED;
	read_ctime(inode, &e->ctime_sec, &e->ctime_nsec);

	struct hlist_node *alias = BPF_CORE_READ(inode, i_dentry.first);
	if (!alias) {
		e->flags |= LG_FILE_NO_NAME;
	} else {
		struct dentry *d = (void *)alias - dentry_alias_offset();
		unsigned long magic = BPF_CORE_READ(sb, s_magic);
		if ((magic == TMPFS_MAGIC || magic == HUGETLBFS_MAGIC) && name_starts_with_memfd(d))
			e->flags |= LG_FILE_MEMFD;
		w->d = (__u64)d;
		w->off = 0;
		w->complete = 0;
		w->off_d_parent = bpf_core_field_offset(struct dentry, d_parent);
		w->off_d_name_name = bpf_core_field_offset(struct dentry, d_name) +
				     bpf_core_field_offset(struct qstr, name);
		bpf_loop(LG_PATH_MAX / 2, file_walk_step, 0, 0);
		if (!w->complete)
			e->flags |= LG_FILE_PATH_TRUNCATED;
		e->names_len = w->off > LG_PATH_MAX ? LG_PATH_MAX : w->off;
	}
	submit_file(r);
}

/* True when this (file, other, op) went out less than FILE_REPEAT_NS ago with this mode;
 * otherwise records it as sent now. */
static __always_inline int repeated(struct inode *inode, __u64 other, __u32 op, __u32 mode)
{
	struct file_repeat_key k = {};
	k.ino = BPF_CORE_READ(inode, i_ino);
	k.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	k.other = other;
	k.op = op;
	__u64 now = bpf_ktime_get_ns();
	struct file_repeat *v = bpf_map_lookup_elem(&lg_file_repeat, &k);
	if (v && now - v->at < FILE_REPEAT_NS && v->mode == mode) {
		count(LG_STAT_FILE_REPEATS);
		return 1;
	}
	struct file_repeat nv = { .at = now, .mode = mode };
	bpf_map_update_elem(&lg_file_repeat, &k, &nv, BPF_ANY);
	return 0;
}

SEC("tp_btf/writeback_mark_inode_dirty")
int BPF_PROG(lg_file_dirty, struct inode *inode, int flags)
{
	if ((flags & ~I_DIRTY_TIME) == 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 mnt_ns = container_mnt_ns(task);
	if (!mnt_ns)
		return 0;
	__u32 mode = inode->i_mode;
	if ((mode & S_IFMT) != S_IFREG)
		return 0;
	count(LG_STAT_FILE_SEEN);
	/* A changed file is judged again when it is next mapped. */
	struct lg_file_id id = { .ino = inode->i_ino, .dev = inode->i_sb->s_dev };
	bpf_map_delete_elem(&lg_clean, &id);
	struct hlist_node *alias = BPF_CORE_READ(inode, i_dentry.first);
	if (!alias)
		return 0;
	struct dentry *d = (void *)alias - dentry_alias_offset();
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (!write_may_matter(mode, d, parent)) {
		count(LG_STAT_FILE_DATA);
		if (dir_news(mnt_ns, parent))
			send_file(task, mnt_ns, inode, LG_FILE_WRITE, flags, LG_FILE_DATA_DIR);
		return 0;
	}
	if (repeated(inode, (__u64)parent, LG_FILE_WRITE, mode))
		return 0;
	send_file(task, mnt_ns, inode, LG_FILE_WRITE, flags, 0);
	return 0;
}

static __always_inline void on_map_fault(struct address_space *mapping)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 mnt_ns = container_mnt_ns(task);
	if (!mnt_ns)
		return;
	struct inode *inode = mapping->host;
	if (!inode)
		return;
	__u32 mode = inode->i_mode;
	if ((mode & S_IFMT) != S_IFREG)
		return;
	/* The hot path of every page fault of a container's file mappings: direct BTF loads,
	 * one map lookup, one per-CPU count (LG_STAT_FILE_SEEN is not counted here). */
	struct lg_file_id id = { .ino = inode->i_ino, .dev = inode->i_sb->s_dev };
	struct lg_clean_inode *clean = bpf_map_lookup_elem(&lg_clean, &id);
	if (clean) {
		__s64 sec;
		__u32 nsec;
		if (bpf_core_field_exists(inode->i_ctime_sec)) {
			sec = inode->i_ctime_sec;
			nsec = inode->i_ctime_nsec & 0x7fffffff;
		} else {
			read_ctime(inode, &sec, &nsec);
		}
		if (clean->ctime_sec == sec && clean->ctime_nsec == nsec) {
			/* Per CPU only: a shared counter in the entry would bounce its cache line
			 * between CPUs on every fault of a library that all processes map. */
			count(LG_STAT_MAP_CLEAN_HITS);
			return;
		}
	}
	count(LG_STAT_FILE_SEEN);
	if (repeated(inode, task->tgid, LG_FILE_MAP, mode))
		return;
	send_file(task, mnt_ns, inode, LG_FILE_MAP, 0, 0);
}

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(lg_map_pages, struct address_space *mapping)
{
	on_map_fault(mapping);
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(lg_map_fault, struct address_space *mapping)
{
	on_map_fault(mapping);
	return 0;
}

/* io_uring requests of container tasks, per mount namespace (a container), bounded: the
 * daemon reads it for `status`. Their file operations pass no other hook of this sensor
 * in the submitter's context: counted, so the daemon can say how many went uninspected. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} lg_io_uring SEC(".maps");

static __always_inline int io_uring_seen(void)
{
	__u32 mnt_ns = container_mnt_ns(bpf_get_current_task_btf());
	if (!mnt_ns)
		return 0;
	count(LG_STAT_IO_URING);
	__u64 *n = bpf_map_lookup_elem(&lg_io_uring, &mnt_ns);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&lg_io_uring, &mnt_ns, &one, BPF_NOEXIST);
	}
	return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(lg_io_uring_submit)
{
	return io_uring_seen();
}

/* The same tracepoint before 6.3 (Debian bookworm's 6.1). */
SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(lg_io_uring_submit_sqe)
{
	return io_uring_seen();
}

/*
 * The opt-in syscall hooks (files.syscall_hooks = true): what the hooks above cannot see.
 * Rename, link and unlink dirty no inode through writeback, and an mprotect(PROT_EXEC) of
 * pages already faulted in faults nothing. One program on raw_syscalls:sys_exit, not
 * per-syscall tracepoints: any syscall tracepoint puts every syscall of every task on the
 * node on the tracing path (the price the README's bench reports), and one tp_btf program
 * needs no tracefs. It returns after one compare for every other syscall.
 *
 * x86_64 numbers and registers (arguments in di, si, dx, r10, r8; the number in orig_ax).
 */
#define NR_mmap 9
#define NR_mprotect 10
#define NR_rename 82
#define NR_link 86
#define NR_unlink 87
#define NR_unlinkat 263
#define NR_renameat 264
#define NR_linkat 265
#define NR_renameat2 316
#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define RENAME_EXCHANGE (1 << 1)
#define PROT_EXEC 0x4
#define REPEAT_EXEC_MAPPING 0x100	/* or'ed into a repeat key's op */

/* The directory a caller's relative path starts from: its cwd, or the file of dirfd. */
static __always_inline int base_dir(struct task_struct *task, long dirfd, struct path *out)
{
	if (dirfd == AT_FDCWD) {
		out->mnt = BPF_CORE_READ(task, fs, pwd.mnt);
		out->dentry = BPF_CORE_READ(task, fs, pwd.dentry);
		return out->dentry ? 0 : -1;
	}
	if (dirfd < 0)
		return -1;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || dirfd >= BPF_CORE_READ(fdt, max_fds))
		return -1;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), (void *)fds + dirfd * sizeof(f));
	if (!f)
		return -1;
	out->mnt = BPF_CORE_READ(f, f_path.mnt);
	out->dentry = BPF_CORE_READ(f, f_path.dentry);
	return out->dentry ? 0 : -1;
}

/* Sends a record for a name the caller passed (dirfd, user_path): op LG_FILE_LINKED or
 * LG_FILE_UNLINKED. The string is the caller's (another thread may have changed it since
 * the kernel read it: the daemon says the path is the caller's). */
static __always_inline void send_named(struct task_struct *task, __u32 mnt_ns, __u32 op, long dirfd,
				       const char *user_path)
{
	struct lg_file_record *r = file_record(task, mnt_ns, op);
	if (!r)
		return;
	struct lg_file_event *e = &r->event;
	e->flags = LG_FILE_CALLER_PATH;
	long n = bpf_probe_read_user_str(&r->names[0], LG_PATH_MAX, user_path);
	if (n <= 0) {
		count(LG_STAT_READ_ERRORS);
		return;
	}
	e->caller_len = n;
	__u32 len = n;
	if (r->names[0] != '/') {
		struct path base = {};
		__u32 cut = 0;
		if (base_dir(task, dirfd, &base) == 0)
			len += walk_path_into(len, base.mnt, base.dentry, task->fs, &cut, 1);
		else
			cut = 1;
		if (cut)
			e->flags |= LG_FILE_PATH_TRUNCATED;
	}
	e->names_len = len > LG_PATH_MAX ? LG_PATH_MAX : len;
	submit_file(r);
}

struct vma_probe {
	__u64 file;
	__u64 off_vm_file;	/* relocated in the main program (see struct path_walk) */
};

static long vma_file(struct task_struct *task, struct vm_area_struct *vma, void *ctx)
{
	struct vma_probe *p = ctx;
	p->file = read_ptr((__u64)vma, p->off_vm_file);
	return 0;
}

static __always_inline void exec_mapping_inode(struct task_struct *task, __u32 mnt_ns,
					       struct inode *inode);

/* A mapping made executable at `addr` (mmap or mprotect with PROT_EXEC): judged like a
 * fault in it, before any page of it is touched. */
static __always_inline void exec_mapping(struct task_struct *task, __u32 mnt_ns, __u64 addr)
{
	struct vma_probe p = { .off_vm_file = bpf_core_field_offset(struct vm_area_struct, vm_file) };
	if (bpf_find_vma(task, addr, vma_file, &p, 0) != 0 || !p.file)
		return;
	/* An offset, not BPF_CORE_READ on the number cast back to a pointer: aya 0.14 left
	 * that relocation poisoned. */
	struct inode *inode = (void *)read_ptr(p.file, bpf_core_field_offset(struct file, f_inode));
	exec_mapping_inode(task, mnt_ns, inode);
}

/* Judges a new executable mapping of `inode` (the real one, not an overlay inode): only
 * counted when the daemon judged it clean, else sent once per (file, process) a second. */
static __always_inline void exec_mapping_inode(struct task_struct *task, __u32 mnt_ns,
					       struct inode *inode)
{
	if (!inode)
		return;
	__u32 mode = BPF_CORE_READ(inode, i_mode);
	if ((mode & S_IFMT) != S_IFREG)
		return;
	struct lg_file_id id = { .ino = BPF_CORE_READ(inode, i_ino), .dev = BPF_CORE_READ(inode, i_sb, s_dev) };
	struct lg_clean_inode *clean = bpf_map_lookup_elem(&lg_clean, &id);
	if (clean) {
		__s64 sec;
		__u32 nsec;
		read_ctime(inode, &sec, &nsec);
		if (clean->ctime_sec == sec && clean->ctime_nsec == nsec) {
			count(LG_STAT_MAP_CLEAN_HITS);
			return;
		}
	}
	count(LG_STAT_FILE_SEEN);
	/* Its own repeat key: the faults that read the pages a moment ago (sent, and judged
	 * as data) must not hold back the news that they are now code. */
	if (repeated(inode, task->tgid, LG_FILE_MAP | REPEAT_EXEC_MAPPING, mode))
		return;
	send_file(task, mnt_ns, inode, LG_FILE_MAP, 0, 0);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(lg_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	switch (nr) {
	case NR_mmap:
	case NR_mprotect:
	case NR_rename:
	case NR_link:
	case NR_unlink:
	case NR_unlinkat:
	case NR_renameat:
	case NR_linkat:
	case NR_renameat2:
		break;
	default:
		return 0;
	}
	if (ret < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 mnt_ns = container_mnt_ns(task);
	if (!mnt_ns)
		return 0;
	count(LG_STAT_SYSCALLS);
	switch (nr) {
	case NR_mmap:
		if (regs->dx & PROT_EXEC)
			exec_mapping(task, mnt_ns, ret);
		break;
	case NR_mprotect:
		if (regs->dx & PROT_EXEC)
			exec_mapping(task, mnt_ns, regs->di);
		break;
	case NR_rename:
		send_named(task, mnt_ns, LG_FILE_UNLINKED, AT_FDCWD, (const char *)regs->di);
		send_named(task, mnt_ns, LG_FILE_LINKED, AT_FDCWD, (const char *)regs->si);
		break;
	case NR_renameat:
	case NR_renameat2: {
		/* RENAME_EXCHANGE swaps the two: both names point at new content. */
		__u32 from = nr == NR_renameat2 && (regs->r8 & RENAME_EXCHANGE) ? LG_FILE_LINKED
										: LG_FILE_UNLINKED;
		send_named(task, mnt_ns, from, (int)regs->di, (const char *)regs->si);
		send_named(task, mnt_ns, LG_FILE_LINKED, (int)regs->dx, (const char *)regs->r10);
		break;
	}
	case NR_link:
		send_named(task, mnt_ns, LG_FILE_LINKED, AT_FDCWD, (const char *)regs->si);
		break;
	case NR_linkat:
		send_named(task, mnt_ns, LG_FILE_LINKED, (int)regs->dx, (const char *)regs->r10);
		break;
	case NR_unlink:
		send_named(task, mnt_ns, LG_FILE_UNLINKED, AT_FDCWD, (const char *)regs->di);
		break;
	case NR_unlinkat:
		if (!(regs->dx & AT_REMOVEDIR))
			send_named(task, mnt_ns, LG_FILE_UNLINKED, (int)regs->di, (const char *)regs->si);
		break;
	}
	return 0;
}

/*
 * The kernel hooks (files.kernel_hooks): the same five LSM entry points, as fentry
 * programs or as BPF-LSM programs, where the kernel allows either (chosen at start, see
 * daemon/src/sensor/hooks.rs). They see, from the kernel's own pointers and at no cost to
 * syscalls that do not reach them, what the default tracepoints cannot:
 * - every executable mapping when it is made (security_mmap_file with PROT_EXEC: the
 *   kernel's mapping of a binary and its interpreter, ld.so's libraries, an LD_PRELOAD, a
 *   dlopen; security_file_mprotect: pages read as data, then made code), so the
 *   per-fault filemap tracepoints are left out (they also fire for data mappings);
 * - every rename, link and unlink, with the dentry and mount involved (security_path_*,
 *   which need CONFIG_SECURITY_PATH: Debian's kernels have it), named from them up to the
 *   task's root, so the path is the one the kernel resolved, not a string the caller may
 *   have changed since.
 * On overlayfs the mapped file is the overlay's (ovl_mmap swaps the layer's file in later):
 * its real inode is taken, as the filemap tracepoints and the lg_clean map see it.
 */
/* The layer's inode behind an overlay inode (the one the page cache, writeback and lg_clean
 * know), else the inode itself: any other filesystem's, or an unknown overlay layout. */
static __always_inline struct inode *layer_inode(struct inode *inode)
{
	if (BPF_CORE_READ(inode, i_sb, s_magic) != OVERLAYFS_SUPER_MAGIC)
		return inode;
	__u32 unused = 0;
	struct inode *layer = overlay_real_inode(inode, &unused);
	return layer ? layer : inode;
}

static __always_inline void kernel_hook_mapping(struct file *file)
{
	if (!file)
		return;
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 mnt_ns = container_mnt_ns(task);
	if (!mnt_ns)
		return;
	count(LG_STAT_KERNEL_HOOKS);
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	if (!inode)
		return;
	exec_mapping_inode(task, mnt_ns, layer_inode(inode));
}

/* A name that appeared (LG_FILE_LINKED) or went away (LG_FILE_UNLINKED) in `dir`: sent when
 * it names a regular file (`inode`) and may matter like a write (an exec bit, a library's
 * name, a watched directory), named by the kernel (LG_FILE_KERNEL_PATH). Directories and
 * symlinks are left out: the daemon judges regular files only. */
static __always_inline void kernel_hook_name(__u32 op, const struct path *dir, struct dentry *dentry,
					     struct inode *inode)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 mnt_ns = container_mnt_ns(task);
	if (!mnt_ns || !dir || !dentry)
		return;
	count(LG_STAT_KERNEL_HOOKS);
	if (!inode)
		return;
	__u32 mode = BPF_CORE_READ(inode, i_mode);
	if ((mode & S_IFMT) != S_IFREG)
		return;
	if (!write_may_matter(mode, dentry, BPF_CORE_READ(dentry, d_parent))) {
		count(LG_STAT_FILE_DATA);
		return;
	}
	struct lg_file_record *r = file_record(task, mnt_ns, op);
	if (!r)
		return;
	struct lg_file_event *e = &r->event;
	e->flags = LG_FILE_KERNEL_PATH;
	e->mode = mode;
	/* The hook runs before the kernel makes the change: the file's identity (its layer's
	 * inode) tells the daemon when the name holds it. */
	struct inode *real = layer_inode(inode);
	e->file.ino = BPF_CORE_READ(real, i_ino);
	e->file.dev = BPF_CORE_READ(real, i_sb, s_dev);
	__u32 cut = 0;
	__u32 len = walk_path_into(0, BPF_CORE_READ(dir, mnt), dentry, task->fs, &cut, 1);
	if (cut)
		e->flags |= LG_FILE_PATH_TRUNCATED;
	e->names_len = len > LG_PATH_MAX ? LG_PATH_MAX : len;
	submit_file(r);
}

/* RENAME_EXCHANGE swaps the two: both names point at new content. */
static __always_inline void kernel_hook_rename(const struct path *old_dir, struct dentry *old_dentry,
					       const struct path *new_dir, struct dentry *new_dentry,
					       unsigned int flags)
{
	struct inode *moved = BPF_CORE_READ(old_dentry, d_inode);
	if (flags & RENAME_EXCHANGE) {
		kernel_hook_name(LG_FILE_LINKED, old_dir, old_dentry, BPF_CORE_READ(new_dentry, d_inode));
	} else {
		kernel_hook_name(LG_FILE_UNLINKED, old_dir, old_dentry, moved);
	}
	kernel_hook_name(LG_FILE_LINKED, new_dir, new_dentry, moved);
}

/* Each hook twice, as fentry on the security_* function and as a BPF-LSM program on the
 * hook, with the same arguments (mmap_file's differ: below). `call` is parenthesised.
 * The LSM programs return 0: no objection (an earlier program's refusal has ended the
 * call before this one runs). */
#define LG_KERNEL_HOOK(hook, call, ...)                                   \
	SEC("fentry/security_" #hook)                                     \
	int BPF_PROG(lg_fentry_##hook, __VA_ARGS__)                        \
	{                                                                 \
		call;                                                     \
		return 0;                                                 \
	}                                                                 \
	SEC("lsm/" #hook)                                                 \
	int BPF_PROG(lg_lsm_##hook, __VA_ARGS__)                           \
	{                                                                 \
		call;                                                     \
		return 0;                                                 \
	}

LG_KERNEL_HOOK(file_mprotect, (prot & PROT_EXEC ? kernel_hook_mapping(BPF_CORE_READ(vma, vm_file)) : (void)0),
	       struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot)
LG_KERNEL_HOOK(path_rename, (kernel_hook_rename(old_dir, old_dentry, new_dir, new_dentry, flags)),
	       const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
	       struct dentry *new_dentry, unsigned int flags)
LG_KERNEL_HOOK(path_link, (kernel_hook_name(LG_FILE_LINKED, new_dir, new_dentry, BPF_CORE_READ(old_dentry, d_inode))),
	       struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry)
LG_KERNEL_HOOK(path_unlink, (kernel_hook_name(LG_FILE_UNLINKED, dir, dentry, BPF_CORE_READ(dentry, d_inode))),
	       const struct path *dir, struct dentry *dentry)

/* security_mmap_file(file, prot, flags); the LSM hook mmap_file(file, reqprot, prot, flags). */
SEC("fentry/security_mmap_file")
int BPF_PROG(lg_fentry_mmap_file, struct file *file, unsigned long prot)
{
	if (prot & PROT_EXEC)
		kernel_hook_mapping(file);
	return 0;
}

SEC("lsm/mmap_file")
int BPF_PROG(lg_lsm_mmap_file, struct file *file, unsigned long reqprot, unsigned long prot)
{
	if (prot & PROT_EXEC)
		kernel_hook_mapping(file);
	return 0;
}
