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
