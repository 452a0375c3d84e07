//! Figure 1: exit-notification latency, kernel exit timestamp → the lifecycle's
//! "exited" decision (`copilot trace`'s `seen_ns`), both CLOCK_BOOTTIME.
//!
//! Each sample is a container cgroup of its own under a pod cgroup: a process is
//! forked, moves itself into the new cgroup (`echo 0 > cgroup.procs`) and execs
//! `/bin/true`. For copilot that is a container whose main process started and
//! exited; runc would only add set-up time before the exec, nothing on the exit
//! path. Samples are taken one at a time, on an otherwise idle pod.
use std::{
    io::Write as _,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use bench_results::ExitLatency;
use copilot::{
    lifecycle::Source,
    trace::{Container, ContainerState, Line},
};
use integration_test::{Layout, PodCgroup, random_hex};

use crate::{tracer::Trace, util::summary};

pub fn run(copilot: &Path, exits: usize) -> anyhow::Result<ExitLatency> {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let mut trace = Trace::start(copilot, pod.path(), None)?;
    let mut latencies_us = Vec::with_capacity(exits);
    let mut by_cgroup = 0;
    let mut examples = Vec::new();
    for i in 0..exits {
        let name = random_hex(32);
        let dir = pod.path().join(&name);
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        let fd = procs.as_raw_fd();
        let mut cmd = Command::new("/bin/true");
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: only async-signal-safe calls (write) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = cmd
            .status()
            .context("spawning /bin/true into a container cgroup")?;
        if !status.success() {
            bail!("/bin/true in container cgroup failed: {status}");
        }
        drop(procs);
        let line = trace
            .next_matching(
                |l| {
                    matches!(l, Line::Container(c)
                        if c.state == ContainerState::Exited
                            && c.cgroup.to_str().is_some_and(|c| c.ends_with(&name)))
                },
                Duration::from_secs(10),
            )
            .with_context(|| format!("exit {i}: no 'exited' line for container {name}"))?;
        match &line {
            Line::Container(Container {
                time_ns: Some(t),
                seen_ns,
                source: Source::Event,
                ..
            }) => {
                latencies_us.push(seen_ns.saturating_sub(*t) as f64 / 1e3);
            }
            _ => {
                by_cgroup += 1;
                if examples.len() < 3 {
                    examples.push(serde_json::to_value(&line)?);
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
        if i % 500 == 499 {
            eprint!(".");
            let _ = std::io::stderr().flush();
        }
    }
    trace.stop()?;
    if latencies_us.len() < exits * 9 / 10 {
        bail!(
            "only {} of {exits} exits were decided from a kernel event ({by_cgroup} from cgroup emptying)",
            latencies_us.len()
        );
    }
    Ok(ExitLatency {
        latency_us: summary(&latencies_us),
        exits,
        decided_from_cgroup_instead: by_cgroup,
        cgroup_decided_examples: examples,
    })
}
