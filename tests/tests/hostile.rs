//! A hostile container against the real daemon: it cannot stall, blind or fool it, and
//! the journal and the alert file never lose or renumber intact alerts.
//!
//! User story: an attacker inside one container tries what the hostile-input issue
//! reproduced against an earlier build (FIFOs as scripts, paths past 255 bytes, a huge
//! sparse binary, busybox's `/proc/self/exe`, a damaged journal, a full disk); the node
//! keeps judging every container, says what it could not judge and why, and the alert
//! record stays whole.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use layerguard_tests::node::{run_ok, TestNode, WAIT};
use layerguard_tests::programs;
use layerguard_tests::{daemon_binary, unique_id, DaemonProcess, Layer};
use serde_json::Value;

const NS: &str = "lg-hostile";

/// Seconds since the epoch of an RFC 3339 UTC time with a fraction, as the daemon writes
/// them (`2026-11-25T01:15:22.051066Z`).
fn epoch_seconds(t: &str) -> f64 {
    let (date, time) = t
        .trim_end_matches('Z')
        .split_once('T')
        .expect("a date and time");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let hms: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    days as f64 * 86_400.0 + hms[0] * 3600.0 + hms[1] * 60.0 + hms[2]
}

/// How long the daemon took from the kernel's exec event to raising the alert.
fn daemon_latency(alert: &Value) -> f64 {
    let ran = alert["process"]["exec_time"].as_str().expect("exec_time");
    let raised = alert["time"].as_str().expect("time");
    epoch_seconds(raised) - epoch_seconds(ran)
}

/// Bytes the daemon read through read(2) and friends so far (`/proc/PID/io` rchar).
fn bytes_read_by(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar")
}

#[test]
fn fifos_run_as_scripts_never_stall_other_containers_or_shutdown() {
    let mut node = TestNode::builder(NS).build();
    let hostile = node.container();
    let victim = node.container();
    // Five scripts that are FIFOs: opening one for reading blocks until a writer comes.
    let out = hostile
        .exec_timeout(
            &[
                "sh",
                "-c",
                "for i in 1 2 3 4 5; do busybox mkfifo /tmp/ff$i; \
                 sh /tmp/ff$i </dev/null >/dev/null 2>&1 & done; sleep 1",
            ],
            Duration::from_secs(30),
        )
        .expect("exec the FIFO scripts");
    assert!(out.status.success(), "{out:?}");
    // Meanwhile, in another container, a dropped binary: judged as if nothing happened.
    run_ok(&victim, &["cp", "/bin/busybox", "/tmp/true"]);
    run_ok(&victim, &["/tmp/true"]);
    let a = node.wait_alert(&victim, |a| {
        a["kind"] == "exec_not_in_image" && a["evidence"]["path"] == "/tmp/true"
    });
    let took = daemon_latency(&a);
    assert!(
        took < 1.0,
        "the other container's alert took {took:.3} s from the exec to the alert"
    );
    // Each FIFO is judged too: unverifiable, saying what it is, not read.
    for i in 1..=5 {
        let path = format!("/tmp/ff{i}");
        let a = node.wait_alert(&hostile, |a| {
            a["kind"] == "exec_unverifiable" && a["evidence"]["path"] == path.as_str()
        });
        let reason = a["evidence"]["reason"].as_str().unwrap();
        assert!(reason.contains("a FIFO"), "{reason}");
        assert!(reason.contains("not a regular file"), "{reason}");
    }
    // And the daemon stops cleanly, within the harness's stop timeout.
    let started = Instant::now();
    let mut stopped = node.stop_daemon();
    let status = stopped.try_exit_status().unwrap().expect("exited");
    assert!(
        status.success(),
        "SIGTERM did not stop the daemon cleanly ({status:?}) after {:?}",
        started.elapsed()
    );
}

/// A script dropped beside the image's busybox, in a directory whose name starts with
/// the binary's: a path cut at 255 bytes would read as `/bin/busybox`.
fn drop_evil_script(c: &layerguard_tests::Container) {
    run_ok(
        c,
        &[
            "sh",
            "-c",
            "mkdir -p /bin/busyboxX && printf '#!/bin/sh\\necho EVIL\\n' > /bin/busyboxX/evil.sh \
             && chmod +x /bin/busyboxX/evil.sh",
        ],
    );
}

#[test]
fn long_paths_do_not_hide_a_dropped_script() {
    let node = TestNode::builder(NS).build();
    let c = node.container();
    drop_evil_script(&c);

    // 255 bytes of `//././...` then the script: exec'd directly by `sh -c`.
    let p255 = format!("//{}bin/busybox", "./".repeat(121));
    assert_eq!(p255.len(), 255);
    let direct = format!("{p255}X/evil.sh");
    let out = c.exec(&["sh", "-c", &direct]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("EVIL"),
        "{out:?}"
    );
    let a = node.wait_alert(&c, |a| {
        a["kind"] == "exec_not_in_image" && a["evidence"]["path"] == "/bin/busyboxX/evil.sh"
    });
    assert_eq!(a["evidence"]["interpreter"], "/bin/sh", "{a}");

    // `sh <508-byte path>`: the script is an argument.
    let pad = (508 - "/bin/busyboxX/evil.sh".len()) / 2;
    let mut p508 = format!("/{}bin/busyboxX/evil.sh", "./".repeat(pad));
    while p508.len() < 508 {
        p508.insert(0, '/');
    }
    assert_eq!(p508.len(), 508);
    let cursor = node.daemon().cursor();
    let out = c.exec(&["sh", &p508]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("EVIL"),
        "{out:?}"
    );
    let a = node.wait_alert_after(cursor, &c, |a| a["process"]["argv"][1] == p508.as_str());
    assert_eq!(a["kind"], "exec_not_in_image", "{a}");
    assert_eq!(a["evidence"]["path"], "/bin/busyboxX/evil.sh", "{a}");

    // An argv longer than the sensor keeps, cut inside the script argument: recovered
    // from /proc while the process lives, or unverifiable; never `verified`.
    let long_argv0 = format!("/{}bin/sh", "./".repeat(1900));
    let cursor = node.daemon().cursor();
    let out = c
        .exec(&["sh", "-c", &format!("exec -a {long_argv0} /bin/sh {p508}")])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("EVIL"),
        "{out:?}"
    );
    let a = node.wait_alert_after(cursor, &c, |a| {
        a["process"]["argv"][0] == long_argv0.as_str()
    });
    assert!(
        a["kind"] == "exec_not_in_image" || a["kind"] == "exec_unverifiable",
        "{a}"
    );
}

#[test]
fn a_huge_sparse_binary_is_unverifiable_at_once_and_never_read() {
    let node = TestNode::builder(NS).build();
    let c = node.container();
    run_ok(
        &c,
        &[
            "sh",
            "-c",
            "cp /bin/busybox /tmp/true && busybox truncate -s 2G /tmp/true",
        ],
    );
    // The image is indexed (its layers read from containerd) before the measurement.
    run_ok(&c, &["cp", "/bin/busybox", "/tmp/echo"]);
    run_ok(&c, &["/tmp/echo", "warm"]);
    // Exec alerts (the copies are file alerts too: `file_executable_created`, whose
    // digest of the 2 GB file is not taken either, see files.rs).
    let exec_of = |path: &'static str| {
        move |a: &Value| {
            a["evidence"]["path"] == path
                && a["kind"].as_str().is_some_and(|k| k.starts_with("exec_"))
        }
    };
    wait_alerts(&node, &c, 1, exec_of("/tmp/echo"));
    let pid = node.daemon().pid();
    let before = bytes_read_by(pid);
    for _ in 0..4 {
        run_ok(&c, &["/tmp/true"]);
    }
    let alerts = wait_alerts(&node, &c, 4, exec_of("/tmp/true"));
    assert_eq!(alerts.len(), 4, "{alerts:#?}");
    for a in &alerts {
        assert_eq!(a["kind"], "exec_unverifiable", "{a}");
        let reason = a["evidence"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("2147483648 bytes")
                && reason.contains("verify.max_file_bytes")
                && reason.contains("not hashed"),
            "{reason}"
        );
        assert!(reason.contains("the image has no file"), "{reason}");
    }
    // The kernel told the size: not one chunk of the 2 GB was read (the daemon's own
    // reads in the meantime, /proc and the like, are far below a MiB).
    let read = bytes_read_by(pid) - before;
    assert!(read < 16 << 20, "the daemon read {read} bytes");
    // The file analyzer saw the new executable, and did not read it either.
    let file = wait_alerts(&node, &c, 1, |a| {
        a["kind"] == "file_executable_created" && a["evidence"]["path"] == "/tmp/true"
    });
    let e = &file[0]["evidence"];
    assert!(e.get("actual_sha256").is_none(), "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("over the hashing limit"),
        "{e}"
    );
}

#[test]
fn busybox_reexecs_and_deep_image_paths_are_verified() {
    let tiny = programs::tiny();
    let deep_dir = format!("/deep{}", "/d".repeat(200));
    let long_name = format!("/opt/{}", "n".repeat(255));
    let node = TestNode::builder(NS)
        .layer(
            Layer::new()
                .file_from_host(&format!("{deep_dir}/tool"), &tiny, 0o755)
                .file_from_host(&long_name, &tiny, 0o755),
        )
        .log_execs()
        .build();
    let c = node.container();
    // busybox's shell running an applet again through the magic link, as its standalone
    // shell does (argv[0] is the applet).
    run_ok(
        &c,
        &[
            "sh",
            "-c",
            "(exec -a echo /proc/self/exe reexec) && exec -a true /proc/self/exe",
        ],
    );
    for argv in [&["echo", "reexec"][..], &["true"][..]] {
        let v = node.verdict_of(&c, argv);
        assert_eq!(v["filename"], "/proc/self/exe", "{v}");
        assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
        assert_eq!(v["verdict"]["path"], "/bin/busybox", "{v}");
    }
    // Image files past 255 bytes, by absolute and relative names.
    let deep_tool = format!("{deep_dir}/tool");
    run_ok(&c, &[&deep_tool]);
    let v = node.verdict_of(&c, &[&deep_tool]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    run_ok(&c, &[&long_name]);
    let v = node.verdict_of(&c, &[&long_name]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    run_ok(
        &c,
        &["sh", "-c", &format!("cd {deep_dir} && ./tool relative")],
    );
    let v = node.verdict_of(&c, &["./tool", "relative"]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    assert_eq!(v["cwd"], deep_dir.as_str(), "{v}");
    let alerts = node.alerts_for(&c);
    assert!(alerts.is_empty(), "unexpected alerts: {alerts:#?}");
}

#[test]
fn containers_running_before_the_daemon_are_judged_like_new_ones() {
    let mut node = TestNode::builder(NS).log_execs().without_daemon().build();
    let c = node.container();
    run_ok(&c, &["cp", "/bin/busybox", "/tmp/true"]);
    node.start_daemon();
    // Short-lived: gone before the daemon reads it, so only the container's own (older)
    // processes can open its root.
    let marker = unique_id("pre");
    run_ok(&c, &["sh", "-c", &format!("true {marker}")]);
    let v = node.verdict_of(&c, &["sh", "-c", &format!("true {marker}")]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    run_ok(&c, &["sh", "-c", "/tmp/true"]);
    // (The exec's read of /tmp/true also shows the daemon the file, which is a new
    // executable: a `file_executable_created` alert may come first.)
    node.wait_alert(&c, |a| {
        a["evidence"]["path"] == "/tmp/true" && a["kind"] == "exec_not_in_image"
    });
    // And after a restart of the daemon, the same.
    drop(node.stop_daemon());
    node.start_daemon();
    let marker = unique_id("restart");
    run_ok(&c, &["sh", "-c", &format!("true {marker}")]);
    let v = node.verdict_of(&c, &["sh", "-c", &format!("true {marker}")]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    let unverifiable: Vec<Value> = node
        .alerts_for(&c)
        .into_iter()
        .filter(|a| a["kind"] == "exec_unverifiable")
        .collect();
    assert!(unverifiable.is_empty(), "{unverifiable:#?}");
}

/// Alerts of `layerguard watch --json` output lines, and its gaps as (first, last).
fn watch_output(lines: &[Value]) -> (Vec<u64>, Vec<(u64, u64)>) {
    let seqs = lines.iter().filter_map(|v| v["seq"].as_u64()).collect();
    let gaps = lines
        .iter()
        .filter(|v| v["gap"].is_object())
        .map(|v| {
            (
                v["gap"]["first_seq"].as_u64().unwrap(),
                v["gap"]["last_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    (seqs, gaps)
}

/// `layerguard watch --json ARGS` against the node's daemon until it exits.
fn watch_until_exit(node: &TestNode, args: &[&str]) -> Vec<Value> {
    let socket = node.api_socket();
    let mut all = vec!["watch", "--json", "--socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let out =
        layerguard_tests::util::run_with_timeout(Command::new(daemon_binary()).args(&all), WAIT)
            .expect("layerguard watch");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Alerts the daemon has logged so far.
fn alert_count(node: &TestNode) -> usize {
    node.daemon()
        .json_lines()
        .iter()
        .filter(|v| v["message"] == "alert")
        .count()
}

/// Waits until `pred` holds for at least `n` alerts of container `c`; returns them.
fn wait_alerts(
    node: &TestNode,
    c: &layerguard_tests::Container,
    n: usize,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<Value> = node.alerts_for(c).into_iter().filter(|a| pred(a)).collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} alerts after {WAIT:?}:\n{}",
            found.len(),
            node.daemon().dump_string(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the dropped binary (/tmp/true, a copy of busybox) `n` times and waits for its `n` alerts.
fn raise_alerts(node: &TestNode, c: &layerguard_tests::Container, n: usize) {
    let before = alert_count(node);
    for _ in 0..n {
        run_ok(c, &["/tmp/true"]);
    }
    let deadline = Instant::now() + WAIT;
    while alert_count(node) < before + n {
        assert!(Instant::now() < deadline, "{n} alerts not raised");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_damaged_journal_record_costs_only_itself_and_seq_goes_on() {
    let mut node = TestNode::builder(NS).build();
    let c = node.container();
    run_ok(&c, &["cp", "/bin/busybox", "/tmp/true"]);
    raise_alerts(&node, &c, 14);
    drop(node.stop_daemon());
    let journal = node.state_dir().join("journal");
    let seg: PathBuf = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a journal segment");
    assert_eq!(
        std::fs::metadata(&seg).unwrap().permissions().mode() & 0o777,
        0o600,
        "alerts are private"
    );
    // One byte in the middle of the file.
    let len = std::fs::metadata(&seg).unwrap().len();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[len as usize / 2] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();

    node.start_daemon();
    raise_alerts(&node, &c, 3);
    // The new alerts are numbered after everything before, and a reader resuming after
    // 14 gets exactly them.
    let (seqs, gaps) = watch_output(&watch_until_exit(
        &node,
        &["--resume-after", "14", "--count", "3"],
    ));
    assert_eq!(seqs, vec![15, 16, 17]);
    assert!(gaps.is_empty(), "{gaps:?}");
    // From the start: every intact alert, and a gap naming the one that was damaged.
    let (seqs, gaps) = watch_output(&watch_until_exit(&node, &["--from-start", "--count", "16"]));
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (first, last) = gaps[0];
    assert_eq!(first, last, "one record damaged, one seq lost: {gaps:?}");
    let want: Vec<u64> = (1..=17).filter(|&s| s != first).collect();
    assert_eq!(seqs, want);
    // The damaged file is kept for whoever investigates.
    let quarantined = std::fs::read_dir(journal.join("quarantine"))
        .expect("a quarantine directory")
        .count();
    assert_eq!(quarantined, 1);
}

/// A small tmpfs mounted for one test, unmounted when dropped (even on a failed test).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes until the disk is full; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xaau8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_leaves_no_torn_line_and_the_file_catches_up() {
    let disk = SmallDisk::mount("256k");
    let log = disk.path().join("alerts.jsonl");
    // Exec alerts only: the sinks' behaviour is what counts here, and the dropped binary's
    // own file alert would arrive whenever its write is judged.
    let node = TestNode::builder(NS)
        .args(&["--set", "files.enabled=false"])
        .args(&["--alert-log", log.to_str().unwrap()])
        .build();
    let c = node.container();
    run_ok(&c, &["cp", "/bin/busybox", "/tmp/true"]);
    raise_alerts(&node, &c, 1);
    let filler = disk.fill();
    raise_alerts(&node, &c, 5);
    node.daemon()
        .wait_for_line(
            |v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("alert sink failing"))
                    && v["sink"] == "alert-log"
            },
            WAIT,
        )
        .expect("the file sink reports the full disk");
    std::fs::remove_file(&filler).unwrap();
    raise_alerts(&node, &c, 2);
    let logged: Vec<u64> = node
        .daemon()
        .json_lines()
        .iter()
        .filter(|v| v["message"] == "alert")
        .map(|v| v["alert"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(logged.len(), 8);
    // Every line of the file is a whole alert, and the file has every alert, in order.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.ends_with('\n'));
    let in_file: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"))
                ["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(in_file, logged);
}

#[test]
fn a_watcher_refused_at_the_subscriber_limit_misses_nothing_and_the_socket_goes_at_stop() {
    // Exec alerts only (the count of raised alerts is what the watchers are checked by).
    let mut node = TestNode::builder(NS)
        .args(&[
            "--set",
            "files.enabled=false",
            "--set",
            "api.max_subscribers=1",
        ])
        .build();
    let c = node.container();
    run_ok(&c, &["cp", "/bin/busybox", "/tmp/true"]);
    let socket = node.api_socket();
    let watch = |extra: &[&str]| {
        let mut args = vec!["watch", "--json", "--socket", socket.to_str().unwrap()];
        args.extend_from_slice(extra);
        DaemonProcess::spawn(&args).expect("spawn layerguard watch")
    };
    let mut first = watch(&[]);
    // Once the first holds the only slot (the daemon counts it), the second is refused
    // and waits. A fixed sleep here raced a slow start of the first watcher.
    let deadline = Instant::now() + WAIT;
    while node.status()["subscribers"].as_u64() != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the first watcher never subscribed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = watch(&[]);
    second
        .wait_for_text_after(0, |l| l.contains("api.max_subscribers"), WAIT)
        .expect("the second watcher is told it waits");
    raise_alerts(&node, &c, 3);
    let seqs_of = |p: &DaemonProcess| -> Vec<u64> {
        p.json_lines()
            .iter()
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while seqs_of(&first).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the first watcher got {:?}",
            seqs_of(&first)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let raised = seqs_of(&first);
    // The first leaves; the second gets its slot and everything raised while it waited.
    first.kill9().unwrap();
    let deadline = Instant::now() + WAIT;
    while seqs_of(&second).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the second watcher got {:?}, the first {raised:?}",
            seqs_of(&second)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seqs_of(&second), raised);
    drop(second);
    drop(node.stop_daemon());
    assert!(!socket.exists(), "the API socket is removed at stop");
}
