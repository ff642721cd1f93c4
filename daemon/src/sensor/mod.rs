//! The kernel sensor: loads the C eBPF programs, attaches them, and turns ring buffer
//! records into [`SensorEvent`]s on a bounded channel.
//!
//! Owns the loaded programs (dropping [`Sensor`] detaches them), the ring buffer consumer
//! and the kernel's loss counters. It never blocks the kernel: when the channel is full
//! the consumer waits, the ring buffer fills, and the kernel counts what it drops; those
//! counts come out as [`SensorEvent::Lost`] so that no loss is silent.

mod btf_layout;
pub mod event;
pub mod feedback;
pub mod hooks;
pub mod overlay;
pub mod pace;
pub mod preflight;
pub mod wire;

pub use event::{
    EventKind, ExecEvent, FileEvent, FileIdentity, FileOp, LossCounts, Observation, ProcessEvent,
    SensorEvent,
};
pub use feedback::{FileFeedback, WatchedDirs};
pub use pace::Pace;
pub use preflight::KernelFeatures;

use crate::clock;
use crate::config::SensorConfig;
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, FEntry, Lsm};
use aya::{Btf, Ebpf, EbpfLoader};
use feedback::SharedStats;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// The sensor object clang built from `ebpf/sensor.bpf.c` (see build.rs).
pub static SENSOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor.bpf.o"));

/// Program name in the object, and the BTF tracepoint it attaches to: process life.
const PROCESS_PROGRAMS: [(&str, &str); 3] = [
    ("lg_exec", "sched_process_exec"),
    ("lg_fork", "sched_process_fork"),
    ("lg_exit", "sched_process_exit"),
];

/// Which file programs to attach (the table is [`hooks::FILE_HOOKS`]).
#[derive(Clone, Debug, Default)]
pub struct FilePrograms {
    /// The directory names whose writes the kernel sends (see `lg_watch_dirs`).
    pub watched: WatchedDirs,
    /// Attach the syscall hook too, unless a kernel hook family serves its roles.
    pub syscall_hooks: bool,
    /// Which kernel hook families to try (`files.kernel_hooks`).
    pub kernel_hooks: crate::config::KernelHooks,
    /// Send a data write's directory once a minute (`lg_dir_seen`), for the baseline.
    pub learn_write_dirs: bool,
}

/// Records drained before the consumer yields to the runtime, so a flood cannot starve
/// the other tasks on its worker thread.
const DRAIN_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error("cannot read the kernel's BTF from {path}: {source}")]
    Btf {
        path: &'static str,
        #[source]
        source: aya::BtfError,
    },
    #[error("the kernel refused the sensor object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error(
        "the kernel refused program {program} ({point}): {}",
        program_error(source)
    )]
    Program {
        program: &'static str,
        point: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(transparent)]
    KernelHooks(#[from] hooks::KernelHooksError),
    #[error("the sensor object has no {what} named {name} (build mismatch)")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("sensor map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot read the host mount namespace from {path}: {source}")]
    HostNamespace {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
}

/// A loaded and attached sensor, not yet consuming.
pub struct Sensor {
    ebpf: Ebpf,
    features: KernelFeatures,
    host_mnt_ns: u32,
    config: SensorConfig,
    /// The attached file programs (the process programs are always attached).
    file_hooks: Vec<&'static hooks::Hook>,
    kernel_choice: hooks::KernelChoice,
    stats: SharedStats,
}

/// A program error in one line: the kernel's errno for a refused load (the verifier log
/// is long; it is logged at debug level where it is produced).
fn program_error(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, .. } => format!("load: {io_error}"),
        e => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Why a program did not attach, in one line with its attach point
/// (`fentry/security_mmap_file: load: Operation not permitted`).
fn refusal(e: SensorError) -> String {
    match e {
        SensorError::Program { point, source, .. } => {
            format!("{point}: {}", program_error(&source))
        }
        e => e.to_string(),
    }
}

/// Loads and attaches one program of the object to its attach point.
fn attach_program(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &'static str,
    family: hooks::Family,
    target: &'static str,
) -> Result<(), SensorError> {
    let point = || format!("{}/{target}", family.section());
    let error = |source| SensorError::Program {
        program,
        point: point(),
        source,
    };
    let prog = ebpf.program_mut(program).ok_or(SensorError::Missing {
        what: "program",
        name: program,
    })?;
    let result = match family {
        hooks::Family::Tracepoint | hooks::Family::Syscall => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(error)?;
            p.load(target, btf).and_then(|()| p.attach().map(drop))
        }
        hooks::Family::Fentry => {
            let p: &mut FEntry = prog.try_into().map_err(error)?;
            p.load(target, btf).and_then(|()| p.attach().map(drop))
        }
        hooks::Family::Lsm => {
            let p: &mut Lsm = prog.try_into().map_err(error)?;
            p.load(target, btf).and_then(|()| p.attach().map(drop))
        }
    };
    if let Err(aya::programs::ProgramError::LoadError { verifier_log, .. }) = &result {
        debug!(program, log = %verifier_log, "verifier log of a refused program");
    }
    result.map_err(error)
}

/// Unloads a program (and so detaches it), if it was loaded.
fn unload_program(ebpf: &mut Ebpf, program: &str) {
    if let Some(prog) = ebpf.program_mut(program) {
        let _ = match prog {
            aya::programs::Program::BtfTracePoint(p) => p.unload(),
            aya::programs::Program::FEntry(p) => p.unload(),
            aya::programs::Program::Lsm(p) => p.unload(),
            _ => Ok(()),
        };
    }
}

/// Attaches every program of a kernel hook family, or none of them: the first refusal
/// unloads those already attached and says why.
fn attach_family(ebpf: &mut Ebpf, btf: &Btf, family: hooks::Family) -> Result<(), String> {
    let mut done = Vec::new();
    for hook in hooks::family(family) {
        if let Err(e) = attach_program(ebpf, btf, hook.program, hook.family, hook.target) {
            for program in done {
                unload_program(ebpf, program);
            }
            unload_program(ebpf, hook.program);
            return Err(refusal(e));
        }
        done.push(hook.program);
    }
    Ok(())
}

/// Whether this kernel attaches fentry programs, when the sensor did not try them for its
/// hooks: one is attached, then unloaded.
fn probe_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let hook = hooks::family(hooks::Family::Fentry)
        .next()
        .ok_or("no fentry program in the sensor object")?;
    let result = attach_program(ebpf, btf, hook.program, hook.family, hook.target);
    unload_program(ebpf, hook.program);
    result.map_err(refusal)
}

/// The mount namespace of the host: PID 1's when readable, else our own (the daemon runs
/// in the host's mount namespace under systemd; in a DaemonSet it needs hostPID).
pub fn host_mount_namespace() -> Result<u32, SensorError> {
    // pid 1 is the host's init, or with hostPID in a pod, still the host's; kthreadd (pid 2)
    // is a kernel thread, always in the initial namespace, and readable where pid 1 is not
    // (a sandbox's init). Our own namespace is only right when the daemon runs on the host:
    // in a pod it is the pod's, and host processes would pass for container ones.
    if let Ok(m) = std::fs::metadata("/proc/1/ns/mnt") {
        return Ok(m.ino() as u32);
    }
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    if kthreadd {
        if let Ok(m) = std::fs::metadata("/proc/2/ns/mnt") {
            return Ok(m.ino() as u32);
        }
    }
    std::fs::metadata("/proc/self/ns/mnt")
        .map(|m| m.ino() as u32)
        .map_err(|source| SensorError::HostNamespace {
            path: "/proc/self/ns/mnt",
            source,
        })
}

/// Whether vmlinux's BTF has the BTF tracepoint `name` (its `btf_trace_<name>` typedef):
/// a name appears in the string section only where some type uses it.
fn has_btf_tracepoint(vmlinux: &[u8], name: &str) -> bool {
    let needle = format!("\0btf_trace_{name}\0");
    vmlinux
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

impl Sensor {
    /// Checks the host, loads the object with the config baked into its globals, and
    /// attaches the process programs, and the file programs when `files` is given.
    pub fn load(config: &SensorConfig, files: Option<&FilePrograms>) -> Result<Self, SensorError> {
        let mut features = preflight::check()?;
        // Read once: aya parses it for CO-RE, and the overlay layout and the tracepoint
        // list are read from the same bytes.
        let btf_error = |source| SensorError::Btf {
            path: preflight::VMLINUX_BTF,
            source,
        };
        let vmlinux = std::fs::read(preflight::VMLINUX_BTF).map_err(|error| {
            btf_error(aya::BtfError::FileError {
                path: preflight::VMLINUX_BTF.into(),
                error,
            })
        })?;
        let btf = Btf::parse(&vmlinux, aya::Endianness::default()).map_err(btf_error)?;
        let host_mnt_ns = host_mount_namespace()?;
        let ovl = overlay::OverlayLayout::of_running_kernel(&vmlinux);
        features.overlay = match &ovl {
            Ok(l) => l.describe().into(),
            Err(why) => format!("unknown: {why}"),
        };
        if let Err(why) = &ovl {
            warn!(
                reason = %why,
                "overlayfs layout unknown: execs in containers are reported with the overlay \
                 inode, not the layer file's (hash cache keyed on it, upper/lower not told)"
            );
        }
        let ovl = ovl.unwrap_or_default();
        let monitor_host = u32::from(config.monitor_host);
        let every_write = u32::from(files.is_some_and(|f| f.watched.every));
        let write_dirs = u32::from(files.is_some_and(|f| f.learn_write_dirs));
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("host_mnt_ns", &host_mnt_ns, true)
            .override_global("monitor_host", &monitor_host, true)
            .override_global("wakeup_bytes", &config.wakeup_bytes, true)
            .override_global("watch_every_write", &every_write, true)
            .override_global("learn_write_dirs", &write_dirs, true)
            .override_global("ovl_layout", &ovl.layout, true)
            .override_global("ovl_vfs_inode_off", &ovl.vfs_inode, true)
            .override_global("ovl_upper_off", &ovl.upper, true)
            .override_global("ovl_oe_off", &ovl.oe, true)
            .override_global("ovl_numlower_off", &ovl.numlower, true)
            .override_global("ovl_lowerstack_off", &ovl.lowerstack, true)
            .override_global("ovl_lowerpath_off", &ovl.lowerpath, true)
            .override_global("ovl_path_dentry_off", &ovl.path_dentry, true)
            .map_max_entries("lg_events", config.ring_buffer_bytes)
            .load(SENSOR_OBJECT)
            .map_err(SensorError::Load)?;
        for (program, tracepoint) in PROCESS_PROGRAMS {
            attach_program(
                &mut ebpf,
                &btf,
                program,
                hooks::Family::Tracepoint,
                tracepoint,
            )?;
        }
        let mut file_hooks: Vec<&'static hooks::Hook> = Vec::new();
        let mut kernel_choice = hooks::KernelChoice::default();
        if let Some(files) = files {
            fill_watched_dirs(&mut ebpf, &files.watched)?;
            kernel_choice = hooks::choose(files.kernel_hooks, features.bpf_lsm, |family| {
                attach_family(&mut ebpf, &btf, family)
            })?;
            for (family, why) in &kernel_choice.refused {
                info!(family = family.name(), reason = %why, "kernel hooks not used");
            }
            if let Some(family) = kernel_choice.family {
                file_hooks.extend(hooks::family(family));
                if files.syscall_hooks {
                    info!(
                        family = family.name(),
                        "files.syscall_hooks: not attached, the kernel hooks see mappings and \
                         names without the cost to every syscall"
                    );
                }
            }
            // A file tracepoint this kernel lacks leaves its program out, not the daemon
            // (mm_filemap_map_pages came in 6.2: Debian bookworm's 6.1 has only the fault).
            let mut absent = Vec::new();
            for hook in hooks::FILE_HOOKS
                .iter()
                .filter(|h| hooks::wants_fallback(h, kernel_choice.family, files.syscall_hooks))
            {
                if hook.family == hooks::Family::Tracepoint
                    && !has_btf_tracepoint(&vmlinux, hook.target)
                {
                    absent.push(hook);
                    continue;
                }
                attach_program(&mut ebpf, &btf, hook.program, hook.family, hook.target)?;
                file_hooks.push(hook);
            }
            // Said only where no other program serves the same roles (io_uring's
            // tracepoint has one name per kernel generation).
            for hook in absent {
                if file_hooks.iter().any(|h| h.roles == hook.roles) {
                    continue;
                }
                warn!(
                    program = hook.program,
                    tracepoint = hook.target,
                    "this kernel has no such tracepoint: its program is not attached"
                );
                features.absent_tracepoints.push(hook.target.to_string());
            }
        }
        features.fentry = if kernel_choice.family == Some(hooks::Family::Fentry) {
            "attached (executable mappings, rename, link, unlink)".into()
        } else if let Some((_, why)) = kernel_choice
            .refused
            .iter()
            .find(|(f, _)| *f == hooks::Family::Fentry)
        {
            format!("refused: {why}")
        } else {
            match probe_fentry(&mut ebpf, &btf) {
                Ok(()) => "available (not used: files.kernel_hooks or files.enabled)".into(),
                Err(why) => format!("refused: {why}"),
            }
        };
        debug!(fentry = %features.fentry, "fentry");
        let stats = take_counters(&mut ebpf, "lg_stats")?;
        Ok(Self {
            ebpf,
            features,
            host_mnt_ns,
            config: config.clone(),
            file_hooks,
            kernel_choice,
            stats: Arc::new(Mutex::new(stats)),
        })
    }

    /// The handle the files analyzer writes judged-clean inodes with and reads the
    /// kernel's file counters from; `None` when the file programs are not attached.
    pub fn file_feedback(&mut self) -> Result<Option<FileFeedback>, SensorError> {
        if !self.file_hooks.iter().any(|h| h.program == "lg_file_dirty") {
            return Ok(None);
        }
        let mut take = |name: &'static str| {
            self.ebpf
                .take_map(name)
                .ok_or(SensorError::Missing { what: "map", name })
        };
        let clean = HashMap::try_from(take("lg_clean")?).map_err(|source| SensorError::Map {
            name: "lg_clean",
            source,
        })?;
        let io_uring =
            HashMap::try_from(take("lg_io_uring")?).map_err(|source| SensorError::Map {
                name: "lg_io_uring",
                source,
            })?;
        Ok(Some(FileFeedback::new(clean, io_uring, self.stats.clone())))
    }

    /// How file events are hooked, in a word: `fentry+tracepoints`, `lsm+tracepoints`,
    /// `tracepoints+syscalls`, `tracepoints`, or `none` (see [`hooks::summary`]).
    pub fn file_hooks(&self) -> String {
        hooks::summary(&self.file_hooks)
    }

    /// Per file role, the attach points that serve it.
    pub fn file_hook_roles(&self) -> Vec<hooks::RoleHooks> {
        hooks::roles(&self.file_hooks)
    }

    /// The kernel hook families tried and not used, and why.
    pub fn kernel_hooks_refused(&self) -> Vec<String> {
        self.kernel_choice
            .refused
            .iter()
            .map(|(f, why)| format!("{}: {why}", f.name()))
            .collect()
    }

    pub fn features(&self) -> &KernelFeatures {
        &self.features
    }

    pub fn host_mnt_ns(&self) -> u32 {
        self.host_mnt_ns
    }

    /// Every attached program and its attach point: `lg_exec (tp_btf/sched_process_exec)`.
    pub fn programs(&self) -> Vec<String> {
        PROCESS_PROGRAMS
            .iter()
            .map(|(p, t)| format!("{p} (tp_btf/{t})"))
            .chain(
                self.file_hooks
                    .iter()
                    .map(|h| format!("{} ({})", h.program, h.attach_point())),
            )
            .collect()
    }

    /// Consumes the ring buffer until `shutdown` turns true, then drops (detaches) the
    /// programs. Events go to `tx`; if the receiver is gone the sensor stops.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<SensorEvent>,
        mut shutdown: watch::Receiver<bool>,
        mut pace: Pace,
    ) -> Result<(), SensorError> {
        let ring = RingBuf::try_from(self.ebpf.take_map("lg_events").ok_or(
            SensorError::Missing {
                what: "map",
                name: "lg_events",
            },
        )?)
        .map_err(|source| SensorError::Map {
            name: "lg_events",
            source,
        })?;
        let stats = self.stats.clone();
        let lost = take_counters(&mut self.ebpf, "lg_lost")?;
        // SAFETY: the ring buffer owns its fd and keeps it open and unchanged for as long
        // as the AsyncFd holds it; nothing else closes or replaces that fd.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| SensorError::Poll(e.into()))?;
        let mut losses = LossTracker::default();
        let interval = self.config.drain_interval();
        // The kernel wakes us for execs, rate-limited (see `exec_flags` in the sensor);
        // what it did not wake us for (forks, exits, execs past the limit) is picked up
        // by the next wake-up or by this follow-up, one drain interval after the last
        // drain that found records. It is disarmed once a drain finds nothing and the
        // kernel can no longer count a new exec into a storm (it wakes us for none of
        // those), so an idle daemon has no timer running at all.
        let follow_up = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(follow_up);
        let mut follow_up_armed = false;
        // Also the safety net: a lone fork or exit with no exec after it, or a record
        // committed just after the follow-up's last look, waits at most this long.
        let mut stats_tick = tokio::time::interval(self.config.stats_interval());
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(DRAIN_BATCH);
        let mut counts = ConsumerCounts::default();

        info!(
            programs = ?self.programs(),
            host_mnt_ns = self.host_mnt_ns,
            "sensor attached"
        );
        pace.settle(clock::now());
        loop {
            let drained = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                guard = ring.readable_mut() => {
                    let mut guard = guard.map_err(SensorError::Poll)?;
                    counts.wakeups += 1;
                    let (n, more) = drain_into(guard.get_inner_mut(), &mut batch, &mut losses);
                    if !more {
                        guard.clear_ready();
                    }
                    n
                }
                _ = &mut follow_up, if follow_up_armed => {
                    counts.follow_ups += 1;
                    drain_into(ring.get_mut(), &mut batch, &mut losses).0
                }
                _ = stats_tick.tick() => {
                    let (n, _) = drain_into(ring.get_mut(), &mut batch, &mut losses);
                    if let Some(lost) = losses.poll_kernel(&lost) {
                        batch.push(SensorEvent::Lost(lost));
                    }
                    n
                }
            };
            counts.records += drained as u64;
            let now = clock::now();
            for event in &batch {
                pace.saw(event, now);
            }
            follow_up_armed = drained > 0 || pace.in_storm(now);
            if follow_up_armed {
                follow_up
                    .as_mut()
                    .reset(tokio::time::Instant::now() + interval);
            }
            for event in batch.drain(..) {
                if tx.send(event).await.is_err() {
                    info!("event consumer stopped; sensor stopping");
                    return Ok(());
                }
            }
            pace.settle(now);
        }
        // A last look so that losses in the final interval are still reported.
        let (n, _) = drain_into(ring.get_mut(), &mut batch, &mut losses);
        counts.records += n as u64;
        if let Some(lost) = losses.poll_kernel(&lost) {
            batch.push(SensorEvent::Lost(lost));
        }
        for event in batch.drain(..) {
            let _ = tx.send(event).await;
        }
        let kernel_wakeups = sum_stat(
            &stats.lock().unwrap_or_else(|e| e.into_inner()),
            wire::STAT_WAKEUPS,
        );
        let pace = pace.usage(clock::now());
        info!(
            records = counts.records,
            kernel_wakeups,
            wakeups = counts.wakeups,
            follow_ups = counts.follow_ups,
            pipeline_policy_switches = pace.switches,
            pipeline_realtime_ms = pace.prompt_ms,
            pipeline_batch_ms = pace.batch_ms,
            "sensor detached"
        );
        Ok(())
    }
}

/// How the consumer was driven over its life, reported when it stops.
#[derive(Default)]
struct ConsumerCounts {
    records: u64,
    /// Times the ring buffer's fd woke us (the kernel forced a wake-up).
    wakeups: u64,
    /// Drains by the follow-up timer.
    follow_ups: u64,
}

/// Writes the watched directory names into `lg_watch_dirs`, before any program runs.
fn fill_watched_dirs(ebpf: &mut Ebpf, watched: &WatchedDirs) -> Result<(), SensorError> {
    let name = "lg_watch_dirs";
    let map = ebpf
        .map_mut(name)
        .ok_or(SensorError::Missing { what: "map", name })?;
    let mut dirs: HashMap<_, [u8; wire::WATCH_NAME_LEN], u8> =
        HashMap::try_from(map).map_err(|source| SensorError::Map { name, source })?;
    for dir in &watched.names {
        let mut key = [0u8; wire::WATCH_NAME_LEN];
        let n = dir.len().min(wire::WATCH_NAME_LEN - 1);
        key[..n].copy_from_slice(&dir.as_bytes()[..n]);
        dirs.insert(key, 1, 0)
            .map_err(|source| SensorError::Map { name, source })?;
    }
    Ok(())
}

/// A per-CPU counter map of the object, taken out of it.
fn take_counters(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<MapData, u64>, SensorError> {
    let map = ebpf
        .take_map(name)
        .ok_or(SensorError::Missing { what: "map", name })?;
    PerCpuArray::try_from(map).map_err(|source| SensorError::Map { name, source })
}

fn sum_stat(stats: &PerCpuArray<MapData, u64>, idx: u32) -> u64 {
    feedback::per_cpu_sum(stats, idx).unwrap_or_else(|e| {
        warn!(error = %e, index = idx, "cannot read sensor counters");
        0
    })
}

/// Decodes up to [`DRAIN_BATCH`] records; returns how many, and true when the ring may
/// hold more.
fn drain_into(
    ring: &mut RingBuf<MapData>,
    batch: &mut Vec<SensorEvent>,
    losses: &mut LossTracker,
) -> (usize, bool) {
    for n in 0..DRAIN_BATCH {
        let Some(item) = ring.next() else {
            return (n, false);
        };
        match event::decode(&item) {
            Ok(ev) => batch.push(ev),
            Err(e) => {
                losses.undecodable += 1;
                warn!(error = %e, "undecodable sensor record");
            }
        }
    }
    (DRAIN_BATCH, true)
}

/// Turns the kernel's cumulative per-CPU loss counters into new-loss reports.
#[derive(Default)]
struct LossTracker {
    reported: LossCounts,
    undecodable: u64,
}

impl LossTracker {
    fn poll_kernel(&mut self, lost: &PerCpuArray<MapData, u64>) -> Option<LossCounts> {
        let kernel = EventKind::ALL
            .iter()
            .map(|&k| (k, sum_stat(lost, k.wire())))
            .filter(|&(_, n)| n > 0)
            .collect();
        self.diff(LossCounts {
            kernel,
            undecodable: self.undecodable,
        })
    }

    /// What is new in `now` (cumulative counts) since the last report.
    fn diff(&mut self, now: LossCounts) -> Option<LossCounts> {
        let kernel = now
            .kernel
            .iter()
            .map(|(&k, &n)| (k, n.saturating_sub(self.reported.kernel(k))))
            .filter(|&(_, n)| n > 0)
            .collect();
        let new = LossCounts {
            kernel,
            undecodable: now.undecodable.saturating_sub(self.reported.undecodable),
        };
        self.reported = now;
        (new.total() > 0).then_some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_reported_once_as_increments() {
        let counts = |pairs: &[(EventKind, u64)]| LossCounts {
            kernel: pairs.iter().copied().collect(),
            undecodable: 0,
        };
        let mut t = LossTracker::default();
        assert_eq!(t.diff(LossCounts::default()), None);
        let first = t.diff(counts(&[(EventKind::Exec, 3)])).unwrap();
        assert_eq!(first.kernel(EventKind::Exec), 3);
        assert_eq!(t.diff(counts(&[(EventKind::Exec, 3)])), None);
        let next = t
            .diff(counts(&[(EventKind::Exec, 5), (EventKind::Fork, 1)]))
            .unwrap();
        assert_eq!(
            (next.kernel(EventKind::Exec), next.kernel(EventKind::Fork)),
            (2, 1)
        );
        assert_eq!(next.kernel(EventKind::Exit), 0);
    }

    /// This machine's kernel has the tracepoints the sensor uses, and not made-up ones.
    #[test]
    fn btf_tracepoints_are_found_by_their_typedef_name() {
        let vmlinux = std::fs::read(preflight::VMLINUX_BTF).expect("vmlinux BTF");
        assert!(has_btf_tracepoint(&vmlinux, "sched_process_exec"));
        assert!(has_btf_tracepoint(&vmlinux, "writeback_mark_inode_dirty"));
        assert!(!has_btf_tracepoint(&vmlinux, "sched_process_exe"));
        assert!(!has_btf_tracepoint(&vmlinux, "no_such_tracepoint"));
    }
}
