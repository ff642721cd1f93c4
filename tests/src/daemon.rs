//! The layerguard daemon as a child process under test: spawn it, capture and parse its
//! JSON log lines, wait for specific lines, stop or crash it.
//!
//! Owns the process and its captured output. The contract it relies on is the daemon's log
//! format: one JSON object per line (tracing-subscriber, `flatten_event(true)`) with
//! top-level `timestamp`, `level`, `message`, `target` and the event's fields, and a line
//! with `message == "layerguard ready"` once the sensor is attached. It must not interpret
//! events beyond that; tests do, with predicates.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::util::{signal, wait_deadline};

/// Env var naming the daemon binary; overrides the lookup under `target/`.
pub const BIN_ENV: &str = "LAYERGUARD_BIN";
/// The line the daemon prints once its sensor is attached and it enforces.
pub const READY_MESSAGE: &str = "layerguard ready";
/// Graceful shutdown budget before [`DaemonProcess::stop`] escalates to SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Captured lines kept in memory; older ones are dropped (and counted) so a long bench
/// run with per-exec log lines cannot eat the machine. Cursors stay valid across drops.
pub const MAX_KEPT_LINES: usize = 200_000;
/// Lines shown by the automatic dump when a test panics while the daemon is alive.
const DUMP_ON_PANIC: usize = 60;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One captured output line.
#[derive(Debug, Clone)]
pub struct Line {
    /// Position in the whole output (both streams, arrival order), for cursors.
    pub seq: u64,
    pub stream: Stream,
    pub text: String,
    /// The line parsed as JSON, when it is a JSON object.
    pub json: Option<Value>,
    pub at: Instant,
}

#[derive(Default)]
struct Captured {
    lines: VecDeque<Line>,
    next_seq: u64,
    dropped: u64,
    open_streams: usize,
}

struct Shared {
    captured: Mutex<Captured>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running daemon. Dropping it SIGKILLs it (and dumps its output when the test panics).
pub struct DaemonProcess {
    child: Child,
    binary: PathBuf,
    shared: Arc<Shared>,
    readers: Vec<thread::JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

/// The daemon binary: `$LAYERGUARD_BIN`, else the newer of `target/{release,debug}/layerguard`
/// (also under `$CARGO_TARGET_DIR` when set). Panics with instructions when not built,
/// because a test must not silently run without the thing it tests.
pub fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{BIN_ENV}={} does not exist", p.display());
        return p;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut targets = vec![workspace.join("target")];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        targets.push(if t.is_absolute() {
            t
        } else {
            workspace.join(t)
        });
    }
    let candidates: Vec<PathBuf> = targets
        .iter()
        .flat_map(|t| ["release", "debug"].map(|p| t.join(p).join("layerguard")))
        .collect();
    let newest = candidates
        .iter()
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _): &(SystemTime, _)| *t);
    match newest {
        Some((_, p)) => p.clone(),
        None => panic!(
            "layerguard daemon binary not found (looked at {candidates:?}); build it first with \
             `cargo build -p layerguard` (or --release), or set {BIN_ENV}=/path/to/layerguard"
        ),
    }
}

/// The `layerguard run` command line of a test daemon: the given containerd, a state dir
/// of its own (its API socket goes there too, see [`DaemonProcess::spawn_with`]), JSON
/// logs, then `extra` (e.g. `["--set", "verify.log_execs=true"]`).
pub fn run_args(containerd_socket: &Path, state_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--containerd-socket".into(),
        containerd_socket.display().to_string(),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--log-format".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `<state-dir>/api.sock` for a `run` command line that sets a state dir and no API socket.
fn private_api_socket<S: AsRef<OsStr>>(args: &[S]) -> Option<PathBuf> {
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
    if args.first() != Some(&OsStr::new("run"))
        || args
            .iter()
            .any(|a| a.to_string_lossy().starts_with("api.socket="))
    {
        return None;
    }
    let state = args
        .windows(2)
        .find(|w| w[0] == "--state-dir")
        .map(|w| PathBuf::from(w[1]))?;
    Some(state.join("api.sock"))
}

impl DaemonProcess {
    /// Spawns [`daemon_binary`] with `args`, e.g.
    /// `["run", "--containerd-socket", SOCK, "--state-dir", DIR, "--log-format", "json"]`.
    pub fn spawn<S: AsRef<OsStr>>(args: &[S]) -> Result<Self> {
        Self::spawn_with(&daemon_binary(), args, &[])
    }

    /// Spawns `binary` with `args` and extra environment. A `run` without its own
    /// `api.socket` gets one in its state dir, so a test daemon never takes (or fails on)
    /// the host's `/run/layerguard/layerguard.sock`.
    pub fn spawn_with<S: AsRef<OsStr>>(
        binary: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args(args);
        if let Some(socket) = private_api_socket(args) {
            cmd.arg("--set")
                .arg(format!("api.socket={}", socket.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let shared = Arc::new(Shared {
            captured: Mutex::new(Captured {
                open_streams: 2,
                ..Captured::default()
            }),
            changed: Condvar::new(),
        });
        let readers = vec![
            spawn_reader(
                child.stdout.take().context("no stdout pipe")?,
                Stream::Stdout,
                shared.clone(),
            ),
            spawn_reader(
                child.stderr.take().context("no stderr pipe")?,
                Stream::Stderr,
                shared.clone(),
            ),
        ];
        Ok(DaemonProcess {
            child,
            binary: binary.to_path_buf(),
            shared,
            readers,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Sequence number the next captured line will get: pass it to
    /// [`wait_for_line_after`](Self::wait_for_line_after) to see only lines caused by what a
    /// test does next.
    pub fn cursor(&self) -> u64 {
        self.shared.lock().next_seq
    }

    /// First JSON line (from the start of the output) matching `pred`, waiting up to
    /// `timeout`. Returns early with `None` once the daemon's output has closed.
    pub fn wait_for_line(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Option<Value> {
        self.wait_for_line_after(0, pred, timeout)
    }

    /// First JSON line with `seq >= cursor` matching `pred`.
    pub fn wait_for_line_after(
        &self,
        cursor: u64,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        self.wait_for(cursor, timeout, |l| {
            l.json.as_ref().filter(|v| pred(v)).cloned()
        })
    }

    /// First raw line (JSON or not) with `seq >= cursor` whose text matches `pred`.
    pub fn wait_for_text_after(
        &self,
        cursor: u64,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<Line> {
        self.wait_for(cursor, timeout, |l| pred(&l.text).then(|| l.clone()))
    }

    fn wait_for<T>(
        &self,
        cursor: u64,
        timeout: Duration,
        find: impl Fn(&Line) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut checked = cursor;
        let mut guard = self.shared.lock();
        loop {
            for line in guard.lines.iter().filter(|l| l.seq >= checked) {
                if let Some(found) = find(line) {
                    return Some(found);
                }
            }
            checked = guard.next_seq;
            if guard.open_streams == 0 {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = self
                .shared
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the [`READY_MESSAGE`] line; on timeout or early exit the error carries the
    /// daemon's last output.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Value> {
        let ready = self.wait_for_line(|v| v["message"] == READY_MESSAGE, timeout);
        match ready {
            Some(v) => Ok(v),
            None => {
                let status = self.child.try_wait().ok().flatten();
                bail!(
                    "daemon not ready within {timeout:?} (exit status: {status:?}); last output:\n{}",
                    self.dump_string(40)
                )
            }
        }
    }

    /// Snapshot of all kept lines.
    pub fn lines(&self) -> Vec<Line> {
        self.shared.lock().lines.iter().cloned().collect()
    }

    /// Snapshot of the kept lines that are JSON objects.
    pub fn json_lines(&self) -> Vec<Value> {
        self.shared
            .lock()
            .lines
            .iter()
            .filter_map(|l| l.json.clone())
            .collect()
    }

    /// Number of lines dropped because more than [`MAX_KEPT_LINES`] arrived.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// The last `n` lines of both streams, labelled, as one string.
    pub fn dump_string(&self, n: usize) -> String {
        let guard = self.shared.lock();
        let skip = guard.lines.len().saturating_sub(n);
        let mut out = format!(
            "--- layerguard (pid {}) last {} of {} lines ---\n",
            self.child.id(),
            guard.lines.len() - skip,
            guard.next_seq
        );
        for l in guard.lines.iter().skip(skip) {
            let tag = match l.stream {
                Stream::Stdout => "out",
                Stream::Stderr => "err",
            };
            out.push_str(&format!("[{tag}] {}\n", l.text));
        }
        out
    }

    /// Prints [`dump_string`](Self::dump_string) to stderr, where the test harness shows it
    /// for failed tests.
    pub fn dump(&self, n: usize) {
        eprintln!("{}", self.dump_string(n));
    }

    /// Exit status if the daemon has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("polling daemon")?;
        }
        Ok(self.exit)
    }

    /// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL. Returns the exit status (a
    /// SIGKILL shows as a signal exit, so tests asserting a clean shutdown notice it).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit_status()? {
            return Ok(status);
        }
        signal(self.child.id() as i32, libc::SIGTERM)?;
        let status = match wait_deadline(&mut self.child, STOP_TIMEOUT)? {
            Some(s) => s,
            None => {
                eprintln!("layerguard-tests: daemon ignored SIGTERM for {STOP_TIMEOUT:?}; killing");
                self.dump(20);
                self.child.kill().context("SIGKILL daemon")?;
                self.child.wait().context("reaping daemon")?
            }
        };
        self.exit = Some(status);
        self.join_readers();
        Ok(status)
    }

    /// SIGKILL, to simulate a crash; returns the exit status.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit_status()? {
            return Ok(status);
        }
        self.child.kill().context("SIGKILL daemon")?;
        let status = self.child.wait().context("reaping daemon")?;
        self.exit = Some(status);
        self.join_readers();
        Ok(status)
    }

    /// Waits for the readers to hit EOF so every line the daemon wrote is captured. Only
    /// called once the daemon is dead; a grandchild holding the pipes would block this, so
    /// the wait is bounded.
    fn join_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut guard = self.shared.lock();
        while guard.open_streams > 0 && Instant::now() < deadline {
            guard = self
                .shared
                .changed
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let done = guard.open_streams == 0;
        drop(guard);
        if done {
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let alive = matches!(self.try_exit_status(), Ok(None));
        if thread::panicking() {
            self.dump(DUMP_ON_PANIC);
        }
        if alive {
            let _ = self.kill9();
        }
    }
}

fn spawn_reader(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    shared: Arc<Shared>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            let json = serde_json::from_str::<Value>(&text)
                .ok()
                .filter(Value::is_object);
            let mut guard = shared.lock();
            let seq = guard.next_seq;
            guard.next_seq += 1;
            guard.lines.push_back(Line {
                seq,
                stream,
                text,
                json,
                at: Instant::now(),
            });
            if guard.lines.len() > MAX_KEPT_LINES {
                guard.lines.pop_front();
                guard.dropped += 1;
            }
            drop(guard);
            shared.changed.notify_all();
        }
        shared.lock().open_streams -= 1;
        shared.changed.notify_all();
    })
}

/// `layerguard run` on a fresh `state_dir`, pointed at no containerd, with its API socket in
/// that directory and `extra` arguments: for the starts that must be refused before the
/// daemon gets going (it is killed after `timeout` if it is not).
pub fn run_refused_start(
    state_dir: &Path,
    extra: &[&str],
    timeout: Duration,
) -> Result<std::process::Output> {
    let socket = format!("api.socket={}", state_dir.join("api.sock").display());
    let mut args = vec![
        "run",
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--containerd-socket",
        "/nonexistent/containerd.sock",
        "--set",
        &socket,
    ];
    args.extend_from_slice(extra);
    crate::util::run_with_timeout(Command::new(daemon_binary()).args(args), timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for the daemon: prints JSON and plain lines on both streams, then exits.
    fn fake_daemon(script: &str) -> DaemonProcess {
        DaemonProcess::spawn_with(Path::new("/bin/sh"), &["-c", script], &[]).unwrap()
    }

    #[test]
    fn captures_json_lines_and_waits_for_ready() {
        let mut d = fake_daemon(
            r#"echo 'not json'; echo '{"message":"exec","pid":7}' >&2; sleep 0.2; echo '{"level":"INFO","message":"layerguard ready"}'; sleep 5"#,
        );
        d.wait_ready(Duration::from_secs(5)).unwrap();
        let exec = d
            .wait_for_line(|v| v["message"] == "exec", Duration::from_secs(1))
            .unwrap();
        assert_eq!(exec["pid"], 7);
        let cursor = d.cursor();
        assert!(d
            .wait_for_line_after(
                cursor,
                |v| v["message"] == "exec",
                Duration::from_millis(100)
            )
            .is_none());
        assert_eq!(d.lines().len(), 3);
        let status = d.stop().unwrap();
        assert!(!status.success(), "sh dies of SIGTERM");
    }

    #[test]
    fn waiting_ends_early_when_the_daemon_exits() {
        let mut d = fake_daemon("echo '{\"message\":\"boom\"}'; exit 3");
        let start = Instant::now();
        assert!(d.wait_ready(Duration::from_secs(10)).is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(d.stop().unwrap().code(), Some(3));
    }

    #[test]
    fn a_run_with_a_state_dir_gets_its_own_api_socket() {
        let run = ["run", "--state-dir", "/tmp/s", "--log-format", "json"];
        assert_eq!(
            private_api_socket(&run),
            Some(PathBuf::from("/tmp/s/api.sock"))
        );
        let own = [
            "run",
            "--state-dir",
            "/tmp/s",
            "--set",
            "api.socket=/x.sock",
        ];
        assert_eq!(private_api_socket(&own), None);
        assert_eq!(private_api_socket(&["run"]), None);
        assert_eq!(
            private_api_socket(&["image", "--state-dir", "/tmp/s"]),
            None
        );
    }
}
