//! `layerguard alerts`, `layerguard containers`, `layerguard status`: one request (or a
//! few pages), printed as a table or JSON.

use super::format;
use super::{connect, status_error, ConnectArgs, FilterArgs};
use anyhow::Context;
use layerguard::alert::Alert;
use layerguard_proto::v1 as pb;
use std::io::Write;

#[derive(clap::Args, Clone, Debug)]
pub struct OutputArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Clone, Debug)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many alerts, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

pub async fn alerts_command(args: AlertsArgs) -> anyhow::Result<()> {
    let target = args.output.connect.target();
    let mut client =
        pb::alert_service_client::AlertServiceClient::new(connect(&args.output.connect).await?);
    let filter = args.filter.filter().to_proto();
    let mut token = String::new();
    let mut alerts: Vec<Alert> = Vec::new();
    while alerts.len() < args.limit {
        let page = client
            .list(pb::ListAlertsRequest {
                filter: Some(filter.clone()),
                page_size: (args.limit - alerts.len()).min(1000) as u32,
                page_token: token.clone(),
            })
            .await
            .map_err(|s| status_error("listing alerts", &target, s))?
            .into_inner();
        for a in page.alerts {
            alerts.push(
                Alert::try_from(a).context("the daemon sent an alert this client cannot read")?,
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    alerts.truncate(args.limit);
    let mut out = std::io::stdout().lock();
    if args.output.json {
        for a in &alerts {
            serde_json::to_writer(&mut out, a)?;
            writeln!(out)?;
        }
    } else {
        writeln!(out, "{}", format::ALERT_HEADER)?;
        for a in &alerts {
            writeln!(out, "{}", format::alert_line(a))?;
        }
    }
    Ok(())
}

pub async fn containers_command(args: OutputArgs) -> anyhow::Result<()> {
    let target = args.connect.target();
    let mut client =
        pb::container_service_client::ContainerServiceClient::new(connect(&args.connect).await?);
    let list = client
        .list(pb::ListContainersRequest::default())
        .await
        .map_err(|s| status_error("listing containers", &target, s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if args.json {
        for c in &list.containers {
            writeln!(out, "{}", format::container_json(c))?;
        }
    } else {
        writeln!(out, "{}", format::CONTAINER_HEADER)?;
        for c in &list.containers {
            writeln!(out, "{}", format::container_line(c))?;
        }
    }
    Ok(())
}

pub async fn status_command(args: OutputArgs) -> anyhow::Result<()> {
    let target = args.connect.target();
    let mut client =
        pb::status_service_client::StatusServiceClient::new(connect(&args.connect).await?);
    let status = client
        .get(pb::GetStatusRequest {})
        .await
        .map_err(|s| status_error("reading status", &target, s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&format::status_json(&status))?
        )?;
    } else {
        write!(out, "{}", format::status_text(&status))?;
    }
    Ok(())
}
