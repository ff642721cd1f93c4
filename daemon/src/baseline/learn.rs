//! What an observed exec or write means to a workload's baseline: learned, known, not
//! learned (an intruder's, or the baseline is full), or unexpected once it monitors; when
//! learning ends; how directories with many dynamic children collapse into one pattern;
//! what an upgraded image keeps of its predecessor's baseline.
//!
//! Pure functions of the baseline, the observation, the limits and the time; the stage
//! does the I/O and the alerting.

use super::model::{Baseline, Seen, State};
use crate::config::BaselineConfig;

/// An exec as the baseline sees it.
#[derive(Clone, Debug)]
pub struct ExecFact<'a> {
    /// The exe path as the image records it.
    pub exe: &'a str,
    /// The parent's exe; empty for a container's first process.
    pub parent: &'a str,
    /// Its digest, when the image records one.
    pub digest: Option<crate::image::digest::Digest>,
    /// Its integrity verdict was `verified` and raised no alert: only such an exec is
    /// learned, and only such an exec is compared with the baseline (the others have an
    /// integrity alert of their own).
    pub verified: bool,
    pub container: &'a str,
    pub now: u64,
}

/// What an exec meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    Learned,
    Known,
    /// While learning: not learned, and why.
    NotLearned(&'static str),
    /// Monitoring: an exe this workload never ran. `learned`: some exes it did run.
    UnexpectedExec {
        learned: Vec<String>,
    },
    /// Monitoring: a learned exe from a parent it never had. `learned`: its parents.
    UnexpectedParent {
        learned: Vec<String>,
    },
    /// Monitoring, not judged against the baseline: it has an integrity verdict.
    Skipped,
}

/// How many learned entries an alert lists as "learned instead".
const LEARNED_SHOWN: usize = 8;

pub fn observe_exec(b: &mut Baseline, e: &ExecFact<'_>, config: &BaselineConfig) -> ExecOutcome {
    b.last_seen = b.last_seen.max(e.now);
    let slot = b.slot_of(e.container);
    let known = b
        .execs
        .get(e.exe)
        .is_some_and(|x| x.parents.iter().any(|p| p.parent == e.parent));
    match b.state {
        State::Learning => {
            if !e.verified {
                return ExecOutcome::NotLearned("its integrity verdict is not verified");
            }
            if known {
                if let Some(seen) = b.execs.get_mut(e.exe).and_then(|x| x.parent_mut(e.parent)) {
                    seen.saw(e.now, slot);
                }
                return ExecOutcome::Known;
            }
            if b.entries() >= config.max_entries {
                b.dropped_entries += 1;
                b.mark_partial("it reached baseline.max_entries while learning");
                return ExecOutcome::NotLearned("the baseline is full");
            }
            let learned = b.execs.entry(e.exe.to_string()).or_default();
            let parent = super::model::ParentSeen {
                parent: e.parent.to_string(),
                seen: Seen::new(e.now, slot),
            };
            // Most exes have one parent: no room for more until one comes.
            if learned.parents.is_empty() {
                learned.parents = vec![parent];
            } else {
                learned.parents.push(parent);
            }
            learned.digest = learned.digest.or(e.digest);
            b.last_new_entry = e.now;
            ExecOutcome::Learned
        }
        State::Monitoring => {
            if !e.verified {
                return ExecOutcome::Skipped;
            }
            match b.execs.get_mut(e.exe) {
                None => ExecOutcome::UnexpectedExec {
                    learned: b.execs.keys().take(LEARNED_SHOWN).cloned().collect(),
                },
                Some(learned) => match learned.parent_mut(e.parent) {
                    Some(seen) => {
                        seen.saw(e.now, slot);
                        ExecOutcome::Known
                    }
                    None => ExecOutcome::UnexpectedParent {
                        learned: learned
                            .parents
                            .iter()
                            .take(LEARNED_SHOWN)
                            .map(|p| shown_parent(&p.parent))
                            .collect(),
                    },
                },
            }
        }
    }
}

/// A parent as alerts show it.
pub fn shown_parent(p: &str) -> String {
    if p.is_empty() {
        "(the container runtime)".into()
    } else {
        p.to_string()
    }
}

/// A write as the baseline sees it: the directory written in the container's writable
/// layer, and whether the write raised no integrity alert.
#[derive(Clone, Debug)]
pub struct WriteFact<'a> {
    pub dir: &'a str,
    pub clean: bool,
    pub container: &'a str,
    pub now: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Learned,
    Known,
    NotLearned(&'static str),
    /// Monitoring: a directory never written. `learned`: directories it did write.
    Unexpected {
        learned: Vec<String>,
    },
    Skipped,
}

/// The learned entry that covers `dir`: itself, or a pattern `P/*` of an ancestor P.
fn covering(b: &Baseline, dir: &str) -> Option<String> {
    if b.writes.contains_key(dir) {
        return Some(dir.to_string());
    }
    let mut cur = dir;
    while let Some((parent, _)) = cur.rsplit_once('/') {
        let pattern = format!("{}/*", parent);
        if b.writes.contains_key(&pattern) {
            return Some(pattern);
        }
        if parent.is_empty() {
            break;
        }
        cur = parent;
    }
    None
}

pub fn observe_write(b: &mut Baseline, w: &WriteFact<'_>, config: &BaselineConfig) -> WriteOutcome {
    b.last_seen = b.last_seen.max(w.now);
    let slot = b.slot_of(w.container);
    if let Some(entry) = covering(b, w.dir) {
        if b.state == State::Learning && !w.clean {
            return WriteOutcome::NotLearned("the write raised an integrity alert");
        }
        if let Some(seen) = b.writes.get_mut(&entry) {
            seen.saw(w.now, slot);
        }
        return WriteOutcome::Known;
    }
    match b.state {
        State::Monitoring if !w.clean => WriteOutcome::Skipped,
        State::Monitoring => WriteOutcome::Unexpected {
            learned: b.writes.keys().take(LEARNED_SHOWN).cloned().collect(),
        },
        State::Learning if !w.clean => {
            WriteOutcome::NotLearned("the write raised an integrity alert")
        }
        State::Learning => {
            if b.entries() >= config.max_entries {
                b.dropped_entries += 1;
                b.mark_partial("it reached baseline.max_entries while learning");
                return WriteOutcome::NotLearned("the baseline is full");
            }
            b.writes.insert(w.dir.to_string(), Seen::new(w.now, slot));
            collapse(b, w.dir, config.collapse_children);
            b.last_new_entry = w.now;
            WriteOutcome::Learned
        }
    }
}

/// When the parent of `dir` has more than `limit` learned children, they become one
/// pattern `parent/*` (their sightings merged).
fn collapse(b: &mut Baseline, dir: &str, limit: usize) {
    let Some((parent, _)) = dir.rsplit_once('/') else {
        return;
    };
    if parent.is_empty() {
        return; // never `/*`: that would cover every directory
    }
    let prefix = format!("{parent}/");
    let children: Vec<String> = b
        .writes
        .keys()
        .filter(|k| {
            k.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.contains('/'))
        })
        .cloned()
        .collect();
    if children.len() <= limit {
        return;
    }
    let mut merged: Option<Seen> = None;
    for c in children {
        if let Some(seen) = b.writes.remove(&c) {
            match &mut merged {
                Some(m) => m.absorb(&seen),
                None => merged = Some(seen),
            }
        }
    }
    if let Some(m) = merged {
        b.writes.insert(format!("{parent}/*"), m);
    }
}

/// Whether learning is over at `now`: the workload ran `learn_seconds` while it learned,
/// and nothing new was learned for `quiet_seconds`.
pub fn learning_done(b: &Baseline, now: u64, config: &BaselineConfig) -> bool {
    b.state == State::Learning
        && b.ran_seconds >= config.learn_seconds
        && now.saturating_sub(b.last_new_entry) >= config.quiet_seconds
}

/// Ends learning now (`lock`, or `learning_done`).
pub fn lock(b: &mut Baseline, now: u64) {
    b.state = State::Monitoring;
    b.monitoring_since = Some(now);
}

/// Starts learning again from nothing (`relearn`).
pub fn relearn(b: &mut Baseline, now: u64) {
    let fresh = Baseline::new(b.key.clone(), b.name_source, now);
    *b = fresh;
}

/// The baseline a workload's new image starts from: the predecessor's state and the
/// entries whose exe the new image still has at that path (`has`), writes as they were.
/// An upgrade then neither starts an alert storm nor a blind learning window.
pub fn seed_upgrade(
    previous: &Baseline,
    key: super::key::WorkloadKey,
    has: impl Fn(&str) -> bool,
    now: u64,
) -> Baseline {
    let mut b = Baseline::new(key, previous.name_source, now);
    b.state = previous.state;
    b.learning_since = previous.learning_since;
    b.ran_seconds = previous.ran_seconds;
    b.last_new_entry = previous.last_new_entry;
    b.monitoring_since = previous.monitoring_since.map(|_| now);
    b.partial = previous.partial.clone();
    for (exe, parents) in &previous.execs {
        if has(exe) {
            b.execs.insert(exe.clone(), parents.clone());
        }
    }
    b.writes = previous.writes.clone();
    b.seeded_from = Some(previous.key.manifest.clone());
    b
}

/// Shells, interpreters and network tools: an unexpected one is a high alert.
pub fn is_living_off_the_land(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    const EXACT: &[&str] = &[
        "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox", "node", "nodejs", "curl",
        "wget", "nc", "ncat", "netcat", "socat", "telnet", "ssh", "scp", "php", "lua",
    ];
    EXACT.contains(&name)
        || ["python", "perl", "ruby", "php"].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
        })
}

#[cfg(test)]
mod tests {
    use super::super::key::{NameSource, WorkloadKey};
    use super::*;

    fn config() -> BaselineConfig {
        BaselineConfig {
            learn_seconds: 100,
            quiet_seconds: 10,
            max_entries: 6,
            collapse_children: 3,
            ..Default::default()
        }
    }

    fn key(manifest: &str) -> WorkloadKey {
        WorkloadKey {
            containerd_namespace: "default".into(),
            pod_namespace: String::new(),
            workload: "web".into(),
            container: String::new(),
            manifest: manifest.into(),
        }
    }

    fn exec<'a>(exe: &'a str, parent: &'a str, verified: bool, now: u64) -> ExecFact<'a> {
        ExecFact {
            exe,
            parent,
            digest: None,
            verified,
            container: "c1",
            now,
        }
    }

    #[test]
    fn a_workload_learns_then_reports_what_it_never_did() {
        let c = config();
        let mut b = Baseline::new(key("sha256:1"), NameSource::Label, 0);
        assert_eq!(
            observe_exec(&mut b, &exec("/usr/sbin/nginx", "", true, 1), &c),
            ExecOutcome::Learned
        );
        assert_eq!(
            observe_exec(&mut b, &exec("/bin/sh", "/usr/sbin/nginx", true, 2), &c),
            ExecOutcome::Learned
        );
        assert_eq!(
            observe_exec(&mut b, &exec("/bin/sh", "/usr/sbin/nginx", true, 3), &c),
            ExecOutcome::Known
        );
        // An intruder's exec is never learned.
        assert!(matches!(
            observe_exec(&mut b, &exec("/tmp/x", "/bin/sh", false, 4), &c),
            ExecOutcome::NotLearned(_)
        ));
        b.ran_seconds = 50;
        assert!(!learning_done(&b, 120, &c), "ran too short");
        // Time alone does not end learning: the workload must have run.
        assert!(!learning_done(&b, 10_000, &c));
        b.ran_seconds = 100;
        assert!(learning_done(&b, 120, &c));
        lock(&mut b, 120);
        assert_eq!(b.state, State::Monitoring);
        assert_eq!(
            observe_exec(&mut b, &exec("/bin/sh", "/usr/sbin/nginx", true, 130), &c),
            ExecOutcome::Known
        );
        match observe_exec(&mut b, &exec("/usr/bin/perl", "/bin/sh", true, 131), &c) {
            ExecOutcome::UnexpectedExec { learned } => {
                assert!(learned.contains(&"/bin/sh".to_string()), "{learned:?}")
            }
            o => panic!("{o:?}"),
        }
        match observe_exec(&mut b, &exec("/bin/sh", "/usr/sbin/cron", true, 132), &c) {
            ExecOutcome::UnexpectedParent { learned } => {
                assert_eq!(learned, vec!["/usr/sbin/nginx"])
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(
            observe_exec(&mut b, &exec("/tmp/x", "/bin/sh", false, 133), &c),
            ExecOutcome::Skipped
        );
        assert!(!b.execs.contains_key("/tmp/x"));
        relearn(&mut b, 200);
        assert_eq!((b.state, b.entries()), (State::Learning, 0));
    }

    #[test]
    fn learning_waits_for_quiet_and_the_bound_marks_partial() {
        let c = config();
        let mut b = Baseline::new(key("sha256:1"), NameSource::Label, 0);
        observe_exec(&mut b, &exec("/a", "", true, 95), &c);
        b.ran_seconds = 100;
        assert!(!learning_done(&b, 100, &c), "new entry 5 s ago");
        assert!(learning_done(&b, 105, &c));
        for i in 0..10 {
            let exe = format!("/bin/{i}");
            observe_exec(&mut b, &exec(&exe, "", true, 96), &c);
        }
        assert_eq!(b.entries(), 6);
        assert_eq!(b.dropped_entries, 5);
        assert_eq!(b.partial.len(), 1, "{:?}", b.partial);
    }

    #[test]
    fn dynamic_directories_collapse_into_a_pattern() {
        let c = config();
        let mut b = Baseline::new(key("sha256:1"), NameSource::Label, 0);
        let w = |dir, clean, now| WriteFact {
            dir,
            clean,
            container: "c1",
            now,
        };
        assert_eq!(
            observe_write(&mut b, &w("/var/log", true, 1), &c),
            WriteOutcome::Learned
        );
        for d in [
            "/var/cache/s1",
            "/var/cache/s2",
            "/var/cache/s3",
            "/var/cache/s4",
        ] {
            observe_write(&mut b, &w(d, true, 2), &c);
        }
        assert!(
            b.writes.contains_key("/var/cache/*"),
            "{:?}",
            b.writes.keys()
        );
        assert!(!b.writes.contains_key("/var/cache/s1"));
        assert_eq!(b.writes["/var/cache/*"].count, 4);
        assert!(matches!(
            observe_write(&mut b, &w("/etc", false, 3), &c),
            WriteOutcome::NotLearned(_)
        ));
        lock(&mut b, 10);
        assert_eq!(
            observe_write(&mut b, &w("/var/cache/s99", true, 11), &c),
            WriteOutcome::Known
        );
        assert_eq!(
            observe_write(&mut b, &w("/var/cache/s99/deep", true, 11), &c),
            WriteOutcome::Known
        );
        assert_eq!(
            observe_write(&mut b, &w("/var/log", true, 11), &c),
            WriteOutcome::Known
        );
        assert!(matches!(
            observe_write(&mut b, &w("/root/.ssh", true, 12), &c),
            WriteOutcome::Unexpected { .. }
        ));
        assert!(matches!(
            observe_write(&mut b, &w("/var/log/sub", true, 12), &c),
            WriteOutcome::Unexpected { .. }
        ));
    }

    #[test]
    fn an_upgrade_keeps_the_state_and_the_exes_the_new_image_has() {
        let c = config();
        let mut b = Baseline::new(key("sha256:1"), NameSource::Label, 0);
        observe_exec(&mut b, &exec("/usr/sbin/nginx", "", true, 1), &c);
        observe_exec(&mut b, &exec("/usr/bin/old-tool", "", true, 1), &c);
        observe_write(
            &mut b,
            &WriteFact {
                dir: "/tmp",
                clean: true,
                container: "c1",
                now: 1,
            },
            &c,
        );
        lock(&mut b, 50);
        let up = seed_upgrade(&b, key("sha256:2"), |p| p != "/usr/bin/old-tool", 60);
        assert_eq!(up.state, State::Monitoring);
        assert_eq!(up.key.manifest, "sha256:2");
        assert!(up.execs.contains_key("/usr/sbin/nginx"));
        assert!(!up.execs.contains_key("/usr/bin/old-tool"));
        assert!(up.writes.contains_key("/tmp"));
        assert_eq!(up.seeded_from.as_deref(), Some("sha256:1"));
    }

    #[test]
    fn shells_interpreters_and_network_tools_are_named() {
        for exe in [
            "/bin/sh",
            "/usr/bin/python3",
            "/usr/bin/python3.11",
            "/usr/bin/perl",
            "/usr/bin/curl",
            "/bin/nc",
        ] {
            assert!(is_living_off_the_land(exe), "{exe}");
        }
        for exe in ["/usr/sbin/nginx", "/usr/bin/pythonista", "/bin/shred"] {
            assert!(!is_living_off_the_land(exe), "{exe}");
        }
    }
}
