//! Booting one kernel with the initramfs in qemu and reading its serial console.
//!
//! The console is qemu's stdout (`-nographic`: the serial port on stdio). Every line goes to
//! a log file; lines the init script marks with `COPILOT-VM-` and libtest's per-test lines
//! are echoed as they come, so a slow VM shows progress. A VM that passes its deadline is
//! killed.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// How qemu executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if it boots the guest quickly, else TCG.
    Auto,
    Kvm,
    /// Software emulation: slow (every guest instruction is translated) but works anywhere.
    Tcg,
}

pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub memory_mib: u32,
    pub smp: u32,
    pub log: PathBuf,
    /// Echo every console line, not only the interesting ones.
    pub verbose: bool,
}

/// How a boot ended.
pub enum End {
    /// The init script printed its result line and the VM powered off (or was about to).
    Result { pass: bool, line: String },
    /// qemu exited without a result line (kernel panic, init died, qemu error).
    Exited { status: String },
    /// No result within the deadline: the VM was killed.
    TimedOut { after: Duration },
    /// Only with KVM under [`Accel::Auto`]: the guest did not boot quickly (KVM present
    /// but broken, e.g. "KVM internal error … emulation failure").
    KvmFailed { reason: String },
}

pub struct Outcome {
    pub end: End,
    pub console: Vec<String>,
    pub elapsed: Duration,
}

/// Boots with `accel` and waits for the result line, at most `timeout`.
///
/// With `kvm_probe` set (KVM under [`Accel::Auto`]), a guest that has not printed its
/// `COPILOT-VM-BOOTED` line within `kvm_probe` is killed and reported as
/// [`End::KvmFailed`]: on this machine kind KVM either hangs or stops the guest with an
/// emulation failure, and qemu keeps running in both cases.
pub fn boot(
    b: &Boot<'_>,
    accel: Accel,
    timeout: Duration,
    kvm_probe: Option<Duration>,
) -> anyhow::Result<Outcome> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .args(["-m", &b.memory_mib.to_string()])
    .args(["-smp", &b.smp.to_string()])
    .arg("-kernel")
    .arg(b.kernel)
    .arg("-initrd")
    .arg(b.initrd)
    // panic=-1: reboot at once on a panic, which -no-reboot turns into qemu exiting.
    // quiet: kernel messages below KERN_ERR stay off the console (OOM kills still show).
    .args(["-append", "console=ttyS0 panic=-1 quiet oops=panic"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match accel {
        Accel::Kvm | Accel::Auto => {
            qemu.args(["-accel", "kvm"]);
        }
        Accel::Tcg => {
            // One host thread per vCPU (the default for x86 on x86, spelled out).
            qemu.args(["-accel", "tcg,thread=multi"]);
        }
    }
    eprintln!("xtask: vm: $ {}", crate::cmd::display(&qemu));
    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .context("spawning qemu-system-x86_64 (run `cargo xtask setup`)")?;
    let mut log = File::create(&b.log).with_context(|| format!("creating {}", b.log.display()))?;
    let (tx, rx) = channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send(format!("qemu: {line}")).is_err() {
                break;
            }
        }
    });

    let deadline = start + timeout;
    let mut console = Vec::new();
    let mut booted = false;
    let end = loop {
        let now = Instant::now();
        let probe_deadline = kvm_probe.filter(|_| !booted).map(|p| start + p);
        let until = probe_deadline.map_or(deadline, |p| p.min(deadline));
        match rx.recv_timeout(until.saturating_duration_since(now)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if b.verbose || interesting(&line) {
                    eprintln!("vm| {line}");
                }
                if line.starts_with("COPILOT-VM-BOOTED") {
                    booted = true;
                }
                if kvm_probe.is_some() && line.contains("KVM internal error") {
                    kill(&mut child);
                    break End::KvmFailed {
                        reason: line.clone(),
                    };
                }
                if let Some(rest) = line.strip_prefix("COPILOT-VM-RESULT: ") {
                    let pass = rest == "pass";
                    console.push(line.clone());
                    // The guest powers off by itself; don't wait long for it.
                    wait_or_kill(&mut child, Duration::from_secs(10));
                    break End::Result { pass, line };
                }
                console.push(line);
            }
            Err(RecvTimeoutError::Timeout) => {
                kill(&mut child);
                if probe_deadline.is_some_and(|p| Instant::now() >= p) && !booted {
                    break End::KvmFailed {
                        reason: format!(
                            "no boot within {:?} under KVM",
                            kvm_probe.unwrap_or_default()
                        ),
                    };
                }
                break End::TimedOut {
                    after: start.elapsed(),
                };
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .map_or_else(|e| format!("wait failed: {e}"), |s| s.to_string());
                if kvm_probe.is_some() && !booted {
                    break End::KvmFailed {
                        reason: format!("qemu exited ({status}) before the guest booted"),
                    };
                }
                break End::Exited { status };
            }
        }
    };
    Ok(Outcome {
        end,
        console,
        elapsed: start.elapsed(),
    })
}

/// Console lines worth showing while the VM runs.
fn interesting(line: &str) -> bool {
    // The probe's JSON lines are many and long: they stay in the log.
    (line.starts_with("COPILOT-VM-") && !line.contains(" {\""))
        || line.starts_with("test ")
        || line.starts_with("test result:")
        || line.starts_with("qemu: ")
        || line.contains("panicked at")
        || line.contains("Kernel panic")
        || line.contains("BUG:")
        || line.contains("attached")
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_or_kill(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(child);
}
