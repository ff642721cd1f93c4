//! The trust stage: checks, offline, that the image each container runs is signed by a key
//! the operator trusts (cosign formats), and reports once per container, at its first
//! exec, when a `[[trust.policy]]` requires a signature that does not verify.
//!
//! Owns the trust set (keys, policies; replaced whole by a reload, see [`TrustHandle`]),
//! the verdict cache per image (judged again when the trust set changes, when a key's
//! validity ends, and after `trust.recheck_seconds` for verdicts other than `signed`), and
//! which containers were judged. Parsing is [`formats`] and [`rekor`], finding signatures
//! [`sources`], the decision [`judge`] (pure), alert drafts [`draft`]. It must not block the
//! pipeline thread: judging an image runs as a task, a few at a time.

mod draft;
pub mod formats;
pub mod judge;
pub mod keys;
pub mod policy;
pub mod rekor;
pub mod sources;

use crate::alert::AlertDraft;
use crate::config::TrustConfig;
use crate::containerd::Containerd;
use crate::identity::{Attribution, ContainerInfo, ContainerKey};
use crate::image::digest::Digest;
use crate::image::ContainerdStore;
use crate::metrics::{ContainerSignature, Metrics};
use crate::process::{Batch, Tracked};
use crate::sensor::{Observation, ProcessEvent};
use judge::{Judgement, SignatureState};
use keys::{KeyError, TrustSet};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, OnceCell, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Containers remembered as judged; past it the oldest is forgotten (and judged again,
/// from the cache, if it execs again: one more alert at worst).
const MAX_JUDGED_CONTAINERS: usize = 65_536;
/// Images whose verdicts are cached.
const MAX_CACHED_IMAGES: usize = 1024;
/// Images judged at once (each reads from containerd and the signature directories).
const CONCURRENT_JUDGEMENTS: usize = 4;
/// One image's judgement may take this long (containerd's own deadlines bound each call;
/// this bounds them all, and a signature directory that blocks): past it, `unverifiable`.
const JUDGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an `unverifiable` verdict is kept before the next exec tries again.
const UNVERIFIABLE_RETRY: Duration = Duration::from_secs(5);

/// What the trust stage did over its life.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TrustStats {
    /// Containers judged, by signature state.
    pub containers: std::collections::BTreeMap<&'static str, u64>,
    pub alerts: u64,
    pub reloads: u64,
}

type CacheKey = (String, String, Vec<Digest>);

struct Cached {
    cell: Arc<OnceCell<Arc<Judgement>>>,
    generation: u64,
    made: Instant,
}

struct Shared {
    trust: RwLock<Arc<TrustSet>>,
    containerd: Containerd,
    metrics: Arc<Metrics>,
    cache: Mutex<(HashMap<CacheKey, Cached>, VecDeque<CacheKey>)>,
    stores: tokio::sync::Mutex<Option<ContainerdStore>>,
    reloads: std::sync::atomic::AtomicU64,
}

/// Reloads the trust set of a running stage (SIGHUP).
#[derive(Clone)]
pub struct TrustHandle(Arc<Shared>);

impl TrustHandle {
    /// Replaces the trust set with one read from `config`, and says what changed. On an
    /// error the old set stays.
    pub fn reload(&self, config: &TrustConfig) -> Result<Vec<String>, KeyError> {
        let old = self
            .0
            .trust
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let new = TrustSet::load(config, old.generation + 1)?;
        let changes = new.changes_from(&old);
        *self.0.trust.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        self.0
            .reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(changes)
    }
}

/// The stage.
pub struct TrustStage {
    shared: Arc<Shared>,
    /// Where judgements run: the main runtime's workers, not the pipeline thread (reading
    /// and hashing signature blobs, parsing, evidence).
    runtime: tokio::runtime::Handle,
    /// Containers judged (or being judged): namespace -> ids, looked up without
    /// allocating, since every container exec asks.
    judged: HashMap<String, HashSet<String>>,
    judged_order: VecDeque<ContainerKey>,
}

impl TrustStage {
    /// Reads the keys of `config`: a key that cannot be read stops the start.
    pub fn new(
        config: &TrustConfig,
        containerd: Containerd,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Result<(Self, TrustHandle), KeyError> {
        let shared = Arc::new(Shared {
            trust: RwLock::new(Arc::new(TrustSet::load(config, 1)?)),
            containerd,
            metrics,
            cache: Mutex::new((HashMap::new(), VecDeque::new())),
            stores: tokio::sync::Mutex::new(None),
            reloads: Default::default(),
        });
        let handle = TrustHandle(shared.clone());
        Ok((
            Self {
                shared,
                runtime,
                judged: HashMap::new(),
                judged_order: VecDeque::new(),
            },
            handle,
        ))
    }

    /// True the first time `container` is seen (then remembered, within the bound).
    fn remember(&mut self, container: &ContainerInfo) -> bool {
        if self
            .judged
            .get(&container.namespace)
            .is_some_and(|ids| ids.contains(&container.id))
        {
            return false;
        }
        self.judged
            .entry(container.namespace.clone())
            .or_default()
            .insert(container.id.clone());
        self.judged_order.push_back(container.key());
        if self.judged_order.len() > MAX_JUDGED_CONTAINERS {
            if let Some(old) = self.judged_order.pop_front() {
                self.forget(&old);
            }
        }
        true
    }

    /// Judged again at its next exec.
    fn forget(&mut self, key: &ContainerKey) {
        if let Some(ids) = self.judged.get_mut(&key.namespace) {
            ids.remove(&key.id);
            if ids.is_empty() {
                self.judged.remove(&key.namespace);
            }
        }
    }

    /// Judges the image of every container at its first exec, until `events` closes and
    /// the judgements started have ended.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Batch>,
        alerts: mpsc::Sender<AlertDraft>,
    ) -> TrustStats {
        let limit = Arc::new(Semaphore::new(CONCURRENT_JUDGEMENTS));
        let mut jobs: JoinSet<(ContainerKey, bool, bool)> = JoinSet::new();
        let mut alerted = 0;
        let mut open = true;
        while open || !jobs.is_empty() {
            tokio::select! {
                batch = events.recv(), if open => {
                    let Some(batch) = batch else {
                        open = false;
                        continue;
                    };
                    for event in batch.iter() {
                        let Tracked::Observed {
                            event: Observation::Process(ProcessEvent::Exec(exec)),
                            attribution: Attribution::Container(container),
                            process,
                        } = event else {
                            continue;
                        };
                        if !self.remember(container) {
                            continue;
                        }
                        let shared = self.shared.clone();
                        let alerts = alerts.clone();
                        let limit = limit.clone();
                        let (exec, container, ancestry) = (exec.clone(), container.clone(), process.ancestry.clone());
                        jobs.spawn_on(async move {
                            let _permit = limit.acquire_owned().await;
                            let judgement = shared.judgement_for(&container).await;
                            let key = container.key();
                            shared.metrics.record_signature(&key, ContainerSignature {
                                state: judgement.state.as_str(),
                                key: match &judgement.state {
                                    SignatureState::Signed { key } => Some(key.clone()),
                                    _ => None,
                                },
                            });
                            // Said once per judgement (below), not per exec that waits for it.
                            let retry = judgement.state == SignatureState::Unverifiable;
                            let draft = draft::signature_draft(&judgement, &container, &exec, ancestry);
                            let sent = match draft {
                                Some(d) => alerts.send(d).await.is_ok(),
                                None => false,
                            };
                            (key, retry, sent)
                        }, &self.runtime);
                    }
                }
                Some(done) = jobs.join_next(), if !jobs.is_empty() => match done {
                    Ok((key, retry, sent)) => {
                        if retry {
                            self.forget(&key);
                        }
                        alerted += u64::from(sent);
                    }
                    Err(e) => tracing::error!(error = %e, "image signature judgement failed"),
                },
            }
        }
        TrustStats {
            containers: self.shared.metrics.signature_totals(),
            alerts: alerted,
            reloads: self
                .shared
                .reloads
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The digests signatures of `container`'s image are looked for under: the index the
/// container's manifest was picked from (what `cosign sign` signs), then the manifest.
fn digests_of(container: &ContainerInfo) -> Vec<Digest> {
    [&container.index_digest, &container.manifest_digest]
        .into_iter()
        .flatten()
        .filter_map(|d| Digest::parse(d).ok())
        .collect()
}

impl Shared {
    fn trust(&self) -> Arc<TrustSet> {
        self.trust.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The (cached) verdict for the container's image.
    async fn judgement_for(&self, container: &ContainerInfo) -> Arc<Judgement> {
        let trust = self.trust();
        let Some(reference) = container.image.clone() else {
            return Arc::new(unverifiable(
                &trust,
                "",
                &[],
                "the container has no image reference",
            ));
        };
        if trust.policy_for(&reference).is_none() {
            // Nothing to read: no policy, no signature needed.
            return Arc::new(judge::judge(
                &reference,
                &digests_of(container),
                &[],
                &trust,
                SystemTime::now(),
            ));
        }
        let digests = digests_of(container);
        let key: CacheKey = (
            container.namespace.clone(),
            reference.clone(),
            digests.clone(),
        );
        let cell = {
            let mut guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let (map, order) = &mut *guard;
            let stale = map.get(&key).is_none_or(|c| {
                c.generation != trust.generation || c.cell.get().is_some_and(|j| expired(j, c.made))
            });
            if stale {
                if !map.contains_key(&key) {
                    order.push_back(key.clone());
                    if order.len() > MAX_CACHED_IMAGES {
                        if let Some(old) = order.pop_front() {
                            map.remove(&old);
                        }
                    }
                }
                map.insert(
                    key.clone(),
                    Cached {
                        cell: Arc::new(OnceCell::new()),
                        generation: trust.generation,
                        made: Instant::now(),
                    },
                );
            }
            map[&key].cell.clone()
        };
        cell.get_or_init(|| async {
            let started = Instant::now();
            let j = match tokio::time::timeout(
                JUDGE_TIMEOUT,
                self.judge_image(&container.namespace, &reference, digests.clone(), &trust),
            )
            .await
            {
                Ok(j) => j,
                Err(_) => unverifiable(
                    &trust,
                    &reference,
                    &digests,
                    &format!("judging took longer than {} s", JUDGE_TIMEOUT.as_secs()),
                ),
            };
            let ms = started.elapsed().as_millis() as u64;
            if j.state == SignatureState::Unverifiable {
                warn!(image = %reference, namespace = %container.namespace, reason = %j.reason,
                    "image signature not checked; tried again at the next exec of its containers");
            } else {
                info!(image = %reference, namespace = %container.namespace, state = j.state.as_str(),
                    signatures = j.signatures.len(), ms, reason = %j.reason, "image signature judged");
            }
            Arc::new(j)
        })
        .await
        .clone()
    }

    async fn store(&self, namespace: &str) -> Result<ContainerdStore, String> {
        let mut guard = self.stores.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.in_namespace(namespace));
        }
        let store = ContainerdStore::connect(&self.containerd, namespace)
            .await
            .map_err(|e| e.to_string())?;
        *guard = Some(store.clone());
        Ok(store)
    }

    async fn judge_image(
        &self,
        namespace: &str,
        reference: &str,
        mut digests: Vec<Digest>,
        trust: &Arc<TrustSet>,
    ) -> Judgement {
        let store = match self.store(namespace).await {
            Ok(s) => s,
            Err(e) => return unverifiable(trust, reference, &digests, &format!("containerd: {e}")),
        };
        if digests.is_empty() {
            // The containers stage could not read the image's digests: try once more.
            match store.resolve(reference).await {
                Ok((_, target)) => digests.push(target.digest),
                Err(e) => {
                    return unverifiable(
                        trust,
                        reference,
                        &digests,
                        &format!("the image's digest is unknown: {e}"),
                    )
                }
            }
        }
        match find_signatures(&store, reference, &digests, &trust.signature_dirs).await {
            // Every signature against every key: CPU that must not stall the pipeline.
            Ok(found) => {
                let (owned_reference, owned_digests) = (reference.to_string(), digests.clone());
                // The set this judgement is cached under, not a newer one a reload put in.
                let owned_trust = trust.clone();
                tokio::task::spawn_blocking(move || {
                    judge::judge(
                        &owned_reference,
                        &owned_digests,
                        &found,
                        &owned_trust,
                        SystemTime::now(),
                    )
                })
                .await
                .unwrap_or_else(|e| {
                    unverifiable(trust, reference, &digests, &format!("judging failed: {e}"))
                })
            }
            Err(e) => {
                // The connection may be stale after a containerd restart.
                *self.stores.lock().await = None;
                unverifiable(trust, reference, &digests, &e)
            }
        }
    }
}

fn expired(j: &Judgement, made: Instant) -> bool {
    if j.state == SignatureState::Unverifiable {
        return made.elapsed() > UNVERIFIABLE_RETRY;
    }
    j.valid_until.is_some_and(|t| SystemTime::now() >= t)
}

fn unverifiable(trust: &TrustSet, reference: &str, digests: &[Digest], reason: &str) -> Judgement {
    let policy = trust.policy_for(reference);
    Judgement {
        state: SignatureState::Unverifiable,
        reason: reason.to_string(),
        policy: policy.map(|p| p.index),
        mode: policy.map(|p| p.mode),
        digests: digests.to_vec(),
        signatures: Vec::new(),
        keys_tried: policy.map(|p| p.keys.clone()).unwrap_or_default(),
        valid_until: None,
    }
}

/// Every signature for `digests`, from containerd's namespace of `store` and the
/// directories. An error: the store did not answer.
pub async fn find_signatures(
    store: &ContainerdStore,
    reference: &str,
    digests: &[Digest],
    dirs: &[std::path::PathBuf],
) -> Result<Vec<formats::Found>, String> {
    let unavailable = |e: sources::ReadError| match e {
        sources::ReadError::Unavailable(m) => format!("containerd did not answer: {m}"),
        sources::ReadError::Bad(m) => m,
    };
    let mut found = sources::from_containerd(store, reference, digests)
        .await
        .map_err(unavailable)?;
    // Directories are read with blocking file I/O: on the blocking pool, never on the
    // pipeline thread.
    let (dirs, wanted) = (dirs.to_vec(), digests.to_vec());
    let handle = tokio::runtime::Handle::current();
    let from_dirs =
        tokio::task::spawn_blocking(move || handle.block_on(sources::from_dirs(&dirs, &wanted)))
            .await
            .map_err(|e| format!("reading trust.signature_dirs failed: {e}"))?;
    found.extend(from_dirs.map_err(unavailable)?);
    if found.len() > sources::MAX_FOUND {
        warn!(image = %reference, found = found.len(), judged = sources::MAX_FOUND,
            "more signatures than are judged for one image; the rest are left out");
        found.truncate(sources::MAX_FOUND);
    }
    Ok(found)
}

/// `layerguard image verify`'s signature check: the verdict for `reference` in the store's
/// namespace, with `target` its resolved target and `manifest` the platform manifest the
/// chain check picked (if the target is an index).
pub async fn verify_image(
    store: &ContainerdStore,
    config: &TrustConfig,
    reference: &str,
    target: Digest,
    manifest: Option<Digest>,
) -> Result<Judgement, String> {
    let trust = TrustSet::load(config, 1).map_err(|e| e.to_string())?;
    let mut digests = vec![target];
    digests.extend(manifest.filter(|m| *m != target));
    if trust.policy_for(reference).is_none() {
        return Ok(judge::judge(
            reference,
            &digests,
            &[],
            &trust,
            SystemTime::now(),
        ));
    }
    let found = find_signatures(store, reference, &digests, &trust.signature_dirs).await?;
    Ok(judge::judge(
        reference,
        &digests,
        &found,
        &trust,
        SystemTime::now(),
    ))
}
