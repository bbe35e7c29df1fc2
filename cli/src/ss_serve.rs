//! `lintas ss serve`: the security server on its listeners; before it is enrolled, only
//! its enrolment console, then the whole server on the same management socket.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use lintas_globalconf::SystemClock;
use lintas_ss::{Node, SsConfig};

/// `serve --check-config`: what can be checked, also beside a running server.
fn check(config: &Path, settings: SsConfig) -> Result<()> {
    use lintas_ss::daemon::Checked;
    let id = settings.server_id.clone();
    let said = match lintas_ss::daemon::check(settings, Arc::new(SystemClock))? {
        Checked::Everything => "configuration, keys, certificates and state are valid",
        Checked::BesideRunningServer => {
            "configuration, keys and certificates are valid (the server is running and holds its state)"
        }
        Checked::NotEnrolled => {
            "configuration and keys are valid; the server is not enrolled yet (serve runs its enrolment console)"
        }
    };
    println!("{}: {said} ({id})", config.display());
    Ok(())
}

pub async fn serve(config: &Path, check_config: bool) -> Result<()> {
    let settings = SsConfig::load(config, crate::env())?;
    if check_config {
        return check(config, settings);
    }
    let (consumer_addr, provider_addr, ops_addr, management_addr) = (
        settings.consumer_listen,
        settings.provider_listen,
        settings.ops_listen,
        settings.management_listen,
    );
    // Before enrolment only the management console runs, to register the server;
    // the same listening socket then serves the whole server's console.
    let mut management_kept = None;
    let server = match lintas_ss::daemon::open_from_config(settings.clone(), Arc::new(SystemClock))
    {
        Err(lintas_ss::SsError::NotEnrolled) => {
            let listener = std::net::TcpListener::bind(management_addr)
                .with_context(|| format!("binding management_listen {management_addr}"))?;
            listener.set_nonblocking(true)?;
            management_kept = Some(listener.try_clone()?);
            crate::listening(format!(
                "lintas security server {} is not enrolled: register it at https://{}/ or with `lintas ss register`",
                settings.server_id,
                listener.local_addr()?
            ));
            let node = Arc::new(Node::open(settings.clone())?);
            let stop = crate::shutdown_signal().context("installing signal handlers")?;
            if !lintas_ss::manage::enrolment::serve_until_enrolled(node, listener, stop).await? {
                return Ok(());
            }
            lintas_ss::daemon::open_from_config(settings, Arc::new(SystemClock))?
        }
        other => other?,
    };
    let consumer = tokio::net::TcpListener::bind(consumer_addr)
        .await
        .with_context(|| format!("binding consumer_listen {consumer_addr}"))?;
    let provider = tokio::net::TcpListener::bind(provider_addr)
        .await
        .with_context(|| format!("binding provider_listen {provider_addr}"))?;
    let ops = tokio::net::TcpListener::bind(ops_addr)
        .await
        .with_context(|| format!("binding ops_listen {ops_addr}"))?;
    let management = match management_kept {
        Some(kept) => tokio::net::TcpListener::from_std(kept)?,
        None => tokio::net::TcpListener::bind(management_addr)
            .await
            .with_context(|| format!("binding management_listen {management_addr}"))?,
    };
    let shutdown = crate::shutdown_signal().context("installing signal handlers")?;
    crate::listening(format!(
        "lintas security server {} listening: consumer={} provider={} ops={} management=https://{}/",
        server.id,
        consumer.local_addr()?,
        provider.local_addr()?,
        ops.local_addr()?,
        management.local_addr()?
    ));
    let listeners = lintas_ss::serve::Listeners {
        consumer,
        provider,
        ops,
        management: Some(management),
    };
    lintas_ss::serve::serve(server, listeners, shutdown).await?;
    Ok(())
}
