//! The containers stage, end to end: the real daemon, a real containerd, real containers.
//!
//! User story: an operator reading an exec record (later an alert) sees which container it
//! came from (containerd namespace, container id, image reference and the manifest digest
//! that image resolved to, and for Kubernetes the pod), also for a container that execs in
//! its first millisecond, and also across containerd restarts; and the daemon's memory does
//! not grow with the number of containers a node has run.

use std::time::{Duration, Instant};

use layerguard_tests::node::{NodeBuilder, TestNode, RECONNECT_WAIT, WAIT};
use layerguard_tests::{busybox_image, unique_id, BuiltImage, Container, RunOptions};
use serde_json::Value;

/// A test node whose busybox image lives in containerd namespace `ns`. These tests read
/// the per-exec records, which are off by default.
fn node_in(ns: &str) -> NodeBuilder {
    TestNode::builder(ns).log_execs()
}

/// Asserts the record is attributed to `container` running `image`.
fn assert_attributed(rec: &Value, ns: &str, id: &str, image: &BuiltImage) {
    let c = &rec["container"];
    assert_eq!(c["kind"], "container", "{rec}");
    assert_eq!(c["namespace"], ns, "{rec}");
    assert_eq!(c["id"], id, "{rec}");
    assert_eq!(c["image"], image.reference.as_str(), "{rec}");
    assert_eq!(
        c["manifest_digest"],
        image.manifest_digest.as_str(),
        "{rec}"
    );
    assert!(
        c.get("labels").is_none(),
        "labels stay out of records: {rec}"
    );
    // The exec fields the sensor tests rely on are still at the top level.
    assert!(rec["process"]["mnt_ns"].is_u64(), "{rec}");
    assert!(
        rec["filename"].is_string() && rec["upper_layer"].is_boolean(),
        "{rec}"
    );
}

fn exec_marker(node: &TestNode, container: &Container, prefix: &str) -> Value {
    let marker = unique_id(prefix);
    let cursor = node.daemon().cursor();
    container
        .exec_ok(&["/bin/busybox", "echo", &marker])
        .expect("exec in container");
    node.exec_record_with_arg(cursor, &marker)
}

#[test]
fn execs_in_two_namespaces_carry_namespace_id_image_and_manifest_digest() {
    let mut node = node_in("default").without_daemon().build();
    let image_a = node.image.clone();
    let image_b = node.import(
        busybox_image("layerguard.test/ns-b:2")
            .expect("image")
            .env("FLAVOUR=b"),
        "lg-other",
    );
    assert_ne!(image_a.manifest_digest, image_b.manifest_digest);
    // One container exists before the daemon starts (found by listing), one after (found
    // through the event stream).
    let a = node.container();
    node.start_daemon();
    node.wait_connected(1, WAIT);
    let b = node.container_of("lg-other", &image_b);

    let rec = exec_marker(&node, &a, "in-a");
    assert_attributed(&rec, "default", a.id(), &image_a);
    assert!(rec["container"].get("index_digest").is_none(), "{rec}");
    let rec = exec_marker(&node, &b, "in-b");
    assert_attributed(&rec, "lg-other", b.id(), &image_b);
}

#[test]
fn image_from_an_index_carries_the_index_digest_and_the_platform_manifest_digest() {
    let mut node = node_in("default").without_import().without_daemon().build();
    let image = node.image.clone();
    let index_digest = layerguard_tests::oci::import_as_index(&node.containerd, "default", &image);
    node.start_daemon();
    node.wait_connected(1, WAIT);
    let c = node.container();
    let rec = exec_marker(&node, &c, "in-multi");
    assert_attributed(&rec, "default", c.id(), &image);
    assert_eq!(
        rec["container"]["index_digest"],
        index_digest.as_str(),
        "{rec}"
    );
}

#[test]
fn cri_labelled_container_in_k8s_io_carries_pod_fields() {
    let node = node_in("k8s.io").build();
    let image = &node.image;
    node.wait_connected(1, WAIT);
    let opts = RunOptions::default()
        .label("io.kubernetes.pod.name", "web-7d9f")
        .label("io.kubernetes.pod.namespace", "shop")
        .label(
            "io.kubernetes.pod.uid",
            "0b6e2f0c-1d7a-4c1e-9a55-2f1f2b0a9c11",
        )
        .label("io.kubernetes.container.name", "nginx");
    let c = Container::run_with(
        &node.containerd,
        "k8s.io",
        &image.reference,
        &unique_id("pod"),
        &["sleep", "600"],
        &opts,
    )
    .expect("run container");
    let rec = exec_marker(&node, &c, "in-pod");
    assert_attributed(&rec, "k8s.io", c.id(), image);
    let pod = &rec["container"];
    assert_eq!(pod["pod_name"], "web-7d9f", "{rec}");
    assert_eq!(pod["pod_namespace"], "shop", "{rec}");
    assert_eq!(
        pod["pod_uid"], "0b6e2f0c-1d7a-4c1e-9a55-2f1f2b0a9c11",
        "{rec}"
    );
    assert_eq!(pod["container_name"], "nginx", "{rec}");
}

#[test]
fn entrypoint_that_execs_at_once_is_attributed_not_unresolved() {
    let node = node_in("default").build();
    let image = &node.image;
    node.wait_connected(1, WAIT);
    // Several rounds: the race between the container's first exec and containerd's task
    // event goes either way from one start to the next.
    for round in 0..5 {
        let marker = unique_id("quick");
        let id = unique_id("quick");
        let cursor = node.daemon().cursor();
        let script = format!("exec /bin/busybox echo {marker}");
        let out = Container::run_once(
            &node.containerd,
            "default",
            &image.reference,
            &id,
            &["/bin/busybox", "sh", "-c", &script],
        )
        .expect("run container");
        assert!(out.status.success(), "round {round}: {out:?}");
        // The entrypoint itself (runc's exec of it) and the exec it makes at once.
        let entry = node.exec_record_with_arg(cursor, &script);
        assert_attributed(&entry, "default", &id, image);
        let rec = node.exec_record_with_arg(cursor, &marker);
        assert_attributed(&rec, "default", &id, image);
    }
}

#[test]
fn containerd_restart_is_survived_logged_once_and_new_containers_are_attributed() {
    let mut node = node_in("default").build();
    let image = node.image.clone();
    node.wait_connected(1, WAIT);
    let before = node.container();
    let rec = exec_marker(&node, &before, "before-restart");
    assert_attributed(&rec, "default", before.id(), &image);
    let before_pid = before.pid().expect("task pid");

    let cursor = node.daemon().cursor();
    node.containerd.kill().expect("SIGKILL containerd");
    node.wait_message_after(cursor, "containerd unavailable", WAIT);
    // Retries go on while containerd is down; none of them may log again.
    std::thread::sleep(Duration::from_secs(3));
    // Known containers still resolve against the last known table meanwhile. `ctr exec`
    // needs containerd, so enter the container's mount namespace directly.
    let marker = unique_id("during-outage");
    let cursor = node.daemon().cursor();
    let pid = before_pid.to_string();
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-m", "/bin/busybox", "echo", &marker])
        .output()
        .expect("nsenter (util-linux)");
    assert!(out.status.success(), "nsenter: {out:?}");
    let rec = node.exec_record_with_arg(cursor, &marker);
    assert_attributed(&rec, "default", before.id(), &image);

    node.containerd.start_again().expect("restart containerd");
    node.wait_connected(2, RECONNECT_WAIT);
    let after = node.container();
    let rec = exec_marker(&node, &after, "after-restart");
    assert_attributed(&rec, "default", after.id(), &image);
    let rec = exec_marker(&node, &before, "before-still");
    assert_attributed(&rec, "default", before.id(), &image);

    node.assert_daemon_alive();
    assert_eq!(
        node.count_messages("containerd unavailable"),
        1,
        "one line per state change, not per retry:\n{}",
        node.daemon().dump_string(40)
    );
    assert_eq!(node.count_messages("containerd connected"), 2);
}

#[test]
fn daemon_started_before_containerd_waits_and_then_works() {
    let mut node = node_in("default").without_daemon().build();
    let image = node.image.clone();
    node.containerd.stop().expect("stop containerd");

    node.start_daemon();
    let down = node.wait_message_after(0, "containerd unavailable", WAIT);
    let error = down["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(node.containerd.socket_path().to_str().unwrap())
            && error.contains("os error"),
        "the warning should say which socket and why: {down}"
    );
    std::thread::sleep(Duration::from_secs(2));
    node.assert_daemon_alive();
    assert_eq!(node.count_messages("containerd connected"), 0);

    node.containerd.start_again().expect("start containerd");
    node.wait_connected(1, RECONNECT_WAIT);
    let c = node.container();
    let rec = exec_marker(&node, &c, "late");
    assert_attributed(&rec, "default", c.id(), &image);
    assert_eq!(node.count_messages("containerd unavailable"), 1);
}

#[test]
fn exec_in_a_namespace_no_container_owns_goes_on_unresolved_with_the_reason() {
    let node = node_in("default")
        .args(&["--set", "containers.pending_timeout_ms=300"])
        .build();
    node.wait_connected(1, WAIT);
    // A private mount namespace on the host: not the host's, and no container's.
    let marker = unique_id("orphan");
    let cursor = node.daemon().cursor();
    let out = std::process::Command::new("unshare")
        .args(["-m", "/bin/echo", &marker])
        .output()
        .expect("unshare (util-linux)");
    assert!(out.status.success(), "unshare: {out:?}");
    let rec = node.exec_record_with_arg(cursor, &marker);
    let c = &rec["container"];
    assert_eq!(c["kind"], "unresolved", "{rec}");
    assert_eq!(
        c["reason"], "no container known for this mount namespace",
        "{rec}"
    );
    assert!(c["waited_ms"].as_u64().unwrap() >= 300, "{rec}");
    assert!(c.get("id").is_none(), "{rec}");
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Waits for a "containers stats" record (logged every `stats_interval_ms`) after `cursor`
/// with an empty table. (Not an empty pending queue: the sensor sees the whole node, and
/// containers of other containerds on it wait there until they go on unresolved.)
fn wait_table_empty(node: &TestNode, cursor: u64) -> Value {
    node.wait_line_after(cursor, "stats with an empty containers table", |v| {
        v["message"] == "containers stats"
            && v["containers"] == 0
            && v["mnt_ns_index"] == 0
            && v["pid_index"] == 0
    })
}

#[test]
fn fifty_containers_started_and_removed_leave_table_and_rss_where_they_were() {
    const ROUNDS: usize = 50;
    /// Allocator slack: the table's own share is a few KiB; more means something grows
    /// with every container.
    const RSS_SLACK_KIB: u64 = 2048;
    let node = node_in("default")
        .args(&[
            "--set",
            "containers.exited_grace_ms=500",
            "--set",
            "containers.stats_interval_ms=250",
        ])
        .build();
    node.wait_connected(1, WAIT);
    let pid = node.daemon().pid();

    let churn = |n: usize, tag: &str| -> Vec<(String, String)> {
        (0..n)
            .map(|_| {
                let id = unique_id(tag);
                let marker = unique_id("churn-marker");
                let out = Container::run_once(
                    &node.containerd,
                    "default",
                    &node.image.reference,
                    &id,
                    &["/bin/busybox", "echo", &marker],
                )
                .expect("run container");
                assert!(out.status.success(), "{out:?}");
                (id, marker)
            })
            .collect()
    };

    // Warm-up: the first containers grow buffers, the runtime and the allocator's arenas.
    churn(5, "warm");
    let cursor = node.daemon().cursor();
    let before_stats = wait_table_empty(&node, cursor);
    let rss_before = vm_rss_kib(pid);

    let started = Instant::now();
    let cursor = node.daemon().cursor();
    let runs = churn(ROUNDS, "churn");
    let churn_time = started.elapsed();
    for (id, marker) in &runs {
        let rec = node.exec_record_with_arg(cursor, marker);
        assert_eq!(rec["container"]["kind"], "container", "{rec}");
        assert_eq!(rec["container"]["id"], id.as_str(), "{rec}");
    }
    let after_stats = wait_table_empty(&node, node.daemon().cursor());
    let rss_after = vm_rss_kib(pid);
    eprintln!(
        "{ROUNDS} containers in {churn_time:?}: VmRSS {rss_before} KiB -> {rss_after} KiB; \
         stats before {before_stats}; after {after_stats}"
    );
    let attributed = after_stats["events"]["container"].as_u64().unwrap()
        - before_stats["events"]["container"].as_u64().unwrap();
    assert!(attributed >= ROUNDS as u64, "{attributed} container events");
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB over {ROUNDS} containers"
    );
}
