//! Automatic response by policy and network isolation, end to end: the real daemon pausing
//! real containers on their alerts (the cgroup freezer says frozen), a dry run, a
//! `respond.never` container and a rate-limited burst left alone and reported, and a
//! container's traffic to a peer network namespace cut by `isolate` and restored by
//! `release`.
//!
//! User story: at 3 a.m. a dropped binary in production is frozen by policy and the SOC
//! reads why in the `response_taken` alert; the cluster's own pods are never touched.

use std::process::Command;
use std::time::{Duration, Instant};

use layerguard_tests::container::{freezer_state, unique_id, Container};
use layerguard_tests::node::{run_ok, TestNode};
use serde_json::Value;

const NS: &str = "lg-respond";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("layerguard.toml");
    std::fs::write(
        &path,
        format!(
            r#"[respond]
max_actions_per_minute = 3

[[respond.policy]]
name = "dry-run-staging"
kinds = ["exec_not_in_image"]
images = ["layerguard.test/staging/*"]
action = "kill"
mode = "dry_run"

[[respond.policy]]
name = "freeze-dropped-binaries"
kinds = ["exec_not_in_image", "exec_modified"]
namespaces = ["{NS}"]
action = "pause"
mode = "enforce"
"#
        ),
    )
    .unwrap();
    path
}

fn drop_binary(c: &Container, name: &str) {
    run_ok(c, &["cp", "/bin/busybox", &format!("/tmp/{name}")]);
    // The binary runs and exits before the response: what is judged is the exec.
    let _ = c.exec(&["sh", "-c", &format!("/tmp/{name} true; true")]);
}

fn response_for(node: &TestNode, c: &Container) -> Value {
    node.wait_alert(c, |a| {
        a["kind"]
            .as_str()
            .is_some_and(|k| k.starts_with("response_"))
    })
}

fn trigger_of(node: &TestNode, c: &Container) -> Value {
    node.wait_alert(c, |a| a["kind"] == "exec_not_in_image")
}

#[test]
fn policies_pause_dry_run_spare_never_containers_and_respect_the_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let node = TestNode::builder(NS)
        .args(&["--config", config.to_str().unwrap()])
        .build();

    // Paused by policy: the freezer says frozen, and the response names its trigger.
    let c = node.container();
    drop_binary(&c, "x");
    let trigger = trigger_of(&node, &c);
    let r = response_for(&node, &c);
    assert_eq!(r["kind"], "response_taken", "{r}");
    assert_eq!(r["severity"], "info");
    let e = &r["evidence"]["response"];
    assert_eq!(e["action"], "pause");
    assert_eq!(e["rule"], "freeze-dropped-binaries");
    assert_eq!(e["result"], "taken");
    assert_eq!(e["trigger_seq"], trigger["seq"]);
    assert_eq!(e["trigger_id"], trigger["id"]);
    assert_eq!(e["task_status"], "paused");
    assert_eq!(c.status().unwrap(), "PAUSED");
    assert_eq!(freezer_state(c.pid().unwrap()), "FROZEN");
    eprintln!(
        "alert {} at {}, paused by policy at {}",
        trigger["seq"], trigger["time"], r["time"]
    );

    // A dry run records and does nothing.
    let staging = node.import(
        layerguard_tests::busybox_image("layerguard.test/staging/app:1").unwrap(),
        NS,
    );
    let s = node.container_of(NS, &staging);
    drop_binary(&s, "y");
    let r = response_for(&node, &s);
    assert_eq!(r["kind"], "response_taken", "{r}");
    assert_eq!(r["evidence"]["response"]["dry_run"], true, "{r}");
    assert_eq!(r["evidence"]["response"]["action"], "kill", "{r}");
    assert_eq!(r["evidence"]["response"]["result"], "dry_run", "{r}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.status().unwrap(), "RUNNING");

    // A kube-system pod is never touched, and it is reported.
    let system = Container::run_detached(
        &node.containerd,
        NS,
        &node.image.reference,
        &unique_id("sys"),
        &["sleep", "600"],
        &[
            ("io.kubernetes.pod.namespace", "kube-system"),
            ("io.kubernetes.pod.name", "coredns-x"),
        ],
    )
    .unwrap();
    drop_binary(&system, "z");
    let r = response_for(&node, &system);
    assert_eq!(r["kind"], "response_failed", "{r}");
    assert_eq!(r["evidence"]["response"]["result"], "never", "{r}");
    assert!(
        r["evidence"]["reason"]
            .as_str()
            .unwrap()
            .contains("kube-system"),
        "{r}"
    );
    assert_eq!(system.status().unwrap(), "RUNNING");

    // A burst past max_actions_per_minute (3: the pause and the dry run count, so one more
    // is taken): the rest are left alone and reported.
    let burst: Vec<Container> = (0..3).map(|_| node.container()).collect();
    for (i, b) in burst.iter().enumerate() {
        drop_binary(b, &format!("b{i}"));
    }
    let results: Vec<String> = burst
        .iter()
        .map(|b| {
            response_for(&node, b)["evidence"]["response"]["result"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        results.iter().filter(|r| *r == "taken").count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| *r == "rate_limited").count(),
        2,
        "{results:?}"
    );
    for (b, result) in burst.iter().zip(&results) {
        let want = if result == "taken" {
            "PAUSED"
        } else {
            "RUNNING"
        };
        assert_eq!(b.status().unwrap(), want, "{result}");
    }

    // Release by hand: thawed, and reported with the caller.
    let socket = node.api_socket();
    let out = node.cli(&[
        "respond",
        "release",
        "--namespace",
        NS,
        "--socket",
        socket.to_str().unwrap(),
        c.id(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(freezer_state(c.pid().unwrap()), "THAWED");
    let r = node.wait_alert(&c, |a| {
        a["kind"] == "response_taken" && a["evidence"]["response"]["action"] == "release"
    });
    assert!(r["evidence"]["response"]["caller"].is_string(), "{r}");
}

/// A network namespace with one end of a veth pair whose other end is in a container:
/// the peer the isolation test pings. Deleted (and the pair with it) when dropped.
struct Peer {
    netns: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

impl Peer {
    fn connect(container_pid: u32, subnet: u8) -> Self {
        let tag = format!("{:x}", std::process::id() % 0xffff);
        let netns = format!("lg-peer-{tag}");
        let (outside, inside) = (format!("lgp{tag}"), format!("lgc{tag}"));
        ip(&["netns", "add", &netns]);
        let peer = Peer { netns };
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &container_pid.to_string()]);
        ip(&["link", "set", &outside, "netns", &peer.netns]);
        ip(&[
            "-n",
            &peer.netns,
            "addr",
            "add",
            &format!("10.{subnet}.0.1/24"),
            "dev",
            &outside,
        ]);
        ip(&["-n", &peer.netns, "link", "set", &outside, "up"]);
        let enter = |args: &[&str]| {
            let out = Command::new("nsenter")
                .arg(format!("--net=/proc/{container_pid}/ns/net"))
                .arg("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?} in the container: {out:?}"
            );
        };
        enter(&[
            "addr",
            "add",
            &format!("10.{subnet}.0.2/24"),
            "dev",
            &inside,
        ]);
        enter(&["link", "set", &inside, "up"]);
        enter(&["link", "set", "lo", "up"]);
        peer
    }

    /// One ping from the peer to `addr` answered within a second.
    fn reaches(&self, addr: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                addr,
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .output();
    }
}

#[test]
fn isolate_cuts_a_containers_traffic_to_a_peer_and_release_restores_it() {
    let node = TestNode::builder(NS).build();
    let c = node.container();
    let peer = Peer::connect(c.pid().unwrap(), 203);
    let start = Instant::now();
    while !peer.reaches("10.203.0.2") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the peer never reached the container"
        );
    }
    let socket = node.api_socket();
    let respond = |verb: &str| {
        let out = node.cli(&[
            "respond",
            verb,
            "--namespace",
            NS,
            "--reason",
            "test",
            "--socket",
            socket.to_str().unwrap(),
            c.id(),
        ]);
        assert!(out.status.success(), "{verb}: {out:?}");
    };
    respond("isolate");
    assert!(
        !peer.reaches("10.203.0.2"),
        "isolated, yet the peer got an answer"
    );
    assert_eq!(
        c.status().unwrap(),
        "RUNNING",
        "isolation keeps the container running"
    );
    // Loopback still works inside.
    run_ok(
        &c,
        &["sh", "-c", "busybox ping -c 1 -W 1 127.0.0.1 >/dev/null"],
    );
    let r = node.wait_alert(&c, |a| {
        a["kind"] == "response_taken" && a["evidence"]["response"]["action"] == "isolate"
    });
    assert_eq!(r["evidence"]["response"]["result"], "taken", "{r}");

    respond("release");
    let start = Instant::now();
    while !peer.reaches("10.203.0.2") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "release did not restore traffic"
        );
    }

    // A container on the host's network cannot be isolated, and the answer says so.
    let host_net = Container::run_with(
        &node.containerd,
        NS,
        &node.image.reference,
        &unique_id("host"),
        &["sleep", "600"],
        &layerguard_tests::RunOptions::default().flag("--net-host"),
    )
    .unwrap();
    let out = node.cli(&[
        "respond",
        "isolate",
        "--namespace",
        NS,
        "--socket",
        socket.to_str().unwrap(),
        host_net.id(),
    ]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("host's network namespace"), "{said}");
    let r = node.wait_alert(&host_net, |a| a["kind"] == "response_failed");
    assert_eq!(r["severity"], "high", "{r}");
}
