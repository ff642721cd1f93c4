//! A container host in miniature for one test: a private containerd, an image of busybox
//! (plus the test's own layers) imported into a namespace, a state dir, and the daemon
//! under test started on them and ready. Tests then run containers and wait for what the
//! daemon says about them.
//!
//! Owns the setup every integration test repeats and the waits on the daemon's output
//! (alerts, per-exec verdict records, messages) and the predicates on its lines, with the
//! wait constants every test file uses ([`WAIT`], [`RECONNECT_WAIT`]). It knows the
//! daemon's log schema (`message`, `alert`, `verdict`, `container.id`, `argv`) but decides
//! nothing a test asserts. Test files wrap a `TestNode` (by `Deref`) when they keep state
//! of their own, such as one running container.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::{
    busybox_image, daemon_binary, require_root, run_args, unique_id, BuiltImage, Container,
    DaemonProcess, ImageBuilder, Layer, PrivateContainerd,
};

/// How long a test waits for the daemon to say something it must say (ready, an alert, a
/// verdict). Generous: it bounds a failure, it is not a speed assertion.
pub const WAIT: Duration = Duration::from_secs(30);

/// How long a test waits for something to come back after a restart: the daemon's
/// containerd reconnect and the `watch` client's reconnect both back off up to 5 s.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(60);

/// How a [`TestNode`] is set up.
pub struct NodeBuilder {
    ns: String,
    layers: Vec<Layer>,
    image: Option<ImageBuilder>,
    args: Vec<String>,
    log_execs: bool,
    import: bool,
    start: bool,
}

impl NodeBuilder {
    /// Adds a layer on top of busybox.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Uses this image instead of busybox plus layers.
    pub fn image(mut self, image: ImageBuilder) -> Self {
        self.image = Some(image);
        self
    }

    /// Extra `layerguard run` arguments (`--set key=value`, ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Also log a verdict record per exec (`verify.log_execs`): verified execs are only
    /// visible there.
    pub fn log_execs(mut self) -> Self {
        self.log_execs = true;
        self
    }

    /// Builds the image but leaves it out of containerd: the test imports it its own way
    /// (an index, a packed archive).
    pub fn without_import(mut self) -> Self {
        self.import = false;
        self
    }

    /// Leaves the daemon stopped: the test starts it with [`TestNode::start_daemon`].
    pub fn without_daemon(mut self) -> Self {
        self.start = false;
        self
    }

    pub fn build(self) -> TestNode {
        require_root();
        let containerd = PrivateContainerd::start().expect("start private containerd");
        let reference = format!("layerguard.test/{}-{}:1", self.ns, unique_id("img"));
        let mut image = match self.image {
            Some(i) => i,
            None => busybox_image(&reference).expect("busybox image"),
        };
        for layer in self.layers {
            image = image.layer(layer);
        }
        let image = if self.import {
            image.import(&containerd, &self.ns).expect("import image")
        } else {
            image.build().expect("build image")
        };
        let state = tempfile::tempdir().expect("state dir");
        // The test's own arguments come last: they override the builder's.
        let mut args = Vec::new();
        if self.log_execs {
            args.extend(["--set".into(), "verify.log_execs=true".into()]);
        }
        args.extend(self.args);
        let mut node = TestNode {
            daemon: None,
            ready: Value::Null,
            image,
            state,
            ns: self.ns,
            args,
            containerd,
        };
        if self.start {
            node.start_daemon();
        }
        node
    }
}

/// One test's host: containerd, image, state dir, daemon. Dropping it kills the daemon,
/// then removes containers and containerd (fields drop in order).
pub struct TestNode {
    daemon: Option<DaemonProcess>,
    /// The daemon's last ready line.
    ready: Value,
    pub image: BuiltImage,
    pub state: TempDir,
    ns: String,
    args: Vec<String>,
    pub containerd: PrivateContainerd,
}

impl TestNode {
    /// A node whose image lives in containerd namespace `ns`.
    pub fn builder(ns: &str) -> NodeBuilder {
        NodeBuilder {
            ns: ns.to_string(),
            layers: Vec::new(),
            image: None,
            args: Vec::new(),
            log_execs: false,
            import: true,
            start: true,
        }
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The daemon's command line: [`run_args`] with this node's containerd, state dir and
    /// extra arguments.
    pub fn run_args(&self) -> Vec<String> {
        let extra: Vec<&str> = self.args.iter().map(String::as_str).collect();
        run_args(&self.containerd.socket_path(), self.state.path(), &extra)
    }

    /// Starts the daemon (again, after [`stop_daemon`](Self::stop_daemon)) and waits for
    /// it to be ready.
    pub fn start_daemon(&mut self) -> &mut DaemonProcess {
        self.start_daemon_with(&[])
    }

    /// Starts the daemon with more arguments than the node's for this run only.
    pub fn start_daemon_with(&mut self, extra: &[&str]) -> &mut DaemonProcess {
        assert!(self.daemon.is_none(), "the daemon is already running");
        let mut args = self.run_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut daemon = DaemonProcess::spawn(&args).expect("spawn daemon");
        self.ready = daemon.wait_ready(WAIT).expect("daemon ready");
        self.daemon = Some(daemon);
        self.daemon.as_mut().expect("just set")
    }

    /// SIGTERM (SIGKILL after the harness's stop timeout); returns the stopped process,
    /// whose output can still be read.
    pub fn stop_daemon(&mut self) -> DaemonProcess {
        let mut d = self.daemon.take().expect("the daemon is running");
        d.stop().expect("stop daemon");
        d
    }

    /// SIGKILL, as a crash.
    pub fn kill_daemon(&mut self) -> DaemonProcess {
        let mut d = self.daemon.take().expect("the daemon is running");
        d.kill9().expect("kill daemon");
        d
    }

    /// SIGKILL, then the same command line again (same state dir, journal and socket).
    pub fn crash_and_restart(&mut self) {
        self.kill_daemon();
        self.start_daemon();
    }

    pub fn daemon(&self) -> &DaemonProcess {
        self.daemon.as_ref().expect("the daemon is running")
    }

    pub fn daemon_mut(&mut self) -> &mut DaemonProcess {
        self.daemon.as_mut().expect("the daemon is running")
    }

    /// Panics (with the daemon's output) unless the daemon is still running.
    pub fn assert_daemon_alive(&mut self) {
        let status = self.daemon_mut().try_exit_status().expect("poll daemon");
        assert!(
            status.is_none(),
            "daemon exited ({status:?}):\n{}",
            self.daemon().dump_string(40)
        );
    }

    /// The host's mount namespace, as the daemon's ready line gave it.
    pub fn host_mnt_ns(&self) -> u64 {
        self.ready["host_mnt_ns"]
            .as_u64()
            .unwrap_or_else(|| panic!("the ready line has no host_mnt_ns: {}", self.ready))
    }

    /// Imports another image into namespace `ns` of the node's containerd.
    pub fn import(&self, image: ImageBuilder, ns: &str) -> BuiltImage {
        image.import(&self.containerd, ns).expect("import image")
    }

    /// Runs the `layerguard` binary (as a client: `status`, `alerts`, `respond`, ...).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(daemon_binary())
            .args(args)
            .output()
            .expect("run layerguard")
    }

    /// `layerguard status --json` on the node's socket.
    pub fn status(&self) -> Value {
        let socket = self.api_socket();
        let out = self.cli(&["status", "--json", "--socket", socket.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// `layerguard containers --json` on the node's socket: one object per container.
    pub fn containers(&self) -> Vec<Value> {
        let socket = self.api_socket();
        let out = self.cli(&["containers", "--json", "--socket", socket.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The daemon's API socket (in its state dir, see [`DaemonProcess::spawn_with`]).
    pub fn api_socket(&self) -> PathBuf {
        self.state.path().join("api.sock")
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// A container of the node's image running `sleep 600`.
    pub fn container(&self) -> Container {
        self.container_running(&["sleep", "600"])
    }

    /// A container of the node's image running `args`.
    pub fn container_running(&self, args: &[&str]) -> Container {
        Container::run_detached(
            &self.containerd,
            &self.ns,
            &self.image.reference,
            &unique_id("c"),
            args,
            &[],
        )
        .expect("run container")
    }

    /// A container of `image` (imported in namespace `ns`) running `sleep 600`.
    pub fn container_of(&self, ns: &str, image: &BuiltImage) -> Container {
        Container::run_detached(
            &self.containerd,
            ns,
            &image.reference,
            &unique_id("c"),
            &["sleep", "600"],
            &[],
        )
        .expect("run container")
    }

    /// Waits for a line from `cursor` on matching `pred`; panics naming `what`, with the
    /// daemon's last lines.
    pub fn wait_line_after(&self, cursor: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_line_within(cursor, what, WAIT, pred)
    }

    /// [`wait_line_after`](Self::wait_line_after) with another bound than [`WAIT`].
    pub fn wait_line_within(
        &self,
        cursor: u64,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.daemon()
            .wait_for_line_after(cursor, pred, timeout)
            .unwrap_or_else(|| {
                panic!(
                    "the daemon did not log {what} within {timeout:?}:\n{}",
                    self.daemon().dump_string(60)
                )
            })
    }

    /// Waits for a line whose `message` is `message`, from `cursor` on.
    pub fn wait_message_after(&self, cursor: u64, message: &str, timeout: Duration) -> Value {
        self.wait_line_within(cursor, &format!("{message:?}"), timeout, |v| {
            v["message"] == message
        })
    }

    /// How many lines with this `message` the daemon logged (this run).
    pub fn count_messages(&self, message: &str) -> usize {
        self.daemon()
            .json_lines()
            .iter()
            .filter(|v| v["message"] == message)
            .count()
    }

    /// Waits for the `n`-th "containerd connected" line (1-based) of this run.
    pub fn wait_connected(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count_messages("containerd connected") >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "daemon did not log \"containerd connected\" {n} time(s) within {timeout:?}:\n{}",
            self.daemon().dump_string(40)
        );
    }

    /// Waits for the exec record (from `cursor` on) whose argv is exactly `argv`.
    pub fn exec_record_after(&self, cursor: u64, argv: &[&str]) -> Value {
        self.wait_line_after(cursor, &format!("an exec record with argv {argv:?}"), |v| {
            is_exec_of(v, argv)
        })
    }

    /// Waits for the exec record (from `cursor` on) with `arg` among its arguments.
    pub fn exec_record_with_arg(&self, cursor: u64, arg: &str) -> Value {
        self.wait_line_after(
            cursor,
            &format!("an exec record with {arg:?} in argv"),
            |v| is_exec_with_arg(v, arg),
        )
    }

    /// Every alert the daemon logged so far for container `c`.
    pub fn alerts_for(&self, c: &Container) -> Vec<Value> {
        self.daemon()
            .json_lines()
            .into_iter()
            .filter(|v| v["message"] == "alert" && v["alert"]["container"]["id"] == c.id())
            .map(|v| v["alert"].clone())
            .collect()
    }

    /// Waits for an alert for container `c` matching `pred`.
    pub fn wait_alert(&self, c: &Container, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_alert_after(0, c, pred)
    }

    /// [`wait_alert`](Self::wait_alert) among the lines from `cursor` on.
    pub fn wait_alert_after(
        &self,
        cursor: u64,
        c: &Container,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.daemon()
            .wait_for_line_after(cursor, |v| is_alert_for(v, c) && pred(&v["alert"]), WAIT)
            .map(|v| v["alert"].clone())
            .unwrap_or_else(|| {
                panic!(
                    "no such alert for {}:\n{}",
                    c.id(),
                    self.daemon().dump_string(40)
                )
            })
    }

    /// Waits for the verdict record of an exec with exactly this argv in `c` (needs
    /// [`NodeBuilder::log_execs`]).
    pub fn verdict_of(&self, c: &Container, argv: &[&str]) -> Value {
        self.daemon()
            .wait_for_line(
                |v| {
                    v["message"] == "exec"
                        && v["container"]["id"] == c.id()
                        && argv_is(v, argv)
                        && v["verdict"].is_object()
                },
                WAIT,
            )
            .unwrap_or_else(|| {
                panic!(
                    "no verdict for {argv:?}:\n{}",
                    self.daemon().dump_string(40)
                )
            })
    }
}

/// True for the daemon's alert line about container `c`.
pub fn is_alert_for(line: &Value, c: &Container) -> bool {
    line["message"] == "alert" && line["alert"]["container"]["id"] == c.id()
}

/// True when an exec record or alert process has exactly this argv.
pub fn argv_is(line: &Value, argv: &[&str]) -> bool {
    line["argv"].as_array().is_some_and(|a| {
        a.iter()
            .map(|x| x.as_str())
            .eq(argv.iter().map(|s| Some(*s)))
    })
}

/// True for an exec record with exactly this argv.
pub fn is_exec_of(line: &Value, argv: &[&str]) -> bool {
    line["message"] == "exec" && argv_is(line, argv)
}

/// True for an exec record with `arg` among its arguments.
pub fn is_exec_with_arg(line: &Value, arg: &str) -> bool {
    line["message"] == "exec"
        && line["argv"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(arg)))
}

/// Runs `args` in `c` and panics unless it exits 0.
pub fn run_ok(c: &Container, args: &[&str]) {
    let out = c.exec(args).expect("exec");
    assert!(out.status.success(), "{args:?}: {out:?}");
}
