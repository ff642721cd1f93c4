//! `layerguard image verify` against a real containerd: the index is exactly what a
//! container of the image shows, and a tampered blob or a config whose diff_id does not
//! match its layer makes the image untrusted.
//!
//! User story: an operator runs `layerguard image verify REF` on a node and trusts its
//! verdict and file list because they match what containers of that image really see.

use std::collections::BTreeMap;
use std::process::Command;

use layerguard_tests::node::TestNode;
use layerguard_tests::{container_view, daemon_binary, overlay_test_image, unique_id};
use serde_json::Value;

const NS: &str = "lg-image";

type View = BTreeMap<String, layerguard_tests::ViewEntry>;

/// A node (no daemon: `image verify` works alone) with the three-layer overlay test image.
fn layered_node() -> TestNode {
    TestNode::builder(NS)
        .image(
            overlay_test_image(&format!("layerguard.test/{}:1", unique_id("index")))
                .expect("busybox image"),
        )
        .without_daemon()
        .build()
}

/// `layerguard image verify REFERENCE --json --list` on the node's containerd and state dir.
fn verify(node: &TestNode, reference: &str) -> (i32, Value) {
    let out = Command::new(daemon_binary())
        .args([
            "image",
            "verify",
            reference,
            "--namespace",
            NS,
            "--json",
            "--list",
        ])
        .arg("--containerd-socket")
        .arg(node.containerd.socket_path())
        .arg("--state-dir")
        .arg(node.state_dir())
        .output()
        .expect("run layerguard image verify");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn index_view(summary: &Value) -> View {
    summary["entries"]
        .as_array()
        .expect("--list entries")
        .iter()
        .map(|e| {
            let path = format!("/{}", e["path"].as_str().unwrap().trim_start_matches('/'));
            let mode = e["mode"].as_u64().unwrap() as u32 & 0o7777;
            let hex = |v: &Value| {
                v.as_str()
                    .unwrap_or("")
                    .trim_start_matches("sha256:")
                    .to_string()
            };
            let v = match e["kind"]["type"].as_str().unwrap() {
                "file" | "hard_link" => ('F', mode, hex(&e["sha256"])),
                "dir" => ('D', mode, String::new()),
                "symlink" => (
                    'L',
                    0o777,
                    e["kind"]["target"].as_str().unwrap().to_string(),
                ),
                other => ('O', 0, other.to_string()),
            };
            (path, v)
        })
        .collect()
}

#[test]
fn index_matches_what_a_container_of_the_image_shows() {
    let node = layered_node();
    let image = &node.image;
    let (code, summary) = verify(&node, &image.reference);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["verdict"], "verified");
    assert_eq!(summary["layers_verified"], 3);
    assert_eq!(summary["manifest"], image.manifest_digest.as_str());

    let c = node.container_running(&["sleep", "300"]);
    let seen = container_view(&c);
    let indexed = index_view(&summary);
    for (path, want) in &indexed {
        assert_eq!(seen.get(path), Some(want), "{path}: index vs container");
    }
    // runc creates /run in the container's own layer; nothing else may be missing.
    let missing: Vec<&String> = seen
        .keys()
        .filter(|p| !indexed.contains_key(*p) && *p != "/run")
        .collect();
    assert!(
        missing.is_empty(),
        "in the container but not in the index: {missing:?}"
    );
    assert!(!indexed.contains_key("/app/remove-me") && !indexed.contains_key("/app/data/old"));
}

#[test]
fn flipped_byte_in_a_layer_blob_is_reported_with_both_digests() {
    let node = layered_node();
    let image = &node.image;
    let blob = &image.layers[2].blob_digest;
    let path = node
        .containerd
        .root_dir()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(blob.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).expect("blob on disk");
    let i = bytes.len() / 2;
    bytes[i] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (code, summary) = verify(&node, &image.reference);
    assert_eq!(code, 1, "untrusted exits 1: {summary}");
    assert_eq!(summary["verdict"], "untrusted");
    let reason = summary["reason"].to_string();
    assert!(reason.contains(blob.as_str()), "names the blob: {reason}");
    assert!(
        reason.contains("expected") && reason.contains("actual"),
        "{reason}"
    );
}

#[test]
fn config_diff_id_that_does_not_match_its_layer_is_reported_with_both_digests() {
    // Every blob is intact and the manifest names the edited config by its real digest, so
    // only the uncompressed layer's digest against `rootfs.diff_ids` can catch this: layer
    // 3's entry names layer 2's (real, but wrong here) diff_id.
    let node = TestNode::builder(NS)
        .image(
            overlay_test_image(&format!("layerguard.test/{}:1", unique_id("diffid")))
                .expect("busybox image"),
        )
        .without_import()
        .without_daemon()
        .build();
    let honest = node.image.clone();
    let lie = honest.layers[1].diff_id.clone();
    let image = honest
        .clone()
        .with_config(|config| config["rootfs"]["diff_ids"][2] = lie.clone().into())
        .expect("edit config");
    // containerd's unpacker would refuse this config ("wrong diff id calculated on
    // extraction"): only the content store holds it.
    image
        .import_packed(&node.containerd, NS)
        .expect("import without unpacking");
    let (code, summary) = verify(&node, &image.reference);
    assert_eq!(code, 1, "untrusted exits 1: {summary}");
    assert_eq!(summary["verdict"], "untrusted");
    assert_eq!(summary["manifest"], image.manifest_digest.as_str());
    assert_eq!(summary["config"], image.config_digest.as_str());
    let reason = &summary["reason"];
    assert_eq!(reason["kind"], "diff_id_mismatch", "{summary}");
    assert_eq!(reason["layer_number"], 3);
    assert_eq!(reason["layer"], image.layers[2].blob_digest.as_str());
    assert_eq!(reason["expected"], lie.as_str());
    assert_eq!(reason["actual"], honest.layers[2].diff_id.as_str());
    let message = reason["message"].as_str().unwrap_or_default();
    for part in [
        &image.layers[2].blob_digest,
        &lie,
        &honest.layers[2].diff_id,
    ] {
        assert!(message.contains(part.as_str()), "{part} in {message}");
    }
    assert!(
        summary.get("entries").is_none(),
        "no index for an untrusted image"
    );
}

#[test]
fn unknown_image_is_an_error_not_a_verdict() {
    let node = TestNode::builder(NS).without_daemon().build();
    let (code, summary) = verify(&node, "layerguard.test/nope:1");
    assert_eq!(code, 2, "{summary}");
    assert!(
        summary["error"].as_str().unwrap_or("").contains("nope"),
        "{summary}"
    );
}
