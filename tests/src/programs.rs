//! The static C programs the integration tests run inside containers, in one place: their
//! sources (`tests/c/`, and `bench/c/tiny.c` which the benches share), how each is built,
//! and where tests put them in an image.
//!
//! Builds go through [`build_static_c`], cached by content, so every test file and test
//! thread gets the same bytes for the same program.

use std::path::PathBuf;

use crate::{build_static_c, build_static_c_with_flags, Layer};

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
