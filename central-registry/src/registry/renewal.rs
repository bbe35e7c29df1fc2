//! Certificate renewal: a registered server asks for certificates for new keys over a
//! connection authenticated by its current TLS certificate, and, when the policy allows
//! (`auto_approve_renewals`), is approved at once, as an enrolment token would approve
//! it. The address, the hosted subsystems and the log key must be unchanged (a renewal
//! changes keys only; anything else goes to an administrator). Whichever way a renewal is
//! approved, the server's certificates before it are kept, listed beside the new ones so
//! the server can switch at any time, and revoked once `renewal_grace` has passed.

use super::*;

impl Registry {
    /// Approves `rec` as a renewal by `server_id`, whose TLS certificate with serial
    /// `by_serial` authenticated the request.
    pub(super) fn renew_authenticated(
        &self,
        rec: RegistrationRec,
        by_serial: &str,
        tls_key: &CsrKey,
        signing_key: &CsrKey,
    ) -> Result<RegistrationRec> {
        let server_id = rec.server_id.clone();
        let actor = format!("server {server_id} (TLS certificate {by_serial})");
        let (rec, _) = self.commit(&actor, Publish::Yes, |state, change| {
            let mut rec = rec.clone();
            let server = state.servers.get(&server_id).ok_or_else(|| {
                RegistryError::PermissionDenied(format!("{server_id} is not a registered server"))
            })?;
            let differs = |what: &str| {
                RegistryError::FailedPrecondition(format!(
                    "a renewal changes keys only, but this request changes the {what}; file it without the server's certificate for an administrator to decide"
                ))
            };
            if rec.address != server.address {
                return Err(differs("address"));
            }
            if rec.log_key_hex != server.log_key_hex {
                return Err(differs("log key"));
            }
            if !rec.clients.iter().all(|c| server.clients.contains(c)) {
                return Err(differs("hosted subsystems"));
            }
            rec.renewal = true;
            self.approve_into(state, change, &mut rec, &actor, tls_key, signing_key)?;
            change.put(Key::Registration(&rec.request_id).into(), &rec)?;
            state.registrations.insert(rec.request_id.clone(), rec.clone());
            let action = format!(
                "renewal {} for {server_id} approved: requested with the server's own TLS certificate",
                rec.request_id
            );
            Ok((rec, action))
        })?;
        Ok(rec)
    }

    /// Marks the server's certificates before a renewal to be revoked after the grace
    /// period (those not already marked or revoked).
    pub(super) fn retire_previous(&self, server: &mut ServerRec) {
        let at = self.now() + self.policy.renewal_grace.as_secs() as i64;
        for c in &mut server.certs {
            if c.revoked.is_none() && c.retire_at.is_none() {
                c.retire_at = Some(at);
            }
        }
    }

    /// Revokes the certificates whose grace period after a renewal has passed: one
    /// change and one new configuration for all. The serials revoked.
    pub fn retire_due(&self) -> Result<Vec<String>> {
        let now = self.now();
        let due = |c: &IssuedCert| c.revoked.is_none() && c.retire_at.is_some_and(|t| t <= now);
        if !self
            .lock()
            .servers
            .values()
            .any(|s| s.certs.iter().any(due))
        {
            return Ok(Vec::new());
        }
        let (serials, _) = self.commit("registry", Publish::Yes, |state, change| {
            let mut serials = Vec::new();
            for server in state.servers.values_mut() {
                let mut changed = false;
                for c in server.certs.iter_mut().filter(|c| due(c)) {
                    c.revoked = Some(Revocation {
                        at: now,
                        reason: "superseded by a renewal; grace period over".into(),
                    });
                    serials.push(c.serial.clone());
                    changed = true;
                }
                if changed {
                    change.put(Key::Server(&server.id).into(), &*server)?;
                }
            }
            let action = format!(
                "revoked certificates superseded by renewals: {}",
                serials.join(", ")
            );
            Ok((serials, action))
        })?;
        Ok(serials)
    }
}
