//! The `lintas` command's exit statuses, the same for every subcommand (the README lists
//! them under "Exit statuses"): a script tells a mistyped command from a bad
//! configuration, a daemon that is not there, a refusal and evidence that does not
//! verify, without reading the message.

use std::process::ExitCode;

/// Why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything else (an I/O error, an internal failure).
    Failure = 1,
    /// The command line is wrong (clap says what; also its own exit status).
    Usage = 2,
    /// A configuration file or override is wrong, or a key or certificate file is
    /// missing or unreadable.
    Config = 3,
    /// The running daemon or the registry cannot be reached.
    Unreachable = 4,
    /// The daemon or the registry answered and refused (not allowed, not found,
    /// already exists, not in the state the request needs, rejected).
    Refused = 5,
    /// Evidence, an archive or an audit log was checked and does not verify.
    NotVerified = 6,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

pub use lintas_audit::command::NotVerified;

/// The exit status of a command that failed with `e`: the first error in its chain
/// that says.
pub fn classify(e: &anyhow::Error) -> Exit {
    e.chain().find_map(of).unwrap_or(Exit::Failure)
}

fn of(e: &(dyn std::error::Error + 'static)) -> Option<Exit> {
    if e.is::<NotVerified>() {
        return Some(Exit::NotVerified);
    }
    if e.is::<lintas_ss::config::ConfigError>() {
        return Some(Exit::Config);
    }
    if let Some(e) = e.downcast_ref::<lintas_backup::BackupError>() {
        return backup(e);
    }
    if let Some(e) = e.downcast_ref::<lintas_registry::backup::RestoreError>() {
        use lintas_registry::backup::RestoreError as E;
        return match e {
            E::Rollback(_) | E::Refused(_) => Some(Exit::Refused),
            E::Backup(b) => backup(b),
            E::Registry(r) => registry(r),
        };
    }
    if let Some(e) = e.downcast_ref::<lintas_ss::SsError>() {
        return ss(e);
    }
    if let Some(e) = e.downcast_ref::<lintas_registry::RegistryServeError>() {
        return registry(e);
    }
    if let Some(e) = e.downcast_ref::<lintas_certs::CertError>() {
        return cert(e);
    }
    if let Some(e) = e.downcast_ref::<lintas_globalconf::ConfError>() {
        return conf(e);
    }
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return status(s);
    }
    if let Some(lintas_adapter::AdapterError::Config(_)) = e.downcast_ref() {
        return Some(Exit::Config);
    }
    None
}

fn ss(e: &lintas_ss::SsError) -> Option<Exit> {
    use lintas_ss::SsError as E;
    Some(match e {
        E::Config(_) => Exit::Config,
        E::Cert(c) => return cert(c),
        E::Conf(c) => return conf(c),
        E::Unreachable(_) | E::NotRunning(_) => Exit::Unreachable,
        E::Registry(_)
        | E::Rejected { .. }
        | E::NotRegistered
        | E::NotEnrolled
        | E::WrongCertificate(_)
        | E::NotInConfiguration(_)
        | E::InvalidInput(_)
        | E::Rollback(_) => Exit::Refused,
        E::Backup(b) => return backup(b),
        _ => return None,
    })
}

/// A wrong passphrase or a taken target is refused; an archive that is damaged, altered or signed by
/// someone else fails verification.
fn backup(e: &lintas_backup::BackupError) -> Option<Exit> {
    use lintas_backup::BackupError as E;
    match e {
        E::Passphrase(_) | E::Target(_) => Some(Exit::Refused),
        E::Format(_) | E::Damaged(_) | E::Signature(_) => Some(Exit::NotVerified),
        E::Read(_) | E::Write(_) | E::Io { .. } => None,
    }
}

fn registry(e: &lintas_registry::RegistryServeError) -> Option<Exit> {
    use lintas_registry::RegistryServeError as E;
    match e {
        E::Config(_) | E::Keys(_) => Some(Exit::Config),
        E::Refused(_) => Some(Exit::Refused),
        E::Cert(c) => cert(c),
        E::Conf(c) => conf(c),
        _ => None,
    }
}

/// A key or certificate file that cannot be read, or a key that cannot be used (its
/// file's mode, its content, its token), is a configuration problem.
fn cert(e: &lintas_certs::CertError) -> Option<Exit> {
    use lintas_certs::CertError as C;
    matches!(
        e,
        C::Io { .. } | C::KeyPermissions { .. } | C::BadKey(_) | C::Token(_)
    )
    .then_some(Exit::Config)
}

fn conf(e: &lintas_globalconf::ConfError) -> Option<Exit> {
    use lintas_globalconf::ConfError as E;
    match e {
        E::Anchor { .. } => Some(Exit::Config),
        E::Fetch { .. } => Some(Exit::Unreachable),
        _ => None,
    }
}

/// A gRPC answer: one that never came is unreachable; a refusal is refused.
fn status(s: &tonic::Status) -> Option<Exit> {
    use tonic::Code as C;
    Some(match s.code() {
        C::Unavailable | C::DeadlineExceeded => Exit::Unreachable,
        C::InvalidArgument
        | C::NotFound
        | C::AlreadyExists
        | C::PermissionDenied
        | C::Unauthenticated
        | C::FailedPrecondition
        | C::ResourceExhausted
        | C::OutOfRange
        | C::Aborted => Exit::Refused,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn each_failure_has_its_status_wherever_it_is_in_the_chain() {
        let settings = || lintas_ss::config::ConfigError::Invalid {
            path: "ss.toml".into(),
            problems: vec!["unknown key 'x'".into()],
        };
        let cases: Vec<(anyhow::Error, Exit)> = vec![
            (anyhow::anyhow!("disk full"), Exit::Failure),
            (settings().into(), Exit::Config),
            (lintas_ss::SsError::Config(settings()).into(), Exit::Config),
            (
                anyhow::Error::from(settings()).context("loading the server"),
                Exit::Config,
            ),
            (
                lintas_ss::SsError::NotRunning("admin.sock: refused".into()).into(),
                Exit::Unreachable,
            ),
            (
                lintas_ss::SsError::Unreachable("registry: timeout".into()).into(),
                Exit::Unreachable,
            ),
            (
                lintas_ss::SsError::Rejected {
                    reason: "no".into(),
                }
                .into(),
                Exit::Refused,
            ),
            (lintas_ss::SsError::NotEnrolled.into(), Exit::Refused),
            (
                lintas_certs::CertError::Token("no token is labelled 'ss1'".into()).into(),
                Exit::Config,
            ),
            (
                lintas_ss::SsError::from(lintas_certs::CertError::KeyPermissions {
                    path: "sign.key.pem".into(),
                    mode: 0o644,
                })
                .into(),
                Exit::Config,
            ),
            (
                lintas_ss::SsError::Serve("bind".into()).into(),
                Exit::Failure,
            ),
            (
                lintas_ss::SsError::Conf(lintas_globalconf::ConfError::Anchor {
                    path: "anchor.toml".into(),
                    detail: "missing".into(),
                })
                .into(),
                Exit::Config,
            ),
            (
                lintas_globalconf::ConfError::Fetch {
                    url: "http://r/".into(),
                    detail: "refused".into(),
                }
                .into(),
                Exit::Unreachable,
            ),
            (
                lintas_globalconf::ConfError::BadSignature.into(),
                Exit::Failure,
            ),
            (tonic::Status::permission_denied("no").into(), Exit::Refused),
            (tonic::Status::not_found("no").into(), Exit::Refused),
            (tonic::Status::unavailable("down").into(), Exit::Unreachable),
            (tonic::Status::internal("bug").into(), Exit::Failure),
            (
                Err::<(), _>(tonic::Status::already_exists("grant"))
                    .context("adding the grant")
                    .unwrap_err(),
                Exit::Refused,
            ),
            (
                NotVerified("the evidence does not verify".into()).into(),
                Exit::NotVerified,
            ),
            (
                lintas_adapter::AdapterError::Config("map.toml: bad".into()).into(),
                Exit::Config,
            ),
            (
                lintas_adapter::AdapterError::Serve("bind".into()).into(),
                Exit::Failure,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(classify(&e), want, "{e:#}");
        }
        assert_eq!(ExitCode::from(Exit::NotVerified), ExitCode::from(6));
    }
}
