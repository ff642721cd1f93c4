//! The chain of trust end to end against an in-memory content store: every media type, every
//! way a blob can fail to verify, the layer cache, and deduplication.

use std::io::Write;
use std::sync::Arc;

use super::content::MemoryStore;
use super::digest::Digest;
use super::index::EntryKind;
use super::indexer::{ImageIndexer, ImageVerdict, IndexReport, IndexerConfig, Untrusted};
use super::oci::{
    Descriptor, Platform, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG,
    OCI_INDEX, OCI_MANIFEST,
};
use super::progress::Progress;
use super::tar::build::TarBuilder;

const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

#[derive(Clone, Copy)]
enum Pack {
    Plain,
    Gzip,
    Zstd,
}

fn pack(tar: &[u8], how: Pack, docker: bool) -> (Vec<u8>, &'static str) {
    match how {
        Pack::Plain => (tar.to_vec(), OCI_TAR),
        Pack::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(tar).unwrap();
            (
                e.finish().unwrap(),
                if docker { DOCKER_GZIP } else { OCI_GZIP },
            )
        }
        Pack::Zstd => (zstd::encode_all(tar, 3).unwrap(), OCI_ZSTD),
    }
}

struct Built {
    target: Descriptor,
    manifest: Digest,
    config: Digest,
    layers: Vec<Digest>,
}

#[derive(Default)]
struct Options {
    docker: bool,
    /// Wrap the manifest in an index beside other platforms.
    index: bool,
    /// Replace the diff_id of this layer in the config.
    wrong_diff_id: Option<usize>,
    /// Drop the last diff_id from the config.
    missing_diff_id: bool,
    layer_media_type: Option<&'static str>,
}

fn descriptor_json(
    media_type: &str,
    digest: Digest,
    size: usize,
    platform: Option<&str>,
) -> String {
    let platform = platform
        .map(|p| format!(r#","platform":{p}"#))
        .unwrap_or_default();
    format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{size}{platform}}}"#)
}

fn put_image(store: &MemoryStore, tars: &[(Vec<u8>, Pack)], options: Options) -> Built {
    let mut layer_json = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for (tar, how) in tars {
        let (blob, media_type) = pack(tar, *how, options.docker);
        let media_type = options.layer_media_type.unwrap_or(media_type);
        let size = blob.len();
        let digest = store.put(blob);
        layers.push(digest);
        layer_json.push(descriptor_json(media_type, digest, size, None));
        diff_ids.push(format!("\"{}\"", Digest::of(tar)));
    }
    if let Some(i) = options.wrong_diff_id {
        diff_ids[i] = format!("\"{}\"", Digest::of(b"not this layer"));
    }
    if options.missing_diff_id {
        diff_ids.pop();
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let (manifest_type, config_type, index_type) = if options.docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_MANIFEST_LIST)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_INDEX)
    };
    let config_size = config.len();
    let config_digest = store.put(config.into_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{manifest_type}","config":{},"layers":[{}]}}"#,
        descriptor_json(config_type, config_digest, config_size, None),
        layer_json.join(",")
    );
    let manifest_size = manifest.len();
    let manifest_digest = store.put(manifest.into_bytes());
    let mut target = Descriptor {
        media_type: manifest_type.into(),
        digest: manifest_digest,
        size: manifest_size as u64,
        platform: None,
    };
    if options.index {
        // Other platforms point at blobs that are not in the store, as after a real pull.
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{index_type}","manifests":[{},{},{}]}}"#,
            descriptor_json(
                manifest_type,
                Digest::of(b"arm"),
                10,
                Some(r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#)
            ),
            descriptor_json(
                manifest_type,
                manifest_digest,
                manifest_size,
                Some(r#"{"os":"linux","architecture":"amd64"}"#)
            ),
            descriptor_json(
                manifest_type,
                Digest::of(b"att"),
                10,
                Some(r#"{"os":"unknown","architecture":"unknown"}"#)
            ),
        );
        let size = index.len() as u64;
        target = Descriptor {
            media_type: index_type.into(),
            digest: store.put(index.into_bytes()),
            size,
            platform: None,
        };
    }
    Built {
        target,
        manifest: manifest_digest,
        config: config_digest,
        layers,
    }
}

fn base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("bin", 0o755)
        .file("bin/busybox", 0o755, b"busybox")
        .hardlink("bin/sh", "bin/busybox")
        .symlink("bin/ls", "busybox")
        .dir("etc", 0o755)
        .file("etc/motd", 0o644, b"hi")
        .finish()
}

fn app_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("app", 0o755)
        .file("app/run", 0o755, b"#!/bin/sh\nexec app\n")
        .file("etc/.wh.motd", 0o644, b"")
        .finish()
}

struct Setup {
    store: MemoryStore,
    _state: tempfile::TempDir,
    config: IndexerConfig,
}

fn setup() -> Setup {
    let state = tempfile::tempdir().unwrap();
    let mut config = IndexerConfig::new(state.path());
    config.platform = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    };
    Setup {
        store: MemoryStore::new(),
        _state: state,
        config,
    }
}

impl Setup {
    fn indexer(&self, trust_cache: bool) -> ImageIndexer<MemoryStore> {
        let mut config = self.config.clone();
        config.trust_layer_cache = trust_cache;
        ImageIndexer::new(self.store.clone(), config).unwrap()
    }

    async fn run(&self, target: &Descriptor, trust_cache: bool) -> IndexReport {
        self.indexer(trust_cache)
            .index(target, Progress::new())
            .await
            .unwrap()
    }
}

fn untrusted(report: &IndexReport) -> &Untrusted {
    match &report.verdict {
        ImageVerdict::Untrusted { reason } => reason,
        ImageVerdict::Verified(_) => panic!("expected untrusted, got verified"),
    }
}

fn verified(report: &IndexReport) -> &super::index::LayerIndex {
    match &report.verdict {
        ImageVerdict::Verified(index) => index,
        ImageVerdict::Untrusted { reason } => panic!("expected verified, got: {reason}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_index_with_every_compression_verifies() {
    let s = setup();
    let extra = TarBuilder::new()
        .file("extra", 0o644, b"zstd layer")
        .finish();
    let built = put_image(
        &s.store,
        &[
            (base_tar(), Pack::Gzip),
            (app_tar(), Pack::Plain),
            (extra, Pack::Zstd),
        ],
        Options {
            index: true,
            ..Options::default()
        },
    );
    let report = s.run(&built.target, false).await;
    let index = verified(&report);
    assert_eq!(report.manifest, Some(built.manifest));
    assert_eq!(report.config, Some(built.config));
    assert_eq!(
        (
            report.layers_total,
            report.layers_verified,
            report.layers_from_cache
        ),
        (3, 3, 0)
    );
    assert_eq!(index.layers(), &built.layers[..]);
    let sh = index.lookup("/bin/sh").unwrap();
    assert_eq!(sh.sha256, Some(Digest::of(b"busybox")));
    assert!(matches!(sh.kind, EntryKind::HardLink { .. }));
    assert_eq!(
        index.lookup("/bin/ls").unwrap().sha256,
        Some(Digest::of(b"busybox"))
    );
    assert!(index.lookup("/etc/motd").is_none(), "whited out");
    assert_eq!(index.lookup("/app/run").unwrap().layer, built.layers[1]);
    assert_eq!(report.stats.executables, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_v2_manifest_list_verifies() {
    let s = setup();
    let built = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip)],
        Options {
            docker: true,
            index: true,
            ..Options::default()
        },
    );
    verified(&s.run(&built.target, false).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_a_layer_blob_names_the_layer_and_both_digests() {
    let s = setup();
    let built = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip), (app_tar(), Pack::Gzip)],
        Options::default(),
    );
    let layer = built.layers[1];
    let mut blob = s.store.get(&layer).unwrap().to_vec();
    let middle = blob.len() / 2;
    blob[middle] ^= 0x01;
    let actual = Digest::of(&blob);
    s.store.put_as(layer, blob);
    let report = s.run(&built.target, false).await;
    assert_eq!(
        untrusted(&report),
        &Untrusted::DigestMismatch {
            what: "layer 2 blob".into(),
            digest: layer,
            expected: layer,
            actual,
        }
    );
    let text = untrusted(&report).to_string();
    assert!(
        text.contains(&layer.to_string()) && text.contains(&actual.to_string()),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_diff_id_mismatch_is_untrusted() {
    let s = setup();
    let built = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip), (app_tar(), Pack::Gzip)],
        Options {
            wrong_diff_id: Some(0),
            ..Options::default()
        },
    );
    match untrusted(&s.run(&built.target, false).await) {
        Untrusted::DiffIdMismatch {
            layer_number,
            layer,
            expected,
            actual,
        } => {
            assert_eq!(*layer_number, 1);
            assert_eq!(*layer, built.layers[0]);
            assert_eq!(*expected, Digest::of(b"not this layer"));
            assert_eq!(*actual, Digest::of(&base_tar()));
        }
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metadata_blob_is_verified() {
    let s = setup();
    let built = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip)],
        Options {
            index: true,
            ..Options::default()
        },
    );
    for (digest, what) in [
        (built.target.digest, "index"),
        (built.manifest, "manifest"),
        (built.config, "config"),
    ] {
        let original = s.store.get(&digest).unwrap().to_vec();
        let mut tampered = original.clone();
        tampered[5] ^= 0x20;
        s.store.put_as(digest, tampered.clone());
        match untrusted(&s.run(&built.target, false).await) {
            Untrusted::DigestMismatch {
                what: w,
                expected,
                actual,
                ..
            } => {
                assert_eq!(w, what);
                assert_eq!(*expected, digest);
                assert_eq!(*actual, Digest::of(&tampered));
            }
            other => panic!("{what}: {other}"),
        }
        // A blob of the wrong size is caught before hashing.
        let mut longer = original.clone();
        longer.push(b' ');
        s.store.put_as(digest, longer);
        assert!(matches!(
            untrusted(&s.run(&built.target, false).await),
            Untrusted::SizeMismatch { .. }
        ));
        s.store.put_as(digest, original);
    }
    verified(&s.run(&built.target, false).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structural_problems_are_untrusted_with_reasons() {
    let s = setup();
    let count = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip), (app_tar(), Pack::Gzip)],
        Options {
            missing_diff_id: true,
            ..Options::default()
        },
    );
    assert!(matches!(
        untrusted(&s.run(&count.target, false).await),
        Untrusted::DiffIdCount {
            layers: 2,
            diff_ids: 1,
            ..
        }
    ));

    let encrypted = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip)],
        Options {
            layer_media_type: Some("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            ..Options::default()
        },
    );
    assert!(matches!(
        untrusted(&s.run(&encrypted.target, false).await),
        Untrusted::UnsupportedMediaType { .. }
    ));

    let missing = put_image(
        &s.store,
        &[(base_tar(), Pack::Plain), (app_tar(), Pack::Zstd)],
        Options::default(),
    );
    s.store.put_as(missing.layers[1], Vec::new());
    let empty = untrusted(&s.run(&missing.target, false).await).clone();
    assert!(
        matches!(empty, Untrusted::SizeMismatch { actual: 0, .. }),
        "{empty}"
    );

    let hostile = put_image(
        &s.store,
        &[(
            TarBuilder::new()
                .file("../../etc/cron.d/x", 0o644, b"x")
                .finish(),
            Pack::Gzip,
        )],
        Options::default(),
    );
    let reason = untrusted(&s.run(&hostile.target, false).await).to_string();
    assert!(
        reason.contains("layer 1") && reason.contains("../../etc/cron.d/x"),
        "{reason}"
    );

    let mut arm = s.config.clone();
    arm.platform.architecture = "s390x".into();
    let indexed = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip)],
        Options {
            index: true,
            ..Options::default()
        },
    );
    let report = ImageIndexer::new(s.store.clone(), arm)
        .unwrap()
        .index(&indexed.target, Progress::new())
        .await
        .unwrap();
    assert!(matches!(
        untrusted(&report),
        Untrusted::NoMatchingPlatform { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_layer_blob_is_untrusted() {
    let s = setup();
    let built = put_image(&s.store, &[(base_tar(), Pack::Gzip)], Options::default());
    let other = MemoryStore::new();
    for digest in [built.manifest, built.config] {
        other.put(s.store.get(&digest).unwrap().to_vec());
    }
    let report = ImageIndexer::new(other, s.config.clone())
        .unwrap()
        .index(&built.target, Progress::new())
        .await
        .unwrap();
    assert_eq!(
        untrusted(&report),
        &Untrusted::BlobMissing {
            what: "layer 1 blob".into(),
            digest: built.layers[0]
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_cache_is_shared_between_images_and_rebuilt_when_corrupt() {
    let s = setup();
    let first = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip), (app_tar(), Pack::Gzip)],
        Options::default(),
    );
    let cold = s.run(&first.target, true).await;
    assert_eq!(cold.layers_from_cache, 0);
    let warm = s.run(&first.target, true).await;
    assert_eq!(warm.layers_from_cache, 2);
    match (&cold.verdict, &warm.verdict) {
        (ImageVerdict::Verified(a), ImageVerdict::Verified(b)) => assert_eq!(a, b),
        _ => panic!("both runs must verify"),
    }

    // A second image on the same base: only its own layer is read.
    let other_top = TarBuilder::new().file("other", 0o755, b"other").finish();
    let second = put_image(
        &s.store,
        &[(base_tar(), Pack::Gzip), (other_top, Pack::Gzip)],
        Options::default(),
    );
    let report = s.run(&second.target, true).await;
    verified(&report);
    assert_eq!(report.layers_from_cache, 1);

    // Corrupt the base layer's cache file: detected, rebuilt from the blob, still verified.
    let indexer = s.indexer(true);
    let path = indexer.cache().path_of(&first.layers[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let rebuilt = indexer.index(&first.target, Progress::new()).await.unwrap();
    verified(&rebuilt);
    assert_eq!(rebuilt.layers_from_cache, 1);
    assert!(
        indexer.cache().load(&first.layers[0]).unwrap().is_some(),
        "rewritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_cache_skips_blobs_but_full_mode_rereads_them() {
    let s = setup();
    let built = put_image(&s.store, &[(base_tar(), Pack::Gzip)], Options::default());
    verified(&s.run(&built.target, true).await);
    let mut blob = s.store.get(&built.layers[0]).unwrap().to_vec();
    blob[20] ^= 1;
    s.store.put_as(built.layers[0], blob);
    // The daemon's fast path trusts what it verified before; `image verify` does not.
    verified(&s.run(&built.target, true).await);
    assert!(matches!(
        untrusted(&s.run(&built.target, false).await),
        Untrusted::DigestMismatch { .. }
    ));
    // ...and a failed full check drops the cache entry, so the fast path re-reads the blob.
    assert!(matches!(
        untrusted(&s.run(&built.target, true).await),
        Untrusted::DigestMismatch { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_image_share_one_run() {
    let s = setup();
    let big = TarBuilder::new()
        .file("big", 0o644, &vec![7u8; 8 << 20])
        .finish();
    let built = put_image(
        &s.store,
        &[(big, Pack::Gzip), (app_tar(), Pack::Gzip)],
        Options::default(),
    );
    let opens_before = s.store.open_count();
    let indexer = s.indexer(false);
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let indexer = indexer.clone();
            let target = built.target.clone();
            tokio::spawn(async move { indexer.index(&target, Progress::new()).await })
        })
        .collect();
    let mut indexes = Vec::new();
    for run in runs {
        let report = run.await.unwrap().unwrap();
        indexes.push(Arc::clone(match &report.verdict {
            ImageVerdict::Verified(index) => index,
            ImageVerdict::Untrusted { reason } => panic!("{reason}"),
        }));
    }
    // manifest + config + 2 layers, once.
    assert_eq!(s.store.open_count() - opens_before, 4);
    assert!(indexes.iter().all(|i| Arc::ptr_eq(i, &indexes[0])));
}

/// Hand-made hostile layers: each must make the image untrusted with a reason naming the
/// layer (number and digest) and the offending entry, and nothing may panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layer_corpus_is_untrusted_with_layer_and_entry_named() {
    use super::tar::build::{header, seal};
    let mut absurd = header(b"absurd", b'0', 0, b"");
    absurd[124] = 0x80;
    absurd[128..136].copy_from_slice(&(1u64 << 62).to_be_bytes());
    seal(&mut absurd);
    let mut bad_checksum = TarBuilder::new().file("tampered", 0o644, b"x").finish();
    bad_checksum[101] ^= 1;
    let truncated = TarBuilder::new()
        .file("cut-short", 0o644, &[1u8; 4096])
        .finish()[..2000]
        .to_vec();
    let zeros = TarBuilder::new()
        .file("bomb", 0o644, &vec![0u8; 32 << 20])
        .finish();
    let corpus: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            TarBuilder::new().file("a/../../x", 0o644, b"x").finish(),
            "a/../../x",
        ),
        (
            "absolute",
            TarBuilder::new().file("/etc/shadow", 0o644, b"x").finish(),
            "/etc/shadow",
        ),
        (
            "nul",
            TarBuilder::new()
                .pax(&[("path", b"ok\0evil")])
                .file("x", 0o644, b"")
                .finish(),
            "ok\\0evil",
        ),
        (
            "absurd-size",
            TarBuilder::new().raw(&absurd).finish(),
            "absurd",
        ),
        ("bad-checksum", bad_checksum, "tampered"),
        ("truncated", truncated, "cut-short"),
        (
            "hardlink-escape",
            TarBuilder::new().hardlink("h", "../../etc/passwd").finish(),
            "h",
        ),
        (
            "hardlink-missing",
            TarBuilder::new().hardlink("h", "nothing/here").finish(),
            "h",
        ),
        (
            "whiteout-parent",
            TarBuilder::new().file("d/.wh..", 0o644, b"").finish(),
            "d/.wh..",
        ),
        (
            "sparse",
            TarBuilder::new()
                .entry("holes", b'S', 0o644, b"", "")
                .finish(),
            "holes",
        ),
        ("bomb", zeros, "bomb"),
    ];
    let s = setup();
    let mut config = s.config.clone();
    config.limits.max_uncompressed_bytes = 8 << 20;
    config.limits.tar.max_entry_bytes = 1 << 40;
    let indexer = ImageIndexer::new(s.store.clone(), config).unwrap();
    for (name, hostile, entry) in corpus {
        let built = put_image(
            &s.store,
            &[(base_tar(), Pack::Gzip), (hostile, Pack::Gzip)],
            Options::default(),
        );
        let report = indexer.index(&built.target, Progress::new()).await.unwrap();
        let reason = untrusted(&report).to_string();
        assert!(reason.contains("layer 2"), "{name}: {reason}");
        assert!(
            reason.contains(&built.layers[1].to_string()),
            "{name}: {reason}"
        );
        assert!(reason.contains(entry), "{name}: {reason}");
    }
}
