//! flytekit (PyPI, the SDK Flyte tasks are written with) as the real client:
//! inputs made from Python values with flytekit's TypeEngine (blobs uploaded by
//! flytekit itself) are downloaded by `copilot download`; outputs a task leaves
//! are uploaded by `copilot sidecar` against an interface flytekit generated, and
//! read back by flytekit into Python values. Inputs come from a `file://` folder;
//! outputs go to a real S3 server (moto), which flytekit reads with its own s3fs
//! client (flytekit takes a `file://` blob URI for a local path and cannot read it).
use std::{path::Path, process::Command};

use integration_test::{Moto, arg, copilot_bin, flytekit, flytekit_json};
use serde_json::json;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn inputs_flytekit_made_download_to_the_same_values() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = root.path().join("store");
    std::fs::create_dir_all(&store).expect("mkdir");
    let pb = store.join("inputs.pb");
    let made = flytekit_json(&["inputs", arg(&store), arg(&pb)], &[]);
    let dir = root.path().join("inputs");
    let out = Command::new(copilot_bin())
        .arg("download")
        .arg("--from-remote")
        .arg(format!("file://{}", pb.display()))
        .arg("--to-output-prefix")
        .arg(format!("file://{}/out", store.display()))
        .arg("--to-local-dir")
        .arg(&dir)
        .output()
        .expect("run copilot download");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One file per input, in the text forms the Go binary writes.
    for (name, text) in [
        ("n", "42"),
        ("f", "2.5"),
        ("whole", "3"),
        ("s", "hello world"),
        ("b", "true"),
        ("t", "2024-01-02T03:04:05.5Z"),
        ("d", "1h2m3.5s"),
        ("xs/0", "1"),
        ("xs/2", "3"),
        ("m/a", "1"),
        ("m/b", "2"),
    ] {
        assert_eq!(read(&dir.join(name)), text, "{name}");
    }
    assert_eq!(json!({"file": read(&dir.join("blob"))}), made["blob"]);
    assert_eq!(
        json!({"dir": {"one.txt": read(&dir.join("dir/one.txt")), "sub/two.txt": read(&dir.join("dir/sub/two.txt"))}}),
        made["dir"]
    );

    // inputs.json holds the same values as flytekit's Python ones.
    let values: serde_json::Value =
        serde_json::from_str(&read(&dir.join("inputs.json"))).expect("inputs.json");
    for name in ["n", "f", "s", "b", "xs", "m"] {
        assert_eq!(values[name], made[name], "{name}");
    }
    assert_eq!(values["whole"], json!(3), "a whole float as Go writes it");
    let nanos = made["d"].as_f64().expect("seconds") * 1e9;
    assert_eq!(
        values["d"],
        json!(nanos as i64),
        "a duration in nanoseconds"
    );
    assert_eq!(
        values["blob"],
        json!(dir.join("blob").to_str().expect("utf-8"))
    );
}

#[test]
fn outputs_a_task_left_read_back_with_flytekit() {
    let root = tempfile::tempdir().expect("tempdir");
    let outputs = root.path().join("outputs");
    for (rel, text) in [
        ("n", "7\n"),
        ("f", "1.25"),
        ("s", "text"),
        ("b", "false"),
        ("t", "2024-05-06T07:08:09Z"),
        ("d", "1m30s"),
        ("xs/0", "4"),
        ("xs/1", "5"),
        ("xs/2", "6"),
        ("blob", "payload"),
        ("dir/a.txt", "A"),
        ("dir/sub/b.txt", "B"),
    ] {
        let path = outputs.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }
    let moto = Moto::start();
    moto.create_bucket("flyte");
    let interface = flytekit(&["interface"], &[]);
    let out = Command::new(copilot_bin())
        .args(moto.flags())
        .envs(Moto::env())
        .arg("sidecar")
        .args(["--to-output-prefix", "s3://flyte/exec/out"])
        .args(["--to-raw-output", "s3://flyte/exec/raw"])
        .arg("--from-local-dir")
        .arg(&outputs)
        .args(["--interface", &interface])
        .args([
            "--start-watcher-type",
            "noop",
            "--exit-watcher-type",
            "noop",
        ])
        .args(["--after-upload", "exit"])
        .output()
        .expect("run copilot sidecar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = moto
        .get("s3://flyte/exec/out/outputs.pb")
        .expect("outputs.pb written");
    let local = root.path().join("outputs.pb");
    std::fs::write(&local, doc).expect("write");
    // flytekit's own S3 settings (its legacy environment names).
    let env = [
        ("FLYTE_AWS_ENDPOINT", moto.endpoint()),
        ("FLYTE_AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("FLYTE_AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    let read_back = flytekit_json(&["outputs", arg(&local)], &env);
    assert_eq!(
        read_back,
        json!({
            "n": 7,
            "f": 1.25,
            "s": "text",
            "b": false,
            "t": "2024-05-06T07:08:09+00:00",
            "d": 90.0,
            "xs": [4, 5, 6],
            "blob": {"file": "payload"},
            "dir": {"dir": {"a.txt": "A", "sub/b.txt": "B"}},
        })
    );
}
