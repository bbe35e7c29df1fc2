//! Access rights (who may call which service, method or REST path) and the local
//! applications' client certificates.

use lintas_identifiers::{ClientId, MethodPath, ServiceName};

use super::model::{ClientCertInfo, GrantSpec, ListQuery, Page};
use super::{Manage, ManageError, invalid, paged};
use crate::access::{ClientCert, Grant, Subject};

fn spec(g: &Grant) -> GrantSpec {
    GrantSpec {
        provider: g.provider.to_string(),
        service: g.service.to_string(),
        subject: g.subject.wire(),
        method: g.method.clone(),
        path: g.path.clone(),
    }
}

fn cert_info(c: &ClientCert) -> ClientCertInfo {
    ClientCertInfo {
        client: c.client.to_string(),
        fingerprint: c.fingerprint.clone(),
        not_after: c.not_after,
    }
}

/// The grant in words, for messages.
fn describe(g: &Grant) -> String {
    let what = match (&g.method, &g.path) {
        (None, None) => format!("every method of {}", g.service),
        (Some(m), None) => format!("{}/{m}", g.service),
        (m, Some(path)) => format!(
            "{} {path} of {}",
            m.as_deref().unwrap_or("any method"),
            g.service
        ),
    };
    format!("{} may call {what} of {}", g.subject, g.provider)
}

impl Manage {
    /// Checks a grant against the services provided here.
    fn checked_grant(&self, g: GrantSpec) -> Result<Grant, ManageError> {
        let provider = self.hosted(&g.provider)?;
        let service: ServiceName = g.service.parse().map_err(|e| invalid("service", e))?;
        let rest = self
            .access
            .service(&provider, &service)
            .is_some_and(|s| s.rest);
        let method = match g.method.filter(|m| !m.is_empty()) {
            None => None,
            Some(m) if rest => {
                crate::endpoints::check_method(&m).map_err(|e| invalid("method", e))?;
                Some(m)
            }
            Some(m) => {
                format!("/{service}/{m}")
                    .parse::<MethodPath>()
                    .map_err(|e| invalid("method", e))?;
                Some(m)
            }
        };
        let path = match (g.path.filter(|p| !p.is_empty()), rest) {
            (None, _) => None,
            (Some(p), true) => {
                crate::endpoints::check_pattern(&p).map_err(|e| invalid("path", e))?;
                Some(p)
            }
            (Some(_), false) => {
                return Err(invalid(
                    "path",
                    format!(
                        "{service} of {provider} is not a REST service provided here; only REST grants have paths"
                    ),
                ));
            }
        };
        let subject = Subject::parse_wire(&g.subject).map_err(|e| invalid("subject", e))?;
        Ok(Grant {
            provider,
            service,
            method,
            subject,
            path,
        })
    }

    /// Grants access; answers with the grant as stored.
    pub async fn grant(&self, g: GrantSpec) -> Result<GrantSpec, ManageError> {
        let g = self.checked_grant(g)?;
        let (out, text) = (spec(&g), describe(&g));
        if !self.change(move |a| a.grant(g)).await? {
            return Err(ManageError::Exists(format!("already granted: {text}")));
        }
        Ok(out)
    }

    /// Takes a grant back; answers with the grant removed.
    pub async fn revoke(&self, g: GrantSpec) -> Result<GrantSpec, ManageError> {
        let g = self.checked_grant(g)?;
        let (out, text) = (spec(&g), describe(&g));
        if !self.change(move |a| a.revoke(&g)).await? {
            return Err(ManageError::NotFound(format!("no such grant: {text}")));
        }
        Ok(out)
    }

    pub fn grants(&self, q: &ListQuery) -> Result<Page<GrantSpec>, ManageError> {
        let all = self
            .access
            .grants()
            .iter()
            .map(spec)
            .map(|g| {
                let key = format!(
                    "{} {} {} {}",
                    g.provider,
                    g.service,
                    g.method.as_deref().unwrap_or_default(),
                    g.subject
                );
                (key, g)
            })
            .collect();
        paged(all, q)
    }

    /// Registers a local application's certificate (DER) for `client`.
    pub async fn add_client_cert(
        &self,
        client: &str,
        der: Vec<u8>,
    ) -> Result<ClientCertInfo, ManageError> {
        let client: ClientId = client.parse().map_err(|e| invalid("client", e))?;
        if !self.own.serves(&client) {
            return Err(ManageError::Precondition(format!(
                "{client} does not call through this server: a client is a subsystem in `clients` of ss.toml, or the member that owns the server"
            )));
        }
        let cert = self
            .change(move |a| a.add_client_cert(client, &der))
            .await?;
        Ok(cert_info(&cert))
    }

    /// Removes a client certificate by its fingerprint; answers with what was removed.
    pub async fn remove_client_cert(
        &self,
        fingerprint: &str,
    ) -> Result<ClientCertInfo, ManageError> {
        let existing = self
            .access
            .client_certs()
            .into_iter()
            .find(|c| c.fingerprint.eq_ignore_ascii_case(fingerprint));
        let fp = fingerprint.to_owned();
        let removed = self.change(move |a| a.remove_client_cert(&fp)).await?;
        match existing {
            Some(c) if removed => Ok(cert_info(&c)),
            _ => Err(ManageError::NotFound(format!(
                "no client certificate {fingerprint}"
            ))),
        }
    }

    pub fn client_certs(&self, q: &ListQuery) -> Result<Page<ClientCertInfo>, ManageError> {
        let all = self
            .access
            .client_certs()
            .iter()
            .map(|c| (format!("{} {}", c.client, c.fingerprint), cert_info(c)))
            .collect();
        paged(all, q)
    }
}
