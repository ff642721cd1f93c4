//! Where overlayfs keeps an inode's upper and lower dentries on this kernel, read at start
//! from BTF and handed to the sensor's globals (`ovl_*` in sensor.bpf.c).
//!
//! Owns only the lookup and the choice of layout; it must not guess offsets. CO-RE cannot
//! do this: overlayfs is a module on Debian's kernels, its types are in the module's split
//! BTF, and aya 0.14 relocates against vmlinux only (the access is poisoned and the exec
//! program refused). Without a layout the sensor still runs; execs on overlayfs then carry
//! the overlay inode instead of the layer's, and the reason is in the ready line.

use super::btf_layout::{BtfLayouts, StructLayout};

/// Where the overlay module's BTF is while the module is loaded.
pub const OVERLAY_MODULE_BTF: &str = "/sys/kernel/btf/overlay";

/// The offsets the sensor reads an overlay inode with (bytes). `layout` as in the C:
/// 1 = the inode points to an `ovl_entry` holding the lower stack (6.5+), 2 = the inode
/// embeds its first lower path (before 6.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayLayout {
    pub layout: u32,
    pub vfs_inode: u32,
    pub upper: u32,
    pub oe: u32,
    pub numlower: u32,
    pub lowerstack: u32,
    pub lowerpath: u32,
    pub path_dentry: u32,
}

impl OverlayLayout {
    /// What `check` and the ready line say of it.
    pub fn describe(&self) -> &'static str {
        match self.layout {
            1 => "6.5+ layout (ovl_inode.oe)",
            2 => "pre-6.5 layout (ovl_inode.lowerpath)",
            _ => "unknown",
        }
    }

    /// The layout of the running kernel: from the overlay module's BTF when the module is
    /// loaded, else from vmlinux's (overlayfs built in). The error says why there is none.
    pub fn of_running_kernel(vmlinux: &[u8]) -> Result<Self, String> {
        match std::fs::read(OVERLAY_MODULE_BTF) {
            Ok(module) => {
                let types = BtfLayouts::parse_split(&module, vmlinux)
                    .map_err(|e| format!("{OVERLAY_MODULE_BTF}: {e}"))?;
                Self::from_types(|name| types.get(name))
                    .map_err(|e| format!("{OVERLAY_MODULE_BTF}: {e}"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let types = BtfLayouts::parse(vmlinux).map_err(|e| format!("vmlinux BTF: {e}"))?;
                if types.get("ovl_inode").is_none() {
                    return Err(format!(
                        "overlayfs is neither built in nor loaded ({OVERLAY_MODULE_BTF} absent): \
                         `modprobe overlay` before the daemon starts (containerd loads it with \
                         its first container)"
                    ));
                }
                Self::from_types(|name| types.get(name)).map_err(|e| format!("vmlinux BTF: {e}"))
            }
            Err(e) => Err(format!("reading {OVERLAY_MODULE_BTF}: {e}")),
        }
    }

    /// The layout from the struct layouts of `ovl_inode`, `ovl_entry` and `ovl_path`.
    pub fn from_types<'a>(get: impl Fn(&str) -> Option<&'a StructLayout>) -> Result<Self, String> {
        let member = |s: &'a StructLayout, sname: &str, m: &str| -> Result<u32, String> {
            s.members
                .iter()
                .find(|x| x.name == m)
                .map(|x| x.offset_bytes as u32)
                .ok_or_else(|| format!("struct {sname} has no member {m}"))
        };
        let has = |s: &StructLayout, m: &str| s.members.iter().any(|x| x.name == m);
        let inode = get("ovl_inode").ok_or("no struct ovl_inode")?;
        let path = get("ovl_path").ok_or("no struct ovl_path")?;
        let mut l = OverlayLayout {
            vfs_inode: member(inode, "ovl_inode", "vfs_inode")?,
            upper: member(inode, "ovl_inode", "__upperdentry")?,
            path_dentry: member(path, "ovl_path", "dentry")?,
            ..Default::default()
        };
        if has(inode, "oe") {
            let entry = get("ovl_entry").ok_or("no struct ovl_entry")?;
            l.layout = 1;
            l.oe = member(inode, "ovl_inode", "oe")?;
            l.numlower = member(entry, "ovl_entry", "__numlower")?;
            l.lowerstack = member(entry, "ovl_entry", "__lowerstack")?;
        } else if has(inode, "lowerpath") {
            l.layout = 2;
            l.lowerpath = member(inode, "ovl_inode", "lowerpath")?;
        } else {
            return Err("struct ovl_inode has neither oe (6.5+) nor lowerpath (older)".into());
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::btf_layout::MemberLayout;

    fn layout(members: &[(&str, usize)]) -> StructLayout {
        StructLayout {
            size: 0,
            members: members
                .iter()
                .map(|&(name, offset_bytes)| MemberLayout {
                    name: name.into(),
                    offset_bytes,
                })
                .collect(),
        }
    }

    #[test]
    fn the_6_5_layout_reads_the_lower_stack_through_oe() {
        let inode = layout(&[
            ("redirect", 8),
            ("vfs_inode", 32),
            ("__upperdentry", 700),
            ("oe", 708),
        ]);
        let entry = layout(&[("__numlower", 0), ("__lowerstack", 8)]);
        let path = layout(&[("layer", 0), ("dentry", 8)]);
        let l = OverlayLayout::from_types(|n| match n {
            "ovl_inode" => Some(&inode),
            "ovl_entry" => Some(&entry),
            "ovl_path" => Some(&path),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            l,
            OverlayLayout {
                layout: 1,
                vfs_inode: 32,
                upper: 700,
                oe: 708,
                numlower: 0,
                lowerstack: 8,
                lowerpath: 0,
                path_dentry: 8
            }
        );
    }

    #[test]
    fn the_6_1_layout_reads_the_embedded_lower_path() {
        let inode = layout(&[
            ("vfs_inode", 40),
            ("__upperdentry", 640),
            ("lowerpath", 648),
        ]);
        let path = layout(&[("layer", 0), ("dentry", 8)]);
        let l = OverlayLayout::from_types(|n| match n {
            "ovl_inode" => Some(&inode),
            "ovl_path" => Some(&path),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            (l.layout, l.lowerpath, l.upper, l.path_dentry),
            (2, 648, 640, 8)
        );
    }

    #[test]
    fn an_unknown_layout_is_refused_with_the_reason() {
        let inode = layout(&[("vfs_inode", 40), ("__upperdentry", 640)]);
        let path = layout(&[("dentry", 8)]);
        let err = OverlayLayout::from_types(|n| match n {
            "ovl_inode" => Some(&inode),
            "ovl_path" => Some(&path),
            _ => None,
        })
        .unwrap_err();
        assert!(err.contains("neither oe"), "{err}");
        assert!(OverlayLayout::from_types(|_| None)
            .unwrap_err()
            .contains("ovl_inode"));
    }

    /// This machine's kernel: whichever BTF has overlayfs, its layout is one we know.
    #[test]
    fn the_running_kernel_has_a_known_layout_when_overlayfs_is_there() {
        let Ok(vmlinux) = std::fs::read(crate::sensor::preflight::VMLINUX_BTF) else {
            panic!("no vmlinux BTF on this machine");
        };
        match OverlayLayout::of_running_kernel(&vmlinux) {
            Ok(l) => assert!(l.layout == 1 || l.layout == 2, "{l:?}"),
            Err(e) => assert!(e.contains("neither built in nor loaded"), "{e}"),
        }
    }
}
