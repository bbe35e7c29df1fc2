//! `lintas ss events`: the subscriptions to the topics of the publishers a server hosts.

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;
use lintas_ss::manage::model::SubscriptionInfo;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// List the subscriptions with their next event, backlog, failed deliveries and
    /// dead letters (`--json`: `{"items": [...]}`).
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Path, command: EventsCommand) -> Result<()> {
    let admin = crate::ss_cmd::admin(config).await?;
    match command {
        EventsCommand::List { json } => {
            let subscriptions = crate::ss_cmd::all_pages(|r| {
                let mut c = admin.clone();
                async move {
                    let p = c.list_subscriptions(r).await?.into_inner();
                    Ok((p.subscriptions, p.next_page_token))
                }
            })
            .await?;
            if json {
                return crate::json::items(subscriptions.into_iter().map(SubscriptionInfo::from));
            }
            if subscriptions.is_empty() {
                println!("no subscriptions");
            }
            for s in subscriptions {
                println!(
                    "{} {}  ->  {}: next event {}, {} waiting, {} dead letter(s)",
                    s.publisher, s.topic, s.subscriber, s.next_sequence, s.backlog, s.dead_letters
                );
                if s.attempts > 0 {
                    println!(
                        "    {} failed deliveries of the next; last: {}",
                        s.attempts, s.last_error
                    );
                }
            }
        }
    }
    Ok(())
}
