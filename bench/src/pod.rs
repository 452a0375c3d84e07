//! Figure 11: a whole task run as a pod by the pod runner (`deploy/pod.yaml`, the
//! kubelet's 1 s relist), timed from main's exit to outputs.pb in the store and to the
//! pod's end. copilot's eBPF watcher beside the Go binary's `signal` design: the same
//! copilot with `--start-watcher-type=signal --exit-watcher-type=signal`, which uploads
//! when the kubelet's SIGTERM comes, after the relist that noticed main's exit.
//!
//! Main's exit is the wall-clock time its last command (`exit_stamp`) printed; the
//! upload's end is the time of the uploader's `outputs written` log line.
use std::path::Path;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bench_results::{PodDesign, PodShape, PodTask};
use copilot::{
    literals::make,
    proto::core::{TypedInterface, Variable, VariableMap},
};
use integration_test::{
    PodStatus, RunningPod,
    task_pod::{TestNode, UPLOADER, deploy_pod, init_container_mut},
};
use prost::Message as _;

use crate::util::summary;

/// One task shape: main's script and the uploader's interface.
struct Shape {
    name: &'static str,
    script: String,
    interface: Option<String>,
}

fn shapes(big_bytes: usize) -> [Shape; 2] {
    let blob = TypedInterface {
        inputs: None,
        outputs: Some(VariableMap {
            variables: [(
                "data".to_string(),
                Variable {
                    r#type: Some(make::blob_literal_type("", false)),
                    ..Variable::default()
                },
            )]
            .into(),
        }),
    };
    [
        Shape {
            name: "small",
            script: "echo $(( $(cat /var/flyte/inputs/n) * 6 )) > /var/flyte/outputs/answer; \
                     exec exit_stamp"
                .into(),
            interface: None,
        },
        Shape {
            name: "big",
            script: format!(
                "head -c {big_bytes} /dev/zero > /var/flyte/outputs/data; exec exit_stamp"
            ),
            interface: Some(base64::engine::general_purpose::STANDARD.encode(blob.encode_to_vec())),
        },
    ]
}

/// Both designs, each shape, `runs` times.
pub fn run(copilot: &Path, runs: usize, big_bytes: usize) -> anyhow::Result<PodTask> {
    let mut out = PodTask {
        runs,
        ..PodTask::default()
    };
    for shape in shapes(big_bytes) {
        let design = |signal: bool| -> anyhow::Result<PodDesign> {
            let mut to_outputs = Vec::new();
            let mut to_done = Vec::new();
            for _ in 0..runs {
                let (outputs, done) = one(copilot, &shape, signal).with_context(|| {
                    let design = if signal { "signal" } else { "ebpf" };
                    format!("{} task, {design} design", shape.name)
                })?;
                to_outputs.push(outputs);
                to_done.push(done);
            }
            Ok(PodDesign {
                exit_to_outputs_ms: summary(&to_outputs),
                exit_to_pod_done_ms: summary(&to_done),
            })
        };
        let (ebpf, signal) = (design(false)?, design(true)?);
        let over = |p50: fn(&PodDesign) -> Option<f64>| Some(p50(&signal)? / p50(&ebpf)?);
        let row = PodShape {
            bytes: if shape.name == "big" {
                big_bytes as u64
            } else {
                0
            },
            exit_to_outputs_ms_signal_over_ebpf: over(|d| d.exit_to_outputs_ms.p50),
            exit_to_pod_done_ms_signal_over_ebpf: over(|d| d.exit_to_pod_done_ms.p50),
            ebpf,
            signal,
        };
        if shape.name == "big" {
            out.big = Some(row);
        } else {
            out.small = Some(row);
        }
    }
    Ok(out)
}

/// One pod: (main exit → outputs.pb, main exit → pod done), in ms.
fn one(copilot: &Path, shape: &Shape, signal: bool) -> anyhow::Result<(f64, f64)> {
    let node = TestNode::new();
    let mut pod = deploy_pod(&shape.script);
    let up = init_container_mut(&mut pod, UPLOADER);
    let args = up.args.get_or_insert_default();
    if let Some(iface) = &shape.interface {
        for arg in args.iter_mut() {
            if arg.starts_with("--interface=") {
                *arg = format!("--interface={iface}");
            }
        }
    }
    if signal {
        args.extend(
            ["--start-watcher-type=signal", "--exit-watcher-type=signal"].map(String::from),
        );
    }
    let mut config = node.prepare(pod, 1);
    config.copilot = Some(copilot.to_path_buf());
    let status = RunningPod::start(config).wait();
    times(&status)
}

fn times(status: &PodStatus) -> anyhow::Result<(f64, f64)> {
    let main = status.container("main");
    let exit_ns: i128 = main
        .logs
        .lines()
        .find_map(|l| l.strip_prefix("exit_ns "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("main printed no exit_ns: {:?}", main.logs))?;
    let up = &status.container(UPLOADER).logs;
    let Some(line) = up.lines().find(|l| l.contains("outputs written")) else {
        bail!("the uploader wrote no outputs: {up}");
    };
    let written = line
        .split_whitespace()
        .next()
        .and_then(rfc3339_ns)
        .with_context(|| format!("no timestamp in {line:?}"))?;
    let done = status
        .ended_at
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock")?
        .as_nanos() as i128;
    let ms = |ns: i128| ns as f64 / 1e6;
    Ok((ms(written - exit_ns), ms(done - exit_ns)))
}

/// `2026-12-05T10:28:14.598480Z` (UTC, as copilot's log lines print it) in ns since
/// the epoch.
fn rfc3339_ns(text: &str) -> Option<i128> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let frac_ns: i64 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar.
    let (y, m) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + day - 719_469;
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(frac_ns))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_timestamps_are_epoch_nanoseconds() {
        // `date -u -d 2026-12-05T10:28:14Z +%s` = 1796466494.
        assert_eq!(
            super::rfc3339_ns("2026-12-05T10:28:14.598480Z"),
            Some(1_796_466_494_598_480_000)
        );
        assert_eq!(super::rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            super::rfc3339_ns("2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500_000_000)
        );
        assert_eq!(super::rfc3339_ns("garbage"), None);
    }
}
