//! `cargo xtask`: the project's developer and CI commands (alias in `.cargo/config.toml`).
mod bench;
mod cmd;
mod demo;
mod fuzz;
mod image;
mod integration_test;
mod setup;
mod test;

use clap::Parser;

#[derive(Parser)]
#[command(name = "xtask", about = "copilot's developer and CI tasks")]
enum Subcommand {
    /// Install what this machine kind lacks (Debian packages, rust-src, bpf-linker, cargo-fuzz, moto, flytekit).
    Setup(setup::Options),
    /// The whole test suite: setup, fmt, clippy, unit tests, privileged integration tests.
    Test(test::Options),
    /// Only the privileged integration tests (builds copilot first).
    IntegrationTest(integration_test::Options),
    /// A whole task: download, a runc main container, the sidecar, upload (local files).
    Demo(demo::Options),
    /// Benchmarks: figures and ratios against the polling designs.
    Bench(bench::Options),
    /// copilot's container image as an OCI image layout tarball (no engine, nothing pulled).
    Image(image::Options),
    /// The libFuzzer targets (cargo-fuzz, nightly) for a while each, from the committed corpus.
    Fuzz(fuzz::Options),
}

fn main() -> anyhow::Result<()> {
    match Subcommand::parse() {
        Subcommand::Setup(opts) => setup::run(opts),
        Subcommand::Test(opts) => test::run(opts),
        Subcommand::IntegrationTest(opts) => integration_test::run(opts),
        Subcommand::Demo(opts) => demo::run(opts),
        Subcommand::Bench(opts) => bench::run(opts),
        Subcommand::Fuzz(opts) => fuzz::run(opts),
        Subcommand::Image(opts) => image::run(opts),
    }
}
