//! `copilot trace` as a child process, its JSON lines read on a thread.
use std::{
    io::BufRead as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

pub struct Trace {
    child: Child,
    lines: Receiver<Value>,
}

impl Trace {
    /// Starts `copilot trace --pod-cgroup POD` and waits for its `ready` line.
    pub fn start(copilot: &Path, pod: &Path, ring_bytes: Option<u32>) -> anyhow::Result<Self> {
        let mut cmd = Command::new(copilot);
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(b) = ring_bytes {
            cmd.arg("--ring-bytes").arg(b.to_string());
        }
        let mut child = cmd.spawn().context("spawning copilot trace")?;
        let stdout = child.stdout.take().context("trace stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let mut t = Self { child, lines: rx };
        t.next_matching(|v| v["type"] == "ready", Duration::from_secs(30))
            .context("copilot trace never printed its ready line")?;
        Ok(t)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line that satisfies `f`; other lines are handed to `seen`.
    pub fn next_matching(
        &mut self,
        mut f: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if f(&v) => return Ok(v),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no matching trace line within {timeout:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("copilot trace exited: {:?}", self.child.try_wait())
                }
            }
        }
    }

    /// Every line until one satisfies `until` (included).
    pub fn collect_until(
        &mut self,
        mut until: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
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
    pub fn drain(&mut self) -> Vec<Value> {
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
