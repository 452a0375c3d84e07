//! The results file of `cargo xtask bench` (`target/bench/results.json`), as serde types:
//! the measuring binary `copilot-bench` writes a [`Results`], xtask's report reads it back.
//!
//! The JSON is the one these types replaced, key for key (`"1_exit_latency"`, …): a
//! results file from before them still renders. A number that could not be computed (a
//! ratio with a zero divisor) is `null`, which is why most numbers are `Option<f64>`;
//! a field missing from an older file reads as its default.
//! This crate depends on serde only, so xtask reads it without linking copilot.

use serde::{Deserialize, Serialize};

/// One run of the suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub mode: Mode,
    pub machine: Machine,
    /// `/proc/loadavg`'s first three fields before and after the run.
    #[serde(default)]
    pub load_before: String,
    #[serde(default)]
    pub load_after: String,
    #[serde(default)]
    pub duration_s: f64,
    pub figures: Figures,
    /// The keys of the figures that failed.
    #[serde(default)]
    pub failed: Vec<String>,
}

/// `--quick` (small counts, for CI) or the full suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Quick,
    Full,
}

/// The machine the suite ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
}

/// A figure that was measured, or why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Figure<T> {
    Failed { error: String },
    Done(T),
}

impl<T> Figure<T> {
    /// The failure, if it failed.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Failed { error } => Some(error),
            Self::Done(_) => None,
        }
    }
    /// The figure, if it was measured.
    pub fn done(&self) -> Option<&T> {
        match self {
            Self::Done(t) => Some(t),
            Self::Failed { .. } => None,
        }
    }
}

/// Every figure; one left out by `--only` is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Figures {
    #[serde(rename = "4_outside", default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<Figure<Outside>>,
    #[serde(
        rename = "1_exit_latency",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exit_latency: Option<Figure<ExitLatency>>,
    #[serde(
        rename = "2_3_8_sidecar",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sidecar: Option<Figure<SidecarRuns>>,
    #[serde(rename = "7_idle", default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Figure<Idle>>,
    #[serde(
        rename = "10_storm_normal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub storm_normal: Option<Figure<Storm>>,
    #[serde(
        rename = "10_storm_tiny",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub storm_tiny: Option<Figure<Storm>>,
    #[serde(rename = "6_pods", default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Figure<Pods>>,
    #[serde(
        rename = "9_transfers",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub transfers: Option<Figure<Transfers>>,
    #[serde(rename = "11_pod", default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Figure<PodTask>>,
}

/// n, p50, p99, min, max and mean of some samples (any unit); only `n` (0) when
/// there were none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub n: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
}

impl Summary {
    /// The summary of `samples`.
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
            s[i.min(s.len() - 1)]
        };
        Self {
            n: s.len(),
            p50: Some(pct(50.0)),
            p99: Some(pct(99.0)),
            min: Some(s[0]),
            max: Some(s[s.len() - 1]),
            mean: Some(s.iter().sum::<f64>() / s.len() as f64),
        }
    }
}

/// What the kernel accounts to a process over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub cpu_ms: Option<f64>,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub switches: u64,
    pub rss_mib: Option<f64>,
    pub rss_anon_mib: Option<f64>,
    pub rss_file_mib: Option<f64>,
}

/// Figure 1: kernel timestamp of a container's exit → copilot's `exited` decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExitLatency {
    pub latency_us: Summary,
    pub exits: usize,
    pub decided_from_cgroup_instead: usize,
    /// A few `copilot trace` lines of exits decided from the cgroup, as printed.
    pub cgroup_decided_examples: Vec<serde_json::Value>,
}

/// Figures 2, 3 and 8: whole sidecar runs, beside the polling designs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SidecarRuns {
    pub runs: usize,
    pub startup_ms: Summary,
    pub exit_to_outputs_ms: Summary,
    pub pollers: Pollers,
}

/// The polling designs that ran beside the sidecar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pollers {
    /// flyte-copilot's `/proc` scanner: every 2 s, two empty cycles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_2s: Option<PollingDesign>,
    /// A 1 s stat poller of `_SUCCESS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_1s: Option<PollingDesign>,
}

/// One polling design's detection latency and cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PollingDesign {
    pub latency_ms: Summary,
    pub cpu_ms_per_minute: Option<f64>,
}

/// A BPF program's run statistics over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgStats {
    pub mean_ns: Option<f64>,
    pub runs: u64,
    pub run_time_ns: u64,
}

/// Figure 4: what copilot's programs cost a process outside every pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outside {
    pub execs: usize,
    pub execs_per_s: Option<f64>,
    pub copilot_exec: ProgStats,
    pub copilot_exit: ProgStats,
    pub copilot_mean_ns: Option<f64>,
    pub ref_empty: ProgStats,
    pub ref_cgroup_filter: ProgStats,
    pub ref_cgroup_filter_rodata: ProgStats,
    pub copilot_attached_first: AttachOrder,
    pub refs_attached_first: AttachOrder,
}

/// One half of figure 4, with one attach order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttachOrder {
    pub copilot_mean_ns: Option<f64>,
    pub ref_cgroup_filter_ns: Option<f64>,
}

/// Figures 5 and 10: an event storm in the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Storm {
    /// `None`: the default ring buffer.
    pub ring_bytes: Option<u32>,
    pub consumer_stalled_ms: u64,
    pub spawners: usize,
    pub execs_started: usize,
    pub exec_lines: usize,
    pub exit_lines: usize,
    pub lost: u64,
    pub execs_per_s: Option<f64>,
    pub main_exit: MainExit,
    pub stop_after_sigterm_ms: Option<f64>,
    /// The tracer's own accounting over the storm.
    pub consumer: Usage,
    pub kernel: StormKernel,
}

/// The main container's `exited` line in a storm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MainExit {
    pub exit_code: Option<u8>,
    /// Where the exit was learnt (`event`, `snapshot`, `cgroup`); `None`: never reported.
    pub source: Option<String>,
}

/// The kernel's side of a storm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StormKernel {
    pub exec_mean_ns: Option<f64>,
    pub exit_mean_ns: Option<f64>,
    pub all_runs_mean_ns: Option<f64>,
    pub outside_runs: u64,
    pub inside_mean_ns: Option<f64>,
    /// The reference programs on the same events (normal ring only).
    pub reference_inside_ns: Option<StormReference>,
}

/// The reference programs' ns per in-pod event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StormReference {
    pub filter_only_ns: Option<f64>,
    pub reserve_submit_no_wakeup_ns: Option<f64>,
    pub reserve_fill_submit_no_wakeup_ns: Option<f64>,
}

/// Figure 7: an idle sidecar beside the 2 s `/proc` poller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Idle {
    pub window_s: f64,
    pub sidecar: Usage,
    pub sidecar_since_start: Usage,
    pub poller_proc_2s: Usage,
}

/// Figure 6: N pods on the node, each with its own copilot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pods {
    pub execs: usize,
    pub bare_execs_per_s: Option<f64>,
    /// copilot's node-wide program set.
    pub node_set: Vec<PodsPoint>,
    /// One program set per pod (the design before it).
    pub set_per_pod: Vec<PodsPoint>,
    /// What the run-time statistics add to each run they measure (figure 6c).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_cost: Option<StatsCost>,
}

/// Figure 6c: an empty program run in the kernel's test loop with the run-time
/// statistics off and on (medians of `rounds` windows of `runs` runs each).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsCost {
    pub runs: u32,
    pub rounds: usize,
    pub off_ns_per_run: Option<f64>,
    pub on_ns_per_run: Option<f64>,
    /// on − off: all the statistics add to a run.
    pub stats_ns_per_run: Option<f64>,
    /// What the statistics themselves count for the program, a run.
    pub counted_ns_per_run: Option<f64>,
}

/// One pod count of figure 6.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PodsPoint {
    /// Not all the tracers started; the curve stops here.
    Failed {
        pods: usize,
        #[serde(default)]
        started: usize,
        error: String,
    },
    Measured(PodsMeasured),
}

/// A measured pod count of figure 6 (medians of its windows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodsMeasured {
    pub pods: usize,
    pub programs: usize,
    pub node_execs: u64,
    pub added_ns_per_exec: Option<f64>,
    pub added_ns_per_exec_rounds: Vec<Option<f64>>,
    pub empty_prog_ns_per_run: Option<f64>,
    pub above_empty_ns_per_exec: Option<f64>,
    /// As `added_ns_per_exec`, for execs in a login session (level 3) instead of
    /// a service (level 2); node set only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_added_ns_per_exec: Option<f64>,
    pub program_runs: u64,
    pub execs_per_s: Option<f64>,
    pub fork_exec_slowdown: Option<f64>,
    pub start_all_s: Option<f64>,
    pub ring_kib_mean: Option<f64>,
    pub tracer_anon_kib_mean: Option<f64>,
    pub per_pod_kib: Option<f64>,
}

impl PodsPoint {
    pub fn pods(&self) -> usize {
        match self {
            Self::Failed { pods, .. } => *pods,
            Self::Measured(m) => m.pods,
        }
    }
    pub fn measured(&self) -> Option<&PodsMeasured> {
        match self {
            Self::Measured(m) => Some(m),
            Self::Failed { .. } => None,
        }
    }
}

/// Figure 9: transfers, one big file and many small ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Transfers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub big: Option<TransferShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small: Option<TransferShape>,
}

/// One shape of figure 9 on each store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransferShape {
    pub bytes: u64,
    pub files: u64,
    pub s3: Option<RemoteTransfer>,
    pub azure: Option<RemoteTransfer>,
    pub local: LocalTransfer,
}

/// Up and down, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    pub const BOTH: [Self; 2] = [Self::Upload, Self::Download];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }
}

/// copilot and rclone against one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteTransfer {
    pub copilot_upload_s: Option<f64>,
    pub copilot_download_s: Option<f64>,
    pub rclone_upload_s: Option<f64>,
    pub rclone_download_s: Option<f64>,
    pub upload_ratio_vs_rclone: Option<f64>,
    pub download_ratio_vs_rclone: Option<f64>,
    pub copilot_upload_mib_s: Option<f64>,
    pub copilot_download_mib_s: Option<f64>,
}

impl RemoteTransfer {
    /// copilot's seconds, rclone's seconds, and rclone's ÷ copilot's.
    pub fn get(&self, d: Direction) -> (Option<f64>, Option<f64>, Option<f64>) {
        match d {
            Direction::Upload => (
                self.copilot_upload_s,
                self.rclone_upload_s,
                self.upload_ratio_vs_rclone,
            ),
            Direction::Download => (
                self.copilot_download_s,
                self.rclone_download_s,
                self.download_ratio_vs_rclone,
            ),
        }
    }
}

/// copilot's local-file store beside `cp -r`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalTransfer {
    pub copilot_upload_s: Option<f64>,
    pub copilot_download_s: Option<f64>,
    pub cp_r_s: Option<f64>,
    pub upload_ratio_vs_cp: Option<f64>,
    pub download_ratio_vs_cp: Option<f64>,
}

impl LocalTransfer {
    /// copilot's seconds and `cp -r`'s ÷ copilot's.
    pub fn get(&self, d: Direction) -> (Option<f64>, Option<f64>) {
        match d {
            Direction::Upload => (self.copilot_upload_s, self.upload_ratio_vs_cp),
            Direction::Download => (self.copilot_download_s, self.download_ratio_vs_cp),
        }
    }
}

/// Figure 11: a whole task in the pod runner, both exit designs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodTask {
    pub runs: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small: Option<PodShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub big: Option<PodShape>,
}

/// One task shape of figure 11.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodShape {
    /// The output's size (0: the small task).
    pub bytes: u64,
    /// copilot's eBPF watcher.
    pub ebpf: PodDesign,
    /// Uploading on the kubelet's SIGTERM.
    pub signal: PodDesign,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_to_outputs_ms_signal_over_ebpf: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_to_pod_done_ms_signal_over_ebpf: Option<f64>,
}

/// One design's timings in figure 11, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodDesign {
    pub exit_to_outputs_ms: Summary,
    pub exit_to_pod_done_ms: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_keep_their_keys_and_failures_read_back() {
        let r = Results {
            mode: Mode::Quick,
            machine: Machine {
                cpu: "X".into(),
                cores: 2,
                kernel: "6.18".into(),
                memory_gib: 1.0,
            },
            load_before: "0.1 0.2 0.3".into(),
            load_after: "0.1 0.2 0.3".into(),
            duration_s: 1.5,
            figures: Figures {
                exit_latency: Some(Figure::Failed {
                    error: "boom".into(),
                }),
                idle: Some(Figure::Done(Idle::default())),
                ..Figures::default()
            },
            failed: vec!["1_exit_latency".into()],
        };
        let v = serde_json::to_value(&r).expect("encodes");
        assert_eq!(v["mode"], "quick");
        assert_eq!(v["figures"]["1_exit_latency"]["error"], "boom");
        assert_eq!(v["figures"]["7_idle"]["window_s"], 0.0);
        assert!(v["figures"].get("6_pods").is_none());
        let back: Results = serde_json::from_value(v).expect("decodes");
        assert_eq!(back, r);
    }

    #[test]
    fn summaries_and_not_a_number() {
        let empty = serde_json::to_string(&Summary::of(&[])).expect("encodes");
        assert_eq!(empty, r#"{"n":0}"#);
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.n, s.p50, s.max), (3, Some(2.0), Some(3.0)));
        // NaN is written as null, and null reads back as None.
        let r = RemoteTransfer {
            upload_ratio_vs_rclone: Some(f64::NAN),
            ..RemoteTransfer::default()
        };
        let back: RemoteTransfer =
            serde_json::from_str(&serde_json::to_string(&r).expect("encodes")).expect("decodes");
        assert_eq!(back.upload_ratio_vs_rclone, None);
    }

    #[test]
    fn a_failed_pod_count_reads_as_failed() {
        let p: PodsPoint = serde_json::from_str(r#"{"pods":250,"started":3,"error":"no memory"}"#)
            .expect("decodes");
        assert_eq!(p.pods(), 250);
        assert!(p.measured().is_none());
    }
}
