/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The few kernel types the sensor reads, declared with only the fields it touches.
 * preserve_access_index makes every access a CO-RE relocation, so the loader fixes the
 * offsets against the running kernel's BTF; field names (not positions) are what count.
 * Anonymous unions mirror the kernel's where a field lives inside one.
 */
#ifndef LAYERGUARD_KERNEL_H
#define LAYERGUARD_KERNEL_H

#include <linux/types.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef int pid_t;
typedef __u32 dev_t;
typedef unsigned short umode_t;
typedef long long loff_t;
typedef long long time64_t;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct super_block {
	dev_t s_dev;
	unsigned long s_magic;
};

struct timespec64 {
	time64_t tv_sec;
	long tv_nsec;
};

struct hlist_node {
	struct hlist_node *next;
};

struct hlist_head {
	struct hlist_node *first;
};

struct inode {
	umode_t i_mode;
	struct super_block *i_sb;
	unsigned long i_ino;
	union {
		const unsigned int i_nlink;
		unsigned int __i_nlink;
	};
	loff_t i_size;
	time64_t i_ctime_sec;	/* kernels >= 6.11 */
	u32 i_ctime_nsec;
	struct timespec64 __i_ctime;	/* kernels 6.6 - 6.10 */
	struct timespec64 i_ctime;	/* kernels before 6.6 (Debian bookworm's 6.1) */
	union {
		struct hlist_head i_dentry;	/* the dentries that name it (d_u.d_alias) */
	};
};

struct qstr {
	const unsigned char *name;
};

struct dentry {
	struct dentry *d_parent;
	union {
		struct qstr __d_name;
		const struct qstr d_name;
	};
	struct inode *d_inode;
	union {
		struct hlist_node d_alias;
	} d_u;
};

/* Since 7.x (Debian's 7.3) the alias list node is in an anonymous union: no `d_u`. CO-RE
 * matches this flavor only there (anonymous members are looked through, named ones not). */
struct dentry___anon_u {
	union {
		struct hlist_node d_alias;
	};
};

struct vfsmount {
	struct dentry *mnt_root;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

/* The mount a vfsmount is embedded in: how a path walk crosses to the parent mount. */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct fs_struct {
	struct path root;
	struct path pwd;
};

struct file {
	struct inode *f_inode;
	union {
		const struct path f_path;
		struct path __f_path;
	};
};

/* The page cache of a file; a mapping fault names it, host is the file's inode. */
struct address_space {
	struct inode *host;
};

struct ns_common {
	unsigned int inum;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct pid_namespace {
	struct ns_common ns;
};

struct nsproxy {
	struct mnt_namespace *mnt_ns;
	struct pid_namespace *pid_ns_for_children;
};

struct mm_struct {
	struct {
		unsigned long arg_start;
		unsigned long arg_end;
	};
};

/* A task's open files: how a dirfd leads to its struct file (files->fdt->fd[fd]). */
struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	pid_t pid;
	pid_t tgid;
	int exit_code;
	struct task_struct *real_parent;
	struct nsproxy *nsproxy;
	struct mm_struct *mm;
	struct fs_struct *fs;
	struct files_struct *files;
};

/* A mapping; on overlayfs vm_file is the layer's real file (ovl_mmap swaps it in). */
struct vm_area_struct {
	struct file *vm_file;
};

/* The user registers saved at syscall entry (x86_64): the syscall's number and arguments
 * are still there at its exit. */
struct pt_regs {
	unsigned long r10;
	unsigned long r8;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
};

struct linux_binprm {
	struct file *file;
	const char *filename;
	const char *interp;
	int argc;
};

#pragma clang attribute pop

#endif
