//! Compiles `proto/redwire/v1/*.proto` into Rust (server and client) and writes the
//! descriptor set that server reflection serves. protoc comes from
//! protoc-bin-vendored, so building needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(proto_dir.join("redwire/v1"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut prost_config = prost_build::Config::new();
    prost_config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let includes = [proto_dir.clone(), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        // Malformed requests are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .file_descriptor_set_path(out_dir.join("redwire_descriptor.bin"))
        .compile_with_config(prost_config, &protos, &includes)?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
