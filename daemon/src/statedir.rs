//! The state directory's format versions: `<state_dir>/FORMAT` records the on-disk format
//! of each store in it (the alert journal, baselines, webhook cursors, the layer cache),
//! and at every start the daemon decides, store by store, to read it as it is, migrate it,
//! drop it (the layer cache only: a cache is rebuilt) or not start at all, saying which
//! path, which formats and what to do.
//!
//! Owns `FORMAT` (its syntax, reading, atomic writing), the table of stores with each
//! one's current format ([`STORES`], the numbers themselves live with each store:
//! `STORE_FORMAT`) and its migrations, the decision ([`decide`], pure), and carrying it
//! out ([`prepare`]): a migration step is built beside the store, swapped in with renames
//! and recorded in `FORMAT`, so that a crash at any point leaves the old format or the new
//! one (an interrupted step is rolled back at the next start). `layerguard check` shows the
//! same plan ([`plan`]) and changes nothing.
//!
//! It must not read or write a store's contents itself (only a store's own migration
//! does, one format to the next), must never discard a store that is not a cache (a
//! journal, baselines or cursors in a format this binary does not read stop the start),
//! and must not rewrite what it does not know: keys of `FORMAT` for stores a newer
//! layerguard added are kept as found.
//!
//! Rules. A store whose directory does not exist is new: it starts in the current format,
//! whatever `FORMAT` says (so "move it aside" is always a way out). A store that exists with
//! no `FORMAT` entry (a state dir from before format versions, or a store older than its
//! key) is format 1. Same format: read it. Older, with a migration for every step: migrate.
//! Older without one, or newer than this binary: a cache is dropped with a warning, any
//! other store is refused.
//!
//! Syntax of `FORMAT` (a subset of TOML): `#` comments, `written_by = "VERSION"` (the
//! layerguard that last wrote it) and `store = N` lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// The file, directly in the state dir.
pub const FORMAT_FILE: &str = "FORMAT";
/// The format of every store before `FORMAT` existed.
pub const UNVERSIONED: u32 = 1;
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What losing a store costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Data only this store holds: never dropped.
    Kept,
    /// Rebuilt from elsewhere when missing: dropped when unreadable.
    Cache,
}

/// One format step of a store, `from` to `from + 1`.
pub struct Migration {
    /// The format it reads.
    pub from: u32,
    /// What changes, for the log line.
    pub what: &'static str,
    /// Reads the store directory `old` (not to be changed) and writes the new format into
    /// the empty directory `new`, flushing what it writes.
    pub run: fn(old: &Path, new: &Path) -> std::io::Result<()>,
}

/// A store in the state dir.
pub struct StoreSpec {
    /// Its directory under the state dir, and its key in `FORMAT`.
    pub name: &'static str,
    /// What it is, in messages.
    pub what: &'static str,
    /// The format this binary reads and writes.
    pub current: u32,
    pub kind: Kind,
    /// Its steps; `from` values need not be in order.
    pub migrations: &'static [Migration],
    /// What happens when the operator moves it aside, for the refusal's advice.
    pub without_it: &'static str,
}

/// Every store of the state dir.
pub const STORES: &[StoreSpec] = &[
    StoreSpec {
        name: "journal",
        what: "alert journal",
        current: crate::alert::journal::STORE_FORMAT,
        kind: Kind::Kept,
        migrations: &[],
        without_it: "an empty journal (the alerts in it are no longer served or delivered)",
    },
    StoreSpec {
        name: "baselines",
        what: "baseline store",
        current: crate::baseline::store::STORE_FORMAT,
        kind: Kind::Kept,
        migrations: &[],
        without_it: "with no baselines (every workload learns again)",
    },
    StoreSpec {
        name: "webhooks",
        what: "webhook cursors",
        current: crate::webhook::STORE_FORMAT,
        kind: Kind::Kept,
        migrations: &[],
        without_it:
            "each webhook at the first alert of that run (alerts not yet delivered are not sent)",
    },
    StoreSpec {
        name: "layers",
        what: "layer cache",
        current: crate::image::cache::STORE_FORMAT,
        kind: Kind::Cache,
        migrations: &[],
        without_it: "an empty layer cache (rebuilt from containerd's content store)",
    },
];

/// What to do with one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Absent: it is created in the current format.
    Fresh,
    /// In the current format: read it.
    Current,
    /// Older, and every step has a migration.
    Migrate { from: u32, to: u32 },
    /// A cache this binary cannot read: dropped and rebuilt.
    Rebuild { found: u32 },
    /// Not readable by this binary and not a cache: no start.
    Refuse { found: u32 },
}

/// The decision for a store found in format `found` (`None`: the store does not exist),
/// when this binary has format `current` and migrations from the formats in
/// `migrates_from`.
pub fn decide(found: Option<u32>, current: u32, kind: Kind, migrates_from: &[u32]) -> Action {
    match found {
        None => Action::Fresh,
        Some(v) if v == current => Action::Current,
        Some(v) if v < current && (v..current).all(|step| migrates_from.contains(&step)) => {
            Action::Migrate {
                from: v,
                to: current,
            }
        }
        Some(v) => match kind {
            Kind::Cache => Action::Rebuild { found: v },
            Kind::Kept => Action::Refuse { found: v },
        },
    }
}

/// The contents of a `FORMAT` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormatFile {
    /// The layerguard version that last wrote it.
    pub written_by: Option<String>,
    /// Store name -> format, stores this binary does not know included.
    pub stores: BTreeMap<String, u32>,
}

impl FormatFile {
    /// Parses the file's text; the error is (line, problem).
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut out = Self::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: String| Err((n + 1, problem));
            let Some((key, value)) = line.split_once('=') else {
                return bad(format!("`{line}` is not `key = value`"));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return bad(format!("`{key}` is not a store name"));
            }
            if key == "written_by" {
                match value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .filter(|v| !v.contains('"'))
                {
                    Some(v) => out.written_by = Some(v.to_string()),
                    None => {
                        return bad(format!("written_by must be a quoted version, not {value}"))
                    }
                }
                continue;
            }
            match value.parse::<u32>() {
                Ok(v) if v >= 1 => {
                    if out.stores.insert(key.to_string(), v).is_some() {
                        return bad(format!("`{key}` is given twice"));
                    }
                }
                _ => {
                    return bad(format!(
                        "the format of `{key}` must be a number from 1, not {value}"
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# layerguard state directory: the on-disk format of each store in it.\n\
             # Written by layerguard at start; do not edit. A layerguard that finds an older\n\
             # format migrates it; one newer than it reads stops it (see `layerguard check`).\n",
        );
        if let Some(v) = &self.written_by {
            s.push_str(&format!("written_by = \"{v}\"\n"));
        }
        for (name, v) in &self.stores {
            s.push_str(&format!("{name} = {v}\n"));
        }
        s
    }
}

/// One store this binary will not read, with what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub what: &'static str,
    pub path: PathBuf,
    pub found: u32,
    pub current: u32,
    pub written_by: Option<String>,
    pub without_it: &'static str,
}

impl Refusal {
    /// What the operator can do about it.
    pub fn fix(&self) -> String {
        let path = self.path.display();
        if self.found > self.current {
            let by = self
                .written_by
                .as_deref()
                .map(|v| format!("layerguard {v} or newer"))
                .unwrap_or_else(|| "the newer layerguard that wrote it".into());
            format!(
                "run {by} on this state dir, or move {path} aside and this layerguard starts {}",
                self.without_it
            )
        } else {
            format!(
                "upgrade it with a layerguard release that migrates format {} (a release between the one that wrote it and this one), or move {path} aside and this layerguard starts {}",
                self.found, self.without_it
            )
        }
    }
}

impl Refusal {
    /// What was found, without the advice.
    pub fn situation(&self) -> String {
        let by = self
            .written_by
            .as_deref()
            .map(|v| format!(" (FORMAT written by layerguard {v})"))
            .unwrap_or_default();
        let (what, path, found, current) =
            (self.what, self.path.display(), self.found, self.current);
        if found > current {
            format!("the {what} {path} is in format {found}{by}, newer than the format {current} this layerguard {VERSION} reads")
        } else {
            format!("the {what} {path} is in format {found}{by}, older than the format {current} of this layerguard {VERSION}, which has no migration from it")
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.situation(), self.fix())
    }
}

/// Why the state dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Reading or writing in the state dir failed.
    #[error("state dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `FORMAT` is not a format file.
    #[error("{path} line {line}: {problem}; restore the file (or, only if no newer layerguard ever ran on this state dir, delete it: every store there then counts as format 1)")]
    Unreadable {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    /// Stores this binary will not read.
    #[error("state dir {}: {}", .dir.display(), join(.refusals))]
    Refused {
        dir: PathBuf,
        refusals: Vec<Refusal>,
    },
    /// A migration step failed; the store is left in its old format.
    #[error("cannot migrate the {what} {path} from format {from} to {to} ({source}); it is left in format {from}")]
    Migration {
        what: &'static str,
        path: PathBuf,
        from: u32,
        to: u32,
        #[source]
        source: std::io::Error,
    },
}

fn join(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StateDirError + '_ {
    move |source| StateDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One store's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorePlan {
    pub name: &'static str,
    pub what: &'static str,
    pub path: PathBuf,
    /// As found (`None`: absent).
    pub found: Option<u32>,
    pub current: u32,
    pub action: Action,
    /// What starting without it means (see [`StoreSpec::without_it`]).
    pub without_it: &'static str,
}

/// What a start would do with the state dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub dir: PathBuf,
    /// `FORMAT` as read; `None` when there is none.
    pub file: Option<FormatFile>,
    pub stores: Vec<StorePlan>,
}

impl Plan {
    /// The stores that stop the start.
    pub fn refusals(&self) -> Vec<Refusal> {
        let by = self.file.as_ref().and_then(|f| f.written_by.clone());
        self.stores
            .iter()
            .filter_map(|s| match s.action {
                Action::Refuse { found } => Some(Refusal {
                    what: s.what,
                    path: s.path.clone(),
                    found,
                    current: s.current,
                    written_by: by.clone(),
                    without_it: s.without_it,
                }),
                _ => None,
            })
            .collect()
    }

    /// One line for `layerguard check`: (the daemon would start on it, what it would do).
    pub fn describe(&self) -> (bool, String) {
        let refusals = self.refusals();
        if !refusals.is_empty() {
            let found: Vec<String> = refusals.iter().map(Refusal::situation).collect();
            return (false, found.join("; "));
        }
        let mut changes = Vec::new();
        for s in &self.stores {
            match s.action {
                Action::Migrate { from, to } => changes.push(format!(
                    "would migrate the {} from format {from} to {to}",
                    s.what
                )),
                Action::Rebuild { found } => changes.push(format!(
                    "would drop the {} (format {found}, this layerguard reads {}) and rebuild it",
                    s.what, s.current
                )),
                Action::Fresh | Action::Current | Action::Refuse { .. } => {}
            }
        }
        let formats: Vec<String> = self
            .stores
            .iter()
            .map(|s| format!("{} {}", s.name, s.current))
            .collect();
        let formats = formats.join(", ");
        let detail = if !changes.is_empty() {
            format!("{}; then format {formats}", changes.join(", "))
        } else if self.file.is_some() {
            format!("format ok: {formats}")
        } else if self.stores.iter().all(|s| s.found.is_none()) {
            format!("new: FORMAT ({formats}) is written at the first start")
        } else {
            format!("no FORMAT yet (from before format versions): read as format {UNVERSIONED}, recorded at the next start ({formats})")
        };
        (true, detail)
    }
}

/// Reads `<dir>/FORMAT`; `None` when there is none.
fn read_format(dir: &Path) -> Result<Option<FormatFile>, StateDirError> {
    let path = dir.join(FORMAT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(StateDirError::Unreadable {
                path,
                line: 1,
                problem: "not UTF-8 text".into(),
            })
        }
        Err(e) => return Err(io_at(&path)(e)),
    };
    FormatFile::parse(&text)
        .map(Some)
        .map_err(|(line, problem)| StateDirError::Unreadable {
            path,
            line,
            problem,
        })
}

/// Writes `<dir>/FORMAT` atomically (temporary file, fsync, rename, fsync of the dir).
fn write_format(dir: &Path, file: &FormatFile) -> Result<(), StateDirError> {
    let path = dir.join(FORMAT_FILE);
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(file.render().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_at(&path))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// What a start would do with `state_dir` (which need not exist). Changes nothing.
pub fn plan(state_dir: &Path) -> Result<Plan, StateDirError> {
    plan_with(state_dir, STORES)
}

fn plan_with(state_dir: &Path, stores: &[StoreSpec]) -> Result<Plan, StateDirError> {
    let file = read_format(state_dir)?;
    let mut out = Vec::new();
    for spec in stores {
        let path = state_dir.join(spec.name);
        let exists = match std::fs::symlink_metadata(&path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_at(&path)(e)),
        };
        let found = exists.then(|| {
            file.as_ref()
                .and_then(|f| f.stores.get(spec.name).copied())
                .unwrap_or(UNVERSIONED)
        });
        let steps: Vec<u32> = spec.migrations.iter().map(|m| m.from).collect();
        out.push(StorePlan {
            name: spec.name,
            what: spec.what,
            path,
            found,
            current: spec.current,
            action: decide(found, spec.current, spec.kind, &steps),
            without_it: spec.without_it,
        });
    }
    Ok(Plan {
        dir: state_dir.to_path_buf(),
        file,
        stores: out,
    })
}

/// Brings `state_dir` (which exists) to this binary's formats before any store opens:
/// rolls back a migration a crash interrupted, migrates, drops an unreadable cache, and
/// records the formats in `FORMAT`; or refuses, changing nothing.
pub fn prepare(state_dir: &Path) -> Result<(), StateDirError> {
    prepare_with(state_dir, STORES)
}

/// The names a migration step uses beside the store.
fn step_dirs(state_dir: &Path, name: &str, from: u32) -> (PathBuf, PathBuf) {
    (
        state_dir.join(format!(".{name}.v{}.new", from + 1)),
        state_dir.join(format!(".{name}.v{from}.old")),
    )
}

fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Undoes or finishes a step a crash cut short: before `FORMAT` recorded it, the old
/// directory goes back; after, it is removed.
fn recover(
    state_dir: &Path,
    file: Option<&FormatFile>,
    stores: &[StoreSpec],
) -> Result<(), StateDirError> {
    let entries = std::fs::read_dir(state_dir).map_err(io_at(state_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        for spec in stores {
            let Some(rest) = name.strip_prefix(&format!(".{}.v", spec.name)) else {
                continue;
            };
            let path = entry.path();
            let store = state_dir.join(spec.name);
            if let Some(n) = rest
                .strip_suffix(".new")
                .and_then(|n| n.parse::<u32>().ok())
            {
                // A step that was still being built: the store itself is untouched.
                remove_dir(&path).map_err(io_at(&path))?;
                warn!(store = spec.name, to = n, path = %path.display(),
                    "state dir: removed an unfinished migration a crash left");
            } else if let Some(from) = rest
                .strip_suffix(".old")
                .and_then(|n| n.parse::<u32>().ok())
            {
                let recorded = file
                    .and_then(|f| f.stores.get(spec.name).copied())
                    .unwrap_or(UNVERSIONED);
                if recorded == from {
                    remove_dir(&store).map_err(io_at(&store))?;
                    std::fs::rename(&path, &store).map_err(io_at(&store))?;
                    sync_dir(state_dir).map_err(io_at(state_dir))?;
                    warn!(store = spec.name, format = from, path = %store.display(),
                        "state dir: a migration was interrupted; the store is back in its old format and is migrated again");
                } else {
                    remove_dir(&path).map_err(io_at(&path))?;
                }
            }
        }
    }
    Ok(())
}

fn prepare_with(state_dir: &Path, stores: &[StoreSpec]) -> Result<(), StateDirError> {
    let before = read_format(state_dir)?;
    recover(state_dir, before.as_ref(), stores)?;
    let plan = plan_with(state_dir, stores)?;
    let refusals = plan.refusals();
    if !refusals.is_empty() {
        return Err(StateDirError::Refused {
            dir: state_dir.to_path_buf(),
            refusals,
        });
    }
    let mut file = before.clone().unwrap_or_default();
    for (spec, s) in stores.iter().zip(&plan.stores) {
        match s.action {
            Action::Migrate { from, to } => {
                for step in from..to {
                    let m = spec
                        .migrations
                        .iter()
                        .find(|m| m.from == step)
                        .expect("decide checked every step");
                    migrate_step(state_dir, spec, m, &mut file)?;
                }
            }
            Action::Rebuild { found } => {
                let aside = state_dir.join(format!(".{}.dropped", spec.name));
                remove_dir(&aside).map_err(io_at(&aside))?;
                std::fs::rename(&s.path, &aside).map_err(io_at(&s.path))?;
                remove_dir(&aside).map_err(io_at(&aside))?;
                warn!(store = spec.name, path = %s.path.display(), found, current = spec.current,
                    "state dir: the {} is in a format this layerguard does not read; dropped, it is rebuilt", spec.what);
            }
            Action::Fresh | Action::Current | Action::Refuse { .. } => {}
        }
        file.stores.insert(spec.name.to_string(), spec.current);
    }
    // Leftovers of an earlier drop a crash cut short.
    for spec in stores.iter().filter(|s| s.kind == Kind::Cache) {
        let aside = state_dir.join(format!(".{}.dropped", spec.name));
        remove_dir(&aside).map_err(io_at(&aside))?;
    }
    if before.as_ref().map(|b| &b.stores) != Some(&file.stores) {
        file.written_by = Some(VERSION.to_string());
        write_format(state_dir, &file)?;
        let path = state_dir.join(FORMAT_FILE);
        let formats: Vec<String> = file
            .stores
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let formats = formats.join(", ");
        match before {
            None if plan.stores.iter().any(|s| s.found.is_some()) => info!(
                path = %path.display(), formats,
                "state dir from before format versions: its stores are read as format 1, and FORMAT now says so"),
            None => info!(path = %path.display(), formats, "state dir: new, FORMAT written"),
            Some(_) => info!(path = %path.display(), formats, "state dir: FORMAT updated"),
        }
    }
    Ok(())
}

/// One step: the new format is built in `.<name>.v<to>.new`, the store moved to
/// `.<name>.v<from>.old`, the new one moved in, `FORMAT` updated, the old one removed.
fn migrate_step(
    state_dir: &Path,
    spec: &StoreSpec,
    m: &Migration,
    file: &mut FormatFile,
) -> Result<(), StateDirError> {
    use std::os::unix::fs::PermissionsExt;
    let store = state_dir.join(spec.name);
    let (new, old) = step_dirs(state_dir, spec.name, m.from);
    let to = m.from + 1;
    let failed = |source| StateDirError::Migration {
        what: spec.what,
        path: store.clone(),
        from: m.from,
        to,
        source,
    };
    let built = (|| {
        remove_dir(&new)?;
        std::fs::create_dir(&new)?;
        let mode = std::fs::metadata(&store)?.permissions().mode();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(mode))?;
        (m.run)(&store, &new)?;
        sync_dir(&new)
    })();
    if let Err(e) = built {
        let _ = remove_dir(&new);
        return Err(failed(e));
    }
    let swapped = (|| {
        std::fs::rename(&store, &old)?;
        if let Err(e) = std::fs::rename(&new, &store) {
            let _ = std::fs::rename(&old, &store);
            return Err(e);
        }
        sync_dir(state_dir)
    })();
    if let Err(e) = swapped {
        let _ = remove_dir(&new);
        return Err(failed(e));
    }
    // From here the next start keeps the new format (or rolls back to the old one while
    // FORMAT still names it).
    file.stores.insert(spec.name.to_string(), to);
    file.written_by = Some(VERSION.to_string());
    write_format(state_dir, file)?;
    if let Err(e) = remove_dir(&old) {
        warn!(path = %old.display(), error = %e, "state dir: cannot remove the pre-migration copy");
    }
    info!(store = spec.name, path = %store.display(), from = m.from, to, change = m.what,
        "state dir: migrated the {}", spec.what);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn decisions() {
        use Action::*;
        let none: &[u32] = &[];
        assert_eq!(decide(None, 3, Kind::Kept, none), Fresh);
        assert_eq!(decide(None, 3, Kind::Cache, none), Fresh);
        assert_eq!(decide(Some(3), 3, Kind::Kept, none), Current);
        assert_eq!(
            decide(Some(1), 3, Kind::Kept, &[2, 1]),
            Migrate { from: 1, to: 3 }
        );
        assert_eq!(
            decide(Some(2), 3, Kind::Kept, &[2]),
            Migrate { from: 2, to: 3 }
        );
        // A step missing: a kept store is refused, a cache rebuilt.
        assert_eq!(decide(Some(1), 3, Kind::Kept, &[2]), Refuse { found: 1 });
        assert_eq!(decide(Some(1), 3, Kind::Cache, &[2]), Rebuild { found: 1 });
        // Newer than this binary.
        assert_eq!(decide(Some(4), 3, Kind::Kept, &[1, 2]), Refuse { found: 4 });
        assert_eq!(decide(Some(4), 3, Kind::Cache, none), Rebuild { found: 4 });
    }

    #[test]
    fn format_files_parse_render_and_name_the_bad_line() {
        let text = "# c\n\nwritten_by = \"0.3.0\"\njournal = 2\nfuture = 7\n";
        let f = FormatFile::parse(text).unwrap();
        assert_eq!(f.written_by.as_deref(), Some("0.3.0"));
        assert_eq!(f.stores["journal"], 2);
        assert_eq!(f.stores["future"], 7);
        assert_eq!(FormatFile::parse(&f.render()).unwrap(), f);
        for (text, line, word) in [
            ("journal = 1\nlayers = x\n", 2, "layers"),
            ("journal = 0\n", 1, "from 1"),
            ("journal\n", 1, "key = value"),
            ("journal = 1\njournal = 2\n", 2, "twice"),
            ("written_by = 1\n", 1, "quoted"),
            ("a b = 1\n", 1, "store name"),
        ] {
            let (l, problem) = FormatFile::parse(text).unwrap_err();
            assert_eq!(l, line, "{text:?}");
            assert!(problem.contains(word), "{text:?}: {problem}");
        }
    }

    fn read(dir: &Path) -> FormatFile {
        read_format(dir).unwrap().expect("a FORMAT file")
    }

    #[test]
    fn a_new_dir_gets_every_store_at_its_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let (ok, detail) = plan(dir.path()).unwrap().describe();
        assert!(ok && detail.starts_with("new:"), "{detail}");
        prepare(dir.path()).unwrap();
        let f = read(dir.path());
        assert_eq!(f.written_by.as_deref(), Some(VERSION));
        for spec in STORES {
            assert_eq!(f.stores[spec.name], spec.current, "{}", spec.name);
        }
        let (ok, detail) = plan(dir.path()).unwrap().describe();
        assert!(ok && detail.starts_with("format ok:"), "{detail}");
        // Nothing to change: the file is not rewritten.
        let before = fs::metadata(dir.path().join(FORMAT_FILE))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        prepare(dir.path()).unwrap();
        let after = fs::metadata(dir.path().join(FORMAT_FILE))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn a_dir_from_before_format_versions_is_format_1_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("journal")).unwrap();
        fs::write(dir.path().join("journal/00000000000000000001.seg"), b"x").unwrap();
        fs::create_dir_all(dir.path().join("baselines")).unwrap();
        fs::write(dir.path().join("baselines/a.json"), b"{}").unwrap();
        let p = plan(dir.path()).unwrap();
        assert_eq!(p.stores[0].found, Some(UNVERSIONED));
        assert_eq!(p.stores[0].action, Action::Current);
        let (ok, detail) = p.describe();
        assert!(ok && detail.contains("before format versions"), "{detail}");
        prepare(dir.path()).unwrap();
        assert_eq!(read(dir.path()).stores["journal"], 1);
        assert_eq!(
            fs::read(dir.path().join("journal/00000000000000000001.seg")).unwrap(),
            b"x"
        );
        assert!(dir.path().join("baselines/a.json").exists());
    }

    #[test]
    fn a_newer_journal_is_refused_and_nothing_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("journal")).unwrap();
        fs::create_dir_all(dir.path().join("layers")).unwrap();
        let text = "written_by = \"9.0.0\"\njournal = 2\nlayers = 1\n";
        fs::write(dir.path().join(FORMAT_FILE), text).unwrap();
        let e = prepare(dir.path()).unwrap_err();
        let msg = e.to_string();
        let journal = dir.path().join("journal");
        for want in [
            journal.display().to_string().as_str(),
            "alert journal",
            "format 2",
            "format 1 this layerguard",
            "layerguard 9.0.0 or newer",
            "move",
            "aside",
        ] {
            assert!(msg.contains(want), "{want:?} not in: {msg}");
        }
        assert!(matches!(e, StateDirError::Refused { .. }));
        assert_eq!(
            fs::read_to_string(dir.path().join(FORMAT_FILE)).unwrap(),
            text
        );
        let (ok, detail) = plan(dir.path()).unwrap().describe();
        assert!(!ok && detail.contains("format 2"), "{detail}");
        // Moved aside, the rest starts.
        fs::rename(&journal, dir.path().join("journal.v2")).unwrap();
        prepare(dir.path()).unwrap();
        assert_eq!(read(dir.path()).stores["journal"], 1);
    }

    #[test]
    fn a_layer_cache_of_another_format_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("layers")).unwrap();
        fs::write(dir.path().join("layers/abc.layer"), b"v2").unwrap();
        fs::create_dir_all(dir.path().join("baselines")).unwrap();
        fs::write(dir.path().join("baselines/a.json"), b"{}").unwrap();
        fs::write(
            dir.path().join(FORMAT_FILE),
            "layers = 2\nbaselines = 1\nfuture = 3\n",
        )
        .unwrap();
        let (ok, detail) = plan(dir.path()).unwrap().describe();
        assert!(
            ok && detail.contains("would drop the layer cache"),
            "{detail}"
        );
        prepare(dir.path()).unwrap();
        assert!(!dir.path().join("layers").exists());
        assert!(dir.path().join("baselines/a.json").exists());
        let f = read(dir.path());
        assert_eq!(f.stores["layers"], 1);
        // A store this binary does not know stays recorded as it was.
        assert_eq!(f.stores["future"], 3);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no leftovers");
    }

    /// v1: files `N`; v2: `N.txt`; v3: contents upper-cased.
    fn v1_to_v2(old: &Path, new: &Path) -> std::io::Result<()> {
        for e in fs::read_dir(old)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            fs::copy(e.path(), new.join(format!("{name}.txt")))?;
        }
        Ok(())
    }
    fn v2_to_v3(old: &Path, new: &Path) -> std::io::Result<()> {
        for e in fs::read_dir(old)? {
            let e = e?;
            let text = fs::read_to_string(e.path())?.to_uppercase();
            fs::write(new.join(e.file_name()), text)?;
        }
        Ok(())
    }
    fn broken(_: &Path, new: &Path) -> std::io::Result<()> {
        fs::write(new.join("half"), b"x")?;
        Err(std::io::Error::other("disk on fire"))
    }
    const STEPS: &[Migration] = &[
        Migration {
            from: 2,
            what: "upper case",
            run: v2_to_v3,
        },
        Migration {
            from: 1,
            what: "names get .txt",
            run: v1_to_v2,
        },
    ];
    const THINGS: &[StoreSpec] = &[StoreSpec {
        name: "things",
        what: "thing store",
        current: 3,
        kind: Kind::Kept,
        migrations: STEPS,
        without_it: "with no things",
    }];

    fn things_v1(dir: &Path) {
        fs::create_dir_all(dir.join("things")).unwrap();
        fs::write(dir.join("things/a"), "hello").unwrap();
    }

    #[test]
    fn migrations_run_step_by_step_and_leave_only_the_new_format() {
        let dir = tempfile::tempdir().unwrap();
        things_v1(dir.path());
        // No FORMAT: format 1.
        prepare_with(dir.path(), THINGS).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("things/a.txt")).unwrap(),
            "HELLO"
        );
        assert!(!dir.path().join("things/a").exists());
        assert_eq!(read(dir.path()).stores["things"], 3);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_failed_migration_leaves_the_old_format() {
        const BROKEN: &[StoreSpec] = &[StoreSpec {
            name: "things",
            what: "thing store",
            current: 2,
            kind: Kind::Kept,
            migrations: &[Migration {
                from: 1,
                what: "breaks",
                run: broken,
            }],
            without_it: "with no things",
        }];
        let dir = tempfile::tempdir().unwrap();
        things_v1(dir.path());
        fs::write(dir.path().join(FORMAT_FILE), "things = 1\n").unwrap();
        let e = prepare_with(dir.path(), BROKEN).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("from format 1 to 2") && msg.contains("disk on fire"),
            "{msg}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("things/a")).unwrap(),
            "hello"
        );
        assert_eq!(read(dir.path()).stores["things"], 1);
        assert!(!dir.path().join(".things.v2.new").exists());
    }

    #[test]
    fn a_step_a_crash_cut_short_is_rolled_back_or_finished() {
        // Crashed after the swap, before FORMAT said so: the old copy goes back and the
        // step runs again (once: the contents show it).
        let dir = tempfile::tempdir().unwrap();
        things_v1(dir.path());
        fs::rename(dir.path().join("things"), dir.path().join(".things.v1.old")).unwrap();
        fs::create_dir_all(dir.path().join("things")).unwrap();
        fs::write(dir.path().join("things/a.txt"), "hello").unwrap();
        fs::create_dir_all(dir.path().join(".things.v3.new")).unwrap();
        fs::write(dir.path().join(FORMAT_FILE), "things = 1\n").unwrap();
        prepare_with(dir.path(), THINGS).unwrap();
        let names: Vec<String> = fs::read_dir(dir.path().join("things"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.txt"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("things/a.txt")).unwrap(),
            "HELLO"
        );
        assert!(!dir.path().join(".things.v1.old").exists());
        assert!(!dir.path().join(".things.v3.new").exists());

        // Crashed after FORMAT said 3, before the old copy was removed: it is removed.
        fs::create_dir_all(dir.path().join(".things.v2.old")).unwrap();
        prepare_with(dir.path(), THINGS).unwrap();
        assert!(!dir.path().join(".things.v2.old").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("things/a.txt")).unwrap(),
            "HELLO"
        );
    }

    #[test]
    fn an_unreadable_format_file_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FORMAT_FILE), "journal = 1\nlayers = two\n").unwrap();
        let msg = prepare(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains(&dir.path().join(FORMAT_FILE).display().to_string())
                && msg.contains("line 2"),
            "{msg}"
        );
    }
}
