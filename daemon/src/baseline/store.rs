//! Baselines on disk: `STATE_DIR/baselines/<id>.json`, one document per baseline.
//!
//! Crash-safe by replacement: a document is written to a temporary file, flushed to disk,
//! renamed over the old one and the directory flushed, so a SIGKILL at any point leaves the
//! old document or the new one, never a mix. A file that does not read as a baseline is
//! moved aside (`<id>.json.unreadable`) with a warning, and the rest load.

use super::model::{from_json, Baseline};
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the baseline directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write baseline {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The format of the baseline directory (one `<id>.json` per baseline, each document
/// carrying its own `format`), recorded in `<state_dir>/FORMAT` by `statedir`. Bump it when
/// the layout changes, with a migration in `statedir`.
pub const STORE_FORMAT: u32 = 1;

pub struct Store {
    dir: PathBuf,
    /// Makes each temporary file's name unique: two saves of one baseline may overlap.
    writes: std::sync::atomic::AtomicU64,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            writes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Every readable baseline in the directory; the unreadable ones are moved aside.
    pub fn load_all(&self) -> Vec<Baseline> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot list the baselines");
                return out;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write that a crash cut short: the document it was replacing is whole.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| from_json(&b).map_err(|e| e.to_string()))
            {
                Ok(b) if format!("{}.json", b.key.id()) == name => out.push(b),
                Ok(b) => warn!(path = %path.display(), key = %b.key,
                    "baseline file named for another key: ignored"),
                Err(error) => {
                    let aside = path.with_extension("json.unreadable");
                    warn!(path = %path.display(), error, aside = %aside.display(),
                        "unreadable baseline moved aside; that workload learns again");
                    let _ = std::fs::rename(&path, &aside);
                }
            }
        }
        out
    }

    /// Replaces the stored document of `b`.
    pub fn save(&self, b: &Baseline) -> Result<(), StoreError> {
        let path = self.path_of(&b.key.id());
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("json.{}-{n}.tmp", std::process::id()));
        let failed = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(b).map_err(|e| failed(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(failed)?;
        f.write_all(&bytes).map_err(failed)?;
        f.sync_all().map_err(failed)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(failed)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
        Ok(())
    }

    pub fn remove(&self, id: &str) {
        if let Err(e) = std::fs::remove_file(self.path_of(id)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(id, error = %e, "cannot remove a baseline file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::key::{NameSource, WorkloadKey};
    use super::*;

    fn baseline(w: &str) -> Baseline {
        Baseline::new(
            WorkloadKey {
                containerd_namespace: "default".into(),
                pod_namespace: String::new(),
                workload: w.into(),
                container: String::new(),
                manifest: "sha256:aa".into(),
            },
            NameSource::Label,
            1,
        )
    }

    #[test]
    fn documents_survive_a_cut_write_and_bad_files_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = baseline("a");
        store.save(&a).unwrap();
        store.save(&baseline("b")).unwrap();
        // A crash mid-write: the temporary file is left, the old document is whole.
        let id = a.key.id();
        std::fs::write(dir.path().join(format!("{id}.json.tmp")), b"{\"form").unwrap();
        std::fs::write(dir.path().join("0000000000000000.json"), b"not json").unwrap();
        let mut loaded = store.load_all();
        loaded.sort_by(|x, y| x.key.workload.cmp(&y.key.workload));
        assert_eq!(loaded, vec![a, baseline("b")]);
        assert!(dir.path().join("0000000000000000.json.unreadable").exists());
        assert!(!dir.path().join(format!("{id}.json.tmp")).exists());
        store.remove(&id);
        assert_eq!(store.load_all().len(), 1);
    }
}
