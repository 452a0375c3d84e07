//! A pod runner (test code, not product): a Kubernetes Pod spec run on runc the way
//! the kubelet runs it, so that copilot meets the pod lifecycle it meets in a cluster.
//!
//! What it follows, and where that behaviour is documented:
//! - **Sandbox.** A `pause` container holds the pod's network, IPC and UTS namespaces;
//!   every container joins them, and has its own PID, mount and cgroup namespaces
//!   (`shareProcessNamespace: true` joins the sandbox's PID namespace instead;
//!   `hostNetwork: true` keeps the host's network). containerd and CRI-O give each
//!   container a private cgroup namespace on cgroup v2.
//! - **Init containers in order** (pod lifecycle docs): each runs to completion before
//!   the next; a failed one fails a `restartPolicy: Never` pod.
//! - **Native sidecars** (KEP-753, GA in 1.33): an init container with
//!   `restartPolicy: Always` starts and, once its startup probe has passed (or at once
//!   without one), lets the next container start. One that exits while a regular
//!   container runs is restarted: at once the first time, then after a back-off of
//!   10 s doubling up to 300 s (the kubelet's `backOffPeriod` and `MaxContainerBackOff`).
//!   Once every regular container has terminated, the sidecars get SIGTERM in the
//!   reverse order of their start, each waited for, then SIGKILL when the grace period
//!   (`terminationGracePeriodSeconds`, 30 s by default) is spent.
//! - **Relist.** The kubelet learns of a container's exit at its next PLEG relist
//!   (`genericPlegRelistPeriod`, 1 s); so does this runner, at [`PodConfig::relist`].
//! - **Deletion.** Regular containers get SIGTERM first, the sidecars once they have
//!   exited, all within the grace period.
//! - **Status.** Each container's exit code, reason (`Completed`, `Error`, `OOMKilled`),
//!   restart count and termination message (`/dev/termination-log`, else with
//!   `FallbackToLogsOnError` the last 80 lines, at most 2 KiB, of a failed container's
//!   log); the phase from the regular containers only. Besides, each container's peak
//!   memory use (from its memory cgroup), which a pod status does not show.
//!
//! Images: `busybox` images run the busybox [`rootfs`](crate::rootfs()); images named
//! `…copilot…` run the copilot image under test (`$COPILOT_IMAGE`, unpacked:
//! [`image_rootfs`]), or, in a run that built none or with [`PodConfig::copilot`] set,
//! [`copilot_rootfs`] with that binary (or `$COPILOT_BIN`) at `/bin/flyte-copilot` and
//! `/bin/copilot`. Not modelled: CPU limits, image pulls, readiness and liveness
//! probes, restarts of regular containers, a writable root filesystem (every root is
//! read-only).
use std::{
    collections::BTreeMap,
    fs::File,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Container as Spec, Pod};
use tempfile::TempDir;

use crate::{
    cgroup::{Layout, PodCgroup},
    container::{ContainerOpts, Mount, Namespace, ProcessOpts, config},
    env::{copilot_bin, preflight, random_hex},
    rootfs::{COPILOT_PATHS, copilot_rootfs, image_rootfs},
};

/// The capabilities containerd gives a container by default (its `DefaultCapabilities`).
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A pod to run, and how the test's node differs from a real one.
pub struct PodConfig {
    pub pod: Pod,
    pub layout: Layout,
    /// hostPath volumes whose source is replaced (e.g. `/sys/fs/bpf` → a test bpffs).
    pub host_paths: Vec<(String, PathBuf)>,
    /// Extra environment, `(container, KEY, value)`: what a cluster would give through a
    /// Secret or a service account (the test store's credentials).
    pub env: Vec<(String, String, String)>,
    /// The kubelet's PLEG relist period.
    pub relist: Duration,
    /// The whole pod, after which every container is killed and the run panics.
    pub timeout: Duration,
    /// The copilot binary of the copilot image; `$COPILOT_BIN` when `None`.
    pub copilot: Option<PathBuf>,
}

impl PodConfig {
    pub fn new(pod: Pod) -> Self {
        Self {
            pod,
            layout: Layout::Cgroupfs,
            host_paths: Vec::new(),
            env: Vec::new(),
            relist: Duration::from_secs(1),
            timeout: Duration::from_secs(120),
            copilot: None,
        }
    }
}

/// `Succeeded` or `Failed`, as the pod status would say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Succeeded,
    Failed,
}

/// A container's last termination, as `status.containerStatuses[].state.terminated`
/// (or `initContainerStatuses`) shows it.
#[derive(Clone, Debug, Default)]
pub struct ContainerStatus {
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub restarts: u32,
    /// Everything it printed, all runs.
    pub logs: String,
    /// The highest memory use of any run, in bytes (its memory cgroup's peak).
    pub peak_memory: u64,
    /// When the runner learned of the exit (at a relist).
    pub seen_exited: Option<Instant>,
    pub started: Option<Instant>,
}

/// What the pod ended as.
#[derive(Clone, Debug)]
pub struct PodStatus {
    pub phase: Phase,
    pub containers: BTreeMap<String, ContainerStatus>,
    /// Why the pod failed, when no container says (a startup probe, the timeout).
    pub message: String,
    /// When its last container had terminated (wall clock, as copilot's log lines).
    pub ended_at: std::time::SystemTime,
}

impl PodStatus {
    pub fn container(&self, name: &str) -> &ContainerStatus {
        self.containers
            .get(name)
            .unwrap_or_else(|| panic!("no status for container {name}: {self:#?}"))
    }
}

enum Ctl {
    Delete,
    Kill(String, i32),
}

/// A pod running in a thread of its own; [`RunningPod::wait`] for its status.
pub struct RunningPod {
    ctl: mpsc::Sender<Ctl>,
    thread: Option<std::thread::JoinHandle<PodStatus>>,
    uid: String,
}

impl RunningPod {
    /// Starts the pod: sandbox, then init containers, then the regular ones.
    pub fn start(config: PodConfig) -> Self {
        preflight();
        let (tx, rx) = mpsc::channel();
        let cgroup = PodCgroup::new(config.layout);
        let uid = cgroup.uid().to_string();
        let thread = std::thread::spawn(move || Kubelet::new(config, cgroup, rx).run());
        Self {
            ctl: tx,
            thread: Some(thread),
            uid,
        }
    }

    /// The pod's `metadata.uid` (its cgroup's name).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// `kubectl delete pod`: graceful termination of every container.
    pub fn delete(&self) {
        let _ = self.ctl.send(Ctl::Delete);
    }

    /// Sends `signal` to a container's main process (an OOM kill, an eviction).
    pub fn kill(&self, container: &str, signal: i32) {
        let _ = self.ctl.send(Ctl::Kill(container.into(), signal));
    }

    /// Waits for the pod to end (bounded by [`PodConfig::timeout`]).
    pub fn wait(mut self) -> PodStatus {
        match self.thread.take().expect("waited once").join() {
            Ok(status) => status,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.ctl.send(Ctl::Delete);
            let _ = thread.join();
        }
    }
}

/// One run of a container: `runc run` in the foreground, which reaps the container's
/// init and exits with its status (128 + signal when killed); `runc delete` on drop.
struct Run {
    id: String,
    child: Child,
    state: TempDir,
    bundle: TempDir,
    cgroup_rel: PathBuf,
    /// The init's host pid, where the runner asked for it ([`Run::wait_running`]).
    pid: u32,
}

impl Run {
    /// Waits (up to 10 s) until runc reports the container running; its init's pid.
    fn wait_running(&mut self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .runc()
                .args(["state", &self.id])
                .output()
                .expect("runc state");
            let state: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
            if let Some(state) = state
                && state["status"] == "running"
            {
                return state["pid"].as_u64().expect("a pid") as u32;
            }
            assert!(
                self.exited().is_none() && Instant::now() < deadline,
                "container {} did not start: {}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.state.path());
        cmd
    }

    fn signal(&self, signal: i32) {
        let _ = self
            .runc()
            .args(["kill", &self.id, &signal.to_string()])
            .stderr(Stdio::null())
            .status();
    }

    /// `runc exec` of a probe command; true when it exits 0.
    fn exec(&self, command: &[String]) -> bool {
        self.runc()
            .args(["exec", &self.id])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn exited(&mut self) -> Option<i32> {
        let status = self.child.try_wait().expect("waiting for runc run")?;
        Some(
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal_number()),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.bundle.path().join("stdio.log")).unwrap_or_default()
    }

    fn termination_message(&self) -> String {
        std::fs::read_to_string(self.bundle.path().join("termination-log")).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.signal(9);
        let _ = self.child.wait();
        let _ = self
            .runc()
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

trait SignalNumber {
    fn signal_number(&self) -> i32;
}

impl SignalNumber for std::process::ExitStatus {
    fn signal_number(&self) -> i32 {
        std::os::unix::process::ExitStatusExt::signal(self).unwrap_or(0)
    }
}

/// Where a container sits in the pod's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An init container that runs to completion.
    Init,
    /// An init container with `restartPolicy: Always`.
    Sidecar,
    Regular,
}

/// A container of the spec with its current run.
struct Slot {
    spec: Spec,
    kind: Kind,
    run: Option<Run>,
    status: ContainerStatus,
    next_restart: Option<Instant>,
    backoff: Duration,
    /// SIGTERM sent (deletion).
    terminating: bool,
}

struct Kubelet {
    config: PodConfig,
    cgroup: PodCgroup,
    ctl: mpsc::Receiver<Ctl>,
    volumes: TempDir,
    sandbox: Option<Run>,
    slots: Vec<Slot>,
    deadline: Instant,
    /// When deletion started: the grace period runs from then.
    deleted: Option<Instant>,
}

impl Kubelet {
    fn new(config: PodConfig, cgroup: PodCgroup, ctl: mpsc::Receiver<Ctl>) -> Self {
        let deadline = Instant::now() + config.timeout;
        let volumes = tempfile::Builder::new()
            .prefix("pod-volumes-")
            .tempdir()
            .expect("a volumes directory");
        Self {
            config,
            cgroup,
            ctl,
            volumes,
            sandbox: None,
            slots: Vec::new(),
            deadline,
            deleted: None,
        }
    }

    fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        self.config.pod.spec.as_ref().expect("a pod spec")
    }

    fn run(mut self) -> PodStatus {
        self.make_volumes();
        self.start_sandbox();
        let spec = self.spec().clone();
        for init in spec.init_containers.iter().flatten() {
            let kind = if init.restart_policy.as_deref() == Some("Always") {
                Kind::Sidecar
            } else {
                Kind::Init
            };
            let index = self.add_slot(init.clone(), kind);
            if let Err(message) = self.start_init(index) {
                // The pod has failed: its sidecars are terminated as at its end.
                self.terminate_sidecars();
                return self.finish(message);
            }
        }
        for c in &spec.containers {
            let index = self.add_slot(c.clone(), Kind::Regular);
            self.start(index);
        }
        while !self.regular_done() {
            self.relist();
            if self.deleted.is_some() {
                self.terminate_regular();
            }
        }
        self.terminate_sidecars();
        self.finish(String::new())
    }

    fn add_slot(&mut self, spec: Spec, kind: Kind) -> usize {
        self.slots.push(Slot {
            spec,
            kind,
            run: None,
            status: ContainerStatus::default(),
            next_restart: None,
            backoff: Duration::from_secs(10),
            terminating: false,
        });
        self.slots.len() - 1
    }

    /// An init container: a sidecar until its startup probe passes, any other until
    /// it has exited 0.
    fn start_init(&mut self, index: usize) -> Result<(), String> {
        self.start(index);
        let name = self.slots[index].spec.name.clone();
        if self.slots[index].kind == Kind::Sidecar {
            return self.startup_probe(index);
        }
        loop {
            self.relist();
            if self.deleted.is_some() {
                return Err(format!("deleted while init container {name} ran"));
            }
            if self.slots[index].status.seen_exited.is_none() {
                continue;
            }
            let code = self.slots[index].status.exit_code;
            return if code == 0 {
                Ok(())
            } else {
                Err(format!("init container {name} exited {code}"))
            };
        }
    }

    /// Runs the startup probe every `periodSeconds` until it passes; the pod fails
    /// after `failureThreshold` failures.
    fn startup_probe(&mut self, index: usize) -> Result<(), String> {
        let slot = &self.slots[index];
        let Some(probe) = slot.spec.startup_probe.clone() else {
            return Ok(());
        };
        let command = probe
            .exec
            .and_then(|e| e.command)
            .expect("only exec probes are modelled");
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let threshold = probe.failure_threshold.unwrap_or(3);
        for _ in 0..threshold {
            let passed = self.slots[index]
                .run
                .as_ref()
                .is_some_and(|run| run.exec(&command));
            if passed {
                return Ok(());
            }
            std::thread::sleep(period);
        }
        Err(format!(
            "startup probe of {} failed {threshold} times",
            self.slots[index].spec.name
        ))
    }

    /// Every regular container has started and exited.
    fn regular_done(&self) -> bool {
        let mut regular = self.slots.iter().filter(|s| s.kind == Kind::Regular);
        regular.clone().next().is_some() && regular.all(|s| s.status.seen_exited.is_some())
    }

    /// One PLEG relist: the control messages, the exits, the sidecar restarts.
    fn relist(&mut self) {
        std::thread::sleep(self.config.relist);
        assert!(
            Instant::now() < self.deadline,
            "pod ran past {:?}: {:#?}",
            self.config.timeout,
            self.statuses()
        );
        while let Ok(ctl) = self.ctl.try_recv() {
            match ctl {
                Ctl::Delete => {
                    self.deleted.get_or_insert_with(Instant::now);
                }
                Ctl::Kill(name, signal) => {
                    if let Some(run) = self.slot(&name).run.as_ref() {
                        run.signal(signal);
                    }
                }
            }
        }
        for index in 0..self.slots.len() {
            self.reap(index);
        }
        // A sidecar is restarted unless the pod is terminating: its regular
        // containers have all exited, or it is being deleted.
        if self.regular_done() || self.deleted.is_some() {
            return;
        }
        for index in 0..self.slots.len() {
            let due = self.slots[index]
                .next_restart
                .is_some_and(|t| Instant::now() >= t);
            if due {
                self.restart(index);
            }
        }
    }

    fn slot(&mut self, name: &str) -> &mut Slot {
        self.slots
            .iter_mut()
            .find(|s| s.spec.name == name)
            .unwrap_or_else(|| panic!("no container {name} in the pod"))
    }

    /// Records a finished run: exit code, reason, message, log.
    fn reap(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(run) = &mut slot.run else { return };
        let Some(code) = run.exited() else { return };
        let logs = run.log();
        let oom = code == 137 && crate::cgroup::oom_kills_at(&run.cgroup_rel) > 0;
        let peak = crate::cgroup::memory_peak_at(&run.cgroup_rel).unwrap_or(0);
        slot.status.peak_memory = slot.status.peak_memory.max(peak);
        slot.status.exit_code = code;
        slot.status.reason = match (oom, code) {
            (true, _) => "OOMKilled",
            (false, 0) => "Completed",
            _ => "Error",
        }
        .into();
        slot.status.message = run.termination_message();
        let fallback =
            slot.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        if slot.status.message.is_empty() && fallback && code != 0 {
            slot.status.message = log_tail(&logs);
        }
        slot.status.logs.push_str(&logs);
        slot.status.seen_exited = Some(Instant::now());
        slot.run = None;
        if slot.kind == Kind::Sidecar {
            let first = slot.status.restarts == 0;
            slot.next_restart = Some(if first {
                Instant::now()
            } else {
                Instant::now() + slot.backoff
            });
            if !first {
                slot.backoff = (slot.backoff * 2).min(Duration::from_secs(300));
            }
        }
    }

    fn restart(&mut self, index: usize) {
        self.slots[index].status.restarts += 1;
        self.slots[index].next_restart = None;
        self.start(index);
    }

    /// Deletion: SIGTERM to the regular containers, SIGKILL once the grace period
    /// is spent.
    fn terminate_regular(&mut self) {
        let end = self.grace_end();
        for slot in self.slots.iter_mut().filter(|s| s.kind != Kind::Sidecar) {
            let Some(run) = &slot.run else { continue };
            if Instant::now() >= end {
                run.signal(libc::SIGKILL);
            } else if !slot.terminating {
                run.signal(libc::SIGTERM);
                slot.terminating = true;
            }
        }
    }

    /// The end of the grace period: from the deletion, else from now.
    fn grace_end(&self) -> Instant {
        let grace = self.spec().termination_grace_period_seconds.unwrap_or(30);
        self.deleted.unwrap_or_else(Instant::now) + Duration::from_secs(grace.max(0) as u64)
    }

    /// SIGTERM to each sidecar, the last started first, each waited for within what is
    /// left of the grace period; then SIGKILL.
    fn terminate_sidecars(&mut self) {
        // The kubelet gives a container at least 2 s (`minimumGracePeriodInSeconds`),
        // also when the pod's grace period is spent.
        let end = self
            .grace_end()
            .max(Instant::now() + Duration::from_secs(2));
        for index in (0..self.slots.len()).rev() {
            self.slots[index].next_restart = None;
            let Some(run) = &self.slots[index].run else {
                continue;
            };
            run.signal(libc::SIGTERM);
            while self.slots[index].run.is_some() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
                self.reap(index);
            }
            if let Some(run) = &self.slots[index].run {
                run.signal(libc::SIGKILL);
                while self.slots[index].run.is_some() {
                    std::thread::sleep(Duration::from_millis(20));
                    self.reap(index);
                }
            }
            self.slots[index].next_restart = None;
        }
    }

    fn finish(mut self, message: String) -> PodStatus {
        let ended_at = std::time::SystemTime::now();
        for slot in &mut self.slots {
            slot.run = None;
        }
        self.sandbox = None;
        let failed = !message.is_empty()
            || self
                .slots
                .iter()
                .any(|s| s.kind != Kind::Sidecar && s.status.exit_code != 0);
        PodStatus {
            phase: if failed {
                Phase::Failed
            } else {
                Phase::Succeeded
            },
            containers: self.statuses(),
            message,
            ended_at,
        }
    }

    fn statuses(&self) -> BTreeMap<String, ContainerStatus> {
        self.slots
            .iter()
            .map(|s| (s.spec.name.clone(), s.status.clone()))
            .collect()
    }

    fn make_volumes(&self) {
        for v in self.spec().volumes.iter().flatten() {
            if v.empty_dir.is_some() {
                let dir = self.volumes.path().join(&v.name);
                std::fs::create_dir(&dir).expect("an emptyDir");
                // The kubelet makes emptyDir volumes world-writable.
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                    .expect("chmod an emptyDir");
            }
        }
    }

    fn volume_source(&self, name: &str) -> PathBuf {
        let volume = self
            .spec()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        if let Some(host) = &volume.host_path {
            return self
                .config
                .host_paths
                .iter()
                .find(|(path, _)| *path == host.path)
                .map_or_else(|| PathBuf::from(&host.path), |(_, p)| p.clone());
        }
        assert!(
            volume.empty_dir.is_some(),
            "volume {name}: only emptyDir and hostPath"
        );
        self.volumes.path().join(name)
    }

    fn start_sandbox(&mut self) {
        let mut kinds = vec!["pid", "ipc", "uts", "mount"];
        if self.spec().host_network != Some(true) {
            kinds.push("network");
        }
        let opts = ContainerOpts {
            namespaces: Some(
                kinds
                    .into_iter()
                    .map(|kind| Namespace { kind, path: None })
                    .collect(),
            ),
            ..ContainerOpts::default()
        };
        let mut run = self.launch("sandbox", &["pause".to_string()], &opts);
        run.pid = run.wait_running();
        self.sandbox = Some(run);
    }

    fn start(&mut self, index: usize) {
        let spec = self.slots[index].spec.clone();
        let opts = self.container_opts(&spec);
        let mut args: Vec<String> = spec.command.clone().unwrap_or_default();
        args.extend(spec.args.clone().unwrap_or_default());
        assert!(
            !args.is_empty(),
            "container {}: no command (images have no entrypoint here)",
            spec.name
        );
        let run = self.launch(&spec.name, &args, &opts);
        let slot = &mut self.slots[index];
        slot.status.started = Some(Instant::now());
        slot.status.seen_exited = None;
        slot.run = Some(run);
    }

    fn sandbox_ns(&self, kind: &'static str) -> Namespace {
        let pid = self.sandbox_pid();
        Namespace {
            kind,
            path: Some(PathBuf::from(format!("/proc/{pid}/ns/{}", ns_file(kind)))),
        }
    }

    fn sandbox_pid(&self) -> u32 {
        self.sandbox.as_ref().expect("the sandbox runs").pid
    }

    fn container_opts(&self, spec: &Spec) -> ContainerOpts {
        let pod = self.spec();
        let mut namespaces = vec![self.sandbox_ns("ipc"), self.sandbox_ns("uts")];
        if pod.host_network != Some(true) {
            namespaces.push(self.sandbox_ns("network"));
        }
        namespaces.push(if pod.share_process_namespace == Some(true) {
            self.sandbox_ns("pid")
        } else {
            Namespace {
                kind: "pid",
                path: None,
            }
        });
        namespaces.extend(["mount", "cgroup"].map(|kind| Namespace { kind, path: None }));
        let mut mounts: Vec<Mount> = spec
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| Mount {
                source: self.volume_source(&m.name),
                destination: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
            })
            .collect();
        let image = spec.image.as_deref().unwrap_or_default();
        let copilot = image
            .contains("copilot")
            .then(|| self.copilot_root(&mut mounts));
        let user = copilot.as_ref().map_or((0, 0), |(_, user)| *user);
        let root = copilot.map(|(root, _)| root);
        ContainerOpts {
            memory_limit: memory_limit(spec),
            mounts,
            env: self.env(spec),
            process: Some(process(spec, user)),
            root,
            namespaces: Some(namespaces),
            sysfs: true,
        }
    }

    /// The root of a copilot container and the user its image runs as: the image under test (`$COPILOT_IMAGE`, as
    /// `cargo xtask integration-test` sets it), unless the pod names a binary
    /// ([`PodConfig::copilot`]) or no image was built (a filtered run): then the busybox
    /// root with that binary, or `$COPILOT_BIN`, bind-mounted at the image's paths.
    fn copilot_root(&self, mounts: &mut Vec<Mount>) -> (PathBuf, (u32, u32)) {
        let image = std::env::var_os("COPILOT_IMAGE").filter(|p| !p.is_empty());
        if let (None, Some(_)) = (&self.config.copilot, image) {
            let image = image_rootfs(&crate::podman::image_archive());
            return (image.root, (image.uid, image.gid));
        }
        let binary = self.config.copilot.clone().unwrap_or_else(copilot_bin);
        mounts.extend(COPILOT_PATHS.iter().map(|path| Mount {
            source: binary.clone(),
            destination: (*path).into(),
            read_only: true,
        }));
        (copilot_rootfs(&binary), (0, 0))
    }

    fn env(&self, spec: &Spec) -> Vec<String> {
        let meta = &self.config.pod.metadata;
        let field = |path: &str| match path {
            "metadata.uid" => self.cgroup.uid().to_string(),
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or("default".into()),
            other => panic!("fieldRef {other} is not modelled"),
        };
        let mut env: Vec<String> = spec
            .env
            .iter()
            .flatten()
            .map(|e| {
                let value = match (&e.value, &e.value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(from)) => {
                        field(&from.field_ref.as_ref().expect("only fieldRef").field_path)
                    }
                    (None, None) => String::new(),
                };
                format!("{}={value}", e.name)
            })
            .collect();
        env.extend(
            self.config
                .env
                .iter()
                .filter(|(c, _, _)| *c == spec.name)
                .map(|(_, k, v)| format!("{k}={v}")),
        );
        env
    }

    /// Creates and starts a container with `runc run`; its output goes to a file, and
    /// `/dev/termination-log` is a file of the bundle.
    fn launch(&self, name: &str, args: &[String], opts: &ContainerOpts) -> Run {
        let id = random_hex(32);
        let cgroup_rel = self.cgroup.rel().join(self.cgroup.container_dir_name(&id));
        let state = tempfile::Builder::new()
            .prefix("runc-state-")
            .tempdir()
            .expect("tempdir");
        let bundle = tempfile::Builder::new()
            .prefix("runc-bundle-")
            .tempdir()
            .expect("tempdir");
        let message = bundle.path().join("termination-log");
        File::create(&message).expect("a termination-log file");
        // The kubelet makes it writable by any user (`makeMounts` in
        // kuberuntime_container.go chmods it 0666), so a non-root container can write it.
        std::fs::set_permissions(
            &message,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .expect("chmod the termination-log file");
        let mut opts = opts.clone();
        opts.mounts.push(Mount {
            source: message,
            destination: "/dev/termination-log".into(),
            read_only: false,
        });
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut spec = config(&argv, &opts, &cgroup_rel);
        // The sandbox names the pod's UTS namespace; runc refuses a hostname for a
        // container that joins it.
        let own_uts = opts
            .namespaces
            .iter()
            .flatten()
            .any(|ns| ns.kind == "uts" && ns.path.is_none());
        match spec.as_object_mut() {
            Some(obj) if !own_uts => drop(obj.remove("hostname")),
            _ => {
                spec["hostname"] = self
                    .config
                    .pod
                    .metadata
                    .name
                    .clone()
                    .unwrap_or("pod".into())
                    .into()
            }
        }
        std::fs::write(
            bundle.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).expect("config.json"),
        )
        .expect("writing config.json");
        let log = File::create(bundle.path().join("stdio.log")).expect("a log file");
        let child = Command::new("runc")
            .arg("--root")
            .arg(state.path())
            // --keep: the cgroup outlives the container, for its OOM-kill count.
            .args(["run", "--keep", "--bundle"])
            .arg(bundle.path())
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("runc run for {name}: {e}"));
        Run {
            id,
            child,
            state,
            bundle,
            cgroup_rel,
            pid: 0,
        }
    }
}

fn ns_file(kind: &str) -> &str {
    match kind {
        "network" => "net",
        "mount" => "mnt",
        other => other,
    }
}

/// `securityContext` as containerd applies it: its default capabilities, `drop`
/// (`ALL` drops every one) then `add`; the user (else the image's `image_user`); no new
/// privileges unless allowed.
fn process(spec: &Spec, image_user: (u32, u32)) -> ProcessOpts {
    let sc = spec.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.unwrap_or_default();
    let drop = caps.drop.unwrap_or_default();
    let mut set: Vec<String> = if drop.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .filter(|c| !drop.iter().any(|d| d == *c))
            .map(|c| (*c).to_string())
            .collect()
    };
    set.extend(caps.add.unwrap_or_default());
    ProcessOpts {
        uid: sc.run_as_user.map_or(image_user.0, |u| u as u32),
        gid: sc.run_as_group.map_or(image_user.1, |g| g as u32),
        caps: set.into_iter().map(|c| format!("CAP_{c}")).collect(),
        no_new_privileges: sc.allow_privilege_escalation == Some(false),
    }
}

/// `resources.limits.memory` in bytes (`Mi`, `Gi`, `Ki` or plain).
fn memory_limit(spec: &Spec) -> Option<u64> {
    let quantity = spec.resources.as_ref()?.limits.as_ref()?.get("memory")?;
    let text = quantity.0.as_str();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().ok()?;
    Some(
        n * match unit {
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "" => 1,
            other => panic!("memory unit {other} is not modelled"),
        },
    )
}

/// The kubelet's fallback message: the last 80 lines of the log, at most 2 KiB.
fn log_tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let start = (start..=tail.len())
        .find(|&i| tail.is_char_boundary(i))
        .unwrap_or(tail.len());
    tail[start..].to_string()
}
