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
