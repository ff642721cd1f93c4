//! The kernel sensor, end to end: the real daemon, a real containerd, real containers.
//!
//! User story: an operator runs `layerguard run` on a node and every program a container
//! executes shows up as one exec record that tells where the file really lives (image
//! layer or the container's writable layer, memfd), while the host's own processes stay
//! out of it.

use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use layerguard_tests::node::{is_exec_of, TestNode, WAIT};
use layerguard_tests::{programs, unique_id, Container};
use serde_json::Value;

const NS: &str = "lg-sensor";

/// A test node (busybox with a few test programs) with one running container.
struct Node {
    container: Container,
    container_mnt_ns: u64,
    node: TestNode,
}

impl Deref for Node {
    type Target = TestNode;
    fn deref(&self) -> &TestNode {
        &self.node
    }
}

fn start_node(extra_daemon_args: &[&str]) -> Node {
    let node = TestNode::builder(NS)
        .layer(programs::programs_layer().file(
            "/app/hello.sh",
            "#!/bin/sh\necho hello-from-script\n",
            0o755,
        ))
        // These tests read the per-exec records, which are off by default.
        .log_execs()
        .args(extra_daemon_args)
        .build();
    let container = node.container();
    let pid = container.pid().expect("container pid");
    let container_mnt_ns = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .expect("container mount namespace")
        .ino();
    Node {
        container,
        container_mnt_ns,
        node,
    }
}

impl Node {
    /// Waits until there are `n` exec records of /usr/local/bin/tiny in the container, at
    /// most [`WAIT`], and returns how many there are. A first-seen binary is judged (and its record logged) on the
    /// blocking pool, so records can come after a later cached exec's.
    fn wait_for_tiny_records(&self, n: usize) -> usize {
        let count = || {
            self.daemon()
                .json_lines()
                .iter()
                .filter(|v| v["message"] == "exec" && v["filename"] == programs::TINY)
                .filter(|v| v["process"]["mnt_ns"].as_u64() == Some(self.container_mnt_ns))
                .count()
        };
        let deadline = std::time::Instant::now() + WAIT;
        while count() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        count()
    }

    /// Runs `args` in the container and returns the exec record whose argv is `expect_argv`.
    fn exec_and_find(&self, args: &[&str], expect_argv: &[&str]) -> Value {
        let cursor = self.daemon().cursor();
        let out = self.container.exec(args).expect("exec in container");
        assert!(
            out.status.success(),
            "{args:?} failed in the container: {out:?}"
        );
        self.exec_record_after(cursor, expect_argv)
    }
}

#[test]
fn image_binary_exec_is_logged_with_the_container_mount_namespace_and_lower_layer() {
    let node = start_node(&[]);
    let marker = unique_id("image-bin");
    let rec = node.exec_and_find(
        &["/bin/busybox", "echo", &marker],
        &["/bin/busybox", "echo", &marker],
    );
    assert_eq!(
        rec["process"]["mnt_ns"].as_u64(),
        Some(node.container_mnt_ns)
    );
    assert_ne!(node.container_mnt_ns, node.host_mnt_ns());
    assert_eq!(rec["filename"], "/bin/busybox");
    assert_eq!(rec["overlay"], true, "{rec}");
    assert_eq!(rec["upper_layer"], false, "{rec}");
    assert_eq!(rec["memfd"], false);
    assert_eq!(rec["deleted"], false);
    // The lower file is the busybox layer's copy: same size as the host's static busybox.
    let host_size = std::fs::metadata("/bin/busybox").unwrap().len();
    assert_eq!(rec["size"].as_u64(), Some(host_size), "{rec}");
}

#[test]
fn binary_copied_to_tmp_is_logged_in_the_upper_layer() {
    let node = start_node(&[]);
    let marker = unique_id("dropped");
    let out = node
        .container
        // busybox picks its applet from argv[0]: the copy is named after one.
        .exec(&["cp", "/bin/busybox", "/tmp/echo"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rec = node.exec_and_find(&["/tmp/echo", &marker], &["/tmp/echo", &marker]);
    assert_eq!(rec["filename"], "/tmp/echo");
    assert_eq!(rec["upper_layer"], true, "{rec}");
    assert_eq!(
        rec["process"]["mnt_ns"].as_u64(),
        Some(node.container_mnt_ns)
    );
    // The real inode is the upper dir's file, on the host filesystem.
    let upper = node.container.upper_dir().unwrap().join("tmp/echo");
    let meta = std::fs::metadata(&upper).expect("dropped file in the upper dir");
    assert_eq!(rec["real_file"]["ino"].as_u64(), Some(meta.ino()), "{rec}");
    assert_eq!(rec["real_file"]["dev"].as_u64(), Some(meta.dev()), "{rec}");
}

#[test]
fn chmod_of_an_image_binary_copies_it_up_to_a_new_real_inode() {
    let node = start_node(&[]);
    let before = node.exec_and_find(
        &["/bin/busybox", "echo", "before"],
        &["/bin/busybox", "echo", "before"],
    );
    assert_eq!(before["upper_layer"], false, "{before}");
    let lower_ino = before["real_file"]["ino"].as_u64().unwrap();
    // The lower inode is the one in the image's layer directory on the host.
    let lower = node.container.lower_dirs().unwrap()[0].join("bin/busybox");
    assert_eq!(
        std::fs::metadata(&lower).unwrap().ino(),
        lower_ino,
        "{before}"
    );

    let out = node
        .container
        .exec(&["chmod", "0775", "/bin/busybox"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = node.exec_and_find(
        &["/bin/busybox", "echo", "after"],
        &["/bin/busybox", "echo", "after"],
    );
    assert_eq!(after["upper_layer"], true, "{after}");
    let upper_ino = after["real_file"]["ino"].as_u64().unwrap();
    assert_ne!(
        upper_ino, lower_ino,
        "copy-up must give a new real inode: {after}"
    );
    let upper = node.container.upper_dir().unwrap().join("bin/busybox");
    assert_eq!(
        std::fs::metadata(&upper).unwrap().ino(),
        upper_ino,
        "{after}"
    );
    // The overlay inode number the process sees does not change with copy-up, which is why
    // the sensor reports the real one.
    assert_eq!(after["file"]["ino"], before["file"]["ino"]);
}

#[test]
fn script_exec_shows_script_and_interpreter() {
    let node = start_node(&[]);
    let rec = node.exec_and_find(&["/app/hello.sh", "x"], &["/bin/sh", "/app/hello.sh", "x"]);
    assert_eq!(rec["filename"], "/app/hello.sh", "{rec}");
    assert_eq!(rec["interpreter"], "/bin/sh", "{rec}");

    // Relative path, as a shell runs `./x.sh`.
    let cursor = node.daemon().cursor();
    let out = node
        .container
        .exec(&["sh", "-c", "cd /app && ./hello.sh rel"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rel = node.wait_line_after(cursor, "a ./hello.sh exec", |v| {
        v["message"] == "exec" && v["filename"] == "./hello.sh"
    });
    assert_eq!(rel["interpreter"], "/bin/sh", "{rel}");
}

#[test]
fn memfd_exec_is_flagged() {
    let node = start_node(&[]);
    let marker = unique_id("memfd");
    let rec = node.exec_and_find(
        &["/usr/local/bin/memfd_exec", "/bin/busybox", "echo", &marker],
        &["/bin/busybox", "echo", &marker],
    );
    assert_eq!(rec["memfd"], true, "{rec}");
    assert!(
        rec["filename"].as_str().unwrap().starts_with("/dev/fd/"),
        "fexecve passes /dev/fd/N: {rec}"
    );
    assert_eq!(rec["overlay"], false, "{rec}");
}

#[test]
fn processes_living_under_a_millisecond_are_all_seen() {
    let node = start_node(&[]);
    const N: usize = 25;
    let script = format!("for i in $(seq {N}); do /usr/local/bin/tiny; done");
    let out = node.container.exec(&["sh", "-c", &script]).unwrap();
    assert!(out.status.success(), "{out:?}");
    // The loop's end is marked by an exec after it; every tiny exec before it must be there.
    let marker = unique_id("after-tiny");
    node.exec_and_find(
        &["/bin/busybox", "echo", &marker],
        &["/bin/busybox", "echo", &marker],
    );
    // The kernel delivered them before the marker, but a first-seen binary is judged (and
    // its record logged) on the blocking pool while a cached one like the marker is logged
    // at once: give the judgements the usual time to finish before counting.
    let seen = node.wait_for_tiny_records(N);
    assert_eq!(
        seen, N,
        "a program that exits at once (tiny: _exit(0)) must still be seen"
    );
}

#[test]
fn host_execs_are_not_logged_by_default() {
    let node = start_node(&[]);
    let host_marker = unique_id("host");
    let out = std::process::Command::new("/bin/echo")
        .arg(&host_marker)
        .output()
        .unwrap();
    assert!(out.status.success());
    // Events leave the ring buffer in order: once a later container exec is seen, the host
    // exec would have been seen too.
    let marker = unique_id("container");
    node.exec_and_find(
        &["/bin/busybox", "echo", &marker],
        &["/bin/busybox", "echo", &marker],
    );
    let leaked: Vec<Value> = node
        .daemon()
        .json_lines()
        .into_iter()
        .filter(|v| v["message"] == "exec")
        .filter(|v| {
            v["process"]["mnt_ns"].as_u64() == Some(node.host_mnt_ns())
                || v.to_string().contains(&host_marker)
        })
        .collect();
    assert!(leaked.is_empty(), "host execs were logged: {leaked:?}");
}

#[test]
fn host_execs_are_logged_with_monitor_host() {
    let node = start_node(&["--monitor-host"]);
    let host_marker = unique_id("host");
    let cursor = node.daemon().cursor();
    let out = std::process::Command::new("/bin/echo")
        .arg(&host_marker)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rec = node.wait_line_after(cursor, "the host exec", |v| {
        is_exec_of(v, &["/bin/echo", &host_marker])
    });
    assert_eq!(rec["process"]["mnt_ns"].as_u64(), Some(node.host_mnt_ns()));
}

#[test]
fn sigterm_detaches_the_sensor_and_exits_cleanly() {
    let mut node = start_node(&[]);
    let mut daemon = node.node.stop_daemon();
    let status = daemon.stop().expect("stop daemon");
    assert!(status.success(), "exit status {status:?}");
    let lines = daemon.json_lines();
    assert!(lines.iter().any(|v| v["message"] == "sensor detached"));
    assert!(lines.iter().any(|v| v["message"] == "layerguard stopped"));
    // No layerguard program stays attached after exit.
    let progs = std::process::Command::new("bpftool")
        .args(["prog", "show"])
        .output();
    if let Ok(out) = progs {
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = daemon.pid();
        assert!(
            !text.contains(&format!("pids layerguard({pid})")),
            "programs still held by the daemon:\n{text}"
        );
    }
}

/// The scheduling policy of the daemon's event pipeline thread (`lg-pipeline`), from
/// field 41 of its /proc stat line: 1 SCHED_FIFO, 3 SCHED_BATCH.
fn pipeline_policy(daemon_pid: u32) -> Option<u32> {
    for task in std::fs::read_dir(format!("/proc/{daemon_pid}/task")).ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() != "lg-pipeline" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised comm start at field 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        return rest.split_whitespace().nth(41 - 3)?.parse().ok();
    }
    None
}

fn wait_for_policy(daemon_pid: u32, policy: u32) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if pipeline_policy(daemon_pid) == Some(policy) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn pipeline_is_real_time_when_quiet_and_batch_during_an_exec_storm() {
    const FIFO: u32 = 1;
    const BATCH: u32 = 3;
    let node = start_node(&[]);
    let pid = node.daemon().pid();
    assert!(
        wait_for_policy(pid, FIFO),
        "a quiet daemon's pipeline thread should be SCHED_FIFO, it is {:?}",
        pipeline_policy(pid)
    );
    // An exec storm: thousands of execs back to back, far above 10 in 50 ms.
    const STORM_EXECS: usize = 3000;
    let storm =
        format!("i=0; while [ $i -lt {STORM_EXECS} ]; do /usr/local/bin/tiny; i=$((i+1)); done");
    let seen_batch = std::thread::scope(|s| {
        let run = s.spawn(|| node.container.exec(&["sh", "-c", &storm]));
        let mut seen = Vec::new();
        while !run.is_finished() {
            if let Some(p) = pipeline_policy(pid) {
                if seen.last() != Some(&p) {
                    seen.push(p);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let out = run.join().unwrap().expect("exec storm");
        assert!(out.status.success(), "{out:?}");
        seen
    });
    assert!(
        seen_batch.contains(&BATCH),
        "during the storm the pipeline thread should turn SCHED_BATCH; policies seen: \
         {seen_batch:?}"
    );
    assert!(
        wait_for_policy(pid, FIFO),
        "after the storm the pipeline thread should be SCHED_FIFO again, it is {:?}",
        pipeline_policy(pid)
    );
    // Every exec of the storm was delivered.
    assert_eq!(
        node.wait_for_tiny_records(STORM_EXECS),
        STORM_EXECS,
        "every exec of the storm is recorded"
    );
}
