//! Fixtures for copilot's privileged end-to-end tests.
//!
//! Everything here touches the real kernel: cgroups, runc containers, the `copilot`
//! binary loading eBPF programs. Tests run as root, one at a time
//! (`cargo xtask integration-test`), and every fixture cleans up in `Drop`, also when a
//! test panics. A missing prerequisite (not root, no runc, no cgroup2 mount, no copilot
//! binary) is a panic with the reason, never a skip: under `CI=true` a skipped kernel
//! test would hide exactly the failures these tests exist for.
//!
//! ```no_run
//! use std::time::Duration;
//! use integration_test::{Container, ContainerOpts, Layout, PodCgroup, Trace};
//!
//! let pod = PodCgroup::new(Layout::Cgroupfs);
//! let mut trace = Trace::start(&pod);
//! trace.wait_ready(Duration::from_secs(10));
//! let ctr = Container::run(&pod, &["sh", "-c", "exit 3"], ContainerOpts::default());
//! let exit = trace.next_matching(
//!     |e| e.is_exit() && e.pid() == Some(ctr.pid()),
//!     Duration::from_secs(10),
//! );
//! assert_eq!(exit.exit_code(), Some(3));
//! ```
pub mod azurite;
mod bpffs;
mod cgroup;
mod container;
pub mod demo;
mod env;
mod file_task;
mod flytekit;
pub mod gcs;
mod kubelet;
mod moto;
mod podman;
mod rootfs;
mod sidecar;
mod store_client;
pub mod store_task;
pub mod task_pod;
mod trace;

pub use azurite::Azurite;
pub use bpffs::Bpffs;
pub use cgroup::{
    Layout, MemoryCgroup, PodCgroup, cgroup2_mount, children_peak_rss, join_at_exec, v1_mounts,
};
pub use container::{Container, ContainerOpts, Gate, Mount, Namespace, ProcessOpts};
pub use env::{copilot_bin, is_ci, pidfd_wait, preflight, random_hex, wait_comm, workspace_root};
pub use file_task::FileTask;
pub use flytekit::{arg, flytekit, flytekit_json};
pub use gcs::GcsEmulator;
pub use kubelet::{ContainerStatus, Phase, PodConfig, PodStatus, RunningPod};
pub use moto::Moto;
pub use podman::{Podman, image_archive};
pub use rootfs::{HELPERS, copilot_rootfs, helper_path, rootfs};
pub use sidecar::{Copilot, Placement, run_copilot};
pub use store_client::StoreClient;
pub use trace::{Event, Trace};
