//! `make bench`: layerguard's costs, each printed as a ratio against a baseline measured in
//! the same invocation on the same machine (absolute numbers alone mean little on a shared
//! 2-core VM).
//!
//! Benchmarks:
//! - `exec`: fork+exec+wait of a tiny static binary inside a container, daemon off and on,
//!   interleaved in rounds so that drift hits both sides alike.
//! - `latency`: exec-to-alert time of a dropped binary, first seen and cached.

mod alert_latency;
mod exec_overhead;

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "layerguard benchmarks (root, real containerd, real kernel)")]
pub struct Args {
    /// The daemon binary to measure (a release build).
    #[arg(long, default_value = "target/release/layerguard")]
    layerguard: PathBuf,
    /// Which benchmarks to run (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// fork+exec+wait per round and side.
    #[arg(long, default_value_t = 2500)]
    execs_per_round: u32,
    /// Rounds per side; the order of off/on alternates between rounds.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Extra arguments for `layerguard run` (repeatable), e.g. `--daemon-arg=--set
    /// --daemon-arg=verify.log_execs=true`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    layerguard_tests::require_root();
    anyhow::ensure!(
        args.layerguard.is_file(),
        "{} not found: build it with `make release`",
        args.layerguard.display()
    );
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    println!(
        "machine: {} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    if wants("exec") {
        exec_overhead::run(&args)?;
    }
    if wants("latency") {
        alert_latency::run(&args)?;
    }
    Ok(())
}
