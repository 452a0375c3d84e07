//! `copilot trace`: every exec and process exit in a pod, and every container
//! state change, as one JSON object per line (or readable lines on a terminal).

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use serde_json::{Value, json};
use tokio::signal::unix::SignalKind;

use crate::{
    cgroup::{self, Hierarchy},
    lifecycle::{Change, State},
    monitor::{self, Monitor, Output, Tuning},
    tracer::{EventDetail, ProcessEvent},
};

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
    let ready = json!({
        "type": "ready",
        "pod_cgroup": monitor.pod_cgroup().path,
        "cgroup_id": monitor.pod_cgroup().id,
        "programs": monitor.set_use(),
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
        line(out, text, &to_json(o, pod, seen_ns))?;
    }
    out.flush().map_err(Error::Stdout)
}

fn line(out: &mut impl std::io::Write, text: bool, v: &Value) -> Result<(), Error> {
    let s = if text { to_text(v) } else { v.to_string() };
    writeln!(out, "{s}").map_err(Error::Stdout)
}

fn to_json(o: &Output, pod: &std::path::Path, seen_ns: u64) -> Value {
    match o {
        Output::Process {
            event,
            container,
            main,
            oom_killed,
        } => process_json(event, container.as_deref(), *main, *oom_killed),
        Output::Change {
            change,
            name,
            container,
        } => change_json(change, &pod.join(name), container.as_deref(), seen_ns),
        Output::Lost { count } => json!({ "type": "lost", "count": count }),
    }
}

/// An exec or exit line.
fn process_json(
    event: &ProcessEvent,
    container: Option<&str>,
    main: bool,
    oom_killed: bool,
) -> Value {
    match &event.detail {
        EventDetail::Exec {
            filename,
            filename_truncated,
        } => json!({
            "type": "exec",
            "time_ns": event.time_ns,
            "pid": event.tgid,
            "tid": event.pid,
            "ns_pid": event.ns_tgid,
            "ns_tid": event.ns_pid,
            "ppid": event.ppid,
            "comm": event.comm,
            "filename": filename,
            "filename_truncated": filename_truncated,
            "cgroup_id": event.cgroup_id,
            "container_id": container,
            "main": main,
        }),
        EventDetail::Exit {
            status,
            group_dead_derived,
        } => json!({
            "type": "exit",
            "time_ns": event.time_ns,
            "pid": event.tgid,
            "tid": event.pid,
            "ns_pid": event.ns_tgid,
            "ns_tid": event.ns_pid,
            "ppid": event.ppid,
            "comm": event.comm,
            "cgroup_id": event.cgroup_id,
            "container_id": container,
            "status": status.0,
            "exit_code": status.code(),
            "signal": status.signal(),
            "core_dumped": status.core_dumped(),
            "oom_killed": oom_killed,
            "group_dead": if *group_dead_derived { "derived" } else { "tracepoint" },
            "main": main,
        }),
        EventDetail::OomVictim => json!({ "type": "oom_victim", "pid": event.tgid }),
    }
}

/// A container's state line.
fn change_json(
    change: &Change,
    cgroup: &std::path::Path,
    container: Option<&str>,
    seen_ns: u64,
) -> Value {
    let (pid, code, sig, oom, time) = match change.state {
        State::Created => (None, None, None, false, None),
        State::Started { pid, time_ns } => (pid, None, None, false, time_ns),
        State::Exited(e) => (
            e.pid,
            e.status.and_then(|s| s.code()),
            e.status.and_then(|s| s.signal()),
            e.oom_killed,
            e.time_ns,
        ),
    };
    json!({
        "type": "container",
        "container_id": container,
        "cgroup": cgroup,
        "cgroup_id": change.cgroup_id,
        "state": change.state.name(),
        "pid": pid,
        "exit_code": code,
        "signal": sig,
        "oom_killed": oom,
        "time_ns": time,
        "seen_ns": seen_ns,
        "source": change.source,
    })
}

fn to_text(v: &Value) -> String {
    let s = |k: &str| {
        v.get(k)
            .map(|x| match x {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let short = |id: String| id.chars().take(12).collect::<String>();
    match s("type").as_str() {
        "exec" => format!(
            "exec   {:>7} {:<16} {} [{}]{}",
            s("pid"),
            s("comm"),
            s("filename"),
            short(s("container_id")),
            if v["main"] == true { " main" } else { "" }
        ),
        "exit" => {
            let how = match (v["exit_code"].as_u64(), v["signal"].as_u64()) {
                (Some(c), _) => format!("code {c}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => "?".into(),
            };
            format!(
                "exit   {:>7} {:<16} {how} [{}]{}",
                s("pid"),
                s("comm"),
                short(s("container_id")),
                if v["main"] == true { " main" } else { "" }
            )
        }
        "container" => format!(
            "container {} {} pid={} code={} signal={} oom={} ({})",
            short(s("container_id")),
            s("state"),
            s("pid"),
            s("exit_code"),
            s("signal"),
            s("oom_killed"),
            s("source")
        ),
        "ready" => format!("ready: tracing {}", s("pod_cgroup")),
        "lost" => format!("lost {} events; state re-read from cgroups", s("count")),
        _ => v.to_string(),
    }
}
