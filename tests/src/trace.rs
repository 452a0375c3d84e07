//! `copilot trace` as a child process, its JSON lines read on a thread.
use std::{
    collections::VecDeque,
    fmt,
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    time::{Duration, Instant},
};

use copilot::{
    lifecycle::Source,
    trace::{ContainerState, Line, Ready},
};

use crate::{cgroup::PodCgroup, env::copilot_bin};

/// One line of `copilot trace` output, parsed; it has [`Line`]'s accessors, and it
/// prints as JSON (failure messages show every field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event(pub Line);

impl std::ops::Deref for Event {
    type Target = Line;
    fn deref(&self) -> &Line {
        &self.0
    }
}

impl Event {
    pub fn is_exec(&self) -> bool {
        matches!(self.0, Line::Exec(_))
    }
    pub fn is_exit(&self) -> bool {
        matches!(self.0, Line::Exit(_))
    }
    pub fn is_container(&self) -> bool {
        matches!(self.0, Line::Container(_))
    }
    /// `tid` of an exec or exit line.
    pub fn tid(&self) -> Option<u32> {
        self.0.process().map(|p| p.tid)
    }
    /// `main`: the process is its container's main process (false for other lines).
    pub fn is_main(&self) -> bool {
        self.0.process().is_some_and(|p| p.main)
    }
    /// `state` of a container line.
    pub fn state(&self) -> Option<ContainerState> {
        match &self.0 {
            Line::Container(c) => Some(c.state),
            _ => None,
        }
    }
    /// `cgroup_id` of a ready, exec, exit or container line.
    pub fn cgroup_id(&self) -> Option<u64> {
        match &self.0 {
            Line::Ready(r) => Some(r.cgroup_id),
            Line::Container(c) => Some(c.cgroup_id),
            l => l.process().map(|p| p.cgroup_id),
        }
    }
    /// `comm` of an exec or exit line.
    pub fn comm(&self) -> Option<&str> {
        self.0.process().map(|p| p.comm.as_str())
    }
    /// `filename` of an exec line.
    pub fn filename(&self) -> Option<&str> {
        match &self.0 {
            Line::Exec(e) => Some(&e.filename),
            _ => None,
        }
    }
    /// The raw wait `status` of an exit line.
    pub fn status(&self) -> Option<u32> {
        match &self.0 {
            Line::Exit(e) => Some(e.status),
            _ => None,
        }
    }
    /// `core_dumped` of an exit line.
    pub fn core_dumped(&self) -> Option<bool> {
        match &self.0 {
            Line::Exit(e) => Some(e.core_dumped),
            _ => None,
        }
    }
    /// `cgroup` of a container line.
    pub fn cgroup(&self) -> Option<&std::path::Path> {
        match &self.0 {
            Line::Container(c) => Some(&c.cgroup),
            _ => None,
        }
    }
    /// The `ready` line's fields.
    pub fn ready(&self) -> Option<&Ready> {
        match &self.0 {
            Line::Ready(r) => Some(r),
            _ => None,
        }
    }
    /// `source` of a container line.
    pub fn source(&self) -> Option<Source> {
        match &self.0 {
            Line::Container(c) => Some(c.source),
            _ => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.to_json() {
            Ok(json) => f.write_str(&json),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

/// Parses one stdout line of `copilot trace`.
fn parse(line: &str) -> Result<Event, String> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v.is_object() => serde_json::from_value(v).map(Event).map_err(|e| {
            format!("copilot trace printed a JSON object that is not a trace line ({e}): {line:?}")
        }),
        _ => Err(format!(
            "copilot trace printed a non-JSON-object line: {line:?}"
        )),
    }
}

/// `$COPILOT_BIN trace --pod-cgroup <pod>` running for the life of this value.
///
/// Every stdout line must be a [`Line`] (a line that is not fails the test); stderr
/// is collected and echoed (prefixed `copilot:`) so a failing test shows the logs.
/// Events are kept in order: `pending` holds those not consumed by
/// [`Trace::next_matching`] yet, [`Trace::history`] all of them.
///
/// Drop sends SIGTERM and asserts that copilot exits with status 0 within 5 s: a tracer
/// that hangs or dies on shutdown is a failure.
pub struct Trace {
    child: Option<Child>,
    rx: Receiver<Result<Event, String>>,
    pending: VecDeque<Event>,
    history: Vec<Event>,
    stderr: Arc<Mutex<String>>,
    eof: bool,
    /// Killed on purpose by [`Trace::kill`]: no clean exit to check.
    killed: bool,
    /// A container id whose lines are dropped on arrival (the tracer's own).
    skip_container: Option<String>,
}

impl Trace {
    /// Starts tracing `pod` (does not wait for `ready`).
    pub fn start(pod: &PodCgroup) -> Self {
        Self::spawn(&["trace", "--pod-cgroup", &pod.path().to_string_lossy()])
    }

    /// Starts tracing `pod` with the node's program set pinned under `bpf_dir`.
    pub fn start_in(pod: &PodCgroup, bpf_dir: &std::path::Path) -> Self {
        Self::spawn(&[
            "--bpf-dir",
            &bpf_dir.to_string_lossy(),
            "trace",
            "--pod-cgroup",
            &pod.path().to_string_lossy(),
        ])
    }

    /// The pid of the `copilot` process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills `copilot` with SIGKILL, as the OOM killer or a node problem would,
    /// and reaps it; nothing of its own clean-up runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.killed = true;
    }

    /// Starts `copilot` with `args`, stdout read as JSON lines.
    pub fn spawn(args: &[&str]) -> Self {
        crate::env::preflight();
        Self::spawn_program(&copilot_bin(), args)
    }

    /// Starts any program with `args`, its stdout read as JSON lines (for testing this
    /// fixture without copilot).
    pub fn spawn_program(bin: &std::path::Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Self::spawn_command(cmd)
    }

    /// Traces `pod` from inside it, as a sidecar without hostPID runs: in a container
    /// cgroup of its own under the pod, as pid 1 of its own PID namespace, in its own
    /// mount and cgroup namespaces, without tracefs (the `nsrun` helper). Returns the
    /// tracer and its container cgroup.
    pub fn start_in_pod(pod: &PodCgroup, bpf_dir: &std::path::Path) -> (Self, std::path::PathBuf) {
        let (trace, own, _) = Self::nsrun(pod, Some(bpf_dir));
        (trace, own)
    }

    /// As [`Trace::start_in_pod`], with copilot's default pin directory, and its own
    /// container's lines left out: the scenarios are about the task's containers,
    /// and a real pod's sidecar is one of its containers too.
    pub fn in_pod(pod: &PodCgroup) -> Self {
        let (mut trace, _, id) = Self::nsrun(pod, None);
        trace.skip_container = Some(id);
        trace
    }

    fn nsrun(
        pod: &PodCgroup,
        bpf_dir: Option<&std::path::Path>,
    ) -> (Self, std::path::PathBuf, String) {
        crate::env::preflight();
        let id = crate::env::random_hex(32);
        let own = pod.path().join(pod.container_dir_name(&id));
        std::fs::create_dir(&own).unwrap_or_else(|e| panic!("mkdir {}: {e}", own.display()));
        let mut cmd = Command::new(crate::rootfs::helper_path("nsrun"));
        cmd.arg("--cgroup").arg(&own).arg(copilot_bin());
        if let Some(dir) = bpf_dir {
            cmd.arg("--bpf-dir").arg(dir);
        }
        cmd.args(["trace", "--pod-cgroup"]).arg(pod.path());
        (Self::spawn_command(cmd), own, id)
    }

    fn spawn_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let msg = match line {
                    Ok(line) => parse(&line),
                    Err(e) => Err(format!("reading copilot's stdout: {e}")),
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                eprintln!("copilot: {line}");
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Trace {
            child: Some(child),
            rx,
            pending: VecDeque::new(),
            history: Vec::new(),
            stderr,
            eof: false,
            killed: false,
            skip_container: None,
        }
    }

    /// Receives one more event into `pending`/`history`; false on timeout or EOF.
    fn pump(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Ok(event)) => {
                if self.skip_container.is_some()
                    && event.container_id() == self.skip_container.as_deref()
                {
                    return true;
                }
                self.history.push(event.clone());
                self.pending.push_back(event);
                true
            }
            Ok(Err(msg)) => panic!("{msg}"),
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                false
            }
        }
    }

    fn failure(&mut self, what: &str) -> String {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .map_or_else(|| "still running".to_string(), |s| s.to_string());
        let history: Vec<String> = self.history.iter().map(ToString::to_string).collect();
        format!(
            "{what}\ncopilot: {status}\nevents so far ({}):\n{}\nstderr:\n{}",
            history.len(),
            history.join("\n"),
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        )
    }

    /// Waits for the `ready` line and returns it. Lines printed before it (e.g. snapshot
    /// `container` lines) stay pending.
    pub fn wait_ready(&mut self, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self
                .pending
                .iter()
                .position(|e| matches!(e.0, Line::Ready(_)))
            {
                return self.pending.remove(i).expect("index in range");
            }
            if !self.pump(deadline) {
                let msg = self.failure(&format!("no `ready` line within {timeout:?}"));
                panic!("{msg}");
            }
        }
    }

    /// Consumes events up to and including the first that matches `pred`, and returns it.
    /// Panics (with everything copilot printed) if none arrives within `timeout`.
    pub fn next_matching(&mut self, pred: impl Fn(&Event) -> bool, timeout: Duration) -> Event {
        match self.try_next_matching(pred, timeout) {
            Some(e) => e,
            None => {
                let msg = self.failure(&format!("no matching event within {timeout:?}"));
                panic!("{msg}");
            }
        }
    }

    /// Like [`Trace::next_matching`], but `None` on timeout or end of output.
    pub fn try_next_matching(
        &mut self,
        pred: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.pending.pop_front() {
                if pred(&e) {
                    return Some(e);
                }
            }
            if !self.pump(deadline) {
                return None;
            }
        }
    }

    /// Consumes and returns all events up to and including the first matching `pred`.
    pub fn collect_until(
        &mut self,
        pred: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            while let Some(e) = self.pending.pop_front() {
                let done = pred(&e);
                out.push(e);
                if done {
                    return out;
                }
            }
            if !self.pump(deadline) {
                let msg = self.failure(&format!("no matching event within {timeout:?}"));
                panic!("{msg}");
            }
        }
    }

    /// Every event received so far, consumed or not, in order.
    pub fn history(&self) -> &[Event] {
        &self.history
    }

    /// What copilot wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGTERM, then waits up to 5 s. Returns the exit status, or `None` if copilot had to
    /// be SIGKILLed.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let status = self.stop();
        if std::thread::panicking() || self.killed {
            return;
        }
        match status {
            None => panic!("copilot trace did not exit within 5 s of SIGTERM"),
            Some(s) if !s.success() => {
                let msg = self.failure(&format!("copilot trace exited with {s} after SIGTERM"));
                panic!("{msg}");
            }
            Some(_) => {}
        }
    }
}
