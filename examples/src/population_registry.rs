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
