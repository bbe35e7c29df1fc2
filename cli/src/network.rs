//! Pieces of a whole instance on loopback, shared by `lintas demo` and `lintas bench`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use lintas_globalconf::SystemClock;
use lintas_identifiers::{ServerId, SubsystemId};
use lintas_registry::{InitOptions, InitReport, RegistryConfig};
use lintas_ss::{Node, SsConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct Member {
    pub node: Node,
    pub name: &'static str,
    /// The provider endpoint's listener, bound now so its port goes into the certificate.
    pub peer: TcpListener,
}

/// Creates a security server directory with fresh keys, its provider endpoint bound.
/// With `dev_plaintext_loopback` local applications call it without TLS (development);
/// otherwise they present registered client certificates.
pub async fn new_server(
    root: &Path,
    anchor: &Path,
    server: &str,
    clients: &[&str],
    name: &'static str,
    dev_plaintext_loopback: bool,
) -> Result<Member> {
    new_server_edited(root, anchor, server, clients, name, |c| {
        c.dev_plaintext_loopback = dev_plaintext_loopback;
    })
    .await
}

/// [`new_server`], its configuration changed by `edit` before it is written.
pub async fn new_server_edited(
    root: &Path,
    anchor: &Path,
    server: &str,
    clients: &[&str],
    name: &'static str,
    edit: impl FnOnce(&mut SsConfig),
) -> Result<Member> {
    let peer = TcpListener::bind("127.0.0.1:0").await?;
    let dir = root.join(server.replace('/', "_"));
    let mut config = SsConfig::new(
        server.parse::<ServerId>()?,
        peer.local_addr()?.to_string().parse()?,
    );
    config.clients = clients
        .iter()
        .map(|c| c.parse::<SubsystemId>())
        .collect::<Result<_, _>>()?;
    config.member_name = name.into();
    edit(&mut config);
    let path = lintas_ss::init(&dir, &config, anchor)?;
    let node = Node::open(SsConfig::load(&path, std::iter::empty())?)?;
    Ok(Member { node, name, peer })
}

/// Registers `node` (server `server`) with a one-time enrolment token the registry's
/// administrator creates for it: approved at once, its certificates stored.
pub async fn enrol_with_token(
    admin: &mut lintas_proto::registry::v1::registry_admin_client::RegistryAdminClient<
        tonic::transport::Channel,
    >,
    node: &Node,
    server: &str,
) -> Result<()> {
    let token = admin
        .create_enrolment_token(lintas_proto::registry::v1::CreateEnrolmentTokenRequest {
            server_id: server.into(),
            ttl_seconds: 600,
        })
        .await?
        .into_inner()
        .token;
    let status = node.register(Some(&token)).await?;
    if status.state() != lintas_proto::registry::v1::RegistrationState::Approved {
        anyhow::bail!("{server}: the enrolment token did not approve the registration");
    }
    Ok(())
}

/// Tasks of the running network and how to stop them.
#[derive(Default)]
pub struct Running {
    stops: Vec<oneshot::Sender<()>>,
    pub tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
}

impl Running {
    pub fn stopper(&mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (tx, rx) = oneshot::channel::<()>();
        self.stops.push(tx);
        async {
            let _ = rx.await;
        }
    }

    pub async fn stop(self) -> Result<()> {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.tasks {
            t.await.context("task")??;
        }
        Ok(())
    }
}

/// Creates instance ID in `root/registry` (embedded store) for a registry listening at
/// `grpc` and `http` on loopback.
pub fn init_instance(
    root: &Path,
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
) -> Result<InitReport> {
    Ok(lintas_registry::init(
        &InitOptions {
            instance: "ID".parse()?,
            dir: root.join("registry"),
            grpc_listen: grpc,
            http_listen: http,
            public_host: "127.0.0.1".into(),
            admin_name: "admin".parse()?,
            database: String::new(),
            other_nodes: Vec::new(),
            pkcs11: None,
        },
        Arc::new(SystemClock),
    )?)
}

/// Creates instance ID in `root/registry` on OS-chosen loopback ports and serves it.
pub async fn start_registry(
    root: &Path,
    running: &mut Running,
) -> Result<(InitReport, RegistryConfig)> {
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let report = init_instance(root, grpc.local_addr()?, http.local_addr()?)?;
    let config = RegistryConfig::load(&report.config_path, std::iter::empty())?;
    let registry = lintas_registry::open(&config, Arc::new(SystemClock))?;
    let serve_config = config.clone();
    let stop = running.stopper();
    running.tasks.push(tokio::spawn(async move {
        let ops = TcpListener::bind("127.0.0.1:0").await?;
        let listeners = lintas_registry::Listeners {
            grpc,
            http,
            ops,
            management: None,
        };
        lintas_registry::serve(registry, &serve_config, listeners, stop)
            .await
            .context("registry")
    }));
    Ok((report, config))
}
