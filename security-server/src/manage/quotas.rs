//! Quotas: how often clients may call the services provided here.

use lintas_identifiers::{ClientId, MethodPath, ServiceName};

use super::model::{ListQuery, Page, QuotaKey, QuotaSpec};
use super::{Manage, ManageError, invalid, paged};
use crate::quotas::{Quota, parse_rate, rate_text};

fn spec(q: &Quota) -> QuotaSpec {
    QuotaSpec {
        provider: q.provider.to_string(),
        service: q.service.to_string(),
        method: q.method.clone(),
        client: q.client.as_ref().map(ToString::to_string),
        rate: rate_text(q.calls, q.per_secs),
        burst: Some(q.burst),
    }
}

impl Manage {
    /// The quota `key` names, with no numbers yet; checked against the service
    /// provided here when `provided` (a quota of a service since removed can still be
    /// removed).
    fn quota_scope(&self, key: QuotaKey, provided: bool) -> Result<Quota, ManageError> {
        let provider = self.hosted(&key.provider)?;
        let service: ServiceName = key.service.parse().map_err(|e| invalid("service", e))?;
        let entry = self.access.service(&provider, &service);
        if provided && entry.is_none() {
            return Err(ManageError::Precondition(format!(
                "{provider} provides no service {service} here; add the service first"
            )));
        }
        let rest = entry.is_some_and(|e| e.rest);
        let method = match key.method.filter(|m| !m.is_empty()) {
            None => None,
            Some(m) if !provided => Some(m),
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
        let client = match key.client.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(c.parse::<ClientId>().map_err(|e| invalid("client", e))?),
        };
        Ok(Quota {
            provider,
            service,
            method,
            client,
            calls: 0,
            per_secs: 0,
            burst: 0,
        })
    }

    /// Sets a quota, replacing the one for the same service, method and client; answers
    /// with the quota as stored.
    pub async fn set_quota(&self, q: QuotaSpec) -> Result<QuotaSpec, ManageError> {
        let (calls, per_secs) = parse_rate(&q.rate).map_err(|e| invalid("rate", e))?;
        let scope = self.quota_scope(
            QuotaKey {
                provider: q.provider,
                service: q.service,
                method: q.method,
                client: q.client,
            },
            true,
        )?;
        let quota = Quota {
            calls,
            per_secs,
            burst: q.burst.unwrap_or(calls),
            ..scope
        };
        quota.check().map_err(|e| invalid("quota", e))?;
        let (out, said) = (spec(&quota), quota.describe());
        self.change(move |a| a.set_quota(quota)).await?;
        tracing::info!(quota = %said, "quota set");
        Ok(out)
    }

    /// Removes a quota; answers with what was removed.
    pub async fn remove_quota(&self, key: QuotaKey) -> Result<QuotaSpec, ManageError> {
        let key = self.quota_scope(key, false)?.key();
        let removed = {
            let key = key.clone();
            self.change(move |a| a.remove_quota(&key)).await?
        };
        match removed {
            Some(q) => Ok(spec(&q)),
            None => Err(ManageError::NotFound(format!("no such quota: {key}"))),
        }
    }

    pub fn quotas(&self, q: &ListQuery) -> Result<Page<QuotaSpec>, ManageError> {
        let all = self
            .access
            .quotas()
            .iter()
            .map(|quota| (quota.key(), spec(quota)))
            .collect();
        paged(all, q)
    }
}
