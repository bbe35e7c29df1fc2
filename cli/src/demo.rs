//! `lintas demo`: a whole instance on loopback, in a temporary directory, with OS-chosen
//! ports and no setup. A registry starts; a population registry (Kemendagri, provider)
//! and a social-assistance ministry (Kemensos, consumer) join through the real
//! registration flow, run their security servers, and make real calls: one allowed, one
//! denied by access rights, one with a tampered signature, one after a revocation.
//! Legacy systems join through adapters, and the population registry publishes a death
//! that social assistance and health insurance hear of (`demo/events.rs`); social
//! assistance pays a state-revenue bill twice under one idempotency key and is charged
//! once (`demo/payment.rs`). At the end
//! an auditor verifies both servers' evidence of the answered call offline.
//! Every step uses the real components; the demo fails if anything that must be
//! refused is not, or if the evidence does not verify.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lintas_examples::kependudukan::v1::penduduk_client::PendudukClient;
use lintas_examples::kependudukan::v1::{CariNikRequest, DataPenduduk};
use lintas_globalconf::{SystemClock, iso8601};
use lintas_identifiers::ClientId;
use lintas_log::RecordKind;
use lintas_proto::registry::v1 as pb;
use lintas_ss::Enrolment;
use lintas_ss::access::{Grant, ServiceEntry, Subject};
use lintas_ss::daemon::SecurityServer;
use tokio::net::TcpListener;

mod events;
mod legacy;
mod payment;

use legacy::{BPJS_CLIENT, legacy_systems};

#[derive(clap::Args)]
pub struct Args {
    /// Keep the instance's files in this directory instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the network running after the scenario and print how to call it, until
    /// Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

const PROVIDER: &str = "ID/GOV/KEMENDAGRI/SS1";
const DUKCAPIL: &str = "ID/GOV/KEMENDAGRI/DUKCAPIL";
const CONSUMER: &str = "ID/GOV/KEMENSOS/SS1";
const DTKS: &str = "ID/GOV/KEMENSOS/DTKS";
const PKH: &str = "ID/GOV/KEMENSOS/PKH";
const SERVICE: &str = "kependudukan.v1.Penduduk";
const NIK: &str = "3174012305870001";
const PROTO: &str = include_str!("../../examples/proto/kependudukan/v1/penduduk.proto");
type AdminClient = pb::registry_admin_client::RegistryAdminClient<tonic::transport::Channel>;

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
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
    let mut running = crate::network::Running::default();

    step(
        1,
        "The registry operator creates instance ID and starts the central registry.",
    );
    let (report, config) = crate::network::start_registry(&root, &mut running).await?;
    println!("    registry gRPC (TLS 1.3): {}", config.public_url);
    println!(
        "    global configuration:    {}",
        config.globalconf_urls.join(", ")
    );
    println!("    trust anchor SHA-256:    {}", report.anchor_fingerprint);

    let result = scenario(
        &root,
        &report.anchor_path,
        &report.admin_dir,
        &config.public_url,
        args.keep_running,
        &mut running,
    )
    .await;
    running.stop().await?;
    result?;
    println!(
        "\nDemo finished: every step above used the real registry, security servers, TLS 1.3, signatures and durable records."
    );
    Ok(())
}

async fn scenario(
    root: &Path,
    anchor: &Path,
    admin_dir: &Path,
    url: &str,
    keep_running: bool,
    running: &mut crate::network::Running,
) -> Result<()> {
    let mut admin = lintas_registry::admin::connect(admin_dir, url)?;

    step(
        2,
        "Two ministries install security servers; each generates its own keys.",
    );
    let provider = crate::network::new_server(
        root,
        anchor,
        PROVIDER,
        &[DUKCAPIL],
        "Kementerian Dalam Negeri (population registry)",
        false,
    )
    .await?;
    let consumer = crate::network::new_server(
        root,
        anchor,
        CONSUMER,
        &[DTKS, PKH],
        "Kementerian Sosial (social assistance)",
        false,
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
            ..Default::default()
        })
        .await?
        .into_inner()
        .registrations;
    let (tls_fp, sign_fp) = provider.node.key_fingerprints()?;
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
            server_id: CONSUMER.into(),
            ttl_seconds: 600,
        })
        .await?
        .into_inner();
    let status = consumer.node.register(Some(&token.token)).await?;
    if status.state() != pb::RegistrationState::Approved {
        bail!("a valid enrolment token did not approve the registration");
    }
    println!(
        "    token accepted (valid until {}): approved at once, certificates stored",
        iso8601(token.expires_at)
    );
    let reuse = consumer
        .node
        .register(Some(&token.token))
        .await
        .err()
        .context("a used enrolment token was accepted twice")?;
    println!("    reusing the token is refused: {reuse}");

    step(
        5,
        "Both servers fetch the signed global configuration over HTTP and find themselves in it.",
    );
    for m in [&provider, &consumer] {
        let conf = m.node.conf_client(Arc::new(SystemClock))?.fetch().await?;
        m.node.check_listed(&conf)?;
        println!(
            "    {}: serial {} verified against the anchor, valid until {}",
            m.node.config.server_id,
            conf.serial(),
            iso8601(conf.conf.expires_at)
        );
    }

    step(6, "The registry and the servers refuse what they must.");
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
        let paths = &consumer.node.paths;
        std::fs::copy(paths.tls_cert(), lintas_registry::admin::cert_path(&dir))?;
        std::fs::copy(paths.tls_key(), lintas_registry::admin::key_path(&dir))?;
        std::fs::copy(
            admin_dir.join("ca.crt.pem"),
            lintas_registry::admin::ca_path(&dir),
        )?;
        let mut impostor = lintas_registry::admin::connect(&dir, url)?;
        impostor
            .list_servers(pb::ListServersRequest::default())
            .await
            .err()
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
        "Both security servers start; KEMENDAGRI publishes its population service to DTKS only.",
    );
    let app = TcpListener::bind("127.0.0.1:0").await?;
    let app_url = format!("http://{}", app.local_addr()?);
    let stop = running.stopper();
    running.tasks.push(tokio::spawn(async move {
        Ok(lintas_examples::population_registry::serve(app, stop).await?)
    }));
    let consumer_paths = consumer.node.paths.clone();
    let provider_cert = provider.node.paths.consumer_cert();
    let mut servers = Vec::new();
    let (mut consumer_url, mut provider_url) = (String::new(), String::new());
    for m in [provider, consumer] {
        let local = TcpListener::bind("127.0.0.1:0").await?;
        let local_addr = local.local_addr()?;
        let ops = TcpListener::bind("127.0.0.1:0").await?;
        let ops_addr = ops.local_addr()?;
        let server = SecurityServer::open(m.node, Arc::new(SystemClock))?;
        let stop = running.stopper();
        let serving = server.clone();
        let listeners = lintas_ss::serve::Listeners {
            consumer: local,
            provider: m.peer,
            ops,
            management: None,
        };
        running.tasks.push(tokio::spawn(async move {
            Ok(lintas_ss::serve::serve(serving, listeners, stop).await?)
        }));
        println!("    {}: local applications call {local_addr}", server.id);
        println!("      metrics http://{ops_addr}/metrics, health http://{ops_addr}/readyz");
        if server.id.to_string() == CONSUMER {
            consumer_url = format!("http://{local_addr}");
        } else {
            provider_url = format!("http://{local_addr}");
        }
        servers.push(server);
    }
    let (provider, consumer) = (&servers[0], &servers[1]);
    provider.access.add_service(ServiceEntry {
        provider: DUKCAPIL.parse()?,
        service: SERVICE.parse()?,
        endpoint: app_url.clone(),
        ca_pem: None,
        descriptor_set: None,
        rest: false,
        large_messages: false,
        topic: false,
        openapi: None,
    })?;
    provider.access.grant(Grant {
        provider: DUKCAPIL.parse()?,
        service: SERVICE.parse()?,
        method: Some("CariNik".into()),
        subject: Subject::Client(ClientId::Subsystem(DTKS.parse()?)),
        path: None,
    })?;
    println!("    {SERVICE} of {DUKCAPIL} is served by the population registry at {app_url}");
    println!("    {DTKS} may call CariNik; {PKH} may not");
    let apps = [
        local_app(consumer, root, DTKS, "dtks")?,
        local_app(consumer, root, PKH, "pkh")?,
    ];
    let consumer_cert = consumer_paths.consumer_cert();
    println!(
        "    KEMENSOS registered a TLS client certificate for each of its applications; they trust the endpoint's certificate {}",
        consumer_cert.display()
    );
    let (dtks, pkh) = (&apps[0], &apps[1]);

    step(8, "Real calls through the bus.");
    let answer = cari(&consumer_url, &consumer_cert, dtks, DTKS)
        .await
        .context("the allowed call failed")?;
    // The consumer server tells the application the message id it signed under.
    let message_id = answer
        .metadata()
        .get("lintas-message-id")
        .and_then(|v| v.to_str().ok())
        .context("the answer carries no lintas-message-id")?
        .to_owned();
    let person = answer.into_inner();
    println!(
        "    {DTKS} asks for NIK {NIK}: {} born {} in {}, {} — signed, verified and recorded on both sides",
        person.nama, person.tanggal_lahir, person.tempat_lahir, person.provinsi
    );
    let denied = cari(&consumer_url, &consumer_cert, pkh, PKH)
        .await
        .err()
        .context("a call without access rights was answered")?;
    println!(
        "    {PKH} asks the same: refused by the {}: {}",
        source(&denied),
        denied.message()
    );
    let impostor = cari(&consumer_url, &consumer_cert, pkh, DTKS)
        .await
        .err()
        .context("an application was allowed to act for another subsystem")?;
    println!(
        "    {PKH}'s application claims to be {DTKS}: refused by the {}: {}",
        source(&impostor),
        impostor.message()
    );
    let forged = inject_tampered_signature(provider, &consumer_paths).await?;
    println!("    a request whose signature was altered in transit: refused: {forged}");

    println!("\n    Records (durable before any answer was given):");
    for server in [provider, consumer] {
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..server.log.len() {
            if let Some(r) = server.log.get(i)? {
                *kinds.entry(kind_name(r.kind).into()).or_default() += 1;
            }
        }
        let counts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "    {}: {} — in {}",
            server.id,
            counts.join(", "),
            root.join(server.id.to_string().replace('/', "_"))
                .join("records")
                .display()
        );
    }

    println!(
        "\n    Operational monitoring on {} (`lintas ss opmon`), one record per exchange:",
        provider.id
    );
    for line in opmon_lines(provider).await? {
        println!("    {line}");
    }

    step(
        9,
        "Legacy systems join through adapters; KEMENSOS's bansos application calls all three.",
    );
    let bpjs = legacy_systems(
        root,
        anchor,
        &mut admin,
        running,
        provider,
        consumer,
        &consumer_url,
        &consumer_cert,
        dtks,
    )
    .await?;

    step(
        10,
        "Dukcapil publishes a death; social assistance and health insurance, subscribed through the bus, both hear of it.",
    );
    let bpjs_app = local_app(&bpjs.server, root, BPJS_CLIENT, "jkn")?;
    let dukcapil_app = local_app(provider, root, DUKCAPIL, "dukcapil")?;
    events::deaths(
        running,
        events::Local {
            server: provider,
            url: &provider_url,
            cert: &provider_cert,
            app: &dukcapil_app,
        },
        [
            events::Local {
                server: consumer,
                url: &consumer_url,
                cert: &consumer_cert,
                app: dtks,
            },
            events::Local {
                server: &bpjs.server,
                url: &bpjs.url,
                cert: &bpjs.cert,
                app: &bpjs_app,
            },
        ],
    )
    .await?;

    step(
        11,
        "KEMENSOS pays a state-revenue (PNBP) bill under an idempotency key; sent twice, it is paid once.",
    );
    payment::paid_once(
        root,
        anchor,
        &mut admin,
        running,
        events::Local {
            server: consumer,
            url: &consumer_url,
            cert: &consumer_cert,
            app: dtks,
        },
    )
    .await?;

    if keep_running {
        let proto_path = root.join("penduduk.proto");
        std::fs::write(&proto_path, PROTO)?;
        println!("\nThe network keeps running. Call it with any gRPC client, for example:");
        println!(
            "    grpcurl -cacert {} -cert {} -key {} -servername localhost \\\n      -import-path {} -proto penduduk.proto \\\n      -H 'lintas-client: {DTKS}' -H 'lintas-service: {DUKCAPIL}' \\\n      -d '{{\"nik\":\"{NIK}\"}}' {} {SERVICE}/CariNik",
            consumer_cert.display(),
            dtks.cert.display(),
            dtks.key.display(),
            root.display(),
            consumer_url.trim_start_matches("http://")
        );
        println!(
            "Its reflection lists what DTKS may call, the legacy services among them:\n    grpcurl -cacert {} -cert {} -key {} -servername localhost \\\n      -H 'lintas-client: {DTKS}' {} list",
            consumer_cert.display(),
            dtks.cert.display(),
            dtks.key.display(),
            consumer_url.trim_start_matches("http://")
        );
        println!("Stop with Ctrl-C.");
        crate::shutdown_signal()?.await;
        return Ok(());
    }

    step(
        12,
        "The administrator revokes KEMENSOS's signing certificate.",
    );
    let servers_listed = admin
        .list_servers(pb::ListServersRequest::default())
        .await?
        .into_inner()
        .servers;
    let serial = servers_listed
        .iter()
        .find(|s| s.id == CONSUMER)
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
    let conf = provider.conf().fetch().await?;
    if !conf
        .conf
        .revoked
        .iter()
        .any(|r| lintas_certs::hex(&r.serial) == serial)
    {
        bail!("revocation did not reach the global configuration");
    }
    println!(
        "    configuration serial {} lists certificate {serial} as revoked",
        revoked.conf_serial
    );
    let refused = cari(&consumer_url, &consumer_cert, dtks, DTKS)
        .await
        .err()
        .context("a request signed with a revoked certificate was answered")?;
    println!(
        "    {DTKS} asks again: refused by the {}: {}",
        source(&refused),
        refused.message()
    );

    step(
        13,
        "An auditor verifies the evidence of the first call offline, trusting only the anchor.",
    );
    let query = lintas_proto::ss::v1::EvidenceQuery {
        message_id: message_id.clone(),
        ..Default::default()
    };
    let anchor_file = lintas_globalconf::Anchor::load(anchor)?;
    let mut reports = Vec::new();
    for (server, file) in [
        (consumer, "evidence-kemensos.pb"),
        (provider, "evidence-kemendagri.pb"),
    ] {
        let bundle = server.evidence.export(&query).await?;
        let path = root.join(file);
        crate::audit_cmd::write_bundle(&path, &bundle)?;
        let report = lintas_audit::verify(&bundle, &anchor_file);
        print!("{}", indent(&crate::audit_cmd::describe(&path, &report)));
        if !report.verified {
            bail!("the evidence of {} did not verify", server.id);
        }
        reports.push(report);
    }
    let cross = lintas_audit::cross_check(&reports[0], &reports[1]);
    if !cross.failures.is_empty() {
        bail!(
            "the two sides' evidence disagrees: {}",
            cross.failures.join("; ")
        );
    }
    for p in cross.proven {
        println!("    proven from both logs: {p}");
    }
    println!(
        "    (the same check from a shell, with the demo run with --dir DIR to keep the files:\n     lintas audit verify {} {} --anchor {})",
        root.join("evidence-kemensos.pb").display(),
        root.join("evidence-kemendagri.pb").display(),
        anchor.display()
    );
    Ok(())
}

/// The provider server's monitoring records, as `lintas ss opmon` prints them.
async fn opmon_lines(server: &Arc<SecurityServer>) -> Result<Vec<String>> {
    use lintas_proto::ss::v1::security_server_admin_server::SecurityServerAdmin;
    let page = server
        .admin()
        .operational_data(tonic::Request::new(Default::default()))
        .await?
        .into_inner();
    Ok(page.records.iter().map(crate::opmon_cmd::line).collect())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// A local application of KEMENSOS: its subsystem and TLS client credentials.
struct App {
    client: &'static str,
    cert: PathBuf,
    key: PathBuf,
}

/// Calls CariNik as `app` over TLS, naming `client` as the caller.
async fn cari(
    consumer_url: &str,
    consumer_cert: &Path,
    app: &App,
    client: &str,
) -> Result<tonic::Response<DataPenduduk>, tonic::Status> {
    let channel = app_channel(consumer_url, consumer_cert, app).await?;
    let mut request = tonic::Request::new(CariNikRequest { nik: NIK.into() });
    let md = request.metadata_mut();
    for (k, v) in [
        ("lintas-client", client),
        ("lintas-service", DUKCAPIL),
        ("lintas-purpose", "verifikasi penerima bansos"),
    ] {
        md.insert(
            k,
            v.parse().map_err(|_| tonic::Status::internal("metadata"))?,
        );
    }
    PendudukClient::new(channel).cari_nik(request).await
}

/// A local application of `client` on `server`: a TLS client certificate registered
/// there, its files written under `root` as FILE.crt.pem and FILE.key.pem.
fn local_app(
    server: &SecurityServer,
    root: &Path,
    client: &'static str,
    file: &str,
) -> Result<App> {
    let validity = lintas_certs::ca::Validity::starting(
        std::time::SystemTime::now(),
        std::time::Duration::from_secs(30 * 86400),
    )?;
    let (key, cert) = lintas_certs::ca::self_signed(&["localhost".into()], file, validity)?;
    server.access.add_client_cert(client.parse()?, &cert)?;
    let cert_path = root.join(format!("{file}.crt.pem"));
    let key_path = root.join(format!("{file}.key.pem"));
    lintas_certs::files::write_new(
        &cert_path,
        lintas_certs::pem::cert_to_pem(&cert).as_bytes(),
        0o644,
    )?;
    lintas_certs::keys::write(&key_path, &key)?;
    Ok(App {
        client,
        cert: cert_path,
        key: key_path,
    })
}

/// `app`'s TLS connection to its security server's consumer endpoint.
async fn app_channel(
    consumer_url: &str,
    consumer_cert: &Path,
    app: &App,
) -> Result<tonic::transport::Channel, tonic::Status> {
    let internal = |e: &dyn std::fmt::Display| tonic::Status::internal(e.to_string());
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| internal(&e));
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(
            consumer_cert,
        )?))
        .identity(tonic::transport::Identity::from_pem(
            read(&app.cert)?,
            read(&app.key)?,
        ))
        .domain_name("localhost");
    tonic::transport::Endpoint::from_shared(consumer_url.replace("http://", "https://"))
        .map_err(|e| internal(&e))?
        .tls_config(tls)
        .map_err(|e| internal(&e))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{} cannot connect: {e}", app.client)))
}

fn source(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get(lintas_ss::daemon::ERROR_SOURCE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("bus")
}

fn kind_name(kind: i32) -> &'static str {
    match RecordKind::try_from(kind).unwrap_or_default() {
        RecordKind::RequestSent => "request sent",
        RecordKind::RequestReceived => "request received",
        RecordKind::ResponseSent => "response sent",
        RecordKind::ResponseReceived => "response received",
        RecordKind::Rejection => "rejection",
        RecordKind::Failed => "failed exchange",
        RecordKind::MessageSent => "stream message sent",
        RecordKind::MessageReceived => "stream message received",
        RecordKind::System | RecordKind::Unspecified => "other",
    }
}

/// Sends the provider server a request signed with KEMENSOS's real key whose signature
/// was then altered, over KEMENSOS's real TLS identity; returns the refusal.
async fn inject_tampered_signature(
    provider: &SecurityServer,
    consumer: &lintas_ss::Paths,
) -> Result<String> {
    use lintas_proto::exchange::v1 as ex;
    let read = |p: PathBuf| lintas_certs::files::read_cert(&p);
    let mut signed = lintas_ss::daemon::sign_request(
        ex::RequestHeader {
            message_id: "demo-tampered".into(),
            client: DTKS.into(),
            service_provider: DUKCAPIL.into(),
            method: format!("/{SERVICE}/CariNik"),
            consumer_server: CONSUMER.into(),
            provider_server: PROVIDER.into(),
            time_unix_ms: lintas_ss::daemon::now_ms(&SystemClock),
            ..Default::default()
        },
        prost::Message::encode_to_vec(&CariNikRequest { nik: NIK.into() }),
        &lintas_certs::keys::read(&consumer.sign_key())?,
        read(consumer.sign_cert())?,
    )?;
    let signature = signed
        .signature
        .as_mut()
        .context("sign_request made no signature")?;
    let last = signature.value.len() - 2;
    signature.value[last] ^= 0x01;
    let conf = provider.conf().current()?;
    let address = conf
        .server(&PROVIDER.parse()?)
        .map(|s| s.address.clone())
        .context("provider missing from configuration")?;
    let tls = lintas_transport::client_config(
        conf.trust_store(),
        lintas_certs::Role::Server,
        Some((
            &read(consumer.tls_cert())?,
            &lintas_certs::keys::read(&consumer.tls_key())?,
        )),
    )?;
    let channel = lintas_transport::channel(&format!("https://{address}"), tls)?;
    let refused = ex::exchange_client::ExchangeClient::new(channel)
        .call(signed)
        .await
        .err()
        .context("a request with an altered signature was accepted")?;
    Ok(format!("{:?}: {}", refused.code(), refused.message()))
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
            log_csr: b"not a CSR".to_vec(),
            ..Default::default()
        })
        .await
        .err()
        .context("a registration with malformed CSRs was accepted")?;
    Ok(refused.message().to_owned())
}
