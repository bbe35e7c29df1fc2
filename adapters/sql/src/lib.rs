//! The SQL backend: each gRPC method runs one parameterised query.
//!
//! ```toml
//! [sql]
//! # sqlite:PATH (relative to this file; the database must exist) or
//! # postgres://user:password@host:port/database
//! database = "sqlite:sekolah.db"
//! timeout_ms = 5000
//! connections = 4          # pooled connections, each running one query at a time
//!
//! [sql.methods.DaftarSiswa]
//! query = "SELECT nisn, nama, kelas FROM siswa WHERE npsn = :npsn ORDER BY nama"
//! rows = "siswa"           # a repeated message field of the response: one element per row
//!
//! [sql.methods.CariSiswa]
//! query = "SELECT nisn, nama, kelas FROM siswa WHERE nik = :nik"
//! # without rows: the response itself is the one row (none: NOT_FOUND)
//!
//! [sql.methods.Daftarkan]
//! query = "INSERT INTO siswa (nisn, nama) VALUES (:nisn, :nama)"
//! affected = "jumlah"      # for statements without rows: a field for the rows changed
//! ```
//!
//! `:field` names a scalar field of the request; values are always bound as parameters,
//! never spliced into the text. Columns are matched to fields by name and converted by
//! the field's type (NULL leaves the field unset); a column that does not fit its field
//! is a precise error. SQLite statements and their columns are checked when the adapter
//! starts.
#![forbid(unsafe_code)]

mod params;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lintas_adapter::values::{field_list, is_scalar, parse_text, set_or_push};
use lintas_adapter::{Adapter, AdapterError, Backend, CallFuture, backend_status};
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value,
};
use serde::Deserialize;
use tonic::{Code, Status};

pub use params::{Positional, Style, positional};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    database: String,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_connections")]
    connections: usize,
    #[serde(default)]
    methods: toml::Table,
}

fn default_timeout() -> u64 {
    5_000
}

fn default_connections() -> usize {
    4
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    query: String,
    rows: Option<String>,
    affected: Option<String>,
}

/// A value as a database hands it over or takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
}

impl SqlValue {
    fn type_name(&self) -> &'static str {
        match self {
            SqlValue::Null => "NULL",
            SqlValue::Int(_) => "an integer",
            SqlValue::Real(_) => "a real number",
            SqlValue::Text(_) => "text",
            SqlValue::Blob(_) => "a blob",
            SqlValue::Bool(_) => "a boolean",
        }
    }
}

/// What a statement gave back.
pub enum Outcome {
    /// Column names and rows.
    Rows(Vec<String>, Vec<Vec<SqlValue>>),
    /// Rows changed by a statement that returns none.
    Affected(u64),
}

/// Where the answer goes.
enum Shape {
    /// The response is the one row.
    One,
    /// Each row is an element of this repeated message field.
    Rows(FieldDescriptor),
    /// The number of rows changed goes in this integer field.
    Affected(FieldDescriptor),
}

struct Statement {
    query: Positional,
    /// The request field behind each position.
    params: Vec<FieldDescriptor>,
    shape: Shape,
}

enum Database {
    Sqlite(sqlite::Pool),
    Postgres(Box<postgres::Connection>),
}

pub struct SqlBackend {
    database: Arc<Database>,
    statements: BTreeMap<String, Arc<Statement>>,
    timeout: Duration,
}

/// The message each row fills.
fn row_message(method: &MethodDescriptor, shape: &Shape) -> Option<MessageDescriptor> {
    match shape {
        Shape::One => Some(method.output()),
        Shape::Rows(f) => f.kind().as_message().cloned(),
        Shape::Affected(_) => None,
    }
}

fn statement(method: &MethodDescriptor, m: Mapping, style: Style) -> Result<Statement, String> {
    let query = positional(&m.query, style)?;
    let input = method.input();
    let params = query
        .names
        .iter()
        .map(|name| {
            let f = input.get_field_by_name(name).ok_or_else(|| {
                format!(
                    "the query names :{name}, but {} has no field {name} (it has: {})",
                    input.full_name(),
                    field_list(&input)
                )
            })?;
            if !is_scalar(&f) {
                return Err(format!(
                    "parameter :{name} must be a single scalar field, not a list or a message"
                ));
            }
            Ok(f)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let output = method.output();
    let field = |name: &str| {
        output
            .get_field_by_name(name)
            .ok_or_else(|| format!("{} has no field {name}", output.full_name()))
    };
    let shape = match (m.rows, m.affected) {
        (Some(_), Some(_)) => return Err("give rows or affected, not both".into()),
        (Some(rows), None) => {
            let f = field(&rows)?;
            if !f.is_list() || !matches!(f.kind(), Kind::Message(_)) {
                return Err(format!(
                    "rows field {rows} must be a repeated message field"
                ));
            }
            Shape::Rows(f)
        }
        (None, Some(affected)) => {
            let f = field(&affected)?;
            if f.is_list()
                || !matches!(
                    f.kind(),
                    Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64
                )
            {
                return Err(format!(
                    "affected field {affected} must be a single integer field"
                ));
            }
            Shape::Affected(f)
        }
        (None, None) => Shape::One,
    };
    Ok(Statement {
        query,
        params,
        shape,
    })
}

/// Checks that every column names a scalar field of `message`.
fn check_columns(columns: &[String], message: &MessageDescriptor) -> Result<(), String> {
    for c in columns {
        let f = message.get_field_by_name(c).ok_or_else(|| {
            format!(
                "column {c} has no field in {} (fields: {}); rename it with AS",
                message.full_name(),
                field_list(message)
            )
        })?;
        if !is_scalar(&f) {
            return Err(format!(
                "column {c} cannot fill field {}: it is a list or a message",
                f.name()
            ));
        }
    }
    Ok(())
}

pub use lintas_settings::redact_url;

/// Builds the backend from the adapter's `[sql]` section, opening the database.
pub fn build(adapter: &Adapter, section: toml::Table) -> Result<Arc<dyn Backend>, AdapterError> {
    let section: Section = toml::Value::Table(section)
        .try_into()
        .map_err(|e| AdapterError::Config(format!("[sql]: {}", e.to_string().trim_end())))?;
    let bad = |e: String| AdapterError::Config(format!("[sql] {e}"));
    let timeout = Duration::from_millis(section.timeout_ms);
    let (database, style) = if let Some(path) = section.database.strip_prefix("sqlite:") {
        let path: PathBuf = adapter.path(path.as_ref());
        let pool = sqlite::Pool::open(&path, section.connections.max(1), timeout).map_err(bad)?;
        (Database::Sqlite(pool), Style::Question)
    } else if section.database.starts_with("postgres://")
        || section.database.starts_with("postgresql://")
    {
        let c = postgres::Connection::new(&section.database, section.connections, timeout)
            .map_err(bad)?;
        (Database::Postgres(Box::new(c)), Style::Dollar)
    } else {
        return Err(bad(format!(
            "database '{}' must start with sqlite: or postgres://",
            redact_url(&section.database)
        )));
    };
    let mut statements = BTreeMap::new();
    for (method, mapping) in
        lintas_adapter::method_mappings::<Mapping>(&adapter.service, "sql", section.methods)?
    {
        let at =
            |why: String| AdapterError::Config(format!("[sql.methods.{}]: {why}", method.name()));
        let st = statement(&method, mapping, style).map_err(at)?;
        // SQLite checks the statement and its columns now; PostgreSQL at each call.
        if let Database::Sqlite(pool) = &database {
            let columns = pool
                .columns(&st.query.sql, st.query.names.len())
                .map_err(at)?;
            match (&st.shape, row_message(&method, &st.shape)) {
                (Shape::Affected(_), _) if !columns.is_empty() => {
                    return Err(at(
                        "the query returns rows; map them with rows, not affected".into(),
                    ));
                }
                (_, Some(message)) => {
                    if columns.is_empty() {
                        return Err(at("the query returns no rows; use affected for a statement that changes data".into()));
                    }
                    check_columns(&columns, &message).map_err(at)?;
                }
                _ => {}
            }
        }
        statements.insert(method.name().to_owned(), Arc::new(st));
    }
    Ok(Arc::new(SqlBackend {
        database: Arc::new(database),
        statements,
        timeout,
    }))
}

/// The bound value of a request field.
fn param(message: &DynamicMessage, f: &FieldDescriptor) -> SqlValue {
    match message.get_field(f).as_ref() {
        Value::Bool(b) => SqlValue::Bool(*b),
        Value::I32(v) => SqlValue::Int(i64::from(*v)),
        Value::I64(v) => SqlValue::Int(*v),
        Value::U32(v) => SqlValue::Int(i64::from(*v)),
        Value::U64(v) => i64::try_from(*v)
            .map(SqlValue::Int)
            .unwrap_or_else(|_| SqlValue::Text(v.to_string())),
        Value::F32(v) => SqlValue::Real(f64::from(*v)),
        Value::F64(v) => SqlValue::Real(*v),
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Bytes(b) => SqlValue::Blob(b.to_vec()),
        Value::EnumNumber(n) => SqlValue::Int(i64::from(*n)),
        Value::Message(_) | Value::List(_) | Value::Map(_) => SqlValue::Null,
    }
}

/// A column's value as the field's type, or why it does not fit.
fn field_value(f: &FieldDescriptor, column: &str, v: &SqlValue) -> Result<Option<Value>, String> {
    let mismatch = || {
        format!(
            "column {column} holds {}, which does not fit field {} ({:?})",
            v.type_name(),
            f.name(),
            f.kind()
        )
    };
    let int = |i: i64| -> Result<Value, String> {
        let out_of_range = || {
            format!(
                "column {column}: {i} is out of range for field {}",
                f.name()
            )
        };
        Ok(match f.kind() {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                Value::I32(i32::try_from(i).map_err(|_| out_of_range())?)
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(i),
            Kind::Uint32 | Kind::Fixed32 => {
                Value::U32(u32::try_from(i).map_err(|_| out_of_range())?)
            }
            Kind::Uint64 | Kind::Fixed64 => {
                Value::U64(u64::try_from(i).map_err(|_| out_of_range())?)
            }
            Kind::Double => Value::F64(i as f64),
            Kind::Float => Value::F32(i as f32),
            Kind::Bool if i == 0 || i == 1 => Value::Bool(i == 1),
            Kind::Enum(_) => Value::EnumNumber(i32::try_from(i).map_err(|_| out_of_range())?),
            _ => return Err(mismatch()),
        })
    };
    Ok(Some(match v {
        SqlValue::Null => return Ok(None),
        SqlValue::Int(i) => int(*i)?,
        SqlValue::Bool(b) => match f.kind() {
            Kind::Bool => Value::Bool(*b),
            _ => return Err(mismatch()),
        },
        SqlValue::Real(r) => match f.kind() {
            Kind::Double => Value::F64(*r),
            Kind::Float => Value::F32(*r as f32),
            _ => return Err(mismatch()),
        },
        SqlValue::Text(t) => match f.kind() {
            Kind::String => Value::String(t.clone()),
            Kind::Bytes => return Err(mismatch()),
            // SQLite keeps numbers as text when a column was declared so.
            _ => parse_text(f, t).map_err(|e| format!("column {column}: {e}"))?,
        },
        SqlValue::Blob(b) => match f.kind() {
            Kind::Bytes => Value::Bytes(b.clone().into()),
            _ => return Err(mismatch()),
        },
    }))
}

/// One row as a message of type `desc`.
fn row(
    columns: &[String],
    values: &[SqlValue],
    desc: &MessageDescriptor,
) -> Result<DynamicMessage, String> {
    let mut message = DynamicMessage::new(desc.clone());
    for (column, v) in columns.iter().zip(values) {
        let f = desc
            .get_field_by_name(column)
            .ok_or_else(|| format!("column {column} has no field in {}", desc.full_name()))?;
        if let Some(value) = field_value(&f, column, v)? {
            set_or_push(&mut message, &f, value);
        }
    }
    Ok(message)
}

fn answer(
    method: &MethodDescriptor,
    st: &Statement,
    outcome: Outcome,
) -> Result<DynamicMessage, Status> {
    let output = method.output();
    let unfit = |why: String| {
        backend_status(
            Code::Internal,
            format!(
                "the database's answer does not fit {}: {why}",
                output.full_name()
            ),
        )
    };
    match (&st.shape, outcome) {
        (Shape::Affected(f), Outcome::Affected(n)) => {
            let mut m = DynamicMessage::new(output.clone());
            let value = field_value(
                f,
                "(rows changed)",
                &SqlValue::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            )
            .map_err(unfit)?;
            if let Some(v) = value {
                m.set_field(f, v);
            }
            Ok(m)
        }
        (Shape::Rows(f), Outcome::Rows(columns, rows)) => {
            let desc = f
                .kind()
                .as_message()
                .cloned()
                .ok_or_else(|| unfit("rows field is not a message".into()))?;
            let mut m = DynamicMessage::new(output.clone());
            let items = rows
                .iter()
                .map(|r| row(&columns, r, &desc).map(Value::Message))
                .collect::<Result<Vec<_>, String>>()
                .map_err(unfit)?;
            m.set_field(f, Value::List(items));
            Ok(m)
        }
        (Shape::One, Outcome::Rows(columns, rows)) => match rows.as_slice() {
            [] => Err(Status::not_found("the query found no row")),
            [one] => row(&columns, one, &output).map_err(unfit),
            more => Err(backend_status(
                Code::Internal,
                format!(
                    "the query returned {} rows where one was expected; map them with rows = \"field\"",
                    more.len()
                ),
            )),
        },
        (_, Outcome::Affected(_)) => Err(unfit("the query returned no rows".into())),
        (Shape::Affected(_), Outcome::Rows(..)) => Err(unfit(
            "the query returned rows where a count of changed rows was expected".into(),
        )),
    }
}

impl Backend for SqlBackend {
    fn call(&self, method: &MethodDescriptor, request: DynamicMessage) -> CallFuture {
        let Some(st) = self.statements.get(method.name()).cloned() else {
            let status = Status::unimplemented(format!("no mapping for {}", method.full_name()));
            return Box::pin(async move { Err(status) });
        };
        let values: Vec<SqlValue> = st.params.iter().map(|f| param(&request, f)).collect();
        let database = self.database.clone();
        let timeout = self.timeout;
        let method = method.clone();
        // A task of its own: a caller that stops waiting cannot take a connection with it.
        let query = st.clone();
        let work = tokio::spawn(async move {
            match database.as_ref() {
                Database::Sqlite(pool) => pool.run(&query.query.sql, values, timeout).await,
                Database::Postgres(c) => c.run(&query.query.sql, values, timeout).await,
            }
        });
        Box::pin(async move {
            let outcome = work
                .await
                .map_err(|e| database_error(format!("query task failed: {e}")))??;
            answer(&method, &st, outcome)
        })
    }
}

/// The gRPC status for a database error message.
fn database_error(what: impl std::fmt::Display) -> Status {
    backend_status(Code::Internal, format!("database: {what}"))
}
