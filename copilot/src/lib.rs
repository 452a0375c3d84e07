//! copilot: Flyte CoPilot rebuilt on eBPF.
//!
//! Dependencies point one way: [`cli`] (the only user of clap's definitions)
//! → the commands ([`trace`], [`download`], [`sidecar`]) → [`monitor`] →
//! ([`cgroup`], [`tracer`], [`lifecycle`]) and [`literals`] → [`storage`];
//! [`duration`] and [`proto`] are leaves. `tests/it/tidy.rs` holds the command
//! line to this, and no library function may grow past 80 lines.
#![warn(clippy::too_many_lines)]

pub mod cgroup;
pub mod cli;
pub mod download;
pub mod duration;
pub mod lifecycle;
pub mod literals;
pub mod memory;
pub mod monitor;
pub mod pod;
pub mod proto;
pub mod sidecar;
pub mod storage;
pub mod trace;
pub mod tracer;

/// An error and all its sources on one line (`a: b: c`), as error documents and
/// log lines give them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
