//! Exec overhead: what the sensor and the daemon add to every program start in a container.

use crate::Args;
use anyhow::{ensure, Context, Result};
use layerguard_tests::{
    build_static_c, busybox_image, unique_id, Container, Layer, PrivateContainerd,
};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const NS: &str = "lg-bench";
const EXEC_LOOP_C: &str = include_str!("../c/exec_loop.c");
const TINY_C: &str = include_str!("../c/tiny.c");
const TARGET_RATIO: f64 = 1.03;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon started for one "on" round, its output going to a file as it would go to
/// journald; the bench process itself does not parse it while measuring.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(
        bin: &std::path::Path,
        socket: &std::path::Path,
        dir: &std::path::Path,
        extra: &[String],
    ) -> Result<Self> {
        let log = dir.join(format!("daemon-{}.log", unique_id("r")));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(["run", "--log-format", "json", "--containerd-socket"])
            .arg(socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start layerguard")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("\"message\":\"layerguard ready\"") {
                break;
            }
            ensure!(Instant::now() < deadline, "daemon not ready:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, log })
    }

    /// CPU time (user + system) the daemon has used so far.
    fn cpu_time(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised comm; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_millis((f[0] + f[1]) * 1000 / hz))
    }

    /// SIGTERM, wait, and count the exec records of `filename` it wrote (they are only
    /// written with `verify.log_execs`; `None` then).
    fn stop(mut self, filename: &str) -> Result<Option<usize>> {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.log)?;
        let needle = format!("\"filename\":\"{filename}\"");
        let n = text
            .lines()
            .filter(|l| l.contains("\"message\":\"exec\"") && l.contains(&needle))
            .count();
        Ok((n > 0).then_some(n))
    }
}

fn exec_loop(c: &Container, n: u32) -> Result<f64> {
    let out = c.exec_timeout(
        &["/bench/exec_loop", &n.to_string(), "/bench/tiny"],
        Duration::from_secs(600),
    )?;
    ensure!(out.status.success(), "exec_loop failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<f64>()
        .with_context(|| format!("exec_loop printed {text:?}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(args: &Args) -> Result<()> {
    println!("\n== exec overhead: fork+exec+wait of a static binary in a container");
    let containerd = PrivateContainerd::start()?;
    let exec_loop_bin = build_static_c("exec_loop", EXEC_LOOP_C)?;
    let tiny = build_static_c("tiny", TINY_C)?;
    let image = busybox_image("layerguard.bench/exec:1")?
        .layer(
            Layer::new()
                .file_from_host("/bench/exec_loop", exec_loop_bin, 0o755)
                .file_from_host("/bench/tiny", tiny, 0o755),
        )
        .import(&containerd, NS)?;
    let c = Container::run_detached(
        &containerd,
        NS,
        &image.reference,
        &unique_id("bench"),
        &["sleep", "3600"],
        &[],
    )?;
    let dir = tempfile::tempdir()?;
    exec_loop(&c, 200)?; // warm caches before anything is measured

    let n = args.execs_per_round;
    let (mut off, mut on, mut daemon_cpu_us) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let on_first = round % 2 == 1;
        for side in if on_first {
            [true, false]
        } else {
            [false, true]
        } {
            if side {
                let d = Daemon::start(
                    &args.layerguard,
                    &containerd.socket_path(),
                    dir.path(),
                    &args.daemon_args,
                )?;
                let cpu_before = d.cpu_time()?;
                let us = exec_loop(&c, n)?;
                let cpu = d.cpu_time()? - cpu_before;
                daemon_cpu_us.push(cpu.as_secs_f64() * 1e6 / n as f64);
                let seen = d.stop("/bench/tiny")?;
                if let Some(seen) = seen {
                    ensure!(
                        seen == n as usize,
                        "daemon on: {seen} exec records for {n} execs (events lost?)"
                    );
                }
                on.push(us);
                println!("  round {round}: on  {us:8.1} us/exec ({seen:?} exec records)");
            } else {
                let us = exec_loop(&c, n)?;
                off.push(us);
                println!("  round {round}: off {us:8.1} us/exec");
            }
        }
    }
    let (off_m, on_m) = (median(&mut off), median(&mut on));
    let ratio = on_m / off_m;
    println!(
        "exec overhead: off {off_m:.1} us/exec, on {on_m:.1} us/exec (median of {} rounds x {n} execs), \
         ratio on/off = {ratio:.3} (target <= {TARGET_RATIO}) {}",
        args.rounds,
        if ratio <= TARGET_RATIO { "OK" } else { "OVER TARGET" }
    );
    println!(
        "daemon CPU while on: {:.1} us per exec (median; user + system, all threads)",
        median(&mut daemon_cpu_us)
    );
    Ok(())
}
