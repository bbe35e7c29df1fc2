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
//! its directory copied) next starts. A TSA certificate is not in the anchor: `add` and
//! `activate` rotate it, and configurations list the new one from the start after.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lintas_certs::ca::Validity;
use lintas_certs::{Ca, Profile, Role, TrustStore, keys};
use lintas_globalconf::Anchor;
use lintas_identifiers::Code;
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
}

impl std::str::FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "conf-signing" => Ok(KeyKind::ConfSigning),
            "ca" => Ok(KeyKind::Ca),
            "tsa" => Ok(KeyKind::Tsa),
            other => Err(format!(
                "'{other}': one of conf-signing, ca, tsa (the registry's own keys)"
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
    }
}

/// Makes the new key and certificate of `kind` beside the current ones, and (for the
/// configuration-signing key and the CA) writes the anchor listing the new certificate
/// beside the current one.
pub fn add(
    config: &RegistryConfig,
    kind: KeyKind,
    now: SystemTime,
) -> Result<Rotated, RegistryServeError> {
    let paths = Paths(config.data_dir.clone());
    let (key_path, cert_path) = files(&paths, kind);
    let (next_key, next_cert) = (next(key_path), next(cert_path));
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
    if kind != KeyKind::Tsa {
        lintas_certs::files::write_atomic(&paths.anchor(), anchor.text.as_bytes(), 0o644)?;
    }
    Ok(Rotated {
        kind,
        step: "add",
        cert_sha256: lintas_certs::hex(&lintas_certs::sha256(&cert)),
        anchor_sha256: anchor.fingerprint,
        next: match kind {
            KeyKind::Tsa => "activate it (the registry stamps with it from its next start)".into(),
            _ => format!(
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
    if kind != KeyKind::Tsa && !now {
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
    };
    if !listed {
        return Err(refused(format!(
            "{} lists no {}: servers would refuse what it signs",
            paths.anchor().display(),
            next_cert.display()
        )));
    }
    lintas_certs::files::switch_in(&key_path, &cert_path)?;
    let _ = std::fs::remove_file(&marker);
    lintas_certs::files::sync_dir(&paths.0)?;
    Ok(Rotated {
        kind,
        step: "activate",
        cert_sha256: lintas_certs::hex(&lintas_certs::sha256(&cert)),
        anchor_sha256: anchor.fingerprint,
        next: match kind {
            KeyKind::Tsa => "restart the registry".into(),
            KeyKind::ConfSigning => "restart the registry; once servers hold a configuration it signed, retire the old certificate".into(),
            KeyKind::Ca => "restart the registry: it issues from the new CA; retire the old CA once nothing it issued is in use".into(),
        },
    })
}

/// Writes the anchor without the certificates of `kind` other than the one in use.
pub fn retire(
    config: &RegistryConfig,
    kind: KeyKind,
    now: SystemTime,
) -> Result<Rotated, RegistryServeError> {
    let paths = Paths(config.data_dir.clone());
    let (_, cert_path) = files(&paths, kind);
    if kind == KeyKind::Tsa {
        return Err(refused(
            "a TSA certificate is not in the anchor: activating a new one retires the old".into(),
        ));
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
        // Everything the anchor and the registry present must chain to the CA kept.
        let kept = TrustStore::new([in_use.as_slice()])?;
        let own = [
            (
                read_cert(&paths.conf_cert())?,
                Role::GlobalConf,
                "configuration-signing",
            ),
            (read_cert(&paths.tsa_cert())?, Role::Tsa, "TSA"),
            (read_cert(&paths.tls_cert())?, Role::Registry, "TLS"),
        ];
        for (cert, role, what) in &own {
            if kept.verify(cert, *role, now).is_err() {
                return Err(refused(format!(
                    "the registry's {what} certificate was issued by a CA being retired: issue a new one from the CA in use first"
                )));
            }
        }
    }
    let anchor = match kind {
        KeyKind::Ca => only(&anchor, Some(&in_use), None)?,
        _ => only(&anchor, None, Some(&in_use))?,
    };
    lintas_certs::files::write_atomic(&paths.anchor(), anchor.text.as_bytes(), 0o644)?;
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
