//! `lintas demo`: a whole instance on loopback, in a temporary directory, with OS-chosen
//! ports. A registry starts; a population registry (provider) and a social-assistance
//! agency (consumer) join through the real registration flow — one approved by an
//! administrator, one with an enrolment token — fetch the signed global configuration
//! over HTTP, and see the registry refuse what it must refuse.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lintas_globalconf::{SystemClock, iso8601};
use lintas_identifiers::{ServerId, SubsystemId};
use lintas_proto::registry::v1 as pb;
use lintas_registry::{InitOptions, RegistryConfig};
use lintas_ss::{Enrolment, Node, SsConfig};
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the instance's files in this directory instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

struct Member {
    node: Node,
    name: &'static str,
    /// Holds the server's future provider port so nothing else takes it meanwhile.
    _reserved: TcpListener,
}

async fn new_server(
    root: &Path,
    anchor: &Path,
    server: &str,
    client: &str,
    name: &'static str,
) -> Result<Member> {
    // The provider endpoint comes with the message exchange; reserve a free port for it.
    let reserved = TcpListener::bind("127.0.0.1:0").await?;
    let dir = root.join(server.replace('/', "_"));
    let mut config = SsConfig::new(
        server.parse::<ServerId>()?,
        reserved.local_addr()?.to_string().parse()?,
    );
    config.clients = vec![client.parse::<SubsystemId>()?];
    config.member_name = name.into();
    let path = lintas_ss::init(&dir, &config, anchor)?;
    let node = Node::open(SsConfig::load(&path, std::iter::empty())?)?;
    Ok(Member {
        node,
        name,
        _reserved: reserved,
    })
}

pub async fn run(args: Args) -> Result<()> {
    let temp;
    let root = match args.dir {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_owned()
        }
    };
    println!(
        "lintas demo: a whole instance on loopback, files in {}",
        root.display()
    );

    step(
        1,
        "The registry operator creates instance ID and starts the central registry.",
    );
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let report = lintas_registry::init(
        &InitOptions {
            instance: "ID".parse()?,
            dir: root.join("registry"),
            grpc_listen: grpc.local_addr()?,
            http_listen: http.local_addr()?,
            public_host: "127.0.0.1".into(),
            admin_name: "admin".parse()?,
        },
        Arc::new(SystemClock),
    )?;
    let config = RegistryConfig::load(&report.config_path, std::iter::empty())?;
    let registry = lintas_registry::open(&config, Arc::new(SystemClock))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve_config = config.clone();
    let server = tokio::spawn(async move {
        lintas_registry::serve(registry, &serve_config, grpc, http, async {
            let _ = stopped.await;
        })
        .await
    });
    println!("    registry gRPC (TLS 1.3): {}", config.public_url);
    println!(
        "    global configuration:    {}",
        config.globalconf_urls.join(", ")
    );
    println!("    trust anchor SHA-256:    {}", report.anchor_fingerprint);

    let result = exchange(
        &root,
        &report.anchor_path,
        &report.admin_dir,
        &config.public_url,
    )
    .await;
    let _ = stop.send(());
    server.await.context("registry task")??;
    result?;
    println!(
        "\nDemo finished: every step above used the real registry, TLS 1.3 and signed documents."
    );
    Ok(())
}

async fn exchange(root: &Path, anchor: &Path, admin_dir: &Path, url: &str) -> Result<()> {
    let mut admin = lintas_registry::admin::connect(admin_dir, url)?;

    step(
        2,
        "Two organisations install security servers; each generates its own keys.",
    );
    let provider = new_server(
        root,
        anchor,
        "ID/GOV/KEMENDAGRI/SS1",
        "ID/GOV/KEMENDAGRI/DUKCAPIL",
        "Kementerian Dalam Negeri (population registry)",
    )
    .await?;
    let consumer = new_server(
        root,
        anchor,
        "ID/GOV/KEMENSOS/SS1",
        "ID/GOV/KEMENSOS/DTKS",
        "Kementerian Sosial (social assistance)",
    )
    .await?;
    for m in [&provider, &consumer] {
        println!("    {} — {}", m.node.config.server_id, m.name);
    }

    step(
        3,
        "KEMENDAGRI registers; the administrator compares key fingerprints and approves.",
    );
    let submitted = provider.node.register(None).await?;
    println!("    request {} is pending", submitted.request_id);
    let pending = admin
        .list_registrations(pb::ListRegistrationsRequest {
            state: pb::RegistrationState::Pending as i32,
        })
        .await?
        .into_inner()
        .registrations;
    let (tls_fp, sign_fp) = provider.node.key_fingerprints();
    let request = pending
        .iter()
        .find(|r| r.tls_key_fingerprint == tls_fp && r.signing_key_fingerprint == sign_fp)
        .context("the pending request does not carry the server's key fingerprints")?;
    println!(
        "    administrator sees the same TLS key fingerprint {}…",
        &tls_fp[..16]
    );
    admin
        .approve(pb::DecisionRequest {
            request_id: request.request_id.clone(),
            reason: String::new(),
        })
        .await?;
    match provider.node.poll().await? {
        Enrolment::Approved(s) => println!(
            "    approved by {}; certificates checked and stored",
            s.decided_by
        ),
        Enrolment::Pending(_) => bail!("registration still pending after approval"),
    }

    step(
        4,
        "KEMENSOS enrols with a one-time token the administrator created.",
    );
    let token = admin
        .create_enrolment_token(pb::CreateEnrolmentTokenRequest {
            server_id: consumer.node.config.server_id.to_string(),
            ttl_seconds: 600,
        })
        .await?
        .into_inner();
    let status = consumer.node.register(Some(&token.token)).await?;
    println!(
        "    token accepted (valid until {}): {}",
        iso8601(token.expires_at),
        if status.state() == pb::RegistrationState::Approved {
            "approved at once, certificates stored"
        } else {
            "NOT approved"
        }
    );
    match consumer.node.register(Some(&token.token)).await {
        Err(e) => println!("    reusing the token is refused: {e}"),
        Ok(_) => bail!("a used enrolment token was accepted twice"),
    }

    step(
        5,
        "Both servers fetch the signed global configuration over HTTP and find themselves in it.",
    );
    for m in [&provider, &consumer] {
        let client = m.node.conf_client(Arc::new(SystemClock))?;
        let conf = client.fetch().await?;
        m.node.check_listed(&conf)?;
        println!(
            "    {}: serial {} verified against the anchor, valid until {}; listed with its TLS certificate",
            m.node.config.server_id,
            conf.serial(),
            iso8601(conf.conf.expires_at)
        );
    }

    step(6, "What must be refused is refused.");
    let tampered = {
        let client = consumer.node.conf_client(Arc::new(SystemClock))?;
        let mut blob = client.current()?.blob.clone();
        let i = blob.len() / 2;
        blob[i] ^= 0x01;
        client.accept(&blob).err()
    }
    .context("a tampered global configuration was accepted")?;
    println!("    a global configuration with one flipped bit, by the server: {tampered}");
    let server_as_admin = {
        let dir = root.join("impostor");
        std::fs::create_dir_all(&dir)?;
        let paths = lintas_ss::Paths(consumer.node.config.data_dir.clone());
        std::fs::copy(paths.tls_cert(), lintas_registry::admin::cert_path(&dir))?;
        std::fs::copy(paths.tls_key(), lintas_registry::admin::key_path(&dir))?;
        std::fs::copy(
            admin_dir.join("ca.crt.pem"),
            lintas_registry::admin::ca_path(&dir),
        )?;
        let mut impostor = lintas_registry::admin::connect(&dir, url)?;
        impostor.list_servers(pb::ListServersRequest {}).await.err()
    }
    .context("a security server certificate was allowed to administer the registry")?;
    println!(
        "    a security server certificate calling the admin API, by the registry: {}",
        server_as_admin.message()
    );
    let garbage = malformed_registration(url, anchor).await?;
    println!("    a registration with a malformed CSR, by the registry: {garbage}");

    step(
        7,
        "The administrator revokes KEMENSOS's signing certificate.",
    );
    let servers = admin
        .list_servers(pb::ListServersRequest {})
        .await?
        .into_inner()
        .servers;
    let serial = servers
        .iter()
        .find(|s| s.id == consumer.node.config.server_id.to_string())
        .and_then(|s| s.certificates.iter().find(|c| c.role == "signing"))
        .map(|c| c.serial.clone())
        .context("consumer signing certificate not listed")?;
    let revoked = admin
        .revoke(pb::RevokeRequest {
            serial: serial.clone(),
            reason: "key compromise drill".into(),
        })
        .await?
        .into_inner();
    let conf = provider
        .node
        .conf_client(Arc::new(SystemClock))?
        .fetch()
        .await?;
    let entry = conf
        .server(&consumer.node.config.server_id)
        .context("consumer missing from configuration")?;
    println!(
        "    serial {}: certificate {serial} is listed as revoked and KEMENSOS now has {} signing certificates",
        revoked.conf_serial,
        entry.signing_certs.len()
    );
    if !conf
        .conf
        .revoked
        .iter()
        .any(|r| lintas_certs::hex(&r.serial) == serial)
        || !entry.signing_certs.is_empty()
    {
        bail!("revocation did not reach the global configuration");
    }
    Ok(())
}

/// Sends a registration whose CSRs are garbage; returns the registry's refusal.
async fn malformed_registration(url: &str, anchor: &Path) -> Result<String> {
    let anchor = lintas_globalconf::Anchor::load(anchor)?;
    let tls =
        lintas_transport::client_config(anchor.trust_store(), lintas_certs::Role::Registry, None)?;
    let mut client =
        pb::registration_client::RegistrationClient::new(lintas_transport::channel(url, tls)?);
    let refused = client
        .submit(pb::RegistrationRequest {
            server_id: "ID/GOV/KEMENSOS/SS9".into(),
            address: "127.0.0.1:9".into(),
            tls_csr: b"not a CSR".to_vec(),
            signing_csr: b"not a CSR".to_vec(),
            ..Default::default()
        })
        .await
        .err()
        .context("a registration with malformed CSRs was accepted")?;
    Ok(refused.message().to_owned())
}
