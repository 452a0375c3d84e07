//! copilot's integration tests, one test binary (one link for `cargo test -p
//! copilot`) with a module per concern; test names read `hostile_inputs::…`.
//! They share one process and run in parallel threads, so a test changes no
//! process-wide state (environment, working directory, umask, signal
//! dispositions): settings for `copilot` go on its child `Command`.
//!
//! - [`cli_compat`]: command lines written for the Go binary, taken as Go does.
//! - [`golden`]: FlyteIDL bytes from an independent encoder.
//! - [`hostile_inputs`], [`hostile_outputs`]: inputs and outputs folders made by
//!   an attacker, as the hardening sweep found them.
//! - [`https`]: `https://` inputs and S3 over TLS, with a CA made by the test.
//! - [`progress`]: the progress bar on a terminal, none on a pipe.
//! - [`roundtrip`]: every literal kind to files and back.
//! - [`tidy`]: house rules checked on the crate's sources.
//! - [`support`]: what they share.
mod cli_compat;
mod golden;
mod hostile_inputs;
mod hostile_outputs;
mod https;
mod progress;
mod roundtrip;
mod support;
mod tidy;
