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
                let _ = tx.blocking_send(Err(Status::internal(format!("basis data sekolah: {e}"))));
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
