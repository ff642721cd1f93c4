//! The process stage: between the containers stage and the analyzers, it keeps the node's
//! process tree and hands every event on with its process as the tree knew it then.
//!
//! Owns the process tracker ([`table`]): fork, exec and exit upkeep, the executable of
//! every pid, ancestry, and which live pids can open a container's files; seeded from
//! `/proc` at start, so containers older than the daemon are known like new ones. Every
//! analyzer reads the same [`ProcessContext`], taken when its event passed here, never
//! the live table (which has moved on by the time an analyzer looks). It judges nothing.
//!
//! Fan-out: events leave in batches (one sensor drain's worth), shared by the analyzers
//! wired in `run.rs`, each behind its own bounded channel. An analyzer that needs another
//! one's results gets them downstream of it, never by calling back up here.

pub mod table;

pub use table::{complete_ancestry, Forebear, ProcessTable};

use crate::alert::AlertProcess;
use crate::containers::ContainerEvent;
use crate::identity::Attribution;
use crate::sensor::{ExecEvent, FileEvent, LossCounts, Observation, ProcessEvent};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::info;

/// Events taken from the channel per wake-up (a sensor drain is up to 256).
pub const EVENT_BATCH: usize = 256;

/// What the tracker knew about an event's process when the event passed.
#[derive(Clone, Debug, Default)]
pub struct ProcessContext {
    /// For an exec, the process's parent first; for a file event, the acting process
    /// itself first, then its parent. Up to [`MAX_ANCESTORS`], as the events told it; an
    /// analyzer that alerts completes it from `/proc` ([`complete_ancestry`]).
    pub ancestry: Vec<Forebear>,
    /// Live pids of the event's mount namespace to open the container's files through:
    /// the process itself, its parents, then the others the tracker saw there.
    pub roots: Vec<u32>,
    /// For a file event: the real inode the acting process is running (its own
    /// executable's mapping is its exec's business, judged by verify).
    pub exe_file: Option<crate::sensor::FileIdentity>,
}

/// An event as analyzers get it.
#[derive(Clone, Debug)]
pub enum Tracked {
    Observed {
        event: Observation,
        attribution: Attribution,
        /// Filled for execs and file events (the ones analyzers judge); empty otherwise.
        process: ProcessContext,
    },
    /// Sensor losses, for whoever reports them.
    Lost(LossCounts),
}

/// One drain's worth of events, shared by every analyzer.
pub type Batch = Arc<Vec<Tracked>>;

/// Which events an analyzer is handed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wants {
    /// Every event and loss report (verify: execs, and it reports losses).
    Everything,
    /// File events only, and only batches that have one.
    Files,
    /// Batches that have an exec in a container, whole (trust: a container's first exec).
    ContainerExecs,
}

/// An analyzer as the process stage sees it: its channel and what it wants.
pub struct Analyzer {
    pub tx: mpsc::Sender<Batch>,
    pub wants: Wants,
}

/// Makes `path` absolute against `cwd` (both container paths), without `.` components or
/// repeated slashes (`./x.sh` in /tmp is `/tmp/x.sh`, as an alert shows it). `..` is left
/// to whoever resolves it (the image index follows symlinks and clamps it at the root).
pub fn absolute(path: &str, cwd: Option<&str>) -> String {
    let base = if path.starts_with('/') {
        ""
    } else {
        cwd.unwrap_or("/")
    };
    let mut out = String::with_capacity(base.len() + path.len() + 1);
    for part in base.split('/').chain(path.split('/')) {
        if !part.is_empty() && part != "." {
            out.push('/');
            out.push_str(part);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The wall-clock time (RFC 3339, microseconds) of a kernel CLOCK_MONOTONIC stamp, by
/// the two clocks' offset now (an NTP step since the event would shift it).
pub fn wall_clock_of(ktime_ns: u64) -> String {
    humantime::format_rfc3339_micros(crate::clock::to_wall(ktime_ns)).to_string()
}

/// The process an alert about an exec names: the exec's own ids and argv, `exe` the path
/// that was judged, `parents` (nearest first, as [`ProcessContext`] has them for an exec)
/// completed from `/proc`, and when it ran.
pub fn exec_actor(exec: &ExecEvent, exe: &str, parents: Vec<Forebear>) -> AlertProcess {
    AlertProcess {
        pid: exec.process.tgid,
        ppid: exec.ppid,
        uid: exec.uid,
        gid: exec.gid,
        exe: exe.to_string(),
        argv: exec.argv.clone(),
        argv_truncated: exec.argv_truncated,
        ancestry: complete_ancestry(parents),
        exec_time: Some(wall_clock_of(exec.process.ktime_ns)),
    }
}

/// The process an alert about a file event names: the acting process (`chain` has it
/// first, then its parents, as [`ProcessContext`] has them for a file event), its exe as
/// the tracker or `/proc` knew it, its parent, and its argv from `/proc`.
pub fn file_actor(event: &FileEvent, chain: Vec<Forebear>) -> AlertProcess {
    let pid = event.process.tgid;
    let chain = complete_ancestry(chain);
    let exe = chain
        .first()
        .filter(|a| a.pid == pid)
        .and_then(|a| a.exe.clone())
        .or_else(|| crate::procfs::exe_path(pid))
        .unwrap_or_else(|| event.comm.clone());
    let ppid = chain
        .get(1)
        .map(|a| a.pid)
        .or_else(|| crate::procfs::ppid_of(pid))
        .unwrap_or(0);
    AlertProcess {
        pid,
        ppid,
        uid: event.uid,
        gid: event.gid,
        exe,
        argv: crate::procfs::argv(pid).unwrap_or_default(),
        argv_truncated: false,
        ancestry: chain.into_iter().filter(|a| a.pid != pid).collect(),
        exec_time: None,
    }
}

/// The executable an exec leaves its process with, as ancestry shows it: the interpreter
/// of a `#!` script, the file behind a magic link, else the name it was run by (made
/// absolute with the kernel's cwd).
pub fn exe_name(exec: &ExecEvent) -> String {
    if exec.memfd {
        return exec.filename.clone();
    }
    if let Some(interp) = &exec.interpreter {
        return absolute(interp, exec.cwd.as_deref());
    }
    if let Some(exe) = &exec.exe_path {
        return exe.clone();
    }
    absolute(&exec.filename, exec.cwd.as_deref())
}

/// The stage, configured and not yet running.
pub struct ProcessStage {
    table: ProcessTable,
}

impl ProcessStage {
    /// A tracker of at most `capacity` processes, seeded with every live process outside
    /// the host mount namespace.
    pub fn new(capacity: usize, host_mnt_ns: u32) -> Self {
        let mut table = ProcessTable::new(capacity);
        let seeded = table.seed_from_proc(host_mnt_ns);
        info!(processes = seeded, "process table seeded from /proc");
        Self { table }
    }

    /// Tracks every event from `events` and hands it on to each of `analyzers`, until
    /// `events` closes; then the analyzers' channels close too.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<ContainerEvent>,
        analyzers: Vec<Analyzer>,
    ) -> usize {
        let mut input = Vec::with_capacity(EVENT_BATCH);
        while events.recv_many(&mut input, EVENT_BATCH).await > 0 {
            // The ELF loader can fault in a new executable's pages before the exec event
            // (it comes at the end of the exec): a mapping's process may be running a file
            // an exec later in the batch names.
            let execs: Vec<(u32, crate::sensor::FileIdentity)> = input
                .iter()
                .filter_map(|e| match e {
                    ContainerEvent::Observed(o, _) => {
                        o.as_exec().map(|x| (x.process.tgid, x.real_file))
                    }
                    ContainerEvent::Lost(_) => None,
                })
                .collect();
            let batch: Vec<Tracked> = input.drain(..).map(|e| self.track(e, &execs)).collect();
            let batch = Arc::new(batch);
            for analyzer in &analyzers {
                let own = match analyzer.wants {
                    Wants::Everything => batch.clone(),
                    Wants::Files => {
                        let files: Vec<Tracked> = batch
                            .iter()
                            .filter(|t| {
                                matches!(
                                    t,
                                    Tracked::Observed {
                                        event: Observation::File(_),
                                        ..
                                    }
                                )
                            })
                            .cloned()
                            .collect();
                        // No wake-up of an analyzer for a batch with nothing for it.
                        if files.is_empty() {
                            continue;
                        }
                        Arc::new(files)
                    }
                    Wants::ContainerExecs => {
                        let has_exec = batch.iter().any(|t| {
                            matches!(
                                t,
                                Tracked::Observed {
                                    event: Observation::Process(ProcessEvent::Exec(_)),
                                    attribution: Attribution::Container(_),
                                    ..
                                }
                            )
                        });
                        if !has_exec {
                            continue;
                        }
                        batch.clone()
                    }
                };
                // An analyzer that is gone stops getting events; the others go on.
                let _ = analyzer.tx.send(own).await;
            }
        }
        self.table.len()
    }

    fn track(
        &mut self,
        event: ContainerEvent,
        execs: &[(u32, crate::sensor::FileIdentity)],
    ) -> Tracked {
        let (event, attribution) = match event {
            ContainerEvent::Lost(lost) => return Tracked::Lost(lost),
            ContainerEvent::Observed(o, a) => (o, a),
        };
        let mut process = ProcessContext::default();
        match &event {
            Observation::Process(ProcessEvent::Fork(f)) => {
                self.table.on_fork(f.process.tgid, f.parent_tgid);
                self.table.seen_in(f.process.mnt_ns, f.process.tgid);
            }
            Observation::Process(ProcessEvent::Exit(e)) => {
                self.table.on_exit(e.process.mnt_ns, e.process.tgid);
            }
            Observation::Process(ProcessEvent::Exec(exec)) => {
                // The table only, no I/O per exec: alerts complete it from /proc later.
                process.ancestry = self.table.ancestry(exec.ppid, |_| None);
                let (tgid, ns) = (exec.process.tgid, exec.process.mnt_ns);
                let mut roots = Vec::with_capacity(2 + process.ancestry.len() + 8);
                roots.extend([tgid, exec.ppid]);
                roots.extend(process.ancestry.iter().map(|a| a.pid));
                roots.extend(self.table.pids_in(ns));
                roots.dedup();
                process.roots = roots;
                self.table.on_exec(tgid, exec.ppid, exe_name(exec).into());
                self.table.set_exe_file(tgid, exec.real_file);
                self.table.seen_in(ns, tgid);
            }
            Observation::File(file) => {
                let (tgid, ns) = (file.process.tgid, file.process.mnt_ns);
                process.ancestry = self.table.ancestry(tgid, |_| None);
                let mut roots = vec![tgid];
                roots.extend(self.table.pids_in(ns));
                roots.dedup();
                process.roots = roots;
                process.exe_file = execs
                    .iter()
                    .find(|(pid, f)| *pid == tgid && *f == file.file)
                    .map(|(_, f)| *f)
                    .or_else(|| self.table.exe_file(tgid));
                self.table.seen_in(ns, tgid);
            }
        }
        Tracked::Observed {
            event,
            attribution,
            process,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::sensor::SensorEvent;

    fn observed(e: SensorEvent) -> ContainerEvent {
        match e {
            SensorEvent::Observed(o) => ContainerEvent::Observed(o, Attribution::Host),
            SensorEvent::Lost(l) => ContainerEvent::Lost(l),
        }
    }

    #[test]
    fn relative_paths_join_the_cwd() {
        assert_eq!(absolute("./x.sh", Some("/app")), "/app/x.sh");
        assert_eq!(absolute("./x.sh", Some("/")), "/x.sh");
        assert_eq!(absolute("a/./b//c", Some("/app/")), "/app/a/b/c");
        assert_eq!(absolute("/tmp/./x", None), "/tmp/x");
        assert_eq!(absolute("../x", Some("/app")), "/app/../x");
        assert_eq!(absolute(".", Some("/")), "/");
        assert_eq!(absolute("x", Some("/")), "/x");
        assert_eq!(absolute("/bin/sh", Some("/app")), "/bin/sh");
        assert_eq!(absolute("x", None), "/x");
    }

    #[tokio::test]
    async fn execs_leave_with_their_ancestry_and_roots_as_of_then() {
        let mut stage = ProcessStage {
            table: ProcessTable::new(64),
        };
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out) = mpsc::channel(16);
        // sh (10) forks 11, which execs /bin/11; then 11 exits.
        for e in [
            fixtures::exec_at(10, 5, 77, 1),
            fixtures::fork_at(11, 10, 77, 2),
            fixtures::exec_at(11, 10, 77, 3),
            fixtures::exit_at(11, 77, 4),
        ] {
            tx.send(observed(e)).await.unwrap();
        }
        drop(tx);
        stage.table.seen_in(77, 9);
        let task = tokio::spawn(stage.run(
            rx,
            vec![Analyzer {
                tx: out_tx,
                wants: Wants::Everything,
            }],
        ));
        let batch = out.recv().await.unwrap();
        assert_eq!(batch.len(), 4);
        let Tracked::Observed { process, .. } = &batch[2] else {
            panic!("{:?}", batch[2])
        };
        let pids: Vec<u32> = process.ancestry.iter().map(|a| a.pid).collect();
        assert_eq!(pids, vec![10, 5]);
        assert_eq!(process.ancestry[0].exe.as_deref(), Some("/bin/10"));
        // Itself, its parent, its ancestry, then the others of its namespace.
        assert_eq!(process.roots[..2], [11, 10]);
        assert!(process.roots.contains(&9), "{:?}", process.roots);
        let Tracked::Observed { process, .. } = &batch[3] else {
            panic!()
        };
        assert!(process.ancestry.is_empty(), "only execs carry a context");
        assert!(
            out.recv().await.is_none(),
            "the channel closes with the input"
        );
        assert!(task.await.unwrap() >= 2);
    }

    #[test]
    fn exe_names_follow_interpreters_and_magic_links() {
        let mut e = fixtures::exec_event(&["./x.sh"]);
        e.cwd = Some("/app".into());
        assert_eq!(exe_name(&e), "/app/x.sh");
        e.interpreter = Some("/bin/sh".into());
        assert_eq!(exe_name(&e), "/bin/sh");
        let mut e = fixtures::exec_event(&["/proc/self/exe"]);
        e.exe_path = Some("/bin/busybox".into());
        assert_eq!(exe_name(&e), "/bin/busybox");
    }
}
