//! Behaviour baselines, end to end: the real daemon learning what a real container's
//! workload runs and writes, then reporting what it never did.
//!
//! User story: an operator running nginx-like workloads gets `baseline_unexpected_exec`
//! when an intruder runs the image's own tools, with what the workload ran instead, and no
//! alert for the workload's normal life: replicas, restarts, a daemon crash, an upgrade.

use std::time::{Duration, Instant};

use layerguard_tests::container::{unique_id, Container};
use layerguard_tests::node::{run_ok, TestNode};
use layerguard_tests::programs;
use serde_json::Value;

const NS: &str = "lg-baseline";
const TOOL: &str = "/usr/bin/tool";
const OTHER: &str = "/opt/tiny_other";
const LABEL: &str = "io.layerguard.workload";

fn node_with(args: &[&str]) -> TestNode {
    let mut all = vec![
        "--set",
        "baseline.learn_seconds=3",
        "--set",
        "baseline.quiet_seconds=2",
    ];
    all.extend_from_slice(args);
    TestNode::builder(NS)
        .layer(
            programs::programs_layer()
                .file_from_host(TOOL, programs::tiny(), 0o755)
                .file_from_host(OTHER, programs::tiny_other(), 0o755)
                .dir("/srv", 0o755),
        )
        .args(&all)
        .build()
}

fn workload(node: &TestNode, name: &str) -> Container {
    Container::run_detached(
        &node.containerd,
        node.ns(),
        &node.image.reference,
        &unique_id("b"),
        &["sleep", "600"],
        &[(LABEL, name)],
    )
    .expect("run container")
}

fn sh(c: &Container, script: &str) {
    run_ok(c, &["/bin/sh", "-c", script]);
}

/// `layerguard baseline ARGS --json` on the node's socket: its standard output.
fn baseline_out(node: &TestNode, args: &[&str]) -> Vec<u8> {
    let socket = node.api_socket();
    let mut all = vec!["baseline"];
    all.extend_from_slice(args);
    all.extend(["--json", "--socket", socket.to_str().unwrap()]);
    let out = node.cli(&all);
    assert!(out.status.success(), "layerguard {all:?}: {out:?}");
    out.stdout
}

/// The CLI's output as JSON lines (list, lock, relearn, import).
fn baseline_cli(node: &TestNode, args: &[&str]) -> Vec<Value> {
    String::from_utf8(baseline_out(node, args))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A whole JSON document the CLI printed (export, show).
fn baseline_doc(node: &TestNode, args: &[&str]) -> Value {
    serde_json::from_slice(&baseline_out(node, args)).unwrap()
}

fn baseline_of(node: &TestNode, workload: &str) -> Option<Value> {
    baseline_cli(node, &["list"])
        .into_iter()
        .find(|b| b["workload"] == workload)
}

fn wait_state(node: &TestNode, workload: &str, state: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(b) = baseline_of(node, workload).filter(|b| b["state"] == state) {
            return b;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "baseline of {workload} never reached {state}: {:?}",
            baseline_cli(node, &["list"])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The baseline of `workload` once it learned at least `n` entries.
fn wait_entries(node: &TestNode, workload: &str, n: u64) -> Value {
    let start = Instant::now();
    loop {
        match baseline_of(node, workload) {
            Some(b) if b["entries"].as_u64().unwrap() >= n => return b,
            _ if start.elapsed() > Duration::from_secs(20) => {
                panic!("{workload} learned fewer than {n} entries")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn kind_path(kind: &'static str, path: &'static str) -> impl Fn(&Value) -> bool {
    move |a: &Value| a["kind"] == kind && a["evidence"]["path"] == path
}

fn baseline_alerts(node: &TestNode, c: &Container) -> Vec<Value> {
    node.alerts_for(c)
        .into_iter()
        .filter(|a| a["kind"].as_str().unwrap().starts_with("baseline_"))
        .collect()
}

/// Restarts the container's task the way a kubelet restart does: same container, a new
/// init process.
fn restart(node: &TestNode, c: &Container) {
    let ns = c.namespace();
    let _ = node
        .containerd
        .ctr_ns(ns, &["task", "kill", "-s", "SIGKILL", c.id()]);
    let start = Instant::now();
    while node
        .containerd
        .ctr_ns(ns, &["task", "delete", c.id()])
        .map_or(true, |o| !o.status.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "task of {} not deleted",
            c.id()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.containerd
        .ctr_ok(ns, &["task", "start", "-d", c.id()])
        .expect("task start");
}

/// The learned behaviour: a shell that runs the tool and writes a data file.
const LEARNED: &str = "/usr/bin/tool; echo x > /tmp/learned.txt";

#[test]
fn a_workload_learns_then_alerts_once_on_what_it_never_did() {
    let node = node_with(&[]);
    let c = workload(&node, "web");
    sh(&c, LEARNED);
    // An intruder during learning: alerted by its integrity verdict, never learned.
    sh(&c, &format!("cp {OTHER} /tmp/dropped && /tmp/dropped"));
    node.wait_alert(&c, kind_path("exec_not_in_image", "/tmp/dropped"));
    let b = wait_state(&node, "web", "monitoring");
    assert!(b["entries"].as_u64().unwrap() >= 3, "{b}");
    assert!(b["id"].as_str().unwrap().len() == 16, "{b}");
    let doc = baseline_doc(&node, &["export", b["id"].as_str().unwrap()]);
    let execs = doc["execs"].as_object().expect("execs");
    assert!(execs.contains_key(TOOL), "{doc}");
    assert!(
        !doc.to_string().contains("/tmp/dropped"),
        "an intruder's exec was learned: {doc}"
    );
    assert!(
        doc["writes"].as_object().unwrap().contains_key("/tmp"),
        "{doc}"
    );

    // Monitoring: the learned behaviour is quiet, in this container, after a restart of
    // it (a new init process), and in a replica.
    sh(&c, LEARNED);
    restart(&node, &c);
    sh(&c, LEARNED);
    let replica = workload(&node, "web");
    sh(&replica, LEARNED);
    // An image binary the workload never ran.
    sh(&c, OTHER);
    let a = node.wait_alert(&c, kind_path("baseline_unexpected_exec", OTHER));
    assert_eq!(a["severity"], "medium", "{a}");
    let e = &a["evidence"]["baseline"];
    assert_eq!(e["state"], "monitoring", "{a}");
    assert_eq!(e["id"], b["id"], "{a}");
    assert!(
        e["learned_instead"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == TOOL),
        "{a}"
    );
    assert!(
        a["evidence"]["reason"].as_str().unwrap().contains(TOOL),
        "{a}"
    );
    // The image's shell started by the runtime is learned; a shell started by the tool's
    // parent... the tool run straight by the runtime is a new parent of a learned exe.
    run_ok(&c, &[TOOL]);
    let a = node.wait_alert(&c, kind_path("baseline_unexpected_parent", TOOL));
    assert!(
        a["evidence"]["baseline"]["learned_instead"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().ends_with("/sh")
                || p.as_str().unwrap().ends_with("busybox")),
        "{a}"
    );
    // A directory never written.
    sh(&c, "mkdir -p /srv/new && echo x > /srv/new/f");
    let a = node.wait_alert(&c, kind_path("baseline_unexpected_write", "/srv/new"));
    assert_eq!(a["severity"], "medium", "{a}");
    // The writer, and its parent (not itself) as ppid and ancestry.
    let p = &a["process"];
    assert_ne!(p["ppid"], p["pid"], "{a}");
    assert!(
        p["ancestry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["pid"] != p["pid"]),
        "{a}"
    );
    // The same unexpected exec again: folded by the cooldown, not alerted.
    sh(&c, OTHER);
    // A marker: the dropped binary still alerts by its integrity verdict in monitoring.
    sh(
        &replica,
        &format!("cp {OTHER} /tmp/dropped && /tmp/dropped"),
    );
    node.wait_alert(&replica, kind_path("exec_not_in_image", "/tmp/dropped"));
    std::thread::sleep(Duration::from_millis(500));
    let unexpected: Vec<Value> = baseline_alerts(&node, &c)
        .into_iter()
        .filter(|a| a["kind"] == "baseline_unexpected_exec")
        .collect();
    assert_eq!(unexpected.len(), 1, "{unexpected:#?}");
    assert!(
        baseline_alerts(&node, &replica).is_empty(),
        "{:#?}",
        baseline_alerts(&node, &replica)
    );
}

#[test]
fn baselines_survive_a_crash_carry_over_an_upgrade_and_move_between_nodes() {
    let mut node = node_with(&["--set", "baseline.learn_seconds=3600"]);
    let c = workload(&node, "api");
    sh(&c, LEARNED);
    let b = wait_entries(&node, "api", 3);
    assert_eq!(b["state"], "learning", "learn_seconds is an hour: {b}");
    let id = b["id"].as_str().unwrap().to_string();
    // `lock` ends learning now (a prefix of the id will do).
    let locked = baseline_cli(&node, &["lock", &id[..8]]);
    assert_eq!(locked[0]["state"], "monitoring", "{locked:?}");

    // SIGKILL and restart: still monitoring, nothing lost. A workload that started while
    // the daemon was down learns, and says its baseline is partial.
    node.kill_daemon();
    let late = workload(&node, "late");
    node.start_daemon();
    let after = wait_state(&node, "api", "monitoring");
    assert_eq!(after["entries"], b["entries"], "{after}");
    sh(&late, LEARNED);
    let late_b = wait_entries(&node, "late", 2);
    assert_eq!(late_b["partial"], true, "{late_b}");
    assert!(
        late_b["partial_reasons"]
            .to_string()
            .contains("started after"),
        "{late_b}"
    );
    assert_eq!(after["partial"], false, "locked before the crash: {after}");
    sh(&c, LEARNED);
    sh(&c, OTHER);
    node.wait_alert(&c, kind_path("baseline_unexpected_exec", OTHER));
    let alerts = baseline_alerts(&node, &c);
    assert_eq!(alerts.len(), 1, "only the unexpected exec: {alerts:#?}");

    // An upgrade: the same binaries in a new image, a new container of the workload.
    let upgraded = node.import(
        layerguard_tests::oci::busybox_image(&format!("layerguard.test/{}:2", unique_id("up")))
            .unwrap()
            .layer(
                programs::programs_layer()
                    .file_from_host(TOOL, programs::tiny(), 0o755)
                    .file_from_host(OTHER, programs::tiny_other(), 0o755)
                    .dir("/srv", 0o755)
                    .file("/etc/release", "2\n", 0o644),
            ),
        NS,
    );
    let up = Container::run_detached(
        &node.containerd,
        NS,
        &upgraded.reference,
        &unique_id("b"),
        &["sleep", "600"],
        &[(LABEL, "api")],
    )
    .unwrap();
    sh(&up, LEARNED);
    let start = Instant::now();
    let seeded = loop {
        let all = baseline_cli(&node, &["list"]);
        if let Some(s) = all
            .iter()
            .find(|b| b["workload"] == "api" && b["id"] != id.as_str())
        {
            break s.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{all:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(seeded["state"], "monitoring", "{seeded}");
    assert_eq!(seeded["seeded_from"], b["manifest"], "{seeded}");
    // Quiet: a marker alert shows the daemon judged the upgraded container's execs.
    sh(&up, &format!("cp {OTHER} /tmp/marker && /tmp/marker"));
    node.wait_alert(&up, kind_path("exec_not_in_image", "/tmp/marker"));
    assert!(
        baseline_alerts(&node, &up).is_empty(),
        "{:#?}",
        baseline_alerts(&node, &up)
    );

    // Export, relearn (forgets), import (merges back): a fleet tool's round trip.
    let doc = baseline_doc(&node, &["export", &id]);
    let relearned = baseline_cli(&node, &["relearn", &id]);
    assert_eq!(relearned[0]["state"], "learning", "{relearned:?}");
    assert_eq!(relearned[0]["entries"], 0, "{relearned:?}");
    let file = node.state_dir().join("exported.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let imported = baseline_cli(&node, &["import", file.to_str().unwrap()]);
    assert_eq!(imported[0]["entries"], b["entries"], "{imported:?}");
    // A malformed document is refused with a reason.
    std::fs::write(&file, "{\"format\": 99}").unwrap();
    let socket = node.api_socket();
    let out = node.cli(&[
        "baseline",
        "import",
        file.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("format 99"), "{err}");
}
