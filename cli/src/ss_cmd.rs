//! `lintas ss …`

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use lintas_globalconf::{SystemClock, iso8601};
use lintas_identifiers::{HostPort, ServerId, SubsystemId};
use lintas_ss::manage::model::{ClientCertInfo, ConfStatus, GrantSpec, LogStatus, ServiceInfo};
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
        /// Make the signing and log keys in this token.
        #[command(flatten)]
        token: crate::token_args::TokenArgs,
    },
    /// Send certificate requests for this server's keys to the registry.
    Register {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// One-time enrolment token from the registry administrator (pre-approves).
        #[arg(long, env = "LINTAS_ENROLMENT_TOKEN")]
        token: Option<String>,
    },
    /// Ask the registry about the registration (storing certificates once approved);
    /// once enrolled and running, whether the server can serve and why not, in plain
    /// words or `--json`. Exits non-zero while the running server is not ready (with
    /// `--json`, also when it is not running).
    Status {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// The running server's readiness as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Maintenance mode: `on` makes readiness fail, lets exchanges in flight finish and
    /// refuses new ones (UNAVAILABLE, retriable), and publishes it in the global
    /// configuration; `off` ends it. Kept across restarts.
    Maintenance {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Fetch, verify and cache the global configuration; check this server is in it.
    Conf {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// Print the configuration held as JSON (the management API's
        /// `/api/v1/configuration`), after the same checks.
        #[arg(long)]
        json: bool,
    },
    /// Operational monitoring: one record per exchange of the running server (who
    /// called what, sizes, how it ended, how long each part took, trace id), newest
    /// hours kept per opmon_retention_days; one page at a time.
    Opmon {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// Exchanges that started at or after this RFC 3339 time.
        #[arg(long)]
        from: Option<String>,
        /// Exchanges that started before this RFC 3339 time.
        #[arg(long)]
        to: Option<String>,
        /// Only this client (INSTANCE/CLASS/MEMBER/SUBSYSTEM).
        #[arg(long)]
        client: Option<String>,
        /// Only this service (package.Service).
        #[arg(long)]
        service: Option<String>,
        /// Where the previous page ended (printed after it).
        #[arg(long)]
        cursor: Option<String>,
        /// Records per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the page as JSON (records and next_cursor).
        #[arg(long)]
        json: bool,
    },
    /// The state of the running server's log: records, checkpoints, witness, trusted
    /// time. Exits non-zero while time-stamping is failing (the alarm).
    LogStatus {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// Print the state as JSON (the management API's `/api/v1/log`).
        #[arg(long)]
        json: bool,
    },
    /// This server's certificates.
    Certs {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: crate::ss_certs_cmd::CertsCommand,
    },
    /// Write one encrypted, signed backup: configuration, keys and certificates, the
    /// configuration cache, services, grants and client certificates, and the whole
    /// record log. Works while the server runs (its state store is read over the admin
    /// socket) and while it is stopped.
    Backup(crate::backup_cmd::SsBackupArgs),
    /// Restore a backup as a new node, on this or a fresh machine: checks the passphrase,
    /// every byte against the signed manifest, the signer against the instance's
    /// anchor, and opens the log; then asks the registry's witness whether it has seen
    /// more of this log than the backup holds (refused if so: the newer records would
    /// be lost) and fetches the newest configuration. Nothing is written when a check
    /// fails.
    Restore(crate::backup_cmd::RestoreArgs),
    /// Run the security server: consumer endpoint for local applications, provider
    /// endpoint for peer servers, admin socket.
    Serve {
        #[arg(long, default_value = "ss.toml")]
        config: PathBuf,
        /// Load and check configuration, keys, certificates and state, then exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Services this server provides (changes apply to the running server at once).
    Service {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Local applications' TLS client certificates, each registered for one subsystem
    /// (changes apply to the running server at once).
    ClientCert {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: ClientCertCommand,
    },
    /// Who may call the services (changes apply to the running server at once).
    Acl {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: AclCommand,
    },
    /// How often clients may call the services (changes apply to the running server at
    /// once, and are published in the catalogue).
    Quota {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: crate::quota_cmd::QuotaCommand,
    },
    /// Subscriptions to the topics of the publishers this server hosts.
    Events {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: crate::events_cmd::EventsCommand,
    },
    /// Users of the management API and console, with their roles.
    User {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: crate::users_cmd::UserCommand,
    },
    /// API keys for automating the management API.
    ApiKey {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: crate::users_cmd::ApiKeyCommand,
    },
    /// The admin audit log: every change, who made it, when and from where.
    AdminLog {
        #[arg(long, default_value = "ss.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: crate::users_cmd::AdminLogCommand,
    },
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Map a provider subsystem's gRPC service to the application implementing it, or
    /// (with --rest) a REST service code to the base URL of its backend.
    Add {
        /// Provider subsystem, INSTANCE/CLASS/MEMBER/SUBSYSTEM.
        provider: String,
        /// gRPC service, package.Service; with --rest, the service code.
        service: String,
        /// http://host:port of the application, or https://host:port with --ca; with
        /// --rest, the backend's base URL (http(s)://host:port/optional/path).
        #[arg(long, required_unless_present = "topic")]
        endpoint: Option<String>,
        /// A topic the provider publishes events on (no endpoint): its grants say who
        /// may subscribe.
        #[arg(long, conflicts_with_all = ["endpoint", "rest", "large_messages", "proto"])]
        topic: bool,
        /// A REST service: calls to /r1/PROVIDER/SERVICE/PATH go to ENDPOINT/PATH as they
        /// are (X-Road's REST protocol).
        #[arg(long, conflicts_with_all = ["proto", "proto_paths"])]
        rest: bool,
        /// PEM file of the certificates to trust for an https endpoint.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// With --rest: the backend's OpenAPI 3.0 document (JSON or YAML). gRPC
        /// descriptors are generated from it and published, one method per operation,
        /// so gRPC consumers can call the backend too.
        #[arg(long, requires = "rest", conflicts_with = "openapi_from_backend")]
        openapi: Option<PathBuf>,
        /// With --rest: the path under the base URL where the backend serves its
        /// OpenAPI document (/openapi.yaml); the security server fetches it.
        #[arg(long, requires = "rest")]
        openapi_from_backend: Option<String>,
        /// The .proto file defining the service, for applications that do not serve gRPC
        /// reflection (otherwise the server asks the application).
        #[arg(long)]
        proto: Option<PathBuf>,
        /// Where the .proto file's imports are found (default: its folder). Repeatable.
        #[arg(long = "proto-path")]
        proto_paths: Vec<PathBuf>,
        /// A gRPC service whose messages may be larger than max_message_bytes (4 MiB):
        /// consumers' servers carry every unary call to it in signed chunks, so that an
        /// answer of any size (up to max_body_bytes) gets through. Costs some latency.
        #[arg(long, conflicts_with = "rest")]
        large_messages: bool,
    },
    Remove {
        provider: String,
        service: String,
    },
    /// List them (`--json`: `{"items": [...]}`).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClientCertCommand {
    /// Register an application's certificate (PEM or DER; self-signed is fine).
    Add {
        /// The subsystem it acts for, INSTANCE/CLASS/MEMBER/SUBSYSTEM.
        client: String,
        #[arg(long)]
        cert: PathBuf,
    },
    /// Create a key and self-signed certificate for an application and register it.
    Create {
        client: String,
        #[arg(long)]
        key_out: PathBuf,
        #[arg(long)]
        cert_out: PathBuf,
    },
    Remove {
        /// SHA-256 fingerprint as `list` shows it.
        fingerprint: String,
    },
    /// List them (`--json`: `{"items": [...]}`).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AclCommand {
    /// Allow a client (member or subsystem) or a global group (group:CODE) to call a
    /// service, or only one of its methods.
    Grant {
        provider: String,
        service: String,
        /// INSTANCE/CLASS/MEMBER[/SUBSYSTEM] or group:CODE.
        subject: String,
        /// One method; for a REST service an HTTP method (GET, POST, ...).
        #[arg(long)]
        method: Option<String>,
        /// For a REST service, the path pattern the grant is limited to: `*` matches
        /// within a segment, `**` across segments (/persons/*, /persons/**).
        #[arg(long)]
        path: Option<String>,
    },
    Revoke {
        provider: String,
        service: String,
        subject: String,
        #[arg(long)]
        method: Option<String>,
        #[arg(long)]
        path: Option<String>,
    },
    /// List them (`--json`: `{"items": [...]}`).
    List {
        #[arg(long)]
        json: bool,
    },
}

/// The log's state in plain words.
fn print_log_status(st: &lintas_proto::ss::v1::LogStatusReply) {
    println!("records: {}", st.records);
    println!(
        "newest checkpoint: {} records, signed {}",
        st.checkpoint_size,
        iso8601(st.checkpoint_unix_ms / 1000)
    );
    println!("witnessed by the registry: {} records", st.witnessed_size);
    println!(
        "time-stamped: {} records; {} s since the last time-stamp, {} failed attempts since",
        st.timestamped_size, st.seconds_without_timestamp, st.timestamp_failures
    );
}

/// A running server's readiness in plain words: the verdict, then every component.
fn health_words(health: &lintas_proto::ss::v1::HealthReply) -> String {
    let mut out = if health.ready {
        "ready: the server can serve\n".to_owned()
    } else {
        "NOT READY: the server refuses new exchanges or cannot serve them\n".to_owned()
    };
    for c in &health.components {
        let line = match c.state.as_str() {
            "ready" => format!("  {:<14} ok\n", c.name),
            "warning" => format!("  {:<14} warning: {}\n", c.name, c.reason),
            _ => format!("  {:<14} NOT READY: {}\n", c.name, c.reason),
        };
        out.push_str(&line);
    }
    out
}

pub(crate) fn open(config: &std::path::Path) -> Result<Node> {
    Ok(Node::open(SsConfig::load(config, crate::env())?)?)
}

#[derive(Subcommand)]
pub enum MaintenanceCommand {
    /// Take the server out of service.
    On {
        /// Why, for peers' operators and the log (one line).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Put the server back into service.
    Off,
}

impl Args {
    /// Whether this runs the daemon (which logs at info level by default).
    pub fn serving(&self) -> bool {
        matches!(
            self.command,
            Command::Serve {
                check_config: false,
                ..
            }
        )
    }
}

pub async fn admin(
    config: &std::path::Path,
) -> Result<
    lintas_proto::ss::v1::security_server_admin_client::SecurityServerAdminClient<
        tonic::transport::Channel,
    >,
> {
    let config = SsConfig::load(config, crate::env())?;
    Ok(lintas_ss::admin::connect(&config.data_dir).await?)
}

pub async fn run(args: Args) -> Result<()> {
    use lintas_proto::ss::v1 as pb;
    match args.command {
        Command::Serve {
            config,
            check_config,
        } => crate::ss_serve::serve(&config, check_config).await?,
        Command::User { config, command } => crate::users_cmd::user(&config, command).await?,
        Command::ApiKey { config, command } => crate::users_cmd::api_key(&config, command).await?,
        Command::AdminLog { config, command } => {
            crate::users_cmd::admin_log(&config, command).await?
        }
        Command::Service { config, command } => {
            let mut client = admin(&config).await?;
            match command {
                ServiceCommand::Add {
                    provider,
                    service,
                    endpoint,
                    rest,
                    ca,
                    openapi,
                    openapi_from_backend,
                    proto,
                    proto_paths,
                    large_messages,
                    topic,
                } => {
                    let openapi = match openapi {
                        Some(path) => {
                            std::fs::read(&path).with_context(|| path.display().to_string())?
                        }
                        None => Vec::new(),
                    };
                    let descriptor_set = match proto {
                        Some(file) => compile_proto(&file, &proto_paths)?,
                        None => Vec::new(),
                    };
                    let ca_pem = match ca {
                        Some(path) => std::fs::read_to_string(&path)
                            .with_context(|| path.display().to_string())?,
                        None => String::new(),
                    };
                    let r = client
                        .add_service(pb::Service {
                            provider,
                            service,
                            endpoint: endpoint.unwrap_or_default(),
                            ca_pem,
                            descriptor_set,
                            methods: Vec::new(),
                            rest,
                            openapi,
                            openapi_path: openapi_from_backend.unwrap_or_default(),
                            large_messages,
                            described: false,
                            topic,
                        })
                        .await?;
                    print_added(r.into_inner());
                }
                ServiceCommand::Remove { provider, service } => {
                    let s = client
                        .remove_service(pb::ServiceRef { provider, service })
                        .await?
                        .into_inner();
                    println!("{} of {} removed", s.service, s.provider);
                }
                ServiceCommand::List { json } => {
                    let services = all_pages(|r| {
                        let mut c = client.clone();
                        async move {
                            let p = c.list_services(r).await?.into_inner();
                            Ok((p.services, p.next_page_token))
                        }
                    })
                    .await?;
                    if json {
                        return crate::json::items(services.into_iter().map(ServiceInfo::from));
                    }
                    if services.is_empty() {
                        println!("no services");
                    }
                    for s in services {
                        println!("{}  {}  ->  {}", s.provider, s.service, s.endpoint);
                        if s.topic {
                            println!("    topic: its grants say who may subscribe");
                        } else if s.rest {
                            println!(
                                "    REST: /r1/{}/{}/PATH is passed through",
                                s.provider, s.service
                            );
                        } else if s.methods.is_empty() {
                            println!("    (no descriptors published)");
                        } else {
                            println!("    methods: {}", s.methods.join(", "));
                        }
                        if s.large_messages {
                            println!("    large messages: every unary call travels in chunks");
                        }
                    }
                }
            }
        }
        Command::ClientCert { config, command } => {
            let mut client = admin(&config).await?;
            let add = |c: String, der: Vec<u8>| pb::ClientCert {
                client: c,
                certificate: der,
                ..Default::default()
            };
            match command {
                ClientCertCommand::Add { client: c, cert } => {
                    let text = std::fs::read(&cert).with_context(|| cert.display().to_string())?;
                    let der = if text.starts_with(b"-----BEGIN") {
                        lintas_certs::pem::cert_from_pem(
                            &String::from_utf8_lossy(&text),
                            &cert.display().to_string(),
                        )?
                    } else {
                        text
                    };
                    let c = client.add_client_cert(add(c, der)).await?.into_inner();
                    println!("certificate {} may now act for {}", c.fingerprint, c.client);
                }
                ClientCertCommand::Create {
                    client: c,
                    key_out,
                    cert_out,
                } => {
                    let validity = lintas_certs::ca::Validity::starting(
                        std::time::SystemTime::now(),
                        std::time::Duration::from_secs(2 * 365 * 86400),
                    )?;
                    let (key, der) =
                        lintas_certs::ca::self_signed(&["localhost".into()], &c, validity)?;
                    lintas_certs::keys::write(&key_out, &key)?;
                    lintas_certs::files::write_new(
                        &cert_out,
                        lintas_certs::pem::cert_to_pem(&der).as_bytes(),
                        0o644,
                    )?;
                    let c = client.add_client_cert(add(c, der)).await?.into_inner();
                    println!("certificate {} may now act for {}", c.fingerprint, c.client);
                    println!(
                        "the application presents {} with key {} (0600)",
                        cert_out.display(),
                        key_out.display()
                    );
                }
                ClientCertCommand::Remove { fingerprint } => {
                    let c = client
                        .remove_client_cert(pb::ClientCertRef { fingerprint })
                        .await?
                        .into_inner();
                    println!("certificate {} of {} removed", c.fingerprint, c.client);
                }
                ClientCertCommand::List { json } => {
                    let certs = all_pages(|r| {
                        let mut c = client.clone();
                        async move {
                            let p = c.list_client_certs(r).await?.into_inner();
                            Ok((p.certs, p.next_page_token))
                        }
                    })
                    .await?;
                    if json {
                        return crate::json::items(certs.into_iter().map(ClientCertInfo::from));
                    }
                    if certs.is_empty() {
                        println!("no client certificates");
                    }
                    for c in certs {
                        println!(
                            "{}  {}  until {}",
                            c.fingerprint,
                            c.client,
                            lintas_globalconf::iso8601(c.not_after)
                        );
                    }
                }
            }
        }
        Command::Quota { config, command } => crate::quota_cmd::run(&config, command).await?,
        Command::Events { config, command } => crate::events_cmd::run(&config, command).await?,
        Command::Acl { config, command } => {
            let mut client = admin(&config).await?;
            let grant =
                |provider, service, subject, method: Option<String>, path: Option<String>| {
                    pb::Grant {
                        provider,
                        service,
                        method: method.unwrap_or_default(),
                        subject,
                        path: path.unwrap_or_default(),
                    }
                };
            match command {
                AclCommand::Grant {
                    provider,
                    service,
                    subject,
                    method,
                    path,
                } => {
                    let g = client
                        .grant(grant(provider, service, subject, method, path))
                        .await?
                        .into_inner();
                    println!("granted: {}", describe_grant(&g));
                }
                AclCommand::Revoke {
                    provider,
                    service,
                    subject,
                    method,
                    path,
                } => {
                    let g = client
                        .revoke(grant(provider, service, subject, method, path))
                        .await?
                        .into_inner();
                    println!("revoked: {}", describe_grant(&g));
                }
                AclCommand::List { json } => {
                    let grants = all_pages(|r| {
                        let mut c = client.clone();
                        async move {
                            let p = c.list_grants(r).await?.into_inner();
                            Ok((p.grants, p.next_page_token))
                        }
                    })
                    .await?;
                    if json {
                        return crate::json::items(grants.into_iter().map(GrantSpec::from));
                    }
                    if grants.is_empty() {
                        println!("no grants");
                    }
                    for g in grants {
                        let method = if g.method.is_empty() {
                            "*".into()
                        } else {
                            g.method
                        };
                        let path = if g.path.is_empty() {
                            String::new()
                        } else {
                            format!(" {}", g.path)
                        };
                        println!(
                            "{}  {}/{}{path}  <-  {}",
                            g.provider, g.service, method, g.subject
                        );
                    }
                }
            }
        }
        Command::Init {
            dir,
            server_id,
            address,
            anchor,
            clients,
            member_name,
            token,
        } => {
            let mut config = SsConfig::new(server_id, address);
            config.clients = clients;
            config.member_name = member_name;
            config.pkcs11 = token.config()?;
            let path = lintas_ss::init(&dir, &config, &anchor)?;
            let node = open(&path)?;
            let (tls, sign) = node.key_fingerprints()?;
            println!(
                "security server {} created in {}",
                config.server_id,
                dir.display()
            );
            println!("  trust anchor SHA-256: {}", node.anchor.fingerprint);
            println!("  TLS key:     {tls}");
            println!("  signing key: {sign}");
            let (password, made) = match std::env::var("LINTAS_ADMIN_PASSWORD") {
                Ok(p) => (p, false),
                Err(_) => (crate::users_cmd::generated_password(), true),
            };
            lintas_manage::Users::open(&node.paths.users())?.add_user(
                "admin",
                &password,
                &[lintas_manage::Role::SystemAdministrator],
            )?;
            println!(
                "  management API and console: https://{}/ (once serving), user admin (system-administrator)",
                config.management_listen
            );
            if made {
                println!("  admin password (shown once): {password}");
            }
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
                let (tls, sign) = node.key_fingerprints()?;
                println!(
                    "pending approval. Tell the registry administrator these key fingerprints:"
                );
                println!("  TLS key:     {tls}");
                println!("  signing key: {sign}");
                println!("then run: lintas ss status --config {}", config.display());
            }
        }
        Command::Status { config, json } => {
            if !json {
                match open(&config)?.poll().await {
                    Err(e) => {
                        println!("the registry could not be asked about the registration: {e}")
                    }
                    Ok(Enrolment::Pending(s)) => {
                        println!(
                            "registration {} is pending since {}",
                            s.request_id,
                            iso8601(s.submitted_at)
                        );
                        return Ok(());
                    }
                    Ok(Enrolment::Approved(s)) => println!(
                        "registration approved at {} by {}; certificates stored",
                        iso8601(s.decided_at),
                        s.decided_by
                    ),
                }
            }
            let mut client = match admin(&config).await {
                Ok(c) => c,
                // Not serving yet (right after enrolment): nothing more to say, unless
                // a script asked whether it is ready.
                Err(e) if json => return Err(e.context("the server is not running")),
                Err(_) => {
                    println!("the server is not running (start it with `lintas ss serve`)");
                    return Ok(());
                }
            };
            let health = client
                .health(pb::ListRequest::default())
                .await?
                .into_inner();
            if json {
                let components: Vec<serde_json::Value> = health
                    .components
                    .iter()
                    .map(|c| {
                        serde_json::json!({"name": c.name, "state": c.state, "reason": c.reason})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "ready": health.ready,
                        "maintenance": health.maintenance,
                        "maintenance_reason": health.maintenance_reason,
                        "components": components,
                    }))?
                );
            } else {
                print!("{}", health_words(&health));
            }
            if !health.ready {
                anyhow::bail!("the security server is not ready");
            }
        }
        Command::Maintenance { config, command } => {
            let request = match command {
                MaintenanceCommand::On { reason } => pb::MaintenanceRequest { on: true, reason },
                MaintenanceCommand::Off => pb::MaintenanceRequest {
                    on: false,
                    reason: String::new(),
                },
            };
            let state = admin(&config)
                .await?
                .set_maintenance(request)
                .await?
                .into_inner();
            if state.on {
                println!(
                    "maintenance on: readiness fails, exchanges in flight finish, new ones are refused; the registry publishes it with the next service report"
                );
            } else {
                println!("maintenance off: new exchanges are accepted");
            }
        }
        Command::Opmon {
            config,
            from,
            to,
            client,
            service,
            cursor,
            limit,
            json,
        } => {
            crate::opmon_cmd::run(
                &config,
                crate::opmon_cmd::Query {
                    from: from.as_deref(),
                    to: to.as_deref(),
                    client,
                    service,
                    cursor,
                    limit,
                    json,
                },
            )
            .await?
        }
        Command::Certs { config, command } => crate::ss_certs_cmd::run(&config, command).await?,
        Command::Backup(a) => crate::backup_cmd::ss_backup(a).await?,
        Command::Restore(a) => crate::backup_cmd::ss_restore(a).await?,
        Command::LogStatus { config, json } => {
            let st = admin(&config)
                .await?
                .log_status(pb::ListRequest::default())
                .await?
                .into_inner();
            if json {
                crate::json::print(&LogStatus::from(st))?;
            } else {
                print_log_status(&st);
            }
            if st.failing_closed {
                anyhow::bail!(
                    "ALARM: no time-stamp for {} s (more than timestamp_fail_closed_secs = {}): the server refuses calls",
                    st.seconds_without_timestamp,
                    st.timestamp_fail_closed_secs
                );
            }
            if st.timestamp_failures > 0 {
                anyhow::bail!(
                    "ALARM: time-stamping is failing ({} attempts); calls will be refused after {} s without a time-stamp",
                    st.timestamp_failures,
                    st.timestamp_fail_closed_secs
                );
            }
        }
        Command::Conf { config, json } => {
            let node = open(&config)?;
            let client = node.conf_client(Arc::new(SystemClock))?;
            let conf = match client.fetch().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("warning: {e}");
                    client.current()?
                }
            };
            if json {
                node.check_listed(&conf)?;
                return crate::json::print(&ConfStatus {
                    serial: conf.serial(),
                    generated_at: conf.conf.generated_at,
                    expires_at: conf.conf.expires_at,
                    members: conf.conf.members.len(),
                    servers: conf.conf.servers.len(),
                });
            }
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

/// Compiles a .proto file (and its imports) to an encoded descriptor set.
fn compile_proto(file: &std::path::Path, paths: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let folder = file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (includes, name) = if paths.is_empty() {
        (
            vec![folder],
            PathBuf::from(file.file_name().unwrap_or_default()),
        )
    } else {
        (paths.to_vec(), file.to_path_buf())
    };
    let compiler = lintas_adapter::compile(&name, &includes).map_err(anyhow::Error::msg)?;
    Ok(compiler.encode_file_descriptor_set())
}

/// Every item of a list the admin socket answers in pages.
pub(crate) async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>>
where
    F: FnMut(lintas_proto::ss::v1::ListRequest) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = page(lintas_proto::ss::v1::ListRequest {
            page_token: token,
            ..Default::default()
        })
        .await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

/// What adding a service did, in words.
fn print_added(added: lintas_proto::ss::v1::ServiceAdded) {
    let Some(s) = added.service else { return };
    if s.rest {
        println!(
            "REST service {} of {} passes calls to {}; consumers call /r1/{}/{}/PATH",
            s.service, s.provider, s.endpoint, s.provider, s.service
        );
        if s.described {
            println!(
                "gRPC consumers call service {} (methods generated from its OpenAPI document: {})",
                s.service,
                s.methods.join(", ")
            );
        }
    } else if s.described {
        println!(
            "{} of {} is served by {}; its descriptors are published (methods: {})",
            s.service,
            s.provider,
            s.endpoint,
            s.methods.join(", ")
        );
    } else {
        println!(
            "{} of {} is served by {}; no descriptors are published ({}), so consumers cannot discover its methods or call it by REST",
            s.service, s.provider, s.endpoint, added.no_descriptors
        );
    }
}

/// A grant in words.
fn describe_grant(g: &lintas_proto::ss::v1::Grant) -> String {
    let what = match (g.method.as_str(), g.path.as_str()) {
        ("", "") => format!("every method of {}", g.service),
        (m, "") => format!("{}/{m}", g.service),
        ("", path) => format!("any method {path} of {}", g.service),
        (m, path) => format!("{m} {path} of {}", g.service),
    };
    format!("{} may call {what} of {}", g.subject, g.provider)
}
