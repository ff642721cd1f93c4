//! Which kernel hook serves each file role, chosen at start from what the running kernel
//! allows: the table of every file program and what it serves ([`FILE_HOOKS`]), the
//! operator's preference (`files.kernel_hooks`), and the pure choice ([`choose`]) made
//! from the results of trying each family in turn.
//!
//! Owns no programs: the sensor attaches them (and unloads a family that did not attach
//! whole); this module only says which to try, in what order, and how to report what
//! came of it (the ready line's `file_hooks` and `file_hook_roles`, `status`).

use crate::config::KernelHooks;
use serde::Serialize;

/// How a program attaches: its ELF section prefix tells the loader the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `tp_btf`: a BTF tracepoint outside `syscalls/`, free for unrelated syscalls.
    Tracepoint,
    /// `tp_btf/sys_exit`: on every syscall of every task (`files.syscall_hooks`).
    Syscall,
    /// `fentry` on an LSM entry point (`security_*`).
    Fentry,
    /// A BPF-LSM program on the same hook (needs `bpf` in the kernel's LSM list).
    Lsm,
}

impl Family {
    /// The section prefix, as `programs` lists it (`fentry/security_mmap_file`).
    pub fn section(self) -> &'static str {
        match self {
            Family::Tracepoint | Family::Syscall => "tp_btf",
            Family::Fentry => "fentry",
            Family::Lsm => "lsm",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Tracepoint => "tracepoints",
            Family::Syscall => "syscalls",
            Family::Fentry => "fentry",
            Family::Lsm => "lsm",
        }
    }
}

/// What a file program is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Creates, writes, truncates, chmods (writeback).
    Writes,
    /// Executable mappings: libraries, `LD_PRELOAD`, memfd code, `mprotect(PROT_EXEC)`.
    Mappings,
    /// Rename, link and unlink.
    Names,
    /// io_uring submissions, counted per container.
    IoUring,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Writes, Role::Mappings, Role::Names, Role::IoUring];

    pub fn name(self) -> &'static str {
        match self {
            Role::Writes => "writes",
            Role::Mappings => "mappings",
            Role::Names => "names",
            Role::IoUring => "io_uring",
        }
    }
}

/// One program of the sensor object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// Its name in the object (`ebpf/sensor.bpf.c`).
    pub program: &'static str,
    pub family: Family,
    /// The tracepoint, function or LSM hook it attaches to.
    pub target: &'static str,
    pub roles: &'static [Role],
}

impl Hook {
    /// `fentry/security_mmap_file`.
    pub fn attach_point(&self) -> String {
        format!("{}/{}", self.family.section(), self.target)
    }
}

const fn hook(
    program: &'static str,
    family: Family,
    target: &'static str,
    roles: &'static [Role],
) -> Hook {
    Hook {
        program,
        family,
        target,
        roles,
    }
}

use Family::{Fentry, Lsm, Syscall, Tracepoint};
use Role::{IoUring, Mappings, Names, Writes};

/// Every file program. The tracepoints for writes and io_uring are always wanted (no
/// other hook sees a write in the writer's context as cheaply); mappings and names go to
/// the first kernel family that attaches whole, else to the tracepoints (mappings) and
/// the syscall hook when asked (both). io_uring's tracepoint was `io_uring_submit_sqe`
/// before 6.3 (Debian bookworm's 6.1): whichever the kernel has is attached.
pub const FILE_HOOKS: [Hook; 16] = [
    hook(
        "lg_file_dirty",
        Tracepoint,
        "writeback_mark_inode_dirty",
        &[Writes],
    ),
    hook(
        "lg_io_uring_submit",
        Tracepoint,
        "io_uring_submit_req",
        &[IoUring],
    ),
    hook(
        "lg_io_uring_submit_sqe",
        Tracepoint,
        "io_uring_submit_sqe",
        &[IoUring],
    ),
    hook(
        "lg_map_pages",
        Tracepoint,
        "mm_filemap_map_pages",
        &[Mappings],
    ),
    hook("lg_map_fault", Tracepoint, "mm_filemap_fault", &[Mappings]),
    hook("lg_sys_exit", Syscall, "sys_exit", &[Mappings, Names]),
    hook(
        "lg_fentry_mmap_file",
        Fentry,
        "security_mmap_file",
        &[Mappings],
    ),
    hook(
        "lg_fentry_file_mprotect",
        Fentry,
        "security_file_mprotect",
        &[Mappings],
    ),
    hook(
        "lg_fentry_path_rename",
        Fentry,
        "security_path_rename",
        &[Names],
    ),
    hook(
        "lg_fentry_path_link",
        Fentry,
        "security_path_link",
        &[Names],
    ),
    hook(
        "lg_fentry_path_unlink",
        Fentry,
        "security_path_unlink",
        &[Names],
    ),
    hook("lg_lsm_mmap_file", Lsm, "mmap_file", &[Mappings]),
    hook("lg_lsm_file_mprotect", Lsm, "file_mprotect", &[Mappings]),
    hook("lg_lsm_path_rename", Lsm, "path_rename", &[Names]),
    hook("lg_lsm_path_link", Lsm, "path_link", &[Names]),
    hook("lg_lsm_path_unlink", Lsm, "path_unlink", &[Names]),
];

/// The programs of one family.
pub fn family(f: Family) -> impl Iterator<Item = &'static Hook> {
    FILE_HOOKS.iter().filter(move |h| h.family == f)
}

/// The families to try for mappings and names, best first.
pub fn preference(choice: KernelHooks) -> &'static [Family] {
    match choice {
        KernelHooks::Auto => &[Fentry, Lsm],
        KernelHooks::Fentry => &[Fentry],
        KernelHooks::Lsm => &[Lsm],
        KernelHooks::Tracepoints => &[],
    }
}

/// What came of trying the kernel families.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelChoice {
    /// The family that serves mappings and names, if one attached whole.
    pub family: Option<Family>,
    /// The families tried before it, or instead of it, and why each was not used.
    pub refused: Vec<(Family, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("files.kernel_hooks = \"{asked}\": {why}")]
pub struct KernelHooksError {
    pub asked: &'static str,
    pub why: String,
}

/// Tries each family of the preference in order with `attach` (which attaches all of its
/// programs or none, and says why not), skipping BPF-LSM when the kernel's LSM list lacks
/// it. A family the operator insisted on (`fentry`, `lsm`) that does not attach is an
/// error; under `auto` the tracepoints remain.
pub fn choose(
    choice: KernelHooks,
    bpf_lsm_active: bool,
    mut attach: impl FnMut(Family) -> Result<(), String>,
) -> Result<KernelChoice, KernelHooksError> {
    let mut out = KernelChoice::default();
    for &f in preference(choice) {
        let tried = if f == Lsm && !bpf_lsm_active {
            Err("the BPF LSM is not active (no `bpf` in /sys/kernel/security/lsm)".to_string())
        } else {
            attach(f)
        };
        match tried {
            Ok(()) => {
                out.family = Some(f);
                return Ok(out);
            }
            Err(why) => out.refused.push((f, why)),
        }
    }
    if let (KernelHooks::Fentry | KernelHooks::Lsm, Some((f, why))) = (choice, out.refused.last()) {
        return Err(KernelHooksError {
            asked: f.name(),
            why: why.clone(),
        });
    }
    Ok(out)
}

/// Whether the fallbacks for mappings and names are wanted: the filemap tracepoints when
/// no kernel family serves mappings; the syscall hook only when asked and no kernel family
/// serves both of its roles.
pub fn wants_fallback(hook: &Hook, kernel: Option<Family>, syscall_hooks: bool) -> bool {
    match hook.family {
        Tracepoint => !(kernel.is_some() && hook.roles == [Mappings]),
        Syscall => syscall_hooks && kernel.is_none(),
        Fentry | Lsm => false,
    }
}

/// The one-word summary in the ready line and `status` (`files.hooks`):
/// `fentry+tracepoints`, `lsm+tracepoints`, `tracepoints+syscalls`, `tracepoints`, `none`.
pub fn summary(attached: &[&Hook]) -> String {
    let has = |f: Family| attached.iter().any(|h| h.family == f);
    let mut parts = Vec::new();
    for f in [Fentry, Lsm, Tracepoint, Syscall] {
        if has(f) {
            parts.push(f.name());
        }
    }
    if parts.is_empty() {
        return "none".into();
    }
    parts.join("+")
}

/// What serves one role, for the ready line and `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleHooks {
    pub role: Role,
    /// Attach points (`fentry/security_mmap_file`); empty when nothing sees the role.
    pub hooks: Vec<String>,
}

/// Per role, the attach points of the attached programs that serve it.
pub fn roles(attached: &[&Hook]) -> Vec<RoleHooks> {
    Role::ALL
        .iter()
        .map(|&role| RoleHooks {
            role,
            hooks: attached
                .iter()
                .filter(|h| h.roles.contains(&role))
                .map(|h| h.attach_point())
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(kernel: Option<Family>, syscalls: bool) -> Vec<&'static Hook> {
        FILE_HOOKS
            .iter()
            .filter(|h| Some(h.family) == kernel || wants_fallback(h, kernel, syscalls))
            .collect()
    }

    #[test]
    fn auto_takes_fentry_first_then_lsm_then_keeps_the_tracepoints() {
        let mut tried = Vec::new();
        let c = choose(KernelHooks::Auto, true, |f| {
            tried.push(f);
            Ok(())
        })
        .unwrap();
        assert_eq!((c.family, tried), (Some(Fentry), vec![Fentry]));

        let c = choose(KernelHooks::Auto, true, |f| match f {
            Fentry => Err("load: Operation not permitted".into()),
            _ => Ok(()),
        })
        .unwrap();
        assert_eq!(c.family, Some(Lsm));
        assert_eq!(c.refused[0].0, Fentry);

        // This machine: fentry refused, no BPF LSM: the tracepoints, and both reasons.
        let mut tried = Vec::new();
        let c = choose(KernelHooks::Auto, false, |f| {
            tried.push(f);
            Err("load: Operation not permitted".into())
        })
        .unwrap();
        assert_eq!(c.family, None);
        assert_eq!(tried, vec![Fentry], "LSM is not tried when inactive");
        assert!(c.refused[1].1.contains("not active"), "{c:?}");
    }

    #[test]
    fn an_insisted_family_that_does_not_attach_is_an_error_saying_why() {
        let e = choose(KernelHooks::Fentry, true, |_| Err("load: EPERM".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "files.kernel_hooks = \"fentry\": load: EPERM"
        );
        let e = choose(KernelHooks::Lsm, false, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("BPF LSM is not active"), "{e}");
        let c = choose(KernelHooks::Tracepoints, true, |_| panic!("not tried")).unwrap();
        assert_eq!(c, KernelChoice::default());
    }

    #[test]
    fn a_kernel_family_replaces_the_filemap_tracepoints_and_the_syscall_hook() {
        let with_fentry = attached(Some(Fentry), true);
        assert_eq!(summary(&with_fentry), "fentry+tracepoints");
        let points: Vec<String> = with_fentry.iter().map(|h| h.attach_point()).collect();
        assert!(points.contains(&"tp_btf/writeback_mark_inode_dirty".to_string()));
        assert!(
            !points.iter().any(|p| p.contains("mm_filemap")),
            "{points:?}"
        );
        assert!(!points.iter().any(|p| p.contains("sys_exit")), "{points:?}");
        let r = roles(&with_fentry);
        assert_eq!(
            r[1].hooks,
            ["fentry/security_mmap_file", "fentry/security_file_mprotect"]
        );
        assert_eq!(r[2].hooks.len(), 3);

        let plain = attached(None, false);
        assert_eq!(summary(&plain), "tracepoints");
        assert!(roles(&plain)[2].hooks.is_empty(), "no hook sees names");
        assert_eq!(summary(&attached(None, true)), "tracepoints+syscalls");
        assert_eq!(summary(&attached(Some(Lsm), false)), "lsm+tracepoints");
        assert_eq!(summary(&[]), "none");
    }

    #[test]
    fn both_kernel_families_have_the_same_hooks() {
        let targets = |f| {
            family(f)
                .map(|h| (h.roles, h.target.trim_start_matches("security_")))
                .collect::<Vec<_>>()
        };
        assert_eq!(targets(Fentry), targets(Lsm));
        assert_eq!(family(Fentry).count(), 5);
    }
}
