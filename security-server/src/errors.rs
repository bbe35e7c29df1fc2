//! Errors as the bus shows them: a gRPC status tagged with the part of the bus that
//! produced it, and the clock in the milliseconds the records use. A leaf: every part
//! of the security server uses it, and it uses none of them.

use lintas_globalconf::Clock;
use tonic::{Code, Status};

/// Metadata key telling the caller which part of the bus produced an error.
pub const ERROR_SOURCE: &str = "lintas-error-source";

/// Who produced an error the calling application sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The caller's own security server (bad call, configuration, provider unreachable).
    ConsumerServer,
    /// The provider's security server (a check refused the request, application down).
    ProviderServer,
    /// The provider application answered with this error itself.
    ProviderApp,
}

impl ErrorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::ConsumerServer => "consumer-server",
            ErrorSource::ProviderServer => "provider-server",
            ErrorSource::ProviderApp => "provider-app",
        }
    }
}

/// A gRPC status tagged with where it came from.
pub fn error(code: Code, source: ErrorSource, message: impl Into<String>) -> Status {
    let mut status = Status::new(code, message);
    if let Ok(v) = source.as_str().parse() {
        status.metadata_mut().insert(ERROR_SOURCE, v);
    }
    status
}

pub fn now_ms(clock: &dyn Clock) -> i64 {
    clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Metadata key on a provider server's refusal made before the application was called:
/// the consumer's server may then try another server of the provider.
pub const NOT_DELIVERED: &str = "lintas-not-delivered";

/// Marks a provider server's refusal as made before the application was called.
pub fn not_delivered(mut status: Status) -> Status {
    status.metadata_mut().insert(
        NOT_DELIVERED,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// Whether a refusal says the application was never called.
pub fn was_not_delivered(status: &Status) -> bool {
    status.metadata().contains_key(NOT_DELIVERED)
}

/// Metadata key naming why an error happened in X-Road's terms (`OutdatedGlobalConf`,
/// `AccessDenied`, ...), where the gRPC code alone does not say it. The REST entry
/// builds X-Road's error types from it.
pub const ERROR_REASON: &str = "lintas-error-reason";

/// Tags a status with its reason in X-Road's terms.
pub fn with_reason(mut status: Status, reason: &'static str) -> Status {
    status.metadata_mut().insert(
        ERROR_REASON,
        tonic::metadata::MetadataValue::from_static(reason),
    );
    status
}

/// The reason a status carries, if it is a plausible one (a peer's refusal is not
/// trusted to carry anything else).
pub fn reason_of(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(ERROR_REASON)
        .and_then(|v| v.to_str().ok())
        .filter(|r| (1..=40).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The reason of a refusal for being over a quota: not counted against the provider's
/// server, and not tried again on another of its servers.
pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";

/// Metadata key on a refusal for being over a quota: whole seconds until the client
/// may call again, as HTTP's `Retry-After` says them.
pub const RETRY_AFTER: &str = "retry-after";

/// Tags a status with the seconds to wait before retrying.
pub fn with_retry_after(mut status: Status, secs: u64) -> Status {
    if let Ok(v) = secs.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER, v);
    }
    status
}

/// The seconds a status says to wait, if it says a plausible number, at most the
/// longest quota period (a peer's refusal is not trusted to carry anything else).
pub fn retry_after_of(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| (1..=7).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .filter(|secs| (1..=u64::from(crate::quotas::MAX_PER_SECS)).contains(secs))
}
