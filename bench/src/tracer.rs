//! `copilot trace` as a child process, its JSON lines read on a thread as
//! [`Line`]s.
use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use copilot::{
    trace::{Line, Ready},
    tracer::SetUse,
};
use integration_test::Bpffs;

pub struct Trace {
    child: Child,
    lines: Receiver<Line>,
    /// Its stderr, for the error message when it fails.
    stderr: tempfile::NamedTempFile,
    _stdout: tempfile::NamedTempFile,
    /// Tells the reader thread that no more lines will come.
    done: Arc<AtomicBool>,
    /// The node's pinned program set it registered in (`None`: programs of its own).
    pub set_dir: Option<PathBuf>,
    /// The bpffs [`Trace::start`] pins its set in, unmounted (the programs
    /// detached) after the tracer is gone.
    bpffs: Option<Bpffs>,
}

impl Trace {
    /// Starts `copilot trace --pod-cgroup POD` and waits for its `ready` line, with
    /// its node set in a bpffs of its own: a set left pinned in the default
    /// directory would stay attached, run first and unmeasured in every later
    /// figure.
    pub fn start(copilot: &Path, pod: &Path, ring_bytes: Option<u32>) -> anyhow::Result<Self> {
        let bpffs = Bpffs::new();
        let mut t = Self::start_with(copilot, pod, ring_bytes, Some(&bpffs.node_dir()))?;
        t.bpffs = Some(bpffs);
        Ok(t)
    }

    /// [`Trace::start`] with the node set pinned under `bpf_dir` (`--bpf-dir`); a
    /// directory that is not on bpffs gives the tracer programs of its own.
    pub fn start_with(
        copilot: &Path,
        pod: &Path,
        ring_bytes: Option<u32>,
        bpf_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let out = tempfile::Builder::new()
            .prefix("bench-trace-stdout-")
            .tempfile()
            .context("trace stdout file")?;
        let stderr = tempfile::Builder::new()
            .prefix("bench-trace-stderr-")
            .tempfile()
            .context("trace stderr file")?;
        let mut cmd = Command::new(copilot);
        if let Some(dir) = bpf_dir {
            cmd.arg("--bpf-dir").arg(dir);
        }
        cmd.args([
            "trace",
            "--output",
            "json",
            "--log-level",
            "warn",
            "--pod-cgroup",
        ])
        .arg(pod)
        .stdin(Stdio::null())
        // A file, not a pipe: a reader that falls behind must never block copilot's
        // writes (that would stall the ring buffer's consumer and lose events).
        .stdout(out.reopen().context("trace stdout file")?)
        .stderr(stderr.reopen().context("trace stderr file")?);
        if let Some(b) = ring_bytes {
            cmd.arg("--ring-bytes").arg(b.to_string());
        }
        let child = cmd.spawn().context("spawning copilot trace")?;
        let (tx, rx) = channel();
        let mut file = std::io::BufReader::new(out.reopen().context("trace stdout file")?);
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        std::thread::spawn(move || {
            // `tail -f`: partial lines wait for their newline; EOF means "not yet" until
            // the tracer is gone.
            let mut line = String::new();
            // At EOF the wait doubles up to 64 ms: 250 idle tracers polled every
            // millisecond woke this process 250,000 times a second, which slowed the
            // whole machine (figure 6 measured that, not copilot).
            let mut idle = Duration::from_millis(1);
            loop {
                match file.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        if finished.load(Ordering::Acquire) {
                            break;
                        }
                        std::thread::sleep(idle);
                        idle = (idle * 2).min(Duration::from_millis(64));
                    }
                    Ok(_) if line.ends_with('\n') => {
                        idle = Duration::from_millis(1);
                        if let Ok(v) = serde_json::from_str::<Line>(&line)
                            && tx.send(v).is_err()
                        {
                            break;
                        }
                        line.clear();
                    }
                    Ok(_) => {}
                }
            }
        });
        let mut t = Self {
            child,
            lines: rx,
            stderr,
            _stdout: out,
            done,
            set_dir: None,
            bpffs: None,
        };
        let ready = t
            .next_matching(|l| matches!(l, Line::Ready(_)), Duration::from_secs(30))
            .context("copilot trace never printed its ready line")?;
        if let Line::Ready(Ready {
            programs: SetUse::Node { dir },
            ..
        }) = ready
        {
            t.set_dir = Some(dir);
        }
        Ok(t)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends the reader thread at its next idle poll: for tracers that are only
    /// there to be counted (figure 6), whose lines nobody reads. Its polls, one
    /// per tracer every 64 ms, were the harness's own load, growing with N.
    pub fn stop_reading(&self) {
        self.done.store(true, Ordering::Release);
    }

    /// The next line that satisfies `f` (other lines are skipped); fails if the tracer
    /// exits first or nothing matches within `timeout`.
    pub fn next_matching(
        &mut self,
        mut f: impl FnMut(&Line) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(v) if f(&v) => return Ok(v),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                    bail!("no matching trace line within {timeout:?}")
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.try_wait()? {
                        // Lines it printed before exiting are still being read.
                        std::thread::sleep(Duration::from_millis(50));
                        if let Some(v) = self.lines.try_iter().find(|v| f(v)) {
                            return Ok(v);
                        }
                        let err = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
                        bail!("copilot trace exited ({status}): {}", err.trim());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the trace reader stopped"),
            }
        }
    }

    /// Every line until one satisfies `until` (included).
    pub fn collect_until(
        &mut self,
        mut until: impl FnMut(&Line) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Line>> {
        let mut out = Vec::new();
        self.next_matching(
            |v| {
                out.push(v.clone());
                until(v)
            },
            timeout,
        )?;
        Ok(out)
    }

    /// Lines already printed, without waiting.
    pub fn drain(&mut self) -> Vec<Line> {
        self.lines.try_iter().collect()
    }

    /// SIGTERM, then how long it took to exit (it must: a hang is a failure).
    pub fn stop(mut self) -> anyhow::Result<Duration> {
        let t = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = t + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("copilot trace exited with {status} after SIGTERM");
                }
                return Ok(t.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("copilot trace did not exit within 10 s of SIGTERM (hang)");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
