//! Figure 11: a whole task run as a pod by the pod runner (`deploy/pod.yaml`, the
//! kubelet's 1 s relist), timed from main's exit to outputs.pb in the store and to the
//! pod's end. copilot's eBPF watcher beside the Go binary's `signal` design: the same
//! copilot with `--start-watcher-type=signal --exit-watcher-type=signal`, which uploads
//! when the kubelet's SIGTERM comes, after the relist that noticed main's exit.
//!
//! Main's exit is the wall-clock time its last command (`exit_stamp`) printed; the
//! upload's end is when the uploader's status file (`--status-file`, written once
//! outputs.pb is durable) lands on the node ([`crate::arrival`]), and the file says
//! that outputs were written.
use std::path::Path;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bench_results::{PodDesign, PodShape, PodTask};
use copilot::sidecar::status::Outcome;
use copilot::{
    literals::make,
    proto::core::{TypedInterface, Variable, VariableMap},
};
use integration_test::{
    PodStatus, RunningPod,
    task_pod::{TestNode, UPLOADER, deploy_pod, init_container_mut},
};
use prost::Message as _;

use crate::{arrival::Arrival, util::summary};

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
    let status_file = node.status_path();
    let arrival = Arrival::watch(status_file.parent().context("the status folder")?)?;
    let status = RunningPod::start(config).wait();
    let landed = arrival.finish()?;
    let up = &status.container(UPLOADER).logs;
    let result = node
        .status()
        .with_context(|| format!("the uploader wrote no status file: {up}"))?;
    if result.outcome != Outcome::Outputs {
        bail!("the uploader wrote no outputs ({result:?}): {up}");
    }
    let landed = landed.with_context(|| format!("no status file was seen landing: {up}"))?;
    times(&status, landed)
}

/// (main exit → `written`, main exit → pod done), in ms.
fn times(status: &PodStatus, written: std::time::SystemTime) -> anyhow::Result<(f64, f64)> {
    let main = status.container("main");
    let exit_ns: i128 = main
        .logs
        .lines()
        .find_map(|l| l.strip_prefix("exit_ns "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("main printed no exit_ns: {:?}", main.logs))?;
    let epoch_ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .context("clock")
    };
    let (written, done) = (epoch_ns(written)?, epoch_ns(status.ended_at)?);
    let ms = |ns: i128| ns as f64 / 1e6;
    Ok((ms(written - exit_ns), ms(done - exit_ns)))
}
