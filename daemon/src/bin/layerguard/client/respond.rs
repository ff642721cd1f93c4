//! `layerguard respond pause|isolate|release|kill`: incident response on one container through
//! the daemon (ResponseService; needs the `responder` role).

use super::{connect, status_error, ConnectArgs};
use layerguard_proto::v1 as pb;

#[derive(clap::Args, Clone, Debug)]
pub struct RespondArgs {
    #[command(subcommand)]
    pub action: RespondAction,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum RespondAction {
    /// Quarantine: freeze every process of the container (state kept for forensics).
    Pause(TargetArgs),
    /// End a quarantine and a network isolation: the processes continue, traffic flows.
    Release(TargetArgs),
    /// Cut the container's network (all but loopback); it keeps running.
    Isolate(TargetArgs),
    /// SIGKILL every process of the container.
    Kill(TargetArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// containerd namespace of the container.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Why (an alert id, a ticket), recorded in the daemon's log.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// The container id.
    pub container_id: String,
}

pub async fn respond_command(args: RespondArgs) -> anyhow::Result<()> {
    let (verb, t) = match &args.action {
        RespondAction::Pause(t) => ("pause", t),
        RespondAction::Release(t) => ("release", t),
        RespondAction::Isolate(t) => ("isolate", t),
        RespondAction::Kill(t) => ("kill", t),
    };
    let target = t.connect.target();
    let mut client =
        pb::response_service_client::ResponseServiceClient::new(connect(&t.connect).await?);
    let req = pb::ContainerActionRequest {
        containerd_namespace: t.namespace.clone(),
        container_id: t.container_id.clone(),
        reason: t.reason.clone(),
    };
    let answer = match args.action {
        RespondAction::Pause(_) => client.pause(req).await,
        RespondAction::Release(_) => client.release(req).await,
        RespondAction::Isolate(_) => client.isolate(req).await,
        RespondAction::Kill(_) => client.kill(req).await,
    }
    .map_err(|s| {
        status_error(
            &format!("{verb} of {}/{}", t.namespace, t.container_id),
            &target,
            s,
        )
    })?
    .into_inner();
    println!(
        "{}/{}: {verb} done, task {}",
        t.namespace, t.container_id, answer.task_status
    );
    Ok(())
}
