//! The DaemonSet image (deploy/image/build.py), built reproducibly and run under a real
//! containerd exactly the way deploy/layerguard-daemonset.yaml runs it.
//!
//! User story: a cluster operator runs `make image`, deploys the DaemonSet, and the daemon
//! in its pod (privileged, host PID namespace, the manifest's host mounts and arguments)
//! alerts on a binary dropped into another container, readable on the node through
//! `layerguard watch` on the mounted API socket.
//!
//! The image is built from the daemon under test ([`daemon_binary`]: `LAYERGUARD_BIN`,
//! else the newer of target/release and target/debug), so CI's debug build is enough; the
//! image holds whatever binary that is. How the pod runs comes from the manifest itself
//! (`deploy/image/manifest.py spec`, which needs PyYAML: the venv `make validate-manifests`
//! makes, or `LAYERGUARD_MANIFEST_PYTHON`), so a mount or argument added there is tested
//! here without a change.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use layerguard_tests::node::WAIT;
use layerguard_tests::util::{describe_output, sha256_hex};
use layerguard_tests::{
    busybox_image, daemon_binary, require_root, unique_id, Container, DaemonProcess,
    PrivateContainerd, RunOptions,
};
use serde_json::Value;

/// containerd namespace of the daemon's pod and of the workload it must watch.
const NS_POD: &str = "lg-daemonset";
const NS_WORKLOAD: &str = "lg-daemonset-apps";
/// What the kubelet would put in `$(NODE_NAME)` (the pod's `spec.nodeName`).
const NODE_NAME: &str = "lg-daemonset-node";
/// A build of a ~250 MB debug binary (gzip) takes ~15 s here; this only catches a hang.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// The manifest's terminationGracePeriodSeconds: the kubelet SIGKILLs after this.
const GRACE: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// `python3 deploy/image/build.py --binary BIN --out OUT` with `env`; returns image.json.
fn build_image(binary: &Path, out: &Path, env: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("deploy/image/build.py"))
        .arg("--binary")
        .arg(binary)
        .arg("--out")
        .arg(out)
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = layerguard_tests::util::run_with_timeout(&mut cmd, BUILD_TIMEOUT)
        .expect("run deploy/image/build.py");
    assert!(
        output.status.success(),
        "deploy/image/build.py failed: {}",
        describe_output(&output)
    );
    let summary = std::fs::read(out.join("image.json")).expect("image.json");
    serde_json::from_slice(&summary).expect("image.json is JSON")
}

/// A Python with PyYAML for deploy/image/manifest.py.
fn manifest_python() -> PathBuf {
    if let Some(p) = std::env::var_os("LAYERGUARD_MANIFEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join("target/manifest-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// `deploy/image/manifest.py ARGS`; panics (with its stderr) unless it exits 0.
fn manifest_py(args: &[&str]) -> String {
    let out = Command::new(manifest_python())
        .arg(repo().join("deploy/image/manifest.py"))
        .args(args)
        .output()
        .expect("run deploy/image/manifest.py");
    assert!(
        out.status.success(),
        "deploy/image/manifest.py {args:?} failed (PyYAML comes with `make validate-manifests`): {}",
        describe_output(&out)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob in layout");
    assert_eq!(sha256_hex(&data), hex, "blob {digest} holds other bytes");
    data
}

fn blob_json(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).expect("JSON blob")
}

/// What the image must hold: the binary at the Entrypoint, what ldd resolves (loader
/// included), the CA bundle, and the parent directories of those.
fn expected_files(binary: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(out.status.success(), "ldd: {}", describe_output(&out));
    let mut files = vec![
        "/usr/bin/layerguard".to_string(),
        "/etc/ssl/certs/ca-certificates.crt".to_string(),
    ];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_string);
        if let Some(p) = path {
            files.push(p);
        }
    }
    let mut all = files.clone();
    for f in &files {
        let mut p = Path::new(f).parent();
        while let Some(dir) = p.filter(|d| *d != Path::new("/")) {
            all.push(dir.display().to_string());
            p = dir.parent();
        }
    }
    all.sort();
    all.dedup();
    all
}

#[test]
fn two_builds_of_one_binary_are_the_same_image_and_the_manifest_names_it() {
    let binary = daemon_binary();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let started = Instant::now();
    let first = build_image(&binary, a.path(), &[]);
    let second = build_image(&binary, b.path(), &[]);
    eprintln!("two image builds took {:?}", started.elapsed());
    for key in [
        "manifest_digest",
        "config_digest",
        "layer_digest",
        "archive_sha256",
    ] {
        assert_eq!(first[key], second[key], "{key} differs between two builds");
    }
    let archives =
        [a.path(), b.path()].map(|d| std::fs::read(d.join("layerguard-image.tar")).unwrap());
    assert!(archives[0] == archives[1], "the two OCI archives differ");

    let version = env!("CARGO_PKG_VERSION");
    let name = format!("docker.io/library/layerguard:{version}");
    assert_eq!(first["name"], name.as_str());

    // The layout: index -> manifest -> config and one gzip layer, all under their digests.
    let layout = a.path().join("oci");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(entry["digest"], first["manifest_digest"]);
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        name.as_str()
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        version
    );
    let manifest = blob_json(&layout, entry["digest"].as_str().unwrap());
    let config = blob_json(&layout, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/layerguard"])
    );
    assert_eq!(
        config["created"], "1970-01-01T00:00:00Z",
        "no SOURCE_DATE_EPOCH: 0"
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        version
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gz = blob(&layout, layers[0]["digest"].as_str().unwrap());
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip header mtime is 0");
    let mut tar_bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(gz.as_slice()),
        &mut tar_bytes,
    )
    .unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(&tar_bytes)),
        config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        "diff_id is the uncompressed layer's digest"
    );

    // The layer: exactly the binary, its libraries, the CA bundle; sorted, 0:0, mtime 0.
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut paths = Vec::new();
    let mut binary_sha = None;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header();
        let path = format!("/{}", e.path().unwrap().display())
            .trim_end_matches('/')
            .to_string();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
        assert_eq!(h.mtime().unwrap(), 0, "{path}");
        if path == "/usr/bin/layerguard" {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            binary_sha = Some(sha256_hex(&data));
        }
        paths.push(path);
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "layer entries are sorted");
    assert_eq!(
        paths,
        expected_files(&binary),
        "the layer holds exactly these"
    );
    assert_eq!(
        binary_sha.as_deref(),
        Some(sha256_hex(&std::fs::read(&binary).unwrap()).as_str()),
        "/usr/bin/layerguard is the daemon under test"
    );

    // SOURCE_DATE_EPOCH moves every timestamp, so it moves the digest.
    let c = tempfile::tempdir().unwrap();
    let dated = build_image(&binary, c.path(), &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert_ne!(dated["manifest_digest"], first["manifest_digest"]);
    assert_eq!(dated["created"], "2023-11-14T22:13:20Z");

    // The DaemonSet names this image and agrees with its Entrypoint and paths.
    let spec: Value = serde_json::from_str(&manifest_py(&["spec"])).unwrap();
    assert_eq!(spec["image"], name.as_str());
    let image_json = a.path().join("image.json");
    manifest_py(&["check", "--image-json", image_json.to_str().unwrap()]);
}

/// Polls the daemon container's stdout (its JSON log) for a line matching `pred`.
fn wait_log(
    pod: &Container,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let log = pod.log();
        if let Some(v) = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| pred(v))
        {
            return v;
        }
        if Instant::now() >= deadline {
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!(
                "the daemon in the pod did not log {what} within {timeout:?}; its output:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_image_run_as_the_daemonset_alerts_on_a_binary_dropped_in_another_container() {
    require_root();
    let spec: Value = serde_json::from_str(&manifest_py(&["spec"])).unwrap();
    assert_eq!(spec["privileged"], true);
    assert_eq!(spec["hostPID"], true);
    // Declared first, dropped last: containers, then containerd, go even on a panic.
    let containerd = PrivateContainerd::start().expect("start private containerd");
    let build_dir = tempfile::tempdir().unwrap();
    let image = build_image(&daemon_binary(), build_dir.path(), &[]);
    let name = spec["image"].as_str().unwrap();
    assert_eq!(
        image["name"], name,
        "the manifest names the image make image builds"
    );

    // The node's copy of the image, as `make image` imports it (into the pod's namespace).
    let archive = image["archive"].as_str().unwrap();
    containerd
        .ctr_ok(
            NS_POD,
            &["images", "import", "--snapshotter", "overlayfs", archive],
        )
        .expect("import the DaemonSet image");
    let listed = containerd.ctr_ok(NS_POD, &["images", "ls"]).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(name) && l.contains(image["manifest_digest"].as_str().unwrap())),
        "containerd lists {name} under its manifest digest:\n{listed}"
    );
    let workload_ref = format!("layerguard.test/daemonset-{}:1", unique_id("img"));
    let workload_image = busybox_image(&workload_ref)
        .unwrap()
        .import(&containerd, NS_WORKLOAD)
        .expect("import workload image");

    // The pod's volumes: the node's daemon directories become this test's own, ConfigMaps
    // become files, any other hostPath is the host's.
    let config_dir = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    // hostPID: the node's PID namespace, named through this test's own pid (the test runs
    // in it) rather than /proc/1, whose ns links some hosts (this VM's init) deny even to
    // root.
    let host_pid_ns = format!("pid:/proc/{}/ns/pid", std::process::id());
    let mut opts = RunOptions::default()
        .flag("--privileged")
        .flag("--with-ns")
        .flag(&host_pid_ns);
    for m in spec["mounts"].as_array().unwrap() {
        let src: PathBuf = match m["role"].as_str().unwrap() {
            "config" => {
                for (file, text) in m["configMap"]["files"].as_object().unwrap() {
                    std::fs::write(config_dir.path().join(file), text.as_str().unwrap()).unwrap();
                }
                config_dir.path().into()
            }
            "containerd" => containerd.dir().into(),
            "state" => state_dir.path().into(),
            "api" => run_dir.path().into(),
            _ if m["configMap"].is_object() => panic!("a second ConfigMap mount {m}: map it here"),
            _ => {
                let p = PathBuf::from(m["hostPath"].as_str().unwrap());
                assert!(
                    p.is_dir(),
                    "hostPath {} of mount {m} is not on this host",
                    p.display()
                );
                p
            }
        };
        let mode = if m["readOnly"] == true { "ro" } else { "rw" };
        opts = opts.flag("--mount").flag(&format!(
            "type=bind,src={},dst={},options=rbind:{mode}",
            src.display(),
            m["mountPath"].as_str().unwrap()
        ));
    }
    // The private containerd's socket must be where the config says, inside its mount.
    let socket = spec["paths"]["containerd_socket"].as_str().unwrap();
    assert_eq!(
        Path::new(socket).file_name().unwrap(),
        containerd.socket_path().file_name().unwrap()
    );
    // env and $(VAR) in args, as the kubelet expands them.
    let mut env = Vec::new();
    for e in spec["env"].as_array().unwrap() {
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(f)) if f == "spec.nodeName" => NODE_NAME.to_string(),
            _ => panic!("env {e}: teach this test its value"),
        };
        env.push((e["name"].as_str().unwrap().to_string(), value));
    }
    for (k, v) in &env {
        opts = opts.env(&format!("{k}={v}"));
    }
    let argv: Vec<String> = spec["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            env.iter()
                .fold(a.as_str().unwrap().to_string(), |s, (k, v)| {
                    s.replace(&format!("$({k})"), v)
                })
        })
        .collect();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // ctr replaces the whole process argv; the kubelet keeps the image's Entrypoint and
    // replaces Cmd with `args`: spec's argv is Entrypoint + args already.
    let started = Instant::now();
    let mut pod = Container::run_with(
        &containerd,
        NS_POD,
        name,
        &unique_id("layerguard"),
        &argv,
        &opts,
    )
    .expect("run the DaemonSet's container");
    let ready = wait_log(&pod, "\"layerguard ready\"", WAIT, |v| {
        v["message"] == "layerguard ready"
    });
    eprintln!("daemon in the pod ready after {:?}", started.elapsed());
    // In the pod the daemon's own mount namespace is the pod's: it must filter the host's
    // (this test's), or every host process would pass for a container's.
    assert_eq!(
        ready["host_mnt_ns"].as_u64(),
        Some(std::fs::metadata("/proc/self/ns/mnt").unwrap().ino()),
        "the daemon in the pod took another mount namespace for the host's: {ready}"
    );
    wait_log(&pod, "\"containerd connected\"", WAIT, |v| {
        v["message"] == "containerd connected"
    });

    // `layerguard watch` on the node, through the API socket in the mounted run dir.
    let api_socket = run_dir.path().join(
        Path::new(spec["paths"]["api.socket"].as_str().unwrap())
            .file_name()
            .unwrap(),
    );
    // A DaemonProcess: killed when dropped, panic or not.
    let watch =
        DaemonProcess::spawn(&["watch", "--json", "--socket", api_socket.to_str().unwrap()])
            .expect("spawn layerguard watch");
    let deadline = Instant::now() + WAIT;
    loop {
        let out = Command::new(daemon_binary())
            .args(["status", "--json", "--socket", api_socket.to_str().unwrap()])
            .output()
            .unwrap();
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if status["subscribers"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watch never subscribed: {}",
            describe_output(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Another container drops a binary into its writable layer and runs it.
    let workload = Container::run_detached(
        &containerd,
        NS_WORKLOAD,
        &workload_image.reference,
        &unique_id("app"),
        &["sleep", "600"],
        &[],
    )
    .expect("run workload");
    workload
        .exec_ok(&["cp", "/bin/busybox", "/tmp/echo"])
        .unwrap();
    workload
        .exec_ok(&["sh", "-c", "/tmp/echo dropped; true"])
        .unwrap();
    let is_drop = |a: &Value| {
        a["kind"] == "exec_not_in_image"
            && a["container"]["id"] == workload.id()
            && a["evidence"]["path"] == "/tmp/echo"
    };
    let alert = watch
        .wait_for_line(|a| is_drop(a), WAIT)
        .unwrap_or_else(|| {
            panic!(
                "no exec_not_in_image alert through watch:\n{}\npod log:\n{}",
                watch.dump_string(20),
                pod.log()
            )
        });
    assert_eq!(alert["severity"], "high", "{alert}");
    assert_eq!(
        alert["node"], NODE_NAME,
        "--node-name $(NODE_NAME): {alert}"
    );
    assert_eq!(alert["container"]["namespace"], NS_WORKLOAD, "{alert}");
    assert_eq!(
        alert["container"]["image"],
        workload_ref.as_str(),
        "{alert}"
    );
    assert_eq!(
        alert["container"]["manifest_digest"],
        workload_image.manifest_digest.as_str(),
        "{alert}"
    );
    assert_eq!(alert["evidence"]["upper_layer"], true, "{alert}");
    let busybox = sha256_hex(&std::fs::read("/bin/busybox").unwrap());
    assert_eq!(
        alert["evidence"]["actual_sha256"],
        busybox.as_str(),
        "{alert}"
    );
    // The same alert in the pod's JSON log, and journaled in the mounted state dir.
    let logged = wait_log(&pod, "the alert", WAIT, |v| {
        v["message"] == "alert" && is_drop(&v["alert"])
    });
    assert_eq!(logged["alert"]["id"], alert["id"]);
    assert!(
        state_dir.path().join("journal").is_dir(),
        "the journal is in the state dir's hostPath: {:?}",
        std::fs::read_dir(state_dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );

    // The kubelet stops a pod with SIGTERM: the daemon stops cleanly within the grace period.
    containerd
        .ctr_ok(NS_POD, &["tasks", "kill", "-s", "SIGTERM", pod.id()])
        .expect("SIGTERM the pod");
    wait_log(&pod, "\"layerguard stopped\"", GRACE, |v| {
        v["message"] == "layerguard stopped"
    });
    drop(watch);
    pod.kill_and_delete().expect("remove the pod");
    eprintln!("the DaemonSet test took {:?}", started.elapsed());
}
