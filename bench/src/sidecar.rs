//! Figures 2, 3, 7 and 8: `copilot sidecar` with real runc containers, beside the
//! polling designs watching the same containers.
use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, channel},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bench_results::{Idle, Pollers, PollingDesign, SidecarRuns};
use copilot::sidecar::status::Status;
use integration_test::{Container, ContainerOpts, Gate, Layout, Mount, PodCgroup, random_hex};
use tempfile::TempDir;

use crate::{
    proto::{Type, outputs_interface},
    util::{PidFd, Usage, summary, wait_for_file},
};

/// A uniformly random phase in [1, max] ms, as a poller argument.
fn random_ms(max: u64) -> String {
    let r = u64::from_str_radix(&random_hex(8), 16).unwrap_or(0);
    (1 + r % max).to_string()
}

/// A poller process (see [`crate::pollers`]) and what it printed.
pub struct Poller {
    child: Child,
    lines: Receiver<String>,
    started: Instant,
}

impl Poller {
    pub fn spawn(args: &[&str]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning a poller")?;
        let stdout = child.stdout.take().context("poller stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let p = Self {
            child,
            lines: rx,
            started: Instant::now(),
        };
        match p.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l == "ready" => Ok(p),
            other => bail!("poller {args:?} did not get ready: {other:?}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `detected`; returns its timestamp and the poller's whole-life usage.
    pub fn finish(mut self, timeout: Duration) -> anyhow::Result<(u64, Usage, Duration)> {
        let line = self
            .lines
            .recv_timeout(timeout)
            .context("poller detected nothing")?;
        let t: u64 = line
            .strip_prefix("detected ")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("poller printed {line:?}"))?;
        let (usage, life) = wait_rusage(&mut self.child, self.started)?;
        Ok((t, usage, life))
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reaps `child` with wait4 and returns its rusage as [`Usage`].
fn wait_rusage(child: &mut Child, started: Instant) -> anyhow::Result<(Usage, Duration)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child, valid out-pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let life = started.elapsed();
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    Ok((
        Usage {
            cpu_ns: tv(ru.ru_utime) + tv(ru.ru_stime),
            voluntary_switches: ru.ru_nvcsw as u64,
            involuntary_switches: ru.ru_nivcsw as u64,
            rss_kib: ru.ru_maxrss as u64,
            ..Usage::default()
        },
        life,
    ))
}

struct Sidecar {
    child: Child,
    log: PathBuf,
}

fn spawn_sidecar(
    copilot: &Path,
    pod: &Path,
    dir: &Path,
    outputs: &Path,
    interface: &str,
) -> anyhow::Result<Sidecar> {
    let log = dir.join("sidecar.log");
    let store = dir.join("store");
    let child = Command::new(copilot)
        .args(["--log-level", "info", "sidecar", "--after-upload", "exit"])
        .arg("--pod-cgroup")
        .arg(pod)
        .arg("--from-local-dir")
        .arg(outputs)
        .arg("--to-output-prefix")
        .arg(format!("file://{}/out", store.display()))
        .arg("--to-raw-output")
        .arg(format!("file://{}/raw", store.display()))
        .args(["--interface", interface, "--ready-file"])
        .arg(dir.join("ready"))
        .arg("--status-file")
        .arg(dir.join("status.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("spawning copilot sidecar")?;
    Ok(Sidecar { child, log })
}

impl Sidecar {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("copilot sidecar failed: {status}\n{}", self.log());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "copilot sidecar still running after {timeout:?}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One task: sidecar first, then a runc main container that writes a few outputs and
/// `_SUCCESS` and exits; the two pollers watch the same container.
struct Run {
    startup_ms: f64,
    outputs_ms: f64,
    pollers: Vec<(&'static str, Poller, u64)>,
    _keep: (TempDir, PodCgroup, Container),
}

fn one_run(copilot: &Path, interface: &str) -> anyhow::Result<Run> {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let dir = tempfile::Builder::new()
        .prefix("bench-sidecar-")
        .tempdir()?;
    let outputs = dir.path().join("outputs");
    std::fs::create_dir(&outputs)?;
    let gate = Gate::new();
    let script = "read x < /ctl/go; echo 42 > /out/n; echo 2.5 > /out/f; echo hello > /out/s; \
                  echo 'a small blob' > /out/blob; touch /out/_SUCCESS; exit 0";
    let ctr = Container::create(
        &pod,
        &["sh", "-c", script],
        ContainerOpts {
            mounts: vec![
                gate.mount(),
                Mount {
                    source: outputs.clone(),
                    destination: "/out".into(),
                    read_only: false,
                },
            ],
            ..ContainerOpts::default()
        },
    );
    let spawned = Instant::now();
    let mut sidecar = spawn_sidecar(copilot, pod.path(), dir.path(), &outputs, interface)?;
    let ready = wait_for_file(&dir.path().join("ready"), Duration::from_secs(30))
        .with_context(|| format!("sidecar never ready\n{}", sidecar.log()))?;
    let startup_ms = (ready - spawned).as_secs_f64() * 1e3;
    ctr.start();
    let main = PidFd::open(ctr.pid())?;
    let proc_dir = format!("/proc/{}/root/proc", ctr.pid());
    let spns = Poller::spawn(&["poll-proc", &proc_dir, &random_ms(2000)])?;
    let success = outputs.join("_SUCCESS");
    let file = Poller::spawn(&[
        "poll-file",
        success.to_str().context("utf-8")?,
        &random_ms(1000),
    ])?;
    gate.open();
    let exit_ns = main.wait(Duration::from_secs(30))?;
    sidecar.wait(Duration::from_secs(30))?;
    let log = sidecar.log();
    let status = Status::read(&dir.path().join("status.json"))
        .with_context(|| format!("no status file; the sidecar log:\n{log}"))?;
    let outputs_ms = status
        .since_exit_ms
        .with_context(|| format!("no since_exit_ms in {status:?}; the sidecar log:\n{log}"))?;
    let pb = dir.path().join("store/out/outputs.pb");
    if !pb.is_file() {
        bail!("{} missing after the sidecar exited:\n{log}", pb.display());
    }
    drop(gate);
    Ok(Run {
        startup_ms,
        outputs_ms,
        pollers: vec![("proc_2s", spns, exit_ns), ("file_1s", file, exit_ns)],
        _keep: (dir, pod, ctr),
    })
}

/// Figures 2, 3 and 8 from the same `runs` tasks.
pub fn runs(copilot: &Path, runs: usize) -> anyhow::Result<SidecarRuns> {
    let interface = outputs_interface(&[
        ("n", Type::Integer),
        ("f", Type::Float),
        ("s", Type::String),
        ("blob", Type::Blob { multipart: false }),
    ]);
    let mut startup = Vec::new();
    let mut outputs = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..runs {
        let r = one_run(copilot, &interface)?;
        startup.push(r.startup_ms);
        outputs.push(r.outputs_ms);
        pending.push(r);
    }
    // The pollers detect seconds later; they ran meanwhile, one pair per task.
    let mut lat: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut cpu: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for r in pending {
        for (name, poller, exit_ns) in r.pollers {
            let (t, usage, life) = poller.finish(Duration::from_secs(30))?;
            lat.entry(name)
                .or_default()
                .push((t as f64 - exit_ns as f64) / 1e6);
            let c = cpu.entry(name).or_default();
            c.0 += usage.cpu_ns as f64 / 1e6;
            c.1 += life.as_secs_f64();
        }
    }
    let poller = |name: &str| {
        lat.get(name).map(|l| {
            let (cpu_ms, secs) = cpu[name];
            PollingDesign {
                latency_ms: summary(l),
                cpu_ms_per_minute: Some(cpu_ms / secs * 60.0),
            }
        })
    };
    Ok(SidecarRuns {
        runs,
        startup_ms: summary(&startup),
        exit_to_outputs_ms: summary(&outputs),
        pollers: Pollers {
            proc_2s: poller("proc_2s"),
            file_1s: poller("file_1s"),
        },
    })
}

/// Figure 7: a sidecar waiting for a running main container, beside the 2 s poller.
pub fn idle(copilot: &Path, window: Duration) -> anyhow::Result<Idle> {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let dir = tempfile::Builder::new().prefix("bench-idle-").tempdir()?;
    let outputs = dir.path().join("outputs");
    std::fs::create_dir(&outputs)?;
    let ctr = Container::run(&pod, &["sleep", "100000"], ContainerOpts::default());
    let interface = outputs_interface(&[("n", Type::Integer)]);
    let mut sidecar = spawn_sidecar(copilot, pod.path(), dir.path(), &outputs, &interface)?;
    wait_for_file(&dir.path().join("ready"), Duration::from_secs(30))
        .with_context(|| format!("sidecar never ready\n{}", sidecar.log()))?;
    let poller = Poller::spawn(&[
        "poll-proc",
        &format!("/proc/{}/root/proc", ctr.pid()),
        "2000",
    ])?;
    // Let start-up settle (the snapshot, the started line) before the window opens.
    std::thread::sleep(Duration::from_millis(500));
    let pid = sidecar.child.id();
    let s0 = Usage::of(pid)?;
    let p0 = Usage::of(poller.pid())?;
    std::thread::sleep(window);
    let s1 = Usage::of(pid)?;
    let p1 = Usage::of(poller.pid())?;
    if sidecar.child.try_wait()?.is_some() {
        bail!(
            "the sidecar exited while its main container ran:\n{}",
            sidecar.log()
        );
    }
    let since_start = s1;
    ctr.kill(9);
    sidecar.wait(Duration::from_secs(30))?;
    drop(poller);
    Ok(Idle {
        window_s: window.as_secs_f64(),
        sidecar: s1.since(&s0).result(),
        sidecar_since_start: since_start.result(),
        poller_proc_2s: p1.since(&p0).result(),
    })
}
