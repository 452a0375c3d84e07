//! Figures 5 and 10: a main container whose children exec and exit as fast as this
//! machine can, traced with the normal ring buffer and with a tiny one.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};
use bench_results::{MainExit, Storm, StormKernel, StormReference};
use copilot::trace::{ContainerState, Line};
use integration_test::{Container, ContainerOpts, Layout, PodCgroup};

use crate::{bpf, tracer::Trace};

/// `spawners` × `per` execs of /bin/true in one container; `ring_bytes` None = default.
/// `stall`: the consumer is stopped (SIGSTOP) for 300 ms once the storm runs, as a
/// node under CPU pressure would stall it: with a tiny ring, events must be dropped
/// (the consumer otherwise keeps up, woken each time the ring is half full).
/// `outside_ns` = copilot's (exec, exit) mean ns for events outside the pod (figure 4),
/// to take the node's other processes out of the in-pod cost.
pub fn run(
    copilot: &Path,
    ring_bytes: Option<u32>,
    spawners: usize,
    per: usize,
    stall: bool,
    outside_ns: (f64, f64),
) -> anyhow::Result<Storm> {
    let _stats = bpf::enable_stats()?;
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let mut trace = Trace::start(copilot, pod.path(), ring_bytes)?;
    let progs = bpf::programs_of(trace.pid(), trace.set_dir.as_deref())?;
    // Reference programs for the in-pod cost, on the same events (normal ring only).
    let level = pod.rel().components().skip(1).count() as u32;
    let refs = if ring_bytes.is_none() {
        let ring = bpf::Ring::new(((spawners * per * 4 + 1024) * 344) as u32)?;
        let submit = bpf::RefProg::submit(level, pod.id(), &ring, false)?;
        let event = bpf::RefProg::submit(level, pod.id(), &ring, true)?;
        let filter = bpf::RefProg::cgroup_filter(level, pod.id())?;
        let b = [filter.stats()?, submit.stats()?, event.stats()?];
        Some((ring, [filter, submit, event], b))
    } else {
        None
    };
    let before = bpf::stats_by_role(&progs)?;
    let consumer_before = crate::util::Usage::of(trace.pid())?;
    let script = format!(
        "{} wait; exit 5",
        (0..spawners)
            .map(|_| format!("spawner {per} 0 &"))
            .collect::<String>()
    );
    let ctr = Container::run(&pod, &["sh", "-c", &script], ContainerOpts::default());
    let id = ctr.id().to_string();
    let timeout = Duration::from_secs(120 + (spawners * per / 100) as u64);
    let mut lines = Vec::new();
    if stall {
        lines = trace.collect_until(
            |l| {
                matches!(l, Line::Exec(e)
                    if e.process.container_id.as_deref() == Some(&*id) && e.process.comm == "spawner")
            },
            Duration::from_secs(30),
        )?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(trace.pid() as i32, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: as above.
        unsafe { libc::kill(trace.pid() as i32, libc::SIGCONT) };
    }
    let rest = trace
        .collect_until(
            |l| {
                matches!(l, Line::Container(c)
                    if c.state == ContainerState::Exited && c.container_id.as_deref() == Some(&*id))
            },
            timeout,
        )
        .with_context(|| {
            format!("the main container's exit was never reported (ring {ring_bytes:?})")
        })?;
    lines.extend(rest);
    let after = bpf::stats_by_role(&progs)?;
    let consumer = crate::util::Usage::of(trace.pid())?.since(&consumer_before);
    // Lines that were already on their way (a `lost` report follows the batch).
    std::thread::sleep(Duration::from_millis(200));
    lines.extend(trace.drain());
    let stop = trace.stop()?;
    if !ctr.wait_exited(Duration::from_secs(10)) {
        bail!("the storm container did not finish");
    }

    let in_ctr = |l: &Line| l.container_id() == Some(&*id);
    let execs = lines
        .iter()
        .filter(|l| matches!(l, Line::Exec(_)) && in_ctr(l))
        .count();
    let exits = lines
        .iter()
        .filter(|l| matches!(l, Line::Exit(_)) && in_ctr(l))
        .count();
    let lost: u64 = lines
        .iter()
        .map(|l| match l {
            Line::Lost { count } => *count,
            _ => 0,
        })
        .sum();
    let exited = lines.iter().find_map(|l| match l {
        Line::Container(c) if c.state == ContainerState::Exited && in_ctr(l) => Some(c),
        _ => None,
    });
    let main_exit_code = exited.and_then(|c| c.exit_code);
    let times: Vec<u64> = lines
        .iter()
        .filter(|l| matches!(l, Line::Exec(_)) && in_ctr(l))
        .filter_map(Line::time_ns)
        .collect();
    let span_s = match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    let expected = spawners * per;
    let d = |role: &str| {
        let b = before.get(role).copied().unwrap_or_default();
        after.get(role).copied().unwrap_or_default().since(b)
    };
    let (exec, exit) = (d("exec"), d("exit"));
    // Runs for processes outside the pod in the same window, at their measured cost.
    // Runs for events in the pod: those printed and those lost (the program ran, the
    // reserve failed). A lost event's kind is unknown: split them half and half.
    let (lost_exec, lost_exit) = (lost / 2, lost - lost / 2);
    let out_exec = exec.run_cnt.saturating_sub(execs as u64 + lost_exec);
    let out_exit = exit.run_cnt.saturating_sub(exits as u64 + lost_exit);
    let inside_ns = (exec.run_time_ns + exit.run_time_ns) as f64
        - out_exec as f64 * outside_ns.0
        - out_exit as f64 * outside_ns.1;
    let inside_runs = (execs as u64 + exits as u64 + lost).max(1) as f64;
    // The same estimate for the reference programs: their outside runs cost what the
    // filter-only program costs.
    let mut reference = None;
    if let Some((_ring, progs, b)) = &refs {
        let d: Vec<bpf::Stats> = progs
            .iter()
            .zip(b)
            .map(|(p, b)| p.stats().map(|s| s.since(*b)))
            .collect::<Result<_, _>>()?;
        let filter_mean = d[0].mean_ns();
        let inside = |s: bpf::Stats| {
            let outside = s.run_cnt.saturating_sub(inside_runs as u64);
            (s.run_time_ns as f64 - outside as f64 * filter_mean) / inside_runs
        };
        reference = Some(StormReference {
            filter_only_ns: Some(inside(d[0])),
            reserve_submit_no_wakeup_ns: Some(inside(d[1])),
            reserve_fill_submit_no_wakeup_ns: Some(inside(d[2])),
        });
    }
    let storm = Storm {
        ring_bytes,
        consumer_stalled_ms: if stall { 300 } else { 0 },
        spawners,
        execs_started: expected,
        exec_lines: execs,
        exit_lines: exits,
        lost,
        execs_per_s: Some(if span_s > 0.0 {
            times.len() as f64 / span_s
        } else {
            0.0
        }),
        main_exit: MainExit {
            exit_code: main_exit_code,
            source: exited.map(|c| c.source.as_str().to_owned()),
        },
        stop_after_sigterm_ms: Some(stop.as_secs_f64() * 1e3),
        // Each time the consumer sleeps again after a wake-up is a voluntary switch.
        consumer: consumer.result(),
        kernel: StormKernel {
            exec_mean_ns: Some(exec.mean_ns()),
            exit_mean_ns: Some(exit.mean_ns()),
            all_runs_mean_ns: Some(exec.add(exit).mean_ns()),
            outside_runs: out_exec + out_exit,
            inside_mean_ns: Some(inside_ns / inside_runs),
            reference_inside_ns: reference,
        },
    };
    let json = serde_json::to_string(&storm)?;
    if ring_bytes.is_none() {
        // Lost events are counted and reported (a missed target, not a broken bench);
        // events missing without being counted as lost are a failure.
        if (execs as u64) + lost < expected as u64 {
            bail!(
                "normal ring buffer: {execs} exec lines + {lost} lost for {expected} execs: {json}"
            );
        }
        if lost == 0 && main_exit_code != Some(5) {
            bail!("the main exit (code 5) was not reported with its status: {json}");
        }
    } else if lost == 0 {
        bail!(
            "the tiny ring buffer with a stalled consumer lost nothing: drops not exercised: {json}"
        );
    }
    Ok(storm)
}
