//! `layerguard-demo` (`make demo`), run as a newcomer would: it shows each alert kind it
//! promises as `layerguard watch` prints them, and leaves no containerd, process, mount,
//! cgroup or directory behind, also when interrupted with Ctrl-C.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use layerguard_tests::containerd::CGROUP_ROOT;
use layerguard_tests::util::{pids_matching, run_with_timeout, signal};
use layerguard_tests::{daemon_binary, mounts_under, require_root};

const DEMO: &str = env!("CARGO_BIN_EXE_layerguard-demo");
/// Bounds a hang; the demo takes seconds here.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The path the demo printed after `label`.
fn printed_path(out: &str, label: &str) -> PathBuf {
    let line = out
        .lines()
        .find_map(|l| l.split_once(label).map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"));
    PathBuf::from(line.split([' ', ',', ')']).next().unwrap())
}

/// Checks, on the host itself, that nothing of the demo's containerd and state dir is left.
fn assert_nothing_left(out: &str) {
    let containerd = printed_path(out, "containerd dir: ");
    let state = printed_path(out, "(state dir ");
    assert!(
        containerd.starts_with(std::env::temp_dir()),
        "{containerd:?}"
    );
    for dir in [&containerd, &state] {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    assert!(mounts_under(&containerd).unwrap().is_empty(), "mounts left");
    let name = containerd.to_string_lossy().into_owned();
    let pids = pids_matching(|args| args.iter().any(|a| a.contains(&name)));
    assert!(pids.is_empty(), "processes left: {pids:?}");
    let instance = containerd.file_name().unwrap();
    for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = c.path().join(CGROUP_ROOT).join(instance);
        assert!(!p.exists(), "cgroup {} is left", p.display());
    }
}

/// The kinds in the `watch |` lines (the fourth column of a `layerguard watch` line).
fn watch_kinds(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_once("watch | "))
        .filter_map(|(_, line)| line.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

#[test]
fn the_demo_shows_each_alert_kind_and_leaves_nothing_behind() {
    require_root();
    let layerguard = daemon_binary();
    let out = run_with_timeout(
        Command::new(DEMO).arg("--layerguard").arg(&layerguard),
        TIMEOUT,
    )
    .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}\n{stdout}");
    let kinds = watch_kinds(&stdout);
    for kind in [
        "exec_not_in_image",
        "file_executable_created",
        "file_image_modified",
        "exec_modified",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} not shown: {kinds:?}\n{stdout}"
        );
    }
    // The image's own program ran first and raised nothing: the first alert is about the
    // dropped file.
    let first = stdout
        .lines()
        .find(|l| l.contains("watch | "))
        .expect("a watch line");
    assert!(first.contains("/tmp/echo"), "{first}");
    for n in 1..=7 {
        assert!(stdout.contains(&format!("[{n}/7]")), "step {n}:\n{stdout}");
    }
    assert!(stdout.contains("nothing is left on this host"), "{stdout}");
    assert_nothing_left(&stdout);
}

/// Ctrl-C as a terminal sends it: SIGINT to the demo's whole process group, so its
/// containerd, daemon and watcher get it too.
#[test]
fn an_interrupted_demo_cleans_up_and_exits_130() {
    require_root();
    let mut child = Command::new(DEMO)
        .arg("--layerguard")
        .arg(daemon_binary())
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut stdout = String::new();
    // Interrupted once its container runs: containerd, the daemon, the watcher and the
    // container all exist then.
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the demo ended before its container ran:\n{stdout}");
        stdout.push_str(&line);
        if line.starts_with("[4/7]") {
            break;
        }
    }
    signal(-(child.id() as i32), libc::SIGINT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    stdout.push_str(&rest);
    let status = layerguard_tests::util::wait_deadline(&mut child, TIMEOUT)
        .unwrap()
        .expect("the demo exits after SIGINT");
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("interrupted; cleaned up: nothing is left on this host"),
        "{stdout}"
    );
    assert!(!stdout.contains("[7/7]"), "{stdout}");
    assert_nothing_left(&stdout);
}

#[test]
fn the_demo_refuses_a_missing_binary() {
    require_root();
    let out = Command::new(DEMO)
        .args(["--layerguard", "/nonexistent/layerguard"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/layerguard does not exist") && err.contains("cargo build"),
        "{err}"
    );
}
