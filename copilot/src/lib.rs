//! copilot: Flyte CoPilot rebuilt on eBPF.
//!
//! Data flows one way: [`cli`] → ([`cgroup`], [`tracer`]) → [`lifecycle`] →
//! commands ([`trace`], [`download`]) → [`literals`] → [`storage`].

pub mod cgroup;
pub mod cli;
pub mod download;
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
