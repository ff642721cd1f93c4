//! Webhook delivery: every journaled alert at or above a webhook's `min_severity` is POSTed
//! to it, one JSON object per request (Falco's output format, or the alert's own), in seq
//! order, at least once.
//!
//! Owns the delivery loop of each `[[alerts.webhook]]`: its cursor (the next seq to post,
//! in `<state_dir>/webhooks/<name>.cursor`, so a restart resumes where delivery stood),
//! retries with backoff, and its figures ([`WebhookStatus`], read by status and metrics).
//! Delivery reads the journal, never the pipeline: a slow or dead receiver holds up only
//! its own cursor. A receiver that answers 4xx (other than 408 and 429) refused the body
//! itself: retrying would block every later alert, so the alert is counted as rejected,
//! logged with the receiver's answer, and skipped.

use crate::alert::journal::{Entry, Journal, JournalReader};
use crate::alert::{falco, Alert, AlertFormat};
use crate::config::WebhookConfig;
pub use crate::metrics::WebhookStatus;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The format of `<state_dir>/webhooks/` (one `<name>.cursor` per webhook, the next seq as
/// decimal text), recorded in `<state_dir>/FORMAT` by `statedir`.
pub const STORE_FORMAT: u32 = 1;
/// Alerts read from the journal at once.
const BATCH: usize = 64;
/// First retry after a failed POST; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long an idle loop sleeps when no new alert woke it.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// A file name for a webhook's cursor: its URL with everything but letters and digits
/// made `_`, and a short hash so two URLs never share one.
fn cursor_name(url: &str) -> String {
    use sha2::Digest as _;
    let safe: String = url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(64)
        .collect();
    let hash = sha2::Sha256::digest(url.as_bytes());
    format!(
        "{safe}-{:02x}{:02x}{:02x}{:02x}.cursor",
        hash[0], hash[1], hash[2], hash[3]
    )
}

fn read_cursor(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim().parse() {
        Ok(seq) => Some(seq),
        Err(_) => {
            warn!(path = %path.display(), "webhook cursor unreadable; delivery starts at this run's first alert");
            None
        }
    }
}

/// Writes the cursor atomically (temporary file, rename): a crash leaves the old or the new
/// value, and at worst re-posts what came after the old one.
fn write_cursor(path: &Path, seq: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("cursor.tmp");
    std::fs::write(&tmp, format!("{seq}\n"))?;
    std::fs::rename(&tmp, path)
}

/// `Name: value` lines of a headers file; refused when group or others may read it.
fn read_headers(path: &Path) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("{} line {}: not `Name: value`", path.display(), n + 1))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        out.push((name, value));
    }
    Ok(out)
}

/// The body posted for `alert`.
pub fn body(alert: &Alert, format: AlertFormat) -> Vec<u8> {
    let value = match format {
        AlertFormat::Falco => falco::to_falco(alert),
        AlertFormat::Layerguard => serde_json::to_value(alert).unwrap_or_default(),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// How one POST went.
enum Posted {
    Accepted,
    /// The receiver refused this body (4xx): skip it.
    Rejected(String),
    /// Try again later.
    Failed(String),
}

/// One webhook's HTTP/1.1 connection, kept alive between POSTs and made again after a
/// failure.
struct Client {
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", self.host, self.port))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {}:{}: {e}", self.host, self.port))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn post(&mut self, body: Vec<u8>) -> Posted {
        match tokio::time::timeout(self.timeout, self.try_post(body)).await {
            Ok(p) => p,
            Err(_) => {
                self.sender = None;
                Posted::Failed(format!("no answer within {} ms", self.timeout.as_millis()))
            }
        }
    }

    async fn try_post(&mut self, body: Vec<u8>) -> Posted {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => match self.connect().await {
                Ok(s) => s,
                Err(e) => return Posted::Failed(e),
            },
        };
        if sender.ready().await.is_err() {
            match self.connect().await {
                Ok(s) => sender = s,
                Err(e) => return Posted::Failed(e),
            }
        }
        let mut request = http::Request::post(self.path.as_str())
            .header(http::header::HOST, format!("{}:{}", self.host, self.port))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("layerguard/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Posted::Rejected(format!("cannot build the request: {e}")),
        };
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => return Posted::Failed(format!("POST: {e}")),
        };
        let status = response.status();
        // Read the answer whole (bounded) so the connection can carry the next POST.
        let answer = match http_body_util::Limited::new(response.into_body(), 4096)
            .collect()
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
            Err(_) => String::new(),
        };
        self.sender = Some(sender);
        if status.is_success() {
            Posted::Accepted
        } else if matches!(status.as_u16(), 400 | 413 | 415 | 422) {
            // The receiver refuses this body; 401, 403, 404 (a rotated token, a wrong path)
            // are the receiver's or the config's problem: retried, not skipped.
            Posted::Rejected(format!("HTTP {status}: {answer}"))
        } else {
            Posted::Failed(format!("HTTP {status}: {answer}"))
        }
    }
}

/// One webhook's delivery task.
pub struct Webhook {
    config: WebhookConfig,
    journal: Arc<Journal>,
    cursor: PathBuf,
    status: Arc<WebhookStatus>,
    client: Client,
}

impl Webhook {
    /// Ready to deliver from the cursor in `state_dir`, or from `first_seq` (this run's
    /// first alert) for a webhook that has none. A bad headers file is an error: posting
    /// without the Authorization the operator configured would only be refused.
    pub fn new(
        config: &WebhookConfig,
        journal: Arc<Journal>,
        state_dir: &Path,
        first_seq: u64,
    ) -> Result<Self, String> {
        let (host, port, path) = config.target()?;
        let headers = match &config.headers_file {
            Some(p) => read_headers(p).map_err(|e| format!("webhook {}: {e}", config.url))?,
            None => Vec::new(),
        };
        let dir = state_dir.join("webhooks");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cursor = dir.join(cursor_name(&config.url));
        let start = match read_cursor(&cursor) {
            Some(seq) => seq,
            None if cursor.exists() => 1, // unreadable: from the oldest kept, duplicates over loss
            None => {
                // A new webhook starts at this run's first alert, and says so on disk at
                // once: a crash before its first delivery must not skip what came since.
                write_cursor(&cursor, first_seq)
                    .map_err(|e| format!("cannot write {}: {e}", cursor.display()))?;
                first_seq
            }
        }
        .max(1);
        let status = Arc::new(WebhookStatus {
            url: config.url.clone(),
            next_seq: AtomicU64::new(start),
            ..WebhookStatus::default()
        });
        Ok(Self {
            client: Client {
                host,
                port,
                path,
                timeout: config.timeout(),
                headers,
                sender: None,
            },
            config: config.clone(),
            journal,
            cursor,
            status,
        })
    }

    /// Its figures.
    pub fn status(&self) -> Arc<WebhookStatus> {
        self.status.clone()
    }

    fn save(&self, seq: u64) {
        if let Err(e) = write_cursor(&self.cursor, seq) {
            error!(path = %self.cursor.display(), error = %e, "cannot save the webhook cursor");
        }
    }

    /// Delivers until `shutdown` (then saves the cursor). Alerts published before the stop
    /// and not yet delivered are delivered after the next start.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut reader = JournalReader::new(self.status.next_seq.load(Ordering::Relaxed));
        let (mut live, _) = self.journal.subscribe();
        let mut saved = reader.next_seq();
        info!(url = %self.config.url, from_seq = reader.next_seq(), "webhook delivery started");
        'deliver: loop {
            if *shutdown.borrow() {
                break;
            }
            let journal = self.journal.clone();
            let until = journal.next_seq();
            let mut r = std::mem::replace(&mut reader, JournalReader::new(1));
            let (batch, r) = match tokio::task::spawn_blocking(move || {
                let batch = journal.read_until(&mut r, BATCH, until);
                (batch, r)
            })
            .await
            {
                Ok(x) => x,
                Err(e) => {
                    error!(error = %e, "webhook: reading the journal failed");
                    break;
                }
            };
            reader = r;
            if batch.is_empty() {
                if saved != reader.next_seq() {
                    saved = reader.next_seq();
                    self.save(saved);
                }
                tokio::select! {
                    _ = live.recv() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            for entry in batch {
                let alert = match entry {
                    Entry::Gap {
                        first_seq,
                        last_seq,
                        reason,
                    } => {
                        let n = last_seq - first_seq + 1;
                        self.status.lost.fetch_add(n, Ordering::Relaxed);
                        warn!(url = %self.config.url, first_seq, last_seq, reason = reason.as_str(),
                            "webhook: alerts no longer in the journal were not delivered");
                        self.status.next_seq.store(last_seq + 1, Ordering::Relaxed);
                        continue;
                    }
                    Entry::Alert(a) => a,
                };
                if alert.severity < self.config.min_severity {
                    self.status.filtered.fetch_add(1, Ordering::Relaxed);
                } else if !self.deliver(&alert, &mut shutdown).await {
                    // Stopped while retrying: this alert goes first after the restart.
                    self.save(alert.seq);
                    break 'deliver;
                }
                self.status.next_seq.store(alert.seq + 1, Ordering::Relaxed);
                // After every delivered alert (a small write and a rename): a crash then
                // re-posts at most the one alert in flight.
                if alert.severity >= self.config.min_severity {
                    saved = alert.seq + 1;
                    self.save(saved);
                }
            }
        }
        let next = self.status.next_seq.load(Ordering::Relaxed);
        self.save(next);
        info!(url = %self.config.url, next_seq = next, "webhook delivery stopped");
    }

    /// Posts `alert` until the receiver takes or refuses it; false when stopped first.
    async fn deliver(&mut self, alert: &Alert, shutdown: &mut watch::Receiver<bool>) -> bool {
        let body = body(alert, self.config.format);
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            let posted = tokio::select! {
                p = self.client.post(body.clone()) => p,
                // A receiver that never answers must not hold up the daemon's stop.
                _ = shutdown.changed() => return false,
            };
            match posted {
                Posted::Accepted => {
                    self.status.delivered.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        info!(url = %self.config.url, seq = alert.seq, "webhook receiver accepts alerts again");
                    }
                    return true;
                }
                Posted::Rejected(why) => {
                    self.status.rejected.fetch_add(1, Ordering::Relaxed);
                    error!(url = %self.config.url, seq = alert.seq, answer = %why,
                        "webhook receiver refused the alert; it is skipped for this receiver");
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("seq {} refused: {why}", alert.seq));
                    return true;
                }
                Posted::Failed(why) => {
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        warn!(url = %self.config.url, seq = alert.seq, error = %why,
                            "webhook delivery failing; retrying with backoff (nothing is dropped)");
                        failing = true;
                    }
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(why);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return false,
                    }
                    if *shutdown.borrow() {
                        return false;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_names_are_safe_and_distinct() {
        let a = cursor_name("http://127.0.0.1:2801/");
        let b = cursor_name("http://127.0.0.1:2802/");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)),
            "{a}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(&a);
        assert_eq!(read_cursor(&path), None);
        write_cursor(&path, 42).unwrap();
        assert_eq!(read_cursor(&path), Some(42));
    }

    #[test]
    fn header_files_are_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        std::fs::write(&path, "# token\nAuthorization: Bearer abc\n\nX-Team: sec\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_headers(&path).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let h = read_headers(&path).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0, http::header::AUTHORIZATION);
        std::fs::write(&path, "no colon here\n").unwrap();
        assert!(read_headers(&path).unwrap_err().contains("line 1"));
    }
}
