//! `lintas ss quota`: how often clients may call the services this server provides.

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;
use lintas_proto::ss::v1 as pb;
use lintas_ss::manage::model::QuotaSpec;

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Set how often clients may call a service, or one of its methods: a token bucket
    /// per client. Replaces the quota for the same service, method and client. Calls
    /// beyond are refused with RESOURCE_EXHAUSTED (HTTP 429 with Retry-After through
    /// the REST entry); the catalogue publishes the quota.
    Set {
        provider: String,
        service: String,
        /// Calls per period: 10/s, 600/min, 5000/h, 100000/day, 1/week, 1/month, 100/30s.
        #[arg(long)]
        rate: String,
        /// Calls that may come at once (default: the rate's number of calls).
        #[arg(long)]
        burst: Option<u32>,
        /// One method; for a REST service an HTTP method (default: the service's calls
        /// together).
        #[arg(long)]
        method: Option<String>,
        /// One client, INSTANCE/CLASS/MEMBER[/SUBSYSTEM] (default: every client, each
        /// on its own); a client's own quota replaces the one for every client.
        #[arg(long)]
        client: Option<String>,
    },
    /// Remove a quota (named by its service, method and client).
    Remove {
        provider: String,
        service: String,
        #[arg(long)]
        method: Option<String>,
        #[arg(long)]
        client: Option<String>,
    },
    /// List them (`--json`: `{"items": [...]}`).
    List {
        #[arg(long)]
        json: bool,
    },
}

/// A quota in one line.
fn line(q: &pb::Quota) -> String {
    let method = if q.method.is_empty() { "*" } else { &q.method };
    let client = if q.client.is_empty() {
        "each client"
    } else {
        &q.client
    };
    format!(
        "{}  {}/{method}  {client}: {}, burst {}",
        q.provider, q.service, q.rate, q.burst
    )
}

pub async fn run(config: &Path, command: QuotaCommand) -> Result<()> {
    let mut admin = crate::ss_cmd::admin(config).await?;
    let some = |s: Option<String>| s.unwrap_or_default();
    match command {
        QuotaCommand::Set {
            provider,
            service,
            rate,
            burst,
            method,
            client,
        } => {
            let q = admin
                .set_quota(pb::Quota {
                    provider,
                    service,
                    method: some(method),
                    client: some(client),
                    rate,
                    burst: burst.unwrap_or_default(),
                })
                .await?
                .into_inner();
            println!("quota set: {}", line(&q));
        }
        QuotaCommand::Remove {
            provider,
            service,
            method,
            client,
        } => {
            let q = admin
                .remove_quota(pb::Quota {
                    provider,
                    service,
                    method: some(method),
                    client: some(client),
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("quota removed: {}", line(&q));
        }
        QuotaCommand::List { json } => {
            let quotas = crate::ss_cmd::all_pages(|r| {
                let mut c = admin.clone();
                async move {
                    let p = c.list_quotas(r).await?.into_inner();
                    Ok((p.quotas, p.next_page_token))
                }
            })
            .await?;
            if json {
                return crate::json::items(quotas.into_iter().map(QuotaSpec::from));
            }
            if quotas.is_empty() {
                println!("no quotas");
            }
            for q in &quotas {
                println!("{}", line(q));
            }
        }
    }
    Ok(())
}
