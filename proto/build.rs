//! Compiles the protobuf definitions with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "lintas/globalconf/v1/globalconf.proto",
        "lintas/registry/v1/registry.proto",
        "lintas/exchange/v1/exchange.proto",
        "lintas/log/v1/log.proto",
        "lintas/ss/v1/admin.proto",
        "lintas/audit/v1/evidence.proto",
        "lintas/discovery/v1/discovery.proto",
        "lintas/opmon/v1/opmon.proto",
        "lintas/events/v1/events.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_transport(false)
        // A body chunk is handed on as it was received, without a copy.
        .bytes(".lintas.exchange.v1.SignedMessage.body")
        .compile_fds(fds)?;
    Ok(())
}
