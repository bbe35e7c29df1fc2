//! `lintas certs …`: a throw-away development PKI and certificate inspection.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use lintas_certs::ca::{CsrKey, Validity, make_csr};
use lintas_certs::pem::{cert_to_pem, csr_from_pem_or_der, csr_to_pem};
use lintas_certs::{Ca, CertInfo, Profile, Role, TrustStore, keys};
use lintas_globalconf::{iso8601, unix_secs};
use lintas_identifiers::Code;

const DAY: Duration = Duration::from_secs(86400);

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a development CA (ca.crt.pem, ca.key.pem) in a new directory.
    Ca {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "DEV")]
        instance: Code,
    },
    /// Create a private key (0600) and a certificate signing request for it.
    Csr {
        /// Private key file to create.
        #[arg(long)]
        key_out: PathBuf,
        /// CSR file to create (PEM).
        #[arg(long)]
        csr_out: PathBuf,
    },
    /// Issue a certificate from a CSR with a development CA.
    Issue {
        /// Directory with ca.crt.pem and ca.key.pem.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        csr: PathBuf,
        /// server, member, tsa or admin.
        #[arg(long)]
        role: String,
        /// Server id, member id, or (tsa/admin) a name.
        #[arg(long)]
        id: String,
        /// DNS name or IP of a server (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print what a certificate says: identity, role, serial, validity, key usage.
    Show {
        cert: PathBuf,
        /// Print the certificate's facts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a certificate against a CA for a role.
    Verify {
        #[arg(long)]
        ca: PathBuf,
        /// server, member, tsa, admin, registry or globalconf.
        #[arg(long)]
        role: String,
        cert: PathBuf,
    },
}

/// The roles by the names the command line uses.
const ROLES: [(&str, Role); 7] = [
    ("server", Role::Server),
    ("member", Role::Member),
    ("tsa", Role::Tsa),
    ("admin", Role::Admin),
    ("registry", Role::Registry),
    ("globalconf", Role::GlobalConf),
    ("ca", Role::Ca),
];

fn role(name: &str) -> Result<Role> {
    match ROLES.iter().find(|(n, _)| *n == name) {
        Some((_, r)) => Ok(*r),
        None => bail!(
            "unknown role '{name}'; use server, member, tsa, admin, registry, globalconf or ca"
        ),
    }
}

fn role_name(role: Role) -> &'static str {
    ROLES
        .iter()
        .find(|(_, r)| *r == role)
        .map_or("unknown", |(n, _)| n)
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Ca { out, instance } => {
            std::fs::create_dir_all(&out)?;
            let ca = Ca::create(
                &instance,
                Validity::starting(SystemTime::now(), 3650 * DAY)?,
            )?;
            keys::write(&out.join("ca.key.pem"), ca.key())?;
            lintas_certs::files::write_new(
                &out.join("ca.crt.pem"),
                cert_to_pem(ca.cert_der()).as_bytes(),
                0o644,
            )?;
            println!(
                "development CA for instance {instance} written to {}",
                out.display()
            );
        }
        Command::Csr { key_out, csr_out } => {
            let key = keys::generate()?;
            keys::write(&key_out, &key)?;
            let csr = make_csr(&key, "lintas")?;
            lintas_certs::files::write_new(&csr_out, csr_to_pem(&csr).as_bytes(), 0o644)?;
            println!(
                "key {} (0600) and request {} written",
                key_out.display(),
                csr_out.display()
            );
        }
        Command::Issue {
            ca,
            csr,
            role: r,
            id,
            hosts,
            days,
            out,
        } => {
            let ca_cert = lintas_certs::files::read_cert(&ca.join("ca.crt.pem"))?;
            let ca = Ca::load(ca_cert, keys::read(&ca.join("ca.key.pem"))?)?;
            let data = std::fs::read(&csr).with_context(|| csr.display().to_string())?;
            let key = CsrKey::from_der(&csr_from_pem_or_der(&data, "CSR")?)?;
            let instance = ca.instance().clone();
            let named = |id: &str| Code::parse_part(id, "name");
            let profile = match role(&r)? {
                Role::Server => Profile::Server {
                    id: id.parse()?,
                    hosts,
                },
                Role::Member => Profile::Member(id.parse()?),
                Role::Tsa => Profile::Tsa {
                    instance,
                    name: named(&id)?,
                },
                Role::Admin => Profile::Admin {
                    instance,
                    name: named(&id)?,
                },
                other => bail!("certificates for {other} are created by `lintas registry init`"),
            };
            let cert = ca.issue(
                &key,
                &profile,
                Validity::starting(
                    SystemTime::now(),
                    Duration::from_secs(days.saturating_mul(86400)),
                )?,
            )?;
            lintas_certs::files::write_new(&out, cert_to_pem(&cert).as_bytes(), 0o644)?;
            println!("{} issued to {}", profile.identity(), out.display());
        }
        Command::Show { cert, json } => {
            let info = CertInfo::parse(&lintas_certs::files::read_cert(&cert)?)?;
            let usage: Vec<&str> = [
                (info.digital_signature, "digitalSignature"),
                (info.non_repudiation, "nonRepudiation"),
                (info.server_auth, "serverAuth"),
                (info.client_auth, "clientAuth"),
                (info.time_stamping, "timeStamping"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            if json {
                return crate::json::print(&serde_json::json!({
                    "identity": info.identity.to_string(),
                    "role": role_name(info.identity.role()),
                    "serial": info.serial_hex(),
                    "not_before": unix_secs(info.not_before),
                    "not_after": info.not_after_unix(),
                    "sha256": lintas_certs::hex(&info.sha256()),
                    "usage": usage,
                    "extended_key_usage_critical": info.eku_critical,
                }));
            }
            println!("identity:  {}", info.identity);
            println!("role:      {}", info.identity.role());
            println!("serial:    {}", info.serial_hex());
            println!(
                "valid:     {} to {}",
                iso8601(unix_secs(info.not_before)),
                iso8601(info.not_after_unix())
            );
            println!("sha256:    {}", lintas_certs::hex(&info.sha256()));
            println!(
                "usage:     {}{}",
                usage.join(", "),
                if info.eku_critical {
                    " (extended key usage critical)"
                } else {
                    ""
                }
            );
        }
        Command::Verify { ca, role: r, cert } => {
            let ca = lintas_certs::files::read_cert(&ca)?;
            let der = lintas_certs::files::read_cert(&cert)?;
            let info =
                TrustStore::new([ca.as_slice()])?.verify(&der, role(&r)?, SystemTime::now())?;
            println!(
                "OK: {} is a valid certificate for {}",
                info.identity,
                info.identity.role()
            );
        }
    }
    Ok(())
}
