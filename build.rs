//! Compiles the wire contracts with prost: `proto/wormdb.proto`, and the
//! shippers' protocols wormdb speaks (OTLP logs, Loki push, the
//! `google.rpc` error details). `protoc` comes from `protoc-bin-vendored`,
//! so a fresh machine needs no system install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts run single-threaded before compilation.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    // BTreeMap keeps tag order deterministic, so an encoded entry is canonical.
    config.btree_map(["."]);
    config.compile_protos(
        &[
            "proto/wormdb.proto",
            "proto/opentelemetry/proto/collector/logs/v1/logs_service.proto",
            "proto/loki/push.proto",
            "proto/google/rpc/status.proto",
        ],
        &["proto", "proto/opentelemetry"],
    )?;
    Ok(())
}
