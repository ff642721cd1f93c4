//! The `layerguard` binary: the daemon (`run`) and the tools that share its code.

mod client;
mod image_verify;

use anyhow::Context;
use clap::{Parser, Subcommand};
use layerguard::config::{LogFormat, Override, DEFAULT_CONFIG_PATH};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "layerguard",
    version,
    about = "Runtime integrity daemon for container hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Run(RunArgs),
    /// Work with images in containerd's content store (no daemon needed).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Follow alerts live (resumes by itself after a disconnect).
    Watch(client::WatchArgs),
    /// List recent alerts from the daemon's journal, newest first.
    Alerts(client::AlertsArgs),
    /// List the containers the daemon knows, with their verdict counts.
    Containers(client::OutputArgs),
    /// Show the daemon's status: kernel features, programs, event rates, journal.
    Status(client::OutputArgs),
    /// Incident response on a container: pause (quarantine), release, kill.
    Respond(client::RespondArgs),
    /// Behaviour baselines per workload: list, show, lock, relearn, export, import.
    Baseline(client::BaselineArgs),
    /// Preflight: each requirement of the daemon on this node, ok or missing with what to
    /// do, for the config `run` would read (the same flags). Exit 0 only when it would run
    /// fully.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    run: RunArgs,
    /// One JSON object per requirement.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Verify an image's chain of trust and index its files: exit 0 verified, 1 untrusted,
    /// 2 error.
    Verify(image_verify::VerifyArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Config file (TOML). Missing at the default path means defaults.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// containerd's API socket.
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// Where layerguard keeps its caches and journal.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `layerguard::sensor=debug`.
    #[arg(long)]
    log_level: Option<String>,
    /// Name reported in alerts (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Also report processes of the host mount namespace.
    #[arg(long)]
    monitor_host: bool,
    /// Append alerts to this JSONL file too (rotated by size).
    #[arg(long)]
    alert_log: Option<PathBuf>,
    /// Set any config key: `--set sensor.drain_interval_ms=5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = Override::parse_set)]
    set: Vec<Override>,
}

impl RunArgs {
    fn overrides(&self) -> Vec<Override> {
        let mut o = Vec::new();
        let path = |p: &PathBuf| p.display().to_string();
        if let Some(p) = &self.containerd_socket {
            o.push(Override::new(
                "--containerd-socket",
                "containerd_socket",
                path(p),
            ));
        }
        if let Some(p) = &self.state_dir {
            o.push(Override::new("--state-dir", "state_dir", path(p)));
        }
        if let Some(f) = self.log_format {
            let v = match f {
                LogFormat::Json => "json",
                LogFormat::Text => "text",
            };
            o.push(Override::new("--log-format", "log_format", v));
        }
        if let Some(l) = &self.log_level {
            o.push(Override::new("--log-level", "log_level", l.as_str()));
        }
        if let Some(n) = &self.node_name {
            o.push(Override::new("--node-name", "node_name", n.as_str()));
        }
        if let Some(p) = &self.alert_log {
            o.push(Override::new("--alert-log", "alerts.file", path(p)));
        }
        if self.monitor_host {
            o.push(Override::new("--monitor-host", "sensor.monitor_host", true));
        }
        o.extend(self.set.iter().cloned());
        o
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // One sentence: the chain of causes joined, for a journal line.
                eprintln!("layerguard: {}", client::one_line(&e));
                ExitCode::FAILURE
            }
        },
        Command::Image(ImageCommand::Verify(args)) => {
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(image_verify::verify_command(args)),
                Err(e) => {
                    eprintln!("layerguard: cannot start the async runtime: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Watch(args) => client(client::watch_command(args)),
        Command::Alerts(args) => client(client::alerts_command(args)),
        Command::Containers(args) => client(client::containers_command(args)),
        Command::Status(args) => client(client::status_command(args)),
        Command::Respond(args) => client(client::respond_command(args)),
        Command::Baseline(args) => client(client::baseline_command(args)),
        Command::Check(args) => check(args),
    }
}

/// Runs an API client command on a small runtime; errors as one line.
fn client(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layerguard: {}", client::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let explicit = args.run.config != std::path::Path::new(DEFAULT_CONFIG_PATH);
    let config = match layerguard::config::Config::load(
        &args.run.config,
        explicit,
        &args.run.overrides(),
    ) {
        Ok(c) => c,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"name": "config", "ok": false, "required": true, "detail": e.to_string(), "fix": "fix the config file or flag named"})
                );
            } else {
                println!("missing  config         {e}");
            }
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("layerguard: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut all = vec![layerguard::check::Requirement {
        name: "config".into(),
        ok: true,
        required: true,
        detail: if args.run.config.exists() {
            format!("{} valid", args.run.config.display())
        } else {
            format!("{} not present: defaults", args.run.config.display())
        },
        fix: None,
    }];
    all.extend(runtime.block_on(layerguard::check::check(&config)));
    for r in &all {
        if args.json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            let state = match (r.ok, r.required) {
                (true, _) => "ok",
                (false, true) => "missing",
                (false, false) => "absent",
            };
            let fix = r
                .fix
                .as_deref()
                .map(|f| format!(" -> {f}"))
                .unwrap_or_default();
            println!("{state:<8} {:<16} {}{fix}", r.name, r.detail);
        }
    }
    if all.iter().all(|r| r.ok || !r.required) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let explicit = args.config != std::path::Path::new(DEFAULT_CONFIG_PATH);
    let source = layerguard::config::ConfigSource {
        path: args.config.clone(),
        explicit,
        overrides: args.overrides(),
    };
    let config = source.load()?;
    layerguard::logging::init(config.log_format, &config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("layerguard")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(layerguard::run::run(config, source));
    // A blocking read stuck in the kernel (a hung FUSE file, say) must not hold up the
    // exit: dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result?;
    Ok(())
}
