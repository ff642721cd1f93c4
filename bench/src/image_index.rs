//! Image indexing: `layerguard image verify` of a large image through a real containerd,
//! against `gzip -dc BLOB | sha256sum` of the same layer blobs in the same run.
//!
//! Owns the large image (one layer per host directory, e.g. `/usr/lib`, made with the test
//! harness's [`ImageBuilder`] and imported with `ctr images import --no-unpack`), and the
//! three figures the issue asks for: cold throughput as a ratio to the pipe, warm re-index
//! time, and the indexer's peak RSS (`ru_maxrss` from `wait4` on the `verify` process).
//!
//! Peak RSS needs care: Linux folds the peak RSS of the memory a process *replaces* at exec
//! into its `ru_maxrss`, and a child spawned from this bench (which holds the whole image in
//! memory while building it) starts from a copy of, or a view onto, our memory. So
//! `verify` runs under a freshly exec'd copy of this binary ([`rusage_helper`]) that spawns
//! it and reads `wait4`: the figure then includes at most that helper's few MiB.
//!
//! "Cold" means an empty layer cache: the blobs themselves are in the page cache for both the
//! indexer and the pipe (they were just imported), so the comparison is CPU against CPU.

use crate::Args;
use anyhow::{bail, ensure, Context, Result};
use layerguard_tests::{BuiltLayer, ImageBuilder, Layer, MergedKind, PrivateContainerd};
use serde_json::Value;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "lg-bench-index";
/// The floor for a "large" image: at least this many bytes of (gzip) layer blobs.
const MIN_IMAGE_BYTES: u64 = 100_000_000;
const TARGET_RATIO: f64 = 1.0;
const TARGET_WARM_MS: f64 = 50.0;
const TARGET_RSS_MIB: f64 = 64.0;
/// Warm re-indexes are a few milliseconds each: enough of them for a stable median.
const WARM_RUNS: usize = 7;
const MIB: f64 = 1024.0 * 1024.0;

/// What went into one layer from a host directory.
#[derive(Debug, Default)]
struct TreeStats {
    files: u64,
    bytes: u64,
    skipped: u64,
}

/// Adds the tree under `dir` to `layer` at the same image path, in sorted order, and stops
/// once `budget` bytes of file content have been added, so the image size is chosen by the
/// caller and not by whatever the host has installed. Non-UTF-8 names, sockets, fifos and
/// devices are skipped: the builder takes string paths and regular content only. Hard links
/// become separate files (the builder only links within what it wrote itself).
fn add_host_tree(
    mut layer: Layer,
    dir: &Path,
    budget: &mut u64,
    stats: &mut TreeStats,
) -> Result<Layer> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for path in names {
        if *budget == 0 {
            break;
        }
        let (Some(image_path), Ok(meta)) = (path.to_str(), fs::symlink_metadata(&path)) else {
            stats.skipped += 1;
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        if kind.is_dir() {
            layer = layer.dir(image_path, mode);
            layer = add_host_tree(layer, &path, budget, stats)?;
        } else if kind.is_file() {
            layer = layer.file_from_host(image_path, &path, mode);
            stats.files += 1;
            stats.bytes += meta.len();
            *budget = budget.saturating_sub(meta.len());
        } else if kind.is_symlink() {
            match fs::read_link(&path)?.to_str() {
                Some(target) => layer = layer.symlink(image_path, target),
                None => stats.skipped += 1,
            }
        } else {
            stats.skipped += 1;
        }
    }
    Ok(layer)
}

/// One run of a child process: wall time and peak RSS from `wait4`, which std's `Child`
/// does not expose.
struct Measured {
    wall: Duration,
    max_rss_mib: f64,
    exit_code: i32,
}

/// `layerguard-bench --rusage-to FILE -- CMD ARGS...`: runs CMD (stdio inherited), waits
/// for it and writes `{"wall_s", "max_rss_kib", "exit_code"}` to FILE. Runs in a fresh
/// process so that CMD's `ru_maxrss` is its own and not the bench's (see the module doc).
pub fn rusage_helper(out: &Path, command: &[String]) -> Result<()> {
    let (program, rest) = command
        .split_first()
        .context("--rusage-to needs a command")?;
    let started = Instant::now();
    let child = Command::new(program)
        .args(rest)
        .spawn()
        .with_context(|| format!("start {program}"))?;
    let m = wait_measured(child, started)?;
    let record = serde_json::json!({
        "wall_s": m.wall.as_secs_f64(),
        "max_rss_kib": m.max_rss_mib * 1024.0,
        "exit_code": m.exit_code,
    });
    fs::write(out, record.to_string()).with_context(|| format!("writing {}", out.display()))
}

fn wait_measured(child: Child, started: Instant) -> Result<Measured> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain integers; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child, not reaped yet (`child` is never waited on by std); the
        // pointers are to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
    let wall = started.elapsed();
    // Reaped above: dropping a `Child` neither waits nor kills.
    drop(child);
    Ok(Measured {
        wall,
        // ru_maxrss is in KiB on Linux.
        max_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        exit_code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
    })
}

/// `layerguard image verify REF --json` (with `--cached` for the warm path): its summary and
/// how long and how much memory the whole process took.
fn verify(
    args: &Args,
    containerd: &PrivateContainerd,
    reference: &str,
    state: &Path,
    cached: bool,
) -> Result<(Measured, Value)> {
    let mut out = tempfile::tempfile()?;
    let rusage = tempfile::NamedTempFile::new()?;
    let status = Command::new(std::env::current_exe()?)
        .arg("--rusage-to")
        .arg(rusage.path())
        .arg("--")
        .arg(&args.layerguard)
        .args(["image", "verify", reference, "--namespace", NS, "--json"])
        .arg("--containerd-socket")
        .arg(containerd.socket_path())
        .arg("--state-dir")
        .arg(state)
        .args(cached.then_some("--cached"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(Stdio::inherit())
        .status()
        .context("start layerguard image verify under the rusage helper")?;
    ensure!(status.success(), "rusage helper failed: {status}");
    let record: Value = serde_json::from_slice(&fs::read(rusage.path())?)?;
    let measured = Measured {
        wall: Duration::from_secs_f64(record["wall_s"].as_f64().context("wall_s")?),
        max_rss_mib: record["max_rss_kib"].as_f64().context("max_rss_kib")? / 1024.0,
        exit_code: record["exit_code"].as_i64().context("exit_code")? as i32,
    };
    let mut text = String::new();
    out.seek(SeekFrom::Start(0))?;
    out.read_to_string(&mut text)?;
    let summary: Value = serde_json::from_str(&text)
        .with_context(|| format!("verify printed no JSON summary: {text}"))?;
    ensure!(
        measured.exit_code == 0 && summary["verdict"] == "verified",
        "verify exited {}: {summary}",
        measured.exit_code
    );
    let (total, verified, from_cache) = (
        &summary["layers_total"],
        &summary["layers_verified"],
        &summary["layers_from_cache"],
    );
    ensure!(verified == total, "not every layer verified: {summary}");
    // Cold must have read every blob (blob, diff_id and file digests); warm must have read
    // none, or the figure is not the one it claims to be.
    let expected_from_cache = if cached { total.clone() } else { 0.into() };
    ensure!(
        *from_cache == expected_from_cache,
        "layers from cache {from_cache}, expected {expected_from_cache}: {summary}"
    );
    Ok((measured, summary))
}

/// `gzip -dc BLOB | sha256sum` for each blob, one after another; checks each printed digest
/// against the layer's diff_id so the pipe provably did the same decompression and hash.
fn pipe(blobs: &[(PathBuf, &BuiltLayer)]) -> Result<Duration> {
    let started = Instant::now();
    for (path, layer) in blobs {
        let mut gzip = Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .context("start gzip")?;
        let sum = Command::new("sha256sum")
            .stdin(gzip.stdout.take().context("gzip stdout")?)
            .output()
            .context("run sha256sum")?;
        ensure!(gzip.wait()?.success(), "gzip -dc {} failed", path.display());
        ensure!(sum.status.success(), "sha256sum failed: {sum:?}");
        let hex = String::from_utf8_lossy(&sum.stdout);
        let digest = format!("sha256:{}", hex.split_whitespace().next().unwrap_or(""));
        ensure!(
            digest == layer.diff_id,
            "gzip -dc {} | sha256sum gave {digest}, the layer's diff_id is {}",
            path.display(),
            layer.diff_id
        );
    }
    Ok(started.elapsed())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "OK"
    } else {
        "OVER TARGET"
    }
}

pub fn run(args: &Args) -> Result<()> {
    println!(
        "\n== image indexing: `layerguard image verify` through containerd vs `gzip -dc | sha256sum`"
    );
    ensure!(args.index_rounds > 0, "--index-rounds must be at least 1");
    let containerd = PrivateContainerd::start()?;
    let built = Instant::now();
    let mut builder = ImageBuilder::new("layerguard.bench/index:1");
    for dir in &args.index_dirs {
        let mut budget = args.index_layer_mib * 1024 * 1024;
        let mut stats = TreeStats::default();
        let layer = add_host_tree(Layer::new(), dir, &mut budget, &mut stats)?;
        println!(
            "  layer from {}: {} files, {:.1} MiB of content ({} entries skipped)",
            dir.display(),
            stats.files,
            stats.bytes as f64 / MIB,
            stats.skipped
        );
        builder = builder.layer(layer);
    }
    // Content store only: `verify` reads blobs, not snapshots, and unpacking ~600 MB would
    // only add minutes and disk. The pipe below checks every diff_id independently.
    let image = builder.build()?;
    image.import_packed(&containerd, NS)?;
    let blob_bytes: u64 = image.layers.iter().map(|l| l.size).sum();
    let (files, content_bytes) =
        image
            .files
            .values()
            .fold((0u64, 0u64), |(n, b), f| match f.kind {
                MergedKind::File { size, .. } => (n + 1, b + size),
                _ => (n, b),
            });
    println!(
        "  image: {} layers, {:.1} MB of gzip blobs, {files} files, {:.1} MB of file content (built and imported in {:.1} s)",
        image.layers.len(),
        blob_bytes as f64 / 1e6,
        content_bytes as f64 / 1e6,
        built.elapsed().as_secs_f64()
    );
    if blob_bytes < MIN_IMAGE_BYTES {
        bail!(
            "the image has only {blob_bytes} bytes of layers, under the {MIN_IMAGE_BYTES} the \
             benchmark needs: raise --index-layer-mib or add --index-dirs"
        );
    }
    let blob_dir = containerd
        .root_dir()
        .join("io.containerd.content.v1.content/blobs/sha256");
    let blobs: Vec<(PathBuf, &BuiltLayer)> = image
        .layers
        .iter()
        .map(|l| {
            (
                blob_dir.join(l.blob_digest.trim_start_matches("sha256:")),
                l,
            )
        })
        .collect();
    for (path, _) in &blobs {
        ensure!(
            path.is_file(),
            "{} is not in the content store",
            path.display()
        );
    }

    let scratch = tempfile::tempdir()?;
    let (mut pipe_s, mut cold_s, mut cold_in_process_s, mut rss) = (vec![], vec![], vec![], vec![]);
    let mut warm_state = None;
    for round in 0..args.index_rounds {
        let state = scratch.path().join(format!("state-{round}"));
        // Alternate which side goes first, so drift on a shared machine hits both alike.
        let mut order = [true, false];
        if round % 2 == 1 {
            order.reverse();
        }
        let (mut p, mut c) = (0.0, None);
        for index_side in order {
            if index_side {
                c = Some(verify(args, &containerd, &image.reference, &state, false)?);
            } else {
                p = pipe(&blobs)?.as_secs_f64();
            }
        }
        let (m, summary) = c.expect("both sides ran");
        let cold = m.wall.as_secs_f64();
        println!(
            "  round {round}: pipe {p:.2} s, index cold {cold:.2} s ({:.2} s in process, {} files), ratio {:.2}, peak RSS {:.1} MiB",
            summary["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            summary["files_indexed"],
            p / cold,
            m.max_rss_mib
        );
        pipe_s.push(p);
        cold_s.push(cold);
        cold_in_process_s.push(summary["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0);
        rss.push(m.max_rss_mib);
        warm_state = Some(state);
    }

    let state = warm_state.expect("at least one round");
    let (mut warm_ms, mut warm_in_process_ms) = (vec![], vec![]);
    for _ in 0..WARM_RUNS {
        let (m, summary) = verify(args, &containerd, &image.reference, &state, true)?;
        warm_ms.push(m.wall.as_secs_f64() * 1000.0);
        warm_in_process_ms.push(summary["elapsed_ms"].as_f64().unwrap_or(f64::NAN));
        rss.push(m.max_rss_mib);
    }

    let (pipe_m, cold_m) = (median(&pipe_s), median(&cold_s));
    let ratio = pipe_m / cold_m;
    println!(
        "image indexing cold (blob + diff_id + every file digest): {cold_m:.2} s ({:.0} MB/s of gzip blobs, {:.2} s in process) \
         vs gzip -dc | sha256sum {pipe_m:.2} s, median of {} rounds: {ratio:.2}x (target >= {TARGET_RATIO}x) {}",
        blob_bytes as f64 / 1e6 / cold_m,
        median(&cold_in_process_s),
        args.index_rounds,
        verdict(ratio >= TARGET_RATIO)
    );
    // The daemon re-indexes in process, so the target applies to the summary's own time
    // (connect to containerd, resolve, read the cache, merge); the process total adds exec,
    // dynamic loading and runtime start-up.
    let warm = median(&warm_in_process_ms);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "warm re-index (--cached, layer cache): {warm:.0} ms in process (min {:.0}), {:.0} ms whole process (min {:.0}), median of {WARM_RUNS} (target < {TARGET_WARM_MS} ms in process) {}",
        min(&warm_in_process_ms),
        median(&warm_ms),
        min(&warm_ms),
        verdict(warm < TARGET_WARM_MS)
    );
    let peak = rss.iter().copied().fold(0.0, f64::max);
    println!(
        "indexer peak RSS: {peak:.1} MiB over all runs (target < {TARGET_RSS_MIB} MiB) {}",
        verdict(peak < TARGET_RSS_MIB)
    );
    Ok(())
}
