//! Containers in a private containerd, driven through `ctr`: run detached or one-shot,
//! exec into, find the task pid and the overlay dirs on the host, and clean up.
//!
//! Owns one container and its task. Every container gets the instance's cgroup parent,
//! runc root, fifo dir and a stdio log file inside the instance's temp dir, so nothing lands
//! in the host's `/run/containerd` runc or fifo dirs. It must not outlive-manage containerd
//! itself: when containerd is gone, dropping a container leaves the rest to
//! [`PrivateContainerd`](crate::PrivateContainerd)'s teardown.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::containerd::{Ctr, SNAPSHOTTER};
use crate::util::describe_output;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Deadline of [`Container::exec`]; use [`Container::exec_timeout`] for longer work.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A container id unique within this test process, e.g. `exec-gate-3`.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// Extra settings for [`Container::run_with`] and [`Container::run_once_with`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Container labels (`--label k=v`).
    pub labels: Vec<(String, String)>,
    /// Extra environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: Option<String>,
    /// Any further `ctr run` flags, inserted before the image reference.
    pub extra_flags: Vec<String>,
}

impl RunOptions {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.to_owned());
        self
    }

    pub fn flag(mut self, flag: &str) -> Self {
        self.extra_flags.push(flag.to_owned());
        self
    }
}

/// The overlay mount of a container's rootfs, as the snapshotter reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// Lower dirs in overlayfs order: topmost image layer first.
    pub lower_dirs: Vec<PathBuf>,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
}

impl OverlayMount {
    /// Parses the options of a `mount -t overlay ... -o OPTIONS` line or a mountinfo
    /// super-options field.
    pub fn parse_options(options: &str) -> Result<Self> {
        let mut lower = None;
        let mut upper = None;
        let mut work = None;
        for opt in options.split(',') {
            match opt.split_once('=') {
                Some(("lowerdir", v)) => {
                    lower = Some(v.split(':').map(PathBuf::from).collect::<Vec<_>>())
                }
                Some(("upperdir", v)) => upper = Some(PathBuf::from(v)),
                Some(("workdir", v)) => work = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        Ok(OverlayMount {
            lower_dirs: lower.context("overlay options without lowerdir")?,
            upper_dir: upper.context("overlay options without upperdir")?,
            work_dir: work.context("overlay options without workdir")?,
        })
    }
}

/// A container (and usually its running task) in a private containerd. Dropping it kills
/// the task and deletes the container with its snapshot.
#[derive(Debug)]
pub struct Container {
    ctr: Ctr,
    ns: String,
    id: String,
    deleted: bool,
}

impl Container {
    /// `ctr -n NS run -d --label k=v ... IMAGE ID ARGS`: starts the container and returns
    /// once the task runs. stdout and stderr go to [`Container::log_path`].
    pub fn run_detached(
        containerd: &Ctr,
        ns: &str,
        image: &str,
        id: &str,
        args: &[&str],
        labels: &[(&str, &str)],
    ) -> Result<Self> {
        let mut opts = RunOptions::default();
        for (k, v) in labels {
            opts = opts.label(k, v);
        }
        Self::run_with(containerd, ns, image, id, args, &opts)
    }

    /// Like [`Container::run_detached`] with more settings.
    pub fn run_with(
        containerd: &Ctr,
        ns: &str,
        image: &str,
        id: &str,
        args: &[&str],
        opts: &RunOptions,
    ) -> Result<Self> {
        let log = log_path(containerd, ns, id);
        let log_uri = format!("file://{}", log.display());
        let mut argv = vec![
            "run".to_owned(),
            "-d".to_owned(),
            "--log-uri".to_owned(),
            log_uri,
        ];
        argv.extend(common_run_flags(containerd, ns, id, opts));
        argv.push(image.to_owned());
        argv.push(id.to_owned());
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        ensure_id_free(containerd, ns, id)?;
        // From here on a half-created container (runc create failed after containerd made
        // the container and its snapshot) is removed by Drop.
        let mut container = Container {
            ctr: containerd.clone(),
            ns: ns.to_owned(),
            id: id.to_owned(),
            deleted: false,
        };
        let out = containerd.ctr_ns(ns, &argv)?;
        if !out.status.success() {
            if String::from_utf8_lossy(&out.stderr).contains("already exists") {
                // Someone else's container or snapshot: not ours to delete.
                container.deleted = true;
            }
            bail!(
                "ctr run {id} ({image}) failed: {}; containerd warnings:\n{}",
                describe_output(&out),
                containerd.log_problems(20)
            );
        }
        Ok(container)
    }

    /// Runs `ctr run --rm IMAGE ID ARGS` to completion and returns its output; ctr's exit
    /// status is the container process's.
    pub fn run_once(
        containerd: &Ctr,
        ns: &str,
        image: &str,
        id: &str,
        args: &[&str],
    ) -> Result<Output> {
        Self::run_once_with(containerd, ns, image, id, args, &RunOptions::default())
    }

    /// Like [`Container::run_once`] with more settings.
    pub fn run_once_with(
        containerd: &Ctr,
        ns: &str,
        image: &str,
        id: &str,
        args: &[&str],
        opts: &RunOptions,
    ) -> Result<Output> {
        let mut argv = vec!["run".to_owned(), "--rm".to_owned()];
        argv.extend(common_run_flags(containerd, ns, id, opts));
        argv.push(image.to_owned());
        argv.push(id.to_owned());
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        ensure_id_free(containerd, ns, id)?;
        let out = containerd.ctr_ns(ns, &argv);
        // `--rm` does not remove the container when the task never started (or ctr timed
        // out); remove it here so the id can be reused and nothing lingers.
        let left = containerd.ctr_ns(ns, &["containers", "info", id]);
        if left.is_ok_and(|o| o.status.success()) {
            let mut guard = Container {
                ctr: containerd.clone(),
                ns: ns.to_owned(),
                id: id.to_owned(),
                deleted: false,
            };
            guard.kill_and_delete()?;
        }
        out
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Runs `ARGS` in the container with `ctr tasks exec` and waits for it. The output's
    /// status is the process's exit status.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.exec_timeout(args, DEFAULT_EXEC_TIMEOUT)
    }

    /// [`Container::exec`] with its own deadline; on timeout ctr is killed (the process in
    /// the container is not) and an error returned.
    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let exec_id = unique_id("exec");
        let fifo = self.ctr.fifo_dir().to_string_lossy().into_owned();
        let mut argv = vec!["-n", &self.ns, "tasks", "exec", "--fifo-dir", &fifo];
        argv.extend_from_slice(&["--exec-id", &exec_id, &self.id]);
        argv.extend_from_slice(args);
        self.ctr.ctr_with_timeout(&argv, timeout)
    }

    /// [`Container::exec`] that fails unless the process exits 0; returns its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args)?;
        if !out.status.success() {
            bail!("exec {:?} in {}: {}", args, self.id, describe_output(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Host pid of the task's init process (from `ctr tasks ls`).
    pub fn pid(&self) -> Result<u32> {
        let listing = self.ctr.ctr_ok(&self.ns, &["tasks", "ls"])?;
        parse_task_pid(&listing, &self.id)
            .with_context(|| format!("no task {} in ctr tasks ls:\n{listing}", self.id))
    }

    /// Task status word from `ctr tasks ls` (`RUNNING`, `STOPPED`, `PAUSED`, ...).
    pub fn status(&self) -> Result<String> {
        let listing = self.ctr.ctr_ok(&self.ns, &["tasks", "ls"])?;
        listing
            .lines()
            .skip(1)
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.first() == Some(&self.id.as_str()))
                    .then(|| cols.get(2).map(|s| s.to_string()))
            })
            .flatten()
            .with_context(|| format!("no task {} in ctr tasks ls:\n{listing}", self.id))
    }

    /// Where the shim mounts the rootfs on the host (the task bundle's `rootfs`).
    pub fn rootfs(&self) -> PathBuf {
        self.ctr
            .state_dir()
            .join("io.containerd.runtime.v2.task")
            .join(&self.ns)
            .join(&self.id)
            .join("rootfs")
    }

    /// The container's stdio log (from `--log-uri file://`).
    pub fn log_path(&self) -> PathBuf {
        log_path(&self.ctr, &self.ns, &self.id)
    }

    /// Everything the container's init process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The rootfs overlay as the snapshotter reports it (`ctr snapshots mounts`), which
    /// works with or without a running task and always gives absolute paths (the kernel's
    /// mountinfo may show the shortened relative lowerdirs containerd uses for deep images).
    pub fn overlay_mount(&self) -> Result<OverlayMount> {
        let out = self.ctr.ctr_ok(
            &self.ns,
            &[
                "snapshots",
                "--snapshotter",
                SNAPSHOTTER,
                "mounts",
                "/lg-unused-target",
                &self.id,
            ],
        )?;
        let options = out
            .split_whitespace()
            .skip_while(|w| *w != "-o")
            .nth(1)
            .with_context(|| format!("no -o in ctr snapshots mounts output: {out:?}"))?;
        OverlayMount::parse_options(options)
    }

    /// Host path of the container's overlay upper dir (where writes and copy-ups land).
    pub fn upper_dir(&self) -> Result<PathBuf> {
        Ok(self.overlay_mount()?.upper_dir)
    }

    /// Host paths of the image layers' unpacked dirs, in image order: index `i` is the dir
    /// of `BuiltImage::layers[i]` (base layer first, the reverse of overlayfs order).
    pub fn lower_dirs(&self) -> Result<Vec<PathBuf>> {
        let mut dirs = self.overlay_mount()?.lower_dirs;
        dirs.reverse();
        Ok(dirs)
    }

    /// Kills the task (SIGKILL), waits for it, deletes it, then deletes the container and
    /// its snapshot. Idempotent.
    pub fn kill_and_delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        // The task may already be gone (exited and deleted, or never started).
        let _ = self.ctr.ctr_ns(
            &self.ns,
            &["tasks", "kill", "-a", "-s", "SIGKILL", &self.id],
        );
        let out = self
            .ctr
            .ctr_ns(&self.ns, &["tasks", "delete", "-f", &self.id])?;
        let task_err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() && !task_err.contains("not found") {
            bail!("ctr tasks delete -f {}: {}", self.id, describe_output(&out));
        }
        let out = self
            .ctr
            .ctr_ns(&self.ns, &["containers", "delete", &self.id])?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !err.contains("not found") {
            bail!(
                "ctr containers delete {}: {}",
                self.id,
                describe_output(&out)
            );
        }
        Ok(())
    }

    /// Consumes the container without deleting it (e.g. to leave it to containerd teardown).
    pub fn forget(mut self) {
        self.deleted = true;
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.deleted || !self.ctr.is_running() {
            return;
        }
        if let Err(e) = self.kill_and_delete() {
            eprintln!("layerguard-tests: cleaning up container {}: {e:#}", self.id);
        }
    }
}

/// Fails when `id` is taken, so the cleanup of a failed run never deletes a container
/// that belongs to someone else.
fn ensure_id_free(ctr: &Ctr, ns: &str, id: &str) -> Result<()> {
    let out = ctr.ctr_ns(ns, &["containers", "info", id])?;
    if out.status.success() {
        bail!("container {id} already exists in namespace {ns}");
    }
    Ok(())
}

fn log_path(ctr: &Ctr, ns: &str, id: &str) -> PathBuf {
    ctr.container_log_dir().join(format!("{ns}-{id}.log"))
}

/// Flags every `ctr run` of the harness gets, so the container's runtime state stays inside
/// the instance's temp dir and its cgroup under the instance's parent.
fn common_run_flags(ctr: &Ctr, ns: &str, id: &str, opts: &RunOptions) -> Vec<String> {
    let mut f = vec![
        "--snapshotter".to_owned(),
        SNAPSHOTTER.to_owned(),
        "--runc-root".to_owned(),
        path_str(&ctr.runc_root()),
        "--fifo-dir".to_owned(),
        path_str(&ctr.fifo_dir()),
        "--cgroup".to_owned(),
        format!("{}/{ns}/{id}", ctr.cgroup_parent()),
    ];
    for (k, v) in &opts.labels {
        f.push("--label".to_owned());
        f.push(format!("{k}={v}"));
    }
    for e in &opts.env {
        f.push("--env".to_owned());
        f.push(e.clone());
    }
    if let Some(cwd) = &opts.cwd {
        f.push("--cwd".to_owned());
        f.push(cwd.clone());
    }
    f.extend(opts.extra_flags.iter().cloned());
    f
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Finds `id`'s pid in `ctr tasks ls` output (`TASK PID STATUS` columns).
fn parse_task_pid(listing: &str, id: &str) -> Option<u32> {
    listing.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.first() == Some(&id) {
            cols.get(1)?.parse().ok()
        } else {
            None
        }
    })
}

/// One path of a container's root as [`container_view`] lists it: kind (`F` file, `D` dir,
/// `L` symlink, `O` other), permission bits, and the sha256 (files) or target (symlinks).
pub type ViewEntry = (char, u32, String);

/// The container's whole root filesystem (`find / -xdev`) as `path -> ViewEntry`, in one
/// exec: what an image index must match.
pub fn container_view(c: &Container) -> std::collections::BTreeMap<String, ViewEntry> {
    let script = r#"find / -xdev | while read -r p; do
  if [ -L "$p" ]; then echo "L|$p|777|$(readlink "$p")"
  elif [ -d "$p" ]; then echo "D|$p|$(stat -c %a "$p")|"
  elif [ -f "$p" ]; then h=$(sha256sum "$p"); echo "F|$p|$(stat -c %a "$p")|${h%% *}"
  else echo "O|$p|0|"
  fi
done"#;
    let out = c
        .exec_ok(&["sh", "-c", script])
        .expect("listing container fs");
    out.lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.splitn(4, '|').collect();
            let [kind, path, mode, detail] = parts[..] else {
                panic!("bad listing line {l:?}");
            };
            (path != "/").then(|| {
                let kind = kind.chars().next().unwrap_or('O');
                let mode = u32::from_str_radix(mode, 8).unwrap_or_else(|_| panic!("mode in {l:?}"));
                (path.to_owned(), (kind, mode, detail.to_owned()))
            })
        })
        .collect()
}

/// The cgroup v1 freezer state of `pid`'s cgroup, as the kernel reports it.
pub fn freezer_state(pid: u32) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|l| l.split_once(":freezer:").map(|(_, p)| p.to_string()))
        .unwrap_or_else(|| panic!("no freezer cgroup for {pid}:\n{cgroups}"));
    std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{path}/freezer.state"))
        .unwrap()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_listing_and_overlay_options() {
        let listing = "TASK      PID     STATUS    \nweb-1     4242    RUNNING\n";
        assert_eq!(parse_task_pid(listing, "web-1"), Some(4242));
        assert_eq!(parse_task_pid(listing, "web"), None);
        let m = OverlayMount::parse_options(
            "index=off,workdir=/s/3/work,upperdir=/s/3/fs,lowerdir=/s/2/fs:/s/1/fs",
        )
        .unwrap();
        assert_eq!(
            m.lower_dirs,
            [PathBuf::from("/s/2/fs"), PathBuf::from("/s/1/fs")]
        );
        assert_eq!(m.upper_dir, PathBuf::from("/s/3/fs"));
    }
}
