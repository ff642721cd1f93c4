//! Where a container's files are on the host: the overlayfs layers of its root mount (the
//! writable upper directory and the read-only lower ones, from `/proc/PID/mountinfo`),
//! and which layer, at which container path, a file the kernel named belongs to.
//!
//! Pure parsing and matching; reading mountinfo is the caller's. The kernel names a file
//! from the root of the filesystem that holds it, which is the host's `/` only when the
//! snapshots live on the root filesystem, so a name is matched against a layer directory
//! by the directory's trailing components (at least `snapshots/N/fs`), and the caller
//! checks the inode at the host path it gives.

use std::path::{Path, PathBuf};

/// Which layer of the container a file is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// The container's writable layer.
    Upper,
    /// A read-only image layer; 0 is the topmost.
    Lower(usize),
}

/// A file located in a container's layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub layer: Layer,
    /// The path inside the container (`/etc/passwd`).
    pub path: String,
    /// The file on the host (for evidence).
    pub host: PathBuf,
    /// The layer directory it is in: what it is read beneath.
    pub layer_dir: PathBuf,
}

/// The layers of one container's root filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerLayers {
    pub upper: Option<PathBuf>,
    pub lowers: Vec<PathBuf>,
}

/// Components a layer directory must share with a name at least: `snapshots/N/fs` for
/// containerd's overlayfs snapshotter, so that two layers cannot be confused by a
/// common last name (`fs`).
const MIN_SHARED_COMPONENTS: usize = 3;

impl ContainerLayers {
    /// The root mount's layers in a `/proc/PID/mountinfo`, if `/` is an overlay.
    pub fn from_mountinfo(mountinfo: &str) -> Option<Self> {
        mountinfo.lines().find_map(parse_root_overlay)
    }

    /// Where `kernel_path` (a file's names up to its filesystem's root, `/`-joined) is in
    /// these layers, or `None` when it is in none of them.
    pub fn locate(&self, kernel_path: &str) -> Option<Located> {
        let names: Vec<&str> = kernel_path.split('/').filter(|c| !c.is_empty()).collect();
        let layers = self.upper.iter().map(|u| (Layer::Upper, u)).chain(
            self.lowers
                .iter()
                .enumerate()
                .map(|(i, l)| (Layer::Lower(i), l)),
        );
        for (layer, dir) in layers {
            if let Some(rest) = strip_layer(dir, &names) {
                let path = format!("/{}", rest.join("/"));
                let host = rest.iter().fold(dir.clone(), |p, c| p.join(c));
                return Some(Located {
                    layer,
                    path,
                    host,
                    layer_dir: dir.clone(),
                });
            }
        }
        None
    }
}

/// The names after the layer directory `dir` in `names`, when `names` starts with the
/// directory's trailing components (all of them, or at least [`MIN_SHARED_COMPONENTS`]).
fn strip_layer<'a>(dir: &Path, names: &'a [&'a str]) -> Option<&'a [&'a str]> {
    let dir: Vec<&str> = dir.to_str()?.split('/').filter(|c| !c.is_empty()).collect();
    // The longest tail of dir that names start with: the filesystem root may sit
    // anywhere above the layer directory.
    for skip in 0..dir.len() {
        let tail = &dir[skip..];
        if tail.len() < MIN_SHARED_COMPONENTS && skip > 0 {
            return None;
        }
        if names.len() > tail.len() && names[..tail.len()] == *tail {
            return Some(&names[tail.len()..]);
        }
    }
    None
}

/// A mountinfo line's layers, if it is the overlay mounted at `/`.
fn parse_root_overlay(line: &str) -> Option<ContainerLayers> {
    let (mount, fs) = line.split_once(" - ")?;
    let mount_point = mount.split(' ').nth(4)?;
    let mut fs = fs.split(' ');
    if mount_point != "/" || fs.next()? != "overlay" {
        return None;
    }
    let options = fs.nth(1)?;
    let mut layers = ContainerLayers::default();
    let mut relative = Vec::new();
    for option in split_options(options) {
        if let Some(v) = option.strip_prefix("upperdir=") {
            layers.upper = Some(PathBuf::from(unescape(v)));
        } else if let Some(v) = option.strip_prefix("lowerdir=") {
            relative.extend(split_lowers(v));
        } else if let Some(v) = option.strip_prefix("lowerdir+=") {
            relative.push(unescape(v));
        }
    }
    // containerd passes lower directories relative to the snapshots directory when the
    // absolute list would not fit in a page; the upper directory is always absolute.
    let snapshots = layers
        .upper
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent);
    for l in relative {
        let p = PathBuf::from(&l);
        layers.lowers.push(match (p.is_relative(), snapshots) {
            (true, Some(base)) => base.join(p),
            _ => p,
        });
    }
    Some(layers)
}

/// Splits super options on commas that are not escaped.
fn split_options(options: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in options.char_indices() {
        match c {
            '\\' => escaped = !escaped,
            ',' if !escaped => {
                out.push(&options[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    out.push(&options[start..]);
    out
}

/// Splits `lowerdir=` on `:` that is not escaped (`\:` is a colon in a name).
fn split_lowers(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                cur.push(':');
                chars.next();
            }
            ':' => out.push(unescape(&std::mem::take(&mut cur))),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(unescape(&cur));
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAP: &str = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";

    fn mountinfo(options: &str) -> String {
        format!(
            "1234 1200 0:77 / / rw,relatime master:1 - overlay overlay rw,{options}\n\
             1235 1234 0:5 / /proc rw,nosuid - proc proc rw\n"
        )
    }

    #[test]
    fn the_root_overlay_gives_the_layers_absolute_or_relative() {
        let m = mountinfo(&format!(
            "lowerdir={SNAP}/3/fs:{SNAP}/2/fs,upperdir={SNAP}/9/fs,workdir={SNAP}/9/work"
        ));
        let l = ContainerLayers::from_mountinfo(&m).unwrap();
        assert_eq!(l.upper, Some(PathBuf::from(format!("{SNAP}/9/fs"))));
        assert_eq!(
            l.lowers,
            vec![
                PathBuf::from(format!("{SNAP}/3/fs")),
                PathBuf::from(format!("{SNAP}/2/fs"))
            ]
        );
        let m = mountinfo(&format!(
            "lowerdir=3/fs:2/fs,upperdir={SNAP}/9/fs,workdir={SNAP}/9/work"
        ));
        let l = ContainerLayers::from_mountinfo(&m).unwrap();
        assert_eq!(l.lowers[1], PathBuf::from(format!("{SNAP}/2/fs")));
        assert!(ContainerLayers::from_mountinfo("1 0 8:1 / / rw - ext4 /dev/vda rw\n").is_none());
    }

    #[test]
    fn escapes_in_mountinfo_are_undone() {
        let m = mountinfo("lowerdir=/a\\040b/fs:/c\\:d/fs,upperdir=/u/x/fs,workdir=/u/x/work");
        let l = ContainerLayers::from_mountinfo(&m).unwrap();
        assert_eq!(
            l.lowers,
            vec![PathBuf::from("/a b/fs"), PathBuf::from("/c:d/fs")]
        );
    }

    #[test]
    fn names_are_located_in_their_layer_wherever_the_filesystem_root_is() {
        let l = ContainerLayers {
            upper: Some(PathBuf::from(format!("{SNAP}/9/fs"))),
            lowers: vec![PathBuf::from(format!("{SNAP}/3/fs"))],
        };
        let up = l.locate(&format!("{SNAP}/9/fs/etc/passwd")).unwrap();
        assert_eq!(up.layer, Layer::Upper);
        assert_eq!(up.path, "/etc/passwd");
        assert_eq!(up.host, PathBuf::from(format!("{SNAP}/9/fs/etc/passwd")));
        // Snapshots on their own filesystem, mounted at /var/lib/containerd.
        let low = l
            .locate("/io.containerd.snapshotter.v1.overlayfs/snapshots/3/fs/usr/lib/libc.so.6")
            .unwrap();
        assert_eq!(low.layer, Layer::Lower(0));
        assert_eq!(low.path, "/usr/lib/libc.so.6");
        assert_eq!(
            low.host,
            PathBuf::from(format!("{SNAP}/3/fs/usr/lib/libc.so.6"))
        );
        // Another snapshot, the work directory, a bare `fs/...`: none of these layers.
        assert!(l.locate(&format!("{SNAP}/4/fs/etc/passwd")).is_none());
        assert!(l.locate(&format!("{SNAP}/9/work/work/#12")).is_none());
        assert!(l.locate("/fs/etc/passwd").is_none());
        // The layer directory itself is no file of the container.
        assert!(l.locate(&format!("{SNAP}/9/fs")).is_none());
    }
}
