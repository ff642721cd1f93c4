//! What the kernel and the process offer, checked before anything is loaded.
//!
//! Owns the one-sentence explanations for a host that cannot run the sensor, and the
//! report of optional extras (fentry, BPF LSM) so that later stages can use them where
//! present; the design never depends on them.

use serde::Serialize;
use std::path::Path;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "the daemon must run as root (it needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN to load \
         its eBPF sensor); run it with sudo"
    )]
    NotPrivileged,
    #[error(
        "this kernel exposes no BTF at {VMLINUX_BTF} (it needs CONFIG_DEBUG_INFO_BTF=y), so the \
         CO-RE sensor cannot be loaded"
    )]
    NoBtf,
}

/// Optional kernel features, reported at start and in the status API.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KernelFeatures {
    pub kernel_release: String,
    pub btf: bool,
    /// The BPF LSM is in the active LSM list (not needed; a possible future extra).
    pub bpf_lsm: bool,
    /// The lockdown mode (`none`, `integrity`, `confidentiality`) if the kernel has one.
    pub lockdown: Option<String>,
    /// Whether the kernel attaches fentry programs, probed when the sensor loads:
    /// `available ...`, or `refused: ` and why.
    pub fentry: String,
    /// How the sensor finds the layer file under an overlay inode: `6.5+ layout
    /// (ovl_inode.oe)`, `pre-6.5 layout (ovl_inode.lowerpath)`, or `unknown: ` and why.
    pub overlay: String,
    /// File-program tracepoints this kernel does not have (e.g. `mm_filemap_map_pages`
    /// before 6.2): their programs are not attached, the rest run.
    pub absent_tracepoints: Vec<String>,
}

pub fn check() -> Result<KernelFeatures, PreflightError> {
    if !privileged() {
        return Err(PreflightError::NotPrivileged);
    }
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(PreflightError::NoBtf);
    }
    Ok(KernelFeatures {
        kernel_release: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
        btf: true,
        bpf_lsm: read_trim("/sys/kernel/security/lsm")
            .map(|l| l.split(',').any(|m| m == "bpf"))
            .unwrap_or(false),
        lockdown: read_trim("/sys/kernel/security/lockdown").and_then(|l| {
            // The active mode is the bracketed one: "none [integrity] confidentiality".
            l.split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
        }),
        fentry: "not probed".into(),
        overlay: "not read".into(),
        absent_tracepoints: Vec::new(),
    })
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn privileged() -> bool {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) && has(CAP_BPF) && has(CAP_PERFMON)
}
