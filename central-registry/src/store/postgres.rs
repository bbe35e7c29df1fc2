//! The registry's state in PostgreSQL, for several registry nodes over one database.
//!
//! One table of records (key, value, version) under versioned migrations applied at
//! open, one at a time across nodes (an advisory lock). A batch is one transaction: the
//! expected keys are read `FOR UPDATE` (so a racing batch on another node waits, then
//! sees the new version and is refused), an expected-absent key is inserted without
//! `ON CONFLICT` (so two nodes creating it race on the primary key, and one is
//! refused), and the commit is durable before the call returns.
//!
//! The registry's logic is synchronous; the client runs on a thread of its own with its
//! own runtime, and each call waits for its answer there, as a flush to disk would. A
//! lost connection is made again at the next call.

use std::sync::mpsc;

use tokio_postgres::{Client, NoTls};

use super::{ApplyError, Expect, Put, RegistryStore, StoreError, Stored};

/// The schema, in order; each applied once and recorded in `lintas_schema`.
const MIGRATIONS: &[&str] = &["CREATE TABLE registry_records (
        key TEXT PRIMARY KEY,
        value BYTEA NOT NULL,
        version BIGINT NOT NULL CHECK (version > 0)
    )"];

/// Serialises migrations across nodes (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x6c_69_6e_74_61_73;

enum Op {
    Load(mpsc::SyncSender<Result<Vec<Stored>, StoreError>>),
    Get(String, mpsc::SyncSender<Result<Option<Stored>, StoreError>>),
    Apply(
        Vec<Expect>,
        Vec<Put>,
        mpsc::SyncSender<Result<(), ApplyError>>,
    ),
}

pub struct PostgresStore {
    ops: tokio::sync::mpsc::UnboundedSender<Op>,
}

fn err(url: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{}: {e}", lintas_settings::redact_url(url)))
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| err(url, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "registry database connection ended");
        }
    });
    Ok(client)
}

async fn migrate(url: &str, client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(|e| err(url, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| err(url, e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS lintas_schema (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(|e| err(url, e))?;
    let done: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM lintas_schema", &[])
        .await
        .map_err(|e| err(url, e))?
        .get(0);
    if done as usize > MIGRATIONS.len() {
        return Err(err(
            url,
            format!(
                "the database is at schema version {done}, newer than this lintas knows ({}); upgrade lintas",
                MIGRATIONS.len()
            ),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(|e| err(url, format!("migration {version}: {e}")))?;
        tx.execute(
            "INSERT INTO lintas_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| err(url, e))?;
        tracing::info!(version, "registry database schema migrated");
    }
    tx.commit().await.map_err(|e| err(url, e))
}

fn stored(row: &tokio_postgres::Row) -> Stored {
    Stored {
        key: row.get(0),
        value: row.get(1),
        version: row.get::<_, i64>(2) as u64,
    }
}

async fn load(client: &Client) -> Result<Vec<Stored>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT key, value, version FROM registry_records ORDER BY key COLLATE \"C\"",
            &[],
        )
        .await?;
    Ok(rows.iter().map(stored).collect())
}

async fn get(client: &Client, key: &str) -> Result<Option<Stored>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT key, value, version FROM registry_records WHERE key = $1",
            &[&key],
        )
        .await?;
    Ok(row.as_ref().map(stored))
}

/// Why a batch was not applied, before the error is told.
enum Refused {
    Conflict(String),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Refused {
    fn from(e: tokio_postgres::Error) -> Self {
        Refused::Db(e)
    }
}

async fn apply(client: &mut Client, expect: &[Expect], batch: &[Put]) -> Result<(), Refused> {
    let tx = client.transaction().await?;
    for e in expect {
        let held = tx
            .query_opt(
                "SELECT version FROM registry_records WHERE key = $1 FOR UPDATE",
                &[&e.key],
            )
            .await?
            .map_or(0, |r| r.get::<_, i64>(0) as u64);
        if held != e.version {
            return Err(Refused::Conflict(e.key.clone()));
        }
    }
    for p in batch {
        let must_be_new = expect.iter().any(|e| e.key == p.key && e.version == 0);
        match &p.value {
            Some(v) if must_be_new => {
                let inserted = tx
                    .execute(
                        "INSERT INTO registry_records (key, value, version) VALUES ($1, $2, 1)",
                        &[&p.key, v],
                    )
                    .await;
                match inserted {
                    Ok(_) => {}
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        return Err(Refused::Conflict(p.key.clone()));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Some(v) => {
                tx.execute(
                    "INSERT INTO registry_records (key, value, version) VALUES ($1, $2, 1)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = registry_records.version + 1",
                    &[&p.key, v],
                )
                .await?;
            }
            None => {
                tx.execute("DELETE FROM registry_records WHERE key = $1", &[&p.key])
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The client's loop: one connection, made again after it is lost. Waiting for work
/// is asynchronous, so the connection is looked after while idle.
async fn serve(url: String, client: Client, mut ops: tokio::sync::mpsc::UnboundedReceiver<Op>) {
    let mut client = Some(client);
    while let Some(op) = ops.recv().await {
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match connect(&url).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "registry database unreachable");
                    None
                }
            };
        }
        let Some(c) = client.as_mut() else {
            let down = || err(&url, "cannot connect");
            match op {
                Op::Load(reply) => drop(reply.send(Err(down()))),
                Op::Get(_, reply) => drop(reply.send(Err(down()))),
                Op::Apply(_, _, reply) => drop(reply.send(Err(down().into()))),
            }
            continue;
        };
        match op {
            Op::Load(reply) => {
                let _ = reply.send(load(c).await.map_err(|e| err(&url, e)));
            }
            Op::Get(key, reply) => {
                let _ = reply.send(get(c, &key).await.map_err(|e| err(&url, e)));
            }
            Op::Apply(expect, batch, reply) => {
                let out = match apply(c, &expect, &batch).await {
                    Ok(()) => Ok(()),
                    Err(Refused::Conflict(key)) => Err(ApplyError::Conflict { key }),
                    Err(Refused::Db(e)) => Err(err(&url, e).into()),
                };
                let _ = reply.send(out);
            }
        }
    }
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL), brings the schema up to date and starts
    /// the client's thread.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let owned = url.to_owned();
        let (ops, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (ready, started) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("registry-db".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(err(&owned, e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let setup = async {
                        let mut client = connect(&owned).await?;
                        migrate(&owned, &mut client).await?;
                        Ok::<_, StoreError>(client)
                    };
                    match setup.await {
                        Ok(client) => {
                            let _ = ready.send(Ok(()));
                            serve(owned, client, receiver).await;
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| err(url, e))?;
        started
            .recv()
            .map_err(|_| err(url, "the database thread ended"))??;
        Ok(PostgresStore { ops })
    }

    fn call<T>(&self, op: impl FnOnce(mpsc::SyncSender<T>) -> Op) -> Option<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.ops.send(op(reply)).ok()?;
        answer.recv().ok()
    }
}

fn gone() -> StoreError {
    StoreError("the registry database thread has stopped".into())
}

impl RegistryStore for PostgresStore {
    fn load(&self) -> Result<Vec<Stored>, StoreError> {
        self.call(Op::Load).unwrap_or_else(|| Err(gone()))
    }

    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        self.call(|r| Op::Get(key.to_owned(), r))
            .unwrap_or_else(|| Err(gone()))
    }

    fn apply(&self, expect: &[Expect], batch: Vec<Put>) -> Result<(), ApplyError> {
        self.call(|r| Op::Apply(expect.to_vec(), batch, r))
            .unwrap_or_else(|| Err(gone().into()))
    }

    /// A transaction was committed whole or not at all: what the database holds once it
    /// answers again is the truth.
    fn reload_recovers(&self) -> bool {
        true
    }
}
