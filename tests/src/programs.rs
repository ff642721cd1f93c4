//! The static C programs the integration tests run inside containers, in one place: their
//! sources (`tests/c/`, and `bench/c/tiny.c` which the benches share), how each is built,
//! and where tests put them in an image.
//!
//! Builds go through [`build_static_c`], cached by content, so every test file and test
//! thread gets the same bytes for the same program.

use std::path::PathBuf;

use crate::{build_dynamic_c, build_static_c, build_static_c_with_flags, Layer};

/// `memfd_exec PROG ARGS...`: copies PROG into a memfd and `fexecve`s it (a fileless exec).
pub const MEMFD_EXEC_C: &str = include_str!("../c/memfd_exec.c");
/// `tiny`: exits 0 at once. `-DTAG=...` changes its bytes, not what it does.
pub const TINY_C: &str = include_str!("../../bench/c/tiny.c");

/// Where [`programs_layer`] puts `tiny` in the image.
pub const TINY: &str = "/usr/local/bin/tiny";
/// Where [`programs_layer`] puts `memfd_exec` in the image.
pub const MEMFD_EXEC: &str = "/usr/local/bin/memfd_exec";

/// The built `tiny`.
pub fn tiny() -> PathBuf {
    build_static_c("tiny", TINY_C).expect("build tiny")
}

/// A `tiny` with other bytes (another tag), for "the file was replaced" cases.
pub fn tiny_other() -> PathBuf {
    let other = build_static_c_with_flags("tiny_other", TINY_C, &["-DTAG=\"other\""])
        .expect("build tiny_other");
    assert_ne!(
        std::fs::read(tiny()).expect("read tiny"),
        std::fs::read(&other).expect("read tiny_other"),
        "tiny_other must differ from tiny"
    );
    other
}

/// `uring_nop N`: submits N io_uring NOP requests (raw syscalls) and waits for them.
pub const URING_NOP_C: &str = include_str!("../c/uring_nop.c");
/// Where tests put `uring_nop` in an image.
pub const URING_NOP: &str = "/usr/local/bin/uring_nop";

/// The built `uring_nop`.
pub fn uring_nop() -> PathBuf {
    build_static_c("uring_nop", URING_NOP_C).expect("build uring_nop")
}

/// The built `memfd_exec`.
pub fn memfd_exec() -> PathBuf {
    build_static_c("memfd_exec", MEMFD_EXEC_C).expect("build memfd_exec")
}

/// A layer with [`TINY`] and [`MEMFD_EXEC`], executable.
pub fn programs_layer() -> Layer {
    Layer::new()
        .file_from_host(MEMFD_EXEC, memfd_exec(), 0o755)
        .file_from_host(TINY, tiny(), 0o755)
}

/// `libhelper.so` (see `tests/c/libhelper.c`); `-DTAG=...` for a tampered copy.
pub const LIBHELPER_C: &str = include_str!("../c/libhelper.c");
/// `dyn_hello [LIB]`: dynamically linked against libc and libhelper.so.
pub const DYN_HELLO_C: &str = include_str!("../c/dyn_hello.c");
/// `memfd_dlopen LIB [SECONDS]`: maps LIB's code from a memfd.
pub const MEMFD_DLOPEN_C: &str = include_str!("../c/memfd_dlopen.c");

/// `read_then_exec FILE [SECONDS]`: maps FILE as data, reads it, then mprotects it
/// executable.
pub const READ_THEN_EXEC_C: &str = include_str!("../c/read_then_exec.c");

/// Where [`dynamic_layer`] puts things in the image.
pub const DYN_HELLO: &str = "/usr/bin/dyn_hello";
pub const LIBHELPER: &str = "/usr/lib/x86_64-linux-gnu/libhelper.so";
pub const MEMFD_DLOPEN: &str = "/usr/local/bin/memfd_dlopen";
pub const READ_THEN_EXEC: &str = "/usr/local/bin/read_then_exec";
/// A tampered libhelper.so the image carries as plain data (mode 0644, off the library
/// path), for tests to copy where it does harm.
pub const EVIL_LIBHELPER: &str = "/opt/payload/libhelper-evil.so";

/// The built `libhelper.so` (`tag`: what it prints; another tag, other bytes).
pub fn libhelper(tag: &str) -> PathBuf {
    let name = format!("libhelper-{tag}");
    let lib = build_dynamic_c(
        &format!("{name}.so"),
        LIBHELPER_C,
        &["-shared", "-fPIC", &format!("-DTAG=\"{tag}\"")],
    )
    .expect("build libhelper.so");
    // The link name the program is built against.
    let dir = lib.parent().unwrap().join("link");
    std::fs::create_dir_all(&dir).expect("libhelper link dir");
    let link = dir.join("libhelper.so");
    if !link.exists() {
        let _ = std::fs::copy(&lib, &link);
    }
    lib
}

/// The built `dyn_hello`, linked against [`libhelper`]`("helper")`.
pub fn dyn_hello() -> PathBuf {
    let lib = libhelper("helper");
    let dir = lib.parent().unwrap().join("link");
    build_dynamic_c(
        "dyn_hello",
        DYN_HELLO_C,
        &[&format!("-L{}", dir.display()), "-lhelper"],
    )
    .expect("build dyn_hello")
}

/// The built `memfd_dlopen`.
pub fn memfd_dlopen() -> PathBuf {
    build_dynamic_c("memfd_dlopen", MEMFD_DLOPEN_C, &[]).expect("build memfd_dlopen")
}

/// The built `read_then_exec`.
pub fn read_then_exec() -> PathBuf {
    build_dynamic_c("read_then_exec", READ_THEN_EXEC_C, &[]).expect("build read_then_exec")
}

/// The host's dynamic loader and libc, at the paths the programs look for them.
fn loader_and_libc(layer: Layer) -> Layer {
    let real = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    layer
        .file_from_host(
            "/lib64/ld-linux-x86-64.so.2",
            real("/lib64/ld-linux-x86-64.so.2"),
            0o755,
        )
        .file_from_host(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            real("/lib/x86_64-linux-gnu/libc.so.6"),
            0o755,
        )
}

/// A layer with dynamically linked programs: [`DYN_HELLO`], [`MEMFD_DLOPEN`] and
/// [`READ_THEN_EXEC`] with the host's ld.so and libc, [`LIBHELPER`], and
/// [`EVIL_LIBHELPER`] as data.
pub fn dynamic_layer() -> Layer {
    loader_and_libc(Layer::new())
        .file_from_host(DYN_HELLO, dyn_hello(), 0o755)
        .file_from_host(MEMFD_DLOPEN, memfd_dlopen(), 0o755)
        .file_from_host(READ_THEN_EXEC, read_then_exec(), 0o755)
        .file_from_host(LIBHELPER, libhelper("helper"), 0o755)
        .file_from_host(EVIL_LIBHELPER, libhelper("evil"), 0o644)
}
