//! `layerguard image verify <ref>`: runs the indexer against containerd without the daemon and
//! reports the verdict.
//!
//! Owns: argument parsing, the terminal progress line, the text and JSON summaries, exit codes
//! (0 verified, 1 untrusted or a required signature that does not verify, 2 error), and cache
//! eviction after a run. All verification logic lives in `indexer` (the chain) and the
//! library's `signatures` (the `[trust]` section, read from the daemon's config file).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use layerguard::config::Config;
use layerguard::containerd::{Containerd, Timeouts};
use layerguard::image::{
    ContainerdStore, EntryKind, FileEntry, ImageIndexer, ImageVerdict, IndexReport, IndexerConfig,
    Progress, Untrusted,
};
use layerguard::signatures::{verify_image, Judgement, SignatureState};

pub const EXIT_VERIFIED: u8 = 0;
pub const EXIT_UNTRUSTED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;
/// Images that verify faster than this never show a progress line.
const PROGRESS_DELAY: Duration = Duration::from_millis(500);
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Image name as containerd stores it (docker.io/library/alpine:3.20); short Docker names
    /// are normalized if the name as given is not found.
    pub reference: String,
    /// containerd namespace of the image.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// containerd's gRPC socket [default: the config's containerd_socket, or
    /// /run/containerd/containerd.sock].
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// Where the layer cache lives [default: the config's state_dir, or /var/lib/layerguard].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The daemon's config file: its `[trust]` section decides whether the image must be
    /// signed and by which keys (a missing file at the default path means no policy).
    #[arg(long, default_value = layerguard::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Trust layers already verified into the layer cache instead of re-reading their blobs
    /// (the daemon's fast path). By default every blob is read and verified again.
    #[arg(long)]
    pub cached: bool,
    /// Also print every indexed path (text: `kind mode size sha256 path`; JSON: `entries`).
    #[arg(long)]
    pub list: bool,
}

/// What `image verify` prints, as text or JSON.
#[derive(Debug, Serialize)]
pub struct VerifySummary {
    pub reference: String,
    /// The name the image is stored under (after normalization).
    pub image: Option<String>,
    pub namespace: String,
    pub platform: String,
    pub verdict: &'static str,
    pub target: Option<String>,
    pub manifest: Option<String>,
    pub config: Option<String>,
    pub layers_total: usize,
    pub layers_verified: usize,
    pub layers_from_cache: usize,
    pub files_indexed: usize,
    pub executables_indexed: usize,
    pub entries_indexed: usize,
    pub elapsed_ms: u128,
    /// Why the image is untrusted (with a human `message`).
    pub reason: Option<serde_json::Value>,
    /// Why verification could not finish.
    pub error: Option<String>,
    /// Every indexed path, with `--list` on a verified image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<ListedEntry>>,
    /// The signature verdict against the config's `[trust]` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureSummary>,
}

/// The signature part of the summary.
#[derive(Debug, Serialize)]
pub struct SignatureSummary {
    /// `signed`, `unsigned`, `signature_invalid`, `key_revoked`, `key_expired`,
    /// `not_required`, `unverifiable`.
    pub state: &'static str,
    pub key: Option<String>,
    pub reason: String,
    pub policy: Option<String>,
    pub mode: Option<&'static str>,
    pub keys_tried: Vec<String>,
    pub digests: Vec<String>,
    pub signatures: Vec<serde_json::Value>,
}

impl SignatureSummary {
    fn of(j: &Judgement) -> Self {
        Self {
            state: j.state.as_str(),
            key: match &j.state {
                SignatureState::Signed { key } => Some(key.clone()),
                _ => None,
            },
            reason: j.reason.clone(),
            policy: j.policy.map(|p| format!("trust.policy[{p}]")),
            mode: j.mode.map(|m| m.as_str()),
            keys_tried: j.keys_tried.clone(),
            digests: j.digests.iter().map(|d| d.to_string()).collect(),
            signatures: j
                .signatures
                .iter()
                .map(|s| {
                    serde_json::json!({"source": s.source, "format": s.format, "key": s.key,
                        "result": s.result})
                })
                .collect(),
        }
    }

    /// A policy requires a signature and none verifies (audit mode included: the
    /// command answers "is it signed?").
    fn fails(&self) -> bool {
        !matches!(self.state, "signed" | "not_required" | "unverifiable")
    }
}

/// One line of `--list`.
#[derive(Debug, Serialize)]
pub struct ListedEntry {
    pub path: String,
    #[serde(flatten)]
    pub entry: FileEntry,
}

impl VerifySummary {
    fn new(args: &VerifyArgs, config: &IndexerConfig) -> Self {
        Self {
            reference: args.reference.clone(),
            image: None,
            namespace: args.namespace.clone(),
            platform: config.platform.to_string(),
            verdict: "error",
            target: None,
            manifest: None,
            config: None,
            layers_total: 0,
            layers_verified: 0,
            layers_from_cache: 0,
            files_indexed: 0,
            executables_indexed: 0,
            entries_indexed: 0,
            elapsed_ms: 0,
            reason: None,
            error: None,
            entries: None,
            signature: None,
        }
    }

    fn record(&mut self, report: &IndexReport) {
        self.target = Some(report.target.to_string());
        self.manifest = report.manifest.map(|d| d.to_string());
        self.config = report.config.map(|d| d.to_string());
        self.layers_total = report.layers_total;
        self.layers_verified = report.layers_verified;
        self.layers_from_cache = report.layers_from_cache;
        self.files_indexed = report.stats.files;
        self.executables_indexed = report.stats.executables;
        self.entries_indexed = report.stats.entries;
        match &report.verdict {
            ImageVerdict::Verified(_) => self.verdict = "verified",
            ImageVerdict::Untrusted { reason } => {
                self.verdict = "untrusted";
                self.reason = Some(reason_json(reason));
            }
        }
    }

    pub fn exit_code(&self) -> u8 {
        let signature = self.signature.as_ref();
        match self.verdict {
            _ if signature.is_some_and(|s| s.state == "unverifiable") => EXIT_ERROR,
            "verified" if signature.is_some_and(SignatureSummary::fails) => EXIT_UNTRUSTED,
            "verified" => EXIT_VERIFIED,
            "untrusted" => EXIT_UNTRUSTED,
            _ => EXIT_ERROR,
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: &str| {
            out.push_str(&format!("{key:<12}{value}\n"));
        };
        line("image", self.image.as_deref().unwrap_or(&self.reference));
        line("namespace", &self.namespace);
        line("platform", &self.platform);
        if let Some(manifest) = &self.manifest {
            line("manifest", manifest);
        }
        line(
            "layers",
            &format!(
                "{} of {} verified ({} from cache)",
                self.layers_verified, self.layers_total, self.layers_from_cache
            ),
        );
        line(
            "files",
            &format!(
                "{} indexed, {} executables ({} entries)",
                self.files_indexed, self.executables_indexed, self.entries_indexed
            ),
        );
        line("time", &format!("{:.3} s", self.elapsed_ms as f64 / 1000.0));
        let verdict = match (self.verdict, &self.reason, &self.error) {
            ("verified", _, _) => "VERIFIED".to_string(),
            ("untrusted", Some(reason), _) => format!(
                "UNTRUSTED: {}",
                reason["message"].as_str().unwrap_or_default()
            ),
            (_, _, Some(error)) => format!("ERROR: {error}"),
            (other, _, _) => other.to_uppercase(),
        };
        line("verdict", &verdict);
        if let Some(sig) = &self.signature {
            let state = match (&sig.key, sig.state) {
                (Some(key), _) => format!("SIGNED by {key}"),
                (None, state) => state.to_uppercase(),
            };
            line("signature", &format!("{state}: {}", sig.reason));
            if let Some(policy) = &sig.policy {
                line(
                    "policy",
                    &format!(
                        "{policy} ({}), keys {}",
                        sig.mode.unwrap_or("enforce"),
                        sig.keys_tried.join(", ")
                    ),
                );
            }
            for found in &sig.signatures {
                line(
                    "  found",
                    &format!(
                        "{} [{}]: {}",
                        found["source"].as_str().unwrap_or_default(),
                        found["format"].as_str().unwrap_or_default(),
                        found["result"].as_str().unwrap_or_default()
                    ),
                );
            }
        }
        for listed in self.entries.iter().flatten() {
            let kind = match &listed.entry.kind {
                EntryKind::File => "file".to_string(),
                EntryKind::Dir => "dir".to_string(),
                EntryKind::Symlink { target } => format!("symlink->{target}"),
                EntryKind::HardLink { target } => format!("hardlink->{target}"),
                EntryKind::Other => "other".to_string(),
            };
            let sha = listed
                .entry
                .sha256
                .map_or("-".to_string(), |d| d.to_string());
            out.push_str(&format!(
                "{kind} {:04o} {} {sha} /{}\n",
                listed.entry.mode, listed.entry.size, listed.path
            ));
        }
        out
    }
}

fn reason_json(reason: &Untrusted) -> serde_json::Value {
    let mut value = serde_json::to_value(reason).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("message".into(), reason.to_string().into());
    }
    value
}

/// Entry point the binary wires to `layerguard image verify`.
pub async fn verify_command(args: VerifyArgs) -> ExitCode {
    let started = Instant::now();
    let explicit = args.config != std::path::Path::new(layerguard::config::DEFAULT_CONFIG_PATH);
    let daemon_config = match Config::load(&args.config, explicit, &[]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("layerguard: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| daemon_config.state_dir.clone());
    let mut config = IndexerConfig::new(&state_dir);
    config.trust_layer_cache = args.cached;
    let mut summary = VerifySummary::new(&args, &config);
    if let Err(error) = run(&args, &daemon_config, config, &mut summary).await {
        summary.verdict = "error";
        summary.error = Some(error);
    }
    summary.elapsed_ms = started.elapsed().as_millis();
    if args.json {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        println!("{text}");
    } else {
        print!("{}", summary.to_text());
    }
    ExitCode::from(summary.exit_code())
}

async fn run(
    args: &VerifyArgs,
    daemon_config: &Config,
    config: IndexerConfig,
    summary: &mut VerifySummary,
) -> Result<(), String> {
    let socket = args
        .containerd_socket
        .clone()
        .unwrap_or_else(|| daemon_config.containerd_socket.clone());
    let containerd = Containerd::new(&socket, Timeouts::default());
    let store = ContainerdStore::connect(&containerd, &args.namespace)
        .await
        .map_err(|e| e.to_string())?;
    let (name, target) = store
        .resolve(&args.reference)
        .await
        .map_err(|e| e.to_string())?;
    summary.image = Some(name.clone());
    let indexer = ImageIndexer::new(store.clone(), config).map_err(|e| e.to_string())?;

    let progress = Progress::new();
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let ticker = show_progress.then(|| tokio::spawn(draw_progress(Arc::clone(&progress))));
    let result = indexer.index(&target, Arc::clone(&progress)).await;
    if let Some(ticker) = ticker {
        ticker.abort();
        let _ = ticker.await;
        eprint!("\r\x1b[2K");
    }
    let report = result.map_err(|e| e.to_string())?;
    summary.record(&report);
    let judgement = verify_image(
        &store,
        &daemon_config.trust,
        &name,
        report.target,
        report.manifest,
    )
    .await?;
    summary.signature = Some(SignatureSummary::of(&judgement));
    if let (true, ImageVerdict::Verified(index)) = (args.list, &report.verdict) {
        summary.entries = Some(
            index
                .iter()
                .map(|(path, entry)| ListedEntry {
                    path: path.to_string(),
                    entry: entry.clone(),
                })
                .collect(),
        );
    }
    evict_if_over_budget(&indexer).await;
    Ok(())
}

/// Keeps the cache within budget; never changes the verdict or the exit code.
async fn evict_if_over_budget(indexer: &ImageIndexer<ContainerdStore>) {
    match indexer.cache().over_budget() {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot measure the layer cache");
            return;
        }
    }
    match indexer.store().layers_in_use().await {
        Ok(in_use) => match indexer.evict_unused(in_use).await {
            Ok(report) => tracing::info!(?report, "layer cache evicted"),
            Err(e) => tracing::warn!(error = %e, "layer cache eviction failed"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot list images in use; cache not evicted"),
    }
}

async fn draw_progress(progress: Arc<Progress>) {
    tokio::time::sleep(PROGRESS_DELAY).await;
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        interval.tick().await;
        let s = progress.snapshot();
        const MIB: f64 = 1024.0 * 1024.0;
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2Kverifying: {}/{} layers done  {:.1}/{:.1} MiB read  {} entries",
            s.layers_done,
            s.layers_total,
            s.bytes_read as f64 / MIB,
            s.bytes_total as f64 / MIB,
            s.entries_seen
        );
        let _ = stderr.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: VerifyArgs,
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let parsed = Harness::parse_from(["x", "alpine"]).args;
        assert_eq!(parsed.namespace, "default");
        assert_eq!(parsed.containerd_socket, None);
        assert_eq!(parsed.state_dir, None);
        assert_eq!(
            parsed.config,
            PathBuf::from(layerguard::config::DEFAULT_CONFIG_PATH)
        );
        assert!(!parsed.json && !parsed.cached && !parsed.list);
    }

    #[test]
    fn summary_text_names_the_reason() {
        let args = Harness::parse_from(["x", "img"]).args;
        let mut summary = VerifySummary::new(&args, &IndexerConfig::new("/tmp"));
        summary.verdict = "untrusted";
        summary.reason = Some(reason_json(&Untrusted::BlobMissing {
            what: "layer 1 blob".into(),
            digest: layerguard::image::Digest::of(b""),
        }));
        let text = summary.to_text();
        assert!(
            text.contains("UNTRUSTED: layer 1 blob sha256:e3b0"),
            "{text}"
        );
        assert_eq!(summary.exit_code(), EXIT_UNTRUSTED);
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["reason"]["kind"], "blob_missing");
    }
}
