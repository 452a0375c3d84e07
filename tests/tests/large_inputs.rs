//! Large inputs under the memory limit propeller gives the downloader (128 MiB,
//! `flytek8s/copilot.go`'s default resources), with `copilot download` in a memory
//! cgroup of that limit. Before the budget, a 200 MB inputs.pb peaked at 1.56 GB
//! and a large offloaded literal was read whole: OOM-killed, no error document.
//! Now what fits downloads (its peak printed beside copilot's estimate), and what
//! cannot fit is refused up front with an `InputDownloadFailed` that says why.
//!
//! Its own test binary: the peak RSS is taken from `getrusage(RUSAGE_CHILDREN)`.
use std::{path::Path, process::Stdio};

use copilot::{
    literals::{
        budget::{BYTE_COST, LITERAL_COST},
        make,
    },
    proto::core::{Literal, LiteralMap},
};
use integration_test::{FileTask, MemoryCgroup, children_peak_rss, preflight};
use prost::Message as _;

const LIMIT: u64 = 128 * 1024 * 1024;

struct Case {
    task: FileTask,
}

impl Case {
    fn new(inputs: &LiteralMap) -> Self {
        Self {
            task: FileTask::new(inputs),
        }
    }

    fn store(&self) -> std::path::PathBuf {
        self.task.store()
    }

    /// Runs the download in a fresh 128 MiB cgroup: (success, stderr, OOM kills).
    fn run(&self) -> (bool, String, u64) {
        let cgroup = MemoryCgroup::new(LIMIT);
        let mut cmd = self.task.download();
        cmd.stdin(Stdio::null());
        cgroup.place(&mut cmd);
        let out = cmd.output().expect("running copilot download");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stderr, cgroup.oom_kills())
    }

    fn error_message(&self) -> String {
        let error = self.task.error_document().error.expect("an error");
        assert_eq!(error.code, "InputDownloadFailed");
        error.message
    }

    fn refused(&self, what: &str, expect: &[&str]) {
        let (ok, stderr, ooms) = self.run();
        assert_eq!(ooms, 0, "{what}: OOM-killed instead of refused\n{stderr}");
        assert!(!ok, "{what}: must be refused\n{stderr}");
        let message = self.error_message();
        for text in expect {
            assert!(message.contains(text), "{what}: {text:?} not in {message}");
        }
        assert!(
            !self.task.inputs_dir().join("x").exists(),
            "{what}: partial inputs"
        );
    }
}

fn strings(n: usize) -> LiteralMap {
    make::literal_map([(
        "x",
        make::collection((0..n).map(|i| make::string(format!("{i:0100}"))).collect()),
    )])
}

#[test]
fn inputs_that_fit_download_and_the_rest_are_refused_before_they_are_decoded() {
    preflight();
    // 1. Fits: 50,000 strings of 100 bytes (5.4 MB), a file each.
    let inputs = strings(50_000);
    let (bytes, literals) = (inputs.encoded_len() as u64, 50_001u64);
    let estimate = bytes * BYTE_COST + literals * LITERAL_COST;
    let case = Case::new(&inputs);
    let (ok, stderr, ooms) = case.run();
    let peak = children_peak_rss();
    eprintln!(
        "large inputs: {bytes} bytes, {literals} literals: peak RSS {:.1} MiB, copilot's estimate {:.1} MiB (limit {} MiB)",
        peak as f64 / f64::from(1 << 20),
        estimate as f64 / f64::from(1 << 20),
        LIMIT >> 20
    );
    assert_eq!(ooms, 0, "OOM-killed under the limit\n{stderr}");
    assert!(ok, "{stderr}");
    assert!(peak < LIMIT, "peak {peak}");
    assert!(
        peak <= estimate + copilot::download::RESERVED_BYTES,
        "the estimate ({estimate}) must not be below the real peak ({peak})"
    );
    let item = std::fs::read_to_string(case.task.inputs_dir().join("x/49999")).expect("item");
    assert_eq!(item, format!("{:0100}", 49_999));

    // 2. A million integers in 10 MB: small on the wire, a gigabyte materialised.
    let ints = make::literal_map([(
        "x",
        make::collection((0..1_000_000).map(make::integer).collect()),
    )]);
    Case::new(&ints).refused(
        "a million integers",
        &["do not fit in memory", "1000001 literals", "128 MiB"],
    );

    // 3. A 200 MB inputs.pb: never read past what could fit.
    let big = make::literal_map([("x", make::binary(vec![7u8; 200 << 20], ""))]);
    Case::new(&big).refused("a 200 MB inputs.pb", &["do not fit in memory", "128 MiB"]);

    // 4. A 300 MB offloaded literal.
    let case = Case::new(&LiteralMap::default());
    let offloaded = case.store().join("offloaded.pb");
    write_literal(&offloaded, &make::binary(vec![9u8; 300 << 20], ""));
    let inputs = make::literal_map([(
        "x",
        make::offloaded(format!("file://{}", offloaded.display())),
    )]);
    std::fs::write(case.store().join("inputs.pb"), inputs.encode_to_vec()).expect("write");
    case.refused(
        "a 300 MB offloaded literal",
        &["offloaded literal", "does not fit in memory", "128 MiB"],
    );
}

fn write_literal(path: &Path, lit: &Literal) {
    std::fs::write(path, lit.encode_to_vec()).expect("write the offloaded literal");
}
