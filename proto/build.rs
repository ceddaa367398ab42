//! Generates the tonic code from `amble/v1/*.proto` with protox, a pure-Rust protobuf
//! compiler, so building amble never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const FILES: [&str; 6] = [
        "amble/v1/archive.proto",
        "amble/v1/subject.proto",
        "amble/v1/audit.proto",
        "amble/v1/admin.proto",
        "amble/v1/federation.proto",
        "amble/v1/assist.proto",
    ];
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
