//! `make bench`: layerguard's costs, each printed as a ratio against a baseline measured in
//! the same invocation on the same machine (absolute numbers alone mean little on a shared
//! 2-core VM).
//!
//! Benchmarks:
//! - `exec`: fork+exec+wait of a tiny static binary inside a container, daemon off and on,
//!   interleaved in rounds so that drift hits both sides alike.
//! - `latency`: exec-to-alert time of a dropped binary, first seen and cached.
//! - `files`: file workloads (small files, a tar, opens, a dynamic exec loop, syscalls
//!   in a container and on the host) off and on; write-to-alert latency.
//! - `baseline`: CPU per exec with the behaviour baseline on against off (both daemons).
//! - `trust`: the same for the image signature analyzer.
//! - `index`: `layerguard image verify` of a large image (layers made from host
//!   directories) against `gzip -dc | sha256sum` of its blobs; warm re-index; peak RSS.

mod alert_latency;
mod exec_overhead;
mod feature_overhead;
mod file_overhead;
mod image_index;

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
    #[arg(long, default_value_t = 1000)]
    execs_per_round: u32,
    /// Rounds per side; the order of off/on alternates between rounds. Many short rounds
    /// resolve a small ratio better than a few long ones (see exec_overhead.rs); 32 take
    /// about a minute.
    #[arg(long, default_value_t = 32)]
    rounds: u32,
    /// Extra arguments for `layerguard run` in the exec and latency benches (repeatable),
    /// e.g. `--daemon-arg=--set --daemon-arg=sensor.scheduling=batch`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// `files`: rounds of every file workload per side (6 or more give an interval; 0: only
    /// the write-to-alert latency).
    #[arg(long, default_value_t = 6)]
    file_rounds: u32,
    /// `index`: host directories made into the large image, one layer each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/usr/bin,/usr/lib,/usr/share"
    )]
    index_dirs: Vec<PathBuf>,
    /// `index`: MiB of file content taken from each of those directories (a sorted walk,
    /// cut off there), so the image size does not depend on what the host has installed.
    #[arg(long, default_value_t = 160)]
    index_layer_mib: u64,
    /// `index`: cold index and pipe runs per side; the order alternates between rounds.
    #[arg(long, default_value_t = 5)]
    index_rounds: u32,
    /// Internal (`index`): run the command after `--`, wait for it and write its wall time,
    /// peak RSS and exit code as JSON to this file. See `image_index::rusage_helper`.
    #[arg(long, hide = true, requires = "command")]
    rusage_to: Option<PathBuf>,
    #[arg(last = true, hide = true)]
    command: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(out) = &args.rusage_to {
        return image_index::rusage_helper(out, &args.command);
    }
    layerguard_tests::require_root();
    anyhow::ensure!(
        args.layerguard.is_file(),
        "{} not found: build it with `make release`",
        args.layerguard.display()
    );
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    println!(
        "machine: {} cores, kernel {}, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        load_average()
    );
    if wants("exec") {
        exec_overhead::run(&args)?;
    }
    if wants("latency") {
        alert_latency::run(&args)?;
    }
    if wants("files") {
        file_overhead::run(&args)?;
    }
    if wants("baseline") {
        feature_overhead::run(&args, &feature_overhead::BASELINE)?;
    }
    if wants("trust") {
        feature_overhead::run(&args, &feature_overhead::TRUST)?;
    }
    if wants("index") {
        image_index::run(&args)?;
    }
    println!("\nload average at the end: {}", load_average());
    Ok(())
}

/// 1, 5 and 15 minute load averages: whether other work shared the machine while the
/// figures were taken.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
