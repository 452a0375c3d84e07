//! Running the watchers the flags ask for (`--start-watcher-type`,
//! `--exit-watcher-type`): the eBPF watcher when it can start, else the Go
//! binary's `signal` watcher, said once; and the sibling rule's way out when the
//! main container cannot be told apart (see [`select`](super::select)).

use std::path::Path;

use super::{
    Options,
    failure::Failure,
    select::MainSelector,
    term::Term,
    wait::{self, EbpfWatcher, MainExit, WatcherType},
};
use crate::{error_chain as chain, pod::PodSelector};

/// Waits for the main container's exit (`None`: its status cannot be known);
/// a wait that ends otherwise is the failure it stands for.
pub(super) async fn main_exit(
    ebpf: Option<&mut EbpfWatcher>,
    args: &Options,
    term: &mut Term,
) -> Result<Option<MainExit>, Failure> {
    let exit = wait_main(ebpf, args, term)
        .await
        .map_err(|e| Failure::from_wait(&e))?;
    if let Some(exit) = &exit {
        tracing::info!(
            container = exit.container.as_deref().unwrap_or("?"),
            pid = exit.pid,
            status = %exit.status.map_or("unknown".into(), |s| s.to_string()),
            oom_killed = exit.oom_killed,
            "main container exited"
        );
    }
    Ok(exit)
}

/// Waits for the main container as the watchers say. When other containers run
/// beside the task (a mesh proxy, an agent) and none is named, the main container
/// cannot be told apart: the sidecar then does what the Go binary's `signal`
/// watcher does, and says so.
async fn wait_main(
    ebpf: Option<&mut EbpfWatcher>,
    args: &Options,
    term: &mut Term,
) -> Result<Option<MainExit>, wait::Error> {
    match wait_watchers(ebpf, args, term).await {
        Err(e @ wait::Error::Ambiguous(_)) => {
            tracing::warn!(
                "{e}; uploading on SIGTERM instead, which the kubelet sends a native sidecar \
                 once the regular containers have ended"
            );
            term.wait().await;
            Ok(None)
        }
        other => other,
    }
}

async fn wait_watchers(
    ebpf: Option<&mut EbpfWatcher>,
    args: &Options,
    term: &mut Term,
) -> Result<Option<MainExit>, wait::Error> {
    let timeout = (!args.start_timeout.is_zero()).then_some(args.start_timeout);
    let mut ebpf = ebpf;
    match args.start_watcher {
        WatcherType::Ebpf => {
            if let Some(w) = ebpf.as_deref_mut() {
                w.wait_started(timeout).await?;
            }
        }
        WatcherType::Signal | WatcherType::Noop | WatcherType::File => {}
    }
    match args.exit_watcher {
        WatcherType::Ebpf => match ebpf {
            Some(w) => Ok(Some(w.wait_exited().await?)),
            None => Err(wait::Error::Unsupported(WatcherType::Ebpf, "no pod")),
        },
        WatcherType::Signal => {
            term.wait().await;
            Ok(None)
        }
        WatcherType::File => tokio::select! {
            r = wait::wait_marker_file(&args.from_local_dir) => r.map(|()| None),
            () = term.wait() => Err(wait::Error::Terminated),
        },
        WatcherType::Noop => Ok(None),
    }
}

/// Starts the eBPF watcher when a watcher flag asks for it. When it cannot start
/// (no capability, no BTF, no way to find the pod…), the sidecar does what the Go
/// binary's default `signal` watcher does: SIGTERM, which the kubelet sends a native
/// sidecar once the regular containers have ended, means "upload now". Said once.
pub(super) fn start_ebpf(args: &mut Options, bpf_dir: &Path) -> Option<EbpfWatcher> {
    let uses_ebpf =
        args.start_watcher == WatcherType::Ebpf || args.exit_watcher == WatcherType::Ebpf;
    if !uses_ebpf {
        return None;
    }
    let sel = PodSelector {
        pod_cgroup: args.pod_cgroup.clone(),
        pod_uid: args.pod_uid.clone(),
        cgroup_root: args.cgroup_root.clone(),
    };
    let selector = MainSelector {
        id: args.main_container_id.clone(),
    };
    let tuning = crate::monitor::Tuning {
        node_dir: Some(bpf_dir.to_owned()),
        ..Default::default()
    };
    match EbpfWatcher::start(&sel, selector, &tuning) {
        Ok(w) => {
            tracing::info!(pod = %w.pod_cgroup().display(), "attached to the pod");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(
                "cannot watch the main container in the kernel ({}); falling back to the \
                 signal watcher: outputs are uploaded when SIGTERM arrives",
                chain(&e)
            );
            let fallback = |w: WatcherType| {
                if w == WatcherType::Ebpf {
                    WatcherType::Signal
                } else {
                    w
                }
            };
            args.start_watcher = match args.start_watcher {
                WatcherType::Ebpf => WatcherType::Noop,
                w => w,
            };
            args.exit_watcher = fallback(args.exit_watcher);
            None
        }
    }
}
