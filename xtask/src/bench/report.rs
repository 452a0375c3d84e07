//! The results table (markdown, printed and kept in README.md) from results.json.
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// A number with a sensible number of digits, or `—`.
fn n(v: &Value) -> String {
    match f(v) {
        None => "—".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
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
pub fn markdown(v: &Value) -> String {
    let g = &v["figures"];
    let mut rows: Vec<Row> = Vec::new();
    let err = |key: &str| g[key]["error"].as_str().map(|e| format!("FAILED: {e}"));

    // 1 and 3 share the copilot latency.
    let lat = &g["1_exit_latency"]["latency_us"];
    let p50_us = f(&lat["p50"]);
    rows.push(Row {
        fig: "1",
        what: "exit → lifecycle \"exited\" (kernel ts → decision)".into(),
        copilot: err("1_exit_latency").unwrap_or_else(|| {
            format!(
                "p50 {} µs, p99 {} µs (n={})",
                n(&lat["p50"]),
                n(&lat["p99"]),
                lat["n"]
            )
        }),
        reference: "—".into(),
        ratio: "—".into(),
        target: "p50 ≤ 100 µs, p99 ≤ 1 ms",
        met: met(p50_us
            .zip(f(&lat["p99"]))
            .map(|(a, b)| a <= 100.0 && b <= 1000.0)),
    });
    let sc = &g["2_3_8_sidecar"];
    let out = &sc["exit_to_outputs_ms"];
    rows.push(Row {
        fig: "2",
        what: "exit → outputs.pb written (local store, 3 values + 1 blob)".into(),
        copilot: err("2_3_8_sidecar").unwrap_or_else(|| {
            format!(
                "p50 {} ms, p99 {} ms (n={})",
                n(&out["p50"]),
                n(&out["p99"]),
                out["n"]
            )
        }),
        reference: "—".into(),
        ratio: "—".into(),
        target: "p50 ≤ 20 ms",
        met: met(f(&out["p50"]).map(|x| x <= 20.0)),
    });
    for (key, label) in [
        ("proc_2s", "Go /proc scanner, 2 s × 2 empty cycles"),
        ("file_1s", "1 s stat poller of _SUCCESS"),
    ] {
        let p = &sc["pollers"][key];
        let pl = &p["latency_ms"];
        let r = f(&pl["p50"]).map(|ms| ms * 1000.0);
        rows.push(Row {
            fig: "3",
            what: format!("detection latency vs {label}"),
            copilot: format!("p50 {} µs (fig. 1)", n(&lat["p50"])),
            reference: format!(
                "p50 {} ms, p99 {} ms (n={}); CPU {} ms/min",
                n(&pl["p50"]),
                n(&pl["p99"]),
                pl["n"],
                n(&p["cpu_ms_per_minute"])
            ),
            ratio: ratio(r, p50_us),
            target: "≥ 1,000× faster",
            met: met(r.zip(p50_us).map(|(r, c)| r / c >= 1000.0)),
        });
    }
    let o = &g["4_outside"];
    rows.push(Row {
        fig: "4",
        what: format!(
            "kernel ns per exec/exit outside the pod ({} execs)",
            o["execs"]
        ),
        copilot: err("4_outside").unwrap_or_else(|| {
            format!(
                "{} ns (exec {}, exit {})",
                n(&o["copilot_mean_ns"]),
                n(&o["copilot_exec"]["mean_ns"]),
                n(&o["copilot_exit"]["mean_ns"])
            )
        }),
        reference: format!(
            "empty prog {} ns; cgroup-id check only {} ns ({} ns with the ids read from .rodata); \
             attached first/after: copilot {}/{}, check {}/{}",
            n(&o["ref_empty"]["mean_ns"]),
            n(&o["ref_cgroup_filter"]["mean_ns"]),
            n(&o["ref_cgroup_filter_rodata"]["mean_ns"]),
            n(&o["copilot_attached_first"]["copilot_mean_ns"]),
            n(&o["refs_attached_first"]["copilot_mean_ns"]),
            n(&o["refs_attached_first"]["ref_cgroup_filter_ns"]),
            n(&o["copilot_attached_first"]["ref_cgroup_filter_ns"])
        ),
        ratio: ratio(
            f(&o["copilot_mean_ns"]),
            f(&o["ref_cgroup_filter"]["mean_ns"]),
        ),
        target: "≤ 150 ns mean",
        met: met(f(&o["copilot_mean_ns"]).map(|x| x <= 150.0)),
    });
    let s = &g["10_storm_normal"];
    let k = &s["kernel"];
    rows.push(Row {
        fig: "5",
        what: format!(
            "kernel ns per event inside the pod ({} spawners, {} execs)",
            s["spawners"], s["exec_lines"]
        ),
        copilot: err("10_storm_normal").unwrap_or_else(|| {
            format!(
                "{} ns (exec {}, exit {}; raw mean {} incl. {} outside runs)",
                n(&k["inside_mean_ns"]),
                n(&k["exec_mean_ns"]),
                n(&k["exit_mean_ns"]),
                n(&k["all_runs_mean_ns"]),
                k["outside_runs"]
            )
        }),
        reference: {
            let r = &k["reference_inside_ns"];
            format!(
                "same events: pod check {} ns; + reserve/submit (no wake-up) {}; + zero, fill, helpers {}; consumer {} voluntary switches",
                n(&r["filter_only_ns"]),
                n(&r["reserve_submit_no_wakeup_ns"]),
                n(&r["reserve_fill_submit_no_wakeup_ns"]),
                s["consumer"]["voluntary_switches"]
            )
        },
        ratio: ratio(
            f(&k["inside_mean_ns"]),
            f(&k["reference_inside_ns"]["reserve_fill_submit_no_wakeup_ns"]),
        ),
        target: "≤ 1 µs mean",
        met: met(f(&k["inside_mean_ns"]).map(|x| x <= 1000.0)),
    });
    fig6_rows(g, &mut rows);
    let i = &g["7_idle"];
    let side = &i["sidecar"];
    let poll = &i["poller_proc_2s"];
    rows.push(Row {
        fig: "7",
        what: format!(
            "idle sidecar, {} s waiting on a running main",
            n(&i["window_s"])
        ),
        copilot: err("7_idle").unwrap_or_else(|| {
            format!(
                "CPU {} ms, {} switches, RSS {} MiB (anon {})",
                n(&side["cpu_ms"]),
                side["switches"],
                n(&side["rss_mib"]),
                n(&side["rss_anon_mib"])
            )
        }),
        reference: format!(
            "/proc poller: CPU {} ms, {} switches, RSS {} MiB",
            n(&poll["cpu_ms"]),
            poll["switches"],
            n(&poll["rss_mib"])
        ),
        ratio: "—".into(),
        target: "CPU ≤ 5 ms, ≤ 20 switches, RSS ≤ 12 MiB",
        met: met((|| {
            Some(
                f(&side["cpu_ms"])? <= 5.0
                    && side["switches"].as_u64()? <= 20
                    && f(&side["rss_mib"])? <= 12.0,
            )
        })()),
    });
    let st = &sc["startup_ms"];
    rows.push(Row {
        fig: "8",
        what: "start-up: sidecar exec → ready file".into(),
        copilot: err("2_3_8_sidecar").unwrap_or_else(|| {
            format!(
                "p50 {} ms, p99 {} ms (n={})",
                n(&st["p50"]),
                n(&st["p99"]),
                st["n"]
            )
        }),
        reference: "—".into(),
        ratio: "—".into(),
        target: "p50 ≤ 100 ms",
        met: met(f(&st["p50"]).map(|x| x <= 100.0)),
    });
    let t = &g["9_transfers"];
    if let Some(e) = err("9_transfers") {
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
    for shape in ["big", "small"] {
        let sh = &t[shape];
        if sh.is_null() {
            continue;
        }
        let mib = f(&sh["bytes"]).unwrap_or(0.0) / (1u64 << 20) as f64;
        let label = if shape == "big" {
            format!("1 × {mib:.0} MiB")
        } else {
            format!("{} × 4 KiB", sh["files"])
        };
        for (key, server) in [("s3", "S3 (moto)"), ("azure", "Azure Blob (azurite)")] {
            for dir in ["upload", "download"] {
                let c = &sh[key][format!("copilot_{dir}_s")];
                if c.is_null() {
                    continue;
                }
                let r = &sh[key][format!("rclone_{dir}_s")];
                let x = f(&sh[key][format!("{dir}_ratio_vs_rclone")]);
                rows.push(Row {
                    fig: "9",
                    what: format!("{server} {dir}, {label}"),
                    copilot: format!("{} s", n(c)),
                    reference: format!("rclone copy {} s", n(r)),
                    ratio: x.map_or("—".into(), |x| format!("{x:.2}×")),
                    target: "≥ 1.0× rclone",
                    met: met(x.map(|x| x >= 1.0)),
                });
            }
        }
        for dir in ["upload", "download"] {
            let c = &sh["local"][format!("copilot_{dir}_s")];
            let x = f(&sh["local"][format!("{dir}_ratio_vs_cp")]);
            rows.push(Row {
                fig: "9",
                what: format!("local store {dir}, {label}"),
                copilot: format!("{} s", n(c)),
                reference: format!("cp -r {} s", n(&sh["local"]["cp_r_s"])),
                ratio: x.map_or("—".into(), |x| format!("{x:.2}×")),
                target: "report",
                met: "—",
            });
        }
    }
    let tiny = &g["10_storm_tiny"];
    rows.push(Row {
        fig: "10",
        what: "event storm, normal ring (1 MiB)".into(),
        copilot: err("10_storm_normal").unwrap_or_else(|| {
            format!(
                "{} execs at {}/s: {} lost, main exit code {} ({})",
                s["exec_lines"],
                n(&s["execs_per_s"]),
                s["lost"],
                s["main_exit"]["exit_code"],
                s["main_exit"]["source"].as_str().unwrap_or("?")
            )
        }),
        reference: "—".into(),
        ratio: "—".into(),
        target: "zero lost",
        met: met(s["lost"].as_u64().map(|l| l == 0)),
    });
    rows.push(Row {
        fig: "10",
        what: format!(
            "event storm, tiny ring (4 KiB), consumer stalled {} ms",
            tiny["consumer_stalled_ms"]
        ),
        copilot: err("10_storm_tiny").unwrap_or_else(|| {
            format!(
                "{} lost (counted), main exit reported ({}, code {}), stopped {} ms after SIGTERM",
                tiny["lost"],
                tiny["main_exit"]["source"].as_str().unwrap_or("?"),
                tiny["main_exit"]["exit_code"],
                n(&tiny["stop_after_sigterm_ms"])
            )
        }),
        reference: "—".into(),
        ratio: "—".into(),
        target: "drops counted, healed, main exit reported, no hang",
        met: met(tiny["lost"]
            .as_u64()
            .map(|l| l > 0 && tiny["main_exit"]["source"].is_string())),
    });

    fig11_rows(g, &mut rows);

    let m = &v["machine"];
    let mut s = String::new();
    s.push_str(&format!(
        "Measured by `cargo xtask bench{}` ({} mode, {} s) on: {}, {} cores, {:.1} GiB, Linux {}; \
         load average {} before, {} after (1, 5, 15 min). Ratios: reference ÷ copilot \
         (above 1 = copilot faster); figures 4 and 5: copilot ÷ the closest reference program \
         (the cgroup-id check; reserve + fill + submit).\n\n",
        if v["mode"] == "quick" { " --quick" } else { "" },
        v["mode"].as_str().unwrap_or("?"),
        n(&v["duration_s"]),
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        f(&m["memory_gib"]).unwrap_or(0.0),
        m["kernel"].as_str().unwrap_or("?"),
        v["load_before"].as_str().unwrap_or("?"),
        v["load_after"].as_str().unwrap_or("?"),
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

/// The last point of a figure-6 curve that ran, and the first.
fn ends(curve: &Value) -> (Option<&Value>, Option<&Value>) {
    let ok: Vec<&Value> = curve
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["error"].is_null())
        .collect();
    (ok.first().copied(), ok.last().copied())
}

fn curve_text(curve: &Value, key: &str) -> String {
    curve
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| match c["error"].as_str() {
            Some(e) => format!("N={}: **cannot start** ({e})", c["pods"]),
            None => format!("N={}: {}", c["pods"], n(&c[key])),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Figure 6: the kernel cost curve, the fork+exec wall clock and the memory per pod.
fn fig6_rows(g: &Value, rows: &mut Vec<Row>) {
    let fig = &g["6_pods"];
    let failed = fig["error"].as_str().map(|e| format!("FAILED: {e}"));
    let (node, per_pod) = (&fig["node_set"], &fig["set_per_pod"]);
    let (first, last) = ends(node);
    let (_, last_pp) = ends(per_pod);
    let ns = |c: Option<&Value>| c.and_then(|c| f(&c["added_ns_per_exec"]));
    let all_started = |c: &Value| {
        c.as_array()
            .is_some_and(|a| a.iter().all(|p| p["error"].is_null()))
    };
    rows.push(Row {
        fig: "6",
        what: "kernel ns added per exec outside the pods, N pods each with a copilot (curve: bench/fig6-pods.svg)".into(),
        copilot: failed.clone().unwrap_or_else(|| curve_text(node, "added_ns_per_exec")),
        reference: format!("one set per pod: {}", curve_text(per_pod, "added_ns_per_exec")),
        ratio: ratio(ns(last_pp), ns(last)),
        target: "N=250 ≤ 1.2× N=1 and ≤ 150 ns",
        met: met(ns(first).zip(ns(last)).map(|(a, b)| {
            all_started(node) && last.is_some_and(|c| c["pods"] == 250) && b <= 1.2 * a && b <= 150.0
        })),
    });
    if node
        .as_array()
        .is_some_and(|a| a.iter().any(|c| !c["above_empty_ns_per_exec"].is_null()))
    {
        rows.push(Row {
            fig: "6e",
            what: "figure 6 less what an empty program costs at the same N (two runs per exec): copilot's own work".into(),
            copilot: curve_text(node, "above_empty_ns_per_exec"),
            reference: format!(
                "empty program per run: {}",
                curve_text(node, "empty_prog_ns_per_run")
            ),
            ratio: "—".into(),
            target: "report",
            met: "—",
        });
    }
    let slow = |c: Option<&Value>| c.and_then(|c| f(&c["fork_exec_slowdown"]));
    rows.push(Row {
        fig: "6w",
        what: "fork+exec loop outside the pods, time with N copilots ÷ time with none".into(),
        copilot: failed
            .clone()
            .unwrap_or_else(|| curve_text(node, "fork_exec_slowdown")),
        reference: format!(
            "one set per pod: {}",
            curve_text(per_pod, "fork_exec_slowdown")
        ),
        ratio: ratio(slow(last_pp), slow(last)),
        target: "report",
        met: "—",
    });
    let kib = |c: Option<&Value>, k: &str| c.and_then(|c| f(&c[k]));
    rows.push(Row {
        fig: "6m",
        what: "memory per pod: its ring buffer in the kernel + the tracer's anonymous RSS (KiB)"
            .into(),
        copilot: failed.unwrap_or_else(|| {
            format!(
                "{} (ring {}, RSS anon {}) at N={}",
                n(&last.map_or(Value::Null, |c| c["per_pod_kib"].clone())),
                n(&last.map_or(Value::Null, |c| c["ring_kib_mean"].clone())),
                n(&last.map_or(Value::Null, |c| c["tracer_anon_kib_mean"].clone())),
                last.map_or(Value::Null, |c| c["pods"].clone()),
            )
        }),
        reference: format!(
            "one set per pod: {}",
            n(&last_pp.map_or(Value::Null, |c| c["per_pod_kib"].clone()))
        ),
        ratio: ratio(kib(last_pp, "per_pod_kib"), kib(last, "per_pod_kib")),
        target: "≤ 2 MiB per pod",
        met: met(kib(last, "per_pod_kib").map(|k| k <= 2048.0)),
    });
}

/// Figure 11: a whole task in the pod runner, copilot's eBPF watcher beside the
/// `signal` design (uploading on the kubelet's SIGTERM).
fn fig11_rows(g: &Value, rows: &mut Vec<Row>) {
    let fig = &g["11_pod"];
    let failed = fig["error"].as_str().map(|e| format!("FAILED: {e}"));
    for shape in ["small", "big"] {
        let sh = &fig[shape];
        let label = match f(&sh["bytes"]) {
            Some(b) if b > 0.0 => format!("a {:.0} MiB output", b / f64::from(1 << 20)),
            _ => "a small task".into(),
        };
        for (what, key, target) in [
            (
                "main exit → outputs.pb in the store",
                "exit_to_outputs_ms",
                "≥ 2× faster",
            ),
            ("main exit → pod done", "exit_to_pod_done_ms", "report"),
        ] {
            let (e, s) = (&sh["ebpf"][key], &sh["signal"][key]);
            let x = f(&sh[format!("{key}_signal_over_ebpf")]);
            rows.push(Row {
                fig: "11",
                what: format!("pod runner (1 s relist), {what}, {label} (ms)"),
                copilot: failed
                    .clone()
                    .unwrap_or_else(|| format!("p50 {} (n={})", n(&e["p50"]), e["n"])),
                reference: format!("signal design p50 {}", n(&s["p50"])),
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
        let t = markdown(&v);
        assert!(t.contains("FAILED: boom"));
        assert!(t.contains("| 4 |"));
    }
}
