//! File integrity, end to end: the real daemon watching real containers write files and
//! map code, judged against the verified image.
//!
//! User story: an incident responder gets an alert, with the image's digest and layer and
//! what the file holds now, when a container changes an image binary or library, drops a
//! new executable, touches a sensitive file, or runs code the image does not have, even
//! without an exec of it; and no alert for the writes and mappings of normal work.

use std::ops::Deref;
use std::time::Duration;

use layerguard_tests::node::{run_ok, TestNode};
use layerguard_tests::programs::{
    self, DYN_HELLO, EVIL_LIBHELPER, LIBHELPER, MEMFD_DLOPEN, READ_THEN_EXEC,
};
use layerguard_tests::util::sha256_hex;
use serde_json::Value;

const NS: &str = "lg-files";

/// Where the image keeps an executable the tests overwrite.
const TOOL: &str = "/usr/bin/tool";

struct Node {
    node: TestNode,
    tiny: Vec<u8>,
    tiny_other: Vec<u8>,
}

impl Deref for Node {
    type Target = TestNode;
    fn deref(&self) -> &TestNode {
        &self.node
    }
}

fn start_node() -> Node {
    start_node_with(&[])
}

/// [`start_node`] with extra `layerguard run` arguments.
fn start_node_with(args: &[&str]) -> Node {
    let node = TestNode::builder(NS)
        .args(args)
        .layer(
            programs::programs_layer()
                .file_from_host(TOOL, programs::tiny(), 0o755)
                .file_from_host("/opt/tiny_other", programs::tiny_other(), 0o755)
                .file_from_host(programs::URING_NOP, programs::uring_nop(), 0o755)
                .file("/var/lib/dpkg/status", "Package: base\n", 0o644)
                .dir("/var/log", 0o755)
                .file("/etc/profile", "export PATH=/bin\n", 0o644),
        )
        .layer(programs::dynamic_layer())
        .build();
    Node {
        node,
        tiny: std::fs::read(programs::tiny()).unwrap(),
        tiny_other: std::fs::read(programs::tiny_other()).unwrap(),
    }
}

fn kind_is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |a: &Value| a["kind"] == kind
}

fn with_path(kind: &'static str, path: &'static str) -> impl Fn(&Value) -> bool {
    move |a: &Value| a["kind"] == kind && a["evidence"]["path"] == path
}

fn sh(c: &layerguard_tests::Container, script: &str) {
    run_ok(c, &["/bin/sh", "-c", script]);
}

#[test]
fn a_changed_image_binary_is_reported_with_both_digests_and_the_writer() {
    let node = start_node();
    let c = node.container();
    sh(&c, &format!("cat /opt/tiny_other > {TOOL}"));
    let a = node.wait_alert(&c, with_path("file_image_modified", TOOL));
    assert_eq!(a["severity"], "critical", "{a}");
    let e = &a["evidence"];
    assert_eq!(e["expected_sha256"], sha256_hex(&node.tiny), "{a}");
    assert_eq!(e["actual_sha256"], sha256_hex(&node.tiny_other), "{a}");
    assert!(
        e["expected_layer"].as_str().unwrap().starts_with("sha256:"),
        "{a}"
    );
    assert_eq!(e["upper_layer"], true, "{a}");
    assert_eq!(e["file_op"], "write", "{a}");
    assert_eq!(e["path_source"], "kernel", "{a}");
    assert!(
        e["host_path"]
            .as_str()
            .unwrap()
            .ends_with("/fs/usr/bin/tool"),
        "{a}"
    );
    // The writer: the shell (busybox runs `cat` in the shell's own process).
    let p = &a["process"];
    assert_eq!(p["exe"], "/bin/sh", "{a}");
    assert!(
        p["ancestry"].as_array().is_some_and(|a| !a.is_empty()),
        "{a}"
    );
}

#[test]
fn new_executables_are_reported_before_they_run_wherever_they_are_dropped() {
    let node = start_node();
    let c = node.container();
    for dir in ["/tmp", "/usr/bin", "/usr/lib"] {
        sh(&c, &format!("cp /opt/tiny_other {dir}/dropped"));
    }
    for path in ["/tmp/dropped", "/usr/bin/dropped", "/usr/lib/dropped"] {
        let a = node.wait_alert(&c, move |a| {
            a["kind"] == "file_executable_created" && a["evidence"]["path"] == path
        });
        assert_eq!(a["severity"], "high", "{a}");
        assert_eq!(
            a["evidence"]["actual_sha256"],
            sha256_hex(&node.tiny_other),
            "{a}"
        );
        assert_eq!(a["evidence"]["file_mode"], "0755", "{a}");
    }
    // A script written, then made executable.
    sh(
        &c,
        "printf '#!/bin/sh\\necho hi\\n' > /tmp/s.sh; sleep 0.2; chmod +x /tmp/s.sh",
    );
    let a = node.wait_alert(&c, with_path("file_executable_created", "/tmp/s.sh"));
    assert_eq!(
        a["evidence"]["actual_sha256"],
        sha256_hex(b"#!/bin/sh\necho hi\n"),
        "{a}"
    );
    // None of them ran: no exec alert.
    assert!(
        node.alerts_for(&c)
            .iter()
            .all(|a| !a["kind"].as_str().unwrap().starts_with("exec_")),
        "{:?}",
        node.alerts_for(&c)
    );
}

#[test]
fn sensitive_files_are_reported_and_ld_so_preload_is_critical() {
    let node = start_node();
    let c = node.container();
    sh(&c, "echo /tmp/x.so > /etc/ld.so.preload");
    let a = node.wait_alert(&c, with_path("file_sensitive_write", "/etc/ld.so.preload"));
    assert_eq!(a["severity"], "critical", "{a}");
    assert_eq!(
        a["evidence"]["actual_sha256"],
        sha256_hex(b"/tmp/x.so\n"),
        "{a}"
    );
    sh(&c, "echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd");
    let a = node.wait_alert(&c, with_path("file_sensitive_write", "/etc/passwd"));
    assert_eq!(a["severity"], "high", "{a}");
    assert!(
        a["evidence"]["expected_sha256"].is_string(),
        "the image has one: {a}"
    );
    sh(
        &c,
        "mkdir -p /root/.ssh; echo 'ssh-ed25519 AAAA x' > /root/.ssh/authorized_keys",
    );
    node.wait_alert(
        &c,
        with_path("file_sensitive_write", "/root/.ssh/authorized_keys"),
    );
}

#[test]
fn code_the_image_does_not_have_is_reported_when_mapped() {
    let node = start_node();
    let c = node.container();
    // A preloaded library dropped in /tmp.
    sh(&c, &format!("cp {EVIL_LIBHELPER} /tmp/x.so"));
    sh(&c, &format!("LD_PRELOAD=/tmp/x.so {DYN_HELLO}"));
    let a = node.wait_alert(&c, with_path("library_not_in_image", "/tmp/x.so"));
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["evidence"]["file_op"], "map", "{a}");
    let evil = std::fs::read(programs::libhelper("evil")).unwrap();
    assert_eq!(a["evidence"]["actual_sha256"], sha256_hex(&evil), "{a}");
    // The image's library replaced in the container, then loaded by an image binary.
    sh(&c, &format!("cat {EVIL_LIBHELPER} > {LIBHELPER}"));
    node.wait_alert(&c, with_path("file_image_modified", LIBHELPER));
    run_ok(&c, &[DYN_HELLO]);
    let a = node.wait_alert(&c, with_path("library_modified", LIBHELPER));
    assert_eq!(a["severity"], "critical", "{a}");
    let good = std::fs::read(programs::libhelper("helper")).unwrap();
    assert_eq!(a["evidence"]["expected_sha256"], sha256_hex(&good), "{a}");
    assert_eq!(a["evidence"]["actual_sha256"], sha256_hex(&evil), "{a}");
    // Code from a memfd.
    run_ok(&c, &[MEMFD_DLOPEN, LIBHELPER, "2"]);
    let a = node.wait_alert(&c, kind_is("library_fileless"));
    assert_eq!(a["severity"], "critical", "{a}");
    assert_eq!(a["evidence"]["actual_sha256"], sha256_hex(&evil), "{a}");
}

#[test]
fn normal_work_raises_no_file_alert() {
    let node = start_node();
    let c = node.container();
    // Data files, a package database, image binaries and libraries run and mapped,
    // touch and chmod of an image binary.
    sh(
        &c,
        &format!(
            "echo data > /tmp/data; i=0; while [ $i -lt 50 ]; do echo line $i >> /var/log/app.log; \
             i=$((i+1)); done; echo 'Package: more' >> /var/lib/dpkg/status; \
             {DYN_HELLO}; {DYN_HELLO} {LIBHELPER}; touch {TOOL}; chmod 700 {TOOL}; chmod 755 {TOOL}; \
             {TOOL}; cp /tmp/data /tmp/data2; sleep 1"
        ),
    );
    // A marker alert afterwards proves the daemon was judging all along.
    sh(&c, "cp /opt/tiny_other /tmp/marker");
    node.wait_alert(&c, with_path("file_executable_created", "/tmp/marker"));
    let alerts = node.alerts_for(&c);
    assert_eq!(alerts.len(), 1, "only the marker: {alerts:#?}");
    // The data writes stopped in the kernel: no record reached the daemon for them.
    let status = node.status();
    let data = status["files"]["kernel_data_writes"].as_u64().unwrap();
    assert!(data >= 5, "{status}");
}

#[test]
fn a_library_mapped_by_a_thousand_processes_is_hashed_once() {
    let node = start_node();
    let c = node.container();
    run_ok(&c, &[DYN_HELLO]);
    std::thread::sleep(Duration::from_secs(1));
    let before = node.status();
    sh(
        &c,
        &format!("i=0; while [ $i -lt 1000 ]; do {DYN_HELLO} >/dev/null; i=$((i+1)); done"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = node.status();
    let f = |s: &Value, k: &str| s["files"][k].as_u64().unwrap_or_else(|| panic!("{k}: {s}"));
    // Each run maps ld.so, libc and libhelper: thousands of mappings, counted in the
    // kernel and not sent.
    let hits = f(&after, "kernel_clean_hits") - f(&before, "kernel_clean_hits");
    assert!(hits >= 3000, "clean hits {hits}: {after}");
    let received = f(&after, "mappings") - f(&before, "mappings");
    assert!(
        received < 100,
        "{received} mapping records reached the daemon: {after}"
    );
    let inspected = f(&after, "inspected") - f(&before, "inspected");
    assert!(inspected < 10, "{inspected} files read: {after}");
    assert!(node.alerts_for(&c).is_empty(), "{:?}", node.alerts_for(&c));
}

#[test]
fn a_library_changed_on_the_host_in_an_image_layer_is_reported_when_mapped() {
    let node = start_node();
    let c = node.container();
    run_ok(&c, &[DYN_HELLO]);
    // Judged clean and held back in the kernel; now the image's unpacked layer changes
    // under the container's feet (same inode, new bytes: a new ctime).
    std::thread::sleep(Duration::from_millis(500));
    let file = c
        .lower_dirs()
        .unwrap()
        .iter()
        .map(|d| d.join(LIBHELPER.trim_start_matches('/')))
        .find(|p| p.exists())
        .expect("libhelper.so in a lower dir");
    let evil = std::fs::read(programs::libhelper("evil")).unwrap();
    std::fs::write(&file, &evil).unwrap();
    run_ok(&c, &[DYN_HELLO]);
    let a = node.wait_alert(&c, with_path("library_modified", LIBHELPER));
    assert_eq!(a["evidence"]["upper_layer"], false, "{a}");
    assert_eq!(a["evidence"]["actual_sha256"], sha256_hex(&evil), "{a}");
    assert!(
        a["evidence"]["reason"]
            .as_str()
            .unwrap()
            .contains("on the host"),
        "{a}"
    );
}

#[test]
fn with_syscall_hooks_renames_links_unlinks_and_mprotect_are_reported() {
    let node = start_node_with(&["--set", "files.syscall_hooks=true"]);
    let status = node.status();
    assert_eq!(status["files"]["hooks"], "tracepoints+syscalls", "{status}");
    assert!(
        status["programs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("tp_btf/sys_exit")),
        "{status}"
    );
    let c = node.container();
    // An image binary replaced by a rename: no write to it ever happens.
    sh(
        &c,
        &format!("cp /opt/tiny_other /tmp/new && mv /tmp/new {TOOL}"),
    );
    let a = node.wait_alert(&c, with_path("file_image_modified", TOOL));
    let e = &a["evidence"];
    assert_eq!(e["file_op"], "linked", "{a}");
    assert_eq!(e["path_source"], "caller", "the syscall's string: {a}");
    assert_eq!(e["expected_sha256"], sha256_hex(&node.tiny), "{a}");
    assert_eq!(e["actual_sha256"], sha256_hex(&node.tiny_other), "{a}");
    assert!(e["reason"].as_str().unwrap().contains("rename"), "{a}");
    // Relative names, resolved from the caller's cwd: a cron job moved in, another linked.
    sh(
        &c,
        "mkdir -p /etc/cron.d && cd /etc/cron.d && echo '* * * * * root /tmp/x' > ../../tmp/job          && mv ../../tmp/job ./job && echo '@reboot root /tmp/x' > /tmp/job2 && ln /tmp/job2 hard",
    );
    let a = node.wait_alert(&c, with_path("file_sensitive_write", "/etc/cron.d/job"));
    assert_eq!(a["evidence"]["file_op"], "linked", "{a}");
    assert_eq!(
        a["evidence"]["actual_sha256"],
        sha256_hex(b"* * * * * root /tmp/x\n"),
        "{a}"
    );
    node.wait_alert(&c, with_path("file_sensitive_write", "/etc/cron.d/hard"));
    // A sensitive file removed.
    sh(&c, "rm /etc/passwd");
    let a = node.wait_alert(&c, move |a| {
        a["kind"] == "file_sensitive_write"
            && a["evidence"]["path"] == "/etc/passwd"
            && a["evidence"]["file_op"] == "unlinked"
    });
    assert!(a["evidence"]["expected_sha256"].is_string(), "{a}");
    assert!(a["evidence"]["actual_sha256"].is_null(), "{a}");
    assert!(
        a["evidence"]["reason"]
            .as_str()
            .unwrap()
            .contains("removed"),
        "{a}"
    );
    // Code read as data, then made executable with mprotect: no fault shows it.
    sh(&c, &format!("cp {EVIL_LIBHELPER} /tmp/code.bin"));
    run_ok(&c, &[READ_THEN_EXEC, "/tmp/code.bin", "2"]);
    let a = node.wait_alert(&c, with_path("library_not_in_image", "/tmp/code.bin"));
    let evil = std::fs::read(programs::libhelper("evil")).unwrap();
    assert_eq!(a["evidence"]["actual_sha256"], sha256_hex(&evil), "{a}");
    let status = node.status();
    assert!(
        status["files"]["kernel_syscalls"].as_u64().unwrap() >= 5,
        "{status}"
    );
    assert!(status["files"]["names"].as_u64().unwrap() >= 4, "{status}");
}

#[test]
fn the_status_and_ready_line_say_which_hook_serves_each_file_role() {
    let node = start_node();
    let s = node.status();
    let f = &s["files"];
    let fentry = s["kernel"]["fentry"].as_str().unwrap().to_string();
    let refused: Vec<&str> = f["kernel_hooks_refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let points = |role: &str| -> Vec<String> {
        f["roles"][role]
            .as_array()
            .unwrap_or_else(|| panic!("no role {role}: {s}"))
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        points("writes"),
        ["tp_btf/writeback_mark_inode_dirty"],
        "{s}"
    );
    assert!(
        !s["programs"].to_string().contains("sys_exit"),
        "no syscall hook unless asked: {s}"
    );
    // The table's choice on this kernel, from what it refused (these hosts: fentry EPERM,
    // no BPF LSM; Debian's stock kernels: fentry attached).
    if let Some(why) = fentry.strip_prefix("refused: ") {
        assert_eq!(refused[0], format!("fentry: {why}"), "{s}");
        assert!(why.starts_with("fentry/security_mmap_file: "), "{s}");
        if s["kernel"]["bpf_lsm"] == false {
            assert!(
                refused[1].starts_with("lsm: the BPF LSM is not active"),
                "{s}"
            );
            assert_eq!(f["hooks"], "tracepoints", "{s}");
            assert!(points("names").is_empty(), "nothing sees renames: {s}");
            let mappings = points("mappings");
            assert!(
                mappings.iter().all(|p| p.starts_with("tp_btf/mm_filemap_")),
                "{s}"
            );
        } else {
            assert_eq!(f["hooks"], "lsm+tracepoints", "{s}");
        }
    } else {
        assert!(fentry.starts_with("attached"), "{s}");
        assert_eq!(f["hooks"], "fentry+tracepoints", "{s}");
        assert_eq!(
            points("mappings"),
            ["fentry/security_mmap_file", "fentry/security_file_mprotect"],
            "{s}"
        );
        assert_eq!(points("names").len(), 3, "{s}");
    }
    assert!(!points("io_uring").is_empty(), "{s}");
    let ready = node
        .daemon()
        .json_lines()
        .into_iter()
        .find(|l| l["message"] == "layerguard ready")
        .unwrap();
    assert_eq!(ready["file_hooks"], f["hooks"], "{ready}");
    assert_eq!(ready["kernel"]["fentry"], fentry.as_str(), "{ready}");
    assert_eq!(
        ready["kernel_hooks_refused"].as_array().unwrap().len(),
        refused.len(),
        "{ready}"
    );
    let ready_roles = ready["file_hook_roles"].as_array().unwrap();
    let mappings = ready_roles
        .iter()
        .find(|r| r["role"] == "mappings")
        .unwrap();
    assert_eq!(
        mappings["hooks"].as_array().unwrap().len(),
        points("mappings").len(),
        "{ready}"
    );
}

/// An operator who insists on a kernel hook family this kernel refuses gets no daemon
/// and one line saying why.
#[test]
fn an_insisted_kernel_hook_family_the_kernel_refuses_stops_the_start_with_why() {
    let node = start_node();
    let k = node.status()["kernel"].clone();
    let (family, why) = if let Some(why) = k["fentry"].as_str().unwrap().strip_prefix("refused: ") {
        ("fentry", why.to_string())
    } else if k["bpf_lsm"] == false {
        ("lsm", "the BPF LSM is not active".to_string())
    } else {
        panic!("this kernel offers both fentry and the BPF LSM: nothing to refuse: {k}");
    };
    drop(node);
    let state = tempfile::tempdir().unwrap();
    let out = layerguard_tests::run_refused_start(
        state.path(),
        &["--set", &format!("files.kernel_hooks={family}")],
        Duration::from_secs(60),
    )
    .expect("layerguard run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("files.kernel_hooks = \"{family}\": {why}");
    assert!(stderr.contains(&want), "{want:?} not in: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("layerguard ready"),
        "{out:?}"
    );
}

/// io_uring requests pass none of the file hooks: each container's are counted in the
/// kernel, and `status` names the container.
#[test]
fn io_uring_requests_are_counted_per_container() {
    let node = start_node();
    let c = node.container();
    let other = node.container();
    run_ok(&c, &[programs::URING_NOP, "300"]);
    run_ok(&other, &[programs::URING_NOP, "20"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let count = |s: &Value, id: &str| {
        s["files"]["io_uring_by_container"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["container_id"] == id)
            .map(|e| {
                assert_eq!(e["namespace"], NS, "{s}");
                e["requests"].as_u64().unwrap()
            })
    };
    loop {
        let s = node.status();
        if let (Some(a), Some(b)) = (count(&s, c.id()), count(&s, other.id())) {
            assert!((300..400).contains(&a), "{s}");
            assert!((20..100).contains(&b), "{s}");
            assert!(
                s["files"]["io_uring_requests"].as_u64().unwrap() >= 320,
                "{s}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no per-container counts: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
