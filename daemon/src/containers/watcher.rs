//! The containerd side of the stage: connects over the API socket, lists every namespace's
//! containers and tasks, follows the event stream, and turns all of it into [`Update`]s.
//!
//! Owns the connection and its life: reconnect with capped exponential backoff, one log
//! line per state change ("containerd connected" / "containerd unavailable"), and a full
//! resync after every (re)connect. It must not decide anything about sensor events; it
//! only reports what containerd says, plus the mount namespace of each task's init
//! process, read here because that process may be gone a moment later.

use super::events::{decode, system_time, Change};
use super::resolver::Update;
use super::table::{Listed, ListedTask};
use crate::clock;
use crate::containerd::{request, Connection, Containerd, ContainerdError};
use crate::identity::{ContainerInfo, ContainerKey};
use crate::image::digest::Digest;
use crate::image::oci::{self, Descriptor, MediaKind, OciError, Platform};
use crate::procfs;
use containerd_client::services::v1::{
    Container, GetContainerRequest, GetImageRequest, ListContainersRequest, ListNamespacesRequest,
    ListTasksRequest, ReadContentRequest, SubscribeRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use containerd_client::types::Envelope;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info, warn};

/// Image reference -> (manifest digest, index digest), within one namespace's listing.
type ImageDigests = HashMap<String, (Option<String>, Option<String>)>;

/// Why a session with containerd ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error("containerd closed the event stream")]
    StreamEnded,
    #[error("image index {digest} is larger than {limit} bytes")]
    IndexTooLarge { digest: String, limit: u64 },
    #[error(transparent)]
    Index(#[from] OciError),
    #[error("image index {digest}: {problem}")]
    BadIndex { digest: String, problem: String },
    #[error("the containers stage stopped")]
    StageGone,
}

impl WatchError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::Containerd(e) if e.is_not_found())
    }

    /// True when the connection (not the one request) is the problem: the session must
    /// end and reconnect rather than carry on with a partial answer.
    fn is_connection_loss(&self) -> bool {
        match self {
            Self::Containerd(e) => e.is_connection_loss(),
            Self::StreamEnded | Self::StageGone => true,
            Self::IndexTooLarge { .. } | Self::Index(_) | Self::BadIndex { .. } => false,
        }
    }
}

/// Capped exponential backoff: min, 2*min, 4*min, ... max, max, ...
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Not tried yet: the first outcome is logged either way.
    Unknown,
    Up,
    Down,
}

pub struct Watcher {
    pub containerd: Containerd,
    pub backoff: Backoff,
    pub platform: Platform,
    pub updates: mpsc::Sender<Update>,
    /// Rung by the stage when an event waits on an unknown container while containerd is
    /// down: retry now rather than at the end of the backoff.
    pub poke: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
}

/// The error and its sources in one line: tonic's own message for a refused or missing
/// socket is just "transport error", the reason is further down the chain.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

impl Watcher {
    /// Runs until shutdown or until the stage is gone. Never fails: containerd being
    /// absent is a state, not an error.
    pub async fn run(mut self) {
        let mut link = Link::Unknown;
        loop {
            let err = match self.session(&mut link).await {
                Ok(()) | Err(WatchError::StageGone) => return,
                Err(e) => e,
            };
            if self.stopping() {
                return;
            }
            if link == Link::Down {
                debug!(error = %causes(&err), "containerd still unavailable");
            } else {
                warn!(
                    socket = %self.containerd.socket().display(),
                    error = %causes(&err),
                    "containerd unavailable"
                );
                link = Link::Down;
                if self.updates.send(Update::Disconnected).await.is_err() {
                    return;
                }
            }
            let delay = self.backoff.next_delay();
            // The first `min` is always waited, so that a stream of pokes cannot turn the
            // backoff into a busy loop; a poke only cuts the rest short.
            let floor = delay.min(self.backoff.min);
            tokio::select! {
                _ = tokio::time::sleep(floor) => {}
                _ = self.shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(delay - floor) => {}
                _ = self.poke.notified() => debug!("retrying containerd early: events are waiting"),
                _ = self.shutdown.changed() => return,
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn send(&self, update: Update) -> Result<(), WatchError> {
        self.updates
            .send(update)
            .await
            .map_err(|_| WatchError::StageGone)
    }

    /// One connection: subscribe, list, follow. Returns Ok only at shutdown.
    async fn session(&mut self, link: &mut Link) -> Result<(), WatchError> {
        let conn = self.containerd.connect().await?;
        // Subscribe before listing: whatever happens while we list is then in the stream,
        // so nothing falls between the two. No filter and no namespace: all namespaces,
        // including ones created later; each envelope names its namespace.
        //
        // containerd sends the response headers only with the first event, so the call
        // cannot be awaited (nor timed out) before listing. Polling it first (`biased`)
        // puts the request on the connection ahead of the list calls.
        let mut events_client = conn.client().events();
        let subscribe = events_client.subscribe(SubscribeRequest::default());
        tokio::pin!(subscribe);
        let mut subscribed = None;
        let listing = {
            let list = self.list_all(&conn);
            tokio::pin!(list);
            loop {
                tokio::select! {
                    biased;
                    r = &mut subscribe, if subscribed.is_none() => subscribed = Some(r),
                    listing = &mut list => break listing?,
                }
            }
        };
        let containers = listing.len();
        self.send(Update::Resync(listing)).await?;
        self.send(Update::Connected).await?;
        if *link != Link::Up {
            info!(
                socket = %self.containerd.socket().display(),
                containers,
                "containerd connected"
            );
        }
        *link = Link::Up;
        self.backoff.reset();
        let subscribed = match subscribed {
            Some(r) => r,
            None => tokio::select! {
                _ = self.shutdown.changed() => return Ok(()),
                r = &mut subscribe => r,
            },
        };
        let mut events = subscribed
            .map_err(|status| ContainerdError::from_status("Events.Subscribe", status))?
            .into_inner();
        loop {
            let envelope = tokio::select! {
                _ = self.shutdown.changed() => return Ok(()),
                msg = events.message() => match msg {
                    Ok(Some(envelope)) => envelope,
                    Ok(None) => return Err(WatchError::StreamEnded),
                    Err(status) => {
                        return Err(ContainerdError::from_status("Events.Subscribe", status).into())
                    }
                },
            };
            self.handle(&conn, envelope).await?;
        }
    }

    async fn handle(&self, conn: &Connection, envelope: Envelope) -> Result<(), WatchError> {
        let Some(payload) = envelope.event else {
            return Ok(());
        };
        let change = match decode(&envelope.topic, &payload.value) {
            Ok(Some(change)) => change,
            Ok(None) => return Ok(()),
            Err(e) => {
                warn!(topic = %envelope.topic, error = %e, "undecodable containerd event");
                return Ok(());
            }
        };
        let ns = envelope.namespace;
        let key = |id: String| ContainerKey::new(ns.clone(), id);
        match change {
            Change::Container(id) => {
                if let Some(info) = self.get_container(conn, &ns, &id).await? {
                    self.send(Update::Container(info)).await?;
                }
            }
            Change::ContainerDeleted(id) => self.send(Update::Deleted(key(id))).await?,
            Change::TaskStarted { container_id, pid } => {
                // Read now: a short-lived init is gone soon, and the sensor's first events
                // from this container may already be waiting for exactly this.
                let mnt_ns = procfs::mnt_ns_of(pid).ok();
                debug!(
                    namespace = %ns,
                    container = %container_id,
                    pid,
                    mnt_ns,
                    topic = %envelope.topic,
                    "task started"
                );
                self.send(Update::TaskStarted {
                    key: key(container_id),
                    pid,
                    mnt_ns,
                    started_at: system_time(envelope.timestamp),
                })
                .await?
            }
            Change::TaskExited {
                container_id,
                pid,
                exited_at,
            } => {
                // On the sensor's clock, so that the table can tell this container's late
                // events from those of the next one that gets its namespace number.
                let exited = exited_at.map_or_else(clock::now, clock::from_wall);
                self.send(Update::TaskExited {
                    key: key(container_id),
                    pid,
                    exited,
                })
                .await?
            }
            Change::NamespaceCreated(name) => {
                debug!(namespace = %name, "containerd namespace created");
                for listed in self.list_namespace(conn, &name).await? {
                    let key = listed.info.key();
                    self.send(Update::Container(listed.info)).await?;
                    if let Some(t) = listed.task {
                        self.send(Update::TaskStarted {
                            key,
                            pid: t.pid,
                            mnt_ns: t.mnt_ns,
                            started_at: t.started_at,
                        })
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn list_all(&self, conn: &Connection) -> Result<Vec<Listed>, WatchError> {
        let namespaces = conn
            .call(
                "Namespaces.List",
                conn.client()
                    .namespaces()
                    .list(ListNamespacesRequest::default()),
            )
            .await?
            .namespaces;
        let mut all = Vec::new();
        for ns in namespaces {
            all.extend(self.list_namespace(conn, &ns.name).await?);
        }
        Ok(all)
    }

    async fn list_namespace(&self, conn: &Connection, ns: &str) -> Result<Vec<Listed>, WatchError> {
        let containers = conn
            .call(
                "Containers.List",
                conn.client()
                    .containers()
                    .list(request(ListContainersRequest::default(), ns)?),
            )
            .await?
            .containers;
        let tasks = conn
            .call(
                "Tasks.List",
                conn.client()
                    .tasks()
                    .list(request(ListTasksRequest::default(), ns)?),
            )
            .await?
            .tasks;
        // containerd 1.6 leaves `container_id` empty in Tasks.List; the id is in `id`.
        let live: HashMap<String, u32> = tasks
            .into_iter()
            .filter(|p| {
                p.pid != 0
                    && matches!(
                        TaskStatus::try_from(p.status),
                        Ok(TaskStatus::Created
                            | TaskStatus::Running
                            | TaskStatus::Paused
                            | TaskStatus::Pausing)
                    )
            })
            .map(|p| {
                let id = if p.container_id.is_empty() {
                    p.id
                } else {
                    p.container_id
                };
                (id, p.pid)
            })
            .collect();
        let mut listed = Vec::with_capacity(containers.len());
        let mut images = ImageDigests::new();
        for c in containers {
            let task = live.get(&c.id).map(|&pid| ListedTask {
                pid,
                mnt_ns: procfs::mnt_ns_of(pid).ok(),
                started_at: procfs::start_time(pid),
            });
            let info = self.container_info(conn, ns, c, &mut images).await?;
            listed.push(Listed { info, task });
        }
        Ok(listed)
    }

    async fn get_container(
        &self,
        conn: &Connection,
        ns: &str,
        id: &str,
    ) -> Result<Option<ContainerInfo>, WatchError> {
        let got = conn
            .call(
                "Containers.Get",
                conn.client()
                    .containers()
                    .get(request(GetContainerRequest { id: id.to_string() }, ns)?),
            )
            .await;
        match got {
            Ok(resp) => match resp.container {
                Some(c) => Ok(Some(
                    self.container_info(conn, ns, c, &mut ImageDigests::new())
                        .await?,
                )),
                None => Ok(None),
            },
            // Deleted again before we asked: its delete event follows.
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The container's identity with its image's digests. A missing or unreadable image
    /// leaves the digests empty rather than failing: attribution by namespace and id is
    /// still right. Only a lost connection is passed up.
    ///
    /// `images` remembers digests per image reference within one listing, where many
    /// containers usually share few images; single events pass a fresh one, so a retagged
    /// image is seen as it is now.
    async fn container_info(
        &self,
        conn: &Connection,
        ns: &str,
        c: Container,
        images: &mut ImageDigests,
    ) -> Result<ContainerInfo, WatchError> {
        let image = (!c.image.is_empty()).then(|| c.image.clone());
        let mut info = ContainerInfo::new(
            ns,
            c.id,
            image,
            c.labels.into_iter().collect(),
            system_time(c.created_at),
        );
        if let Some(image) = info.image.clone() {
            if let Some((manifest, index)) = images.get(&image) {
                info.manifest_digest = manifest.clone();
                info.index_digest = index.clone();
                return Ok(info);
            }
            match self.image_digests(conn, ns, &image).await {
                Ok((manifest, index)) => {
                    info.manifest_digest = manifest.clone();
                    info.index_digest = index.clone();
                    images.insert(image, (manifest, index));
                }
                Err(e) if e.is_connection_loss() => return Err(e),
                Err(e) if e.is_not_found() => {
                    debug!(namespace = ns, image = %image, "image of container not found")
                }
                Err(e) => warn!(
                    namespace = ns,
                    container = %info.id,
                    image = %image,
                    error = %e,
                    "cannot resolve the image's manifest digest"
                ),
            }
        }
        Ok(info)
    }

    /// (manifest digest, index digest) of an image reference.
    async fn image_digests(
        &self,
        conn: &Connection,
        ns: &str,
        image: &str,
    ) -> Result<(Option<String>, Option<String>), WatchError> {
        let target = conn
            .call(
                "Images.Get",
                conn.client().images().get(request(
                    GetImageRequest {
                        name: image.to_string(),
                    },
                    ns,
                )?),
            )
            .await?
            .image
            .and_then(|i| i.target);
        let Some(target) = target else {
            return Ok((None, None));
        };
        if MediaKind::of(&target.media_type) != MediaKind::Index {
            return Ok((Some(target.digest), None));
        }
        let blob = self.read_blob(conn, ns, &target.digest).await?;
        let manifest = pick_manifest(&target.media_type, &target.digest, &blob, &self.platform)?;
        Ok((Some(manifest), Some(target.digest)))
    }

    async fn read_blob(
        &self,
        conn: &Connection,
        ns: &str,
        digest: &str,
    ) -> Result<Vec<u8>, WatchError> {
        // Index blobs are a few KiB; the watcher must not be made to buffer an arbitrary one.
        let limit = oci::MAX_METADATA_BLOB_BYTES;
        let mut stream = conn
            .call(
                "Content.Read",
                conn.client().content().read(request(
                    ReadContentRequest {
                        digest: digest.to_string(),
                        offset: 0,
                        size: 0,
                    },
                    ns,
                )?),
            )
            .await?;
        let mut data = Vec::new();
        while let Some(chunk) = conn.next("Content.Read", &mut stream).await? {
            if (data.len() + chunk.data.len()) as u64 > limit {
                return Err(WatchError::IndexTooLarge {
                    digest: digest.to_string(),
                    limit,
                });
            }
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }
}

/// The manifest for `platform` in the index blob `blob` that `digest` names, chosen the way
/// the image index library chooses it (so verification indexes the same manifest the
/// container is attributed to). The blob is checked against its digest first.
pub fn pick_manifest(
    media_type: &str,
    digest: &str,
    blob: &[u8],
    platform: &Platform,
) -> Result<String, WatchError> {
    let bad = |problem: String| WatchError::BadIndex {
        digest: digest.to_string(),
        problem,
    };
    let named = Digest::parse(digest).map_err(|e| bad(e.to_string()))?;
    let actual = Digest::of(blob);
    if actual != named {
        return Err(bad(format!("content has digest {actual}")));
    }
    let desc = Descriptor {
        media_type: media_type.to_string(),
        digest: named,
        size: blob.len() as u64,
        platform: None,
    };
    let index = oci::parse_index(blob, &desc)?;
    oci::select_manifest(&index, platform)
        .map(|d| d.digest.to_string())
        .ok_or_else(|| {
            bad(format!(
                "no manifest for {}/{}",
                platform.os, platform.architecture
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(blob: &str) -> String {
        Digest::of(blob.as_bytes()).to_string()
    }

    /// An index with arm64, amd64 and an attestation entry; digests are well-formed.
    fn index() -> String {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        format!(
            r#"{{"schemaVersion": 2, "mediaType": "{}", "manifests": [
              {{"mediaType": "{m}", "digest": "{}", "size": 1,
                "platform": {{"os": "linux", "architecture": "arm64", "variant": "v8"}}}},
              {{"mediaType": "{m}", "digest": "{}", "size": 1,
                "platform": {{"os": "linux", "architecture": "amd64"}}}},
              {{"mediaType": "{m}", "digest": "{}", "size": 1,
                "platform": {{"os": "unknown", "architecture": "unknown"}},
                "annotations": {{"vnd.docker.reference.type": "attestation-manifest"}}}}]}}"#,
            oci::OCI_INDEX,
            d('a'),
            d('b'),
            d('c'),
            m = oci::OCI_MANIFEST
        )
    }

    fn platform(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn the_index_pick_is_the_image_librarys_and_checks_the_digest() {
        let blob = index();
        let pick =
            |p: &Platform| pick_manifest(oci::OCI_INDEX, &digest_of(&blob), blob.as_bytes(), p);
        assert_eq!(
            pick(&platform("amd64", None)).unwrap(),
            format!("sha256:{}", "b".repeat(64))
        );
        assert_eq!(
            pick(&platform("arm64", Some("v8"))).unwrap(),
            format!("sha256:{}", "a".repeat(64))
        );
        let err = pick(&platform("s390x", None)).unwrap_err().to_string();
        assert!(err.contains("no manifest for linux/s390x"), "{err}");
        // Content that is not what its digest names is not parsed at all.
        let other = digest_of("something else");
        let err = pick_manifest(
            oci::OCI_INDEX,
            &other,
            blob.as_bytes(),
            &platform("amd64", None),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("content has digest"), "{err}");
        let err = pick_manifest(
            oci::OCI_INDEX,
            &digest_of("{"),
            b"{",
            &platform("amd64", None),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("malformed JSON"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let seq: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(seq, vec![100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn error_lines_carry_the_cause() {
        let err = WatchError::Containerd(ContainerdError::Call {
            call: "Tasks.List",
            code: containerd_client::tonic::Code::Unavailable,
            message: "no such socket".into(),
        });
        let line = causes(&err);
        assert!(line.starts_with("containerd Tasks.List failed"), "{line}");
        assert!(line.contains("no such socket"), "{line}");
        assert!(err.is_connection_loss());
    }
}
