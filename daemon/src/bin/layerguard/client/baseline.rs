//! `layerguard baseline list|show|lock|relearn|export|import`: the daemon's behaviour
//! baselines (BaselineService; lock, relearn and import need the `responder` role).

use super::lists::OutputArgs;
use super::{connect, status_error, ConnectArgs};
use anyhow::Context;
use layerguard_proto::v1 as pb;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub action: BaselineAction,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum BaselineAction {
    /// One line per baseline: id, state, entries, partial, key.
    List(OutputArgs),
    /// A baseline's summary and what it learned.
    Show(IdArgs),
    /// End learning now: the baseline monitors from here on.
    Lock(IdArgs),
    /// Forget what was learned and learn again.
    Relearn(IdArgs),
    /// Print a baseline's document (versioned JSON), for `import` on another node.
    Export(IdArgs),
    /// Merge a document (from `export`) into the baseline of its key.
    Import(ImportArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct IdArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// The baseline's id (a unique prefix will do) or its key.
    pub id: String,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// The document; `-` reads standard input.
    pub file: PathBuf,
}

fn summary_json(s: &pb::BaselineSummary) -> serde_json::Value {
    serde_json::json!({
        "id": s.id, "key": s.key, "workload": s.workload,
        "containerd_namespace": s.containerd_namespace, "pod_namespace": s.pod_namespace,
        "container": s.container, "manifest": s.manifest, "state": s.state,
        "partial": s.partial, "partial_reasons": s.partial_reasons, "entries": s.entries,
        "execs": s.execs, "writes": s.writes, "learning_since": s.learning_since,
        "monitoring_since": s.monitoring_since, "last_seen": s.last_seen,
        "seeded_from": s.seeded_from, "name_source": s.name_source,
    })
}

fn summary_line(s: &pb::BaselineSummary) -> String {
    format!(
        "{}  {:<10}  {:>5} entries  {:<7}  {}",
        s.id,
        s.state,
        s.entries,
        if s.partial { "partial" } else { "" },
        s.key
    )
}

async fn client(
    c: &ConnectArgs,
) -> anyhow::Result<pb::baseline_service_client::BaselineServiceClient<tonic::transport::Channel>> {
    Ok(pb::baseline_service_client::BaselineServiceClient::new(
        connect(c).await?,
    ))
}

pub async fn baseline_command(args: BaselineArgs) -> anyhow::Result<()> {
    if let BaselineAction::List(out) = &args.action {
        let target = out.connect.target();
        let list = client(&out.connect)
            .await?
            .list(pb::ListBaselinesRequest {})
            .await
            .map_err(|s| status_error("listing baselines", &target, s))?
            .into_inner();
        if out.json {
            for s in &list.baselines {
                println!("{}", summary_json(s));
            }
        } else if list.baselines.is_empty() {
            println!("no baselines yet");
        } else {
            for s in &list.baselines {
                println!("{}", summary_line(s));
            }
        }
        return Ok(());
    }
    let (verb, out) = match &args.action {
        BaselineAction::Show(a) => ("show", &a.output),
        BaselineAction::Lock(a) => ("lock", &a.output),
        BaselineAction::Relearn(a) => ("relearn", &a.output),
        BaselineAction::Export(a) => ("export", &a.output),
        BaselineAction::Import(a) => ("import", &a.output),
        BaselineAction::List(_) => unreachable!("handled above"),
    };
    let target = out.connect.target();
    let mut c = client(&out.connect).await?;
    let req = |id: &str| pb::BaselineRequest { id: id.to_string() };
    let answer = match &args.action {
        BaselineAction::Show(a) => c.get(req(&a.id)).await,
        BaselineAction::Lock(a) => c.lock(req(&a.id)).await,
        BaselineAction::Relearn(a) => c.relearn(req(&a.id)).await,
        BaselineAction::Export(a) => c.export(req(&a.id)).await,
        BaselineAction::Import(a) => {
            let document_json = if a.file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&a.file)
                    .with_context(|| format!("reading {}", a.file.display()))?
            };
            c.import(pb::ImportBaselineRequest { document_json }).await
        }
        BaselineAction::List(_) => unreachable!("handled above"),
    }
    .map_err(|s| status_error(&format!("baseline {verb}"), &target, s))?
    .into_inner();
    let summary = answer.summary.unwrap_or_default();
    match &args.action {
        BaselineAction::Export(_) => println!("{}", answer.document_json),
        BaselineAction::Show(_) if out.json => println!("{}", answer.document_json),
        BaselineAction::Show(_) => {
            println!("{}", summary_line(&summary));
            for r in &summary.partial_reasons {
                println!("  partial: {r}");
            }
            let doc: serde_json::Value = serde_json::from_str(&answer.document_json)?;
            if let Some(execs) = doc["execs"].as_object() {
                for (exe, learned) in execs {
                    let parents: Vec<&str> = learned["parents"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .filter_map(|p| p["parent"].as_str())
                                .map(|k| if k.is_empty() { "(runtime)" } else { k })
                                .collect()
                        })
                        .unwrap_or_default();
                    println!("  exec  {exe}  from {}", parents.join(", "));
                }
            }
            if let Some(writes) = doc["writes"].as_object() {
                for dir in writes.keys() {
                    println!("  write {dir}");
                }
            }
        }
        _ if out.json => println!("{}", summary_json(&summary)),
        _ => println!("{verb} done: {}", summary_line(&summary)),
    }
    Ok(())
}
