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
}

/// Echoes its request (the benchmark's provider application), and streams (the
/// streaming tests' application).
pub mod echo_server {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response, Status, Streaming};

    use crate::echo::v1::echo_server::{Echo, EchoServer};
    use crate::echo::v1::{CountRequest, EchoMessage};
    use crate::incoming;

    /// What the streams did, for tests that watch flow control and cancellation.
    #[derive(Default)]
    pub struct Watch {
        /// Messages `Count` handed to its stream so far.
        pub produced: AtomicU64,
        /// A `Count` or `Chat` stream saw its caller go away.
        pub cancelled: AtomicBool,
    }

    #[derive(Default)]
    pub struct Echoer {
        pub watch: Arc<Watch>,
    }

    type Stream = Pin<Box<dyn tokio_stream::Stream<Item = Result<EchoMessage, Status>> + Send>>;

    #[tonic::async_trait]
    impl Echo for Echoer {
        async fn echo(
            &self,
            request: Request<EchoMessage>,
        ) -> Result<Response<EchoMessage>, Status> {
            Ok(Response::new(request.into_inner()))
        }

        async fn fill(
            &self,
            request: Request<CountRequest>,
        ) -> Result<Response<EchoMessage>, Status> {
            let size = request.into_inner().size as usize;
            let payload = (0..size).map(|i| (i % 251) as u8).collect();
            Ok(Response::new(EchoMessage { payload }))
        }

        type CountStream = Stream;

        async fn count(&self, request: Request<CountRequest>) -> Result<Response<Stream>, Status> {
            let r = request.into_inner();
            let (tx, rx) = mpsc::channel(1);
            let watch = self.watch.clone();
            tokio::spawn(async move {
                for i in 0..r.count {
                    let mut payload = i.to_be_bytes().to_vec();
                    payload.resize((r.size as usize).max(4), b'x');
                    if tx.send(Ok(EchoMessage { payload })).await.is_err() {
                        watch.cancelled.store(true, Ordering::SeqCst);
                        return;
                    }
                    watch.produced.fetch_add(1, Ordering::SeqCst);
                }
                if r.fail_at_end {
                    let _ = tx.send(Err(Status::aborted("gagal di akhir"))).await;
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }

        async fn join(
            &self,
            request: Request<Streaming<EchoMessage>>,
        ) -> Result<Response<EchoMessage>, Status> {
            let mut stream = request.into_inner();
            let mut payload = Vec::new();
            while let Some(m) = stream.message().await? {
                payload.extend(m.payload);
            }
            Ok(Response::new(EchoMessage { payload }))
        }

        type ChatStream = Stream;

        async fn chat(
            &self,
            request: Request<Streaming<EchoMessage>>,
        ) -> Result<Response<Stream>, Status> {
            let mut stream = request.into_inner();
            let (tx, rx) = mpsc::channel(1);
            let watch = self.watch.clone();
            tokio::spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(m)) => {
                            let mut payload = b"re: ".to_vec();
                            payload.extend(m.payload);
                            if tx.send(Ok(EchoMessage { payload })).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                watch.cancelled.store(true, Ordering::SeqCst);
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    /// Serves the echo service on `listener` until `shutdown` completes.
    pub async fn serve(
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        serve_watched(listener, Arc::default(), shutdown).await
    }

    /// Serves the echo service, reporting what its streams do to `watch`.
    pub async fn serve_watched(
        listener: TcpListener,
        watch: Arc<Watch>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        // Messages of up to 64 MiB: tests send ones larger than gRPC's default 4 MiB.
        let echo = EchoServer::new(Echoer { watch })
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        tonic::transport::Server::builder()
            .add_service(echo)
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await
    }
}

/// A small population registry (provider application of the demo).
pub mod population_registry {
    use std::future::Future;

    use tokio::net::TcpListener;
    use tonic::{Request, Response, Status};

    use crate::incoming;
    use crate::kependudukan::v1::penduduk_server::{Penduduk, PendudukServer};
    use crate::kependudukan::v1::{CariNikRequest, DataPenduduk};

    /// Residents the registry knows (fictitious).
    pub const RESIDENTS: &[(&str, &str, &str, &str, &str)] = &[
        (
            "3174012305870001",
            "Siti Rahayu",
            "Jakarta",
            "1987-05-23",
            "DKI Jakarta",
        ),
        (
            "3273015708920002",
            "Budi Santoso",
            "Bandung",
            "1992-08-17",
            "Jawa Barat",
        ),
        (
            "5171011201850003",
            "Ni Made Ayu",
            "Denpasar",
            "1985-01-12",
            "Bali",
        ),
    ];

    #[derive(Default)]
    pub struct Registry;

    #[tonic::async_trait]
    impl Penduduk for Registry {
        async fn cari_nik(
            &self,
            request: Request<CariNikRequest>,
        ) -> Result<Response<DataPenduduk>, Status> {
            let nik = request.into_inner().nik;
            if nik.len() != 16 || !nik.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Status::invalid_argument("NIK must be 16 digits"));
            }
            let (nik, nama, tempat, tanggal, provinsi) = RESIDENTS
                .iter()
                .find(|r| r.0 == nik)
                .ok_or_else(|| Status::not_found(format!("no resident with NIK {nik}")))?;
            Ok(Response::new(DataPenduduk {
                nik: nik.to_string(),
                nama: nama.to_string(),
                tempat_lahir: tempat.to_string(),
                tanggal_lahir: tanggal.to_string(),
                provinsi: provinsi.to_string(),
            }))
        }
    }

    /// Serves the registry on `listener` until `shutdown` completes.
    pub async fn serve(
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(PendudukServer::new(Registry))
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await
    }

    /// Serves the registry over TLS with the given certificate and key (PEM).
    pub async fn serve_tls(
        listener: TcpListener,
        cert_pem: String,
        key_pem: String,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        tonic::transport::Server::builder()
            .tls_config(tls)?
            .add_service(PendudukServer::new(Registry))
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await
    }
}

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
pub mod dukcapil_rest {
    use std::future::Future;

    use axum::Json;
    use axum::extract::{Path, Query};
    use axum::http::StatusCode;
    use axum::routing::get;
    use serde::Deserialize;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;

    /// (nik, nama, tempat lahir, tanggal lahir, jenis kelamin, alamat, no KK, aktif).
    type Resident = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        bool,
    );

    /// Residents the database knows (fictitious).
    pub const RESIDENTS: &[Resident] = &[
        (
            "3174012305870001",
            "Siti Rahayu",
            "Jakarta",
            "1987-05-23",
            "P",
            "Jl. Kenanga 5, Jakarta Timur",
            "3174010101090001",
            true,
        ),
        (
            "3174011003850002",
            "Agus Rahayu",
            "Bogor",
            "1985-03-10",
            "L",
            "Jl. Kenanga 5, Jakarta Timur",
            "3174010101090001",
            true,
        ),
        (
            "3174014107120003",
            "Dewi Rahayu",
            "Jakarta",
            "2012-07-01",
            "P",
            "Jl. Kenanga 5, Jakarta Timur",
            "3174010101090001",
            true,
        ),
        (
            "3174012009400004",
            "Slamet Rahayu",
            "Solo",
            "1940-09-20",
            "L",
            "Jl. Kenanga 5, Jakarta Timur",
            "3174010101090001",
            false,
        ),
        (
            "3273015708920002",
            "Budi Santoso",
            "Bandung",
            "1992-08-17",
            "L",
            "Jl. Dago 12, Bandung",
            "3273010202150002",
            true,
        ),
    ];

    fn resident(r: &Resident) -> Value {
        json!({
            "nik": r.0, "nama": r.1, "tempat_lahir": r.2, "tanggal_lahir": r.3,
            "jenis_kelamin": r.4, "alamat": r.5, "no_kk": r.6,
        })
    }

    fn sixteen_digits(s: &str) -> bool {
        s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit())
    }

    type Answer = (StatusCode, Json<Value>);

    fn refuse(status: StatusCode, why: String) -> Answer {
        (status, Json(json!({ "error": why })))
    }

    async fn penduduk(Path(nik): Path<String>) -> Answer {
        if !sixteen_digits(&nik) {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("NIK '{nik}' harus 16 digit"),
            );
        }
        match RESIDENTS.iter().find(|r| r.0 == nik) {
            Some(r) => (StatusCode::OK, Json(json!({ "data": resident(r) }))),
            None => refuse(StatusCode::NOT_FOUND, format!("NIK {nik} tidak ditemukan")),
        }
    }

    #[derive(Deserialize)]
    struct NikQuery {
        nik: Option<String>,
    }

    /// `GET /api/v1/penduduk?nik=...`: the same lookup with the NIK as a query parameter.
    async fn penduduk_query(Query(q): Query<NikQuery>) -> Answer {
        match q.nik {
            Some(nik) => penduduk(Path(nik)).await,
            None => refuse(
                StatusCode::BAD_REQUEST,
                "parameter nik wajib diisi".to_owned(),
            ),
        }
    }

    #[derive(Deserialize)]
    struct KkQuery {
        #[serde(default)]
        aktif_saja: bool,
    }

    async fn kk(Path(no_kk): Path<String>, Query(q): Query<KkQuery>) -> Answer {
        if !sixteen_digits(&no_kk) {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("nomor KK '{no_kk}' harus 16 digit"),
            );
        }
        let members: Vec<&Resident> = RESIDENTS
            .iter()
            .filter(|r| r.6 == no_kk && (r.7 || !q.aktif_saja))
            .collect();
        let Some(head) = RESIDENTS.iter().find(|r| r.6 == no_kk) else {
            return refuse(StatusCode::NOT_FOUND, format!("KK {no_kk} tidak ditemukan"));
        };
        (
            StatusCode::OK,
            Json(json!({ "data": {
                "no_kk": no_kk,
                "kepala_keluarga": head.1,
                "anggota": members.into_iter().map(resident).collect::<Vec<_>>(),
            }})),
        )
    }

    /// Serves the API on `listener` until `shutdown` completes.
    pub async fn serve(
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = axum::Router::new()
            .route("/api/v1/penduduk", get(penduduk_query))
            .route("/api/v1/penduduk/{nik}", get(penduduk))
            .route("/api/v1/kk/{no_kk}", get(kk))
            // Its description, as an application publishes it.
            .route(
                "/api/v1/openapi.yaml",
                get(|| async {
                    (
                        [("content-type", "text/yaml")],
                        include_str!("../openapi/dukcapil.yaml"),
                    )
                }),
            );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

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
pub mod bpjs_soap {
    use std::future::Future;

    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use quick_xml::escape::escape;
    use tokio::net::TcpListener;

    pub const NAMESPACE: &str = "http://bpjs-kesehatan.go.id/ws/kepesertaan";
    const ACTION: &str = "http://bpjs-kesehatan.go.id/ws/kepesertaan/CekPeserta";

    /// (nomor kartu, NIK, nama, status, kelas rawat, faskes, PBI): fictitious members.
    pub const MEMBERS: &[(&str, &str, &str, &str, i32, &str, bool)] = &[
        (
            "0001234567890",
            "3174012305870001",
            "Siti Rahayu",
            "AKTIF",
            3,
            "Puskesmas Duren Sawit",
            true,
        ),
        (
            "0001234567891",
            "3174011003850002",
            "Agus Rahayu",
            "AKTIF",
            3,
            "Puskesmas Duren Sawit",
            true,
        ),
        (
            "0002345678901",
            "3273015708920002",
            "Budi Santoso",
            "NONAKTIF",
            1,
            "Klinik Dago",
            false,
        ),
    ];

    fn envelope(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">\
             <soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
        )
    }

    fn fault(code: &str, text: &str) -> (StatusCode, HeaderMap, String) {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            envelope(&format!(
                "<soapenv:Fault><faultcode>soapenv:{code}</faultcode><faultstring>{}</faultstring></soapenv:Fault>",
                escape(text)
            )),
        )
    }

    fn reply(status: StatusCode, xml: String) -> (StatusCode, HeaderMap, String) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        (status, headers, xml)
    }

    /// The text of the first element named `name` (local name), if any.
    fn element_text(xml: &str, name: &str) -> Result<Option<String>, String> {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut inside = false;
        let mut text = String::new();
        loop {
            match reader.read_event().map_err(|e| e.to_string())? {
                Event::Start(e) if e.local_name().into_inner() == name => inside = true,
                Event::End(e) if inside && e.local_name().into_inner() == name => {
                    return Ok(Some(text));
                }
                Event::Text(t) if inside => text.push_str(&t.xml10_content()),
                Event::DocType(_) => return Err("DOCTYPE not accepted".into()),
                Event::Eof => return Ok(None),
                _ => {}
            }
        }
    }

    async fn kepesertaan(headers: HeaderMap, body: String) -> impl IntoResponse {
        let action = headers
            .get("soapaction")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim_matches('"');
        if action != ACTION {
            return fault("Client", &format!("operasi '{action}' tidak dikenal"));
        }
        let nik = match element_text(&body, "nik") {
            Ok(Some(nik)) => nik.trim().to_owned(),
            Ok(None) => return fault("Client", "elemen nik tidak ada"),
            Err(e) => return fault("Client", &format!("XML tidak valid: {e}")),
        };
        if nik.len() != 16 || !nik.bytes().all(|b| b.is_ascii_digit()) {
            return fault("Client", &format!("NIK '{nik}' harus 16 digit"));
        }
        let Some(m) = MEMBERS.iter().find(|m| m.1 == nik) else {
            return fault(
                "Client",
                &format!("NIK {nik} tidak terdaftar sebagai peserta JKN"),
            );
        };
        reply(
            StatusCode::OK,
            envelope(&format!(
                "<ns2:CekPesertaResponse xmlns:ns2=\"{NAMESPACE}\">\
                 <nomor_kartu>{}</nomor_kartu><nik>{}</nik><nama>{}</nama><status>{}</status>\
                 <kelas_rawat>{}</kelas_rawat><faskes>{}</faskes><pbi>{}</pbi>\
                 </ns2:CekPesertaResponse>",
                m.0,
                m.1,
                escape(m.2),
                m.3,
                m.4,
                escape(m.5),
                m.6
            )),
        )
    }

    /// Serves the web service on `listener` until `shutdown` completes.
    pub async fn serve(
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = axum::Router::new().route("/ws/kepesertaan", post(kepesertaan));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

pub mod dapodik {
    pub mod v1 {
        tonic::include_proto!("dapodik.v1");
    }
}

/// A school's roster streamed from the school database, pupil by pupil: the streaming
/// example (`dapodik.v1.Rombel`). Rows are read on a blocking thread and handed over
/// one at a time, so a slow caller slows the reading and memory stays flat however
/// large the school.
pub mod dapodik_roster {
    use std::future::Future;
    use std::path::PathBuf;
    use std::pin::Pin;

    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response, Status};

    use crate::dapodik::v1::rombel_server::{Rombel, RombelServer};
    use crate::dapodik::v1::{DaftarSiswaRequest, Siswa};
    use crate::incoming;

    pub struct Roster {
        pub database: PathBuf,
    }

    type Stream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Siswa, Status>> + Send>>;

    const QUERY: &str = "SELECT s.nisn, s.nik, s.nama, s.npsn, k.nama, s.tingkat, s.aktif \
         FROM siswa s JOIN sekolah k ON k.npsn = s.npsn \
         WHERE s.npsn = ?1 AND (s.aktif OR NOT ?2) ORDER BY s.nisn";

    #[tonic::async_trait]
    impl Rombel for Roster {
        type AlirSiswaStream = Stream;

        async fn alir_siswa(
            &self,
            request: Request<DaftarSiswaRequest>,
        ) -> Result<Response<Stream>, Status> {
            let r = request.into_inner();
            if r.npsn.len() != 8 || !r.npsn.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Status::invalid_argument(format!(
                    "NPSN '{}' harus 8 digit",
                    r.npsn
                )));
            }
            let db = rusqlite::Connection::open_with_flags(
                &self.database,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| Status::unavailable(format!("basis data sekolah: {e}")))?;
            let (tx, rx) = mpsc::channel(1);
            tokio::task::spawn_blocking(move || {
                let sent = (|| -> rusqlite::Result<()> {
                    let mut query = db.prepare(QUERY)?;
                    let mut rows = query.query((&r.npsn, r.aktif_saja))?;
                    while let Some(row) = rows.next()? {
                        let siswa = Siswa {
                            nisn: row.get(0)?,
                            nik: row.get(1)?,
                            nama: row.get(2)?,
                            npsn: row.get(3)?,
                            sekolah: row.get(4)?,
                            tingkat: row.get(5)?,
                            aktif: row.get(6)?,
                        };
                        // The caller went away: stop reading.
                        if tx.blocking_send(Ok(siswa)).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = sent {
                    let _ =
                        tx.blocking_send(Err(Status::internal(format!("basis data sekolah: {e}"))));
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    /// Serves the roster of the SQLite database at `database` on `listener`.
    pub async fn serve(
        listener: TcpListener,
        database: PathBuf,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(RombelServer::new(Roster { database }))
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await
    }
}

/// The school database behind the SQL adapter example: `examples/sql/sekolah.sql`.
pub mod sekolah_db {
    use std::path::Path;

    /// The schema and its rows; valid SQLite and PostgreSQL.
    pub const SCRIPT: &str = include_str!("../sql/sekolah.sql");

    /// Creates the SQLite database at `path` (which must not exist yet).
    pub fn create_sqlite(path: &Path) -> Result<(), String> {
        if path.exists() {
            return Err(format!("{} exists already", path.display()));
        }
        let db =
            rusqlite::Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        db.execute_batch(SCRIPT)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Kemensos's social-assistance (bansos) check of a household, a consumer of three
/// legacy systems through its security server: the family from Dukcapil's population
/// API (REST adapter, over gRPC), each member's health insurance from BPJS (SOAP
/// adapter, over gRPC), and each member's schooling from the school database (SQL
/// adapter, through the X-Road-style REST entry, as an application written for X-Road
/// would call it).
pub mod bansos {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use serde_json::Value;
    use tonic::transport::Channel;
    use tonic::{Code, Request};
    use tower::ServiceExt;

    use crate::bpjs::v1::CekPesertaRequest;
    use crate::bpjs::v1::kepesertaan_client::KepesertaanClient;
    use crate::dukcapil::v1::CariKeluargaRequest;
    use crate::dukcapil::v1::kependudukan_client::KependudukanClient;

    /// The provider subsystem of each service.
    pub struct Providers {
        pub dukcapil: String,
        pub bpjs: String,
        pub dapodik: String,
    }

    /// What was found about one member of the household.
    pub struct Member {
        pub nik: String,
        pub nama: String,
        /// (status, state-paid, class) of the JKN membership, if any.
        pub jkn: Option<(String, bool, i32)>,
        /// (school, grade) of an active pupil.
        pub school: Option<(String, i64)>,
        /// The message id the school database was asked under.
        pub school_message_id: String,
    }

    pub struct Assessment {
        pub no_kk: String,
        pub head: String,
        pub members: Vec<Member>,
    }

    impl Assessment {
        /// Illustrative rule: a household whose contributions the state pays is on the
        /// welfare list and receives PKH; each active pupil adds an education component.
        pub fn eligible(&self) -> bool {
            self.members
                .iter()
                .any(|m| m.jkn.as_ref().is_some_and(|j| j.1))
        }

        pub fn pupils(&self) -> usize {
            self.members.iter().filter(|m| m.school.is_some()).count()
        }
    }

    impl std::fmt::Display for Assessment {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            writeln!(
                f,
                "family card {} (head {}), {} living members:",
                self.no_kk,
                self.head,
                self.members.len()
            )?;
            for m in &self.members {
                let jkn = match &m.jkn {
                    Some((status, true, class)) => {
                        format!("JKN {status}, state-paid, class {class}")
                    }
                    Some((status, false, class)) => format!("JKN {status}, class {class}"),
                    None => "no JKN membership".into(),
                };
                let school = match &m.school {
                    Some((name, grade)) => format!("pupil at {name}, grade {grade}"),
                    None => "not a pupil".into(),
                };
                writeln!(f, "  {} ({}): {jkn}; {school}", m.nama, m.nik)?;
            }
            write!(
                f,
                "PKH: {}; education components: {}",
                if self.eligible() {
                    "eligible"
                } else {
                    "not eligible"
                },
                self.pupils()
            )
        }
    }

    fn call<T>(message: T, client: &str, provider: &str) -> Result<Request<T>, String> {
        let mut r = Request::new(message);
        for (k, v) in [("lintas-client", client), ("lintas-service", provider)] {
            r.metadata_mut()
                .insert(k, v.parse().map_err(|_| format!("{k} '{v}' is not ASCII"))?);
        }
        Ok(r)
    }

    /// POSTs `body` to the X-Road-style REST entry; returns the status, the request id
    /// and the JSON answer.
    async fn rest(
        channel: &Channel,
        path: &str,
        client: &str,
        body: Value,
    ) -> Result<(u16, String, Value), String> {
        let request = tonic::codegen::http::Request::builder()
            .method("POST")
            .uri(path)
            .header("x-road-client", client)
            .header("content-type", "application/json")
            .body(tonic::body::Body::new(
                Full::new(Bytes::from(body.to_string())).map_err(|e| match e {}),
            ))
            .map_err(|e| e.to_string())?;
        let response = channel
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| format!("REST call {path}: {e}"))?;
        let status = response.status().as_u16();
        let id = response
            .headers()
            .get("x-road-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("REST call {path}: {e}"))?
            .to_bytes();
        let json = serde_json::from_slice(&bytes)
            .map_err(|e| format!("REST call {path}: the answer is not JSON: {e}"))?;
        Ok((status, id, json))
    }

    /// Assesses the household of family card `no_kk`, calling as `client` through the
    /// security server at the other end of `channel`.
    pub async fn assess(
        channel: Channel,
        client: &str,
        providers: &Providers,
        no_kk: &str,
    ) -> Result<Assessment, String> {
        let family = KependudukanClient::new(channel.clone())
            .cari_keluarga(call(
                CariKeluargaRequest {
                    no_kk: no_kk.into(),
                    aktif_saja: true,
                },
                client,
                &providers.dukcapil,
            )?)
            .await
            .map_err(|s| format!("Dukcapil: {}", s.message()))?
            .into_inner();
        let mut members = Vec::new();
        for p in family.anggota {
            let jkn = match KepesertaanClient::new(channel.clone())
                .cek_peserta(call(
                    CekPesertaRequest { nik: p.nik.clone() },
                    client,
                    &providers.bpjs,
                )?)
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    Some((r.status, r.pbi, r.kelas_rawat))
                }
                // BPJS answers a fault for someone who is not a member.
                Err(s) if s.code() == Code::InvalidArgument => None,
                Err(s) => return Err(format!("BPJS: {}", s.message())),
            };
            let path = format!("/r1/{}/dapodik.v1.Sekolah/CariSiswa", providers.dapodik);
            let (status, id, answer) =
                rest(&channel, &path, client, serde_json::json!({ "nik": p.nik })).await?;
            let school = match status {
                200 if answer["aktif"] == Value::Bool(true) => Some((
                    answer["sekolah"].as_str().unwrap_or("").to_owned(),
                    answer["tingkat"].as_i64().unwrap_or(0),
                )),
                200 => None,
                // The database's own "no row": not a pupil (a 404 of the bus is an error).
                404 if answer["type"] == "Service.NotFound" => None,
                _ => {
                    return Err(format!(
                        "school database: HTTP {status}: {} {}",
                        answer["type"], answer["message"]
                    ));
                }
            };
            members.push(Member {
                nik: p.nik,
                nama: p.nama,
                jkn,
                school,
                school_message_id: id,
            });
        }
        Ok(Assessment {
            no_kk: family.no_kk,
            head: family.kepala_keluarga,
            members,
        })
    }
}
