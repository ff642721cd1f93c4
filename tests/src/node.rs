//! A container host in miniature for one test: a private containerd, an image of busybox
//! (plus the test's own layers) imported into a namespace, a state dir, and the daemon
//! under test started on them and ready. Tests then run containers and wait for what the
//! daemon says about them.
//!
//! Owns the setup every integration test repeats and the waits on the daemon's output
//! (alerts, per-exec verdict records), with one wait constant. It knows the daemon's log
//! schema (`message`, `alert`, `verdict`, `container.id`) but decides nothing a test
//! asserts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::{
    busybox_image, require_root, run_args, unique_id, BuiltImage, Container, DaemonProcess,
    ImageBuilder, Layer, PrivateContainerd,
};

/// How long a test waits for the daemon to say something it must say (ready, an alert, a
/// verdict). Generous: it bounds a failure, it is not a speed assertion.
pub const WAIT: Duration = Duration::from_secs(30);

/// How a [`TestNode`] is set up.
pub struct NodeBuilder {
    ns: String,
    layers: Vec<Layer>,
    image: Option<ImageBuilder>,
    args: Vec<String>,
    log_execs: bool,
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
        let image = image.import(&containerd, &self.ns).expect("import image");
        let state = tempfile::tempdir().expect("state dir");
        let mut args = self.args;
        if self.log_execs {
            args.extend(["--set".into(), "verify.log_execs=true".into()]);
        }
        let mut node = TestNode {
            daemon: None,
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
        daemon.wait_ready(WAIT).expect("daemon ready");
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

    pub fn daemon(&self) -> &DaemonProcess {
        self.daemon.as_ref().expect("the daemon is running")
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

/// Runs `args` in `c` and panics unless it exits 0.
pub fn run_ok(c: &Container, args: &[&str]) {
    let out = c.exec(args).expect("exec");
    assert!(out.status.success(), "{args:?}: {out:?}");
}
