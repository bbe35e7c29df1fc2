//! Compiles the example applications' protobuf files with protox (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "kependudukan/v1/penduduk.proto",
        "echo/v1/echo.proto",
        "dukcapil/v1/kependudukan.proto",
        "bpjs/v1/kepesertaan.proto",
        "dapodik/v1/sekolah.proto",
        "dapodik/v1/rombel.proto",
        "pnbp/v1/pembayaran.proto",
        "bkn/v1/kepegawaian.proto",
        "polri/v1/perizinan.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    // The bus's public events API, which the permit service publishes with.
    let events = "lintas/events/v1/events.proto";
    println!("cargo:rerun-if-changed=../proto/{events}");
    let all = files.iter().copied().chain([events]);
    let fds = protox::compile(all, ["proto", "../proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
