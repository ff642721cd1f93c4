//! `layerguard-demo`: a first look at layerguard in one command (`sudo make demo`).
//!
//! Starts a private containerd, builds a small image here (the host's busybox plus one
//! program) and imports it without a registry, starts the daemon on a throwaway state dir,
//! follows its alerts with the real `layerguard watch`, runs a container, drops a program
//! into it and runs it, changes a program of the image inside it and runs that, prints
//! what `watch` printed as it comes, and removes everything again: on success, on a
//! failure, and on Ctrl-C (SIGINT, SIGTERM, SIGHUP).
//!
//! Owns the narration and the order of the steps; the host in miniature is the test
//! harness's (`layerguard_tests`), whose guards remove what they started when dropped. It
//! must not touch the host's own containerd, `/var/lib/layerguard` or
//! `/run/layerguard/layerguard.sock`.
//!
//! Usage: layerguard-demo [--layerguard PATH]   (default: $LAYERGUARD_BIN, else
//! target/{debug,release}/layerguard). Exit 0 when every expected alert was shown, 1 on a
//! failure, 130 when interrupted.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use layerguard_tests::oci::host_busybox;
use layerguard_tests::util::describe_output;
use layerguard_tests::{
    busybox_image, daemon_binary, mounts_under, run_args, unique_id, Container, DaemonProcess,
    Layer, PrivateContainerd,
};

const NS: &str = "layerguard-demo";
/// The image's own copy of busybox, the program the demo tampers with.
const TOOL: &str = "/opt/demo/busybox";
/// How long the demo waits for the daemon to say something it must say.
const WAIT: Duration = Duration::from_secs(30);
/// The alert kinds the demo must show: a dropped program (created, then run) and an image
/// program changed in the container (written, then run).
const DROPPED: [&str; 2] = ["file_executable_created", "exec_not_in_image"];
const TAMPERED: [&str; 2] = ["file_image_modified", "exec_modified"];

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and friends only set a flag: the demo stops at its next step and its guards
/// remove what it started (the default action would exit without them).
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!(Interrupted);
    }
    Ok(())
}

#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn say(text: &str) {
    println!("{text}");
    let _ = std::io::stdout().flush();
}

/// `layerguard watch` as a child; what it prints is shown as it comes and kept. Killed
/// when dropped.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(layerguard: &Path, socket: &Path) -> Result<Self> {
        let mut child = Command::new(layerguard)
            // From the journal's start: nothing raised before it connected is missed.
            .args(["watch", "--from-start", "--socket"])
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} watch", layerguard.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let kept = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                say(&format!("  watch | {line}"));
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        // Its notices (reconnects, gaps) go to stderr: shown, not kept.
        let stderr = child.stderr.take().context("no stderr pipe")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                say(&format!("  watch ! {line}"));
            }
        });
        Ok(Self {
            child,
            lines,
            reader: Some(reader),
        })
    }

    /// The alert kinds printed so far (the fourth column of a `watch` line).
    fn kinds(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .collect()
    }

    /// Waits until every kind in `want` was printed.
    fn wait_for(&self, want: &[&str], daemon: &DaemonProcess) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            check_interrupt()?;
            let seen = self.kinds();
            let missing: Vec<&&str> = want
                .iter()
                .filter(|k| !seen.iter().any(|s| s == **k))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "layerguard watch did not print {missing:?} within {WAIT:?}; the daemon's last lines:\n{}",
                    daemon.dump_string(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Runs `args` in `c`; fails with its output unless it exits 0.
fn exec(c: &Container, args: &[&str]) -> Result<()> {
    let out = c.exec(args)?;
    if !out.status.success() {
        bail!("{args:?} in the container: {}", describe_output(&out));
    }
    Ok(())
}

/// What the demo started on the host, for the last check and the integration test.
struct Footprint {
    containerd_dir: PathBuf,
    instance: String,
    state_dir: PathBuf,
}

fn demo(layerguard: &Path, footprint: &mut Option<Footprint>) -> Result<Vec<String>> {
    const STEPS: usize = 7;
    let step = |n: usize, text: &str| say(&format!("\n[{n}/{STEPS}] {text}"));

    step(
        1,
        "A private containerd, only for this demo (its own root, sockets and cgroups; stopped and removed at the end).",
    );
    let containerd = PrivateContainerd::start().context("starting a private containerd")?;
    say(&format!(
        "      containerd dir: {}",
        containerd.dir().display()
    ));
    let state = tempfile::Builder::new()
        .prefix("layerguard-demo-state-")
        .tempdir()
        .context("creating the state dir")?;
    *footprint = Some(Footprint {
        containerd_dir: containerd.dir().to_path_buf(),
        instance: containerd.instance().to_string(),
        state_dir: state.path().to_path_buf(),
    });
    check_interrupt()?;

    let reference = "layerguard.demo/hello:1".to_string();
    step(
        2,
        &format!("An image built right here: this host's static busybox, plus a copy of it at {TOOL}; imported with ctr, no registry: {reference}"),
    );
    let image = busybox_image(&reference)?
        .layer(Layer::new().file_from_host(TOOL, host_busybox()?, 0o755))
        .import(&containerd, NS)
        .context("building and importing the image")?;
    say(&format!(
        "      {} layers, manifest {}",
        image.layers.len(),
        image.manifest_digest
    ));
    check_interrupt()?;

    step(
        3,
        "layerguard: its eBPF sensor sees every program a container runs and checks it against what the image's layers recorded.",
    );
    let started = Instant::now();
    let args = run_args(&containerd.socket_path(), state.path(), &[]);
    let mut daemon = DaemonProcess::spawn_with(layerguard, &args, &[])?;
    daemon.wait_ready(WAIT)?;
    let socket = state.path().join("api.sock");
    say(&format!(
        "      ready in {:.1} s (state dir {}, API socket {})",
        started.elapsed().as_secs_f64(),
        state.path().display(),
        socket.display()
    ));
    let watch = Watch::start(layerguard, &socket)?;
    say(&format!(
        "      `layerguard watch --from-start --socket {}` follows its alerts; its lines are shown as they come, after \"watch |\"\n      (seq, time, severity, kind, namespace/container, pid, program - what happened)",
        socket.display()
    ));
    check_interrupt()?;

    step(
        4,
        "A container of that image runs `sleep 600`, and `echo hello` from the image runs in it: exactly what the image shipped, so no alert.",
    );
    let container = Container::run_detached(
        &containerd,
        NS,
        &image.reference,
        &unique_id("demo"),
        &["sleep", "600"],
        &[],
    )?;
    exec(&container, &["/bin/busybox", "echo", "hello"])?;
    check_interrupt()?;

    step(
        5,
        "Someone drops a program into the container (cp /bin/busybox /tmp/echo) and runs it: it is not in the image.",
    );
    exec(&container, &["cp", "/bin/busybox", "/tmp/echo"])?;
    exec(&container, &["/tmp/echo", "I was not in the image"])?;
    watch.wait_for(&DROPPED, &daemon)?;

    step(
        6,
        &format!("Someone changes a program of the image inside the container (appends to {TOOL}) and runs it: its content is not the image's."),
    );
    exec(
        &container,
        &["/bin/sh", "-c", &format!("echo tampered >> {TOOL}")],
    )?;
    exec(&container, &[TOOL, "echo", "I was changed"])?;
    watch.wait_for(&TAMPERED, &daemon)?;

    let kinds = watch.kinds();
    step(
        7,
        "Cleaning up: the watcher, layerguard, the container, containerd and the state dir.",
    );
    drop(watch);
    daemon.stop()?;
    drop(daemon);
    drop(container);
    drop(containerd);
    drop(state);
    Ok(kinds)
}

/// Whatever of `f` is still on the host.
fn leftovers(f: &Footprint) -> Vec<String> {
    let mut left = Vec::new();
    if f.containerd_dir.exists() {
        left.push(format!("{}", f.containerd_dir.display()));
    }
    if f.state_dir.exists() {
        left.push(format!("{}", f.state_dir.display()));
    }
    if let Ok(m) = mounts_under(&f.containerd_dir) {
        left.extend(m.iter().map(|p| format!("mount {}", p.display())));
    }
    let dir = f.containerd_dir.to_string_lossy().into_owned();
    let pids = layerguard_tests::util::pids_matching(|args| args.iter().any(|a| a.contains(&dir)));
    left.extend(pids.iter().map(|p| format!("process {p}")));
    if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in controllers.flatten() {
            let p = c
                .path()
                .join(layerguard_tests::containerd::CGROUP_ROOT)
                .join(&f.instance);
            if p.exists() {
                left.push(format!("cgroup {}", p.display()));
            }
        }
    }
    left
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut layerguard: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--layerguard" => layerguard = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("usage: layerguard-demo [--layerguard PATH]   (run as root)");
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("layerguard-demo: unknown argument {other:?} (usage: layerguard-demo [--layerguard PATH])");
                return std::process::ExitCode::from(2);
            }
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("layerguard-demo: run it as root (sudo make demo): it starts containerd, mounts overlayfs and loads eBPF");
        return std::process::ExitCode::FAILURE;
    }
    let layerguard = match layerguard {
        Some(p) if p.is_file() => p,
        Some(p) => {
            eprintln!(
                "layerguard-demo: {} does not exist: build it first (cargo build -p layerguard)",
                p.display()
            );
            return std::process::ExitCode::FAILURE;
        }
        None => daemon_binary(),
    };
    catch_signals();
    let started = Instant::now();
    say("layerguard demo: the main job on this host in under a minute, with a containerd, an image and a state dir of its own (nothing of yours is touched).");
    let mut footprint = None;
    // Every guard of the demo has been dropped when this returns, whatever happened.
    let result = demo(&layerguard, &mut footprint);
    let left = footprint.as_ref().map(leftovers).unwrap_or_default();
    let clean = if left.is_empty() {
        "nothing is left on this host".to_string()
    } else {
        format!("left on this host: {}", left.join(", "))
    };
    match result {
        Ok(kinds) => {
            let mut shown: Vec<&str> = Vec::new();
            for k in &kinds {
                if !shown.contains(&k.as_str()) {
                    shown.push(k);
                }
            }
            say(&format!(
                "\ndone in {:.0} s: layerguard raised {} ({}); {clean}.",
                started.elapsed().as_secs_f64(),
                if kinds.len() == 1 {
                    "1 alert".to_string()
                } else {
                    format!("{} alerts", kinds.len())
                },
                shown.join(", ")
            ));
            say("next: `sudo make run` runs the daemon on this host's containerd, `layerguard watch` follows it, `layerguard check` says what this node offers it.");
            if left.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        // A Ctrl-C on the terminal reaches containerd and the daemon too, so the step
        // running then may fail first: still an interruption.
        Err(e)
            if e.downcast_ref::<Interrupted>().is_some() || INTERRUPTED.load(Ordering::SeqCst) =>
        {
            say(&format!("\ninterrupted; cleaned up: {clean}."));
            std::process::ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("\nlayerguard-demo: {e:#}");
            say(&format!("cleaned up: {clean}."));
            std::process::ExitCode::FAILURE
        }
    }
}
