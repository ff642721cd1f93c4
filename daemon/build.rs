//! Compiles the C eBPF sensor with clang so the daemon can embed it.
//!
//! Rust eBPF (aya-ebpf) needs rust-src and bpf-linker, which the hosts we build on do not
//! have; clang + libbpf headers are Debian packages.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../ebpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("sensor.bpf.o");
    for f in ["sensor.bpf.c", "layerguard.h", "kernel.h"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(f).display());
    }
    let clang = std::env::var("LAYERGUARD_CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=LAYERGUARD_CLANG");
    // linux/bpf.h pulls in asm/types.h, which Debian keeps under the multiarch directory.
    let multiarch = Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".to_string());
    let status = Command::new(&clang)
        .args([
            "-target",
            "bpf",
            "-O2",
            "-g",
            "-Wall",
            "-Werror",
            "-D__TARGET_ARCH_x86",
        ])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-I")
        .arg(&ebpf)
        .arg("-c")
        .arg(ebpf.join("sensor.bpf.c"))
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile ebpf/sensor.bpf.c ({s}); see its messages above"),
        Err(e) => panic!(
            "cannot run `{clang}` to compile the eBPF sensor: {e}. Install clang and libbpf-dev \
             (`sudo make deps`)"
        ),
    }
}
