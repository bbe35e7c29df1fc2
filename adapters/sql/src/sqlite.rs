//! SQLite, embedded: a small pool of connections used on the blocking thread pool, each
//! query interrupted when it outlives the timeout.

use std::path::Path;
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
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| format!("database {}: {e}", path.display()))?;
            c.busy_timeout(timeout)
                .map_err(|e| format!("database {}: {e}", path.display()))?;
            idle.push(c);
        }
        Ok(Pool {
            permits: tokio::sync::Semaphore::new(idle.len()),
            idle: Mutex::new(idle),
        })
    }

    fn take(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn give(&self, c: Connection) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }

    /// The columns `sql` returns (none for a statement without rows), checking it.
    pub fn columns(&self, sql: &str) -> Result<Vec<String>, String> {
        let conn = self.take().ok_or("no idle connection")?;
        let out = conn
            .prepare(sql)
            .map(|s| s.column_names().map(str::to_owned).collect())
            .map_err(|e| format!("the query does not prepare: {e}"));
        self.give(conn);
        out
    }

    /// Runs `sql` with `values` bound, interrupting it after `timeout`.
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
            .map_err(|_| database_error("the connection pool is closed"))?;
        let conn = self
            .take()
            .ok_or_else(|| database_error("no idle connection"))?;
        let interrupt = conn.get_interrupt_handle();
        let sql = sql.to_owned();
        let mut task = tokio::task::spawn_blocking(move || {
            let outcome = execute(&conn, &sql, &values);
            (conn, outcome)
        });
        let lost = |e: tokio::task::JoinError| database_error(format!("query task failed: {e}"));
        let (conn, outcome) = tokio::select! {
            done = &mut task => done.map_err(lost)?,
            _ = tokio::time::sleep(timeout) => {
                interrupt.interrupt();
                let (conn, _) = task.await.map_err(lost)?;
                self.give(conn);
                return Err(backend_status(
                    Code::DeadlineExceeded,
                    format!("the database did not answer within {} ms", timeout.as_millis()),
                ));
            }
        };
        self.give(conn);
        outcome
    }
}
