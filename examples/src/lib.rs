//! Example applications that sit behind lintas security servers. They know nothing of
//! lintas: they are ordinary gRPC services.
#![forbid(unsafe_code)]

pub mod kependudukan {
    pub mod v1 {
        tonic::include_proto!("kependudukan.v1");
    }
}

/// Accepted connections with Nagle's algorithm off: small gRPC messages must not wait
/// for delayed acknowledgements.
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

pub mod echo {
    pub mod v1 {
        tonic::include_proto!("echo.v1");
    }
    /// The echo service's .proto file, for publishing it on a security server (which
    /// reads from it which methods stream).
    pub const PROTO: &str = include_str!("../proto/echo/v1/echo.proto");
}

/// Echoes its request (the benchmark's provider application), and streams (the
/// streaming tests' application).
pub mod echo_server;

/// A small population registry (provider application of the demo).
pub mod population_registry;

pub mod dukcapil {
    pub mod v1 {
        tonic::include_proto!("dukcapil.v1");
    }
}

/// Dukcapil's legacy population database as a plain REST/JSON API (no gRPC, no lintas):
/// the backend behind the REST adapter example.
///
/// - `GET /api/v1/penduduk/{nik}` → `{"data": {resident}}`; 400 for a malformed NIK, 404
///   for an unknown one (`{"error": "..."}`).
/// - `GET /api/v1/kk/{no_kk}?aktif_saja=true` → `{"data": {"no_kk", "kepala_keluarga",
///   "anggota": [residents]}}`.
pub mod dukcapil_rest;

pub mod pnbp {
    pub mod v1 {
        tonic::include_proto!("pnbp.v1");
    }
    /// The payment service's .proto file, for publishing it on a security server.
    pub const PROTO: &str = include_str!("../proto/pnbp/v1/pembayaran.proto");
}

/// A PNBP payment service (provider application of the idempotency example): every
/// payment it is asked to make is recorded, with a new NTPN.
pub mod pnbp_kas;

pub mod bpjs {
    pub mod v1 {
        tonic::include_proto!("bpjs.v1");
    }
}

/// BPJS Kesehatan's membership web service as a plain SOAP 1.1 endpoint (no gRPC, no
/// lintas): the backend behind the SOAP adapter example.
///
/// `POST /ws/kepesertaan` with `SOAPAction: "http://bpjs-kesehatan.go.id/ws/kepesertaan/CekPeserta"`
/// and a `CekPesertaRequest` holding `<nik>` answers a `CekPesertaResponse`; an unknown or
/// malformed NIK, or another action, gets a SOAP fault (HTTP 500).
pub mod bpjs_soap;

pub mod dapodik {
    pub mod v1 {
        tonic::include_proto!("dapodik.v1");
    }
}

/// A school's roster streamed from the school database, pupil by pupil: the streaming
/// example (`dapodik.v1.Rombel`). Rows are read on a blocking thread and handed over
/// one at a time, so a slow caller slows the reading and memory stays flat however
/// large the school.
pub mod dapodik_roster;

/// Creates the SQLite database at `path` (which must not exist yet) from `script`.
fn create_sqlite(path: &std::path::Path, script: &str) -> Result<(), String> {
    if path.exists() {
        return Err(format!("{} exists already", path.display()));
    }
    let db = rusqlite::Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    db.execute_batch(script)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The school database behind the SQL adapter example: `examples/sql/sekolah.sql`.
pub mod sekolah_db {
    use std::path::Path;

    /// The schema and its rows; valid SQLite and PostgreSQL.
    pub const SCRIPT: &str = include_str!("../sql/sekolah.sql");

    /// Creates the SQLite database at `path` (which must not exist yet).
    pub fn create_sqlite(path: &Path) -> Result<(), String> {
        super::create_sqlite(path, SCRIPT)
    }
}

/// The bus's public events API (`proto/lintas/events/v1/events.proto`), as any
/// application would compile it.
pub mod lintas_events {
    pub mod v1 {
        tonic::include_proto!("lintas.events.v1");
    }
}

pub mod polri {
    pub mod v1 {
        tonic::include_proto!("polri.v1");
    }
}

/// Police permits (provider application of the events example): agencies apply
/// through the bus, officers decide, and each change of a permit's status is published
/// on the topic `polri.v1.StatusIzin` through the police's own security server.
pub mod polri_izin;

pub mod bkn {
    pub mod v1 {
        tonic::include_proto!("bkn.v1");
    }
}

/// The civil-servant (ASN) database behind the second SQL adapter example:
/// `examples/sql/asn.sql`, served by `examples/adapters/bkn-sql.toml`.
pub mod asn_db {
    use std::path::Path;

    /// The schema and its rows; valid SQLite and PostgreSQL.
    pub const SCRIPT: &str = include_str!("../sql/asn.sql");

    /// Creates the SQLite database at `path` (which must not exist yet).
    pub fn create_sqlite(path: &Path) -> Result<(), String> {
        super::create_sqlite(path, SCRIPT)
    }
}

/// Kemensos's social-assistance (bansos) check of a household, a consumer of three
/// legacy systems through its security server: the family from Dukcapil's population
/// API (REST adapter, over gRPC), each member's health insurance from BPJS (SOAP
/// adapter, over gRPC), and each member's schooling from the school database (SQL
/// adapter, through the X-Road-style REST entry, as an application written for X-Road
/// would call it).
pub mod bansos;
