//! A baseline as a document: what one workload was seen to do while it learned, its
//! state, and the versioned JSON form it is stored, exported and imported in.
//!
//! Data and its invariants only (bounds, merging); what an event means is `learn`'s.

use super::key::{NameSource, WorkloadKey};
use crate::image::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The document's format; a reader refuses a newer one and says so.
pub const FORMAT_VERSION: u32 = 1;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Learning,
    Monitoring,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Learning => "learning",
            State::Monitoring => "monitoring",
        }
    }
}

/// Containers a baseline tells apart (by slot, for the distinct-container counts of its
/// entries: a bit each, not an id per entry, so that 100 entries cost kilobytes).
pub const CONTAINER_SLOTS: usize = 64;

/// How often and by how many containers an entry was seen. Times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub first_seen: u64,
    pub last_seen: u64,
    pub count: u64,
    /// Distinct containers that did it (counted among the baseline's first
    /// [`CONTAINER_SLOTS`] containers).
    pub distinct_containers: u64,
    /// Which of the baseline's `containers` did it, a bit per slot.
    pub seen_by: u64,
}

impl Seen {
    pub fn new(now: u64, slot: Option<u8>) -> Self {
        let mut s = Seen {
            first_seen: now,
            last_seen: now,
            ..Default::default()
        };
        s.saw(now, slot);
        s
    }

    pub fn saw(&mut self, now: u64, slot: Option<u8>) {
        self.last_seen = self.last_seen.max(now);
        self.count += 1;
        if let Some(bit) = slot.map(|s| 1u64 << s) {
            if self.seen_by & bit == 0 {
                self.seen_by |= bit;
                self.distinct_containers += 1;
            }
        }
    }

    /// Both sightings as one (an import's union); `remap` turns the other baseline's
    /// container slots into this one's.
    fn merge(&mut self, other: &Seen, remap: &[Option<u8>]) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count += other.count;
        for (i, to) in remap.iter().enumerate() {
            if other.seen_by & (1 << i) != 0 {
                if let Some(to) = to {
                    if self.seen_by & (1 << to) == 0 {
                        self.seen_by |= 1 << to;
                        self.distinct_containers += 1;
                    }
                }
            }
        }
        self.distinct_containers = self.distinct_containers.max(other.distinct_containers);
    }

    /// Another entry of the same baseline folded into this one (slots agree).
    pub fn absorb(&mut self, other: &Seen) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count += other.count;
        self.seen_by |= other.seen_by;
        self.distinct_containers = u64::from(self.seen_by.count_ones())
            .max(self.distinct_containers)
            .max(other.distinct_containers);
    }

    /// A copy for this baseline, with its slots remapped.
    fn remapped(&self, remap: &[Option<u8>]) -> Seen {
        let mut s = Seen {
            seen_by: 0,
            distinct_containers: 0,
            count: 0,
            ..self.clone()
        };
        s.merge(self, remap);
        s
    }
}

/// A learned exe: the digest it had, and the parents it was started by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedExec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Usually one or two: a list, not a map.
    pub parents: Vec<ParentSeen>,
}

impl LearnedExec {
    pub fn parent_mut(&mut self, parent: &str) -> Option<&mut Seen> {
        self.parents
            .iter_mut()
            .find(|p| p.parent == parent)
            .map(|p| &mut p.seen)
    }
}

/// One parent of a learned exe (empty: the container runtime, for a container's first
/// process).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentSeen {
    pub parent: String,
    #[serde(flatten)]
    pub seen: Seen,
}

/// One workload's baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub format: u32,
    pub key: WorkloadKey,
    pub name_source: NameSource,
    pub state: State,
    /// Why it may miss behaviour: the daemon started after the workload, events were lost
    /// while it learned, it hit its entry bound, it was seeded from another image.
    pub partial: Vec<String>,
    /// When learning (re)started.
    pub learning_since: u64,
    /// Seconds a container of the workload ran while it learned (learning ends after
    /// `baseline.learn_seconds` of them: a workload that was stopped has not shown much).
    #[serde(default)]
    pub ran_seconds: u64,
    /// The last time a new entry was learned.
    pub last_new_entry: u64,
    pub monitoring_since: Option<u64>,
    /// The last time any container of the workload was seen.
    pub last_seen: u64,
    /// exe path (as the image records it) -> what was learned of it.
    pub execs: BTreeMap<String, LearnedExec>,
    /// Directories written (or a pattern, `/var/cache/app/*`).
    pub writes: BTreeMap<String, Seen>,
    /// The first [`CONTAINER_SLOTS`] containers of the workload seen (ids): the slots of
    /// the entries' `seen_by`.
    pub containers: Vec<String>,
    /// Entries that were not learned because the baseline was full.
    pub dropped_entries: u64,
    /// The manifest of the workload's previous image, when this one was seeded from its
    /// baseline (an upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeded_from: Option<String>,
}

impl Baseline {
    pub fn new(key: WorkloadKey, name_source: NameSource, now: u64) -> Self {
        Self {
            format: FORMAT_VERSION,
            key,
            name_source,
            state: State::Learning,
            partial: Vec::new(),
            learning_since: now,
            ran_seconds: 0,
            last_new_entry: now,
            monitoring_since: None,
            last_seen: now,
            execs: BTreeMap::new(),
            writes: BTreeMap::new(),
            containers: Vec::new(),
            dropped_entries: 0,
            seeded_from: None,
        }
    }

    /// Execs (exe, parent pairs) and write directories learned.
    pub fn entries(&self) -> usize {
        self.execs.values().map(|e| e.parents.len()).sum::<usize>() + self.writes.len()
    }

    /// The slot of container `id`, given one if there is room.
    pub fn slot_of(&mut self, id: &str) -> Option<u8> {
        if let Some(i) = self.containers.iter().position(|c| c == id) {
            return Some(i as u8);
        }
        if self.containers.len() >= CONTAINER_SLOTS {
            return None;
        }
        self.containers.push(id.to_string());
        Some((self.containers.len() - 1) as u8)
    }

    /// Marks the baseline partial for `why`, once per reason.
    pub fn mark_partial(&mut self, why: &str) {
        if !self.partial.iter().any(|p| p == why) {
            self.partial.push(why.to_string());
        }
    }

    /// Everything `other` learned added to this one (an import). The state is this
    /// one's; entries past `max_entries` are counted as dropped.
    pub fn merge(&mut self, other: &Baseline, max_entries: usize) {
        let remap: Vec<Option<u8>> = other.containers.iter().map(|c| self.slot_of(c)).collect();
        for (exe, learned) in &other.execs {
            for p in &learned.parents {
                let room = self.entries() < max_entries;
                match self
                    .execs
                    .get_mut(exe)
                    .and_then(|e| e.parent_mut(&p.parent))
                {
                    Some(mine) => mine.merge(&p.seen, &remap),
                    None if room => {
                        let mine = self.execs.entry(exe.clone()).or_default();
                        mine.parents.push(ParentSeen {
                            parent: p.parent.clone(),
                            seen: p.seen.remapped(&remap),
                        });
                        mine.digest = mine.digest.or(learned.digest);
                    }
                    None => self.dropped_entries += 1,
                }
            }
        }
        for (dir, seen) in &other.writes {
            let room = self.entries() < max_entries;
            match self.writes.get_mut(dir) {
                Some(mine) => mine.merge(seen, &remap),
                None if room => {
                    self.writes.insert(dir.clone(), seen.remapped(&remap));
                }
                None => self.dropped_entries += 1,
            }
        }
        for p in &other.partial {
            self.mark_partial(p);
        }
    }
}

/// A document's time (Unix seconds) as RFC 3339, for people.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// Why a document could not be read as a baseline.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("not a baseline document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("baseline format {found} is newer than this daemon reads ({FORMAT_VERSION}): upgrade layerguard")]
    Newer { found: u32 },
}

/// Reads a baseline document (a stored file or an import).
pub fn from_json(bytes: &[u8]) -> Result<Baseline, DocumentError> {
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let v: Version = serde_json::from_slice(bytes)?;
    if v.format > FORMAT_VERSION {
        return Err(DocumentError::Newer { found: v.format });
    }
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WorkloadKey {
        WorkloadKey {
            containerd_namespace: "default".into(),
            pod_namespace: String::new(),
            workload: "web".into(),
            container: String::new(),
            manifest: "sha256:aa".into(),
        }
    }

    #[test]
    fn documents_round_trip_and_newer_formats_are_refused() {
        let mut b = Baseline::new(key(), NameSource::Label, 100);
        let slot = b.slot_of("c1");
        b.execs
            .entry("/bin/sh".into())
            .or_default()
            .parents
            .push(ParentSeen {
                parent: "/usr/sbin/nginx".into(),
                seen: Seen::new(100, slot),
            });
        let json = serde_json::to_vec(&b).unwrap();
        assert_eq!(from_json(&json).unwrap(), b);
        let newer = String::from_utf8(json)
            .unwrap()
            .replace("\"format\":1", "\"format\":9");
        let e = from_json(newer.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("format 9") && e.contains("upgrade"), "{e}");
        assert!(from_json(b"{\"format\":1}").is_err());
    }

    #[test]
    fn merging_is_a_union_within_the_bound() {
        let mut a = Baseline::new(key(), NameSource::Label, 100);
        let c1 = a.slot_of("c1");
        a.writes.insert("/tmp".into(), Seen::new(100, c1));
        let mut b = Baseline::new(key(), NameSource::Label, 50);
        b.slot_of("c0");
        let c2 = b.slot_of("c2");
        b.writes.insert("/tmp".into(), Seen::new(50, c2));
        b.writes.insert("/var/log".into(), Seen::new(60, c2));
        b.writes.insert("/data".into(), Seen::new(60, c2));
        a.merge(&b, 2);
        let tmp = &a.writes["/tmp"];
        assert_eq!(
            (tmp.first_seen, tmp.count, tmp.distinct_containers),
            (50, 2, 2)
        );
        assert_eq!(a.entries(), 2);
        assert_eq!(a.dropped_entries, 1);
        // c2 got a slot of its own here (its slot in `b` was 1).
        assert_eq!(a.containers, vec!["c1", "c0", "c2"]);
        assert_eq!(a.writes["/tmp"].seen_by, 0b101);
        assert_eq!(a.writes["/data"].seen_by, 0b100);
    }
}
