//! Large outputs under the memory limit propeller gives the uploader (128 MiB,
//! `flytek8s/copilot.go`'s default resources): 100 files of 10 MiB (1000 MiB in
//! all) uploaded to a real S3 server (moto) by `copilot sidecar` running in a
//! memory cgroup of that limit. Before the upload buffers had a budget, 32
//! files were read whole at once (320 MiB) and the sidecar was OOM-killed.
//!
//! Its own test binary: the peak RSS is taken from `getrusage(RUSAGE_CHILDREN)`,
//! which must see no other child of this process that has been waited for.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{LiteralMap, TypedInterface, Variable, VariableMap},
};
use integration_test::{MemoryCgroup, Moto, children_peak_rss, copilot_bin, preflight};
use prost::Message as _;

const LIMIT: u64 = 128 * 1024 * 1024;
const FILES: usize = 100;
const FILE_BYTES: u64 = 10 * 1024 * 1024;

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

#[test]
fn a_gigabyte_of_outputs_uploads_under_128_mib() {
    preflight();
    let moto = Moto::start();
    moto.create_bucket("flyte");
    let work = tempfile::tempdir().expect("tempdir");
    make_outputs(work.path());
    let cgroup = MemoryCgroup::new(LIMIT);
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
    cgroup.place(&mut cmd);
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
