//! `lintas adapter`: serve a legacy system (REST/JSON, SOAP, SQL) as a gRPC service.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use lintas_adapter::{Adapter, Backend, BackendSection};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the service a configuration file describes, until SIGINT or SIGTERM.
    Serve {
        /// The adapter's configuration file (its [adapter] section and one backend
        /// section: [rest], [soap] or [sql]).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file, its .proto file and every mapping, then exit.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

impl Args {
    pub fn serving(&self) -> bool {
        matches!(self.command, Cmd::Serve { .. })
    }
}

/// The backend a loaded configuration names.
pub fn backend(adapter: &Adapter) -> Result<Arc<dyn Backend>, lintas_adapter::AdapterError> {
    match &adapter.backend {
        BackendSection::Rest(t) => lintas_adapter_rest::build(adapter, t.clone()),
        BackendSection::Soap(t) => lintas_adapter_soap::build(adapter, t.clone()),
        BackendSection::Sql(t) => lintas_adapter_sql::build(adapter, t.clone()),
    }
}

fn load(config: &std::path::Path) -> anyhow::Result<(Adapter, Arc<dyn Backend>)> {
    let adapter = lintas_adapter::load(config)?;
    let backend = backend(&adapter).with_context(|| config.display().to_string())?;
    Ok((adapter, backend))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Cmd::Check { config } => {
            let (adapter, _) = load(&config)?;
            println!(
                "{}: {} (methods: {})",
                config.display(),
                adapter.service.full_name(),
                adapter
                    .service
                    .methods()
                    .map(|m| m.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Cmd::Serve { config } => {
            let (adapter, backend) = load(&config)?;
            let stop = crate::shutdown_signal()?;
            let listener = tokio::net::TcpListener::bind(&adapter.listen)
                .await
                .with_context(|| format!("binding {}", adapter.listen))?;
            let ops = tokio::net::TcpListener::bind(&adapter.ops_listen)
                .await
                .with_context(|| format!("binding ops_listen {}", adapter.ops_listen))?;
            crate::listening(format!(
                "lintas adapter for {} listening on {} (ops {})",
                adapter.service.full_name(),
                listener.local_addr()?,
                ops.local_addr()?
            ));
            let listeners = lintas_adapter::Listeners {
                grpc: listener,
                ops,
            };
            lintas_adapter::serve(listeners, &adapter, backend, stop).await?;
            Ok(())
        }
    }
}
