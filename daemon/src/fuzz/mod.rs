//! Fuzz entry points for everything that reads bytes someone else wrote: image content
//! (layer blobs, manifests, the layer cache), image signatures (cosign `.sig` manifests
//! and payloads, Sigstore bundles, Rekor entries), the kernel sensor's ring-buffer records
//! and the alert journal's segment files. `daemon/fuzz` calls them from libFuzzer (feature
//! `fuzzing`); the tests here run each over generated and mutated inputs, so CI exercises
//! them without nightly. Every entry point asserts its parser's contract itself: a fuzzer
//! reports any panic.

mod image;
#[cfg(test)]
mod mutate;

pub use image::{fuzz_cache_file, fuzz_layer, fuzz_metadata, fuzz_one as fuzz_image};

use crate::alert::journal::{Entry, Journal, JournalLimits, JournalReader, MAGIC};
use crate::sensor::event::{decode, SensorEvent};

/// Signature bytes (the first byte picks the format: a `.sig` manifest whose payload is
/// the rest after a NUL, a Sigstore bundle, or cosign's Rekor annotation): parsing never
/// panics, a bundle parses into DSSE-encoded candidates naming at least one digest, and no
/// such input is judged `signed` (nobody can sign it with the key the judge trusts).
pub fn fuzz_signature(data: &[u8]) {
    use crate::trust::{formats, judge, keys, rekor};
    let (selector, body) = data.split_first().unwrap_or((&0, &[]));
    let candidates: Vec<formats::Found> = match selector % 3 {
        0 => {
            let (manifest, payload) = match body.iter().position(|&b| b == 0) {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (body, &[][..]),
            };
            match formats::simple_signing_layers(manifest) {
                Ok(layers) => layers
                    .iter()
                    .map(|l| formats::Found {
                        source: "fuzz".into(),
                        parsed: formats::simple_signing(l, payload),
                    })
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        1 => {
            let _ = formats::bundle_subjects(body);
            match formats::bundle(body) {
                Ok(cs) => {
                    for c in &cs {
                        assert!(!c.digests.is_empty(), "a bundle names a digest");
                        assert!(c.signed.starts_with(b"DSSEv1 "), "DSSE signs the PAE");
                    }
                    cs.into_iter()
                        .map(|c| formats::Found {
                            source: "fuzz".into(),
                            parsed: Ok(c),
                        })
                        .collect()
                }
                Err(_) => Vec::new(),
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(body) {
                if let Ok(entry) = rekor::TlogEntry::from_cosign_annotation(text) {
                    let _ = entry.set_payload();
                }
            }
            Vec::new()
        }
    };
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("a fixed test key");
    let trust = keys::TrustSet {
        generation: 1,
        keys: vec![keys::TrustKey {
            id: "k".into(),
            path: "/k.pub".into(),
            key: keys::PublicKey::P256(*key.verifying_key()),
            not_before: None,
            not_after: None,
            status: crate::config::KeyStatus::Active,
        }],
        policies: vec![keys::Policy {
            index: 0,
            images: vec!["**".into()],
            keys: vec!["k".into()],
            mode: crate::config::TrustMode::Enforce,
        }],
        rekor: None,
        allow_no_tlog: true,
        signature_dirs: Vec::new(),
        recheck: std::time::Duration::from_secs(60),
    };
    let digests: Vec<crate::image::digest::Digest> = candidates
        .iter()
        .filter_map(|f| f.parsed.as_ref().ok())
        .flat_map(|c| c.digests.clone())
        .collect();
    let j = judge::judge(
        "fuzz/image",
        &digests,
        &candidates,
        &trust,
        std::time::SystemTime::now(),
    );
    assert!(
        !matches!(j.state, judge::SignatureState::Signed { .. }),
        "unsigned bytes judged signed"
    );
}

/// A ring-buffer record: decoding never panics, and what an exec record decodes to stays
/// within what the record carried.
pub fn fuzz_sensor_record(data: &[u8]) {
    let Ok(event) = decode(data) else { return };
    if let Some(e) = match &event {
        SensorEvent::Observed(o) => o.as_exec(),
        SensorEvent::Lost(_) => None,
    } {
        // Characters, not bytes: an invalid byte decodes to one (3-byte) U+FFFD.
        let carried = data.len();
        assert!(
            e.filename.chars().count() <= carried,
            "filename longer than the record"
        );
        let argv: usize = e.argv.iter().map(|a| a.chars().count() + 1).sum();
        assert!(argv <= carried + 1, "argv longer than the record");
        if e.cwd.is_some() {
            assert!(!e.cwd_truncated, "a cut cwd is never given as a path");
        }
        if e.exe_path.is_some() {
            assert!(
                !e.exe_path_truncated,
                "a cut exe path is never given as a path"
            );
        }
    }
}

/// A journal directory holding `data` as its one segment (after the format's header when
/// the first byte is even, raw otherwise): opening recovers without panicking, and reading
/// everything back gives each seq at most once, in increasing order, with gaps that
/// cover exactly what is not delivered, and appending after it continues the sequence.
pub fn fuzz_journal_segment(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("lg-fuzz-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let (selector, body) = data.split_first().unwrap_or((&0, &[]));
    let mut file = Vec::new();
    if selector % 2 == 0 {
        file.extend_from_slice(MAGIC);
    }
    file.extend_from_slice(body);
    let first_seq = u64::from(*selector / 2) + 1;
    std::fs::write(dir.join(format!("{first_seq:020}.seg")), &file).expect("write the segment");
    let limits = JournalLimits {
        fsync: crate::alert::journal::FsyncPolicy::Never,
        recent_alerts: 0,
        ..JournalLimits::default()
    };
    if let Ok((journal, next)) = Journal::open(&dir, limits) {
        let mut reader = JournalReader::new(1);
        let mut expect = 1u64;
        loop {
            let batch = journal.read(&mut reader, 64);
            if batch.is_empty() {
                break;
            }
            for entry in batch {
                match entry {
                    Entry::Alert(a) => {
                        assert_eq!(a.seq, expect, "alerts in order, none twice, no hole");
                        expect = a.seq + 1;
                    }
                    Entry::Gap {
                        first_seq,
                        last_seq,
                        ..
                    } => {
                        assert_eq!(first_seq, expect, "a gap starts where reading stood");
                        assert!(last_seq >= first_seq);
                        expect = last_seq + 1;
                    }
                }
            }
        }
        assert_eq!(
            expect,
            next.max(1),
            "everything before the next seq is accounted for"
        );
        let _ = journal.scan_back(u64::MAX, 1000, |_| true);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(test)]
mod tests {
    use super::mutate::{mutate, Rng};
    use super::*;
    use crate::sensor::wire;

    fn exec_seeds() -> Vec<Vec<u8>> {
        use crate::sensor::event::tests::exec_record;
        vec![
            exec_record("/bin/ls", None, &[], None, b"ls\0-l\0"),
            exec_record(
                "./x.sh",
                Some("/bin/sh"),
                &["app", "srv"],
                None,
                b"sh\0x.sh\0",
            ),
            exec_record(
                "/proc/self/exe",
                None,
                &["tmp"],
                Some(&["busybox", "bin"]),
                b"sh\0",
            ),
        ]
    }

    #[test]
    fn sensor_records_survive_mutation() {
        let seeds = exec_seeds();
        let lengths = [
            std::mem::offset_of!(wire::ExecEvent, filename_len),
            std::mem::offset_of!(wire::ExecEvent, interp_len),
            std::mem::offset_of!(wire::ExecEvent, cwd_len),
            std::mem::offset_of!(wire::ExecEvent, exe_len),
            std::mem::offset_of!(wire::ExecEvent, argv_len),
            std::mem::offset_of!(wire::ExecEvent, flags),
            std::mem::offset_of!(wire::ExecEvent, flags) + 1,
            0,
        ];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for i in 0..20_000 {
            let mut input = seeds[i % seeds.len()].clone();
            // The kind is the first byte: leave it mostly alone.
            mutate(&mut rng, &mut input, &lengths);
            fuzz_sensor_record(&input);
        }
        for _ in 0..2000 {
            let len = rng.below(600);
            let mut noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(k) = noise.first_mut() {
                *k = 1 + (*k % 3);
            }
            fuzz_sensor_record(&noise);
        }
    }

    fn journal_seed() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            fsync: crate::alert::journal::FsyncPolicy::Never,
            ..JournalLimits::default()
        };
        let (j, _) = Journal::open(dir.path(), limits).unwrap();
        let mut stage = crate::alert::AlertStage::new("n", 1, vec![]);
        for _ in 0..6 {
            let a = stage.stamp(crate::fixtures::draft(
                crate::alert::AlertKind::ExecNotInImage,
            ));
            j.append(&a).unwrap();
        }
        drop(j);
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&std::fs::read(seg).unwrap()[MAGIC.len()..]);
        bytes
    }

    #[test]
    fn signatures_survive_mutation() {
        use crate::trust::formats::tests as f;
        use crate::trust::keys::tests::key_pair;
        let image = crate::image::digest::Digest::of(b"image");
        let (other, _) = key_pair(3);
        let payload = f::payload_for(&image);
        let mut simple = vec![0u8];
        simple.extend(f::sig_manifest(&payload, "MEUCIQ=="));
        simple.push(0);
        simple.extend(&payload);
        let mut bundle = vec![1u8];
        bundle.extend(f::bundle_for(&other, &image));
        let mut annotation = vec![2u8];
        annotation.extend_from_slice(
            br#"{"SignedEntryTimestamp":"AAAA","Payload":{"body":"e30=","integratedTime":1,"logIndex":2,"logID":"ff"}}"#,
        );
        let seeds = [simple, bundle, annotation];
        let mut rng = Rng(0x519_5eed_0003);
        for seed in &seeds {
            fuzz_signature(seed);
        }
        for i in 0..3000 {
            let mut input = seeds[i % seeds.len()].clone();
            mutate(&mut rng, &mut input, &[1, 2, 10, 40]);
            fuzz_signature(&input);
        }
    }

    #[test]
    fn journal_segments_survive_mutation() {
        let seed = journal_seed();
        let mut rng = Rng(0x0dd_ba11_5eed_0002);
        fuzz_journal_segment(&seed);
        for _ in 0..600 {
            let mut input = seed.clone();
            // Frame headers: length, checksum and seq of the first records.
            mutate(&mut rng, &mut input, &[1, 2, 5, 9, 13, 16]);
            fuzz_journal_segment(&input);
        }
    }
}
