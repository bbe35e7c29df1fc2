//! The demo's legacy step: three legacy systems join through adapters, Dukcapil's REST
//! API on KEMENDAGRI's server and BPJS Kesehatan's SOAP service and a school database on
//! servers of their own; and how a member joins and publishes a service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use lintas_globalconf::SystemClock;
use lintas_ss::daemon::SecurityServer;
use tokio::net::TcpListener;

use super::{AdminClient, App, DTKS, DUKCAPIL, app_channel, indent};

const BPJS_SERVER: &str = "ID/GOV/BPJSKES/SS1";
pub(super) const BPJS_CLIENT: &str = "ID/GOV/BPJSKES/JKN";
const SCHOOL_SERVER: &str = "ID/GOV/KEMENDIKBUD/SS1";
const SCHOOL_CLIENT: &str = "ID/GOV/KEMENDIKBUD/DAPODIK";
const DUKCAPIL_PROTO: &str = include_str!("../../../examples/proto/dukcapil/v1/kependudukan.proto");
const BPJS_PROTO: &str = include_str!("../../../examples/proto/bpjs/v1/kepesertaan.proto");
const DAPODIK_PROTO: &str = include_str!("../../../examples/proto/dapodik/v1/sekolah.proto");
const DUKCAPIL_ADAPTER: &str = include_str!("../../../examples/adapters/dukcapil-rest.toml");
const BPJS_ADAPTER: &str = include_str!("../../../examples/adapters/bpjs-soap.toml");
const DAPODIK_ADAPTER: &str = include_str!("../../../examples/adapters/dapodik-sql.toml");

/// A security server that joined, and where its local applications call it.
pub(super) struct Joined {
    pub server: Arc<SecurityServer>,
    /// Its consumer endpoint, `http://host:port` (TLS with client certificates).
    pub url: String,
    /// The endpoint's certificate, which local applications trust.
    pub cert: PathBuf,
}

/// A member that joins for the legacy step: enrolled with a one-time token, then served.
pub(super) async fn join(
    root: &Path,
    anchor: &Path,
    admin: &mut AdminClient,
    running: &mut crate::network::Running,
    server: &str,
    client: &str,
    name: &'static str,
) -> Result<Joined> {
    let m = crate::network::new_server(root, anchor, server, &[client], name, false).await?;
    crate::network::enrol_with_token(admin, &m.node, server).await?;
    let consumer = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", consumer.local_addr()?);
    let cert = m.node.paths.consumer_cert();
    let listeners = lintas_ss::serve::Listeners {
        consumer,
        provider: m.peer,
        ops: TcpListener::bind("127.0.0.1:0").await?,
        management: None,
    };
    let s = SecurityServer::open(m.node, Arc::new(SystemClock))?;
    let serving = s.clone();
    let stop = running.stopper();
    running.tasks.push(tokio::spawn(async move {
        Ok(lintas_ss::serve::serve(serving, listeners, stop).await?)
    }));
    Ok(Joined {
        server: s,
        url,
        cert,
    })
}

/// Serves the example adapter configuration `file` (its backend at `backend`, its files
/// written under `root`); returns the adapter's endpoint.
async fn adapter(
    root: &Path,
    running: &mut crate::network::Running,
    file: &str,
    text: &str,
    backend: (&str, &str),
) -> Result<String> {
    let config = root.join(file);
    std::fs::write(
        &config,
        text.replace(backend.0, backend.1)
            .replace("[\"../proto\"]", "[\"proto\"]"),
    )?;
    let adapter = lintas_adapter::load(&config)?;
    let backend = crate::adapter_cmd::backend(&adapter)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = running.stopper();
    let listeners = lintas_adapter::Listeners {
        grpc: listener,
        ops: TcpListener::bind("127.0.0.1:0").await?,
    };
    running.tasks.push(tokio::spawn(async move {
        Ok(lintas_adapter::serve(listeners, &adapter, backend, stop).await?)
    }));
    Ok(url)
}

/// Adds `service` of `provider` at `endpoint` as the server's administrator would
/// (descriptors learned by reflection), grants it to DTKS and publishes it.
pub(super) async fn publish(
    server: &Arc<SecurityServer>,
    provider: &str,
    service: &str,
    endpoint: String,
) -> Result<()> {
    use lintas_ss::manage::model::{GrantSpec, ServiceSpec};
    let manage = server.manage();
    let added = manage
        .add_service(ServiceSpec {
            provider: provider.into(),
            service: service.into(),
            endpoint: endpoint.clone(),
            ..Default::default()
        })
        .await?;
    let methods = match added.no_descriptors {
        None => format!("methods {}", added.service.methods.join(", ")),
        Some(why) => format!("no descriptors published ({why})"),
    };
    println!(
        "    {}: {service} of {provider} served by {endpoint}; {methods}",
        server.id
    );
    manage
        .grant(GrantSpec {
            provider: provider.into(),
            service: service.into(),
            subject: DTKS.into(),
            method: None,
            path: None,
        })
        .await?;
    server.report_services().await?;
    Ok(())
}

/// Three legacy systems join through adapters: Dukcapil's REST API on KEMENDAGRI's
/// server, BPJS Kesehatan's SOAP service and a school database on servers of their own.
/// KEMENSOS's bansos application then assesses a household with all three.
#[allow(clippy::too_many_arguments)]
pub(super) async fn legacy_systems(
    root: &Path,
    anchor: &Path,
    admin: &mut AdminClient,
    running: &mut crate::network::Running,
    provider: &Arc<SecurityServer>,
    consumer: &Arc<SecurityServer>,
    consumer_url: &str,
    consumer_cert: &Path,
    dtks: &App,
) -> Result<Joined> {
    let bpjs = join(
        root,
        anchor,
        admin,
        running,
        BPJS_SERVER,
        BPJS_CLIENT,
        "BPJS Kesehatan (health insurance)",
    )
    .await?;
    let kemendikbud = join(
        root,
        anchor,
        admin,
        running,
        SCHOOL_SERVER,
        SCHOOL_CLIENT,
        "Kementerian Pendidikan (school data)",
    )
    .await?
    .server;
    println!("    {BPJS_SERVER} and {SCHOOL_SERVER} enrol with one-time tokens and start");

    for (file, text) in [
        ("proto/dukcapil/v1/kependudukan.proto", DUKCAPIL_PROTO),
        ("proto/bpjs/v1/kepesertaan.proto", BPJS_PROTO),
        ("proto/dapodik/v1/sekolah.proto", DAPODIK_PROTO),
    ] {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().context("proto folder")?)?;
        std::fs::write(path, text)?;
    }
    let rest_api = TcpListener::bind("127.0.0.1:0").await?;
    let soap_api = TcpListener::bind("127.0.0.1:0").await?;
    let (rest_url, soap_url) = (
        format!("http://{}", rest_api.local_addr()?),
        format!("http://{}", soap_api.local_addr()?),
    );
    let stop = running.stopper();
    running.tasks.push(tokio::spawn(async move {
        Ok(lintas_examples::dukcapil_rest::serve(rest_api, stop).await?)
    }));
    let stop = running.stopper();
    running.tasks.push(tokio::spawn(async move {
        Ok(lintas_examples::bpjs_soap::serve(soap_api, stop).await?)
    }));
    let db = root.join("sekolah.db");
    lintas_examples::sekolah_db::create_sqlite(&db).map_err(anyhow::Error::msg)?;
    println!(
        "    legacy systems, none of which knows lintas: Dukcapil's REST API at {rest_url}, BPJS's SOAP service at {soap_url}, a school database at {}",
        db.display()
    );

    let sqlite = format!("sqlite:{}", db.display());
    let endpoints = [
        adapter(
            root,
            running,
            "dukcapil-rest.toml",
            DUKCAPIL_ADAPTER,
            ("http://127.0.0.1:8081", &rest_url),
        )
        .await?,
        adapter(
            root,
            running,
            "bpjs-soap.toml",
            BPJS_ADAPTER,
            ("http://127.0.0.1:8082", &soap_url),
        )
        .await?,
        adapter(
            root,
            running,
            "dapodik-sql.toml",
            DAPODIK_ADAPTER,
            ("sqlite:../sql/sekolah.db", &sqlite),
        )
        .await?,
    ];
    println!(
        "    three adapters serve them as gRPC services, configured by {}",
        ["dukcapil-rest.toml", "bpjs-soap.toml", "dapodik-sql.toml"]
            .map(|f| root.join(f).display().to_string())
            .join(", ")
    );
    let [dukcapil_at, bpjs_at, school_at] = endpoints;
    publish(provider, DUKCAPIL, "dukcapil.v1.Kependudukan", dukcapil_at).await?;
    publish(&bpjs.server, BPJS_CLIENT, "bpjs.v1.Kepesertaan", bpjs_at).await?;
    publish(&kemendikbud, SCHOOL_CLIENT, "dapodik.v1.Sekolah", school_at).await?;
    let serial = consumer.conf().fetch().await?.serial();
    println!(
        "    the catalogue lists the three services with their descriptors (configuration serial {serial})"
    );

    let channel = app_channel(consumer_url, consumer_cert, dtks).await?;
    let providers = lintas_examples::bansos::Providers {
        dukcapil: DUKCAPIL.into(),
        bpjs: BPJS_CLIENT.into(),
        dapodik: SCHOOL_CLIENT.into(),
    };
    let assessment = lintas_examples::bansos::assess(channel, DTKS, &providers, "3174010101090001")
        .await
        .map_err(anyhow::Error::msg)
        .context("the household assessment failed")?;
    println!(
        "    {DTKS}'s bansos application asks Dukcapil (gRPC), BPJS (gRPC) and the school database (X-Road REST: POST /r1/{SCHOOL_CLIENT}/dapodik.v1.Sekolah/CariSiswa):"
    );
    print!("{}", indent(&indent(&assessment.to_string())));
    Ok(bpjs)
}
