//! `lintas ss events`: the subscriptions to the topics of the publishers a server hosts.

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;
use lintas_proto::ss::v1 as pb;
use lintas_ss::manage::model::{DeadLetterInfo, SubscriptionInfo};

#[derive(Subcommand)]
pub enum EventsCommand {
    /// List the subscriptions with their next event, backlog, failed deliveries and
    /// dead letters (`--json`: `{"items": [...]}`).
    List {
        #[arg(long)]
        json: bool,
    },
    /// End a subscription for its subscriber (one whose grant was revoked, say), and
    /// discard its dead letters.
    End {
        #[command(flatten)]
        subscription: Subscription,
    },
    /// List a subscription's dead letters (events given up on), oldest first.
    DeadLetters {
        #[command(flatten)]
        subscription: Subscription,
        #[arg(long)]
        json: bool,
    },
    /// Deliver a subscription's dead letters again (one with `--sequence`, or all),
    /// before its next event.
    Redeliver {
        #[command(flatten)]
        subscription: Subscription,
        /// The dead letter's sequence (from 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        sequence: Option<u64>,
    },
    /// Remove a subscription's dead letters for good (one with `--sequence`, or all).
    Discard {
        #[command(flatten)]
        subscription: Subscription,
        /// The dead letter's sequence (from 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        sequence: Option<u64>,
    },
}

/// A subscription: to a topic of a publisher hosted on this server.
#[derive(clap::Args)]
pub struct Subscription {
    /// The publisher (INSTANCE/CLASS/MEMBER/SUBSYSTEM).
    publisher: String,
    /// The topic (package.Service).
    topic: String,
    /// The subscriber (INSTANCE/CLASS/MEMBER[/SUBSYSTEM]).
    subscriber: String,
}

impl Subscription {
    fn selection(self, sequence: Option<u64>) -> pb::DeadLetterSelection {
        pb::DeadLetterSelection {
            publisher: self.publisher,
            topic: self.topic,
            subscriber: self.subscriber,
            sequence: sequence.unwrap_or(0),
        }
    }
}

pub async fn run(config: &Path, command: EventsCommand) -> Result<()> {
    let mut admin = crate::ss_cmd::admin(config).await?;
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
        EventsCommand::End { subscription } => {
            let s = subscription.selection(None);
            let ended = admin
                .end_subscription(pb::SubscriptionRef {
                    publisher: s.publisher,
                    topic: s.topic,
                    subscriber: s.subscriber,
                })
                .await?
                .into_inner();
            println!(
                "subscription of {} to {} {} ended at event {} ({} waiting, {} dead letter(s) discarded with it)",
                ended.subscriber,
                ended.publisher,
                ended.topic,
                ended.next_sequence,
                ended.backlog,
                ended.dead_letters
            );
        }
        EventsCommand::DeadLetters { subscription, json } => {
            let letters = admin
                .list_dead_letters(subscription.selection(None))
                .await?
                .into_inner()
                .dead_letters;
            if json {
                return crate::json::items(letters.into_iter().map(DeadLetterInfo::from));
            }
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in letters {
                println!(
                    "#{} key {} published {}: {} deliveries, last: {}{}",
                    l.sequence,
                    l.key,
                    lintas_manage::audit::rfc3339(l.published_unix_ms),
                    l.attempts,
                    l.error,
                    if l.redeliver {
                        " (being delivered again)"
                    } else {
                        ""
                    }
                );
            }
        }
        EventsCommand::Redeliver {
            subscription,
            sequence,
        } => {
            let n = admin
                .redeliver_dead_letters(subscription.selection(sequence))
                .await?
                .into_inner()
                .count;
            println!("{n} dead letter(s) to be delivered again, before the next event");
        }
        EventsCommand::Discard {
            subscription,
            sequence,
        } => {
            let n = admin
                .discard_dead_letters(subscription.selection(sequence))
                .await?
                .into_inner()
                .count;
            println!("{n} dead letter(s) discarded");
        }
    }
    Ok(())
}
