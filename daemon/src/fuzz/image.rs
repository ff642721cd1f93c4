//! The image parsers under fuzzing: layer blobs (sniffed compression, tar walking,
//! whiteouts, merging, lookups), the cache file decoder, and the manifest/index/config
//! parsers.
//!
//! The contract under test: any input returns (Ok or a typed error) without panicking,
//! without unbounded allocation, and without a path that leaves the image.

use std::sync::Arc;

use crate::image::digest::Digest;
use crate::image::index::LayerIndex;
use crate::image::layer::{scan_layer, ScanLimits};
use crate::image::oci::{
    parse_config, parse_index, parse_manifest, Descriptor, OCI_INDEX, OCI_MANIFEST,
};
use crate::image::tar::TarLimits;

/// Small limits so a fuzzer cannot spend its time inflating gigabytes.
fn fuzz_limits() -> ScanLimits {
    ScanLimits {
        max_uncompressed_bytes: 8 * 1024 * 1024,
        max_expansion_ratio: 1000,
        ratio_floor_bytes: 1024 * 1024,
        zstd_window_log_max: 20,
        tar: TarLimits {
            max_metadata_bytes: 64 * 1024,
            max_entries: 10_000,
            max_entry_bytes: 8 * 1024 * 1024,
        },
    }
}

/// Treats `data` as a layer blob: scan, merge it over itself, look every path up.
pub fn fuzz_layer(data: &[u8]) {
    let Ok(files) = scan_layer(
        data,
        Digest::of(data),
        data.len() as u64,
        &fuzz_limits(),
        Arc::default(),
        |_| {},
    ) else {
        return;
    };
    for change in &files.changes {
        if let crate::image::layer::Change::Add(entry) = change {
            assert!(
                !entry.path.starts_with('/'),
                "absolute path escaped: {:?}",
                entry.path
            );
            assert!(
                !entry
                    .path
                    .split('/')
                    .any(|c| c == ".." || c == "." || c.is_empty()),
                "non-canonical path escaped: {:?}",
                entry.path
            );
        }
    }
    let encoded = crate::image::cache::encode(&files);
    assert_eq!(
        crate::image::cache::decode(&encoded).as_ref(),
        Ok(&files),
        "cache round trip"
    );
    if let Ok(index) = LayerIndex::merge([&files, &files]) {
        for (path, _) in index.iter() {
            let _ = index.resolve(path, true);
            let _ = index.resolve(&format!("/{path}/../../x"), false);
        }
    }
}

/// Treats `data` as a cache file.
pub fn fuzz_cache_file(data: &[u8]) {
    let _ = crate::image::cache::decode(data);
}

/// Treats `data` as an index, a manifest and a config.
pub fn fuzz_metadata(data: &[u8]) {
    let desc = |media_type: &str| Descriptor {
        media_type: media_type.into(),
        digest: Digest::of(data),
        size: data.len() as u64,
        platform: None,
    };
    if let Ok(index) = parse_index(data, &desc(OCI_INDEX)) {
        let _ = crate::image::oci::select_manifest(&index, &crate::image::oci::Platform::host());
    }
    let _ = parse_manifest(data, &desc(OCI_MANIFEST));
    let _ = parse_config(data, Digest::of(data));
}

/// One input for all targets; the first byte picks the target so one corpus covers them.
pub fn fuzz_one(data: &[u8]) {
    match data.split_first() {
        Some((selector, rest)) => match selector % 3 {
            0 => fuzz_layer(rest),
            1 => fuzz_metadata(rest),
            _ => fuzz_cache_file(rest),
        },
        None => fuzz_layer(data),
    }
}

#[cfg(test)]
mod tests {
    use super::super::mutate::{mutate, Rng};
    use super::*;
    use crate::image::layer::scan_in_memory;
    use crate::image::tar::build::{header, seal, TarBuilder};

    fn seeds() -> Vec<Vec<u8>> {
        let tar = TarBuilder::new()
            .dir("./", 0o755)
            .dir("bin", 0o755)
            .file("bin/busybox", 0o755, b"#!busybox")
            .hardlink("bin/sh", "bin/busybox")
            .symlink("bin/ls", "../bin/./busybox")
            .symlink("loop", "loop")
            .pax(&[("path", b"very/long/pax/name"), ("size", b"3")])
            .file("x", 0o644, b"abc")
            .gnu_long(b'L', b"gnu/long/name")
            .file("y", 0o644, b"")
            .file("etc/.wh.motd", 0o644, b"")
            .file("opt/.wh..wh..opq", 0o644, b"")
            .finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let mut odd = header(b"f", b'0', 5, b"");
        odd[124] = 0x80;
        seal(&mut odd);
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            Digest::of(b"{}")
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            Digest::of(b"m")
        );
        let config = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            Digest::of(b"d")
        );
        let files = scan_in_memory(&tar).unwrap();
        let prefixed = |selector: u8, body: &[u8]| {
            let mut v = vec![selector];
            v.extend_from_slice(body);
            v
        };
        vec![
            prefixed(0, &tar),
            prefixed(0, &gz),
            prefixed(0, &zst),
            prefixed(0, &odd),
            prefixed(1, manifest.as_bytes()),
            prefixed(1, index.as_bytes()),
            prefixed(1, config.as_bytes()),
            prefixed(2, &crate::image::cache::encode(&files)),
        ]
    }

    /// Fixes the checksum of every block that looks like a ustar header, so mutations reach
    /// past the checksum test into the field parsers.
    fn reseal_headers(tar: &mut [u8]) {
        for block in tar.chunks_exact_mut(512) {
            if &block[257..262] == b"ustar" {
                let block: &mut [u8; 512] = block.try_into().unwrap();
                seal(block);
            }
        }
    }

    #[test]
    fn parsers_survive_thousands_of_mutated_inputs() {
        let seeds = seeds();
        for seed in &seeds {
            fuzz_one(seed);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let iterations = 4000;
        for i in 0..iterations {
            let mut input = seeds[i % seeds.len()].clone();
            // Tar header fields: size, typeflag, checksum, name, magic, prefix (+1 selector).
            mutate(&mut rng, &mut input, &[125, 157, 149, 1, 258, 346]);
            if input.first() == Some(&0) && rng.below(2) == 0 {
                reseal_headers(&mut input[1..]);
            }
            fuzz_one(&input);
        }
        // Pure noise too.
        for _ in 0..500 {
            let len = rng.below(4096);
            let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            fuzz_one(&noise);
        }
    }
}
