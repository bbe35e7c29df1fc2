//! The example legacy systems as programs of their own:
//!
//! ```sh
//! legacy dukcapil-rest [ADDRESS]   # population REST/JSON API (default 127.0.0.1:8081)
//! legacy bpjs-soap [ADDRESS]       # health insurer SOAP web service (default 127.0.0.1:8082)
//! legacy sekolah-db PATH           # creates the school database (SQLite)
//! legacy asn-db PATH               # creates the civil-servant database (SQLite)
//! legacy pnbp-kas [ADDRESS]        # PNBP payment service (gRPC, default 127.0.0.1:7106)
//! legacy polri-izin CONSUMER_URL PUBLISHER [ADDRESS]
//!     # police permit office (gRPC, default 127.0.0.1:7107), publishing each change of
//!     # a permit's status through the security server at CONSUMER_URL as PUBLISHER
//! legacy dapodik-roster PATH [ADDRESS]
//!     # streams a school's roster from that database (gRPC, default 127.0.0.1:7104)
//! legacy bansos CONSUMER_URL CLIENT DUKCAPIL BPJS DAPODIK NO_KK
//!     # Kemensos's household check through a security server whose consumer endpoint
//!     # takes plaintext calls on loopback (dev_plaintext_loopback); the three provider
//!     # subsystems, then a family card number
//! ```
//!
//! The servers run until Ctrl-C.

use std::process::ExitCode;

const USAGE: &str = "legacy dukcapil-rest [ADDRESS] | bpjs-soap [ADDRESS] | sekolah-db PATH | asn-db PATH | pnbp-kas [ADDRESS] | polri-izin CONSUMER_URL PUBLISHER [ADDRESS] | dapodik-roster PATH [ADDRESS] | bansos CONSUMER_URL CLIENT DUKCAPIL BPJS DAPODIK NO_KK";

async fn serve(
    name: &str,
    address: &str,
    run: impl AsyncFnOnce(tokio::net::TcpListener) -> std::io::Result<()>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("binding {address}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("{name} listening on {bound} (Ctrl-C stops it)");
    run(listener).await.map_err(|e| e.to_string())
}

async fn stop() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn bansos(args: &[String]) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(args[0].clone())
        .map_err(|e| format!("{}: {e}", args[0]))?
        .connect()
        .await
        .map_err(|e| format!("{}: {e}", args[0]))?;
    let providers = lintas_examples::bansos::Providers {
        dukcapil: args[2].clone(),
        bpjs: args[3].clone(),
        dapodik: args[4].clone(),
    };
    let assessment =
        lintas_examples::bansos::assess(channel, &args[1], &providers, &args[5]).await?;
    println!("{assessment}");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let result = match args.first().map(String::as_str) {
        Some("dukcapil-rest") => {
            serve("Dukcapil REST API", &arg(1, "127.0.0.1:8081"), async |l| {
                lintas_examples::dukcapil_rest::serve(l, stop()).await
            })
            .await
        }
        Some("bpjs-soap") => {
            serve(
                "BPJS SOAP web service",
                &arg(1, "127.0.0.1:8082"),
                async |l| lintas_examples::bpjs_soap::serve(l, stop()).await,
            )
            .await
        }
        Some("sekolah-db") => match args.get(1) {
            Some(path) => lintas_examples::sekolah_db::create_sqlite(path.as_ref())
                .map(|()| println!("school database created at {path}")),
            None => Err("sekolah-db needs the path of the database to create".into()),
        },
        Some("pnbp-kas") => {
            serve(
                "PNBP payment service",
                &arg(1, "127.0.0.1:7106"),
                async |l| {
                    let kas = std::sync::Arc::new(lintas_examples::pnbp_kas::Kas::default());
                    lintas_examples::pnbp_kas::serve(l, kas, stop())
                        .await
                        .map_err(std::io::Error::other)
                },
            )
            .await
        }
        Some("polri-izin") if args.len() >= 3 => {
            match lintas_examples::polri_izin::Bus::new(&args[1], &args[2]) {
                Ok(bus) => {
                    serve(
                        "police permit office",
                        &arg(3, "127.0.0.1:7107"),
                        async |l| {
                            let kantor = lintas_examples::polri_izin::Kantor::new(bus);
                            lintas_examples::polri_izin::serve(l, kantor, stop())
                                .await
                                .map_err(std::io::Error::other)
                        },
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        }
        Some("asn-db") => match args.get(1) {
            Some(path) => lintas_examples::asn_db::create_sqlite(path.as_ref())
                .map(|()| println!("civil-servant database created at {path}")),
            None => Err("asn-db needs the path of the database to create".into()),
        },
        Some("dapodik-roster") if args.len() >= 2 => {
            let database = std::path::PathBuf::from(&args[1]);
            serve("Dapodik roster", &arg(2, "127.0.0.1:7104"), async |l| {
                lintas_examples::dapodik_roster::serve(l, database, stop())
                    .await
                    .map_err(std::io::Error::other)
            })
            .await
        }
        Some("bansos") if args.len() == 7 => bansos(&args[1..]).await,
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("usage: {USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
