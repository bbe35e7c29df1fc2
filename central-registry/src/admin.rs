//! Client side of the administrator API, authenticated with an administrator certificate.
//! Used by `lintas registry admin …`, the demo and tests.

use std::path::{Path, PathBuf};

use lintas_certs::{TrustStore, keys};
use lintas_proto::registry::v1::registry_admin_client::RegistryAdminClient;
use tonic::transport::Channel;

use crate::RegistryServeError;

/// Files of an administrator credentials directory (as `init` writes it).
pub fn cert_path(dir: &Path) -> PathBuf {
    dir.join("admin.crt.pem")
}
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join("admin.key.pem")
}
pub fn ca_path(dir: &Path) -> PathBuf {
    dir.join("ca.crt.pem")
}

/// Connects to the registry at `url` with the credentials in `dir`.
pub fn connect(dir: &Path, url: &str) -> Result<RegistryAdminClient<Channel>, RegistryServeError> {
    connect_any(dir, &[url])
}

/// Connects to whichever registry node of `urls` answers first, in order, with the
/// credentials in `dir`.
pub fn connect_any(
    dir: &Path,
    urls: &[&str],
) -> Result<RegistryAdminClient<Channel>, RegistryServeError> {
    let cert = lintas_certs::files::read_cert(&cert_path(dir))?;
    let key = keys::read(&key_path(dir))?;
    // The registry's CAs: two while one replaces the other (`registry keys`).
    let cas = lintas_certs::files::read_certs(&ca_path(dir))?;
    let trust = TrustStore::new(cas.iter().map(Vec::as_slice))?;
    let tls =
        lintas_transport::client_config(&trust, lintas_certs::Role::Registry, Some((&cert, &key)))?;
    Ok(RegistryAdminClient::new(lintas_transport::channel_to_any(
        urls, tls,
    )?))
}
