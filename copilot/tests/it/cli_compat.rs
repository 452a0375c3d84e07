//! Command lines written for the Go binary, run through the copilot binary on a
//! `file://` store: values propeller or a platform team may pass that copilot must
//! take as Go does (a zero `--timeout`, a `--config` glob, flytestdlib and klog
//! flags), and a bad value that must end in an error document, not a usage error.
use std::{path::Path, process::Command};

use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{ErrorDocument, LiteralMap, SimpleType, TypedInterface, Variable, VariableMap},
};
use prost::Message as _;

fn interface() -> String {
    let iface = TypedInterface {
        inputs: None,
        outputs: Some(VariableMap {
            variables: [(
                "n".to_string(),
                Variable {
                    r#type: Some(make::simple_type(SimpleType::Integer)),
                    ..Variable::default()
                },
            )]
            .into(),
        }),
    };
    base64::engine::general_purpose::STANDARD.encode(iface.encode_to_vec())
}

/// `copilot sidecar` on an outputs folder holding `n` = 7, the exit already seen.
fn sidecar(root: &Path, extra: &[&str]) -> std::process::Output {
    let outputs = root.join("outputs");
    std::fs::create_dir_all(&outputs).expect("mkdir");
    std::fs::write(outputs.join("n"), "7\n").expect("write");
    Command::new(env!("CARGO_BIN_EXE_copilot"))
        .arg("sidecar")
        .arg("--to-output-prefix")
        .arg(format!("file://{}/store/out", root.display()))
        .arg("--to-raw-output")
        .arg(format!("file://{}/store/raw", root.display()))
        .arg("--from-local-dir")
        .arg(&outputs)
        .args(["--interface", &interface()])
        .args([
            "--start-watcher-type",
            "noop",
            "--exit-watcher-type",
            "noop",
        ])
        .args(["--after-upload", "exit"])
        .args(extra)
        .output()
        .expect("run copilot sidecar")
}

#[test]
fn a_zero_upload_timeout_is_no_limit() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = sidecar(root.path(), &["--timeout", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = std::fs::read(root.path().join("store/out/outputs.pb")).expect("outputs.pb");
    let map = LiteralMap::decode(doc.as_slice()).expect("decodes");
    assert_eq!(map.literals["n"], make::integer(7));
}

#[test]
fn a_bad_upload_mode_is_an_error_document() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = sidecar(root.path(), &["--upload-mode", "UPLOAD_SOMETIMES"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the document is the result: {stderr}");
    assert!(!root.path().join("store/out/outputs.pb").exists());
    let bytes = std::fs::read(root.path().join("store/out/errors.pb")).expect("errors.pb");
    let error = ErrorDocument::decode(bytes.as_slice())
        .expect("decodes")
        .error
        .expect("an error");
    assert!(
        error.message.contains("--upload-mode") && error.message.contains("UPLOAD_SOMETIMES"),
        "{}",
        error.message
    );
}

#[test]
fn a_config_glob_and_go_only_flags_are_accepted() {
    let root = tempfile::tempdir().expect("tempdir");
    let conf = root.path().join("conf");
    std::fs::create_dir_all(&conf).expect("mkdir");
    std::fs::write(conf.join("a.yaml"), "storage:\n  type: local\n").expect("write");
    std::fs::write(conf.join("b.yaml"), "logger:\n  level: 5\n").expect("write");
    let store = root.path().join("store");
    std::fs::create_dir_all(&store).expect("mkdir");
    let inputs = make::literal_map([("n", make::integer(1))]);
    std::fs::write(store.join("inputs.pb"), inputs.encode_to_vec()).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_copilot"))
        .arg("--config")
        .arg(conf.join("*.yaml"))
        .args(["--logger.formatter.type=json", "--alsologtostderr", "--v=2"])
        .arg("download")
        .arg("--from-remote")
        .arg(format!("file://{}/inputs.pb", store.display()))
        .arg("--to-output-prefix")
        .arg(format!("file://{}/out", store.display()))
        .arg("--to-local-dir")
        .arg(root.path().join("inputs"))
        .output()
        .expect("run copilot download");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("inputs/n")).expect("n"),
        "1"
    );
}
