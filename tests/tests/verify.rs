//! Exec verdicts and alerts, end to end: the real daemon judging real containers.
//!
//! User story: a SOC analyst gets an alert, with expected and actual digests and the
//! process ancestry, for every program in a container that is not exactly what the
//! verified image shipped, and no alert for everything that is.

use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use layerguard_tests::node::{is_alert_for, run_ok, TestNode};
use layerguard_tests::programs;
use layerguard_tests::unique_id;
use layerguard_tests::util::sha256_hex;
use serde_json::Value;

const NS: &str = "lg-verify";

/// A test node whose image has the test programs, a script, and `/opt/tiny_other`: the
/// same program as tiny with other bytes, what an attacker's replacement looks like to a
/// hash.
struct Node {
    tiny_other: Vec<u8>,
    node: TestNode,
}

impl Deref for Node {
    type Target = TestNode;
    fn deref(&self) -> &TestNode {
        &self.node
    }
}

fn start_node(extra: &[&str]) -> Node {
    let other = programs::tiny_other();
    let node = TestNode::builder(NS)
        .layer(
            programs::programs_layer()
                .file_from_host("/opt/tiny_other", &other, 0o755)
                .file("/app/hello.sh", "#!/bin/sh\necho hello\n", 0o755),
        )
        // Verdicts of verified execs are only visible in the per-exec records.
        .log_execs()
        .args(extra)
        .build();
    Node {
        tiny_other: std::fs::read(&other).unwrap(),
        node,
    }
}

#[test]
fn image_binaries_chmod_and_container_start_raise_no_alert() {
    let node = start_node(&[]);
    let c = node.container();
    let marker = unique_id("ok");
    run_ok(&c, &["/bin/busybox", "echo", &marker]);
    let v = node.verdict_of(&c, &["/bin/busybox", "echo", &marker]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    // Through a symlink in the image: /bin/sh -> busybox.
    run_ok(&c, &["/bin/sh", "-c", "true"]);
    let v = node.verdict_of(&c, &["/bin/sh", "-c", "true"]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    // chmod copies the file up; its content is unchanged, so it stays verified.
    run_ok(&c, &["chmod", "0775", "/usr/local/bin/tiny"]);
    run_ok(&c, &["/usr/local/bin/tiny"]);
    let v = node.verdict_of(&c, &["/usr/local/bin/tiny"]);
    assert_eq!(v["upper_layer"], true, "{v}");
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    // Nothing so far, container start (runc) included, is an alert.
    let alerts = node.alerts_for(&c);
    assert!(alerts.is_empty(), "unexpected alerts: {alerts:#?}");
}

#[test]
fn dropped_binary_is_not_in_image_with_ancestry() {
    let node = start_node(&[]);
    let c = node.container();
    run_ok(&c, &["cp", "/bin/busybox", "/tmp/echo"]);
    // `; true` keeps the shell alive as the parent (it would exec the last command).
    run_ok(&c, &["sh", "-c", "/tmp/echo dropped; true"]);
    let a = node.wait_alert(&c, |a| a["kind"] == "exec_not_in_image");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["evidence"]["path"], "/tmp/echo", "{a}");
    assert_eq!(a["evidence"]["upper_layer"], true, "{a}");
    let busybox = sha256_hex(&std::fs::read("/bin/busybox").unwrap());
    assert_eq!(a["evidence"]["actual_sha256"], busybox.as_str(), "{a}");
    assert_eq!(a["container"]["namespace"], NS);
    assert_eq!(a["container"]["image"], node.image.reference.as_str());
    assert_eq!(
        a["container"]["manifest_digest"],
        node.image.manifest_digest.as_str()
    );
    // The shell that ran it is the first ancestor.
    let anc = a["process"]["ancestry"].as_array().expect("ancestry");
    assert!(!anc.is_empty(), "{a}");
    assert_eq!(anc[0]["exe"], "/bin/sh", "{a}");
    assert!(a["seq"].as_u64().unwrap() >= 1 && a["id"].is_string() && a["node"].is_string());
    // When it ran, from the kernel's clock: not after the alert (both are RFC 3339 UTC
    // with microseconds, so text order is time order).
    let ran = a["process"]["exec_time"].as_str().expect("exec_time");
    let raised = a["time"].as_str().expect("time");
    assert!(
        ran.len() == raised.len() && ran <= raised,
        "exec_time {ran} vs time {raised}"
    );
}

#[test]
fn binary_overwritten_in_the_container_is_modified() {
    let node = start_node(&[]);
    let c = node.container();
    run_ok(
        &c,
        &["sh", "-c", "cat /opt/tiny_other > /usr/local/bin/tiny"],
    );
    run_ok(&c, &["/usr/local/bin/tiny"]);
    let a = node.wait_alert(&c, |a| a["kind"] == "exec_modified");
    assert_eq!(a["severity"], "critical");
    let tiny_layer = &node.image.layers[1].blob_digest;
    let expected = match &node.image.files["/usr/local/bin/tiny"].kind {
        layerguard_tests::MergedKind::File { sha256, .. } => sha256.clone(),
        k => panic!("{k:?}"),
    };
    assert_eq!(a["evidence"]["expected_sha256"], expected.as_str(), "{a}");
    assert_eq!(a["evidence"]["expected_layer"], tiny_layer.as_str(), "{a}");
    assert_eq!(
        a["evidence"]["actual_sha256"],
        sha256_hex(&node.tiny_other).as_str(),
        "{a}"
    );
}

#[test]
fn binary_changed_on_the_host_in_the_lower_layer_is_modified() {
    let node = start_node(&[]);
    let c = node.container();
    run_ok(&c, &["/usr/local/bin/tiny"]);
    assert_eq!(
        node.verdict_of(&c, &["/usr/local/bin/tiny"])["verdict"]["verdict"],
        "verified"
    );
    // Tamper with the image's unpacked layer on the host, under the container's feet.
    let lower = c.lower_dirs().unwrap();
    let file = lower
        .iter()
        .map(|d| d.join("usr/local/bin/tiny"))
        .find(|p| p.exists())
        .expect("tiny in a lower dir");
    let ino = std::fs::metadata(&file).unwrap().ino();
    std::fs::write(&file, &node.tiny_other).unwrap();
    assert_eq!(
        std::fs::metadata(&file).unwrap().ino(),
        ino,
        "same inode, new bytes"
    );
    let marker = unique_id("after");
    run_ok(&c, &["sh", "-c", &format!("/usr/local/bin/tiny {marker}")]);
    let a = node.wait_alert(&c, |a| a["kind"] == "exec_modified");
    assert_eq!(
        a["evidence"]["upper_layer"], false,
        "an upper-layer flag alone misses this: {a}"
    );
    assert_eq!(
        a["evidence"]["actual_sha256"],
        sha256_hex(&node.tiny_other).as_str()
    );
}

#[test]
fn memfd_exec_is_fileless() {
    let node = start_node(&[]);
    let c = node.container();
    run_ok(
        &c,
        &["/usr/local/bin/memfd_exec", "/bin/busybox", "echo", "x"],
    );
    let a = node.wait_alert(&c, |a| a["kind"] == "exec_fileless");
    assert_eq!(a["severity"], "critical");
}

#[test]
fn executed_then_deleted_is_never_silent() {
    let node = start_node(&[]);
    let c = node.container();
    run_ok(&c, &["cp", "/bin/busybox", "/tmp/sleep"]);
    run_ok(
        &c,
        &["sh", "-c", "/tmp/sleep 3 & sleep 0.2; rm /tmp/sleep; wait"],
    );
    let a = node.wait_alert(&c, |a| {
        (a["kind"] == "exec_deleted" || a["kind"] == "exec_not_in_image")
            && a["evidence"]["path"] == "/tmp/sleep"
    });
    assert_ne!(a["kind"], "exec_unverifiable");
}

#[test]
fn dropped_scripts_alert_however_they_are_run() {
    let node = start_node(&[]);
    let c = node.container();
    run_ok(
        &c,
        &[
            "sh",
            "-c",
            "printf '#!/bin/sh\\necho hi\\n' > /tmp/x.sh && chmod +x /tmp/x.sh",
        ],
    );
    run_ok(&c, &["sh", "/tmp/x.sh"]);
    let a = node.wait_alert(&c, |a| {
        a["kind"] == "exec_not_in_image" && a["evidence"]["path"] == "/tmp/x.sh"
    });
    assert_eq!(a["process"]["argv"][1], "/tmp/x.sh", "{a}");
    let cursor = node.daemon().cursor();
    run_ok(&c, &["sh", "-c", "cd /tmp && ./x.sh"]);
    let a = node.wait_line_after(cursor, "an alert for ./x.sh", |v| {
        is_alert_for(v, &c)
            && v["alert"]["evidence"]["path"] == "/tmp/x.sh"
            && v["alert"]["kind"] != "file_executable_created"
    });
    assert_eq!(a["alert"]["kind"], "exec_not_in_image", "{a}");
    // The interpreter as the kernel named it, or resolved through /proc while it ran.
    let interpreter = &a["alert"]["evidence"]["interpreter"];
    assert!(
        interpreter == "/bin/sh" || interpreter == "/bin/busybox",
        "{a}"
    );
    assert_eq!(
        a["alert"]["evidence"]["interpreter_verdict"], "verified",
        "{a}"
    );
    // The image's own script is verified, interpreter and script both.
    run_ok(&c, &["/app/hello.sh"]);
    let v = node.verdict_of(&c, &["/bin/sh", "/app/hello.sh"]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
}

#[test]
fn tampered_layer_blob_makes_the_image_untrusted() {
    let node = start_node(&[]);
    // Flip one byte of the app layer's blob in containerd's content store.
    let blob = &node.image.layers[1].blob_digest;
    let path = node
        .containerd
        .root_dir()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(blob.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).expect("layer blob on disk");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let c = node.container();
    run_ok(&c, &["/bin/busybox", "true"]);
    let a = node.wait_alert(&c, |a| a["kind"] == "image_untrusted");
    assert_eq!(a["severity"], "critical");
    let reason = a["evidence"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(blob.as_str()),
        "reason names the blob: {reason}"
    );
}

#[test]
fn a_thousand_short_lived_dropped_binaries_give_a_thousand_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.jsonl");
    let node = start_node(&[
        "--alert-log",
        log.to_str().unwrap(),
        "--set",
        "verify.log_execs=false",
    ]);
    let c = node.container();
    run_ok(&c, &["cp", "/usr/local/bin/tiny", "/tmp/t"]);
    let out = c
        .exec_timeout(
            &["sh", "-c", "for i in $(seq 1000); do /tmp/t; done"],
            Duration::from_secs(120),
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Exec alerts, one per exec; the copy itself is one file alert, once.
    let is_exec = |a: &Value| a["kind"].as_str().is_some_and(|k| k.starts_with("exec_"));
    let count = || {
        node.alerts_for(&c)
            .iter()
            .filter(|a| a["evidence"]["path"] == "/tmp/t" && is_exec(a))
            .count()
    };
    while count() < 1000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let alerts: Vec<Value> = node
        .alerts_for(&c)
        .into_iter()
        .filter(|a| a["evidence"]["path"] == "/tmp/t" && is_exec(a))
        .collect();
    let file_alerts = node
        .alerts_for(&c)
        .into_iter()
        .filter(|a| a["kind"] == "file_executable_created")
        .count();
    assert_eq!(file_alerts, 1, "one file alert for the one copy");
    // Each process maps the binary it runs: that is the exec's verdict, not a library's.
    let library: Vec<Value> = node
        .alerts_for(&c)
        .into_iter()
        .filter(|a| {
            a["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("library_"))
        })
        .collect();
    assert!(library.is_empty(), "{library:?}");
    let lost: Vec<Value> = node
        .daemon()
        .json_lines()
        .into_iter()
        .filter(|v| v["message"] == "alert" && v["alert"]["kind"] == "sensor_events_lost")
        .collect();
    assert!(lost.is_empty(), "events were lost: {lost:?}");
    assert_eq!(alerts.len(), 1000, "one alert per exec");
    assert!(
        alerts.iter().all(|a| a["kind"] == "exec_not_in_image"),
        "none unverifiable"
    );
    // The same alerts, in order, in the JSONL file.
    let file = std::fs::read_to_string(&log).unwrap();
    let in_file = file
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| {
            a["container"]["id"] == c.id() && a["evidence"]["path"] == "/tmp/t" && is_exec(a)
        })
        .count();
    assert_eq!(in_file, 1000);
}
