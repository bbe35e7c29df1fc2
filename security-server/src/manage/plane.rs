//! The management plane of a security server: its users, API keys and admin audit log,
//! and the management listener's TLS configuration, for the full console or the
//! enrolment console.

use std::sync::Arc;

use crate::{Node, SsError};

/// The management plane of `node` (its users and admin audit log) for the console
/// `site`, and the management listener's TLS configuration (its own certificate, made at
/// first start). Open it once per process at a time: the audit log has one appender.
pub fn management_plane(
    node: &Node,
    site: &'static lintas_manage::console::Site,
) -> Result<(Arc<lintas_manage::Plane>, Arc<rustls::ServerConfig>), SsError> {
    let plane = lintas_manage::Plane::new(
        Arc::new(
            lintas_manage::Users::open(&node.paths.users())
                .map_err(|e| SsError::State(e.to_string()))?,
        ),
        Arc::new(
            lintas_manage::AuditLog::open(&node.paths.admin_audit_log())
                .map_err(|e| SsError::State(e.to_string()))?,
        ),
        site,
    );
    let (cert, key) = crate::self_signed::local_identity(
        &node.paths.management_cert(),
        &node.paths.management_key(),
        &node.config.management_hostnames,
        &format!("{} management", node.config.server_id),
    )?;
    Ok((plane, lintas_transport::web_server_config(&cert, &key)?))
}
