//! `lintas ss certs`: this server's certificates.

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;
use lintas_globalconf::iso8601;
use lintas_proto::ss::v1 as pb;

use crate::ss_cmd::{admin, open};

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Ask for TLS and signing certificates for new keys, authenticated by the current
    /// TLS certificate (the registry approves at once when its policy allows, or an
    /// administrator does; run again to ask whether it has). Once approved, the running
    /// server switches to them when the global configuration has listed them long
    /// enough for peers to learn them (or at once with --switch-now), a stopped one as
    /// it starts; peers accept both until the registry revokes the old ones after its
    /// grace period.
    Renew {
        /// Print where the renewal stands as JSON.
        #[arg(long)]
        json: bool,
        /// Once approved, have the running server switch to the new certificates at
        /// once, without waiting for peers to learn them from the global configuration
        /// (after a key compromise, say).
        #[arg(long)]
        switch_now: bool,
    },
}

pub async fn run(config: &Path, command: CertsCommand) -> Result<()> {
    let CertsCommand::Renew { json, switch_now } = command;
    let mut r = open(config)?.renew().await?;
    if r.state == "approved" {
        // A running server switches when peers have learnt the new certificates (or at
        // once with --switch-now); a stopped one as it starts.
        if let Ok(mut server) = admin(config).await {
            let reply = server
                .switch_certificates(pb::SwitchRequest { now: switch_now })
                .await?
                .into_inner();
            r.switched = reply.switched;
            r.switch_at = (reply.switch_at > 0).then_some(reply.switch_at);
        }
    }
    if json {
        crate::json::print(&r)?;
    } else if r.state == "approved" {
        println!(
            "renewal {} approved by {}; the new certificates (valid until {}) {}",
            r.request_id,
            r.decided_by,
            r.not_after.map(iso8601).unwrap_or_default(),
            match (r.switched, r.switch_at) {
                (true, _) => "are in use by the running server".to_owned(),
                (false, Some(at)) => format!(
                    "are switched to by the running server at {}, once peers have learnt them",
                    iso8601(at)
                ),
                (false, None) => "take effect when the server next starts, or when the running server sees them in the global configuration".to_owned(),
            }
        );
    } else {
        println!(
            "renewal {} is waiting for a registry administrator; run this again to ask",
            r.request_id
        );
    }
    Ok(())
}
