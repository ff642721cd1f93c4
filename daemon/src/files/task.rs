//! The judgement tasks of the files analyzer: for one write or one mapping, the image
//! record at its path, the file read on the blocking pool (a few at once), and the verdict
//! from `judge`. They return an [`Outcome`]; what the stage remembers, marks in the kernel
//! and alerts on is the stage's.

use super::judge::{self, Concern, Finding, MapVerdict};
use super::layers::Located;
use super::{inspect, Outcome, Shared};
use crate::identity::ContainerInfo;
use crate::sensor::FileEvent;
use crate::verify::images::ImageEntry;
use crate::verify::verdict::ImageState;
use std::sync::Arc;

/// The container's image, if it is verified and indexed; else why the event cannot be
/// judged.
async fn verified_image(
    shared: &Shared,
    container: &ContainerInfo,
) -> Result<Arc<ImageEntry>, String> {
    let image = shared.catalog.for_container(container).await;
    match (&image.state, &image.index) {
        (ImageState::Verified, Some(_)) => Ok(image),
        (state, _) => Err(format!("image {}", state.name())),
    }
}

/// Calls `look` until it finds something, at most for `files.max_wait_ms`: at once, then
/// after 1 ms, doubling up to 64 ms (a change is usually there at the first look; one that
/// never comes costs ~35 looks, not 1,000). `None`: the wait ran out.
async fn look_until<T>(shared: &Shared, mut look: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + shared.config.max_wait();
    let mut poll = std::time::Duration::from_millis(1);
    loop {
        if let Some(found) = look() {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(std::time::Duration::from_millis(64));
    }
}

/// A rename's or link's destination named by a kernel hook, which runs before the kernel
/// makes the change: waits, up to `files.max_wait_ms`, until the writable layer holds a
/// regular file at the path (the moved file itself when the sensor named its inode in that
/// layer; a file moved from an image layer is copied up as a new inode, so then any), and
/// returns the event with that file's mode and what it may mean. `None`: nothing to judge
/// (the change never happened or was undone, not a regular file, or a data file).
pub(super) async fn await_name(
    shared: &Shared,
    event: &FileEvent,
    located: &Located,
) -> Option<(FileEvent, Concern)> {
    use std::os::unix::fs::MetadataExt;
    // One openat2 and an fstat per look: cheap enough for the task itself.
    let held = look_until(shared, || {
        let meta = inspect::open_in_layer(&located.layer_dir, &located.path)
            .and_then(|f| f.metadata())
            .ok()?;
        let moved_here =
            event.file.ino == 0 || event.file.dev != meta.dev() || event.file.ino == meta.ino();
        moved_here.then_some(meta)
    })
    .await;
    let Some(meta) = held else {
        tracing::debug!(
            path = located.path,
            "a renamed or linked name never held the file: not judged"
        );
        return None;
    };
    let mode = meta.mode();
    let concern = judge::write_concern(&shared.rules, &located.path, mode)?;
    let event = FileEvent {
        mode,
        ..event.clone()
    };
    Some((event, concern))
}

/// An unlink (or a rename's source) named by a kernel hook, which runs before the kernel's
/// permission checks: waits, up to `files.max_wait_ms`, until the name no longer holds the
/// file, and says whether it went (false: refused, e.g. a non-root process, or undone).
/// A file of the writable layer is gone when its name is absent there or holds another
/// file (or a whiteout); an image layer's file, when the writable layer has something at
/// its name (the whiteout overlayfs leaves, or a replacement).
pub(super) async fn await_gone(shared: &Shared, event: &FileEvent, located: &Located) -> bool {
    use std::os::unix::fs::MetadataExt;
    let upper_dev = std::fs::metadata(&located.layer_dir).map(|m| m.dev()).ok();
    let in_upper = event.file.ino == 0 || upper_dev == Some(event.file.dev);
    let gone = look_until(shared, || {
        let gone = match inspect::open_in_layer(&located.layer_dir, &located.path)
            .and_then(|f| f.metadata())
        {
            Ok(meta) => (meta.dev(), meta.ino()) != (event.file.dev, event.file.ino),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => in_upper,
            // Not a regular file: the whiteout of a removed image file, or a replacement.
            Err(_) => true,
        };
        gone.then_some(())
    })
    .await
    .is_some();
    if !gone {
        tracing::debug!(
            path = located.path,
            "an unlinked name still holds its file: refused or undone, not reported"
        );
    }
    gone
}

async fn blocking<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let _permit = shared.permits.acquire().await;
    if let Some(m) = &shared.metrics.files {
        m.inspected.inc();
    }
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

pub(super) async fn judge_write(
    shared: &Arc<Shared>,
    event: &FileEvent,
    container: &ContainerInfo,
    located: &Located,
    concern: Concern,
) -> Outcome {
    let image = match verified_image(shared, container).await {
        Ok(i) => i,
        Err(reason) => return Outcome::Unjudged(reason),
    };
    let record = image.record(&located.path);
    let image_mode = image
        .index
        .as_ref()
        .and_then(|i| i.lookup(&located.path))
        .map(|e| e.mode);
    let (settle, max_wait) = (shared.config.settle(), shared.config.max_wait());
    let started = std::time::Instant::now();
    let content = loop {
        // Gone again (a temporary file, renamed or deleted): nothing is there to judge.
        let (seen, still_changing) = match inspect::settle(&located.host, settle, max_wait).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Outcome::Quiet,
            Err(e) => return Outcome::Unjudged(format!("{}: {e}", located.host.display())),
        };
        let (dir, rel, limit) = (
            located.layer_dir.clone(),
            located.path.clone(),
            shared.max_file_bytes,
        );
        match blocking(shared, move || {
            inspect::content_since(&dir, &rel, limit, seen)
        })
        .await
        {
            Ok((mut c, moved)) => {
                // Written again while it was read: settle and read once more.
                if moved && !still_changing && started.elapsed() < max_wait {
                    continue;
                }
                c.still_changing = still_changing || moved;
                break c;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Outcome::Quiet,
            Err(e) => return Outcome::Unjudged(format!("{}: {e}", located.host.display())),
        }
    };
    let mode = std::fs::symlink_metadata(&located.host)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap_or(event.mode);
    let finding = judge::judge_write(
        &shared.rules,
        concern,
        &located.path,
        mode,
        &record,
        image_mode,
        content.digest,
    );
    let mut notes = Vec::new();
    if content.digest.is_none() {
        notes.push(format!(
            "{} bytes, over the hashing limit verify.max_file_bytes",
            content.size
        ));
    }
    if content.still_changing {
        notes.push(format!(
            "still being written after files.max_wait_ms ({} ms): hashed as it was then",
            shared.config.max_wait_ms
        ));
    }
    match finding {
        Some(finding) => Outcome::Alert {
            finding,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            manifest: image.manifest.clone(),
        },
        None => Outcome::Quiet,
    }
}

/// A sensitive path that lost its name (unlinked, or renamed away): nothing to read.
pub(super) async fn judge_unlink(
    shared: &Arc<Shared>,
    container: &ContainerInfo,
    located: &Located,
    concern: Concern,
) -> Outcome {
    let Concern::Sensitive { critical } = concern else {
        return Outcome::Quiet;
    };
    let image = match verified_image(shared, container).await {
        Ok(i) => i,
        Err(reason) => return Outcome::Unjudged(reason),
    };
    let expected = match image.record(&located.path) {
        crate::verify::verdict::ImageRecord::File { sha256, layer } => Some((sha256, layer)),
        _ => None,
    };
    Outcome::Alert {
        finding: Finding::SensitiveWrite {
            critical,
            actual: None,
            expected,
        },
        note: None,
        manifest: image.manifest.clone(),
    }
}

pub(super) async fn judge_mapping(
    shared: &Arc<Shared>,
    event: &FileEvent,
    container: &ContainerInfo,
    located: &Located,
) -> Outcome {
    let (dir, rel, limit) = (
        located.layer_dir.clone(),
        located.path.clone(),
        shared.max_file_bytes,
    );
    let content = match blocking(shared, move || {
        inspect::content(inspect::open_in_layer(&dir, &rel)?, limit, true)
    })
    .await
    {
        Ok(c) => c,
        Err(e) => return Outcome::Unjudged(format!("{}: {e}", located.host.display())),
    };
    if !content.elf {
        return Outcome::Clean;
    }
    let Some(actual) = content.digest else {
        return Outcome::Unjudged(format!(
            "{}: {} bytes, over verify.max_file_bytes",
            located.host.display(),
            content.size
        ));
    };
    let image = match verified_image(shared, container).await {
        Ok(i) => i,
        Err(reason) => return Outcome::Unjudged(reason),
    };
    match judge::judge_map(&image.record(&located.path), located.layer, actual, true) {
        MapVerdict::Clean => Outcome::Clean,
        MapVerdict::Alert(finding) => {
            let tgid = event.process.tgid;
            let note = match inspect::mapping_of(tgid, event.file.ino) {
                // Read as data (a checksum, a copy): not code that runs.
                Some(m) if !m.exec && m.file.is_some() => return Outcome::Quiet,
                Some(_) => None,
                None => Some(format!(
                    "process {tgid} exited before its mappings could be read"
                )),
            };
            Outcome::Alert {
                finding,
                note,
                manifest: image.manifest.clone(),
            }
        }
    }
}

pub(super) async fn judge_fileless(shared: &Arc<Shared>, event: &FileEvent) -> Outcome {
    let (tgid, ino, limit) = (event.process.tgid, event.file.ino, shared.max_file_bytes);
    let found = blocking(shared, move || {
        let Some(mapping) = inspect::mapping_of(tgid, ino) else {
            return Ok(None);
        };
        let content = match &mapping.file {
            Some(f) => Some(inspect::content(std::fs::File::open(f)?, limit, true)?),
            None => None,
        };
        Ok(Some((mapping, content)))
    })
    .await;
    match found {
        Ok(Some((mapping, Some(content)))) if mapping.exec && content.elf => Outcome::Alert {
            finding: Finding::LibraryFileless {
                actual: content.digest,
                memfd: event.memfd,
            },
            note: None,
            manifest: None,
        },
        Ok(Some(_)) => Outcome::Quiet,
        Ok(None) => Outcome::Unjudged(format!(
            "process {tgid} exited before its memfd or deleted mapping could be read"
        )),
        Err(e) => Outcome::Unjudged(format!("mapping of process {tgid}: {e}")),
    }
}
