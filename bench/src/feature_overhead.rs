//! What one analyzer adds to an exec, as CPU per exec: the same exec loop in a labelled
//! container with the daemon running `<analyzer>.enabled = false` and with it on (the
//! default), in alternating rounds. `baseline`: learning and checking every exec against
//! the workload's baseline; `trust`: the trust stage seeing every container exec (its
//! image was judged at the first one). Wall time does not resolve 1 % on these machines,
//! and neither does the workload's own CPU (rounds spread +-10 %); but neither analyzer adds
//! work in the workload's context (an exec loop writes no file: no kernel record is added),
//! so the figure is the daemon's CPU per exec on each side (every thread's schedstat), over
//! the exec's whole cost: (workload + daemon on) / (workload + daemon off), with the
//! workload's CPU the median of both sides.

use crate::alert_latency::load_average;
use crate::exec_overhead::{exec_loop, exec_loop_container, median, median_ci, BpfStats, Daemon};
use crate::Args;
use anyhow::{ensure, Result};
use layerguard_tests::PrivateContainerd;
use std::time::Duration;

/// An analyzer measured on against off.
pub struct Feature {
    /// `baseline`, `trust`: the config section whose `enabled` is switched.
    pub name: &'static str,
    pub target: f64,
}

pub const BASELINE: Feature = Feature {
    name: "baseline",
    target: 1.01,
};
pub const TRUST: Feature = Feature {
    name: "trust",
    target: 1.005,
};

pub fn run(args: &Args, feature: &Feature) -> Result<()> {
    let name = feature.name;
    let target = feature.target;
    println!("\n== {name} overhead: the exec loop with {name}.enabled = false and true");
    println!("load average (1/5/15 min) at the start: {}", load_average());
    let _stats = BpfStats::enable()?;
    let containerd = PrivateContainerd::start()?;
    let c = exec_loop_container(
        &containerd,
        &format!("lg-bench-{name}"),
        &format!("layerguard.bench/{name}:1"),
        &[("io.layerguard.workload", "bench")],
    )?;
    let dir = tempfile::tempdir()?;
    exec_loop(&c, 200)?;
    let n = args.execs_per_round;
    let rounds = (args.rounds / 2).max(4);
    let mut ratios = Vec::new();
    let (mut off_us, mut on_us, mut workload_us) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let sides = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut daemon = [0.0f64; 2];
        for on in sides {
            let mut daemon_args = args.daemon_args.clone();
            daemon_args.extend(["--set".to_string(), format!("{name}.enabled={on}")]);
            let d = Daemon::start(
                &args.layerguard,
                &containerd.socket_path(),
                dir.path(),
                &daemon_args,
            )?;
            exec_loop(&c, 200)?; // attribution, the image index, the analyzer's first look
            std::thread::sleep(Duration::from_millis(200));
            let before = d.sched()?;
            let block = exec_loop(&c, n)?;
            let daemon_us = (d.sched()? - before).cpu_ns as f64 / 1e3 / f64::from(n);
            d.stop("")?;
            daemon[usize::from(on)] = daemon_us;
            workload_us.push(block.cpu_us);
        }
        ensure!(daemon[0] > 0.0, "no daemon CPU measured with {name} off");
        off_us.push(daemon[0]);
        on_us.push(daemon[1]);
        println!(
            "  round {round}: daemon per exec, {name} off {:.2} us, on {:.2} us",
            daemon[0], daemon[1]
        );
    }
    let w = median(&workload_us);
    for (off, on) in off_us.iter().zip(&on_us) {
        ratios.push((w + on) / (w + off));
    }
    let r = median(&ratios);
    let interval = median_ci(&ratios, 0.95)
        .map(|(lo, hi, _)| format!("[{lo:.4}, {hi:.4}]"))
        .unwrap_or_else(|| "(no interval below 6 rounds)".into());
    println!(
        "{name} on/off, CPU per exec (workload {w:.1} us + daemon): {r:.4} {interval}; daemon per exec off {:.2} us, on {:.2} us (target <= {target}) {}",
        median(&off_us),
        median(&on_us),
        if r <= target { "OK" } else { "OVER TARGET" }
    );
    println!("load average (1/5/15 min) at the end: {}", load_average());
    Ok(())
}
