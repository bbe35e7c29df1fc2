//! Switching a running server to renewed keys and certificates, without a restart.
//!
//! When: once the global configuration this server holds lists the renewed
//! certificates, and that listing has been out for `renewal_switch_delay_secs` (by
//! default a configuration's whole validity, so that every peer still serving holds a
//! configuration that lists them: peers refuse to serve on an expired one). A restart
//! switches at once, as does `lintas ss certs renew --switch-now`.
//!
//! How: everything renewed is read and checked first (each certificate holds its key,
//! the token's key signs), then the files move into place as at a start
//! ([`renewal::finish_switch`]), and only then does [`Own`] take the new keys:
//! exchanges and streams begun before go on with the keys they took, new ones sign with
//! the new key, the provider endpoint presents the new certificate to the next peer that
//! connects, and new connections to peers and to the registry are made with it.
//! Connections already open stay up until their calls end; peers accept both
//! certificates until the registry revokes the old ones.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lintas_certs::signer::holds;
use lintas_certs::{Signer, keys};
use lintas_globalconf::ConfClient;

use crate::material::Material;
use crate::own::{Own, OwnKeys};
use crate::renewal::{self, next};
use crate::{Paths, SsError};

/// Where a switch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switched {
    /// No renewed certificates wait.
    Nothing,
    /// The renewed certificates are in use now.
    Done,
    /// Not yet: from `at` (Unix seconds) on, or once the configuration lists them.
    Later { at: Option<i64> },
}

/// What a look at the held configuration found: whether it lists the renewed
/// certificates, when it was generated and how long it is valid (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    pub lists: bool,
    pub generated_at: i64,
    pub validity: i64,
}

/// When the renewed certificates whose TLS hash is `renewed` may be switched to, and
/// what to remember for the next look: the hash and when a configuration was first seen
/// listing them. `remembered` is the last look's; `listing` this one's (None: no valid
/// configuration); `delay` is `renewal_switch_delay_secs` (None: the configuration's
/// validity). None: not while the configuration does not list them.
pub fn switch_at(
    remembered: Option<([u8; 32], i64)>,
    renewed: [u8; 32],
    listing: Option<Listing>,
    delay: Option<u64>,
) -> (Option<([u8; 32], i64)>, Option<i64>) {
    let Some(l) = listing else {
        return (remembered, None);
    };
    if !l.lists {
        return (None, None);
    }
    let since = match remembered {
        Some((hash, since)) if hash == renewed => since,
        _ => l.generated_at,
    };
    let delay = delay.map_or(l.validity.max(0), |d| i64::try_from(d).unwrap_or(i64::MAX));
    (Some((renewed, since)), Some(since.saturating_add(delay)))
}

pub struct Switch {
    pub paths: Paths,
    pub pkcs11: Option<lintas_pkcs11::Pkcs11Config>,
    pub own: Arc<Own>,
    pub material: Arc<Material>,
    pub conf: ConfClient,
    /// `renewal_switch_delay_secs`; None: the validity of the configuration.
    pub delay: Option<u64>,
    /// The renewed TLS certificate's hash and when the configuration was first seen
    /// listing it (the generation time of that configuration). One switch at a time.
    listed: Mutex<Option<([u8; 32], i64)>>,
}

impl Switch {
    pub fn new(
        paths: Paths,
        pkcs11: Option<lintas_pkcs11::Pkcs11Config>,
        own: Arc<Own>,
        material: Arc<Material>,
        conf: ConfClient,
        delay: Option<u64>,
    ) -> Self {
        Switch {
            paths,
            pkcs11,
            own,
            material,
            conf,
            delay,
            listed: Mutex::new(None),
        }
    }

    /// Switches to renewed certificates waiting beside the ones in use when it is time
    /// (`now`, Unix seconds), or at once when `immediately`. On an error nothing has
    /// changed in use (the files may have moved, and are used from the next start).
    pub fn run(&self, now: i64, immediately: bool) -> Result<Switched, SsError> {
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if !renewal::ready(&self.paths) {
            return Ok(Switched::Nothing);
        }
        // A pair whose key already moved (a switch cut short) has only its certificate
        // waiting: its key is the one in place.
        let waiting = |path: PathBuf| {
            let n = next(path.clone());
            if n.exists() { n } else { path }
        };
        let p = &self.paths;
        let tls_cert = lintas_certs::files::read_cert(&waiting(p.tls_cert()))?;
        let sign_cert = lintas_certs::files::read_cert(&waiting(p.sign_cert()))?;
        let tls_sha256 = lintas_certs::sha256(&tls_cert);
        if !immediately {
            let listing = self.conf.current().ok().map(|conf| Listing {
                lists: conf.server(&self.own.id).is_some_and(|e| {
                    lintas_globalconf::lists_tls(e, &tls_sha256)
                        && e.signing_certs.contains(&sign_cert)
                }),
                generated_at: conf.conf.generated_at,
                validity: conf.conf.expires_at - conf.conf.generated_at,
            });
            let (remember, at) = switch_at(*listed, tls_sha256, listing, self.delay);
            *listed = remember;
            match at {
                Some(at) if now >= at => {}
                at => return Ok(Switched::Later { at }),
            }
        }
        let tls_key = keys::read(&waiting(p.tls_key()))?;
        let sign_key = lintas_pkcs11::load(&waiting(p.sign_key()), self.pkcs11.as_ref())?;
        for (cert, key, which) in [
            (&tls_cert, &tls_key as &dyn Signer, "TLS"),
            (&sign_cert, &*sign_key, "signing"),
        ] {
            if !holds(cert, key)? {
                return Err(SsError::WrongCertificate(format!(
                    "the renewed {which} certificate does not hold the renewed {which} key"
                )));
            }
        }
        // Kept for evidence before anything moves: a failure leaves the renewal waiting.
        self.material.remember_cert(&sign_cert)?;
        renewal::finish_switch(p)?;
        let signer = self.own.keys().signer.renewed(sign_key);
        self.own
            .switch(OwnKeys::new(signer, sign_cert, tls_cert, tls_key));
        *listed = None;
        tracing::info!("the running server switched to its renewed certificates");
        Ok(Switched::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewed_certificates_switch_in_once_peers_had_time_to_learn_them() {
        let (a, b) = ([1; 32], [2; 32]);
        let listing = |lists| {
            Some(Listing {
                lists,
                generated_at: 1_000,
                validity: 3_600,
            })
        };
        // (remembered, renewed, listing, delay, what is remembered, switch at)
        let cases = [
            // Not listed yet: not before it is, and nothing remembered.
            (None, a, listing(false), None, None, None),
            (Some((a, 500)), a, listing(false), None, None, None),
            // First listed: a configuration's validity (or the delay) after it was made.
            (None, a, listing(true), None, Some((a, 1_000)), Some(4_600)),
            (
                None,
                a,
                listing(true),
                Some(0),
                Some((a, 1_000)),
                Some(1_000),
            ),
            (
                None,
                a,
                listing(true),
                Some(60),
                Some((a, 1_000)),
                Some(1_060),
            ),
            // Listed before: from the first configuration that listed them.
            (
                Some((a, 400)),
                a,
                listing(true),
                None,
                Some((a, 400)),
                Some(4_000),
            ),
            // Other renewed certificates than remembered: counted afresh.
            (
                Some((b, 400)),
                a,
                listing(true),
                None,
                Some((a, 1_000)),
                Some(4_600),
            ),
            // No valid configuration: not now, and what was seen is kept.
            (Some((a, 400)), a, None, None, Some((a, 400)), None),
            (
                None,
                a,
                listing(true),
                Some(u64::MAX),
                Some((a, 1_000)),
                Some(i64::MAX),
            ),
        ];
        for (remembered, renewed, listing, delay, keep, at) in cases {
            assert_eq!(
                switch_at(remembered, renewed, listing, delay),
                (keep, at),
                "{remembered:?} {listing:?} {delay:?}"
            );
        }
    }
}
