//! Rotating the instance's own keys: the configuration-signing key, the CA and the TSA
//! (`lintas registry keys add|activate|retire KIND`).
//!
//! Servers trust what their anchor lists, and take a new anchor from a configuration
//! they verified with the one they hold (`GlobalConf.anchor`). So a new key is
//! announced before it is used and the old one withdrawn after:
//!
//! 1. `add` makes the new key and its certificate beside the current ones (`*.next`)
//!    and writes the anchor listing both; configurations, still signed with the current
//!    key, carry it to every server.
//! 2. `activate`, once every server had time to fetch one (a configuration's validity),
//!    moves the new key and certificate into place: the registry signs (issues,
//!    stamps) with them from its next start. Key before certificate, so running it
//!    again finishes a move cut short.
//! 3. `retire` writes the anchor without the old certificate.
//!
//! Each step changes files only and takes effect when the registry (each node, with
//! its directory copied) next starts. The TSA and TLS certificates are not in the
//! anchor: `add` and `activate` rotate them (configurations list a new TSA certificate
//! from the start after; servers take a TLS certificate of any CA the anchor lists).
//!
//! A new CA also replaces what the old one issued: `activate ca` issues the
//! administrator certificate kept in `admin/` from it, and the configuration-signing,
//! TSA and TLS certificates rotate in their own steps after it. `retire ca` is refused
//! until none of those, and no server the current configuration lists, depends on the
//! old CA alone.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lintas_certs::ca::Validity;
use lintas_certs::{Ca, CertInfo, Identity, Profile, Role, TrustStore, keys};
use lintas_globalconf::Anchor;
use lintas_identifiers::Code;
use lintas_proto::globalconf::v1::GlobalConf;
use serde::Serialize;

use crate::config::RegistryConfig;
use lintas_certs::files::next;

use crate::{Paths, RegistryServeError, YEAR, read_cert, write_cert};

/// Which of the instance's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    ConfSigning,
    Ca,
    Tsa,
    Tls,
}

impl std::str::FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "conf-signing" => Ok(KeyKind::ConfSigning),
            "ca" => Ok(KeyKind::Ca),
            "tsa" => Ok(KeyKind::Tsa),
            "tls" => Ok(KeyKind::Tls),
            other => Err(format!(
                "'{other}': one of conf-signing, ca, tsa, tls (the registry's own keys)"
            )),
        }
    }
}

/// What a step did.
#[derive(Debug, Serialize)]
pub struct Rotated {
    pub kind: KeyKind,
    pub step: &'static str,
    /// SHA-256 of the new certificate (add) or of the one now in use (activate), hex.
    pub cert_sha256: String,
    /// SHA-256 of the anchor file after the step, hex.
    pub anchor_sha256: String,
    /// What to do next, in plain words.
    pub next: String,
}

fn refused(why: String) -> RegistryServeError {
    RegistryServeError::Refused(why)
}

/// The key and certificate files of `kind`.
fn files(paths: &Paths, kind: KeyKind) -> (PathBuf, PathBuf) {
    match kind {
        KeyKind::ConfSigning => (paths.conf_key(), paths.conf_cert()),
        KeyKind::Ca => (paths.ca_key(), paths.ca_cert()),
        KeyKind::Tsa => (paths.tsa_key(), paths.tsa_cert()),
        KeyKind::Tls => (paths.tls_key(), paths.tls_cert()),
    }
}

/// Whether servers learn of a new certificate of `kind` from the anchor (so it is
/// announced, and activated only once every server holds that anchor).
fn in_anchor(kind: KeyKind) -> bool {
    matches!(kind, KeyKind::ConfSigning | KeyKind::Ca)
}

/// Makes the new key and certificate of `kind` beside the current ones, and (for the
/// configuration-signing key and the CA) writes the anchor listing the new certificate
/// beside the current one. A new TLS certificate names `hosts`, or when there are none
/// the hosts the current one names; other kinds take no hosts.
pub fn add(
    config: &RegistryConfig,
    kind: KeyKind,
    hosts: &[String],
    now: SystemTime,
) -> Result<Rotated, RegistryServeError> {
    if kind != KeyKind::Tls && !hosts.is_empty() {
        return Err(refused(format!(
            "hosts are named by the TLS certificate only, not by the {} certificate",
            kind_name(kind)
        )));
    }
    if let Some(empty) = hosts
        .iter()
        .find(|h| h.trim().is_empty() || h.contains(char::is_whitespace))
    {
        return Err(refused(format!("{empty:?} is not a host name or address")));
    }
    let paths = Paths(config.data_dir.clone());
    let (key_path, cert_path) = files(&paths, kind);
    let (next_key, next_cert) = (next(key_path), next(cert_path.clone()));
    // A note of an announcement left by a rotation given up on.
    let _ = std::fs::remove_file(announced(&next_cert));
    for p in [&next_key, &next_cert] {
        if p.exists() {
            return Err(refused(format!(
                "{} exists: a new key waits; activate it (lintas registry keys activate) or remove both *.next files",
                p.display()
            )));
        }
    }
    let instance = &config.instance;
    let ca = || -> Result<Ca, RegistryServeError> {
        Ok(Ca::load(
            read_cert(&paths.ca_cert())?,
            keys::read(&paths.ca_key())?,
        )?)
    };
    let mut anchor = Anchor::load(&paths.anchor())?;
    let cert = match kind {
        KeyKind::Ca => {
            let ca = Ca::create(instance, Validity::starting(now, 20 * YEAR)?)?;
            keys::write(&next_key, ca.key())?;
            anchor = with_certs(&anchor, Some(ca.cert_der()), None)?;
            ca.cert_der().to_vec()
        }
        KeyKind::Tls => {
            // By default the hosts the current one names (every node's).
            let hosts = match hosts {
                [] => CertInfo::parse(&read_cert(&cert_path)?)?.hosts(),
                named => named.to_vec(),
            };
            let key = keys::generate()?;
            keys::write(&next_key, &key)?;
            let profile = Profile::Registry {
                instance: instance.clone(),
                hosts,
            };
            ca()?.issue_for_key(&key, &profile, Validity::starting(now, 2 * YEAR)?)?
        }
        KeyKind::ConfSigning | KeyKind::Tsa => {
            let (profile, years) = match kind {
                KeyKind::ConfSigning => (
                    Profile::GlobalConf {
                        instance: instance.clone(),
                    },
                    5,
                ),
                _ => (
                    Profile::Tsa {
                        instance: instance.clone(),
                        name: Code::parse_part("tsa", "name")
                            .map_err(|e| refused(e.to_string()))?,
                    },
                    10,
                ),
            };
            let date = time::OffsetDateTime::from(now).date();
            let label = format!("lintas {instance} {} {date}", profile.identity());
            let key = lintas_pkcs11::generate(&next_key, config.pkcs11.as_ref(), &label)?;
            let cert =
                ca()?.issue_for_key(&*key, &profile, Validity::starting(now, years * YEAR)?)?;
            if kind == KeyKind::ConfSigning {
                anchor = with_certs(&anchor, None, Some(&cert))?;
            }
            cert
        }
    };
    write_cert(&next_cert, &cert)?;
    if in_anchor(kind) {
        lintas_certs::files::write_atomic(&paths.anchor(), anchor.text.as_bytes(), 0o644)?;
    }
    if kind == KeyKind::Ca {
        admin_cas(&paths, &anchor)?;
    }
    Ok(Rotated {
        kind,
        step: "add",
        cert_sha256: lintas_certs::hex(&lintas_certs::sha256(&cert)),
        anchor_sha256: anchor.fingerprint,
        next: match kind {
            KeyKind::Tsa => "activate it (the registry stamps with it from its next start)".into(),
            KeyKind::Tls => "activate it (the registry presents it from its next start)".into(),
            KeyKind::ConfSigning | KeyKind::Ca => format!(
                "restart the registry so configurations announce the new anchor; after {} s (a configuration's validity) every server holds it: then activate",
                config.conf_validity_secs
            ),
        },
    })
}

/// Moves the new key and certificate of `kind` into place (key first; run again to
/// finish a move cut short). Refused until a configuration's validity has passed since
/// the new certificate was made (servers that have not fetched the anchor announcing it
/// would be locked out), unless `now`.
pub fn activate(
    config: &RegistryConfig,
    kind: KeyKind,
    at: SystemTime,
    now: bool,
) -> Result<Rotated, RegistryServeError> {
    let paths = Paths(config.data_dir.clone());
    let (key_path, cert_path) = files(&paths, kind);
    let next_cert = next(cert_path.clone());
    if !next_cert.exists() {
        return Err(refused(format!(
            "{} does not exist: nothing to activate (lintas registry keys add {} first)",
            next_cert.display(),
            kind_name(kind)
        )));
    }
    let cert = read_cert(&next_cert)?;
    let marker = announced(&next_cert);
    if in_anchor(kind) && !now {
        // Announced as the registry first started after `add`; held by every server one
        // configuration validity later.
        let since = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                refused(
                    "the registry has not announced the anchor listing the new certificate yet: restart it, wait a configuration's validity, then activate (or give --now)".into(),
                )
            })?;
        let validity = i64::try_from(config.conf_validity_secs).unwrap_or(i64::MAX);
        let due = since.saturating_add(validity);
        if lintas_certs::unix_secs(at) < due {
            return Err(refused(format!(
                "servers may not all hold the anchor announcing the new certificate until {} (a configuration's validity after the registry announced it); activate then, or give --now",
                lintas_globalconf::iso8601(due)
            )));
        }
    }
    let anchor = Anchor::load(&paths.anchor())?;
    let listed = match kind {
        KeyKind::ConfSigning => anchor.signing_certs.contains(&cert),
        KeyKind::Ca => anchor.ca_certs.contains(&cert),
        KeyKind::Tsa => true,
        KeyKind::Tls => TrustStore::new(anchor.ca_certs.iter().map(Vec::as_slice))?
            .verify(&cert, Role::Registry, at)
            .is_ok(),
    };
    if !listed {
        return Err(refused(format!(
            "{} lists no {}{}: servers would refuse what it signs",
            paths.anchor().display(),
            if kind == KeyKind::Tls { "CA of " } else { "" },
            next_cert.display()
        )));
    }
    if kind == KeyKind::Ca {
        // The new key waits beside the current one, or is in place already when a move
        // was cut short between key and certificate (`Ca::load` checks it is the
        // certificate's). The administrator's certificate waits beside its own too.
        let waiting = next(key_path.clone());
        let key = keys::read(if waiting.exists() {
            &waiting
        } else {
            &key_path
        })?;
        let ca = Ca::load(cert.clone(), key)?;
        reissue_admin(config, &paths, &ca, at)?;
    }
    lintas_certs::files::switch_in(&key_path, &cert_path)?;
    if kind == KeyKind::Ca {
        admin_switch_in(&paths)?;
    }
    let _ = std::fs::remove_file(&marker);
    lintas_certs::files::sync_dir(&paths.0)?;
    Ok(Rotated {
        kind,
        step: "activate",
        cert_sha256: lintas_certs::hex(&lintas_certs::sha256(&cert)),
        anchor_sha256: anchor.fingerprint,
        next: match kind {
            KeyKind::Tsa | KeyKind::Tls => "restart the registry".into(),
            KeyKind::ConfSigning => "restart the registry; once servers hold a configuration it signed, retire the old certificate".into(),
            KeyKind::Ca => "restart the registry: it issues from the new CA. Rotate the conf-signing, tsa and tls keys (add, activate) so they come from it, have every server renew (lintas ss certs renew) and administrators get new certificates, then retire the old CA".into(),
        },
    })
}

/// Writes the anchor without the certificates of `kind` other than the one in use.
/// Retiring the CA needs `current`, the configuration the registry publishes now: it is
/// refused while a server listed there holds signing certificates of the old CA only.
pub fn retire(
    config: &RegistryConfig,
    kind: KeyKind,
    now: SystemTime,
    current: Option<&GlobalConf>,
) -> Result<Rotated, RegistryServeError> {
    let paths = Paths(config.data_dir.clone());
    let (_, cert_path) = files(&paths, kind);
    if !in_anchor(kind) {
        return Err(refused(format!(
            "a {} certificate is not in the anchor: activating a new one retires the old",
            kind_name(kind)
        )));
    }
    if next(cert_path.clone()).exists() {
        return Err(refused(format!(
            "{} waits: activate it before retiring the other",
            next(cert_path).display()
        )));
    }
    let in_use = read_cert(&cert_path)?;
    let anchor = Anchor::load(&paths.anchor())?;
    if kind == KeyKind::Ca {
        let kept = TrustStore::new([in_use.as_slice()])?;
        check_own(&paths, &kept, now)?;
        let current = current.ok_or_else(|| {
            refused("retiring a CA needs the configuration the registry publishes now (to see which servers still depend on the old CA): start the registry".into())
        })?;
        let behind = still_on_old_ca(current, &kept, now);
        if !behind.is_empty() {
            return Err(refused(format!(
                "{} hold signing certificates of the old CA only: have them renew (lintas ss certs renew) first",
                behind.join(", ")
            )));
        }
    }
    let anchor = match kind {
        KeyKind::Ca => only(&anchor, Some(&in_use), None)?,
        _ => only(&anchor, None, Some(&in_use))?,
    };
    lintas_certs::files::write_atomic(&paths.anchor(), anchor.text.as_bytes(), 0o644)?;
    if kind == KeyKind::Ca {
        admin_cas(&paths, &anchor)?;
    }
    Ok(Rotated {
        kind,
        step: "retire",
        cert_sha256: lintas_certs::hex(&lintas_certs::sha256(&in_use)),
        anchor_sha256: anchor.fingerprint,
        next:
            "restart the registry: configurations announce the anchor without the old certificate"
                .into(),
    })
}

/// Refuses while a certificate the registry presents or signs with (or the
/// administrator's kept in `admin/`) does not chain to `kept`.
fn check_own(paths: &Paths, kept: &TrustStore, now: SystemTime) -> Result<(), RegistryServeError> {
    let admin = crate::admin::cert_path(&paths.admin_dir());
    let mut own = vec![
        (paths.conf_cert(), Role::GlobalConf, "configuration-signing"),
        (paths.tsa_cert(), Role::Tsa, "TSA"),
        (paths.tls_cert(), Role::Registry, "TLS"),
    ];
    if admin.exists() {
        own.push((admin, Role::Admin, "administrator"));
    }
    for (path, role, what) in own {
        if kept.verify(&read_cert(&path)?, role, now).is_err() {
            let step = match role {
                Role::GlobalConf => {
                    "rotate it first (lintas registry keys add conf-signing, then activate)"
                }
                Role::Tsa => "rotate it first (lintas registry keys add tsa, then activate)",
                Role::Registry => "rotate it first (lintas registry keys add tls, then activate)",
                _ => "run lintas registry keys activate ca again to issue it from the CA in use",
            };
            return Err(refused(format!(
                "the registry's {what} certificate {} was issued by the CA being retired: {step}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The servers `conf` lists that hold signing certificates, none of which chains to
/// `kept`.
pub fn still_on_old_ca(conf: &GlobalConf, kept: &TrustStore, now: SystemTime) -> Vec<String> {
    conf.servers
        .iter()
        .filter(|s| {
            !s.signing_certs.is_empty()
                && !s
                    .signing_certs
                    .iter()
                    .any(|c| kept.verify(c, Role::Member, now).is_ok())
        })
        .map(|s| s.id.clone())
        .collect()
}

/// Writes the anchor's CAs to `admin/ca.crt.pem`, the file administrators' tools
/// verify the registry's TLS certificate with.
fn admin_cas(paths: &Paths, anchor: &Anchor) -> Result<(), RegistryServeError> {
    let dir = paths.admin_dir();
    if !dir.exists() {
        return Ok(());
    }
    let pem: String = anchor
        .ca_certs
        .iter()
        .map(|c| lintas_certs::pem::cert_to_pem(c))
        .collect();
    lintas_certs::files::write_atomic(&crate::admin::ca_path(&dir), pem.as_bytes(), 0o644)?;
    Ok(())
}

/// The administrator certificate kept in `admin/`, when the CA in use issued it (as
/// `activate ca` does): the registry records it as it starts. One `activate ca` left
/// waiting (cut short after moving the CA in) is moved into place first.
pub fn reissued_admin(
    paths: &Paths,
    now: SystemTime,
) -> Result<Option<Vec<u8>>, RegistryServeError> {
    let path = crate::admin::cert_path(&paths.admin_dir());
    let ca = read_cert(&paths.ca_cert())?;
    let in_use = TrustStore::new([ca.as_slice()])?;
    let issued = |cert: &[u8]| in_use.verify(cert, Role::Admin, now).is_ok();
    let waiting = next(path.clone());
    if waiting.exists() && issued(&read_cert(&waiting)?) {
        admin_switch_in(paths)?;
    }
    if !path.exists() {
        return Ok(None);
    }
    let cert = read_cert(&path)?;
    Ok(issued(&cert).then_some(cert))
}

/// Moves the administrator certificate `activate ca` issued into place, if one waits.
fn admin_switch_in(paths: &Paths) -> Result<(), RegistryServeError> {
    let path = crate::admin::cert_path(&paths.admin_dir());
    let waiting = next(path.clone());
    if waiting.exists() {
        std::fs::rename(&waiting, &path)
            .map_err(|e| refused(format!("moving {} into place: {e}", waiting.display())))?;
        lintas_certs::files::sync_dir(&paths.admin_dir())?;
    }
    Ok(())
}

/// Issues the administrator certificate kept in `admin/` again, for the same key and
/// name, from `ca`, to wait beside the current one (`admin.crt.pem.next`) until the CA
/// is moved in.
fn reissue_admin(
    config: &RegistryConfig,
    paths: &Paths,
    ca: &Ca,
    now: SystemTime,
) -> Result<(), RegistryServeError> {
    let dir = paths.admin_dir();
    let cert_path = crate::admin::cert_path(&dir);
    if !cert_path.exists() {
        return Ok(());
    }
    let Identity::Admin { name, .. } = CertInfo::parse(&read_cert(&cert_path)?)?.identity else {
        return Err(refused(format!(
            "{} is not an administrator certificate",
            cert_path.display()
        )));
    };
    let key = keys::read(&crate::admin::key_path(&dir))?;
    let profile = Profile::Admin {
        instance: config.instance.clone(),
        name,
    };
    let cert = ca.issue_for_key(&key, &profile, Validity::starting(now, YEAR)?)?;
    lintas_certs::files::write_atomic(
        &next(cert_path),
        lintas_certs::pem::cert_to_pem(&cert).as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// Beside a new certificate: when the registry first announced it (Unix seconds).
fn announced(next_cert: &Path) -> PathBuf {
    let mut s = next_cert.as_os_str().to_owned();
    s.push(".announced");
    PathBuf::from(s)
}

/// Notes, as the registry starts and announces its anchor, when a new CA or
/// configuration-signing certificate waiting to be activated was first announced.
pub fn note_announced(paths: &Paths, now: SystemTime) -> Result<(), RegistryServeError> {
    for kind in [KeyKind::ConfSigning, KeyKind::Ca] {
        let next_cert = next(files(paths, kind).1);
        let marker = announced(&next_cert);
        if next_cert.exists() && !marker.exists() {
            lintas_certs::files::write_new(
                &marker,
                lintas_certs::unix_secs(now).to_string().as_bytes(),
                0o644,
            )?;
        }
    }
    Ok(())
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::ConfSigning => "conf-signing",
        KeyKind::Ca => "ca",
        KeyKind::Tsa => "tsa",
        KeyKind::Tls => "tls",
    }
}

/// `anchor` with `ca` and `signer` added to its lists.
fn with_certs(
    anchor: &Anchor,
    ca: Option<&[u8]>,
    signer: Option<&[u8]>,
) -> Result<Anchor, RegistryServeError> {
    let mut cas = anchor.ca_certs.clone();
    cas.extend(ca.map(<[u8]>::to_vec));
    let mut signers = anchor.signing_certs.clone();
    signers.extend(signer.map(<[u8]>::to_vec));
    rebuilt(anchor, &cas, &signers)
}

/// `anchor` with only `ca` as its CA, or only `signer` as its signer.
fn only(
    anchor: &Anchor,
    ca: Option<&[u8]>,
    signer: Option<&[u8]>,
) -> Result<Anchor, RegistryServeError> {
    let cas = ca.map_or_else(|| anchor.ca_certs.clone(), |c| vec![c.to_vec()]);
    let signers = signer.map_or_else(|| anchor.signing_certs.clone(), |c| vec![c.to_vec()]);
    rebuilt(anchor, &cas, &signers)
}

fn rebuilt(
    anchor: &Anchor,
    cas: &[Vec<u8>],
    signers: &[Vec<u8>],
) -> Result<Anchor, RegistryServeError> {
    Ok(anchor.next(cas, signers)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lintas_proto::globalconf::v1::SecurityServer;

    #[test]
    fn a_new_tls_certificate_names_the_hosts_given_or_else_the_current_ones() {
        let dir = tempfile::tempdir().unwrap();
        let config = registry(dir.path());
        let paths = Paths(config.data_dir.clone());
        let now = SystemTime::now();
        let named = |p: PathBuf| CertInfo::parse(&read_cert(&p).unwrap()).unwrap().hosts();
        let current = named(paths.tls_cert());
        // The hosts given, and the hosts named or words of the refusal.
        type Case<'a> = (&'a [&'a str], Result<Vec<&'a str>, &'a str>);
        let cases: [Case; 4] = [
            (&[], Ok(current.iter().map(String::as_str).collect())),
            (
                &["registry-2.example.go.id", "127.0.0.1"],
                Ok(vec!["registry-2.example.go.id", "127.0.0.1"]),
            ),
            (&[""], Err("not a host name")),
            (&["a b"], Err("not a host name")),
        ];
        for (hosts, expected) in cases {
            let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
            let added = add(&config, KeyKind::Tls, &hosts, now);
            match expected {
                Ok(want) => {
                    added.unwrap();
                    assert_eq!(named(next(paths.tls_cert())), want, "{hosts:?}");
                    std::fs::remove_file(next(paths.tls_cert())).unwrap();
                    std::fs::remove_file(next(paths.tls_key())).unwrap();
                }
                Err(words) => {
                    let e = added.unwrap_err().to_string();
                    assert!(e.contains(words), "{hosts:?}: {e}");
                }
            }
        }
        // Only the TLS certificate names hosts.
        let e = add(&config, KeyKind::Tsa, &["x.example".into()], now).unwrap_err();
        assert!(e.to_string().contains("TLS certificate only"), "{e}");
        assert!(!next(paths.tsa_cert()).exists());
    }

    /// A registry made by `init` in `dir`, and its configuration.
    fn registry(dir: &std::path::Path) -> RegistryConfig {
        let report = crate::init(
            &crate::InitOptions {
                instance: "ID".parse().unwrap(),
                dir: dir.join("registry"),
                grpc_listen: "127.0.0.1:4400".parse().unwrap(),
                http_listen: "127.0.0.1:4401".parse().unwrap(),
                public_host: "127.0.0.1".into(),
                admin_name: "admin".parse().unwrap(),
                database: String::new(),
                other_nodes: Vec::new(),
                pkcs11: None,
            },
            std::sync::Arc::new(lintas_globalconf::SystemClock),
        )
        .unwrap();
        let mut config = RegistryConfig::load(&report.config_path, std::iter::empty()).unwrap();
        config.data_dir = dir.join("registry");
        config
    }

    #[test]
    fn an_activation_of_a_new_ca_cut_short_is_finished_by_running_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = registry(dir.path());
        let paths = Paths(config.data_dir.clone());
        let now = SystemTime::now();
        add(&config, KeyKind::Ca, &[], now).unwrap();
        // Cut short after the administrator's certificate was issued and the key moved,
        // before the certificate followed.
        let ca = Ca::load(
            read_cert(&next(paths.ca_cert())).unwrap(),
            keys::read(&next(paths.ca_key())).unwrap(),
        )
        .unwrap();
        reissue_admin(&config, &paths, &ca, now).unwrap();
        std::fs::rename(next(paths.ca_key()), paths.ca_key()).unwrap();
        assert!(
            Ca::load(
                read_cert(&paths.ca_cert()).unwrap(),
                keys::read(&paths.ca_key()).unwrap()
            )
            .is_err()
        );
        // Run again: the move is finished and the administrator's certificate is in.
        activate(&config, KeyKind::Ca, now, true).unwrap();
        let in_use = read_cert(&paths.ca_cert()).unwrap();
        assert_eq!(in_use, ca.cert_der());
        Ca::load(in_use.clone(), keys::read(&paths.ca_key()).unwrap()).unwrap();
        let admin = crate::admin::cert_path(&paths.admin_dir());
        assert!(!next(admin.clone()).exists());
        TrustStore::new([in_use.as_slice()])
            .unwrap()
            .verify(&read_cert(&admin).unwrap(), Role::Admin, now)
            .unwrap();
        // Nothing waits any more: the registry records that certificate as it starts.
        assert!(reissued_admin(&paths, now).unwrap().is_some());
    }

    #[test]
    fn servers_holding_only_certificates_of_the_old_ca_are_named() {
        let now = SystemTime::now();
        let instance: Code = "ID".parse().unwrap();
        let ca = || Ca::create(&instance, Validity::starting(now, YEAR).unwrap()).unwrap();
        let (old, new) = (ca(), ca());
        let member = |ca: &Ca| {
            let profile = Profile::Member("ID/GOV/KEMENDAGRI".parse().unwrap());
            let key = keys::generate().unwrap();
            let validity = Validity::starting(now, YEAR).unwrap();
            ca.issue_for_key(&key, &profile, validity).unwrap()
        };
        let server = |id: &str, certs: Vec<Vec<u8>>| SecurityServer {
            id: id.into(),
            signing_certs: certs,
            ..Default::default()
        };
        let conf = GlobalConf {
            servers: vec![
                server("ID/GOV/KEMENDAGRI/none", vec![]),
                server("ID/GOV/KEMENDAGRI/old", vec![member(&old)]),
                server("ID/GOV/KEMENDAGRI/both", vec![member(&old), member(&new)]),
                server("ID/GOV/KEMENDAGRI/new", vec![member(&new)]),
                server(
                    "ID/GOV/KEMENDAGRI/garbage",
                    vec![b"not a certificate".to_vec()],
                ),
            ],
            ..Default::default()
        };
        let kept = TrustStore::new([new.cert_der()]).unwrap();
        assert_eq!(
            still_on_old_ca(&conf, &kept, now),
            ["ID/GOV/KEMENDAGRI/old", "ID/GOV/KEMENDAGRI/garbage"]
        );
    }
}
