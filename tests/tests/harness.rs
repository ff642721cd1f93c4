//! Self-tests of the harness: before any layerguard test can be trusted, the harness must
//! give it a real containerd, images whose merged view is what the builder predicts, host
//! paths of a container's layers, and leave the host clean afterwards.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use layerguard_tests::util::{pids_matching, sha256_hex};
use layerguard_tests::{
    busybox_image, cleanup_stale, container_view, mounts_under, overlay_test_image, require_root,
    unique_id, BuiltImage, Container, MergedKind, PrivateContainerd,
};

const NS: &str = "lg-harness";

fn two_layer_image(containerd: &PrivateContainerd, name: &str) -> BuiltImage {
    overlay_test_image(&format!("layerguard.test/{name}:1"))
        .expect("busybox image")
        .import(containerd, NS)
        .expect("import two-layer image")
}

fn expected_view(image: &BuiltImage) -> BTreeMap<String, (char, u32, String)> {
    image
        .files
        .iter()
        .map(|(path, f)| {
            let v = match &f.kind {
                MergedKind::File { sha256, .. } => ('F', f.mode, sha256.clone()),
                MergedKind::Dir => ('D', f.mode, String::new()),
                MergedKind::Symlink { target } => ('L', 0o777, target.clone()),
            };
            (path.clone(), v)
        })
        .collect()
}

fn shims_of(dir: &Path) -> Vec<i32> {
    let dir = dir.to_string_lossy().into_owned();
    pids_matching(|args| {
        args.first()
            .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
            && args.iter().any(|a| a.contains(&dir))
    })
}

fn cgroup_dirs_of(instance: &str) -> Vec<std::path::PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|c| c.path().join("layerguard-tests").join(instance))
        .filter(|p| p.exists())
        .collect()
}

/// Story: a test author builds a layered image in Rust, runs it in a private containerd and
/// relies on the builder's predicted file set and on the host paths of the container's
/// layers; when the test ends nothing is left mounted, running or on disk.
#[test]
fn merged_view_matches_builder_and_teardown_leaves_nothing() {
    require_root();
    let containerd = PrivateContainerd::start().expect("start containerd");
    let dir = containerd.dir().to_path_buf();
    let instance = containerd.instance().to_owned();
    let image = two_layer_image(&containerd, "merged");
    assert_eq!(image.layers.len(), 3);

    let id = unique_id("merged");
    let c = Container::run_detached(
        &containerd,
        NS,
        &image.reference,
        &id,
        &["sleep", "300"],
        &[("layerguard.test/story", "harness")],
    )
    .expect("run container");

    // The whole merged view, file by file, against the builder's prediction. runc adds
    // only mount points the image does not have.
    let seen = container_view(&c);
    let expected = expected_view(&image);
    for (path, want) in &expected {
        assert_eq!(seen.get(path), Some(want), "{path} in the container");
    }
    let extra: Vec<&String> = seen.keys().filter(|p| !expected.contains_key(*p)).collect();
    assert!(
        extra.iter().all(|p| *p == "/run"),
        "unexpected paths {extra:?}"
    );

    assert_eq!(c.exec_ok(&["cat", "/app/config"]).unwrap(), "version=2\n");
    assert_eq!(c.exec_ok(&["cat", "/app/current"]).unwrap(), "version=2\n");
    assert_eq!(c.exec_ok(&["ls", "/app/data"]).unwrap(), "new\n");
    assert_eq!(c.exec_ok(&["/app/run.sh"]).unwrap(), "from-run-sh\n");
    assert_eq!(c.exec_ok(&["/app/tool-again.sh"]).unwrap(), "from-tool\n");
    let links = c.exec_ok(&["stat", "-c", "%h", "/app/tool.sh"]).unwrap();
    assert_eq!(links, "2\n", "hard links stay hard links");
    let gone = c.exec(&["cat", "/app/remove-me"]).unwrap();
    assert_eq!(
        gone.status.code(),
        Some(1),
        "exit status of the exec'd process comes back"
    );

    // Host paths: layer i of the image is lower_dirs()[i]; writes land in upper_dir().
    let lowers = c.lower_dirs().unwrap();
    assert_eq!(lowers.len(), image.layers.len());
    let busybox_sha = match &image.files["/bin/busybox"].kind {
        MergedKind::File { sha256, .. } => sha256.clone(),
        other => panic!("busybox is {other:?}"),
    };
    assert_eq!(
        sha256_hex(&fs::read(lowers[0].join("bin/busybox")).unwrap()),
        busybox_sha
    );
    assert_eq!(
        fs::read_to_string(lowers[1].join("app/config")).unwrap(),
        "version=1\n"
    );
    assert_eq!(
        fs::read_to_string(lowers[2].join("app/config")).unwrap(),
        "version=2\n"
    );
    let whiteout = fs::symlink_metadata(lowers[2].join("app/remove-me")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "containerd converts .wh. entries to overlayfs 0/0 char devices"
    );
    c.exec_ok(&["sh", "-c", "echo drift > /tmp/dropped"])
        .unwrap();
    assert_eq!(
        fs::read_to_string(c.upper_dir().unwrap().join("tmp/dropped")).unwrap(),
        "drift\n"
    );

    let pid = c.pid().unwrap();
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/root/app/config")).unwrap(),
        "version=2\n"
    );
    assert!(mounts_under(&c.rootfs()).unwrap().contains(&c.rootfs()));
    let snapshots = containerd.ctr_ok(NS, &["snapshots", "ls"]).unwrap();
    for layer in &image.layers {
        assert!(
            snapshots.contains(&layer.chain_id),
            "snapshot key is the chain id"
        );
    }
    let labels = containerd.ctr_ok(NS, &["containers", "info", &id]).unwrap();
    assert!(
        labels.contains("layerguard.test/story"),
        "labels reach containerd"
    );

    assert!(!shims_of(&dir).is_empty());
    assert!(!cgroup_dirs_of(&instance).is_empty());
    drop(c);
    drop(containerd);

    assert!(
        mounts_under(&dir).unwrap().is_empty(),
        "mounts left under {dir:?}"
    );
    assert!(!dir.exists(), "{dir:?} still exists");
    assert!(shims_of(&dir).is_empty(), "shims left");
    assert!(cgroup_dirs_of(&instance).is_empty(), "cgroups left");
}

/// Story: a test crashes containerd under a running container (SIGKILL), restarts it, and
/// the container is still there and usable; one-shot containers return their output.
#[test]
fn containerd_restart_keeps_running_containers() {
    require_root();
    let containerd = PrivateContainerd::start().expect("start containerd");
    let image = busybox_image("layerguard.test/restart:1")
        .unwrap()
        .import(&containerd, NS)
        .unwrap();

    let once = Container::run_once(
        &containerd,
        NS,
        &image.reference,
        &unique_id("once"),
        &["sh", "-c", "echo hello; exit 7"],
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&once.stdout), "hello\n");
    assert_eq!(once.status.code(), Some(7));

    let c = Container::run_detached(
        &containerd,
        NS,
        &image.reference,
        &unique_id("restart"),
        &["sh", "-c", "echo started; exec sleep 300"],
        &[],
    )
    .unwrap();
    let pid = c.pid().unwrap();
    containerd.kill().unwrap();
    assert!(!containerd.is_running());
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "task survives containerd"
    );
    containerd.start_again().unwrap();
    assert_eq!(c.pid().unwrap(), pid);
    assert_eq!(c.exec_ok(&["echo", "still here"]).unwrap(), "still here\n");
    assert_eq!(c.status().unwrap(), "RUNNING");
    assert!(
        c.log().contains("started"),
        "container stdout goes to its log file"
    );

    containerd.stop().unwrap();
    containerd.start_again().unwrap();
    assert_eq!(c.exec_ok(&["true"]).unwrap(), "");
}

/// Story: a previous test run was SIGKILLed mid-test; the next run's safety net removes its
/// containerd, shims, containers, mounts, cgroups and temp dir.
#[test]
fn cleanup_stale_removes_a_crashed_runs_leftovers() {
    require_root();
    let containerd = PrivateContainerd::start().expect("start containerd");
    let dir = containerd.dir().to_path_buf();
    let instance = containerd.instance().to_owned();
    let image = busybox_image("layerguard.test/stale:1")
        .unwrap()
        .import(&containerd, NS)
        .unwrap();
    let c = Container::run_detached(
        &containerd,
        NS,
        &image.reference,
        "stale",
        &["sleep", "300"],
        &[],
    )
    .unwrap();
    let task_pid = c.pid().unwrap() as i32;
    let containerd_pid = containerd.pid().unwrap() as i32;
    // Pretend the owning test process died: forget the handles and point the owner file
    // at a pid that no longer runs.
    c.forget();
    std::mem::forget(containerd);
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    fs::write(dir.join("owner"), format!("{dead_pid} 1\n")).unwrap();

    let cleaned = cleanup_stale().unwrap();
    assert!(cleaned.contains(&dir) || !dir.exists());
    assert!(!dir.exists(), "{dir:?} still exists");
    assert!(mounts_under(&dir).unwrap().is_empty());
    assert!(shims_of(&dir).is_empty(), "shims left");
    assert!(cgroup_dirs_of(&instance).is_empty(), "cgroups left");
    for pid in [task_pid, containerd_pid] {
        assert!(
            !layerguard_tests::util::process_alive(pid),
            "pid {pid} survived cleanup"
        );
    }
}
