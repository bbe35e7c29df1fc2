//! `lintas registry …`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use lintas_globalconf::{SystemClock, iso8601};
use lintas_identifiers::Code;
use lintas_proto::registry::v1 as pb;
use lintas_registry::{InitOptions, RegistryConfig};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a new instance: CA, signing keys, first administrator, trust anchor.
    Init {
        /// Directory to create the instance in.
        #[arg(long)]
        dir: PathBuf,
        /// Instance code, e.g. ID.
        #[arg(long)]
        instance: Code,
        #[arg(long, default_value = "127.0.0.1:4400")]
        grpc_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:4401")]
        http_listen: SocketAddr,
        /// Host name or IP address security servers use to reach the registry.
        #[arg(long, default_value = "127.0.0.1")]
        public_host: String,
        /// Name of the first administrator.
        #[arg(long, default_value = "admin")]
        admin_name: Code,
        /// Keep the state in this PostgreSQL database (a postgres:// URL) instead of the
        /// embedded one, so that several registry nodes can share it.
        #[arg(long, default_value = "")]
        database: String,
        /// Another registry node over the same --database, as its gRPC URL and its
        /// configuration URL: `https://reg2.example:4400,http://reg2.example:4401/globalconf`
        /// (repeatable). The anchor lists every node; servers fail over between them.
        #[arg(long = "other-node", value_parser = parse_node)]
        other_nodes: Vec<lintas_registry::NodeUrls>,
        /// Make the configuration-signing and time-stamping keys in this token.
        #[command(flatten)]
        token: crate::token_args::TokenArgs,
    },
    /// Run the registry.
    Serve {
        /// The registry.toml written by `init`.
        #[arg(long, default_value = "registry.toml")]
        config: PathBuf,
        /// Load and check the configuration, keys and database, then exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Administer a running registry with an administrator certificate.
    Admin(AdminArgs),
    /// Write one encrypted backup signed with the configuration-signing key: the
    /// configuration, every key, the administrator's credentials, users and admin audit
    /// log, and every record of the store (embedded or PostgreSQL). While the registry
    /// runs on its embedded database, its records are read over the admin API.
    Backup(crate::backup_cmd::RegistryBackupArgs),
    /// Rotate the instance's own keys in three steps: `add` a new key and certificate
    /// (announced to every server in the anchor the configurations carry), `activate`
    /// it once servers hold that anchor, `retire` the old certificate. Files only: each
    /// step takes effect when the registry next starts.
    Keys {
        #[command(subcommand)]
        step: KeysStep,
    },
    /// Restore a backup as a new registry node (into its own new directory, and into
    /// the embedded database or an empty PostgreSQL database as its configuration
    /// says). Refused when the instance has published a higher configuration serial
    /// than the backup holds, or when that cannot be learnt, unless --serial-floor names
    /// it: the restored registry then publishes above it.
    Restore(crate::backup_cmd::RegistryRestoreArgs),
    /// Serve a verified copy of the global configuration to a region's servers (a
    /// configuration mirror). Servers name it in `globalconf_urls` of ss.toml.
    Mirror {
        /// The instance's trust anchor: what the mirror verifies against.
        #[arg(long)]
        anchor: PathBuf,
        /// Where the verified copy is kept across restarts.
        #[arg(long)]
        dir: PathBuf,
        /// Where the region's servers fetch `/globalconf`.
        #[arg(long, default_value = "0.0.0.0:4401")]
        listen: SocketAddr,
        /// Where to fetch from (repeatable; default: the anchor's configuration URLs).
        #[arg(long)]
        upstream: Vec<String>,
        /// Seconds between fetches.
        #[arg(long, default_value_t = 30)]
        poll_secs: u64,
        /// `/metrics`, `/healthz` and `/readyz`.
        #[arg(long, default_value = "127.0.0.1:4492")]
        ops_listen: SocketAddr,
    },
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// registry.toml, for the registry URL and the administrator directory.
    #[arg(long, default_value = "registry.toml")]
    config: PathBuf,
    /// Administrator credentials (admin.crt.pem, admin.key.pem, ca.crt.pem).
    #[arg(long, env = "LINTAS_ADMIN_DIR")]
    admin_dir: Option<PathBuf>,
    /// Registry gRPC URL (https://host:port); several, comma-separated, for registry
    /// nodes tried in order.
    #[arg(long, env = "LINTAS_ADMIN_URL", value_delimiter = ',')]
    url: Vec<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List registration requests.
    Requests {
        /// pending, approved, rejected or all.
        #[arg(long, default_value = "pending")]
        state: String,
        /// Only requests for servers whose id contains this text.
        #[arg(long, default_value = "")]
        filter: String,
        /// Print `{"items": [...]}` instead.
        #[arg(long)]
        json: bool,
    },
    /// Approve a registration request (issues its certificates).
    Approve { request_id: String },
    /// Reject a registration request.
    Reject {
        request_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Add a member organisation.
    MemberAdd {
        /// INSTANCE/CLASS/MEMBER
        id: String,
        #[arg(long)]
        name: String,
    },
    /// Add a subsystem to a member.
    SubsystemAdd {
        /// INSTANCE/CLASS/MEMBER/SUBSYSTEM
        id: String,
    },
    /// List members and subsystems (all pages).
    Members {
        /// Only members whose id or name contains this text.
        #[arg(long, default_value = "")]
        filter: String,
        /// Print `{"items": [...]}` instead.
        #[arg(long)]
        json: bool,
    },
    /// List security servers and their certificates (all pages).
    Servers {
        /// Only servers whose id contains this text.
        #[arg(long, default_value = "")]
        filter: String,
        /// Print `{"items": [...]}` instead.
        #[arg(long)]
        json: bool,
    },
    /// List another RFC 3161 time-stamping authority in the global configuration (or
    /// replace the one of that name); servers use it with `timestamping_authority`.
    TsaAdd {
        name: String,
        /// Where RFC 3161 requests are POSTed (http://).
        #[arg(long)]
        url: String,
        /// The TSA's certificate (PEM), with the timeStamping extended key usage.
        #[arg(long)]
        cert: std::path::PathBuf,
    },
    /// Remove a listed time-stamping authority from the global configuration.
    TsaRemove { name: String },
    /// Create a global group.
    GroupAdd {
        code: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Add a client to a global group.
    GroupMemberAdd { code: String, client: String },
    /// Remove a client from a global group.
    GroupMemberRemove { code: String, client: String },
    /// Revoke a certificate by serial number (hex, as `servers` lists it).
    Revoke {
        serial: String,
        #[arg(long)]
        reason: String,
    },
    /// Issue a certificate for another administrator from their CSR (see `lintas certs
    /// csr`). Only certificates issued this way (or at init) are accepted, and each can
    /// be revoked.
    AdminAdd {
        /// The new administrator's name.
        name: String,
        /// Their certificate signing request (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// Where to write their certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a one-time enrolment token that pre-approves one server's registration.
    Token {
        /// INSTANCE/CLASS/MEMBER/SERVERCODE
        server_id: String,
        /// Validity in seconds (default: the registry's token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
    },
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

/// `--other-node GRPC_URL,GLOBALCONF_URL`.
fn parse_node(text: &str) -> Result<lintas_registry::NodeUrls, String> {
    let (grpc, conf) = text.split_once(',').ok_or(
        "expected GRPC_URL,GLOBALCONF_URL, e.g. https://reg2:4400,http://reg2:4401/globalconf",
    )?;
    if !grpc.starts_with("https://") || !conf.starts_with("http://") {
        return Err("the gRPC URL starts with https://, the configuration URL with http://".into());
    }
    Ok(lintas_registry::NodeUrls {
        grpc_url: grpc.to_owned(),
        globalconf_url: conf.to_owned(),
    })
}

fn print_servers(servers: Vec<pb::ServerInfo>) {
    for s in servers {
        println!("{}  {}", s.id, s.address);
        println!("    clients: {}", s.clients.join(", "));
        for c in s.certificates {
            println!(
                "    {:<8} serial {}  until {}{}",
                c.role,
                c.serial,
                iso8601(c.not_after),
                if c.revoked { "  REVOKED" } else { "" }
            );
        }
    }
}

pub async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Init {
            dir,
            instance,
            grpc_listen,
            http_listen,
            public_host,
            admin_name,
            database,
            other_nodes,
            token,
        } => {
            let report = lintas_registry::init(
                &InitOptions {
                    instance,
                    dir,
                    grpc_listen,
                    http_listen,
                    public_host,
                    admin_name,
                    database,
                    other_nodes,
                    pkcs11: token.config()?,
                },
                Arc::new(SystemClock),
            )?;
            println!("instance created");
            println!("  configuration:  {}", report.config_path.display());
            println!("  trust anchor:   {}", report.anchor_path.display());
            println!("  anchor SHA-256: {}", report.anchor_fingerprint);
            println!("  administrator:  {}", report.admin_dir.display());
            let (password, made) = match std::env::var("LINTAS_ADMIN_PASSWORD") {
                Ok(p) => (p, false),
                Err(_) => (crate::users_cmd::generated_password(), true),
            };
            let registry_dir = report
                .config_path
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            lintas_manage::Users::open(&lintas_registry::Paths(registry_dir).users())?.add_user(
                "admin",
                &password,
                &[lintas_manage::Role::SystemAdministrator],
            )?;
            let config =
                lintas_registry::RegistryConfig::load(&report.config_path, std::iter::empty())?;
            println!(
                "  management API and console: https://{}/ (once serving), user admin (system-administrator)",
                config.management_listen
            );
            if made {
                println!("  admin password (shown once): {password}");
            }
            println!(
                "copy the trust anchor to every security server and announce its SHA-256 out of band"
            );
            Ok(())
        }
        Command::Serve {
            config,
            check_config,
        } => serve(config, check_config).await,
        Command::Backup(a) => crate::backup_cmd::registry_backup(a).await,
        Command::Keys { step } => keys_step(step).await,
        Command::Restore(a) => crate::backup_cmd::registry_restore(a).await,
        Command::Mirror {
            anchor,
            dir,
            listen,
            upstream,
            poll_secs,
            ops_listen,
        } => {
            anyhow::ensure!(
                (1..=3600).contains(&poll_secs),
                "--poll-secs must be between 1 and 3600"
            );
            if let Some(u) = upstream.iter().find(|u| !u.starts_with("http://")) {
                anyhow::bail!("--upstream {u} must start with http://");
            }
            let opts = lintas_registry::mirror::MirrorOptions {
                anchor: lintas_globalconf::Anchor::load(&anchor)?,
                dir,
                upstream,
                poll: std::time::Duration::from_secs(poll_secs),
                limits: Default::default(),
            };
            let http = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding --listen {listen}"))?;
            let ops = tokio::net::TcpListener::bind(ops_listen)
                .await
                .with_context(|| format!("binding --ops-listen {ops_listen}"))?;
            let shutdown = crate::shutdown_signal().context("installing signal handlers")?;
            crate::listening(format!(
                "lintas configuration mirror listening: http={} ops={}",
                http.local_addr()?,
                ops.local_addr()?
            ));
            let listeners = lintas_registry::mirror::MirrorListeners { http, ops };
            lintas_registry::mirror::serve_mirror(opts, Arc::new(SystemClock), listeners, shutdown)
                .await?;
            Ok(())
        }
        Command::Admin(a) => admin(a).await,
    }
}

async fn serve(path: PathBuf, check_only: bool) -> Result<()> {
    let config = RegistryConfig::load(&path, crate::env())?;
    if check_only {
        let Some(registry) = lintas_registry::check(&config, Arc::new(SystemClock))? else {
            println!(
                "{}: configuration and keys are valid (instance {}; the registry is running and holds its database)",
                path.display(),
                config.instance
            );
            return Ok(());
        };
        println!(
            "{}: configuration, keys and database are valid (instance {}, global configuration serial {})",
            path.display(),
            config.instance,
            lintas_globalconf::verify_ignoring_expiry(
                &registry.latest_conf(),
                &lintas_globalconf::Anchor::load(
                    &lintas_registry::Paths(config.data_dir.clone()).anchor()
                )?,
                std::time::SystemTime::now()
            )?
            .serial()
        );
        return Ok(());
    }
    let registry = lintas_registry::open(&config, Arc::new(SystemClock))?;
    let grpc = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding grpc_listen {}", config.grpc_listen))?;
    let http = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding http_listen {}", config.http_listen))?;
    let ops = tokio::net::TcpListener::bind(config.ops_listen)
        .await
        .with_context(|| format!("binding ops_listen {}", config.ops_listen))?;
    let management = tokio::net::TcpListener::bind(config.management_listen)
        .await
        .with_context(|| format!("binding management_listen {}", config.management_listen))?;
    let shutdown = crate::shutdown_signal().context("installing signal handlers")?;
    crate::listening(format!(
        "lintas registry listening: grpc={} http={} ops={} management=https://{}/",
        grpc.local_addr()?,
        http.local_addr()?,
        ops.local_addr()?,
        management.local_addr()?
    ));
    let listeners = lintas_registry::Listeners {
        grpc,
        http,
        ops,
        management: Some(management),
    };
    lintas_registry::serve(registry, &config, listeners, shutdown).await?;
    Ok(())
}

pub fn state_name(s: i32) -> &'static str {
    match pb::RegistrationState::try_from(s).unwrap_or_default() {
        pb::RegistrationState::Pending => "pending",
        pb::RegistrationState::Approved => "approved",
        pb::RegistrationState::Rejected => "rejected",
        pb::RegistrationState::Unspecified => "unknown",
    }
}

/// Prints one registration the way an administrator reviews it.
pub fn print_registration(r: &pb::RegistrationStatus) {
    println!(
        "{}  {}{}",
        r.request_id,
        state_name(r.state),
        if r.renewal {
            "  (server already registered: renewal or move)"
        } else {
            ""
        }
    );
    println!("    server:    {} at {}", r.server_id, r.address);
    println!("    member:    {}", r.member_name);
    println!("    clients:   {}", r.clients.join(", "));
    println!(
        "    submitted: {}{}",
        iso8601(r.submitted_at),
        if r.source.is_empty() {
            String::new()
        } else {
            format!(" from {}", r.source)
        }
    );
    println!("    TLS key:     {}", r.tls_key_fingerprint);
    println!("    signing key: {}", r.signing_key_fingerprint);
    if r.decided_at > 0 {
        println!(
            "    decided:   {} by {}",
            iso8601(r.decided_at),
            r.decided_by
        );
    }
    if !r.reason.is_empty() {
        println!("    reason:    {}", r.reason);
    }
}

async fn admin(a: AdminArgs) -> Result<()> {
    let (dir, urls) = match (a.admin_dir, a.url) {
        (Some(d), urls) if !urls.is_empty() => (d, urls),
        (dir, urls) => {
            let config = RegistryConfig::load(&a.config, crate::env()).with_context(
                || "give --admin-dir and --url, or --config pointing at registry.toml",
            )?;
            let urls = if urls.is_empty() {
                config.node_urls().into_iter().map(str::to_owned).collect()
            } else {
                urls
            };
            (
                dir.unwrap_or_else(|| lintas_registry::Paths(config.data_dir.clone()).admin_dir()),
                urls,
            )
        }
    };
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut client = lintas_registry::admin::connect_any(&dir, &urls)?;
    let serial = |r: tonic::Response<pb::AdminResponse>| {
        println!(
            "done; global configuration serial {} includes the change",
            r.into_inner().conf_serial
        );
    };
    match a.command {
        AdminCommand::Requests {
            state,
            filter,
            json,
        } => {
            let state = match state.as_str() {
                "pending" => pb::RegistrationState::Pending,
                "approved" => pb::RegistrationState::Approved,
                "rejected" => pb::RegistrationState::Rejected,
                "all" => pb::RegistrationState::Unspecified,
                other => bail!("--state must be pending, approved, rejected or all, not '{other}'"),
            };
            let (mut token, mut all) = (String::new(), Vec::new());
            loop {
                let page = client
                    .list_registrations(pb::ListRegistrationsRequest {
                        state: state as i32,
                        filter: filter.clone(),
                        page_size: 0,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.registrations);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if json {
                return crate::json::items(all.iter().map(crate::json::registration));
            }
            all.iter().for_each(print_registration);
            if all.is_empty() {
                println!("no registrations");
            }
        }
        AdminCommand::Approve { request_id } => {
            let r = client
                .approve(pb::DecisionRequest {
                    request_id,
                    reason: String::new(),
                })
                .await?
                .into_inner();
            print_registration(&r);
        }
        AdminCommand::Reject { request_id, reason } => {
            let r = client
                .reject(pb::DecisionRequest { request_id, reason })
                .await?
                .into_inner();
            print_registration(&r);
        }
        AdminCommand::MemberAdd { id, name } => {
            serial(client.add_member(pb::AddMemberRequest { id, name }).await?)
        }
        AdminCommand::SubsystemAdd { id } => {
            serial(client.add_subsystem(pb::AddSubsystemRequest { id }).await?)
        }
        AdminCommand::Members { filter, json } => {
            let (mut token, mut all) = (String::new(), Vec::new());
            loop {
                let page = client
                    .list_members(pb::ListMembersRequest {
                        filter: filter.clone(),
                        page_size: 0,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.members);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if json {
                return crate::json::items(all.iter().map(crate::json::member));
            }
            for m in all {
                println!("{}  {}", m.id, m.name);
                for s in m.subsystems {
                    println!("    {}/{s}", m.id);
                }
            }
        }
        AdminCommand::Servers { filter, json } => {
            let (mut token, mut all) = (String::new(), Vec::new());
            loop {
                let page = client
                    .list_servers(pb::ListServersRequest {
                        filter: filter.clone(),
                        page_size: 0,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.servers);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if json {
                return crate::json::items(all.iter().map(crate::json::server));
            }
            print_servers(all);
        }
        AdminCommand::TsaAdd { name, url, cert } => {
            let der = lintas_certs::files::read_cert(&cert)?;
            serial(
                client
                    .add_timestamping_authority(pb::TimestampingAuthorityRequest {
                        name,
                        url,
                        cert: der,
                    })
                    .await?,
            )
        }
        AdminCommand::TsaRemove { name } => serial(
            client
                .remove_timestamping_authority(pb::TimestampingAuthorityRequest {
                    name,
                    ..Default::default()
                })
                .await?,
        ),
        AdminCommand::GroupAdd { code, description } => serial(
            client
                .add_group(pb::AddGroupRequest { code, description })
                .await?,
        ),
        AdminCommand::GroupMemberAdd { code, client: c } => serial(
            client
                .add_group_member(pb::GroupMemberRequest { code, client: c })
                .await?,
        ),
        AdminCommand::GroupMemberRemove { code, client: c } => serial(
            client
                .remove_group_member(pb::GroupMemberRequest { code, client: c })
                .await?,
        ),
        AdminCommand::Revoke { serial: s, reason } => serial(
            client
                .revoke(pb::RevokeRequest { serial: s, reason })
                .await?,
        ),
        AdminCommand::AdminAdd { name, csr, out } => {
            let data = std::fs::read(&csr).with_context(|| csr.display().to_string())?;
            let csr = lintas_certs::pem::csr_from_pem_or_der(&data, "CSR")?;
            let cert = client
                .issue_admin_certificate(pb::IssueAdminCertificateRequest {
                    name: name.clone(),
                    csr,
                })
                .await?
                .into_inner()
                .certificate;
            lintas_certs::files::write_new(
                &out,
                lintas_certs::pem::cert_to_pem(&cert).as_bytes(),
                0o644,
            )?;
            println!(
                "administrator certificate for {name} written to {}; give it with the registry's ca.crt.pem to {name}",
                out.display()
            );
        }
        AdminCommand::Token { server_id, ttl } => {
            let r = client
                .create_enrolment_token(pb::CreateEnrolmentTokenRequest {
                    server_id,
                    ttl_seconds: ttl.unwrap_or(0),
                })
                .await?
                .into_inner();
            println!("{}", r.token);
            eprintln!(
                "one-time token, valid until {}; give it to the server operator for `lintas ss register --token`",
                iso8601(r.expires_at)
            );
        }
    }
    Ok(())
}

/// One step of a rotation of the registry's own keys.
#[derive(Subcommand)]
pub enum KeysStep {
    /// Make the new key and certificate (`*.next`) and list the certificate in the
    /// anchor beside the current one (TSA and TLS certificates are not in it).
    Add {
        #[command(flatten)]
        keys: KeysArgs,
        /// With tls: a host name or address the new certificate names (repeat for
        /// each; default: those the current one names), e.g. for a new registry node.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Move the new key and certificate into place (run again to finish one cut short).
    /// Refused until a configuration's validity after `add` unless --now.
    Activate {
        #[command(flatten)]
        keys: KeysArgs,
        /// Activate before every server can have fetched the anchor announcing the key
        /// (those that have not are locked out until given the new anchor).
        #[arg(long)]
        now: bool,
    },
    /// List only the certificate in use in the anchor (conf-signing, ca). Retiring a CA
    /// asks the running registry for its configuration, and is refused while the
    /// registry's own certificates or any server's depend on the old CA alone.
    Retire(KeysArgs),
}

#[derive(clap::Args)]
pub struct KeysArgs {
    /// conf-signing, ca, tsa or tls.
    kind: lintas_registry::rotation::KeyKind,
    #[arg(long, default_value = "registry.toml")]
    config: PathBuf,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

async fn keys_step(step: KeysStep) -> anyhow::Result<()> {
    use lintas_registry::rotation;
    let at = std::time::SystemTime::now();
    let (args, now) = match &step {
        KeysStep::Add { keys, .. } | KeysStep::Retire(keys) => (keys, false),
        KeysStep::Activate { keys, now } => (keys, *now),
    };
    let config = RegistryConfig::load(&args.config, crate::env())?;
    let done = match &step {
        KeysStep::Add { hosts, .. } => rotation::add(&config, args.kind, hosts, at)?,
        KeysStep::Activate { .. } => rotation::activate(&config, args.kind, at, now)?,
        KeysStep::Retire(_) if args.kind == rotation::KeyKind::Ca => {
            // Which servers still depend on the old CA: the configuration published now.
            let paths = lintas_registry::Paths(config.data_dir.clone());
            let anchor = lintas_globalconf::Anchor::load(&paths.anchor())?;
            let current = lintas_globalconf::fetch_once(&config.globalconf_urls, &anchor, at)
                .await
                .map_err(|e| {
                    lintas_registry::RegistryServeError::Refused(format!(
                        "retiring a CA needs the configuration the registry publishes now (to see which servers still depend on the old CA), and none was had: {e}; start the registry"
                    ))
                })?;
            rotation::retire(&config, args.kind, at, Some(&current.conf))?
        }
        KeysStep::Retire(_) => rotation::retire(&config, args.kind, at, None)?,
    };
    if args.json {
        crate::json::print(&done)?;
    } else {
        println!(
            "{}: {} done (certificate SHA-256 {}; anchor SHA-256 now {})",
            args.config.display(),
            done.step,
            done.cert_sha256,
            done.anchor_sha256
        );
        println!("next: {}", done.next);
    }
    Ok(())
}
