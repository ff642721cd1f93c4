//! Integration-test harness for layerguard.
//!
//! Gives privileged tests a real container host in miniature: a private containerd per test
//! ([`PrivateContainerd`]), OCI images built in Rust and imported without a registry
//! ([`ImageBuilder`], [`busybox_image`]), containers driven through `ctr` ([`Container`]),
//! the daemon under test as a child process with parsed JSON logs ([`DaemonProcess`]),
//! static C helpers for exec corner cases ([`build_static_c`], [`programs`]), and all of it
//! put together as one test's host ([`node::TestNode`]), which every test file that runs
//! the daemon builds on.
//!
//! Everything here needs root and is meant for `tests/tests/*.rs` and the benches. Test
//! helpers panic with context; library functions return `anyhow::Result`.
//!
//! Things a test author should know (containerd 1.6.20, runc 1.1.5, measured here):
//! - `cargo test -p layerguard-tests` does not build the daemon: build it first, or set
//!   `LAYERGUARD_BIN` (the Makefile does).
//! - Containers live in cgroup `/layerguard-tests/<instance>/<ns>/<id>` (not ctr's default
//!   `/<ns>/<id>`), so instances never share a freezer; the last component is still the id.
//! - `ctr images import FILE` (no flags beyond `--snapshotter overlayfs`) imports an OCI
//!   archive named by the `io.containerd.image.name` index annotation and unpacks it.
//!   Unpacking checks each layer against the config's `rootfs.diff_ids` and fails the
//!   import on a mismatch; `BuiltImage::import_packed` (`--no-unpack`) skips that.
//! - containerd's overlayfs applier extracts a layer into the bare upper dir, so a hard link
//!   must point at a file of the same layer; whiteouts become 0/0 char devices on disk.
//! - The committed snapshot of image layer `i` is keyed by `BuiltImage::layers[i].chain_id`;
//!   a container's host dirs come from [`Container::lower_dirs`] / [`Container::upper_dir`].
//! - Shim sockets land in `/run/containerd/s/` whatever the config says (hard-coded in the
//!   1.6 shim); teardown removes ours.

pub mod container;
pub mod containerd;
pub mod cosign;
pub mod daemon;
pub mod node;
pub mod oci;
pub mod programs;
pub mod util;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use container::{container_view, unique_id, Container, OverlayMount, RunOptions, ViewEntry};
pub use containerd::{cleanup_stale, Ctr, PrivateContainerd};
pub use daemon::{daemon_binary, run_args, run_refused_start, DaemonProcess, Line, Stream};
pub use oci::{
    busybox_image, busybox_layer, overlay_test_image, BuiltImage, BuiltLayer, Compression,
    ImageBuilder, Layer, MergedFile, MergedKind,
};
pub use util::mounts_under;

/// A compile of a small static C file takes well under a second; this only catches a hang.
const GCC_TIMEOUT: Duration = Duration::from_secs(120);

/// Panics unless running as root. The tests start containerd, mount overlayfs and load
/// eBPF; skipping silently would report green for checks that never ran.
pub fn require_root() {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "layerguard integration tests must run as root (euid is {euid}): they start containerd, \
         mount overlayfs and load eBPF. Run e.g. `sudo -E cargo test -p layerguard-tests`."
    );
}

/// Compiles `source` with `gcc -static -O2` and returns the binary's path. Binaries are
/// cached by content under `$TMPDIR/layerguard-tests-cbin/<hash>/<name>`, so tests running
/// in parallel and later runs reuse them; the rename makes concurrent builds safe.
pub fn build_static_c(name: &str, source: &str) -> Result<PathBuf> {
    build_static_c_with_flags(name, source, &[])
}

/// [`build_static_c`] with extra gcc flags (e.g. `-lpthread`, `-DN=4`).
pub fn build_static_c_with_flags(name: &str, source: &str, flags: &[&str]) -> Result<PathBuf> {
    build_c(name, source, &["-static"], flags)
}

/// A dynamically linked C build (`gcc -O2 -Wall SOURCE FLAGS`, `-shared -fPIC` for a
/// library), cached like [`build_static_c`]. Flags may name other built files (`-L`).
pub fn build_dynamic_c(name: &str, source: &str, flags: &[&str]) -> Result<PathBuf> {
    build_c(name, source, &[], flags)
}

fn build_c(name: &str, source: &str, link: &[&str], flags: &[&str]) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') {
        bail!("binary name {name:?} must be a plain file name");
    }
    let key = format!(
        "{name}\0{source}\0{}\0{}",
        link.join("\0"),
        flags.join("\0")
    );
    let hash = util::sha256_hex(key.as_bytes());
    let dir = std::env::temp_dir()
        .join("layerguard-tests-cbin")
        .join(&hash[..16]);
    let out = dir.join(name);
    if out.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let unique = format!("{}.{}", std::process::id(), unique_id("c"));
    let src = dir.join(format!("{name}.{unique}.c"));
    let tmp_bin = dir.join(format!("{name}.{unique}.tmp"));
    fs::write(&src, source).with_context(|| format!("writing {}", src.display()))?;
    let mut cmd = Command::new("gcc");
    cmd.args(link)
        .args(["-O2", "-Wall", "-o"])
        .arg(&tmp_bin)
        .arg(&src)
        .args(flags);
    let result = util::run_with_timeout(&mut cmd, GCC_TIMEOUT)
        .context("running gcc (apt-get install -y build-essential)");
    let _ = fs::remove_file(&src);
    let output = result?;
    if !output.status.success() {
        let _ = fs::remove_file(&tmp_bin);
        bail!(
            "gcc {} failed for {name}:\n{}",
            link.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::rename(&tmp_bin, &out).with_context(|| format!("installing {}", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_c_builds_runs_and_is_cached() {
        let src = "#include <stdio.h>\nint main(void) { puts(\"hi from static c\"); return 0; }\n";
        let bin = build_static_c("hello", src).unwrap();
        let out = Command::new(&bin).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from static c\n");
        assert_eq!(build_static_c("hello", src).unwrap(), bin);
        assert!(build_static_c("bad", "int main(void) { return nope; }").is_err());
    }
}
