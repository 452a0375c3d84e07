//! `copilot trace`'s flags.
use std::path::PathBuf;

use crate::trace::{Options, OutputFormat};

#[derive(clap::Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("target").required(true))]
pub struct TraceArgs {
    /// The pod's cgroup: a path in the cgroup v2 filesystem, or relative to its mount
    /// (e.g. `/kubepods/besteffort/pod<uid>`).
    #[arg(long, value_name = "PATH", group = "target")]
    pub pod_cgroup: Option<PathBuf>,
    /// Any cgroup subtree; its child cgroups are reported as containers.
    #[arg(long, value_name = "PATH", group = "target")]
    pub cgroup: Option<PathBuf>,
    /// Output format; `auto` is text on a terminal, JSON lines otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    pub output: OutputFormat,
    /// Ring buffer size in bytes (a power of two, at least a page).
    #[arg(long, hide = true)]
    pub ring_bytes: Option<u32>,
    /// Leave the OOM tracepoint out, as on a kernel without it (tests the
    /// memory-controller fallback of OOM attribution).
    #[arg(long, hide = true)]
    pub without_oom_tracepoint: bool,
}

impl TraceArgs {
    /// The command's options, with the node's pin directory.
    pub fn into_options(self, bpf_dir: PathBuf) -> Options {
        Options {
            target: self.pod_cgroup.or(self.cgroup).unwrap_or_default(),
            output: self.output,
            ring_bytes: self.ring_bytes,
            without_oom_tracepoint: self.without_oom_tracepoint,
            bpf_dir,
        }
    }
}
