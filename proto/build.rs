//! Compiles `layerguard/v1/*.proto` with tonic-prost-build (client and server) and writes
//! the file descriptor set that the daemon's reflection service serves.
//!
//! Needs `protoc` and the well-known types (`google/protobuf/timestamp.proto`): Debian's
//! `protobuf-compiler` and `libprotobuf-dev`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "layerguard/v1/alerts.proto",
    "layerguard/v1/containers.proto",
    "layerguard/v1/status.proto",
    "layerguard/v1/response.proto",
    "layerguard/v1/baseline.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        // Ordered maps: the same message always encodes to the same bytes (alerts are
        // encoded once and shared by every subscriber), and CLI output is stable.
        .btree_map(".")
        .file_descriptor_set_path(out.join("layerguard_v1_descriptor.bin"))
        .compile_protos(PROTOS, &["."])
        .map_err(|e| {
            format!(
                "compiling layerguard.v1 protos: {e} (needs protoc and the well-known types: \
                 apt-get install protobuf-compiler libprotobuf-dev)"
            )
        })?;
    Ok(())
}
