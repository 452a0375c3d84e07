//! Whole Flyte tasks run as pods, through the pod runner (`integration_test::RunningPod`),
//! which runs a Pod spec on runc the way the kubelet does: `deploy/pod.yaml` as users
//! deploy it, and the pod propeller builds (`tests/pods/propeller-stock.yaml`). The
//! store is a real S3 server (moto) on loopback, so the pods use the host's network;
//! copilot runs from the copilot image in its own PID, mount and cgroup namespaces,
//! without hostPID, each test on a bpffs of its own (a fresh node).
use std::time::Duration;

use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{
        LiteralMap, TypedInterface, Variable, VariableMap, container_error, execution_error,
        literal, primitive, scalar,
    },
};
use integration_test::{
    Phase, PodStatus, RunningPod, arg, flytekit, flytekit_json,
    task_pod::{
        DOWNLOADER, TestNode, UPLOADER, deploy_pod, flag, init_container, init_container_mut,
        manifest, output_prefix,
    },
};
use k8s_openapi::api::core::v1::Container;
use prost::Message as _;

fn integer(map: &LiteralMap, name: &str) -> i64 {
    let lit = map
        .literals
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"));
    match &lit.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => match p.value {
                Some(primitive::Value::Integer(i)) => i,
                ref other => panic!("{name}: {other:?}"),
            },
            other => panic!("{name}: {other:?}"),
        },
        other => panic!("{name}: {other:?}"),
    }
}

fn uploader_log(status: &PodStatus) -> &str {
    &status.container(UPLOADER).logs
}

/// A container that runs until SIGTERM (a mesh proxy, an agent), exec'ing `sleep` 20
/// times a second: an exec of a child after copilot's programs were loaded once made
/// that child the container's recorded main, and its exit the container's.
fn proxy(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some("docker.io/library/busybox:1.37".into()),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; while true; do sleep 0.05; done".into(),
        ]),
        ..Container::default()
    }
}

/// The task of `deploy/pod.yaml`, whole, with flytekit as the client: the input made
/// by flytekit's TypeEngine, the output read back by it. The sidecar starts first and
/// its startup probe holds the rest back; the downloader writes `n`; main writes
/// `n * 6`; the sidecar sees main's exit in the kernel and uploads before the
/// kubelet's relist would tell it, then idles until SIGTERM and exits 0.
#[test]
fn deploy_pod_runs_a_whole_task_flytekit_reads_back() {
    let node = TestNode::new();
    let config = node.prepare(manifest("deploy/pod.yaml"), 0);
    let work = tempfile::tempdir().expect("tempdir");
    let inputs_pb = work.path().join("inputs.pb");
    flytekit(&["scalars", arg(&inputs_pb), r#"{"n": 7}"#], &[]);
    let inputs = flag(init_container(&config.pod, DOWNLOADER), "--from-remote");
    node.moto
        .put(&inputs, std::fs::read(&inputs_pb).expect("inputs.pb"));
    let prefix = output_prefix(&config);
    let iface = flag(init_container(&config.pod, UPLOADER), "--interface");
    let status = RunningPod::start(config).wait();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    let outputs = node
        .moto
        .get(&format!("{prefix}/outputs.pb"))
        .unwrap_or_else(|| panic!("no outputs.pb: {status:#?}"));
    let outputs_pb = work.path().join("outputs.pb");
    std::fs::write(&outputs_pb, outputs).expect("write");
    let values = flytekit_json(&["values", arg(&outputs_pb), &iface], &[]);
    assert_eq!(values, serde_json::json!({"answer": 42}));
    assert!(node.error(&prefix).is_none(), "no errors.pb");
    let up = status.container(UPLOADER);
    assert_eq!((up.exit_code, up.restarts), (0, 0), "{}", up.logs);
    assert_eq!(status.container(DOWNLOADER).exit_code, 0);
    assert_eq!(status.container("main").exit_code, 0);
    let log = uploader_log(&status);
    let result = node
        .status()
        .unwrap_or_else(|| panic!("no status file: {log}"));
    assert!(
        result.main.is_some(),
        "main container found: {result:?}\n{log}"
    );
    // Uploaded before the kubelet could notice main's exit (its next relist, 1 s).
    let since_exit = result
        .since_exit_ms
        .unwrap_or_else(|| panic!("no since_exit_ms in {result:?}: {log}"));
    assert!(since_exit < 1000.0, "{since_exit} ms");
}

/// The uploader killed (SIGKILL, as an eviction of the container or an OOM kill would)
/// while main runs: the kubelet restarts it, and the restarted copilot still sees main
/// exit and uploads; nothing is lost and there is no errors.pb.
#[test]
fn an_uploader_killed_while_main_runs_is_restarted_and_uploads() {
    let node = TestNode::new();
    let mut pod = manifest("deploy/pod.yaml");
    let spec = pod.spec.as_mut().expect("spec");
    let main = &mut spec.containers[0];
    main.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "sleep 4; echo $(( $(cat /var/flyte/inputs/n) * 6 )) > /var/flyte/outputs/answer".into(),
    ]);
    let config = node.prepare(pod, 5);
    let prefix = output_prefix(&config);
    let running = RunningPod::start(config);
    std::thread::sleep(Duration::from_secs(2));
    running.kill(UPLOADER, libc::SIGKILL);
    let status = running.wait();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    assert_eq!(status.container(UPLOADER).restarts, 1, "{status:#?}");
    assert_eq!(
        integer(&node.outputs(&prefix).expect("outputs.pb"), "answer"),
        30
    );
    assert!(node.error(&prefix).is_none(), "no errors.pb");
}

/// `kubectl delete pod` while main runs, as the kubelet does it since native sidecars
/// (1.29): main first, and a main that ignores SIGTERM (a shell as pid 1 does) is
/// killed when the grace period is spent; the sidecars after it. The sidecar reports
/// the kill as it saw it, recoverable, and uploads nothing. (A sidecar that gets
/// SIGTERM while main still runs, as before 1.29, writes `UploadCutShort`:
/// `tests/tests/sidecar.rs`.)
#[test]
fn a_pod_deleted_while_main_runs_keeps_mains_kill() {
    let node = TestNode::new();
    let mut pod = manifest("deploy/pod.yaml");
    let spec = pod.spec.as_mut().expect("spec");
    spec.termination_grace_period_seconds = Some(3);
    spec.containers[0].command = Some(vec!["sleep".into(), "600".into()]);
    let config = node.prepare(pod, 1);
    let prefix = output_prefix(&config);
    let running = RunningPod::start(config);
    std::thread::sleep(Duration::from_secs(3));
    running.delete();
    let status = running.wait();
    assert_eq!(status.phase, Phase::Failed, "{status:#?}");
    assert_eq!(status.container("main").exit_code, 137, "{status:#?}");
    assert!(node.outputs(&prefix).is_none(), "no outputs.pb");
    let error = node.error(&prefix).expect("errors.pb");
    assert_eq!(error.code, "ContainerKilled", "{error:?}");
    assert!(error.message.contains("SIGKILL"), "{error:?}");
    assert_eq!(
        error.kind(),
        container_error::Kind::Recoverable,
        "Flyte retries it"
    );
}

/// The pod propeller v1.16.8 builds, unchanged but for the store and the uploader's
/// status folder (`TestNode::prepare`: a `hostPath` volume and `--status-file`)
/// (`tests/pods/propeller-stock.yaml`, each field with its source line): no
/// capabilities, no other host mounts, no env, no probe. copilot cannot load eBPF there, says
/// so once, and does what the Go binary's `signal` watcher does: it uploads when the
/// kubelet's SIGTERM comes, once main has ended.
#[test]
fn propellers_stock_pod_uploads_on_sigterm() {
    let node = TestNode::new();
    let mut config = node.prepare(manifest("tests/pods/propeller-stock.yaml"), 7);
    // Every container has requests = limits: a Guaranteed pod, kubepods/pod<uid>.
    config.layout = integration_test::Layout::Guaranteed;
    let prefix = output_prefix(&config);
    let status = RunningPod::start(config).wait();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    let outputs = node
        .outputs(&prefix)
        .unwrap_or_else(|| panic!("no outputs.pb: {status:#?}"));
    assert_eq!(integer(&outputs, "answer"), 42);
    assert!(node.error(&prefix).is_none(), "no errors.pb");
    let log = uploader_log(&status);
    assert!(log.contains("falling back to the signal watcher"), "{log}");
    assert_eq!(log.matches("falling back").count(), 1, "said once: {log}");
    assert_eq!(status.container(UPLOADER).exit_code, 0, "{log}");
}

/// A native-sidecar proxy started before copilot (as Istio injects one): it is running,
/// unseen, when copilot looks; main is still found and the task succeeds at main's exit.
#[test]
fn a_proxy_sidecar_started_first_does_not_stop_the_task() {
    let node = TestNode::new();
    let mut pod = manifest("deploy/pod.yaml");
    let spec = pod.spec.as_mut().expect("spec");
    let mut mesh = proxy("istio-proxy");
    // Busy: an exec every few ms, so that one lands between the moment copilot's
    // programs are loaded and its snapshot of the pod.
    mesh.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM; while true; do /bin/true; /bin/sleep 0.002; done".into(),
    ]);
    mesh.restart_policy = Some("Always".into());
    spec.init_containers.get_or_insert_default().insert(0, mesh);
    let config = node.prepare(pod, 2);
    let prefix = output_prefix(&config);
    let status = RunningPod::start(config).wait();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    assert_eq!(
        integer(&node.outputs(&prefix).expect("outputs.pb"), "answer"),
        12
    );
    assert!(node.error(&prefix).is_none(), "no errors.pb");
    let log = uploader_log(&status);
    let result = node
        .status()
        .unwrap_or_else(|| panic!("no status file: {log}"));
    assert!(
        result.main.is_some(),
        "main container found: {result:?}\n{log}"
    );
    assert_eq!(status.container("istio-proxy").exit_code, 0);
}

/// A second regular container (an agent that ends a little after main): once both run,
/// the main container cannot be told apart, so copilot uploads on SIGTERM, once both
/// ended. (One that starts only after main has exited cannot be foreseen: copilot has
/// uploaded by then; see the README.)
#[test]
fn a_second_regular_container_falls_back_to_sigterm() {
    let node = TestNode::new();
    let mut pod = deploy_pod(
        "sleep 1; echo $(( $(cat /var/flyte/inputs/n) * 6 )) > /var/flyte/outputs/answer",
    );
    let spec = pod.spec.as_mut().expect("spec");
    let mut agent = proxy("agent");
    agent.command = Some(vec!["sh".into(), "-c".into(), "sleep 2".into()]);
    spec.containers.push(agent);
    let config = node.prepare(pod, 3);
    let prefix = output_prefix(&config);
    let status = RunningPod::start(config).wait();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    assert_eq!(
        integer(&node.outputs(&prefix).expect("outputs.pb"), "answer"),
        18
    );
    let log = uploader_log(&status);
    assert!(log.contains("uploading on SIGTERM instead"), "{log}");
}

/// The failures a task can end in, as the pod shows them and as errors.pb says them:
/// the exit and reason of main in the pod status, errors.pb's code and kind. Where Flyte
/// reads errors.pb (the pod succeeded: `_ERROR`, a missing output) it is what the Go
/// binary writes: `OutputUploadFailed`, recoverable, origin unset, so the task's own
/// retries apply. Where the pod failed, Flyte reads the pod status (main's exit code,
/// reason and log tail), and errors.pb adds the cause copilot saw in the kernel.
#[test]
fn failures_reach_flyte_as_go_would_write_them() {
    struct Case {
        script: &'static str,
        memory_limit: Option<&'static str>,
        /// Exit code and reason in the pod status.
        main: (i32, &'static str),
        /// errors.pb.
        code: &'static str,
        kind: container_error::Kind,
    }
    let cases = [
        Case {
            script: "echo 'bad input' > /var/flyte/outputs/_ERROR",
            memory_limit: None,
            main: (0, "Completed"),
            code: "OutputUploadFailed",
            kind: container_error::Kind::Recoverable,
        },
        Case {
            script: "true",
            memory_limit: None,
            main: (0, "Completed"),
            code: "OutputUploadFailed",
            kind: container_error::Kind::Recoverable,
        },
        Case {
            script: "echo failing >&2; exit 3",
            memory_limit: None,
            main: (3, "Error"),
            code: "NonZeroExitCode",
            kind: container_error::Kind::NonRecoverable,
        },
        Case {
            script: "memhog",
            memory_limit: Some("32Mi"),
            main: (137, "OOMKilled"),
            code: "OOMKilled",
            kind: container_error::Kind::Recoverable,
        },
    ];
    for Case {
        script,
        memory_limit: limit,
        main: (code, reason),
        code: error_code,
        kind,
    } in cases
    {
        // A node each: a sidecar that finds an errors.pb at its prefix writes nothing.
        let node = TestNode::new();
        let mut pod = deploy_pod(script);
        let main = &mut pod.spec.as_mut().expect("spec").containers[0];
        main.termination_message_policy = Some("FallbackToLogsOnError".into());
        if let Some(limit) = limit {
            main.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: Some(
                    [(
                        "memory".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(limit.into()),
                    )]
                    .into(),
                ),
                ..Default::default()
            });
        }
        let config = node.prepare(pod, 1);
        let prefix = output_prefix(&config);
        let status = RunningPod::start(config).wait();
        let main = status.container("main");
        assert_eq!(
            (main.exit_code, main.reason.as_str()),
            (code, reason),
            "{script}: {status:#?}"
        );
        if code == 3 {
            assert!(main.message.contains("failing"), "the log tail: {main:?}");
        }
        let error = node
            .error(&prefix)
            .unwrap_or_else(|| panic!("{script}: no errors.pb: {status:#?}"));
        assert_eq!(
            (error.code.as_str(), error.kind()),
            (error_code, kind),
            "{script}: {error:?}"
        );
        assert!(node.outputs(&prefix).is_none(), "{script}: no outputs.pb");
        if code == 0 {
            assert_eq!(
                error.origin(),
                execution_error::ErrorKind::Unknown,
                "{script}: {error:?}"
            );
        }
    }
}

/// 1000 MiB of outputs (100 files of 10 MiB in a multipart blob) uploaded by the
/// uploader of `deploy/pod.yaml` under its own 128 MiB memory limit, enforced by its
/// memory cgroup as the kubelet would: not OOM-killed, every part in the store, and
/// its peak memory printed.
#[test]
fn a_gigabyte_of_outputs_uploads_under_the_uploaders_128_mib() {
    let node = TestNode::new();
    let mut pod = deploy_pod(
        "mkdir /var/flyte/outputs/data && for i in $(seq 0 99); do \
         head -c 10485760 /dev/zero > /var/flyte/outputs/data/part-$i; done",
    );
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
    let iface = base64::engine::general_purpose::STANDARD.encode(iface.encode_to_vec());
    for arg in init_container_mut(&mut pod, UPLOADER)
        .args
        .iter_mut()
        .flatten()
    {
        if arg.starts_with("--interface=") {
            *arg = format!("--interface={iface}");
        }
    }
    let config = node.prepare(pod, 1);
    let prefix = output_prefix(&config);
    let raw = flag(init_container(&config.pod, UPLOADER), "--to-raw-output");
    let status = RunningPod::start(config).wait();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    let up = status.container(UPLOADER);
    assert_eq!(
        (up.exit_code, up.reason.as_str()),
        (0, "Completed"),
        "{}",
        up.logs
    );
    let outputs = node
        .outputs(&prefix)
        .unwrap_or_else(|| panic!("no outputs.pb: {}", up.logs));
    assert!(outputs.literals.contains_key("data"));
    let parts = node.moto.list(&raw);
    assert_eq!(parts.len(), 100, "{parts:?}");
    assert!(parts.iter().all(|(_, size)| *size == 10 << 20), "{parts:?}");
    let limit = 128 << 20;
    println!(
        "uploader peak memory (its cgroup's count, page cache included): {:.1} MiB of its \
         {} MiB limit, for 1000 MiB of outputs",
        up.peak_memory as f64 / f64::from(1 << 20),
        limit >> 20
    );
    assert!(
        up.peak_memory > 0 && up.peak_memory < limit,
        "{}",
        up.peak_memory
    );
}

/// A download that fails (inputs.pb missing): the downloader exits non-zero with its
/// cause as its termination message, which is what propeller shows for a failed init
/// container; main never runs; errors.pb says `InputDownloadFailed`, and the sidecar,
/// terminated with the failed pod, keeps that document.
#[test]
fn a_failed_download_fails_the_pod_with_its_cause() {
    let node = TestNode::new();
    let mut config = node.prepare(manifest("deploy/pod.yaml"), 1);
    let down = init_container_mut(&mut config.pod, DOWNLOADER);
    for arg in down.args.iter_mut().flatten() {
        if let Some(url) = arg.strip_prefix("--from-remote=") {
            *arg = format!("--from-remote={url}.missing");
        }
    }
    let prefix = output_prefix(&config);
    let status = RunningPod::start(config).wait();
    assert_eq!(status.phase, Phase::Failed, "{status:#?}");
    let down = status.container(DOWNLOADER);
    assert_ne!(down.exit_code, 0, "{down:?}");
    assert!(
        down.message.starts_with("input download failed:") && down.message.contains("missing"),
        "the termination message names the cause: {down:?}"
    );
    assert!(!status.containers.contains_key("main"), "main never ran");
    let error = node.error(&prefix).expect("errors.pb");
    assert_eq!(error.code, "InputDownloadFailed", "{error:?}");
    assert_eq!(error.kind(), container_error::Kind::Recoverable);
    assert_eq!(status.container(UPLOADER).exit_code, 0);
}
