//! `copilot trace`: every exec and process exit in a pod, and every container
//! state change, as one JSON object per line (or readable lines on a terminal).
//! The lines are [`Line`]s, which readers parse back.

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use tokio::signal::unix::SignalKind;

use crate::{
    cgroup::{self, Hierarchy},
    monitor::{self, Monitor, Output, Tuning},
};

mod line;

pub use line::{Container, ContainerState, Exec, Exit, GroupDead, Line, Process, Ready};

/// What `copilot trace` follows and how it prints (its flags, see `cli::trace`).
#[derive(Debug, Clone)]
pub struct Options {
    /// A pod cgroup or any cgroup subtree: a path in the cgroup v2 filesystem,
    /// or relative to its mount; its child cgroups are reported as containers.
    pub target: PathBuf,
    pub output: OutputFormat,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: Option<u32>,
    /// Leave the OOM tracepoint out, as on a kernel without it.
    pub without_oom_tracepoint: bool,
    /// Where the node's shared eBPF program set is pinned.
    pub bpf_dir: PathBuf,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(transparent)]
    Monitor(#[from] monitor::Error),
    #[error("installing the {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("writing to stdout")]
    Stdout(#[source] std::io::Error),
    #[error("encoding a trace line as JSON (a cgroup path that is not UTF-8?)")]
    Encode(#[source] serde_json::Error),
}

pub async fn run(args: Options) -> Result<ExitCode, Error> {
    let hierarchy = Hierarchy::discover(None)?;
    let pod = hierarchy.resolve(&args.target)?;
    let text = match args.output {
        OutputFormat::Auto => std::io::stdout().is_terminal(),
        OutputFormat::Json => false,
        OutputFormat::Text => true,
    };
    let sig = |kind, signal| {
        tokio::signal::unix::signal(kind).map_err(|source| Error::Signal { signal, source })
    };
    let mut sigterm = sig(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = sig(SignalKind::interrupt(), "SIGINT")?;

    let tuning = Tuning {
        ring_bytes: args.ring_bytes,
        without_oom_tracepoint: args.without_oom_tracepoint,
        node_dir: Some(args.bpf_dir.clone()),
    };
    let (mut monitor, first) = Monitor::start(hierarchy, pod, &tuning)?;
    let mut stdout = std::io::stdout().lock();
    let paths = monitor.kernel_paths();
    tracing::info!(
        pod = %monitor.pod_cgroup().path.display(),
        group_dead_field = paths.group_dead_field,
        oom_tracepoint = paths.oom_tracepoint,
        "attached"
    );
    let pod_path = monitor.pod_cgroup().path.clone();
    emit(
        &mut stdout,
        text,
        &pod_path,
        &first,
        crate::tracer::boottime_ns(),
    )?;
    let ready = Line::Ready(Ready {
        pod_cgroup: monitor.pod_cgroup().path.clone(),
        cgroup_id: monitor.pod_cgroup().id,
        programs: monitor.set_use().clone(),
    });
    line(&mut stdout, text, &ready)?;
    stdout.flush().map_err(Error::Stdout)?;

    loop {
        tokio::select! {
            // `seen_ns`: when the lifecycle decision was made (benchmarks compare
            // it with the kernel's `time_ns` of the exit, same clock).
            r = monitor.next() => {
                let outputs = r?;
                emit(&mut stdout, text, &pod_path, &outputs, crate::tracer::boottime_ns())?
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn emit(
    out: &mut impl std::io::Write,
    text: bool,
    pod: &std::path::Path,
    outputs: &[Output],
    seen_ns: u64,
) -> Result<(), Error> {
    for o in outputs {
        line(out, text, &to_line(o, pod, seen_ns))?;
    }
    out.flush().map_err(Error::Stdout)
}

fn line(out: &mut impl std::io::Write, text: bool, l: &Line) -> Result<(), Error> {
    let s = if text {
        l.to_string()
    } else {
        l.to_json().map_err(Error::Encode)?
    };
    writeln!(out, "{s}").map_err(Error::Stdout)
}

fn to_line(o: &Output, pod: &std::path::Path, seen_ns: u64) -> Line {
    match o {
        Output::Process {
            event,
            container,
            main,
            oom_killed,
        } => Line::process_event(event, container.as_deref(), *main, *oom_killed),
        Output::Change {
            change,
            name,
            container,
        } => Line::change(change, pod.join(name), container.as_deref(), seen_ns),
        Output::Lost { count } => Line::Lost { count: *count },
    }
}
