//! Renewing this server's TLS and signing certificates (`lintas ss certs renew`).
//!
//! New keys are made beside the current ones (`tls.key.pem.next`, `sign.key.pem.next`,
//! 0600) and sent in a registration request over a connection the current TLS
//! certificate authenticates; the registry approves such a renewal at once when its
//! policy allows, or an administrator does. The request's id is kept in `renewal.toml`,
//! so `renew` may be run again to poll. The approved certificates are checked (chain,
//! identity, that they hold the new keys) and written as `tls.crt.pem.next` and
//! `sign.crt.pem.next`. The log key stays: it is the log's identity.
//!
//! The switch moves each new key and certificate into place, signing pair first, while
//! the server runs (`switch.rs`) or as it starts (`daemon::open_from_config`), so a
//! crash halfway is completed at the next start:
//! for each pair the key moves before the certificate, and a certificate waiting beside
//! a key that already moved is moved too. The configuration lists the certificates from
//! before the renewal beside the new ones until the registry revokes them after its
//! grace period, so peers accept the server before and after it switches; the old
//! signing certificate stays in the evidence material for verifying old records.

use std::path::{Path, PathBuf};

use lintas_certs::pem::cert_to_pem;
use lintas_certs::{Identity, Role, keys};
use lintas_proto::registry::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{Node, Paths, SsError};

pub(crate) use lintas_certs::files::next;

impl Paths {
    pub fn renewal(&self) -> PathBuf {
        self.0.join("renewal.toml")
    }

    /// The (key, certificate) pairs a renewal replaces, signing first.
    fn renewed_pairs(&self) -> [(PathBuf, PathBuf); 2] {
        [
            (self.sign_key(), self.sign_cert()),
            (self.tls_key(), self.tls_cert()),
        ]
    }
}

/// What `renewal.toml` remembers between runs.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Requested {
    request_id: String,
}

/// Where a renewal stands.
#[derive(Debug, Serialize)]
pub struct RenewalState {
    pub request_id: String,
    /// `pending`, or `approved` (certificates ready: the running server switches to
    /// them as `switched` and `switch_at` say, a stopped one as it starts).
    pub state: String,
    /// Who approved it, when approved.
    pub decided_by: String,
    /// Expiry of the new TLS and signing certificates (Unix seconds), when approved.
    pub not_after: Option<i64>,
    /// Whether the running server switched to them (`lintas ss certs renew` asks it).
    pub switched: bool,
    /// When the running server switches to them (Unix seconds), once peers have learnt
    /// them; absent when it switched, is not running (they take effect as it starts),
    /// or waits for the configuration to list them.
    pub switch_at: Option<i64>,
}

fn io_at(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> SsError {
    let what = format!("{what} {}", path.display());
    move |source| SsError::Io { what, source }
}

/// Moves renewed keys and certificates into place where a renewal left them ready;
/// whether anything moved.
pub fn finish_switch(paths: &Paths) -> Result<bool, SsError> {
    let mut moved = false;
    for (key, cert) in paths.renewed_pairs() {
        moved |= lintas_certs::files::switch_in(&key, &cert)?;
    }
    if moved {
        let _ = std::fs::remove_file(paths.renewal());
        lintas_certs::files::sync_dir(&paths.0)?;
        tracing::info!("switched to the renewed TLS and signing certificates");
    }
    Ok(moved)
}

/// Whether certificates expiring at `not_after` (Unix seconds) are due for renewal at
/// `now`, `before_days` ahead (0: never).
pub fn due(not_after: i64, now: i64, before_days: u64) -> bool {
    before_days > 0 && now >= not_after.saturating_sub(before_days as i64 * 86400)
}

/// The earlier expiry (Unix seconds) of the TLS and signing certificates in use.
pub fn expiry(paths: &Paths) -> Result<i64, SsError> {
    let tls = lintas_certs::files::read_cert(&paths.tls_cert())?;
    let sign = lintas_certs::files::read_cert(&paths.sign_cert())?;
    let not_after = |der: &[u8]| lintas_certs::CertInfo::parse(der).map(|i| i.not_after_unix());
    Ok(not_after(&tls)?.min(not_after(&sign)?))
}

/// Whether renewed certificates wait to be switched to.
pub fn ready(paths: &Paths) -> bool {
    next(paths.tls_cert()).exists() || next(paths.sign_cert()).exists()
}

/// What a renewal needs, apart from the running server: its directory and settings;
/// keys and the anchor are read from their files when it runs (a configuration may have
/// announced another anchor since the server started).
#[derive(Clone)]
pub struct Renewer {
    pub paths: Paths,
    pub config: crate::SsConfig,
}

impl Node {
    /// [`Renewer::renew`] for this node.
    pub async fn renew(&self) -> Result<RenewalState, SsError> {
        self.renewer().renew().await
    }

    pub fn renewer(&self) -> Renewer {
        Renewer {
            paths: self.paths.clone(),
            config: self.config.clone(),
        }
    }
}

impl Renewer {
    /// Asks for (or, when asked before, about) certificates for new keys; once
    /// approved, stores them ready for the switch (`switch.rs`, or the next start).
    pub async fn renew(&self) -> Result<RenewalState, SsError> {
        // Keys and the request's signatures on the blocking pool: they read files and
        // may log in to a token.
        let me = self.clone();
        let (tls_key, sign_key, request) = tokio::task::spawn_blocking(move || {
            let tls_key = me.next_tls_key()?;
            let sign_key = me.next_sign_key()?;
            let log_key = lintas_pkcs11::load(&me.paths.log_key(), me.config.pkcs11.as_ref())?;
            let request =
                crate::registration_request(&me.config, &tls_key, &*sign_key, &*log_key, "")?;
            Ok::<_, SsError>((tls_key, sign_key, request))
        })
        .await
        .map_err(|e| SsError::Serve(format!("renewing: {e}")))??;
        let id = &self.config.server_id;
        let mut registry = self.registry_as_self()?;
        // A request the registry no longer knows (undecided past its time) is filed
        // again, with the same new keys.
        let asked = match self.requested()? {
            Some(request_id) => match registry.status(pb::StatusRequest { request_id }).await {
                Ok(r) => Some(r.into_inner()),
                Err(s) if s.code() == tonic::Code::NotFound => None,
                Err(s) => return Err(s.into()),
            },
            None => None,
        };
        let status = match asked {
            Some(status) => status,
            None => {
                let status = registry.submit(request).await?.into_inner();
                let text = toml::to_string(&Requested {
                    request_id: status.request_id.clone(),
                })
                .unwrap_or_default();
                lintas_certs::files::write_atomic(&self.paths.renewal(), text.as_bytes(), 0o644)?;
                status
            }
        };
        let mut state = RenewalState {
            request_id: status.request_id.clone(),
            state: "pending".into(),
            decided_by: status.decided_by.clone(),
            not_after: None,
            switched: false,
            switch_at: None,
        };
        match status.state() {
            pb::RegistrationState::Approved => {
                let anchor = lintas_globalconf::Anchor::load(&self.paths.anchor())?;
                let not_after = check_issued(&anchor, id, &status, &tls_key, &*sign_key)?;
                for (der, path) in [
                    (&status.signing_cert, next(self.paths.sign_cert())),
                    (&status.tls_cert, next(self.paths.tls_cert())),
                ] {
                    lintas_certs::files::write_atomic(&path, cert_to_pem(der).as_bytes(), 0o644)?;
                }
                state.state = "approved".into();
                state.not_after = Some(not_after);
            }
            pb::RegistrationState::Rejected => {
                // A new attempt files a new request with the same new keys.
                let _ = std::fs::remove_file(self.paths.renewal());
                return Err(SsError::Rejected {
                    reason: status.reason,
                });
            }
            _ => {}
        }
        Ok(state)
    }

    /// The request filed earlier, if any.
    fn requested(&self) -> Result<Option<String>, SsError> {
        match std::fs::read_to_string(self.paths.renewal()) {
            Ok(text) => {
                let r: Requested = toml::from_str(&text).map_err(|e| {
                    SsError::State(format!(
                        "{} is damaged: {e}",
                        self.paths.renewal().display()
                    ))
                })?;
                Ok(Some(r.request_id))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at("reading", &self.paths.renewal())(e)),
        }
    }

    /// The new TLS key: made (0600) the first time, read after.
    fn next_tls_key(&self) -> Result<lintas_certs::KeyPair, SsError> {
        let path = next(self.paths.tls_key());
        if path.exists() {
            return Ok(keys::read(&path)?);
        }
        let key = keys::generate()?;
        keys::write(&path, &key)?;
        Ok(key)
    }

    /// The new signing key: made the first time where the current one is held (in the
    /// token when the current key is a token's, else a key file), loaded after.
    fn next_sign_key(&self) -> Result<lintas_certs::SharedSigner, SsError> {
        let path = next(self.paths.sign_key());
        let token = self.config.pkcs11.as_ref();
        if path.exists() {
            return Ok(lintas_pkcs11::load(&path, token)?);
        }
        let in_token = lintas_pkcs11::is_reference(&self.paths.sign_key())?;
        let label = format!(
            "lintas {} signing {}",
            self.config.server_id,
            time::OffsetDateTime::now_utc().date()
        );
        Ok(lintas_pkcs11::generate(
            &path,
            token.filter(|_| in_token),
            &label,
        )?)
    }

    /// A channel to the registry authenticated by this server's current TLS
    /// certificate.
    fn registry_as_self(
        &self,
    ) -> Result<pb::registration_client::RegistrationClient<tonic::transport::Channel>, SsError>
    {
        let tls_key = keys::read(&self.paths.tls_key())?;
        let cert = lintas_certs::files::read_cert(&self.paths.tls_cert()).map_err(|e| match e {
            lintas_certs::CertError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                SsError::NotEnrolled
            }
            other => other.into(),
        })?;
        let anchor = lintas_globalconf::Anchor::load(&self.paths.anchor())?;
        let tls = lintas_transport::client_config(
            anchor.trust_store(),
            Role::Registry,
            Some((&cert, &tls_key)),
        )?;
        let channel = lintas_transport::channel_to_any(&anchor.registry_urls(), tls)?;
        Ok(pb::registration_client::RegistrationClient::new(channel))
    }
}

/// Checks issued certificates: chain to the anchor, the server's identities, the given
/// keys. The earlier expiry of the two.
pub(crate) fn check_issued(
    anchor: &lintas_globalconf::Anchor,
    id: &lintas_identifiers::ServerId,
    status: &pb::RegistrationStatus,
    tls_key: &lintas_certs::KeyPair,
    sign_key: &dyn lintas_certs::Signer,
) -> Result<i64, SsError> {
    let trust = anchor.trust_store();
    let now = std::time::SystemTime::now();
    let tls = trust.verify(&status.tls_cert, Role::Server, now)?;
    let sign = trust.verify(&status.signing_cert, Role::Member, now)?;
    if tls.identity != Identity::Server(id.clone()) {
        return Err(SsError::WrongCertificate(format!(
            "TLS certificate is for {}",
            tls.identity
        )));
    }
    if sign.identity != Identity::Member(id.owner.clone()) {
        return Err(SsError::WrongCertificate(format!(
            "signing certificate is for {}",
            sign.identity
        )));
    }
    if tls.public_key != tls_key.public_key_raw() || sign.public_key != sign_key.public_key_raw() {
        return Err(SsError::WrongCertificate(
            "it holds a different public key".into(),
        ));
    }
    Ok(tls.not_after_unix().min(sign.not_after_unix()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every point a crash can stop the switch at is finished by the next start.
    #[test]
    fn a_switch_cut_short_anywhere_is_finished_by_the_next_start() {
        // How far the switch got: how many of the four renames were done.
        for done in 0..=4 {
            let dir = tempfile::tempdir().unwrap();
            let paths = Paths(dir.path().to_owned());
            let pairs = paths.renewed_pairs();
            for (key, cert) in &pairs {
                std::fs::write(key, "old key").unwrap();
                std::fs::write(cert, "old cert").unwrap();
                std::fs::write(next(key.clone()), "new key").unwrap();
                std::fs::write(next(cert.clone()), "new cert").unwrap();
            }
            std::fs::write(paths.renewal(), "request_id = 'x'").unwrap();
            let renames: Vec<(PathBuf, PathBuf)> = pairs
                .iter()
                .flat_map(|(k, c)| [(next(k.clone()), k.clone()), (next(c.clone()), c.clone())])
                .collect();
            for (from, to) in &renames[..done] {
                std::fs::rename(from, to).unwrap();
            }
            assert_eq!(finish_switch(&paths).unwrap(), done < 4, "after {done}");
            for (key, cert) in &pairs {
                assert_eq!(std::fs::read_to_string(key).unwrap(), "new key", "{done}");
                assert_eq!(std::fs::read_to_string(cert).unwrap(), "new cert", "{done}");
                assert!(!next(key.clone()).exists() && !next(cert.clone()).exists());
            }
            assert!(!finish_switch(&paths).unwrap(), "nothing left after {done}");
        }
    }

    #[test]
    fn renewal_falls_due_the_given_days_before_expiry() {
        const DAY: i64 = 86400;
        let expires = 1_000 * DAY;
        let cases = [
            (expires - 31 * DAY, 30, false),
            (expires - 30 * DAY, 30, true),
            (expires - DAY, 30, true),
            (expires + DAY, 30, true),
            (expires - DAY, 0, false),
            (0, 999, false),
            (0, 1000, true),
            (i64::MIN, 30, false),
        ];
        for (now, before, expect) in cases {
            assert_eq!(
                due(expires, now, before),
                expect,
                "now {now}, {before} days"
            );
        }
    }

    #[test]
    fn keys_alone_waiting_for_approval_are_not_switched() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths(dir.path().to_owned());
        for (key, cert) in paths.renewed_pairs() {
            std::fs::write(&key, "old key").unwrap();
            std::fs::write(&cert, "old cert").unwrap();
            std::fs::write(next(key.clone()), "new key").unwrap();
        }
        assert!(!finish_switch(&paths).unwrap());
        assert_eq!(std::fs::read_to_string(paths.tls_key()).unwrap(), "old key");
    }
}
