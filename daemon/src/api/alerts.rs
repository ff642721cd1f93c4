//! `layerguard.v1.AlertService`: Subscribe (the live stream with resume) and List (the
//! journal, newest first, paged).
//!
//! Owns turning a [`Subscription`] into the response stream: a client that stops reading
//! stops only its own stream (its live receiver then overflows and it is moved to journal
//! catch-up), never the pipeline or other subscribers. Streams end when the daemon shuts
//! down, with UNAVAILABLE so that clients reconnect and resume.

use super::filter::AlertFilter;
use super::subscription::{Event, Subscription};
use super::wire::EncodedAlerts;
use crate::alert::journal::{Journal, ScanBack};
use crate::metrics::Metrics;
use bytes::Bytes;
use layerguard_proto::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::debug;

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
/// Records one List call decodes at most; a selective filter over a large journal
/// returns a short page with a token rather than holding a blocking thread for long.
pub const LIST_SCAN_LIMIT: usize = 50_000;

pub struct AlertApi {
    journal: Arc<Journal>,
    metrics: Arc<Metrics>,
    streams: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    encoded: Arc<EncodedAlerts>,
}

impl AlertApi {
    pub fn new(
        journal: Arc<Journal>,
        metrics: Arc<Metrics>,
        max_subscribers: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            encoded: Arc::new(EncodedAlerts::new(journal.live_capacity())),
            journal,
            metrics,
            streams: Arc::new(Semaphore::new(max_subscribers)),
            shutdown,
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// The encoded response for one event; alerts come from the shared cache.
pub fn event_bytes(e: Event, cache: &EncodedAlerts) -> Bytes {
    use pb::subscribe_response::Event as E;
    let event = match e {
        Event::Alert(a) => return cache.get(&a),
        Event::Gap {
            first_seq,
            last_seq,
            reason,
        } => E::Gap(pb::Gap {
            first_seq,
            last_seq,
            missed: last_seq - first_seq + 1,
            reason: reason.as_str().to_string(),
        }),
        Event::Lag {
            missed,
            resume_from_seq,
        } => E::Lag(pb::Lag {
            missed,
            resume_from_seq,
        }),
    };
    super::wire::encode(&pb::SubscribeResponse { event: Some(event) })
}

/// Held by a stream for its lifetime: its subscriber slot and its count in the metrics.
struct StreamSlot {
    metrics: Arc<Metrics>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
    }
}

struct StreamState {
    sub: Subscription,
    shutdown: watch::Receiver<bool>,
    _slot: StreamSlot,
    ended: bool,
    cache: Arc<EncodedAlerts>,
}

/// Metadata of a Subscribe refused for `api.max_subscribers`: the last seq published then.
pub const REFUSED_AT_SEQ: &str = "lg-refused-after-seq";

/// Encoded `SubscribeResponse`s (see [`super::wire`]).
pub type AlertStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send + 'static>>;

impl AlertApi {
    pub async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        let req = request.into_inner();
        let filter = AlertFilter::from_proto(req.filter).map_err(invalid)?;
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            // Where the stream stood when this one was refused: a live-only watcher that
            // retries resumes from here and misses nothing raised meanwhile.
            let next = self.journal.next_seq();
            let mut status = Status::resource_exhausted(format!(
                "too many alert subscribers (api.max_subscribers); retry later, resuming \
                 after seq {} to miss nothing",
                next.saturating_sub(1)
            ));
            if let Ok(v) = next.saturating_sub(1).to_string().parse() {
                status.metadata_mut().insert(REFUSED_AT_SEQ, v);
            }
            status
        })?;
        let sub = Subscription::new(
            self.journal.clone(),
            filter,
            req.resume_after_seq,
            self.metrics.clone(),
        );
        self.metrics.subscribers.inc();
        let state = StreamState {
            sub,
            shutdown: self.shutdown.clone(),
            _slot: StreamSlot {
                metrics: self.metrics.clone(),
                _permit: permit,
            },
            ended: false,
            cache: self.encoded.clone(),
        };
        // The server polls this stream directly (no task, no queue in between): while
        // alerts are ready it encodes many per write, and when the client stops reading,
        // HTTP/2 flow control stops the polling, so the subscription's live receiver
        // overflows and it switches to catching up from the journal.
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            if st.ended {
                return None;
            }
            let event = tokio::select! {
                biased;
                _ = st.shutdown.wait_for(|s| *s) => None,
                e = st.sub.next() => e,
            };
            match event {
                Some(e) => {
                    let bytes = event_bytes(e, &st.cache);
                    Some((Ok(bytes), st))
                }
                None => {
                    st.ended = true;
                    debug!(
                        position = st.sub.position(),
                        "alert stream ended by shutdown"
                    );
                    Some((
                        Err(Status::unavailable(
                            "layerguard is shutting down; resume after the last seq received",
                        )),
                        st,
                    ))
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    pub async fn list(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let req = request.into_inner();
        let filter = AlertFilter::from_proto(req.filter).map_err(invalid)?;
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let before = if req.page_token.is_empty() {
            u64::MAX
        } else {
            req.page_token.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "page_token {:?} is not one this server issued",
                    req.page_token
                ))
            })?
        };
        let journal = self.journal.clone();
        let (alerts, scan) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let scan = journal.scan_back(before, LIST_SCAN_LIMIT, |a| {
                if filter.matches(&a) {
                    out.push(pb::Alert::from(&a));
                }
                out.len() < page_size
            });
            (out, scan)
        })
        .await
        .map_err(|e| Status::internal(format!("listing alerts: {e}")))?;
        let stats = self.journal.stats();
        Ok(Response::new(pb::ListAlertsResponse {
            alerts,
            next_page_token: match scan {
                ScanBack::More { before } if before > stats.first_seq => before.to_string(),
                _ => String::new(),
            },
            first_seq: stats.first_seq,
            last_seq: stats.last_seq,
        }))
    }
}
