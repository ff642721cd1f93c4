//! A private containerd per test: its own root, state, sockets, cgroup parent and log in a
//! fresh temp dir, so several can run side by side and none touches the host's
//! `/var/lib/containerd`.
//!
//! Owns the containerd process and everything it leaves on the host: tasks, shims, overlay
//! mounts, cgroups and the temp dir. Dropping a [`PrivateContainerd`] removes all of it, also
//! while a test panics; [`cleanup_stale`] removes what crashed earlier runs left behind.
//! It must not touch containerd instances it did not start.
//!
//! One thing it cannot keep private: containerd 1.6 shims put their ttrpc socket in
//! `/run/containerd/s/<sha256(address/ns/id)>`, a path hard-coded in the shim. The hash
//! includes our socket path, so instances never collide there, and teardown removes them.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::util::{
    self, describe_output, pids_matching, process_start_time, run_with_timeout, signal,
    wait_deadline, wait_pids_gone,
};

/// Prefix of every private containerd's temp dir; [`cleanup_stale`] looks for it.
pub const MARKER_PREFIX: &str = "lg-containerd-";
/// Cgroup (v1, every controller) under which each instance puts its containers, as
/// `/<CGROUP_ROOT>/<instance>/<namespace>/<container id>`. A per-instance parent lets
/// teardown find and kill every container process even when the shim is already gone.
pub const CGROUP_ROOT: &str = "layerguard-tests";
/// The snapshotter the harness uses everywhere; the daemon's layer checks assume overlayfs.
pub const SNAPSHOTTER: &str = "overlayfs";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Import of a multi-megabyte image on a loaded 2-core machine stays well under this.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// Passed to every ctr call: without it ctr keeps redialling a dead socket, which turns a
/// test that crashed containerd on purpose into a slow one.
const CTR_CONNECT_TIMEOUT: &str = "3s";
const KILL_WAIT: Duration = Duration::from_secs(5);
/// A temp dir with no owner file is only considered stale after this long, so a
/// concurrent run that is between mkdir and writing its owner file is left alone.
const OWNERLESS_GRACE: Duration = Duration::from_secs(120);
const LOG_TAIL_ON_PANIC: usize = 30;
/// Where containerd 1.6 shims put their sockets regardless of containerd's own state dir.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
const SHIM_BINARY: &str = "containerd-shim-runc-v2";
const CGROUP_FS: &str = "/sys/fs/cgroup";
const UNIX_PATH_MAX: usize = 108;

struct Inner {
    dir: PathBuf,
    instance: String,
    child: Mutex<Option<Child>>,
    torn_down: AtomicBool,
}

/// Cheap, clonable access to one private containerd: runs `ctr` against it and knows its
/// paths. Containers hold one, so they do not borrow the [`PrivateContainerd`] and a test
/// can still stop, kill or restart containerd while containers exist.
#[derive(Clone)]
pub struct Ctr(Arc<Inner>);

impl std::fmt::Debug for Ctr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctr").field("dir", &self.0.dir).finish()
    }
}

impl Ctr {
    /// The temp dir holding everything of this instance.
    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// Name of the instance (the temp dir's file name), unique on the host.
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// containerd's gRPC socket, what the daemon's `--containerd-socket` takes.
    pub fn socket_path(&self) -> PathBuf {
        self.0.dir.join("containerd.sock")
    }

    /// containerd `--root` (content store, metadata, snapshots).
    pub fn root_dir(&self) -> PathBuf {
        self.0.dir.join("root")
    }

    /// containerd `--state` (task bundles with the rootfs mounts).
    pub fn state_dir(&self) -> PathBuf {
        self.0.dir.join("state")
    }

    /// The overlayfs snapshotter's directory (`snapshots/<n>/fs` are layer and upper dirs).
    pub fn snapshotter_dir(&self) -> PathBuf {
        self.root_dir()
            .join("io.containerd.snapshotter.v1.overlayfs")
    }

    /// Where containerd's stdout and stderr go (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.0.dir.join("containerd.log")
    }

    /// Directory for container stdio log files.
    pub fn container_log_dir(&self) -> PathBuf {
        self.0.dir.join("logs")
    }

    /// ctr `--fifo-dir`: ctr's default is under `/run/containerd`.
    pub fn fifo_dir(&self) -> PathBuf {
        self.0.dir.join("fifo")
    }

    /// ctr `--runc-root`: runc's default root `/run/containerd/runc/<ns>` would be shared
    /// by every instance and collide on equal container ids.
    pub fn runc_root(&self) -> PathBuf {
        self.state_dir().join("runc")
    }

    /// Cgroup parent of this instance's containers (absolute cgroup path).
    pub fn cgroup_parent(&self) -> String {
        format!("/{CGROUP_ROOT}/{}", self.0.instance)
    }

    /// Runs `ctr --address SOCK ARGS...` (no namespace flag) and returns its output,
    /// whatever its exit status. Errors only when ctr cannot be run or times out.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        self.ctr_with_timeout(args, CTR_TIMEOUT)
    }

    /// [`Ctr::ctr`] with a deadline other than the default one minute, for long execs.
    pub fn ctr_with_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.socket_path())
            .args(["--connect-timeout", CTR_CONNECT_TIMEOUT])
            .args(args);
        run_with_timeout(&mut cmd, timeout)
    }

    /// Runs `ctr --address SOCK -n NS ARGS...`, whatever its exit status.
    pub fn ctr_ns(&self, ns: &str, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        self.ctr(&full)
    }

    /// Like [`Ctr::ctr_ns`] but fails unless ctr exits 0; returns stdout.
    pub fn ctr_ok(&self, ns: &str, args: &[&str]) -> Result<String> {
        let out = self.ctr_ns(ns, args)?;
        if !out.status.success() {
            bail!(
                "ctr -n {ns} {} failed: {}",
                args.join(" "),
                describe_output(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Namespaces that exist in this containerd.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        let out = self.ctr(&["namespaces", "ls", "-q"])?;
        if !out.status.success() {
            bail!("ctr namespaces ls failed: {}", describe_output(&out));
        }
        Ok(words(&out.stdout))
    }

    /// Pid of the containerd process, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.0
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// True while the containerd process this harness started is alive.
    pub fn is_running(&self) -> bool {
        let mut guard = self.0.child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Last `n` lines of containerd's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log_path(), n)
    }

    /// Last `n` warning-or-worse lines of containerd's log: the info level is mostly plugin
    /// loading, which buries what went wrong.
    pub fn log_problems(&self, n: usize) -> String {
        const SCANNED_LINES: usize = 2000;
        let tail = tail_file(&self.log_path(), SCANNED_LINES);
        let bad: Vec<&str> = tail
            .lines()
            .filter(|l| !l.contains("level=info") && !l.contains("level=debug"))
            .collect();
        bad[bad.len().saturating_sub(n)..].join("\n")
    }
}

fn words(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A containerd started by the harness in its own temp dir. Derefs to [`Ctr`] for `ctr`
/// calls and paths. Dropping it tears everything down (see the module doc).
pub struct PrivateContainerd {
    ctr: Ctr,
}

impl std::ops::Deref for PrivateContainerd {
    type Target = Ctr;
    fn deref(&self) -> &Ctr {
        &self.ctr
    }
}

impl PrivateContainerd {
    /// Creates the temp dir and config, starts containerd and waits until it answers.
    /// The first call in a process also runs [`cleanup_stale`].
    pub fn start() -> Result<Self> {
        crate::require_root();
        static STALE: Once = Once::new();
        STALE.call_once(|| match cleanup_stale() {
            Ok(cleaned) if !cleaned.is_empty() => {
                eprintln!("layerguard-tests: removed leftovers of earlier runs: {cleaned:?}")
            }
            Ok(_) => {}
            Err(e) => eprintln!("layerguard-tests: cleanup of earlier runs failed: {e:#}"),
        });

        let dir = tempfile::Builder::new()
            .prefix(MARKER_PREFIX)
            .tempdir_in(std::env::temp_dir())
            .context("creating private containerd temp dir")?
            .keep();
        let instance = dir
            .file_name()
            .and_then(|n| n.to_str())
            .context("temp dir name is not UTF-8")?
            .to_owned();
        let ctr = Ctr(Arc::new(Inner {
            dir: dir.clone(),
            instance,
            child: Mutex::new(None),
            torn_down: AtomicBool::new(false),
        }));
        // From here on Drop cleans up, including after a failed start.
        let me = PrivateContainerd { ctr };
        me.prepare_dir()?;
        me.spawn_and_wait()?;
        Ok(me)
    }

    /// A clonable handle that outlives borrows of `self`.
    pub fn client(&self) -> Ctr {
        self.ctr.clone()
    }

    fn prepare_dir(&self) -> Result<()> {
        let dir = self.dir();
        let sock = self.socket_path();
        // The ttrpc socket is the gRPC path plus ".ttrpc", the longest of ours.
        if sock.as_os_str().len() + ".ttrpc".len() >= UNIX_PATH_MAX {
            bail!(
                "socket path {} is too long for a unix socket; set TMPDIR to a shorter dir",
                sock.display()
            );
        }
        let me = std::process::id() as i32;
        let start = process_start_time(me).context("reading own start time")?;
        fs::write(dir.join("owner"), format!("{me} {start}\n")).context("writing owner file")?;
        for sub in ["root", "state", "logs", "fifo", "opt"] {
            fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {sub}"))?;
        }
        let d = dir.display();
        let config = format!(
            r#"# Written by layerguard-tests: a throwaway containerd that must not touch the host's.
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
"#
        );
        fs::write(self.config_path(), config).context("writing containerd config")?;
        Ok(())
    }

    fn config_path(&self) -> PathBuf {
        self.dir().join("config.toml")
    }

    fn spawn_and_wait(&self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening containerd log")?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.config_path())
            .arg("--root")
            .arg(self.root_dir())
            .arg("--state")
            .arg(self.state_dir())
            .arg("--address")
            .arg(self.socket_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup log fd")?)
            .stderr(log)
            .spawn()
            .context("spawning containerd (apt-get install -y containerd runc)")?;
        *self.0.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            {
                let mut guard = self.0.child.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(status) = guard.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    guard.take();
                    bail!(
                        "containerd exited during startup ({status}); log {}:\n{}",
                        self.log_path().display(),
                        self.log_tail(40)
                    );
                }
            }
            if self.socket_path().exists() {
                let out = self.ctr(&["version"]);
                if matches!(&out, Ok(o) if o.status.success()) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.socket_path().display(),
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL after a timeout. Tasks and shims keep running, as they do when
    /// a real containerd restarts. Returns containerd's exit status.
    pub fn stop(&self) -> Result<ExitStatus> {
        let mut child = self
            .0
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .context("containerd is not running")?;
        signal(child.id() as i32, libc::SIGTERM)?;
        if let Some(status) = wait_deadline(&mut child, STOP_TIMEOUT)? {
            return Ok(status);
        }
        eprintln!("layerguard-tests: containerd ignored SIGTERM for {STOP_TIMEOUT:?}; killing");
        child.kill().context("SIGKILL containerd")?;
        child.wait().context("reaping containerd")
    }

    /// SIGKILL, to simulate a crash. Shims and tasks survive, as they would.
    pub fn kill(&self) -> Result<()> {
        let mut child = self
            .0
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .context("containerd is not running")?;
        child.kill().context("SIGKILL containerd")?;
        child.wait().context("reaping containerd")?;
        Ok(())
    }

    /// Starts containerd again on the same dirs and sockets after [`stop`](Self::stop) or
    /// [`kill`](Self::kill); it reconnects to the surviving shims.
    pub fn start_again(&self) -> Result<()> {
        if self.is_running() {
            bail!("containerd is still running");
        }
        self.spawn_and_wait()
    }

    /// Kills and deletes every task and container in every namespace, through containerd,
    /// so it unmounts and removes snapshots itself.
    fn remove_all_containers(&self) -> Result<()> {
        for ns in self.namespaces()? {
            let tasks = self.ctr_ns(&ns, &["tasks", "ls", "-q"])?;
            for id in words(&tasks.stdout) {
                let _ = self.ctr_ns(&ns, &["tasks", "kill", "-a", "-s", "SIGKILL", &id]);
                let out = self.ctr_ns(&ns, &["tasks", "delete", "-f", &id])?;
                if !out.status.success() {
                    eprintln!(
                        "layerguard-tests: ctr -n {ns} tasks delete -f {id}: {}",
                        describe_output(&out)
                    );
                }
            }
            let containers = self.ctr_ns(&ns, &["containers", "ls", "-q"])?;
            for id in words(&containers.stdout) {
                let out = self.ctr_ns(&ns, &["containers", "delete", &id])?;
                if !out.status.success() {
                    eprintln!(
                        "layerguard-tests: ctr -n {ns} containers delete {id}: {}",
                        describe_output(&out)
                    );
                }
            }
        }
        Ok(())
    }

    fn teardown(&mut self) {
        if self.0.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        if thread::panicking() {
            eprintln!(
                "layerguard-tests: containerd warnings and errors ({}):\n{}",
                self.log_path().display(),
                self.log_problems(LOG_TAIL_ON_PANIC)
            );
        }
        if self.is_running() {
            if let Err(e) = self.remove_all_containers() {
                eprintln!("layerguard-tests: removing containers through ctr failed: {e:#}");
            }
            if let Err(e) = self.stop() {
                eprintln!("layerguard-tests: stopping containerd failed: {e:#}");
            }
        }
        if let Err(e) = teardown_dir(self.dir(), false) {
            eprintln!(
                "layerguard-tests: teardown of {} incomplete: {e:#}",
                self.dir().display()
            );
        }
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes the leftovers of earlier runs whose owning process is gone: containerd and shim
/// processes, container processes, overlay mounts, cgroups, shim sockets and the temp dirs
/// named `MARKER_PREFIX*`. Returns the dirs it removed. Instances of live processes (another
/// test binary running now) are left alone.
pub fn cleanup_stale() -> Result<Vec<PathBuf>> {
    let tmp = std::env::temp_dir();
    let mut cleaned = Vec::new();
    let mut live_instances = Vec::new();
    for entry in fs::read_dir(&tmp).with_context(|| format!("listing {}", tmp.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(MARKER_PREFIX) || !entry.file_type()?.is_dir() {
            continue;
        }
        let dir = entry.path();
        if owner_alive(&dir) {
            live_instances.push(name);
            continue;
        }
        teardown_dir(&dir, true)?;
        cleaned.push(dir);
    }
    // Cgroups whose temp dir vanished (e.g. removed by hand) still hold processes.
    for ctrl in cgroup_controllers() {
        let Ok(entries) = fs::read_dir(ctrl.join(CGROUP_ROOT)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && !live_instances.contains(&name) {
                teardown_cgroups(&name)?;
            }
        }
    }
    Ok(cleaned)
}

fn owner_alive(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("owner")) else {
        let age = fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        return age.is_none_or(|a| a < OWNERLESS_GRACE);
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(pid)), Some(Ok(start))) => process_start_time(pid as i32) == Some(start),
        _ => false,
    }
}

/// Removes everything an instance in `dir` may have left. With `stale`, also kills any
/// process naming the dir on its command line (an orphaned containerd, or a daemon under
/// test whose harness died); a live teardown only kills shims, since the test's own daemon
/// is dropped by the test.
fn teardown_dir(dir: &Path, stale: bool) -> Result<()> {
    let instance = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("instance dir has no name")?
        .to_owned();
    let dir_str = dir.to_string_lossy().into_owned();
    let mentions_dir = |args: &[String]| args.iter().any(|a| a.contains(dir_str.as_str()));
    let is_shim = |args: &[String]| {
        args.first()
            .is_some_and(|a0| Path::new(a0).file_name().is_some_and(|n| n == SHIM_BINARY))
    };

    if stale {
        let pids = pids_matching(|args| mentions_dir(args) && !is_shim(args));
        kill_and_wait(&pids);
    }
    // Container processes first: once their shim is gone nothing else would reap them.
    teardown_cgroups(&instance)?;
    let shims = pids_matching(|args| is_shim(args) && mentions_dir(args));
    kill_and_wait(&shims);
    remove_shim_sockets(dir);
    util::unmount_all_under(dir)?;
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn kill_and_wait(pids: &[i32]) {
    for pid in pids {
        let _ = signal(*pid, libc::SIGKILL);
    }
    let left = wait_pids_gone(pids, KILL_WAIT);
    if !left.is_empty() {
        eprintln!("layerguard-tests: processes survived SIGKILL: {left:?}");
    }
}

/// Shim sockets are `/run/containerd/s/<hex sha256 of "<address>/<ns>/<id>">` (containerd
/// 1.6 `shim.SocketAddress`). Task bundles under the state dir tell which ns/id existed.
fn remove_shim_sockets(dir: &Path) {
    let address = dir.join("containerd.sock");
    let bundles = dir.join("state").join("io.containerd.runtime.v2.task");
    let Ok(namespaces) = fs::read_dir(&bundles) else {
        return;
    };
    for ns in namespaces.flatten() {
        let Ok(ids) = fs::read_dir(ns.path()) else {
            continue;
        };
        for id in ids.flatten() {
            let key = address.join(ns.file_name()).join(id.file_name());
            let hash = util::sha256_hex(key.as_os_str().as_encoded_bytes());
            let _ = fs::remove_file(Path::new(SHIM_SOCKET_DIR).join(hash));
        }
    }
}

fn cgroup_controllers() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CGROUP_FS) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Every cgroup dir below `root`, deepest first.
fn cgroup_tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Kills every process in the instance's cgroups and removes the cgroup dirs. Frozen
/// cgroups are thawed first: a SIGKILL stays pending in a frozen task.
fn teardown_cgroups(instance: &str) -> Result<()> {
    let roots: Vec<PathBuf> = cgroup_controllers()
        .into_iter()
        .map(|c| c.join(CGROUP_ROOT).join(instance))
        .filter(|p| p.is_dir())
        .collect();
    if roots.is_empty() {
        return Ok(());
    }
    let mut pids = Vec::new();
    for root in &roots {
        for cg in cgroup_tree(root) {
            let _ = fs::write(cg.join("freezer.state"), "THAWED");
            if let Ok(procs) = fs::read_to_string(cg.join("cgroup.procs")) {
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    kill_and_wait(&pids);
    for root in &roots {
        for cg in cgroup_tree(root) {
            remove_cgroup_dir(&cg);
        }
        // Shared by all instances; fails harmlessly while another one still uses it.
        if let Some(parent) = root.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
    Ok(())
}

fn remove_cgroup_dir(cg: &Path) {
    // A just-killed task can linger in the cgroup for a moment while the kernel reaps it.
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        match fs::remove_dir(cg) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= deadline => {
                eprintln!("layerguard-tests: rmdir {}: {e}", cg.display());
                return;
            }
            Err(_) => thread::sleep(util::POLL_INTERVAL),
        }
    }
}

/// Last `n` lines of a text file, or a note saying why there are none.
pub(crate) fn tail_file(path: &Path, n: usize) -> String {
    const MAX_TAIL_BYTES: u64 = 64 * 1024;
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(no file {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
