//! SQLite, embedded: a small pool of connections used on the blocking thread pool, each
//! query interrupted when it outlives the timeout.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};
use tonic::{Code, Status};

use crate::{Outcome, SqlValue, database_error};
use lintas_adapter::backend_status;

/// Most rows one query may return.
pub const MAX_ROWS: usize = 10_000;

pub struct Pool {
    path: PathBuf,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as V;
        Ok(ToSqlOutput::Owned(match self {
            SqlValue::Null => V::Null,
            SqlValue::Int(i) => V::Integer(*i),
            SqlValue::Bool(b) => V::Integer(i64::from(*b)),
            SqlValue::Real(r) => V::Real(*r),
            SqlValue::Text(t) => V::Text(t.clone()),
            SqlValue::Blob(b) => V::Blob(b.clone()),
        }))
    }
}

fn sqlite_status(e: rusqlite::Error) -> Status {
    use rusqlite::ErrorCode as E;
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            E::ConstraintViolation => Code::FailedPrecondition,
            E::DatabaseBusy | E::DatabaseLocked => Code::Unavailable,
            E::OperationInterrupted => Code::DeadlineExceeded,
            E::CannotOpen | E::NotADatabase | E::DatabaseCorrupt | E::ReadOnly => Code::Unavailable,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    };
    backend_status(code, format!("database: {e}"))
}

fn value(v: ValueRef<'_>) -> SqlValue {
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Int(i),
        ValueRef::Real(r) => SqlValue::Real(r),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

fn execute(conn: &Connection, sql: &str, values: &[SqlValue]) -> Result<Outcome, Status> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_status)?;
    let params = rusqlite::params_from_iter(values.iter());
    if stmt.column_count() == 0 {
        let n = stmt.execute(params).map_err(sqlite_status)?;
        return Ok(Outcome::Affected(n as u64));
    }
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut rows = stmt.query(params).map_err(sqlite_status)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sqlite_status)? {
        if out.len() == MAX_ROWS {
            return Err(backend_status(
                Code::ResourceExhausted,
                format!("the query returned more than {MAX_ROWS} rows; narrow it or add a LIMIT"),
            ));
        }
        let mut row = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            row.push(value(r.get_ref(i).map_err(sqlite_status)?));
        }
        out.push(row);
    }
    Ok(Outcome::Rows(columns, out))
}

impl Pool {
    /// Opens `connections` connections to an existing database file.
    pub fn open(path: &Path, connections: usize, timeout: Duration) -> Result<Self, String> {
        if !path.is_file() {
            return Err(format!(
                "database {}: no such file (SQLite databases are not created by the adapter)",
                path.display()
            ));
        }
        let mut idle = Vec::new();
        for _ in 0..connections {
            idle.push(connect(path, timeout)?);
        }
        Ok(Pool {
            path: path.to_owned(),
            timeout,
            permits: tokio::sync::Semaphore::new(idle.len()),
            idle: Mutex::new(idle),
        })
    }

    /// An idle connection, or a new one when a failed query took one with it.
    fn take(&self) -> Result<Connection, Status> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => {
                connect(&self.path, self.timeout).map_err(|e| backend_status(Code::Unavailable, e))
            }
        }
    }

    fn give(&self, c: Connection) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }

    /// The columns `sql` returns (none for a statement without rows), checking it and
    /// that every parameter is a named one.
    pub fn columns(&self, sql: &str, parameters: usize) -> Result<Vec<String>, String> {
        let conn = self.take().map_err(|s| s.message().to_owned())?;
        let out = match conn.prepare(sql) {
            Ok(s) if s.parameter_count() != parameters => Err(format!(
                "the query has {} parameters but names {parameters} fields; write parameters as :field",
                s.parameter_count()
            )),
            Ok(s) => Ok(s.column_names().map(str::to_owned).collect()),
            Err(e) => Err(format!("the query does not prepare: {e}")),
        };
        self.give(conn);
        out
    }

    /// Runs `sql` with `values` bound, interrupting it after `timeout`. The connection
    /// returns to the pool even when the caller stops waiting: run this in a task of its
    /// own.
    pub async fn run(
        &self,
        sql: &str,
        values: Vec<SqlValue>,
        timeout: Duration,
    ) -> Result<Outcome, Status> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| backend_status(Code::Unavailable, "the connection pool is closed"))?;
        let conn = self.take()?;
        // Interrupts the query if this future goes away first (the runtime shutting
        // down), so no blocking thread is left running it.
        let interrupt = InterruptOnDrop(Some(conn.get_interrupt_handle()));
        let sql = sql.to_owned();
        let mut task = tokio::task::spawn_blocking(move || {
            let outcome = execute(&conn, &sql, &values);
            (conn, outcome)
        });
        let lost = |e: tokio::task::JoinError| database_error(format!("query task failed: {e}"));
        let mut timed_out = false;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let (conn, outcome) = loop {
            tokio::select! {
                done = &mut task => break done.map_err(lost)?,
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    interrupt.interrupt();
                }
                // A statement that had not started yet when interrupted is interrupted
                // again until it gives up.
                _ = tokio::time::sleep(Duration::from_millis(20)), if timed_out => {
                    interrupt.interrupt();
                }
            }
        };
        interrupt.disarm();
        self.give(conn);
        if timed_out {
            return Err(backend_status(
                Code::DeadlineExceeded,
                format!(
                    "the database did not answer within {} ms",
                    timeout.as_millis()
                ),
            ));
        }
        outcome
    }
}

struct InterruptOnDrop(Option<rusqlite::InterruptHandle>);

impl InterruptOnDrop {
    fn interrupt(&self) {
        if let Some(h) = &self.0 {
            h.interrupt();
        }
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.interrupt();
    }
}

fn connect(path: &Path, timeout: Duration) -> Result<Connection, String> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("database {}: {e}", path.display()))?;
    // Waiting for another writer's lock counts against the same deadline.
    c.busy_timeout(timeout)
        .map_err(|e| format!("database {}: {e}", path.display()))?;
    Ok(c)
}
