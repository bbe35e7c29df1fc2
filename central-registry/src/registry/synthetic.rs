//! A synthetic instance for `lintas bench --scale`: members with one subsystem each,
//! security servers with certificates the CA issues, and a catalogue of services with
//! a grant each, written in one change, so that configuration size, generation and
//! verification can be measured at national scale without registering each server.
//! The daemon never calls it.

use super::*;

impl Registry {
    /// Adds `members` members (`GOV/Mnnnnn`, one subsystem `APP` each), `servers` of
    /// them with a security server hosting that subsystem, and `services` services
    /// spread over those servers, each granted to another member. Returns the
    /// configuration serial that lists them.
    pub fn fill_synthetic(&self, members: usize, servers: usize, services: usize) -> Result<u64> {
        let instance = self.policy.instance.clone();
        let member_id = |i: usize| -> Result<MemberId> {
            format!("{instance}/GOV/M{i:05}")
                .parse()
                .map_err(|e| internal(format!("synthetic member: {e}")))
        };
        let servers = servers.min(members);
        let validity =
            Validity::starting(self.clock.now(), self.policy.cert_validity).map_err(internal)?;
        // Certificates first: issuing is the slow part and needs no lock.
        let mut server_recs = Vec::with_capacity(servers);
        for j in 0..servers {
            let owner = member_id(j)?;
            let id: ServerId = format!("{owner}/SS1")
                .parse()
                .map_err(|e| internal(format!("synthetic server: {e}")))?;
            let address: HostPort = format!("ss{j}.example.go.id:5500")
                .parse()
                .map_err(|e| internal(format!("synthetic address: {e}")))?;
            let issue = |profile: &Profile| -> Result<Vec<u8>> {
                let key = lintas_certs::keys::generate().map_err(internal)?;
                self.keys
                    .ca
                    .issue_for_key(&key, profile, validity)
                    .map_err(internal)
            };
            let tls = issue(&Profile::Server {
                id: id.clone(),
                hosts: vec![address.host().to_owned()],
            })?;
            let signing = issue(&Profile::Member(owner.clone()))?;
            let app: SubsystemId = format!("{owner}/APP")
                .parse()
                .map_err(|e| internal(format!("synthetic subsystem: {e}")))?;
            server_recs.push(ServerRec {
                id,
                address,
                clients: BTreeSet::from([app]),
                certs: vec![
                    IssuedCert::new(CertKind::Tls, &tls)?,
                    IssuedCert::new(CertKind::Signing, &signing)?,
                ],
                log_key_hex: String::new(),
                maintenance: false,
            });
        }
        let app: Code = Code::parse_part("APP", "subsystem").map_err(internal)?;
        let ((), serial) = self.commit("bench", Publish::Yes, |state, change| {
            for i in 0..members {
                let id = member_id(i)?;
                let rec = MemberRec {
                    id: id.clone(),
                    name: format!("Dinas {i}"),
                    subsystems: BTreeSet::from([app.clone()]),
                };
                change.put(Key::Member(&id).into(), &rec)?;
                state.members.insert(id, rec);
            }
            for (j, server) in server_recs.iter().enumerate() {
                change.put(Key::Server(&server.id).into(), server)?;
                state.servers.insert(server.id.clone(), server.clone());
                let provider = server
                    .clients
                    .iter()
                    .next()
                    .cloned()
                    .ok_or_else(|| internal("synthetic server hosts nothing"))?;
                let mine = services / servers.max(1) + usize::from(j < services % servers.max(1));
                let reported: Vec<CatalogueService> = (0..mine)
                    .map(|k| {
                        let service: ServiceName = format!("layanan{j}.v1.Layanan{k}")
                            .parse()
                            .map_err(|e| internal(format!("synthetic service: {e}")))?;
                        let subject = ClientId::Member(member_id((j + k + 1) % members.max(1))?);
                        Ok(CatalogueService {
                            provider: provider.clone(),
                            service,
                            descriptor_sha256: String::new(),
                            openapi_sha256: String::new(),
                            grants: vec![CatalogueGrant {
                                method: String::new(),
                                subject: subject.to_string(),
                                path: String::new(),
                            }],
                            rest: false,
                            quotas: Vec::new(),
                            topic: false,
                            large_messages: false,
                        })
                    })
                    .collect::<Result<_>>()?;
                change.put(
                    Key::Catalogue(&server.id).into(),
                    &CatalogueRec {
                        server: server.id.clone(),
                        services: reported.clone(),
                    },
                )?;
                state.catalogue.insert(server.id.clone(), reported);
            }
            Ok((
                (),
                format!(
                    "synthetic instance: {members} members, {servers} servers, {services} services"
                ),
            ))
        })?;
        Ok(serial)
    }
}
