//! Compiles the KEP-740 signer proto (`proto/externaljwt/`) with protox, a
//! protobuf compiler in Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/externaljwt/v1/externaljwt.proto",
        "proto/externaljwt/v1alpha1/externaljwt.proto",
    ];
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
