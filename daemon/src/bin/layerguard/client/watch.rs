//! `layerguard watch`: live alerts, one line each on a terminal or JSONL with `--json`,
//! resuming by itself after a disconnect (daemon restart, network) from the last seq it
//! printed, so that what it prints is every alert once.
//!
//! Owns the reconnect loop and the position. Gaps and lags the server announces are
//! printed too (stderr in table mode; `{"gap": ...}` / `{"lag": ...}` lines with `--json`,
//! so that a pipeline never loses alerts silently).

use super::format;
use super::{connect, status_error, ConnectArgs, FilterArgs};
use anyhow::Context;
use layerguard::alert::Alert;
use layerguard_proto::v1 as pb;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Reconnect backoff: first wait, doubling up to the cap.
pub const RECONNECT_MIN: Duration = Duration::from_millis(200);
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

#[derive(clap::Args, Clone, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// JSON lines: each alert as the daemon's alert JSON (the same as its log and file).
    #[arg(long)]
    pub json: bool,
    /// Start after this seq (from the journal) instead of with new alerts only.
    #[arg(long, conflicts_with = "from_start")]
    pub resume_after: Option<u64>,
    /// Start with the oldest alert the journal holds.
    #[arg(long)]
    pub from_start: bool,
    /// Exit after this many alerts.
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up when the daemon is unreachable for this long (seconds; default: never).
    #[arg(long)]
    pub give_up_after: Option<u64>,
}

enum Attempt {
    /// The daemon is down or restarting: try again.
    Retry(anyhow::Error),
    /// The daemon is at its subscriber limit; it stood at this seq.
    Wait(anyhow::Error, u64),
    /// The daemon refused the request itself: retrying cannot help.
    Fatal(anyhow::Error),
}

enum Out {
    Table { header_done: bool },
    Json,
}

pub async fn watch_command(args: WatchArgs) -> anyhow::Result<()> {
    let mut out = if args.json {
        Out::Json
    } else {
        Out::Table {
            header_done: !std::io::stdout().is_terminal(),
        }
    };
    let filter = args.filter.filter().to_proto();
    let mut position: Option<u64> = if args.from_start {
        Some(0)
    } else {
        args.resume_after
    };
    let mut printed = 0u64;
    let mut backoff = RECONNECT_MIN;
    let mut down_since: Option<std::time::Instant> = None;
    let mut failures = 0u64;
    let target = args.connect.target();
    let stdout = std::io::stdout();
    loop {
        let attempt = async {
            let channel = connect(&args.connect).await.map_err(Attempt::Retry)?;
            let mut client = pb::alert_service_client::AlertServiceClient::new(channel);
            let stream = client
                .subscribe(pb::SubscribeRequest {
                    filter: Some(filter.clone()),
                    resume_after_seq: position,
                })
                .await
                .map_err(|s| {
                    // Refused for the subscriber limit: when admitted later, resume from
                    // where the stream stood now instead of joining live and missing what
                    // was raised in between.
                    let refused_at = (s.code() == tonic::Code::ResourceExhausted)
                        .then(|| s.metadata().get(layerguard::api::REFUSED_AT_SEQ))
                        .flatten()
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    // A refused call (bad filter, no permission) will not get better.
                    let fatal = matches!(
                        s.code(),
                        tonic::Code::PermissionDenied
                            | tonic::Code::InvalidArgument
                            | tonic::Code::Unauthenticated
                            | tonic::Code::Unimplemented
                    );
                    let e = status_error("subscribing", &target, s);
                    if fatal {
                        Attempt::Fatal(e)
                    } else if let Some(seq) = refused_at {
                        Attempt::Wait(e, seq)
                    } else {
                        Attempt::Retry(e)
                    }
                })?
                .into_inner();
            Ok::<_, Attempt>(stream)
        };
        let mut stream = match attempt.await {
            Ok(s) => {
                if down_since.take().is_some() {
                    eprintln!(
                        "layerguard: reconnected to {target}; resuming after seq {}",
                        position.map_or("(live)".into(), |p| p.to_string())
                    );
                }
                backoff = RECONNECT_MIN;
                failures = 0;
                s
            }
            Err(attempt) => {
                let e = match attempt {
                    Attempt::Fatal(e) => return Err(e),
                    Attempt::Retry(e) => e,
                    Attempt::Wait(e, seq) => {
                        if position.is_none() {
                            position = Some(seq);
                            eprintln!(
                                "layerguard: the daemon is at api.max_subscribers; when admitted, \
                                 resuming after seq {seq} so that nothing raised meanwhile is missed"
                            );
                        }
                        e
                    }
                };
                let since = *down_since.get_or_insert_with(std::time::Instant::now);
                if let Some(limit) = args.give_up_after {
                    if since.elapsed() >= Duration::from_secs(limit) {
                        return Err(e);
                    }
                }
                failures += 1;
                // The first failure, then now and then: a long outage must not flood stderr.
                if failures == 1 || failures.is_multiple_of(10) {
                    eprintln!(
                        "layerguard: {}; retrying every {RECONNECT_MAX:?} at most",
                        super::one_line(&e)
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => {
                    eprintln!(
                        "layerguard: stream from {target} ended: {:?}: {}",
                        s.code(),
                        s.message()
                    );
                    break;
                }
            };
            let mut lock = stdout.lock();
            use pb::subscribe_response::Event;
            let written = match msg.event {
                Some(Event::Alert(a)) => {
                    let alert = Alert::try_from(a)
                        .context("the daemon sent an alert this client cannot read")?;
                    position = Some(alert.seq);
                    printed += 1;
                    match &mut out {
                        Out::Json => {
                            serde_json::to_writer(&mut lock, &alert)?;
                            writeln!(lock)
                        }
                        Out::Table { header_done } => {
                            if !*header_done {
                                *header_done = true;
                                writeln!(lock, "{}", format::ALERT_HEADER)?;
                            }
                            writeln!(lock, "{}", format::alert_line(&alert))
                        }
                    }
                }
                Some(Event::Gap(g)) => {
                    position = Some(position.unwrap_or(0).max(g.last_seq));
                    match out {
                        Out::Json => writeln!(lock, "{}", format::gap_json(&g)),
                        Out::Table { .. } => {
                            eprintln!("{}", format::gap_line(&g));
                            Ok(())
                        }
                    }
                }
                Some(Event::Lag(l)) => match out {
                    Out::Json => writeln!(lock, "{}", format::lag_json(&l)),
                    Out::Table { .. } => {
                        eprintln!("{}", format::lag_line(&l));
                        Ok(())
                    }
                },
                None => Ok(()),
            };
            let flushed = written.and_then(|()| lock.flush());
            if let Err(e) = flushed {
                // The reader went away (`| head`): done, not an error.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e).context("writing to stdout");
            }
            if args.count.is_some_and(|c| printed >= c) {
                return Ok(());
            }
        }
        down_since.get_or_insert_with(std::time::Instant::now);
        tokio::time::sleep(backoff).await;
    }
}
