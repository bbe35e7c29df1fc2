//! PostgreSQL: a pool of connections, each running one query at a time, opened on first
//! use and again after it broke. A query that outlives the timeout is cancelled on the
//! server and its connection dropped. Parameters are converted to the types the server
//! infers for the statement; columns are read by their declared types; rows are read as
//! a stream and refused past `MAX_ROWS`.

use std::time::Duration;

use lintas_adapter::backend_status;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row};
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use crate::{Outcome, SqlValue, sqlite::MAX_ROWS};

pub struct Connection {
    config: Config,
    /// host:port, for messages.
    target: String,
    /// Each slot is one connection, used by one query at a time.
    slots: Vec<tokio::sync::Mutex<Option<Client>>>,
    free: tokio::sync::Semaphore,
}

type Param = Box<dyn ToSql + Sync + Send>;

fn pg_status(e: tokio_postgres::Error) -> Status {
    let code = match e.code().map(|c| c.code()) {
        // Class 23: integrity constraint violation; P0001: raise_exception.
        Some(c) if c.starts_with("23") || c == "P0001" => Code::FailedPrecondition,
        // Class 22: data exception (bad input value).
        Some(c) if c.starts_with("22") => Code::InvalidArgument,
        Some("57014") => Code::DeadlineExceeded,
        // Connection exceptions, too many connections, the server shutting down.
        Some(c) if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P0") => {
            Code::Unavailable
        }
        Some(_) => Code::Internal,
        None if e.is_closed() => Code::Unavailable,
        None => Code::Internal,
    };
    let text = match e.as_db_error() {
        Some(db) => format!("database: {}", db.message()),
        None => format!("database: {e}"),
    };
    backend_status(code, text)
}

/// `value` as a parameter of PostgreSQL type `ty` (the `n`th).
fn param(n: usize, value: SqlValue, ty: &Type) -> Result<Param, String> {
    let unfit = |v: &SqlValue| {
        format!(
            "parameter ${n} is {} but the query needs {ty}; cast it in the query (for example :field::{ty})",
            v.type_name()
        )
    };
    let out_of_range = || format!("parameter ${n} is out of range for {ty}");
    Ok(match (value, ty) {
        (SqlValue::Int(i), t) if *t == Type::INT2 => {
            Box::new(i16::try_from(i).map_err(|_| out_of_range())?)
        }
        (SqlValue::Int(i), t) if *t == Type::INT4 => {
            Box::new(i32::try_from(i).map_err(|_| out_of_range())?)
        }
        (SqlValue::Int(i), t) if *t == Type::INT8 => Box::new(i),
        (SqlValue::Int(i), t) if *t == Type::FLOAT8 => Box::new(i as f64),
        (SqlValue::Real(r), t) if *t == Type::FLOAT8 => Box::new(r),
        (SqlValue::Real(r), t) if *t == Type::FLOAT4 => Box::new(r as f32),
        (SqlValue::Bool(b), t) if *t == Type::BOOL => Box::new(b),
        (SqlValue::Blob(b), t) if *t == Type::BYTEA => Box::new(b),
        (SqlValue::Text(s), t) if *t == Type::DATE => Box::new(
            time::Date::parse(
                &s,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|e| format!("parameter ${n}: '{s}' is not a date (YYYY-MM-DD): {e}"))?,
        ),
        (v, t)
            if [
                Type::TEXT,
                Type::VARCHAR,
                Type::BPCHAR,
                Type::NAME,
                Type::UNKNOWN,
            ]
            .contains(t) =>
        {
            match v {
                SqlValue::Text(s) => Box::new(s),
                SqlValue::Int(i) => Box::new(i.to_string()),
                SqlValue::Real(r) => Box::new(r.to_string()),
                SqlValue::Bool(b) => Box::new(b.to_string()),
                other => return Err(unfit(&other)),
            }
        }
        (v, _) => return Err(unfit(&v)),
    })
}

/// Column `i` of `row` as a value, by its declared type.
fn column(row: &Row, i: usize) -> Result<SqlValue, String> {
    let c = &row.columns()[i];
    let ty = c.type_();
    let read = |e: tokio_postgres::Error| format!("column {}: {e}", c.name());
    let v = if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)
            .map_err(read)?
            .map(SqlValue::Bool)
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)
            .map_err(read)?
            .map(|v| SqlValue::Int(v.into()))
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)
            .map_err(read)?
            .map(|v| SqlValue::Int(v.into()))
    } else if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)
            .map_err(read)?
            .map(SqlValue::Int)
    } else if *ty == Type::FLOAT4 {
        row.try_get::<_, Option<f32>>(i)
            .map_err(read)?
            .map(|v| SqlValue::Real(v.into()))
    } else if *ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i)
            .map_err(read)?
            .map(SqlValue::Real)
    } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
        row.try_get::<_, Option<String>>(i)
            .map_err(read)?
            .map(SqlValue::Text)
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)
            .map_err(read)?
            .map(SqlValue::Blob)
    } else if *ty == Type::DATE {
        row.try_get::<_, Option<time::Date>>(i)
            .map_err(read)?
            .map(|d| SqlValue::Text(d.to_string()))
    } else if *ty == Type::TIMESTAMPTZ {
        row.try_get::<_, Option<time::OffsetDateTime>>(i)
            .map_err(read)?
            .map(|t| {
                SqlValue::Text(
                    t.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                )
            })
    } else {
        return Err(format!(
            "column {} has type {ty}, which the adapter does not read; cast it in the query (for example {}::text)",
            c.name(),
            c.name()
        ));
    };
    Ok(v.unwrap_or(SqlValue::Null))
}

impl Connection {
    pub fn new(url: &str, connections: usize, timeout: Duration) -> Result<Self, String> {
        let mut config: Config = url.parse().map_err(|e| {
            format!(
                "database '{}' is not a PostgreSQL URL: {e}",
                crate::redact_url(url)
            )
        })?;
        config.connect_timeout(timeout);
        let target = match (config.get_hosts().first(), config.get_ports().first()) {
            (Some(tokio_postgres::config::Host::Tcp(h)), Some(p)) => format!("{h}:{p}"),
            (Some(tokio_postgres::config::Host::Tcp(h)), None) => format!("{h}:5432"),
            _ => "PostgreSQL".into(),
        };
        let connections = connections.max(1);
        Ok(Connection {
            config,
            target,
            slots: (0..connections)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            free: tokio::sync::Semaphore::new(connections),
        })
    }

    async fn connect(&self) -> Result<Client, Status> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| {
            backend_status(
                Code::Unavailable,
                format!("database at {} unreachable: {e}", self.target),
            )
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    async fn query(
        &self,
        client: &Client,
        sql: &str,
        values: Vec<SqlValue>,
    ) -> Result<Outcome, Status> {
        let stmt = client.prepare(sql).await.map_err(pg_status)?;
        if stmt.params().len() != values.len() {
            return Err(backend_status(
                Code::Internal,
                format!(
                    "the query takes {} parameters, {} were given",
                    stmt.params().len(),
                    values.len()
                ),
            ));
        }
        let params = values
            .into_iter()
            .zip(stmt.params())
            .enumerate()
            .map(|(i, (v, ty))| param(i + 1, v, ty))
            .collect::<Result<Vec<Param>, String>>()
            .map_err(|e| backend_status(Code::Internal, e))?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        if stmt.columns().is_empty() {
            let n = client.execute(&stmt, &refs).await.map_err(pg_status)?;
            return Ok(Outcome::Affected(n));
        }
        let rows = client.query_raw(&stmt, refs).await.map_err(pg_status)?;
        tokio::pin!(rows);
        let columns: Vec<String> = stmt.columns().iter().map(|c| c.name().to_owned()).collect();
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            let row = row.map_err(pg_status)?;
            if out.len() == MAX_ROWS {
                return Err(backend_status(
                    Code::ResourceExhausted,
                    format!(
                        "the query returned more than {MAX_ROWS} rows; narrow it or add a LIMIT"
                    ),
                ));
            }
            out.push(
                (0..columns.len())
                    .map(|i| column(&row, i))
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(|e| backend_status(Code::Internal, e))?,
            );
        }
        Ok(Outcome::Rows(columns, out))
    }

    /// Runs `sql` with `values` on a connection of its own, cancelling it on the server
    /// after `timeout`.
    pub async fn run(
        &self,
        sql: &str,
        values: Vec<SqlValue>,
        timeout: Duration,
    ) -> Result<Outcome, Status> {
        let _permit = self
            .free
            .acquire()
            .await
            .map_err(|_| backend_status(Code::Unavailable, "the connection pool is closed"))?;
        // The permit leaves at least one slot nobody holds.
        let mut slot = self
            .slots
            .iter()
            .find_map(|s| s.try_lock().ok())
            .ok_or_else(|| backend_status(Code::Unavailable, "no free connection"))?;
        if slot.as_ref().is_none_or(Client::is_closed) {
            let connected = tokio::time::timeout(timeout, self.connect())
                .await
                .map_err(|_| {
                    backend_status(
                        Code::Unavailable,
                        format!(
                            "database at {} did not accept a connection within {} ms",
                            self.target,
                            timeout.as_millis()
                        ),
                    )
                })??;
            *slot = Some(connected);
        }
        let Some(client) = slot.as_ref() else {
            return Err(backend_status(Code::Internal, "no connection"));
        };
        match tokio::time::timeout(timeout, self.query(client, sql, values)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // This connection runs only this query, so the cancel reaches nobody
                // else's. The connection is not used again.
                let cancel = client.cancel_token();
                tokio::spawn(async move {
                    let _ = cancel.cancel_query(NoTls).await;
                });
                *slot = None;
                Err(backend_status(
                    Code::DeadlineExceeded,
                    format!(
                        "the database did not answer within {} ms",
                        timeout.as_millis()
                    ),
                ))
            }
        }
    }
}
