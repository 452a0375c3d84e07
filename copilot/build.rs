//! Two jobs:
//! 1. compiles the FlyteIDL `.proto` files under `proto/` to Rust with
//!    `protox` (a pure-Rust protobuf compiler: no system `protoc`) and
//!    `prost-build`, into `OUT_DIR/flyteidl.core.rs` (see `src/proto.rs`);
//! 2. builds the eBPF object from `copilot-ebpf` (nightly, `-Z build-std=core`,
//!    bpf-linker) with aya-build; `AYA_BUILD_SKIP=1` skips it for quick checks.
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

/// The FlyteIDL files copilot compiles, relative to `proto/`.
const PROTOS: &[&str] = &[
    "flyteidl/core/types.proto",
    "flyteidl/core/literals.proto",
    "flyteidl/core/interface.proto",
    "flyteidl/core/execution.proto",
    "flyteidl/core/errors.proto",
];

fn compile_protos() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", manifest_dir.display()))?
        .join("proto");
    for file in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let descriptors = protox::compile(PROTOS, [&proto_dir])
        .with_context(|| format!("compiling the .proto files under {}", proto_dir.display()))?;
    prost_build::Config::new()
        // Sorted maps: deterministic bytes, equal to protobuf's deterministic serialization.
        .btree_map(["."])
        .compile_fds(descriptors)
        .context("generating Rust code for the FlyteIDL messages")?;
    Ok(())
}

fn build_ebpf() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "copilot-ebpf")
        .ok_or_else(|| anyhow!("copilot-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    // With AYA_BUILD_SKIP=1 no object is built; leave an empty one so the crate
    // still compiles, and the tracer says so at run time.
    let object = std::path::Path::new(&std::env::var("OUT_DIR")?).join("copilot");
    if !object.exists() {
        std::fs::write(&object, b"").context("writing the placeholder eBPF object")?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    compile_protos()?;
    build_ebpf()
}
