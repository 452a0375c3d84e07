//! The results table (markdown, printed and kept in README.md) from results.json.
use std::{fmt::Display, path::Path};

use anyhow::Context as _;
use bench_results::{
    Direction, Figure, Mode, PodShape, PodsMeasured, PodsPoint, Results, StatsCost, Summary, Usage,
};

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

/// A number with a sensible number of digits, or `—`.
fn n(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// A count as JSON writes it: `null` when absent.
fn raw<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            if r >= 100.0 {
                format!("{r:.0}×")
            } else {
                format!("{r:.2}×")
            }
        }
        _ => "—".into(),
    }
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "—",
    }
}

/// `FAILED: …` for a figure that failed.
fn err<T>(f: &Option<Figure<T>>) -> Option<String> {
    f.as_ref()
        .and_then(Figure::error)
        .map(|e| format!("FAILED: {e}"))
}

/// The figure, if it was measured.
fn done<T>(f: &Option<Figure<T>>) -> Option<&T> {
    f.as_ref().and_then(Figure::done)
}

/// `p50 … UNIT, p99 … UNIT (n=…)`.
fn p50_p99(s: Option<&Summary>, unit: &str) -> String {
    format!(
        "p50 {} {unit}, p99 {} {unit} (n={})",
        n(s.and_then(|s| s.p50)),
        n(s.and_then(|s| s.p99)),
        raw(s.map(|s| s.n))
    )
}

struct Row {
    fig: &'static str,
    what: String,
    copilot: String,
    reference: String,
    ratio: String,
    target: &'static str,
    met: &'static str,
}

/// Renders the whole section: machine, load, then one row per figure.
pub fn markdown(v: &Results) -> String {
    let mut rows: Vec<Row> = Vec::new();
    latency_rows(v, &mut rows);
    kernel_rows(v, &mut rows);
    fig6_rows(v, &mut rows);
    sidecar_rows(v, &mut rows);
    fig9_rows(v, &mut rows);
    storm_rows(v, &mut rows);
    fig11_rows(v, &mut rows);

    let m = &v.machine;
    let mut s = String::new();
    s.push_str(&format!(
        "Measured by `cargo xtask bench{}` ({} mode, {} s) on: {}, {} cores, {:.1} GiB, Linux {}; \
         load average {} before, {} after (1, 5, 15 min). Ratios: reference ÷ copilot \
         (above 1 = copilot faster); figures 4 and 5: copilot ÷ the closest reference program \
         (the cgroup-id check; reserve + fill + submit).\n\n",
        if v.mode == Mode::Quick {
            " --quick"
        } else {
            ""
        },
        match v.mode {
            Mode::Quick => "quick",
            Mode::Full => "full",
        },
        n(Some(v.duration_s)),
        m.cpu,
        m.cores,
        m.memory_gib,
        m.kernel,
        v.load_before,
        v.load_after,
    ));
    s.push_str("| # | figure | copilot | reference | ratio | target | |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.fig,
            r.what,
            r.copilot.replace('|', "/"),
            r.reference,
            r.ratio,
            r.target,
            r.met
        ));
    }
    s
}

/// Figures 1, 2 and 3: exit → decision, exit → outputs, and the pollers beside them.
fn latency_rows(v: &Results, rows: &mut Vec<Row>) {
    let g = &v.figures;
    // 1 and 3 share the copilot latency.
    let lat = done(&g.exit_latency).map(|e| &e.latency_us);
    let p50_us = lat.and_then(|l| l.p50);
    rows.push(Row {
        fig: "1",
        what: "exit → lifecycle \"exited\" (kernel ts → decision)".into(),
        copilot: err(&g.exit_latency).unwrap_or_else(|| p50_p99(lat, "µs")),
        reference: "—".into(),
        ratio: "—".into(),
        target: "p50 ≤ 100 µs, p99 ≤ 1 ms",
        met: met(p50_us
            .zip(lat.and_then(|l| l.p99))
            .map(|(a, b)| a <= 100.0 && b <= 1000.0)),
    });
    let sc = done(&g.sidecar);
    let out = sc.map(|s| &s.exit_to_outputs_ms);
    rows.push(Row {
        fig: "2",
        what: "exit → outputs.pb written (local store, 3 values + 1 blob)".into(),
        copilot: err(&g.sidecar).unwrap_or_else(|| p50_p99(out, "ms")),
        reference: "—".into(),
        ratio: "—".into(),
        target: "p50 ≤ 20 ms",
        met: met(out.and_then(|o| o.p50).map(|x| x <= 20.0)),
    });
    let pollers = sc.map(|s| &s.pollers);
    for (p, label) in [
        (
            pollers.and_then(|p| p.proc_2s.as_ref()),
            "Go /proc scanner, 2 s × 2 empty cycles",
        ),
        (
            pollers.and_then(|p| p.file_1s.as_ref()),
            "1 s stat poller of _SUCCESS",
        ),
    ] {
        let pl = p.map(|p| &p.latency_ms);
        let r = pl.and_then(|l| l.p50).map(|ms| ms * 1000.0);
        rows.push(Row {
            fig: "3",
            what: format!("detection latency vs {label}"),
            copilot: format!("p50 {} µs (fig. 1)", n(p50_us)),
            reference: format!(
                "{}; CPU {} ms/min",
                p50_p99(pl, "ms"),
                n(p.and_then(|p| p.cpu_ms_per_minute))
            ),
            ratio: ratio(r, p50_us),
            target: "≥ 1,000× faster",
            met: met(r.zip(p50_us).map(|(r, c)| r / c >= 1000.0)),
        });
    }
}

/// Figures 4 and 5: kernel ns per event outside the pod and inside it.
fn kernel_rows(v: &Results, rows: &mut Vec<Row>) {
    let g = &v.figures;
    let o = done(&g.outside);
    let mean = |f: fn(&bench_results::Outside) -> Option<f64>| o.and_then(f);
    rows.push(Row {
        fig: "4",
        what: format!(
            "kernel ns per exec/exit outside the pod ({} execs)",
            raw(o.map(|o| o.execs))
        ),
        copilot: err(&g.outside).unwrap_or_else(|| {
            format!(
                "{} ns (exec {}, exit {})",
                n(mean(|o| o.copilot_mean_ns)),
                n(mean(|o| o.copilot_exec.mean_ns)),
                n(mean(|o| o.copilot_exit.mean_ns))
            )
        }),
        reference: format!(
            "empty prog {} ns; cgroup-id check only {} ns ({} ns with the ids read from .rodata); \
             attached first/after: copilot {}/{}, check {}/{}",
            n(mean(|o| o.ref_empty.mean_ns)),
            n(mean(|o| o.ref_cgroup_filter.mean_ns)),
            n(mean(|o| o.ref_cgroup_filter_rodata.mean_ns)),
            n(mean(|o| o.copilot_attached_first.copilot_mean_ns)),
            n(mean(|o| o.refs_attached_first.copilot_mean_ns)),
            n(mean(|o| o.refs_attached_first.ref_cgroup_filter_ns)),
            n(mean(|o| o.copilot_attached_first.ref_cgroup_filter_ns))
        ),
        ratio: ratio(
            mean(|o| o.copilot_mean_ns),
            mean(|o| o.ref_cgroup_filter.mean_ns),
        ),
        target: "≤ 150 ns mean",
        met: met(mean(|o| o.copilot_mean_ns).map(|x| x <= 150.0)),
    });
    let s = done(&g.storm_normal);
    let k = s.map(|s| &s.kernel);
    let r = k.and_then(|k| k.reference_inside_ns);
    rows.push(Row {
        fig: "5",
        what: format!(
            "kernel ns per event inside the pod ({} spawners, {} execs)",
            raw(s.map(|s| s.spawners)),
            raw(s.map(|s| s.exec_lines))
        ),
        copilot: err(&g.storm_normal).unwrap_or_else(|| {
            format!(
                "{} ns (exec {}, exit {}; raw mean {} incl. {} outside runs)",
                n(k.and_then(|k| k.inside_mean_ns)),
                n(k.and_then(|k| k.exec_mean_ns)),
                n(k.and_then(|k| k.exit_mean_ns)),
                n(k.and_then(|k| k.all_runs_mean_ns)),
                raw(k.map(|k| k.outside_runs))
            )
        }),
        reference: format!(
            "same events: pod check {} ns; + reserve/submit (no wake-up) {}; + zero, fill, helpers {}; consumer {} voluntary switches",
            n(r.and_then(|r| r.filter_only_ns)),
            n(r.and_then(|r| r.reserve_submit_no_wakeup_ns)),
            n(r.and_then(|r| r.reserve_fill_submit_no_wakeup_ns)),
            raw(s.map(|s| s.consumer.voluntary_switches))
        ),
        ratio: ratio(
            k.and_then(|k| k.inside_mean_ns),
            r.and_then(|r| r.reserve_fill_submit_no_wakeup_ns),
        ),
        target: "≤ 1 µs mean",
        met: met(k.and_then(|k| k.inside_mean_ns).map(|x| x <= 1000.0)),
    });
}

/// Figures 7 and 8: the idle sidecar and its start-up.
fn sidecar_rows(v: &Results, rows: &mut Vec<Row>) {
    let g = &v.figures;
    let i = done(&g.idle);
    let side = i.map(|i| &i.sidecar);
    let poll = i.map(|i| &i.poller_proc_2s);
    let cpu = |u: Option<&Usage>| u.and_then(|u| u.cpu_ms);
    rows.push(Row {
        fig: "7",
        what: format!(
            "idle sidecar, {} s waiting on a running main",
            n(i.map(|i| i.window_s))
        ),
        copilot: err(&g.idle).unwrap_or_else(|| {
            format!(
                "CPU {} ms, {} switches, RSS {} MiB (anon {})",
                n(cpu(side)),
                raw(side.map(|s| s.switches)),
                n(side.and_then(|s| s.rss_mib)),
                n(side.and_then(|s| s.rss_anon_mib))
            )
        }),
        reference: format!(
            "/proc poller: CPU {} ms, {} switches, RSS {} MiB",
            n(cpu(poll)),
            raw(poll.map(|p| p.switches)),
            n(poll.and_then(|p| p.rss_mib))
        ),
        ratio: "—".into(),
        target: "CPU ≤ 5 ms, ≤ 20 switches, RSS ≤ 12 MiB",
        met: met(
            side.and_then(|s| Some(s.cpu_ms? <= 5.0 && s.switches <= 20 && s.rss_mib? <= 12.0))
        ),
    });
    let st = done(&g.sidecar).map(|s| &s.startup_ms);
    rows.push(Row {
        fig: "8",
        what: "start-up: sidecar exec → ready file".into(),
        copilot: err(&g.sidecar).unwrap_or_else(|| p50_p99(st, "ms")),
        reference: "—".into(),
        ratio: "—".into(),
        target: "p50 ≤ 100 ms",
        met: met(st.and_then(|s| s.p50).map(|x| x <= 100.0)),
    });
}

/// Figure 9: transfers against each store, beside rclone and `cp -r`.
fn fig9_rows(v: &Results, rows: &mut Vec<Row>) {
    let g = &v.figures;
    if let Some(e) = err(&g.transfers) {
        rows.push(Row {
            fig: "9",
            what: "transfers".into(),
            copilot: e,
            reference: String::new(),
            ratio: String::new(),
            target: "",
            met: "—",
        });
    }
    let t = done(&g.transfers);
    for (name, sh) in [
        ("big", t.and_then(|t| t.big.as_ref())),
        ("small", t.and_then(|t| t.small.as_ref())),
    ] {
        let Some(sh) = sh else { continue };
        let mib = sh.bytes as f64 / (1u64 << 20) as f64;
        let label = if name == "big" {
            format!("1 × {mib:.0} MiB")
        } else {
            format!("{} × 4 KiB", sh.files)
        };
        for (remote, server) in [(sh.s3, "S3 (moto)"), (sh.azure, "Azure Blob (azurite)")] {
            for dir in Direction::BOTH {
                let Some((Some(c), r, x)) = remote.map(|r| r.get(dir)) else {
                    continue;
                };
                rows.push(Row {
                    fig: "9",
                    what: format!("{server} {}, {label}", dir.as_str()),
                    copilot: format!("{} s", n(Some(c))),
                    reference: format!("rclone copy {} s", n(r)),
                    ratio: x.map_or("—".into(), |x| format!("{x:.2}×")),
                    target: "≥ 1.0× rclone",
                    met: met(x.map(|x| x >= 1.0)),
                });
            }
        }
        for dir in Direction::BOTH {
            let (c, x) = sh.local.get(dir);
            rows.push(Row {
                fig: "9",
                what: format!("local store {}, {label}", dir.as_str()),
                copilot: format!("{} s", n(c)),
                reference: format!("cp -r {} s", n(sh.local.cp_r_s)),
                ratio: x.map_or("—".into(), |x| format!("{x:.2}×")),
                target: "report",
                met: "—",
            });
        }
    }
}

/// Figure 10: the event storms, normal and tiny ring.
fn storm_rows(v: &Results, rows: &mut Vec<Row>) {
    let g = &v.figures;
    let s = done(&g.storm_normal);
    let tiny = done(&g.storm_tiny);
    rows.push(Row {
        fig: "10",
        what: "event storm, normal ring (1 MiB)".into(),
        copilot: err(&g.storm_normal).unwrap_or_else(|| {
            format!(
                "{} execs at {}/s: {} lost, main exit code {} ({})",
                raw(s.map(|s| s.exec_lines)),
                n(s.and_then(|s| s.execs_per_s)),
                raw(s.map(|s| s.lost)),
                raw(s.and_then(|s| s.main_exit.exit_code)),
                s.and_then(|s| s.main_exit.source.as_deref()).unwrap_or("?")
            )
        }),
        reference: "—".into(),
        ratio: "—".into(),
        target: "zero lost",
        met: met(s.map(|s| s.lost == 0)),
    });
    rows.push(Row {
        fig: "10",
        what: format!(
            "event storm, tiny ring (4 KiB), consumer stalled {} ms",
            raw(tiny.map(|t| t.consumer_stalled_ms))
        ),
        copilot: err(&g.storm_tiny).unwrap_or_else(|| {
            format!(
                "{} lost (counted), main exit reported ({}, code {}), stopped {} ms after SIGTERM",
                raw(tiny.map(|t| t.lost)),
                tiny.and_then(|t| t.main_exit.source.as_deref())
                    .unwrap_or("?"),
                raw(tiny.and_then(|t| t.main_exit.exit_code)),
                n(tiny.and_then(|t| t.stop_after_sigterm_ms))
            )
        }),
        reference: "—".into(),
        ratio: "—".into(),
        target: "drops counted, healed, main exit reported, no hang",
        met: met(tiny.map(|t| t.lost > 0 && t.main_exit.source.is_some())),
    });
}

/// The measured points of a figure-6 curve: the first and the last.
fn ends(curve: &[PodsPoint]) -> (Option<&PodsMeasured>, Option<&PodsMeasured>) {
    let ok: Vec<&PodsMeasured> = curve.iter().filter_map(PodsPoint::measured).collect();
    (ok.first().copied(), ok.last().copied())
}

fn curve_text(curve: &[PodsPoint], key: fn(&PodsMeasured) -> Option<f64>) -> String {
    curve
        .iter()
        .map(|c| match c {
            PodsPoint::Failed { pods, error, .. } => {
                format!("N={pods}: **cannot start** ({error})")
            }
            PodsPoint::Measured(m) => format!("N={}: {}", m.pods, n(key(m))),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Figure 6: the kernel cost curve, the fork+exec wall clock and the memory per pod.
fn fig6_rows(v: &Results, rows: &mut Vec<Row>) {
    let fig = &v.figures.pods;
    let failed = err(fig);
    let (node, per_pod) = done(fig).map_or((&[][..], &[][..]), |p| {
        (p.node_set.as_slice(), p.set_per_pod.as_slice())
    });
    let (first, last) = ends(node);
    let (_, last_pp) = ends(per_pod);
    let at = |c: Option<&PodsMeasured>, key: fn(&PodsMeasured) -> Option<f64>| c.and_then(key);
    let added = |m: &PodsMeasured| m.added_ns_per_exec;
    let all_started = node.iter().all(|p| p.measured().is_some());
    rows.push(Row {
        fig: "6",
        what: "kernel ns added per exec outside the pods, N pods each with a copilot (curve: bench/fig6-pods.svg)".into(),
        copilot: failed.clone().unwrap_or_else(|| curve_text(node, added)),
        reference: format!("one set per pod: {}", curve_text(per_pod, added)),
        ratio: ratio(at(last_pp, added), at(last, added)),
        target: "N=250 ≤ 1.2× N=1, and ≤ 150 ns without the statistics' own cost (row 6e; 6c)",
        met: met(at(first, added).zip(at(last, added)).map(|(a, b)| {
            let own = at(last, |m| m.above_empty_ns_per_exec);
            all_started
                && last.is_some_and(|c| c.pods == 250)
                && b <= 1.2 * a
                && own.is_some_and(|o| o <= 150.0)
        })),
    });
    fig6_read_rows(node, done(fig).and_then(|p| p.stats_cost.as_ref()), rows);
    let slow = |m: &PodsMeasured| m.fork_exec_slowdown;
    rows.push(Row {
        fig: "6w",
        what: "fork+exec loop outside the pods, time with N copilots ÷ time with none".into(),
        copilot: failed.clone().unwrap_or_else(|| curve_text(node, slow)),
        reference: format!("one set per pod: {}", curve_text(per_pod, slow)),
        ratio: ratio(at(last_pp, slow), at(last, slow)),
        target: "report",
        met: "—",
    });
    let kib = |m: &PodsMeasured| m.per_pod_kib;
    rows.push(Row {
        fig: "6m",
        what: "memory per pod: its ring buffer in the kernel + the tracer's anonymous RSS (KiB)"
            .into(),
        copilot: failed.unwrap_or_else(|| {
            format!(
                "{} (ring {}, RSS anon {}) at N={}",
                n(at(last, kib)),
                n(at(last, |m| m.ring_kib_mean)),
                n(at(last, |m| m.tracer_anon_kib_mean)),
                raw(last.map(|m| m.pods)),
            )
        }),
        reference: format!("one set per pod: {}", n(at(last_pp, kib))),
        ratio: ratio(at(last_pp, kib), at(last, kib)),
        target: "≤ 2 MiB per pod",
        met: met(at(last, kib).map(|k| k <= 2048.0)),
    });
}

/// A row that reports a figure, with no target of its own.
fn report_row(fig: &'static str, what: String, copilot: String, reference: String) -> Row {
    Row {
        fig,
        what,
        copilot,
        reference,
        ratio: "—".into(),
        target: "report",
        met: "—",
    }
}

/// Rows 6e, 6s and 6c, which say how to read figure 6, where the results have them.
fn fig6_read_rows(node: &[PodsPoint], stats: Option<&StatsCost>, rows: &mut Vec<Row>) {
    let has = |key: fn(&PodsMeasured) -> Option<f64>| {
        node.iter()
            .any(|c| c.measured().is_some_and(|m| key(m).is_some()))
    };
    if has(|m| m.above_empty_ns_per_exec) {
        rows.push(report_row(
            "6e",
            "figure 6 less what an empty program reads at the same N (two runs per exec): copilot's own work, without the statistics' clock (row 6c)".into(),
            curve_text(node, |m| m.above_empty_ns_per_exec),
            format!(
                "empty program per run: {}",
                curve_text(node, |m| m.empty_prog_ns_per_run)
            ),
        ));
    }
    if has(|m| m.session_added_ns_per_exec) {
        rows.push(report_row(
            "6s",
            "figure 6 for execs in a login session (`user.slice/user-0.slice/x.scope`, level 3, as deep as a pod's containers: the gate looks up the top cgroup)".into(),
            curve_text(node, |m| m.session_added_ns_per_exec),
            format!(
                "in a service (figure 6): {}",
                curve_text(node, |m| m.added_ns_per_exec)
            ),
        ));
    }
    if let Some(c) = stats {
        rows.push(report_row(
            "6c",
            format!(
                "what the run-time statistics that figures 4 to 6 read add to each program run: an empty program in the kernel's test loop ({} runs), off vs on (median of {})",
                c.runs, c.rounds
            ),
            format!(
                "{} ns a run ({} → {})",
                n(c.stats_ns_per_run),
                n(c.off_ns_per_run),
                n(c.on_ns_per_run)
            ),
            format!(
                "of which they count, as the program's own time: {} ns",
                n(c.counted_ns_per_run)
            ),
        ));
    }
}

/// Figure 11: a whole task in the pod runner, copilot's eBPF watcher beside the
/// `signal` design (uploading on the kubelet's SIGTERM).
fn fig11_rows(v: &Results, rows: &mut Vec<Row>) {
    let fig = &v.figures.pod;
    let failed = err(fig);
    let task = done(fig);
    for sh in [
        task.and_then(|t| t.small.as_ref()),
        task.and_then(|t| t.big.as_ref()),
    ] {
        let label = match sh.map(|s| s.bytes) {
            Some(b) if b > 0 => format!("a {:.0} MiB output", b as f64 / f64::from(1 << 20)),
            _ => "a small task".into(),
        };
        type Pick = fn(&PodShape) -> (Summary, Summary, Option<f64>);
        let rows_of: [(&str, Pick, &'static str); 2] = [
            (
                "main exit → the sidecar's status file lands (just after outputs.pb)",
                |s| {
                    (
                        s.ebpf.exit_to_outputs_ms,
                        s.signal.exit_to_outputs_ms,
                        s.exit_to_outputs_ms_signal_over_ebpf,
                    )
                },
                "≥ 2× faster",
            ),
            (
                "main exit → pod done",
                |s| {
                    (
                        s.ebpf.exit_to_pod_done_ms,
                        s.signal.exit_to_pod_done_ms,
                        s.exit_to_pod_done_ms_signal_over_ebpf,
                    )
                },
                "report",
            ),
        ];
        for (what, pick, target) in rows_of {
            let picked = sh.map(pick);
            let (e, s, x) = (
                picked.map(|p| p.0),
                picked.map(|p| p.1),
                picked.and_then(|p| p.2),
            );
            rows.push(Row {
                fig: "11",
                what: format!("pod runner (1 s relist), {what}, {label} (ms)"),
                copilot: failed.clone().unwrap_or_else(|| {
                    format!(
                        "p50 {} (n={})",
                        n(e.and_then(|e| e.p50)),
                        raw(e.map(|e| e.n))
                    )
                }),
                reference: format!("signal design p50 {}", n(s.and_then(|s| s.p50))),
                ratio: x.map_or("—".into(), |x| format!("{x:.2}×")),
                target,
                met: if target == "report" {
                    "—"
                } else {
                    met(x.map(|x| x >= 2.0))
                },
            });
        }
    }
}

/// Replaces the text between the bench markers, or appends the section.
pub fn update_readme(path: &Path, table: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = splice(&old, table);
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

fn splice(old: &str, table: &str) -> String {
    let body = format!("{BEGIN}\n{table}{END}");
    if let (Some(b), Some(e)) = (old.find(BEGIN), old.find(END))
        && b < e
    {
        return format!("{}{body}{}", &old[..b], &old[e + END.len()..]);
    }
    let mut s = old.to_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str("## Benchmarks\n\n`cargo xtask bench` (full mode; `--quick` for CI) measures each figure of issue 5 \
                beside its reference in the same run.\n\n");
    s.push_str(&body);
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_appends_then_replaces_only_between_markers() {
        let once = splice("# copilot\n\nintro\n", "T1\n");
        assert!(once.starts_with("# copilot\n\nintro\n\n## Benchmarks"));
        assert!(once.contains("<!-- bench:begin -->\nT1\n<!-- bench:end -->\n"));
        let twice = splice(&format!("{once}after\n"), "T2\n");
        assert!(twice.contains("<!-- bench:begin -->\nT2\n<!-- bench:end -->\nafter\n"));
        assert!(!twice.contains("T1"));
        assert_eq!(twice.matches("## Benchmarks").count(), 1);
    }

    #[test]
    fn renders_failures_and_missing_figures() {
        let v = serde_json::json!({
            "mode": "quick",
            "machine": {"cpu": "X", "cores": 2, "kernel": "6.18", "memory_gib": 1.0},
            "figures": {"1_exit_latency": {"error": "boom"}},
        });
        let t = markdown(&serde_json::from_value(v).expect("a results file"));
        assert!(t.contains("FAILED: boom"));
        assert!(t.contains("| 4 |"));
    }
}
