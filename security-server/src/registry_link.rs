//! This server as a client of the registry: mutual-TLS channels with its own TLS
//! certificate, to the registry the configuration anchor names.

use std::sync::Arc;

use lintas_certs::Role;
use lintas_globalconf::ConfClient;
use lintas_proto::registry::v1::catalogue_client::CatalogueClient;
use lintas_proto::registry::v1::registration_client::RegistrationClient;
use tonic::transport::Channel;

use crate::SsError;
use crate::own::Own;

#[derive(Clone)]
pub struct RegistryLink {
    conf: ConfClient,
    own: Arc<Own>,
}

impl RegistryLink {
    pub fn new(conf: ConfClient, own: Arc<Own>) -> Self {
        RegistryLink { conf, own }
    }

    /// A mutual-TLS channel to the registry, as this server: to its first node that
    /// answers.
    pub fn channel(&self) -> Result<Channel, SsError> {
        let anchor = self.conf.anchor();
        let keys = self.own.keys();
        let tls = lintas_transport::client_config(
            anchor.trust_store(),
            Role::Registry,
            Some(keys.tls_identity()),
        )?;
        Ok(lintas_transport::channel_to_any(
            &anchor.registry_urls(),
            tls,
        )?)
    }

    /// The registration service (witness, service reports), as this server.
    pub fn registration(&self) -> Result<RegistrationClient<Channel>, SsError> {
        Ok(RegistrationClient::new(self.channel()?))
    }

    /// The catalogue service (descriptor sets), as this server.
    pub fn catalogue(&self) -> Result<CatalogueClient<Channel>, SsError> {
        Ok(CatalogueClient::new(self.channel()?))
    }
}
