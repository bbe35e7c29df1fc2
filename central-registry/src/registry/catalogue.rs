//! The service catalogue: security servers report the services they provide (with
//! their grants and descriptor sets, uploaded first) and the registry publishes them in
//! the global configuration; descriptor sets are handed out by hash.

use super::*;

impl Registry {
    /// Holds a descriptor set a server is about to name in a service report, until that
    /// report. Returns its SHA-256.
    pub fn upload_descriptor(&self, peer_cert: Option<&[u8]>, set: Vec<u8>) -> Result<[u8; 32]> {
        let server_id = self.peer_server(peer_cert, "uploading descriptors")?;
        // A descriptor set, or a REST service's OpenAPI document.
        if let Err(e) = lintas_globalconf::descriptors::pool(&set) {
            lintas_globalconf::openapi::read(&set).map_err(|why| {
                invalid(
                    "upload",
                    format!("neither a descriptor set ({e}) nor an OpenAPI document ({why})"),
                )
            })?;
        }
        let hash = lintas_certs::sha256(&set);
        let hex = lintas_certs::hex(&hash);
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        let held: usize = staged.values().flatten().map(|(_, b)| b.len()).sum();
        if held + set.len() > MAX_STAGED_BYTES {
            return Err(RegistryError::ResourceExhausted(format!(
                "the registry holds {held} bytes of descriptor sets not yet reported; report the uploaded ones first"
            )));
        }
        let mine = staged.entry(server_id).or_default();
        mine.retain(|(h, _)| *h != hex);
        if mine.len() >= MAX_STAGED {
            // The oldest upload that was never reported makes room.
            mine.remove(0);
        }
        mine.push((hex, Arc::new(set)));
        Ok(hash)
    }

    /// A service report: either the serial of the configuration listing the services, or
    /// the descriptor sets it names that the registry does not hold (nothing changed).
    pub fn report_services(
        &self,
        peer_cert: Option<&[u8]>,
        services: Vec<pb::ReportedService>,
        maintenance: bool,
    ) -> Result<ReportOutcome> {
        let server_id = self.peer_server(peer_cert, "reporting services")?;
        if services.len() > MAX_CLIENTS {
            return Err(invalid("services", format!("more than {MAX_CLIENTS}")));
        }
        let mut reported = Vec::new();
        // (hash, service) for every service that names a set.
        let mut named = Vec::new();
        for s in services {
            let provider: SubsystemId = s.provider.parse().map_err(|e| invalid("provider", e))?;
            let service: ServiceName = s.service.parse().map_err(|e| invalid("service", e))?;
            let what = format!("service {service} of {provider}");
            let mut hash_of = |bytes: &[u8], document: bool| match bytes.len() {
                0 => Ok(String::new()),
                32 => {
                    let hash = lintas_certs::hex(bytes);
                    named.push((hash.clone(), service.to_string(), document));
                    Ok(hash)
                }
                _ => Err(invalid(&what, "a hash is not a SHA-256")),
            };
            let descriptor_sha256 = hash_of(&s.descriptor_sha256, false)?;
            let openapi_sha256 = hash_of(&s.openapi_sha256, true)?;
            if !openapi_sha256.is_empty() && !s.rest {
                return Err(invalid(
                    &what,
                    "only a REST service has an OpenAPI document",
                ));
            }
            if s.large_messages && s.rest {
                return Err(invalid(
                    &what,
                    "a REST service's bodies always travel in chunks: large_messages is for gRPC services",
                ));
            }
            if s.grants.len() > MAX_GRANTS {
                return Err(invalid(&what, format!("more than {MAX_GRANTS} grants")));
            }
            let mut grants = Vec::new();
            for g in s.grants {
                check_grant(&g).map_err(|e| invalid(&what, e))?;
                grants.push(CatalogueGrant {
                    method: g.method,
                    subject: g.subject,
                    path: g.path,
                });
            }
            grants.sort();
            grants.dedup();
            if s.quotas.len() > MAX_GRANTS {
                return Err(invalid(&what, format!("more than {MAX_GRANTS} quotas")));
            }
            let mut quotas = s
                .quotas
                .iter()
                .map(CatalogueQuota::checked)
                .collect::<std::result::Result<Vec<_>, String>>()
                .map_err(|e| invalid(&what, e))?;
            quotas.sort();
            quotas.dedup();
            if s.topic && (s.rest || s.large_messages || !openapi_sha256.is_empty()) {
                return Err(invalid(
                    &what,
                    "a topic is neither a REST service nor one with large messages",
                ));
            }
            reported.push(CatalogueService {
                topic: s.topic,
                quotas,
                provider,
                service,
                descriptor_sha256,
                grants,
                rest: s.rest,
                large_messages: s.large_messages,
                openapi_sha256,
            });
        }
        reported.sort();
        reported.dedup_by(|a, b| a.provider == b.provider && a.service == b.service);
        let _one_report_at_a_time = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        // Every named set must be held already or uploaded by this server, and define
        // the service it is named for (checked unless this server listed the same pair
        // before).
        let mut new_descriptors = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let state = self.lock();
            let staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
            let before: BTreeSet<(&str, String)> = state
                .catalogue
                .get(&server_id)
                .into_iter()
                .flatten()
                .flat_map(|c| {
                    [
                        (c.descriptor_sha256.as_str(), c.service.to_string()),
                        (c.openapi_sha256.as_str(), c.service.to_string()),
                    ]
                })
                .collect();
            for (hash, service, document) in &named {
                let set = match state.descriptors.get(hash) {
                    Some(set) => set.clone(),
                    None => match staged
                        .get(&server_id)
                        .and_then(|m| m.iter().find(|(h, _)| h == hash))
                    {
                        Some((_, set)) => {
                            new_descriptors.insert(hash.clone(), set.clone());
                            set.clone()
                        }
                        None => {
                            missing.push(lintas_certs::unhex(hash).unwrap_or_default());
                            continue;
                        }
                    },
                };
                if !before.contains(&(hash.as_str(), service.clone())) {
                    let checked = if *document {
                        lintas_globalconf::openapi::read(&set)
                            .and_then(|doc| lintas_globalconf::openapi::describe(service, &doc))
                            .map(|_| ())
                    } else {
                        lintas_globalconf::descriptors::methods(&set, service).map(|_| ())
                    };
                    checked.map_err(|e| invalid(&format!("service {service}"), e))?;
                }
            }
        }
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            return Ok(ReportOutcome {
                conf_serial: 0,
                missing,
            });
        }
        let unchanged = {
            let state = self.lock();
            let same_maintenance = state
                .servers
                .get(&server_id)
                .is_some_and(|s| s.maintenance == maintenance);
            same_maintenance
                && (state.catalogue.get(&server_id) == Some(&reported)
                    || (reported.is_empty() && !state.catalogue.contains_key(&server_id)))
        };
        let publish = if unchanged { Publish::No } else { Publish::Yes };
        let actor = format!("server {server_id}");
        let ((), serial) = self.commit(&actor, publish, |state, change| {
            let server = state.servers.get(&server_id).ok_or_else(|| {
                RegistryError::PermissionDenied(format!("{server_id} is not a registered server"))
            })?;
            if let Some(c) = reported
                .iter()
                .find(|c| !server.clients.contains(&c.provider))
            {
                return Err(RegistryError::PermissionDenied(format!(
                    "{server_id} does not host {}",
                    c.provider
                )));
            }
            if server.maintenance != maintenance {
                let mut server = server.clone();
                server.maintenance = maintenance;
                change.put(Key::Server(&server.id).into(), &server)?;
                state.servers.insert(server_id.clone(), server);
            }
            for (hash, bytes) in &new_descriptors {
                change.put_raw(Key::Descriptor(hash).into(), bytes.as_ref().clone());
                state.descriptors.insert(hash.clone(), bytes.clone());
            }
            let action = format!(
                "{server_id} reported {} service(s){}",
                reported.len(),
                if maintenance { ", in maintenance" } else { "" }
            );
            change.put(
                Key::Catalogue(&server_id).into(),
                &CatalogueRec {
                    server: server_id.clone(),
                    services: reported.clone(),
                },
            )?;
            state.catalogue.insert(server_id.clone(), reported.clone());
            // Sets no service names any more are removed.
            let used: BTreeSet<&String> = state
                .catalogue
                .values()
                .flatten()
                .flat_map(|c| [&c.descriptor_sha256, &c.openapi_sha256])
                .collect();
            let unused: Vec<String> = state
                .descriptors
                .keys()
                .filter(|h| !used.contains(h))
                .cloned()
                .collect();
            for hash in unused {
                change.remove(Key::Descriptor(&hash).into());
                state.descriptors.remove(&hash);
            }
            Ok(((), action))
        })?;
        // Uploads are for the next report only.
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&server_id);
        Ok(ReportOutcome {
            conf_serial: serial,
            missing: Vec::new(),
        })
    }

    /// A published descriptor set by its SHA-256.
    pub fn descriptor(&self, sha256: &[u8]) -> Result<Arc<Vec<u8>>> {
        self.lock()
            .descriptors
            .get(&lintas_certs::hex(sha256))
            .cloned()
            .ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "no descriptors with SHA-256 {} are published",
                    lintas_certs::hex(sha256)
                ))
            })
    }
}

/// One quota of a catalogue service, as its provider server reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(super) struct CatalogueQuota {
    /// A method name, an HTTP method for a REST service, or empty for the whole service.
    method: String,
    /// A client, or empty for every client.
    client: String,
    calls: u32,
    per_secs: u32,
    burst: u32,
}

/// Most a quota's numbers may be: a billion calls, over at most 31 days.
const MAX_QUOTA_CALLS: u32 = 1_000_000_000;
const MAX_QUOTA_SECS: u32 = 31 * 86_400;

impl CatalogueQuota {
    /// A reported quota, checked only for what the catalogue needs (the provider's
    /// server enforces it): a method name, a client identifier, numbers in range.
    pub(super) fn checked(q: &gc::Quota) -> std::result::Result<Self, String> {
        let method_ok = q.method.len() <= 128
            && q.method
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !method_ok {
            return Err(format!("quota method '{}' is not a method name", q.method));
        }
        if !q.client.is_empty() {
            q.client
                .parse::<ClientId>()
                .map_err(|e| format!("quota client: {e}"))?;
        }
        let in_range = |n: u32, most: u32| (1..=most).contains(&n);
        if !in_range(q.calls, MAX_QUOTA_CALLS)
            || !in_range(q.burst, MAX_QUOTA_CALLS)
            || !in_range(q.per_secs, MAX_QUOTA_SECS)
        {
            return Err(format!(
                "quota numbers out of range: {} calls per {} s, burst {}",
                q.calls, q.per_secs, q.burst
            ));
        }
        Ok(CatalogueQuota {
            method: q.method.clone(),
            client: q.client.clone(),
            calls: q.calls,
            per_secs: q.per_secs,
            burst: q.burst,
        })
    }

    pub(super) fn published(&self) -> gc::Quota {
        gc::Quota {
            method: self.method.clone(),
            client: self.client.clone(),
            calls: self.calls,
            per_secs: self.per_secs,
            burst: self.burst,
        }
    }
}

#[cfg(test)]
mod quota_tests {
    use super::*;

    #[test]
    fn reported_quotas_are_bounded_and_named_properly() {
        let ok = gc::Quota {
            method: "CariNik".into(),
            client: "ID/GOV/KEMENSOS/DTKS".into(),
            calls: 600,
            per_secs: 60,
            burst: 50,
        };
        let cases: &[(gc::Quota, Option<&str>)] = &[
            (ok.clone(), None),
            (
                gc::Quota {
                    method: String::new(),
                    client: String::new(),
                    ..ok.clone()
                },
                None,
            ),
            (
                gc::Quota {
                    method: "Cari Nik".into(),
                    ..ok.clone()
                },
                Some("not a method name"),
            ),
            (
                gc::Quota {
                    method: "x".repeat(129),
                    ..ok.clone()
                },
                Some("not a method name"),
            ),
            (
                gc::Quota {
                    client: "ID/GOV".into(),
                    ..ok.clone()
                },
                Some("quota client"),
            ),
            (
                gc::Quota {
                    calls: 0,
                    ..ok.clone()
                },
                Some("out of range"),
            ),
            (
                gc::Quota {
                    burst: 0,
                    ..ok.clone()
                },
                Some("out of range"),
            ),
            (
                gc::Quota {
                    per_secs: 0,
                    ..ok.clone()
                },
                Some("out of range"),
            ),
            (
                gc::Quota {
                    per_secs: 40 * 86_400,
                    ..ok.clone()
                },
                Some("out of range"),
            ),
            (
                gc::Quota {
                    calls: 2_000_000_000,
                    ..ok.clone()
                },
                Some("out of range"),
            ),
        ];
        for (q, want) in cases {
            match (CatalogueQuota::checked(q), want) {
                (Ok(c), None) => assert_eq!(&c.published(), q),
                (Err(e), Some(want)) => assert!(e.contains(want), "{q:?}: {e}"),
                (got, want) => panic!("{q:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
