//! The record pipeline both endpoints write through: a record is handed to the log with
//! the time-stamp it follows, and the caller is answered only once it is durable. Calls
//! are refused while no trusted time could be had for too long (fail closed), and
//! message bodies are kept beside their records.

use std::future::Future;
use std::sync::Arc;

use lintas_globalconf::Clock;
use lintas_log::{Record, RecordLog};
use tonic::{Code, Status};

use crate::bodies::Bodies;
use crate::errors::{ErrorSource, error, now_ms};
use crate::timestamps::Timestamps;

pub struct Recorder {
    log: RecordLog,
    timestamps: Arc<Timestamps>,
    bodies: Arc<Bodies>,
    clock: Arc<dyn Clock>,
    /// Calls are refused once the oldest record without a time-stamp waited this long.
    fail_closed_secs: u64,
}

impl Recorder {
    pub fn new(
        log: RecordLog,
        timestamps: Arc<Timestamps>,
        bodies: Arc<Bodies>,
        clock: Arc<dyn Clock>,
        fail_closed_secs: u64,
    ) -> Self {
        Recorder {
            log,
            timestamps,
            bodies,
            clock,
            fail_closed_secs,
        }
    }

    /// Milliseconds since the Unix epoch by the server's clock.
    pub fn now_ms(&self) -> i64 {
        now_ms(&*self.clock)
    }

    /// The server's clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Appends a record durably; a record that cannot be stored fails the call.
    pub async fn record(&self, record: Record, side: ErrorSource) -> Result<u64, Status> {
        self.record_soon(record, side)?.await
    }

    /// Hands a record to the log at once and returns a future that resolves when it is
    /// durable. Records are written in the order they are handed over, so a later
    /// record being durable means this one is too.
    pub fn record_soon(
        &self,
        mut record: Record,
        side: ErrorSource,
    ) -> Result<impl Future<Output = Result<u64, Status>> + use<>, Status> {
        let failed = move |e: lintas_log::LogError| {
            tracing::error!(error = %e, "record not stored; call refused");
            error(
                Code::Unavailable,
                side,
                format!("the security server could not record the exchange: {e}"),
            )
        };
        self.timestamps.note_record(record.time_unix_ms);
        record.timestamp_sha256 = self
            .timestamps
            .latest_sha256()
            .map(|h| h.to_vec())
            .unwrap_or_default();
        let durable = self.log.submit(record).map_err(failed)?;
        Ok(async move { durable.await.map_err(failed) })
    }

    /// Keeps message bodies beside their records; a failure loses no evidence the
    /// records hold (they carry each body's hash), so it is logged, not fatal.
    pub fn keep_bodies(&self, bodies: &[(u64, &[u8])]) {
        let now = self.now_ms();
        for (index, body) in bodies {
            if let Err(e) = self.bodies.put(*index, now, body) {
                tracing::warn!(error = %e, record = index, "message body not kept");
            }
        }
    }

    /// Whether message bodies are kept beside their records.
    pub fn keeps_bodies(&self) -> bool {
        self.bodies.kept()
    }

    /// Refuses calls once no time-stamp could be had for `timestamp_fail_closed_secs`.
    pub fn check_trusted_time(&self, side: ErrorSource) -> Result<(), Status> {
        let age = self
            .timestamps
            .age(lintas_certs::unix_secs(self.clock.now()));
        if age > self.fail_closed_secs as i64 {
            return Err(error(
                Code::Unavailable,
                side,
                format!(
                    "the oldest record without a trusted time-stamp has waited {age} s (timestamp_fail_closed_secs is {}): calls are refused until the time-stamping authority answers",
                    self.fail_closed_secs
                ),
            ));
        }
        Ok(())
    }
}
