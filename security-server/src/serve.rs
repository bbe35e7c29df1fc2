//! Serving a security server: its endpoints, the operations listener, the admin socket,
//! the management API and the background tasks, wired from the server's parts until
//! shutdown.

use std::future::Future;
use std::sync::{Arc, Mutex};

use lintas_globalconf::{ConfClient, VerifiedConf};
use lintas_proto::exchange::v1::exchange_server::ExchangeServer;
use tokio::net::TcpListener;

use crate::SsError;
use crate::daemon::SecurityServer;
use crate::local::LocalAuth;
use crate::own::Own;

/// The listeners a security server serves on, already bound.
pub struct Listeners {
    /// Local applications (the consumer endpoint and the REST entry).
    pub consumer: TcpListener,
    /// Peer security servers (mutual TLS).
    pub provider: TcpListener,
    /// `/metrics`, `/healthz` and `/readyz`.
    pub ops: TcpListener,
    /// The management API and console (HTTPS), if served.
    pub management: Option<TcpListener>,
}

/// Serves the consumer endpoint (TLS with registered client certificates, or plaintext
/// loopback in development), the provider endpoint (mutual TLS 1.3) and the operations
/// listener until `shutdown` completes, with the background tasks (see `tasks`). A
/// fatal finding of a task stops the server with its error. On shutdown the endpoints stop accepting and in-flight
/// calls finish; every answered call's records were durable before it was answered.
pub async fn serve(
    server: Arc<SecurityServer>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SsError> {
    // The data directory holds keys, records and the admin socket: owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&server.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SsError::Serve(format!("{}: {e}", server.data_dir.display())))?;
    }
    let admin_socket = crate::admin::bind(&server.data_dir.join(crate::admin::SOCKET))?;
    let local = listeners
        .consumer
        .local_addr()
        .map_err(|e| SsError::Serve(e.to_string()))?;
    if matches!(server.local.auth, LocalAuth::DevPlaintextLoopback) && !local.ip().is_loopback() {
        return Err(SsError::Serve(format!(
            "with dev_plaintext_loopback the consumer endpoint must listen on loopback (got {local})"
        )));
    }
    let conf_client = server.conf.client();
    if conf_client.current().is_err() {
        conf_client.fetch().await?;
    }
    let conf = conf_client.current()?;
    let peer_tls = peer_tls(server.own.clone(), conf_client.clone(), &conf)?;
    match conf.server(&server.id) {
        Some(e) if lintas_globalconf::lists_tls(e, &server.own.keys().tls_sha256) => {}
        _ => tracing::warn!(
            server = %server.id,
            serial = conf.serial(),
            "this server is not listed with its TLS certificate in the global configuration; peers will refuse it until it is"
        ),
    }

    // A log the witness saw longer, or with another head, was cut back or rewritten.
    // If the registry cannot be reached, the server starts (a registry outage must not
    // stop every ministry's services) and checks as soon as it answers.
    let synced = match tokio::time::timeout(
        crate::tasks::REGISTRY_TIMEOUT,
        server.evidence.sync_with_witness(),
    )
    .await
    {
        Ok(Ok(_)) => true,
        Ok(Err(e @ SsError::State(_))) => return Err(e),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not ask the witness about this log; will retry");
            false
        }
        Err(_) => {
            tracing::warn!("the witness did not answer; will retry");
            false
        }
    };
    let stop = lintas_transport::Stop::on(shutdown);

    // Operations: the listener serving health and metrics.
    let ops = server.ops.clone();
    if synced {
        server.witness_health.ready();
    }
    let limits = &server.settings.connection_limits;
    let provider_admission = lintas_transport::Admission::new("provider", *limits);
    let consumer_admission = lintas_transport::Admission::new("consumer", *limits);
    let ops_admission = lintas_transport::Admission::new("ops", *limits);
    let management_admission = lintas_transport::Admission::new("management", *limits);
    ops.metrics.listeners(vec![
        consumer_admission.clone(),
        provider_admission.clone(),
        ops_admission.clone(),
        management_admission.clone(),
        server.consumer.requests.clone(),
        server.provider.requests.clone(),
    ]);

    // gRPC health follows readiness on both endpoints.
    let (grpc_health, health_service) = tonic_health::server::health_reporter();
    let health_watcher = lintas_ops::grpc::follow_health(
        ops.health.clone(),
        grpc_health,
        vec![
            <ExchangeServer<crate::provider::ProviderService> as tonic::server::NamedService>::NAME,
        ],
        stop.stopped(),
    );
    let ops_server = lintas_ops::serve(listeners.ops, ops_admission, ops, stop.stopped());
    let management_server = {
        let (listener, stopped) = (listeners.management, stop.stopped());
        let (tls, manage) = (server.management_tls.clone(), server.manage.clone());
        async move {
            match listener {
                Some(listener) => {
                    if let Ok(addr) = listener.local_addr() {
                        tracing::info!(%addr, "management API and console (HTTPS)");
                    }
                    let router = crate::manage::api::router(manage);
                    lintas_transport::serve_https(
                        listener,
                        tls,
                        management_admission,
                        router,
                        stopped,
                    )
                    .await;
                }
                // Not served: this part ends with the others.
                None => stopped.await,
            }
        }
    };

    // Room for the signed envelope around a maximal body.
    let envelope = server.settings.max_message_bytes + crate::envelope::ENVELOPE_MARGIN;
    let provider_server = lintas_transport::peer_grpc_server(limits)
        .add_service(health_service.clone())
        .add_service(
            ExchangeServer::new(crate::provider::ProviderService(server.provider.clone()))
                .max_decoding_message_size(envelope)
                .max_encoding_message_size(envelope),
        )
        .serve_with_incoming_shutdown(
            lintas_transport::incoming(listeners.provider, peer_tls, provider_admission),
            stop.stopped(),
        );

    let discovery = crate::discovery::Discovery {
        local: server.local.clone(),
        catalogue: server.catalogue.clone(),
    };
    let rest = crate::rest::Rest {
        consumer: server.consumer.clone(),
        catalogue: server.catalogue.clone(),
    };
    let publishing = crate::events::endpoint::Publishing {
        local: server.local.clone(),
        access: server.access.clone(),
        events: server.provider.events.clone(),
        clock: server.clock.clone(),
        max_payload: server.provider.settings.max_message_bytes,
    };
    let routes = tonic::service::Routes::new(health_service)
        .add_service(
            lintas_proto::discovery::v1::discovery_server::DiscoveryServer::new(discovery.clone()),
        )
        .add_service(lintas_proto::events::v1::events_server::EventsServer::new(
            publishing,
        ))
        .add_service(
            tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer::new(
                crate::discovery::Reflection(discovery.clone()),
            ),
        )
        .add_service(
            tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer::new(
                crate::discovery::Reflection(discovery),
            ),
        )
        .prepare()
        .into_axum_router()
        .merge(crate::rest::routes(Arc::new(rest)))
        .fallback_service(crate::consumer::ConsumerEndpoint(server.consumer.clone()));
    let consumer_routes = tonic::service::Routes::from(routes);
    let consumer = listeners.consumer;
    let consumer_server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match &server.local.auth {
        LocalAuth::DevPlaintextLoopback => Box::pin(
            lintas_transport::grpc_server(limits)
                .accept_http1(true)
                .add_routes(consumer_routes)
                .serve_with_incoming_shutdown(
                    lintas_transport::incoming_plain(consumer, consumer_admission),
                    stop.stopped(),
                ),
        ),
        LocalAuth::Tls { cert, key } => {
            let access = server.access.clone();
            let tls = lintas_transport::server_config_registered_clients(
                cert,
                key,
                Arc::new(move |hash| access.client_for_cert(hash).is_some()),
            )?;
            // The REST entry also serves HTTP/1.1 clients.
            let mut tls = (*tls).clone();
            tls.alpn_protocols.push(b"http/1.1".to_vec());
            Box::pin(
                lintas_transport::grpc_server(limits)
                    .accept_http1(true)
                    .add_routes(consumer_routes)
                    .serve_with_incoming_shutdown(
                        lintas_transport::incoming(consumer, Arc::new(tls), consumer_admission),
                        stop.stopped(),
                    ),
            )
        }
    };

    let admin_server = tonic::transport::Server::builder()
        .add_service(
            lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdminServer::new(
                server.admin(),
            )
            .max_encoding_message_size(crate::admin::MAX_REPLY_BYTES),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(admin_socket),
            stop.stopped(),
        );

    // Monitoring records are written until every exchange has ended, after the
    // endpoints have drained.
    let (opmon_done, opmon_stop) = tokio::sync::oneshot::channel::<()>();
    let outcomes = server.outcomes.clone();
    let clock = server.clock.clone();
    let opmon_writer = tokio::spawn(async move {
        let stopped = lintas_transport::Stop::on(async {
            let _ = opmon_stop.await;
        });
        let write = outcomes.opmon.write(
            move || lintas_certs::unix_secs(clock.now()),
            stopped.stopped(),
        );
        match &outcomes.otlp {
            Some(exporter) => {
                tokio::join!(write, exporter.run(stopped.stopped()));
            }
            None => write.await,
        }
    });
    let (p, c, a, (), (), (), (), (), (), (), (), (), checkpointed) = tokio::join!(
        stop.part(provider_server),
        stop.part(consumer_server),
        stop.part(admin_server),
        stop.part(ops_server),
        stop.part(management_server),
        health_watcher,
        crate::tasks::poll_configuration(
            conf_client.clone(),
            server.intervals.conf_poll,
            stop.clone()
        ),
        crate::tasks::report_services(
            server.reporter.clone(),
            server.catalogue_health.clone(),
            stop.clone()
        ),
        crate::tasks::timestamp(
            server.evidence.clone(),
            server.intervals.timestamp,
            stop.clone()
        ),
        crate::events::delivery::run(
            server.provider.events.clone(),
            server.consumer.clone(),
            server.access.clone(),
            server.clock.clone(),
            stop.clone()
        ),
        crate::tasks::purge_state(
            server.provider.idempotency.clone(),
            server.provider.events.clone(),
            server.intervals.event_retention,
            server.clock.clone(),
            stop.clone()
        ),
        crate::tasks::renew_certificates(
            server.renewer.clone(),
            server.switch.clone(),
            server.intervals.renew_before_days,
            server.renewal_health.clone(),
            server.clock.clone(),
            stop.clone()
        ),
        stop.part(crate::tasks::checkpoint(
            server.evidence.clone(),
            server.intervals.checkpoint,
            server.intervals.witness,
            server.witness_health.clone(),
            synced,
            stop.clone()
        )),
    );
    let _ = opmon_done.send(());
    let _ = opmon_writer.await;
    // Every call has drained: the last checkpoint covers every record.
    if let Err(e) = server.evidence.checkpoint_now() {
        tracing::error!(error = %e, "signing the final log checkpoint failed");
    }
    let _ = std::fs::remove_file(server.data_dir.join(crate::admin::SOCKET));
    if let Err(crate::tasks::Fatal(e)) = checkpointed {
        return Err(SsError::State(e));
    }
    p.map_err(|e| SsError::Serve(format!("provider endpoint: {e}")))?;
    c.map_err(|e| SsError::Serve(format!("consumer endpoint: {e}")))?;
    a.map_err(|e| SsError::Serve(format!("admin socket: {e}")))?;
    tracing::info!(server = %server.id, "security server stopped");
    Ok(())
}

/// The provider endpoint's TLS configuration: peers are trusted per the configuration
/// in force when they connect, so a CA added later is trusted from its configuration
/// serial on, and this server presents the certificate in use when they connect, so
/// renewed certificates are presented from their switch on, without a restart.
fn peer_tls(
    own: Arc<Own>,
    conf_client: ConfClient,
    conf: &VerifiedConf,
) -> Result<impl lintas_transport::ConfigSource, SsError> {
    let build = move |keys: &crate::own::OwnKeys, conf: &VerifiedConf| {
        lintas_transport::server_config(
            &keys.tls_cert,
            &keys.tls_key,
            conf.trust_store(),
            lintas_transport::ClientAuth::Required,
        )
    };
    let keys = own.keys();
    let first = build(&keys, conf)?;
    let cache = Mutex::new(((conf.serial(), keys.tls_sha256), first));
    Ok(move || {
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        let keys = own.keys();
        if let Ok(current) = conf_client.current()
            && (current.serial(), keys.tls_sha256) != cache.0
        {
            match build(&keys, &current) {
                Ok(config) => *cache = ((current.serial(), keys.tls_sha256), config),
                Err(e) => tracing::error!(error = %e, "peer TLS configuration not rebuilt"),
            }
        }
        cache.1.clone()
    })
}
