//! `lintas ss …`

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use lintas_globalconf::{SystemClock, iso8601};
use lintas_identifiers::{HostPort, ServerId, SubsystemId};
use lintas_ss::{Enrolment, Node, SsConfig};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a server directory: configuration, trust anchor, new private keys.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// INSTANCE/CLASS/MEMBER/SERVERCODE
        #[arg(long)]
        server_id: ServerId,
        /// host:port where peer servers will reach this server.
        #[arg(long)]
        address: HostPort,
        /// The trust anchor file from the registry operator.
        #[arg(long)]
        anchor: PathBuf,
        /// A subsystem this server hosts (repeatable).
        #[arg(long = "client")]
        clients: Vec<SubsystemId>,
        /// Name of the owning organisation.
        #[arg(long, default_value = "")]
        member_name: String,
    },
    /// Send certificate requests for this server's keys to the registry.
    Register {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// One-time enrolment token from the registry administrator (pre-approves).
        #[arg(long, env = "LINTAS_ENROLMENT_TOKEN")]
        token: Option<String>,
    },
    /// Ask the registry about the registration; store certificates once approved.
    Status {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
    },
    /// Fetch, verify and cache the global configuration; check this server is in it.
    Conf {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
    },
}

fn open(config: &std::path::Path) -> Result<Node> {
    Ok(Node::open(SsConfig::load(config, crate::env())?)?)
}

pub async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Init {
            dir,
            server_id,
            address,
            anchor,
            clients,
            member_name,
        } => {
            let mut config = SsConfig::new(server_id, address);
            config.clients = clients;
            config.member_name = member_name;
            let path = lintas_ss::init(&dir, &config, &anchor)?;
            let node = open(&path)?;
            let (tls, sign) = node.key_fingerprints();
            println!(
                "security server {} created in {}",
                config.server_id,
                dir.display()
            );
            println!("  trust anchor SHA-256: {}", node.anchor.fingerprint);
            println!("  TLS key:     {tls}");
            println!("  signing key: {sign}");
            println!("next: lintas ss register --config {}", path.display());
        }
        Command::Register { config, token } => {
            let node = open(&config)?;
            let status = node.register(token.as_deref()).await?;
            println!(
                "registration {} submitted for {}",
                status.request_id, status.server_id
            );
            if status.state() == lintas_proto::registry::v1::RegistrationState::Approved {
                println!("approved by enrolment token; certificates stored");
            } else {
                let (tls, sign) = node.key_fingerprints();
                println!(
                    "pending approval. Tell the registry administrator these key fingerprints:"
                );
                println!("  TLS key:     {tls}");
                println!("  signing key: {sign}");
                println!("then run: lintas ss status --config {}", config.display());
            }
        }
        Command::Status { config } => match open(&config)?.poll().await? {
            Enrolment::Pending(s) => println!(
                "registration {} is pending since {}",
                s.request_id,
                iso8601(s.submitted_at)
            ),
            Enrolment::Approved(s) => println!(
                "registration approved at {} by {}; certificates stored",
                iso8601(s.decided_at),
                s.decided_by
            ),
        },
        Command::Conf { config } => {
            let node = open(&config)?;
            let client = node.conf_client(Arc::new(SystemClock))?;
            let conf = match client.fetch().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("warning: {e}");
                    client.current()?
                }
            };
            println!(
                "global configuration serial {} of instance {}, valid until {}",
                conf.serial(),
                conf.conf.instance,
                iso8601(conf.conf.expires_at)
            );
            println!(
                "  {} members, {} security servers, {} global groups, {} revoked certificates",
                conf.conf.members.len(),
                conf.conf.servers.len(),
                conf.conf.groups.len(),
                conf.conf.revoked.len()
            );
            node.check_listed(&conf)?;
            println!(
                "  {} is listed with its TLS certificate and hosts: {}",
                node.config.server_id,
                node.config
                    .clients
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}
