//! Writes the tests' busybox image (the host's static busybox, see `busybox_image`) as an
//! OCI archive that `ctr images import` takes: for tests that run outside this process,
//! such as the VM test (tests/vm), whose guest imports it into its own containerd. A
//! second layer has the file tests' dynamically linked programs (`programs::dynamic_layer`:
//! `dyn_hello`, `libhelper.so`, a tampered copy as data, `memfd_dlopen`,
//! `read_then_exec`, the host's ld.so and libc) and an `/etc/passwd`, so that the guest
//! can map libraries and remove a sensitive image file.
//!
//! Usage: busybox-oci-archive REFERENCE OUT.tar

use anyhow::{bail, Context, Result};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [reference, out] = args.as_slice() else {
        bail!("usage: busybox-oci-archive REFERENCE OUT.tar");
    };
    if let Some(dir) = Path::new(out)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    layerguard_tests::busybox_image(reference)?
        .layer(layerguard_tests::programs::dynamic_layer().file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\n",
            0o644,
        ))
        .build()
        .context("building the busybox image")?
        .write_oci_archive(Path::new(out))
        .with_context(|| format!("writing {out}"))?;
    Ok(())
}
