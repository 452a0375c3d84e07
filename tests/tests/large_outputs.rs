//! Large outputs under the memory limit propeller gives the uploader (128 MiB,
//! `flytek8s/copilot.go`'s default resources): 100 files of 10 MiB (1000 MiB in
//! all) uploaded to a real S3 server (moto) by `copilot sidecar` running in a
//! memory cgroup of that limit. Before the upload buffers had a budget, 32
//! files were read whole at once (320 MiB) and the sidecar was OOM-killed.
//!
//! Its own test binary: the peak RSS is taken from `getrusage(RUSAGE_CHILDREN)`,
//! which must see no other child of this process that has been waited for.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{LiteralMap, TypedInterface, Variable, VariableMap},
};
use integration_test::{Moto, cgroup2_mount, copilot_bin, preflight, random_hex, v1_mounts};
use prost::Message as _;

const LIMIT: u64 = 128 * 1024 * 1024;
const FILES: usize = 100;
const FILE_BYTES: u64 = 10 * 1024 * 1024;

/// A memory cgroup limited to [`LIMIT`] (v1 where the memory controller is there,
/// as on this hybrid host, else v2); removed on drop.
struct MemoryCgroup {
    dir: PathBuf,
    v1: bool,
}

impl MemoryCgroup {
    fn new() -> Self {
        let name = format!("copilot-test-mem-{}", random_hex(6));
        let v1 = v1_mounts()
            .into_iter()
            .find(|(_, options)| options.split(',').any(|o| o == "memory"));
        let (dir, v1, limit_file) = match v1 {
            Some((mount, _)) => (mount.join(&name), true, "memory.limit_in_bytes"),
            None => (cgroup2_mount().join(&name), false, "memory.max"),
        };
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        std::fs::write(dir.join(limit_file), LIMIT.to_string())
            .unwrap_or_else(|e| panic!("limiting {}: {e}", dir.display()));
        Self { dir, v1 }
    }

    /// OOM kills in the cgroup so far.
    fn oom_kills(&self) -> u64 {
        let file = if self.v1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn interface() -> String {
    let iface = TypedInterface {
        inputs: None,
        outputs: Some(VariableMap {
            variables: [(
                "data".to_string(),
                Variable {
                    r#type: Some(make::blob_literal_type("", true)),
                    ..Variable::default()
                },
            )]
            .into(),
        }),
    };
    base64::engine::general_purpose::STANDARD.encode(iface.encode_to_vec())
}

fn make_outputs(dir: &Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for i in 0..FILES {
        let mut f = std::fs::File::create(data.join(format!("part-{i:03}"))).expect("create");
        for _ in 0..FILE_BYTES / chunk.len() as u64 {
            std::io::Write::write_all(&mut f, &chunk).expect("write");
        }
    }
}

/// The peak RSS of this process's waited-for children, in bytes.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

#[test]
fn a_gigabyte_of_outputs_uploads_under_128_mib() {
    preflight();
    let moto = Moto::start();
    moto.create_bucket("flyte");
    let work = tempfile::tempdir().expect("tempdir");
    make_outputs(work.path());
    let cgroup = MemoryCgroup::new();
    let procs = cgroup.dir.join("cgroup.procs");
    let mut cmd = Command::new(copilot_bin());
    cmd.args(moto.flags())
        .args([
            "sidecar",
            "--after-upload",
            "exit",
            "--to-output-prefix",
            "s3://flyte/big/out",
            "--to-raw-output",
            "s3://flyte/big/raw",
            "--from-local-dir",
        ])
        .arg(work.path())
        .args(["--interface", &interface()])
        .args([
            "--start-watcher-type",
            "noop",
            "--exit-watcher-type",
            "noop",
        ])
        .envs(Moto::env())
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null());
    let procs_c = std::ffi::CString::new(procs.to_string_lossy().as_bytes()).expect("no NUL");
    // SAFETY: only async-signal-safe calls (open, write, close) on memory made before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs_c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != 2 {
                return Err(err);
            }
            Ok(())
        });
    }
    let started = std::time::Instant::now();
    let out = cmd.output().expect("running copilot sidecar");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let peak = children_peak_rss();
    eprintln!(
        "large outputs: {} MiB in {elapsed:.1?}, peak RSS {:.1} MiB (limit {} MiB)",
        (FILES as u64 * FILE_BYTES) >> 20,
        peak as f64 / (1 << 20) as f64,
        LIMIT >> 20
    );
    assert_eq!(
        cgroup.oom_kills(),
        0,
        "OOM-killed under the limit\n{stderr}"
    );
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert!(
        peak < LIMIT * 3 / 4,
        "peak RSS {peak} bytes is too close to the {LIMIT} limit"
    );
    let listed = moto.list("s3://flyte/big/raw/data/");
    assert_eq!(listed.len(), FILES, "{listed:?}");
    assert!(
        listed.iter().all(|(_, size)| *size == FILE_BYTES),
        "{listed:?}"
    );
    let doc = moto
        .get("s3://flyte/big/out/outputs.pb")
        .expect("outputs.pb written");
    let map = LiteralMap::decode(doc.as_slice()).expect("outputs.pb decodes");
    assert_eq!(
        map.literals["data"],
        make::blob("s3://flyte/big/raw/data", "", true)
    );
}
