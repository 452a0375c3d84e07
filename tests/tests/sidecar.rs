//! Whole tasks, end to end: a pod-like cgroup with a sandbox (`pause`) container, the
//! `copilot sidecar` beside it, a main container started with runc once the sidecar is
//! ready, a real S3 server (moto) on loopback, `copilot download` before the main
//! container; then `outputs.pb` / `errors.pb` are read back from S3 and every value is
//! checked.
//!
//! The sidecar is a host process. In the first test it is moved into its own container
//! cgroup in the pod and given no pod flags, so it infers the pod from its own cgroup and
//! finds the main container by the sibling rule; the others name the pod with
//! `--pod-cgroup` or `--pod-uid` and `--cgroup-root`.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use base64::Engine as _;
use copilot::sidecar::status::{Main, Outcome, Status};
use copilot::{
    literals::make,
    proto::core::{
        ContainerError, ErrorDocument, Literal, LiteralMap, LiteralType, SimpleType,
        TypedInterface, Variable, VariableMap, blob_type::BlobDimensionality, container_error,
        execution_error, literal, primitive, scalar,
    },
};
use integration_test::{
    Bpffs, Container, ContainerOpts, Copilot, Layout, Moto, Mount, Placement, PodCgroup, Trace,
    cgroup2_mount, run_copilot, wait_comm,
};
use prost::Message as _;

/// Generous: a loaded CI machine may be slow, but nothing here should take long.
const T: Duration = Duration::from_secs(20);
const BUCKET: &str = "flyte";
const INPUT_BLOB: &[u8] = b"line one\nline two\n";

/// How the sidecar learns its pod.
#[derive(Clone, Copy, Debug)]
enum PodArgs {
    /// In its own container cgroup, no flags: parent of its own cgroup.
    Inferred,
    /// `--pod-cgroup <path>`.
    Cgroup,
    /// `--pod-uid <uid> --cgroup-root /sys/fs/cgroup`.
    Uid,
    /// `--pod-cgroup` spelled with `..`, `.` and a doubled slash.
    NonCanonical,
    /// As [`PodArgs::Uid`], the sidecar in the pod without hostPID ([`Placement::InPod`]).
    UidInPod,
}

/// One task's world: S3, the pod with its sandbox, the shared volumes.
struct Task {
    /// Declared first: dropped (killed) before the pod and the server go away.
    sidecar: Option<Copilot>,
    main: Option<Container>,
    _sandbox: Container,
    pod: PodCgroup,
    moto: Moto,
    dir: tempfile::TempDir,
    run: String,
    outputs: VariableMap,
}

impl Task {
    /// Starts S3 with the task's inputs and a pod with a running `pause` sandbox.
    fn new(layout: Layout, outputs: VariableMap) -> Self {
        let moto = Moto::start();
        moto.create_bucket(BUCKET);
        let run = format!("s3://{BUCKET}/run-{}", integration_test::random_hex(4));
        moto.put(&format!("{run}/raw-in/data.txt"), INPUT_BLOB);
        let inputs = make::literal_map([
            ("n", make::integer(7)),
            ("name", make::string("world")),
            (
                "data",
                make::blob(format!("{run}/raw-in/data.txt"), "txt", false),
            ),
        ]);
        moto.put(&format!("{run}/inputs.pb"), inputs.encode_to_vec());
        let pod = PodCgroup::new(layout);
        let sandbox = Container::run(&pod, &["pause"], ContainerOpts::default());
        wait_comm(sandbox.pid(), "pause", T);
        let dir = tempfile::Builder::new()
            .prefix("e2e-")
            .tempdir()
            .expect("tempdir");
        for d in ["inputs", "outputs", "run"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        Task {
            sidecar: None,
            main: None,
            _sandbox: sandbox,
            pod,
            moto,
            dir,
            run,
            outputs,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn ready_file(&self) -> PathBuf {
        self.path("run/ready")
    }

    fn interface(&self) -> String {
        let iface = TypedInterface {
            inputs: Some(input_variables()),
            outputs: Some(self.outputs.clone()),
        };
        base64::engine::general_purpose::STANDARD.encode(iface.encode_to_vec())
    }

    /// `copilot download` as the init container would run it; checks the files.
    fn download(&self) {
        let vars =
            base64::engine::general_purpose::STANDARD.encode(input_variables().encode_to_vec());
        let mut args = self.moto.flags();
        args.extend(strings(&[
            "download",
            "--from-remote",
            &format!("{}/inputs.pb", self.run),
            "--to-output-prefix",
            &format!("{}/out", self.run),
            "--to-local-dir",
            &self.path("inputs").to_string_lossy(),
            "--format",
            "JSON",
            "--input-interface",
            &vars,
        ]));
        let (code, stderr) = run_copilot(&args, &Moto::env());
        assert_eq!(code, 0, "copilot download failed:\n{stderr}");
        let read = |name: &str| std::fs::read(self.path("inputs").join(name)).expect(name);
        assert_eq!(read("n"), b"7");
        assert_eq!(read("name"), b"world");
        assert_eq!(read("data"), INPUT_BLOB);
        assert!(self.path("inputs/inputs.pb").is_file());
    }

    /// The sidecar's command line (storage flags, `sidecar`, its flags, `extra`).
    fn sidecar_args(&self, pod: PodArgs, extra: &[&str]) -> Vec<String> {
        let mut args = self.moto.flags();
        args.push("sidecar".into());
        // Most tests want the sidecar's own exit as "done"; the lifecycle tests pass
        // `--after-upload wait-for-sigterm` (the default) themselves.
        if !extra.contains(&"--after-upload") {
            args.extend(strings(&["--after-upload", "exit"]));
        }
        args.extend(strings(&[
            "--to-output-prefix",
            &format!("{}/out", self.run),
            "--to-raw-output",
            &format!("{}/raw", self.run),
            "--from-local-dir",
            &self.path("outputs").to_string_lossy(),
            "--interface",
            &self.interface(),
            "--ready-file",
            &self.ready_file().to_string_lossy(),
            "--timeout",
            "1m",
            "--status-file",
            &self.status_file().to_string_lossy(),
        ]));
        match pod {
            PodArgs::Inferred => {}
            PodArgs::Cgroup => args.extend(strings(&[
                "--pod-cgroup",
                &self.pod.path().to_string_lossy(),
            ])),
            PodArgs::NonCanonical => {
                let path = self.pod.path();
                let name = path.file_name().expect("pod dir name").to_string_lossy();
                let parent = path.parent().expect("pod parent").to_string_lossy();
                args.extend(strings(&[
                    "--pod-cgroup",
                    &format!("{parent}//{name}/../{name}/."),
                ]));
            }
            PodArgs::Uid | PodArgs::UidInPod => {
                // The cgroupfs root as a pod would mount it: /sys/fs/cgroup (the v2 tree is
                // its `unified` child on this hybrid host, or the mount itself).
                let root = if cgroup2_mount().ends_with("unified") {
                    cgroup2_mount().parent().expect("parent")
                } else {
                    cgroup2_mount()
                };
                args.extend(strings(&[
                    "--pod-uid",
                    self.pod.uid(),
                    "--cgroup-root",
                    &root.to_string_lossy(),
                ]));
            }
        }
        args.extend(strings(extra));
        args
    }

    /// Starts the sidecar and waits for its ready file (checking `copilot probe` on both
    /// sides of it).
    fn start_sidecar(&mut self, pod: PodArgs, extra: &[&str]) {
        self.start_sidecar_wrapped(&[], pod, extra);
    }

    /// [`Task::start_sidecar`] under `wrapper` (e.g. `setpriv …`).
    fn start_sidecar_wrapped(&mut self, wrapper: &[&str], pod: PodArgs, extra: &[&str]) {
        let probe = strings(&[
            "probe",
            "--ready-file",
            &self.ready_file().to_string_lossy(),
        ]);
        let (code, stderr) = run_copilot(&probe, &[]);
        assert_eq!(code, 1, "probe before the sidecar is ready: {stderr}");
        assert!(stderr.contains("not ready"), "{stderr}");
        let placement = match pod {
            PodArgs::Inferred => Placement::OwnContainer,
            PodArgs::UidInPod => Placement::InPod,
            PodArgs::Cgroup | PodArgs::Uid | PodArgs::NonCanonical => Placement::Host,
        };
        let mut sidecar = Copilot::spawn_wrapped(
            "sidecar",
            wrapper,
            &self.sidecar_args(pod, extra),
            &Moto::env(),
            &self.pod,
            placement,
        );
        sidecar.wait_for_file(&self.ready_file(), T);
        let (code, stderr) = run_copilot(&probe, &[]);
        assert_eq!(code, 0, "probe after the ready file appeared: {stderr}");
        self.sidecar = Some(sidecar);
    }

    fn status_file(&self) -> PathBuf {
        self.path("run/status.json")
    }

    /// The sidecar's `--status-file`, once it has written it.
    fn status(&self) -> Status {
        Status::read(&self.status_file())
            .unwrap_or_else(|e| panic!("{}: {e}", self.status_file().display()))
    }

    /// How the main container ended, as the status file says; panics (with the log)
    /// if the sidecar saw no exit.
    fn main_seen(&self) -> Main {
        let status = self.status();
        status.main.unwrap_or_else(|| {
            panic!(
                "no main container exit in the status file ({:?}):\n{}",
                status.outcome,
                self.logs()
            )
        })
    }

    /// The sidecar's log so far (for failure messages).
    fn logs(&self) -> String {
        self.sidecar
            .as_ref()
            .map(Copilot::stderr)
            .unwrap_or_default()
    }

    fn sidecar(&mut self) -> &mut Copilot {
        self.sidecar.as_mut().expect("the sidecar was started")
    }

    /// Creates and starts the main container with the inputs at `/in` (read-only) and
    /// the outputs folder at `/out`.
    fn start_main(&mut self, script: &str, opts: ContainerOpts) -> &Container {
        let main = Container::create(&self.pod, &["sh", "-c", script], self.main_opts(opts));
        main.start();
        self.main.insert(main)
    }

    fn main_opts(&self, mut opts: ContainerOpts) -> ContainerOpts {
        opts.mounts.push(Mount {
            source: self.path("inputs"),
            destination: "/in".into(),
            read_only: true,
        });
        opts.mounts.push(Mount {
            source: self.path("outputs"),
            destination: "/out".into(),
            read_only: false,
        });
        opts
    }

    fn wait_main(&self) {
        let main = self.main.as_ref().expect("main container");
        assert!(
            main.wait_exited(T),
            "main container did not exit:\n{}",
            main.output()
        );
    }

    /// Waits for the sidecar to exit and asserts exit code 0.
    fn sidecar_exits_0(&mut self) -> String {
        let code = self.sidecar().exit_code(T);
        let logs = self.sidecar().stderr();
        assert_eq!(code, 0, "sidecar exit code:\n{logs}");
        logs
    }

    fn outputs_pb(&self) -> Option<LiteralMap> {
        self.moto
            .get(&format!("{}/out/outputs.pb", self.run))
            .map(|b| LiteralMap::decode(b.as_slice()).expect("outputs.pb is a LiteralMap"))
    }

    fn errors_pb(&self) -> Option<ErrorDocument> {
        self.moto
            .get(&format!("{}/out/errors.pb", self.run))
            .map(|b| ErrorDocument::decode(b.as_slice()).expect("errors.pb is an ErrorDocument"))
    }

    /// The error document, asserting that there is one and no outputs.pb.
    fn error(
        &self,
    ) -> (
        String,
        String,
        container_error::Kind,
        execution_error::ErrorKind,
    ) {
        assert!(
            self.outputs_pb().is_none(),
            "outputs.pb was written although the task failed"
        );
        let doc = self.errors_pb().expect("errors.pb was written");
        let e = doc.error.expect("ErrorDocument.error");
        (
            e.code,
            e.message,
            container_error::Kind::try_from(e.kind).expect("kind"),
            execution_error::ErrorKind::try_from(e.origin).expect("origin"),
        )
    }

    /// The outputs, asserting that there is no error document.
    fn outputs(&self) -> LiteralMap {
        assert!(
            self.errors_pb().is_none(),
            "errors.pb was written: {:?}",
            self.errors_pb()
        );
        self.outputs_pb().expect("outputs.pb was written")
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn var(ty: LiteralType) -> Variable {
    Variable {
        r#type: Some(ty),
        description: String::new(),
    }
}

fn input_variables() -> VariableMap {
    VariableMap {
        variables: [
            ("n", var(make::simple_type(SimpleType::Integer))),
            ("name", var(make::simple_type(SimpleType::String))),
            ("data", var(make::blob_literal_type("txt", false))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}

/// The mixed outputs of the success scenarios.
fn mixed_outputs() -> VariableMap {
    VariableMap {
        variables: [
            ("answer", var(make::simple_type(SimpleType::Integer))),
            ("ratio", var(make::simple_type(SimpleType::Float))),
            ("greeting", var(make::simple_type(SimpleType::String))),
            ("ok", var(make::simple_type(SimpleType::Boolean))),
            ("report", var(make::blob_literal_type("txt", false))),
            ("parts", var(make::blob_literal_type("", true))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}

fn single_int_output() -> VariableMap {
    VariableMap {
        variables: [(
            "answer".to_string(),
            var(make::simple_type(SimpleType::Integer)),
        )]
        .into_iter()
        .collect(),
    }
}

/// Writes the mixed outputs from the downloaded inputs (the task's work).
const MIXED_SCRIPT: &str = r#"set -e
n=$(cat /in/n)
echo $((n * 6)) > /out/answer
echo 3.25 > /out/ratio
printf 'hello %s' "$(cat /in/name)" > /out/greeting
echo true > /out/ok
cat /in/data /in/data > /out/report
mkdir -p /out/parts/sub
echo alpha > /out/parts/a.txt
echo beta > /out/parts/sub/b.txt"#;

fn primitive(lit: &Literal) -> &primitive::Value {
    match &lit.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => p.value.as_ref().expect("primitive value"),
            other => panic!("not a primitive: {other:?}"),
        },
        other => panic!("not a scalar: {other:?}"),
    }
}

fn blob_uri(lit: &Literal, multipart: bool) -> &str {
    let Some(literal::Value::Scalar(s)) = &lit.value else {
        panic!("not a scalar: {lit:?}")
    };
    let Some(scalar::Value::Blob(b)) = &s.value else {
        panic!("not a blob: {lit:?}")
    };
    let dim = b
        .metadata
        .as_ref()
        .and_then(|m| m.r#type.as_ref())
        .map(|t| t.dimensionality);
    let want = if multipart {
        BlobDimensionality::Multipart
    } else {
        BlobDimensionality::Single
    };
    assert_eq!(dim, Some(want as i32), "{lit:?}");
    &b.uri
}

/// Checks every value of the mixed outputs, and the blobs' content in S3.
fn check_mixed(task: &Task, outputs: &LiteralMap) {
    let names: Vec<&str> = outputs.literals.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["answer", "greeting", "ok", "parts", "ratio", "report"]
    );
    let get = |k: &str| &outputs.literals[k];
    assert_eq!(primitive(get("answer")), &primitive::Value::Integer(42));
    assert_eq!(primitive(get("ratio")), &primitive::Value::FloatValue(3.25));
    assert_eq!(
        primitive(get("greeting")),
        &primitive::Value::StringValue("hello world".into())
    );
    assert_eq!(primitive(get("ok")), &primitive::Value::Boolean(true));
    let report = blob_uri(get("report"), false);
    assert!(
        report.starts_with(&format!("{}/raw/", task.run)),
        "report uploaded under the raw prefix: {report}"
    );
    let mut doubled = INPUT_BLOB.to_vec();
    doubled.extend_from_slice(INPUT_BLOB);
    assert_eq!(task.moto.get(report).expect("report blob"), doubled);
    let parts = blob_uri(get("parts"), true);
    assert_eq!(
        task.moto.list(parts),
        [("a.txt".to_string(), 6), ("sub/b.txt".to_string(), 5)],
        "multipart blob keeps its nesting"
    );
    assert_eq!(
        task.moto
            .get(&format!("{parts}/sub/b.txt"))
            .expect("nested part"),
        b"beta\n"
    );
}

/// The exit the sidecar acted on (its status file) is the main process's (runc's
/// `pid`), not one of runc's own short-lived processes in the container cgroup.
fn assert_main_pid(task: &Task) {
    let pid = task.main.as_ref().expect("main").pid();
    let seen = task.main_seen();
    assert_eq!(
        seen.pid,
        Some(pid),
        "the sidecar took another process's exit for main's (main pid {pid}): {seen:?}"
    );
}

/// The sidecar picked the task's main container and saw it exit 0 with its pid (its
/// status file).
fn assert_main_found_and_exited_0(task: &Task) {
    let main_id = task.main.as_ref().expect("main").id();
    let seen = task.main_seen();
    assert!(
        seen.container
            .as_deref()
            .is_some_and(|c| c.contains(main_id)),
        "picked the wrong container: {seen:?}"
    );
    assert_eq!(seen.exit_code, Some(0), "{seen:?}");
    assert_main_pid(task);
}

fn log_line<'a>(logs: &'a str, needle: &str) -> &'a str {
    logs.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{logs}"))
}

/// The whole happy path, with the sidecar in its own container cgroup of the pod and no
/// pod flags: it infers the pod from its own cgroup and picks the main container by the
/// sibling rule (not the `pause` sandbox, not itself).
#[test]
fn success_mixed_outputs_sibling_rule() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    task.start_sidecar(PodArgs::Inferred, &[]);
    let own = task
        .sidecar()
        .own_cgroup()
        .expect("own container")
        .to_path_buf();
    assert!(own.starts_with(task.pod.path()));
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    let logs = task.sidecar_exits_0();
    assert_main_found_and_exited_0(&task);
    assert!(
        log_line(&logs, "attached to the pod").contains(&*task.pod.path().to_string_lossy()),
        "pod inferred from the own cgroup"
    );
    let outputs = task.outputs();
    check_mixed(&task, &outputs);
    let status = task.status();
    assert_eq!(status.outcome, Outcome::Outputs, "{status:?}");
    assert_eq!(status.main.as_ref().and_then(|m| m.exit_code), Some(0));
    let ms = status
        .since_exit_ms
        .expect("since_exit_ms in the status file");
    eprintln!("E2E TIMING success_mixed_outputs_sibling_rule: main exit -> outputs.pb {ms:.1} ms");
    assert!(ms > 0.0 && ms < 10_000.0, "{ms} ms");
}

/// The same task in the systemd layout, the pod found by its UID under --cgroup-root.
#[test]
fn success_systemd_layout_pod_uid() {
    let mut task = Task::new(Layout::Systemd, mixed_outputs());
    task.download();
    task.start_sidecar(PodArgs::Uid, &[]);
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    task.sidecar_exits_0();
    assert_main_pid(&task);
    let outputs = task.outputs();
    check_mixed(&task, &outputs);
    let status = task.status();
    assert_eq!(status.outcome, Outcome::Outputs, "{status:?}");
    assert_eq!(status.main.as_ref().and_then(|m| m.exit_code), Some(0));
    let ms = status
        .since_exit_ms
        .expect("since_exit_ms in the status file");
    eprintln!("E2E TIMING success_systemd_layout_pod_uid: main exit -> outputs.pb {ms:.1} ms");
}

/// No hostPID: the sidecar runs in the pod as pid 1 of its own PID namespace, in its
/// own mount and cgroup namespaces, without tracefs, and finds the pod by POD_UID
/// alone; the sandbox (`pause`) and the main container run in theirs. It cannot see
/// their processes; the kernel's events and records tell the main container from the
/// sandbox and from its own container.
#[test]
fn success_without_hostpid_in_its_own_namespaces() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    task.start_sidecar(PodArgs::UidInPod, &[]);
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    task.sidecar_exits_0();
    // The exit in the status file: seen in the kernel, not by a fallback to the signal
    // watcher (which sees none).
    assert_main_found_and_exited_0(&task);
    check_mixed(&task, &task.outputs());
}

#[test]
fn nonzero_exit_writes_the_exit_code() {
    let mut task = Task::new(Layout::Systemd, single_int_output());
    task.download();
    task.start_sidecar(PodArgs::Uid, &[]);
    // The output exists: the exit code alone makes the task fail.
    task.start_main("echo 1 > /out/answer; exit 3", ContainerOpts::default());
    task.wait_main();
    task.sidecar_exits_0();
    let (code, message, kind, origin) = task.error();
    assert_eq!(code, "NonZeroExitCode");
    let id = task.main.as_ref().expect("main").id();
    assert_eq!(
        message,
        format!("the main container {} exited with code 3", &id[..12])
    );
    assert_eq!(kind, container_error::Kind::NonRecoverable);
    assert_eq!(origin, execution_error::ErrorKind::User);
    let status = task.status();
    assert_eq!(
        (status.outcome, status.error_code.as_deref()),
        (Outcome::Error, Some("NonZeroExitCode"))
    );
    let main = status.main.expect("main in the status file");
    assert_eq!(
        (main.exit_code, main.signal, main.status_known),
        (Some(3), None, true)
    );
    assert!(status.url.is_some_and(|u| u.ends_with("/errors.pb")));
}

/// The pod cgroup's level is counted from its path: with `..` left in, the
/// programs filtered on the wrong level, saw nothing, and exit 3 was a success.
#[test]
fn a_non_canonical_pod_cgroup_still_sees_the_exit_code() {
    let mut task = Task::new(Layout::Cgroupfs, single_int_output());
    task.start_sidecar(PodArgs::NonCanonical, &[]);
    task.start_main("echo 1 > /out/answer; exit 3", ContainerOpts::default());
    task.wait_main();
    task.sidecar_exits_0();
    let (code, message, ..) = task.error();
    assert_eq!(code, "NonZeroExitCode");
    assert!(message.ends_with("exited with code 3"), "{message}");
}

#[test]
fn oom_kill_is_reported() {
    let mut task = Task::new(Layout::Cgroupfs, single_int_output());
    task.start_sidecar(PodArgs::UidInPod, &[]);
    let opts = ContainerOpts {
        memory_limit: Some(32 << 20),
        ..Default::default()
    };
    // memhog is the container's main process: the OOM killer kills main itself.
    let main = Container::create(&task.pod, &["memhog"], task.main_opts(opts));
    main.start();
    task.main = Some(main);
    task.wait_main();
    task.sidecar_exits_0();
    let (code, message, kind, origin) = task.error();
    assert_eq!(code, "OOMKilled");
    assert!(message.contains("OOM killer"), "{message}");
    assert_eq!(kind, container_error::Kind::Recoverable);
    assert_eq!(origin, execution_error::ErrorKind::User);
}

#[test]
fn main_that_never_starts_hits_the_start_timeout() {
    let mut task = Task::new(Layout::Cgroupfs, single_int_output());
    // Created (runc init waits in the container cgroup) but never started.
    let main = Container::create(
        &task.pod,
        &["sh", "-c", "echo 1 > /out/answer"],
        task.main_opts(ContainerOpts::default()),
    );
    task.main = Some(main);
    let started = Instant::now();
    task.start_sidecar(PodArgs::UidInPod, &["--start-timeout", "2s"]);
    task.sidecar_exits_0();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(12),
        "the sidecar gave up after {took:?}"
    );
    let (code, message, kind, _) = task.error();
    assert_eq!(code, "ContainerNotStarted");
    assert!(message.contains("2s"), "{message}");
    assert_eq!(kind, container_error::Kind::Recoverable);
}

/// A main container that ended before the sidecar attached, on a fresh node (no
/// copilot had loaded the programs, so nothing recorded its exit): the status is
/// unknown, and that must not be taken for a success, even with all its outputs in
/// place (hardening issue item 4: an exit 3 here used to be uploaded as a success).
#[test]
fn main_that_exited_before_the_sidecar_is_never_a_success() {
    let fresh_node = Bpffs::new();
    let bpf_dir = fresh_node.node_dir();
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    task.start_main(&format!("{MIXED_SCRIPT}\nexit 3"), ContainerOpts::default());
    task.wait_main();
    let started = Instant::now();
    task.start_sidecar(
        PodArgs::UidInPod,
        &["--bpf-dir", &bpf_dir.to_string_lossy()],
    );
    let logs = task.sidecar_exits_0();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "handled at once, not by a timeout"
    );
    let seen = task.main_seen();
    assert!(!seen.status_known, "{seen:?}\n{logs}");
    assert!(
        task.outputs_pb().is_none(),
        "no outputs.pb for an unknown status"
    );
    let (code, message, kind, origin) = task.error();
    assert_eq!(code, "ExitStatusUnknown");
    assert!(message.contains("exit status is unknown"), "{message}");
    assert_eq!(kind, container_error::Kind::Recoverable);
    assert_eq!(origin, execution_error::ErrorKind::System);
}

/// The same, on a node where another pod's copilot had loaded the shared programs
/// before the main container ran: their node-wide record kept its exit, so the
/// sidecar that starts after it reports the exact status.
#[test]
fn main_that_exited_before_the_sidecar_keeps_its_status_on_a_node_with_copilot() {
    let node = Bpffs::new();
    let bpf_dir = node.node_dir();
    let other = PodCgroup::new(Layout::Guaranteed);
    let mut loader = Trace::start_in(&other, &bpf_dir);
    loader.wait_ready(T);
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    task.start_main(&format!("{MIXED_SCRIPT}\nexit 3"), ContainerOpts::default());
    task.wait_main();
    task.start_sidecar(
        PodArgs::UidInPod,
        &["--bpf-dir", &bpf_dir.to_string_lossy()],
    );
    let logs = task.sidecar_exits_0();
    let seen = task.main_seen();
    assert_eq!(seen.exit_code, Some(3), "{seen:?}\n{logs}");
    assert!(task.outputs_pb().is_none(), "exit 3 is not a success");
    let (code, _, kind, origin) = task.error();
    assert_eq!(code, "NonZeroExitCode");
    assert_eq!(kind, container_error::Kind::NonRecoverable);
    assert_eq!(origin, execution_error::ErrorKind::User);
}

/// The consumer stalled (SIGSTOP) while the main container floods the ring with
/// 10,000 short-lived children and exits 5: its exit event is lost with tens of
/// thousands of others, yet the status comes back from the kernel's record.
#[test]
fn a_lost_exit_event_keeps_the_exit_status() {
    let mut task = Task::new(Layout::Cgroupfs, single_int_output());
    task.start_sidecar(PodArgs::Cgroup, &["--log-level", "info"]);
    task.sidecar().signal(libc::SIGSTOP);
    task.start_main(
        "echo 1 > /out/answer; i=0; while [ $i -lt 10000 ]; do /bin/true; i=$((i+1)); done; exit 5",
        ContainerOpts::default(),
    );
    task.wait_main();
    task.sidecar().signal(libc::SIGCONT);
    let logs = task.sidecar_exits_0();
    assert!(
        logs.contains("ring buffer overflowed"),
        "the test must lose events to test anything\n{logs}"
    );
    let (code, message, ..) = task.error();
    assert_eq!(code, "NonZeroExitCode", "{message}\n{logs}");
    assert!(message.ends_with("exited with code 5"), "{message}");
}

/// A native sidecar gets SIGTERM once the regular containers have ended (KEP-753),
/// so a SIGTERM may arrive while the main container's exit is still unread. With
/// the sidecar stopped, the exit and the SIGTERM are both pending when it resumes:
/// before the settle step, which one it took first was a coin toss (UploadCutShort
/// for a task that succeeded). Three rounds, so the old code fails seven times in eight.
#[test]
fn sigterm_with_the_exit_still_unread_still_uploads() {
    for round in 0..3 {
        let mut task = Task::new(Layout::Cgroupfs, single_int_output());
        task.start_sidecar(PodArgs::UidInPod, &[]);
        task.sidecar().signal(libc::SIGSTOP);
        task.start_main("echo 7 > /out/answer; exit 0", ContainerOpts::default());
        task.wait_main();
        task.sidecar().signal(libc::SIGTERM);
        task.sidecar().signal(libc::SIGCONT);
        let logs = task.sidecar_exits_0();
        assert!(
            task.errors_pb().is_none(),
            "round {round}: {:?}\n{logs}",
            task.errors_pb()
        );
        assert_eq!(
            task.outputs().literals["answer"],
            make::integer(7),
            "{logs}"
        );
    }
}

/// Another long-running container beside the task (a mesh proxy as a native sidecar)
/// makes the main container impossible to tell from the pod alone. The sidecar then
/// uploads on the SIGTERM the kubelet sends once the regular containers have ended,
/// as the Go binary's signal watcher does, rather than failing the task.
#[test]
fn an_extra_container_in_the_pod_falls_back_to_sigterm() {
    let mut task = Task::new(Layout::Cgroupfs, single_int_output());
    task.start_sidecar(PodArgs::UidInPod, &[]);
    let proxy = Container::run(
        &task.pod,
        &["sh", "-c", "while :; do sleep 1; done"],
        ContainerOpts::default(),
    );
    task.start_main("echo 7 > /out/answer; exit 0", ContainerOpts::default());
    task.wait_main();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        task.outputs_pb().is_none() && task.errors_pb().is_none(),
        "nothing before SIGTERM: {:?}",
        task.errors_pb()
    );
    // The kubelet's relist (1 s) after the regular containers ended, then SIGTERM.
    task.sidecar().signal(libc::SIGTERM);
    let logs = task.sidecar_exits_0();
    assert!(logs.contains("uploading on SIGTERM instead"), "{logs}");
    assert_eq!(
        task.outputs().literals["answer"],
        make::integer(7),
        "{logs}"
    );
    proxy.kill(libc::SIGKILL);
}

#[test]
fn error_file_becomes_a_user_error() {
    let mut task = Task::new(Layout::Cgroupfs, single_int_output());
    task.start_sidecar(PodArgs::UidInPod, &[]);
    task.start_main(
        "printf 'bad input: n must be even\\n' > /out/_ERROR; exit 1",
        ContainerOpts::default(),
    );
    task.wait_main();
    task.sidecar_exits_0();
    // As the Go binary writes it (so the task's own retries apply), with the exit
    // status after Go's text.
    let (code, message, kind, origin) = task.error();
    assert_eq!(code, "OutputUploadFailed");
    assert!(
        message.starts_with("User Error: bad input: n must be even\n(the main container "),
        "{message}"
    );
    assert!(message.ends_with("exited with code 1)"), "{message}");
    assert_eq!(kind, container_error::Kind::Recoverable);
    assert_eq!(origin, execution_error::ErrorKind::Unknown);
}

#[test]
fn missing_output_names_the_variable() {
    let mut task = Task::new(Layout::Systemd, mixed_outputs());
    task.download();
    task.start_sidecar(PodArgs::UidInPod, &[]);
    task.start_main(
        &format!("{MIXED_SCRIPT}\nrm /out/greeting"),
        ContainerOpts::default(),
    );
    task.wait_main();
    task.sidecar_exits_0();
    let (code, message, kind, origin) = task.error();
    assert_eq!(code, "OutputUploadFailed");
    assert!(message.contains("greeting"), "{message}");
    assert_eq!(kind, container_error::Kind::Recoverable);
    // Go leaves the origin of upload failures unset (not SYSTEM's retry budget).
    assert_eq!(origin, execution_error::ErrorKind::Unknown);
}

/// `--exit-watcher-type signal`: nothing is uploaded until SIGTERM, then everything.
#[test]
fn signal_watcher_uploads_on_sigterm() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    task.start_sidecar(
        PodArgs::UidInPod,
        &[
            "--start-watcher-type",
            "noop",
            "--exit-watcher-type",
            "signal",
        ],
    );
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    assert!(
        task.sidecar().wait(Duration::from_millis(300)).is_none(),
        "the signal watcher must wait for SIGTERM"
    );
    assert!(task.outputs_pb().is_none(), "uploaded before SIGTERM");
    task.sidecar().signal(libc::SIGTERM);
    let logs = task.sidecar_exits_0();
    let status = task.status();
    assert_eq!(status.outcome, Outcome::Outputs, "{status:?}\n{logs}");
    let outputs = task.outputs();
    check_mixed(&task, &outputs);
}

/// `--exit-watcher-type file`: `_SUCCESS` appearing in the outputs folder ends the wait.
#[test]
fn file_watcher_uploads_on_success_marker() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    task.start_sidecar(
        PodArgs::UidInPod,
        &[
            "--start-watcher-type",
            "noop",
            "--exit-watcher-type",
            "file",
        ],
    );
    // The task stays alive after writing the marker: the file, not the exit, ends the wait.
    task.start_main(
        &format!("{MIXED_SCRIPT}\ntouch /out/_SUCCESS\nexec sleep 1000"),
        ContainerOpts::default(),
    );
    task.sidecar_exits_0();
    let outputs = task.outputs();
    check_mixed(&task, &outputs);
    assert_eq!(
        task.main.as_ref().expect("main").state(),
        "running",
        "the upload did not wait for the container to exit"
    );
}

/// SIGTERM to an eBPF-watching sidecar while the main container still runs: an
/// `UploadCutShort` error document, exit 0, promptly.
#[test]
fn sigterm_while_main_runs_is_upload_cut_short() {
    let mut task = Task::new(Layout::Systemd, single_int_output());
    task.start_sidecar(PodArgs::UidInPod, &[]);
    let main = task.start_main("exec sleep 1000", ContainerOpts::default());
    let pid = main.pid();
    wait_comm(pid, "sleep", T);
    let sent = Instant::now();
    task.sidecar().signal(libc::SIGTERM);
    let code = task.sidecar().exit_code(Duration::from_secs(5));
    let took = sent.elapsed();
    assert_eq!(code, 0, "{}", task.sidecar().stderr());
    assert!(took < Duration::from_secs(3), "took {took:?} after SIGTERM");
    let (code, message, kind, origin) = task.error();
    assert_eq!(code, "UploadCutShort");
    assert!(message.contains("SIGTERM"), "{message}");
    assert_eq!(kind, container_error::Kind::Recoverable);
    assert_eq!(origin, execution_error::ErrorKind::System);
    assert_eq!(task.main.as_ref().expect("main").state(), "running");
}

/// CAP_PERFMON (38) and CAP_BPF (39) as bits of /proc/PID/status `Cap*` masks.
const BPF_PERFMON: u64 = (1 << 38) | (1 << 39);

/// `setpriv` arguments that leave exactly `caps` (e.g. `+bpf,+perfmon`) in every set.
fn setpriv(user: Option<u32>, caps: &str) -> Vec<String> {
    let mut v = vec!["setpriv".to_string()];
    if let Some(uid) = user {
        v.extend([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ]);
    }
    v.extend([
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        format!("--bounding-set=-all,{caps}"),
        "--".into(),
    ]);
    v
}

/// A `Cap*:` mask of /proc/PID/status.
fn cap_mask(pid: u32, which: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{which}:")))
        .unwrap_or_else(|| panic!("no {which} in {status}"));
    u64::from_str_radix(line.trim(), 16).expect("hex mask")
}

/// The capability set of `deploy/pod.yaml`, proven: uid 0 with nothing but CAP_BPF and
/// CAP_PERFMON (effective, permitted and bounding) loads, attaches, follows the pod and
/// uploads.
#[test]
fn least_privilege_root_with_only_bpf_and_perfmon() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    let wrapper = setpriv(None, "+bpf,+perfmon");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    task.start_sidecar_wrapped(&wrapper, PodArgs::Inferred, &[]);
    let pid = task.sidecar().pid();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(cap_mask(pid, set), BPF_PERFMON, "{set} of the sidecar");
    }
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    let logs = task.sidecar_exits_0();
    assert_eq!(task.main_seen().exit_code, Some(0), "{logs}");
    let outputs = task.outputs();
    check_mixed(&task, &outputs);
}

/// A wrapper that runs the sidecar in a mount namespace of its own without tracefs,
/// as a pod sees the host (no hostPath for it): exit 97 if tracefs is still there.
fn without_tracefs() -> Vec<String> {
    strings(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug/tracing 2>/dev/null; \
         grep -q ' tracefs ' /proc/self/mounts && exit 97; exec \"$@\"",
        "sh",
    ])
}

/// Not root, CAP_BPF + CAP_PERFMON only, and no tracefs: the raw tracepoints are
/// attached by name and their arguments read from BTF (world-readable), so nothing
/// else is needed (tracefs is mode 0700 root: it used to need CAP_DAC_READ_SEARCH).
#[test]
fn non_root_with_only_bpf_and_perfmon_and_no_tracefs() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    // The ready file's directory must be writable for uid 65532.
    std::fs::set_permissions(
        task.path("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let mut wrapper = without_tracefs();
    wrapper.extend(setpriv(Some(65532), "+bpf,+perfmon"));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    task.start_sidecar_wrapped(&wrapper, PodArgs::Cgroup, &[]);
    let pid = task.sidecar().pid();
    assert_eq!(cap_mask(pid, "CapEff"), BPF_PERFMON);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert!(uid_line.contains("65532"), "{uid_line}");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).expect("mounts");
    assert!(
        !mounts.contains(" tracefs "),
        "tracefs in the sidecar's namespace"
    );
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    let logs = task.sidecar_exits_0();
    assert_eq!(task.main_seen().exit_code, Some(0), "{logs}");
    let outputs = task.outputs();
    check_mixed(&task, &outputs);
}

/// The downloader failed (its document is there) so the main container never runs; the
/// SIGTERM that tears the pod down must not replace the downloader's explanation.
#[test]
fn an_existing_error_document_is_kept() {
    let mut task = Task::new(Layout::Cgroupfs, single_int_output());
    let theirs = ErrorDocument {
        error: Some(ContainerError {
            code: "InputDownloadFailed".into(),
            message: "inputs.pb: not found".into(),
            kind: container_error::Kind::Recoverable as i32,
            ..Default::default()
        }),
    };
    task.moto.put(
        &format!("{}/out/errors.pb", task.run),
        theirs.encode_to_vec(),
    );
    task.start_sidecar(PodArgs::UidInPod, &[]);
    task.sidecar().signal(libc::SIGTERM);
    assert_eq!(
        task.sidecar().exit_code(T),
        0,
        "{}",
        task.sidecar().stderr()
    );
    let (code, message, ..) = task.error();
    assert_eq!(code, "InputDownloadFailed");
    assert_eq!(message, "inputs.pb: not found");
    let status = task.status();
    assert_eq!(
        status.outcome,
        Outcome::AlreadyDone,
        "{status:?}\n{}",
        task.logs()
    );
}

/// Voluntary and involuntary context switches of each thread of `pid`.
fn thread_switches(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let t = t.expect("task entry");
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // the thread ended between the listing and the read
        };
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.insert(t.file_name().to_string_lossy().into_owned(), switches);
    }
    out
}

/// Polls until outputs.pb is in the store.
fn wait_outputs(task: &Task) {
    let deadline = Instant::now() + T;
    while task.outputs_pb().is_none() {
        assert!(Instant::now() < deadline, "no outputs.pb within {T:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The native-sidecar lifecycle (the default, `--after-upload wait-for-sigterm`): after
/// the upload the sidecar stays, with no thread waking up, until the kubelet's SIGTERM,
/// then exits 0 at once without writing anything more.
#[test]
fn after_the_upload_the_sidecar_idles_until_sigterm() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    task.start_sidecar(PodArgs::UidInPod, &["--after-upload", "wait-for-sigterm"]);
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    wait_outputs(&task);
    let pid = task.sidecar().pid();
    std::thread::sleep(Duration::from_millis(500));
    let before = thread_switches(pid);
    std::thread::sleep(Duration::from_secs(2));
    let after = thread_switches(pid);
    assert!(
        task.sidecar().wait(Duration::ZERO).is_none(),
        "exited before SIGTERM"
    );
    for (tid, n) in &after {
        // A thread that started during the window woke up by definition.
        let was = before
            .get(tid)
            .unwrap_or_else(|| panic!("thread {tid} started while idle"));
        assert_eq!(n, was, "thread {tid} woke up {} times while idle", n - was);
    }
    let sent = Instant::now();
    task.sidecar().signal(libc::SIGTERM);
    let logs = task.sidecar_exits_0();
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    assert!(logs.contains("idle until SIGTERM"), "{logs}");
    check_mixed(&task, &task.outputs());
}

/// The kubelet restarts a native sidecar that exits while the pod runs. Restarted
/// after its upload, it finds outputs.pb, becomes ready, writes nothing and exits 0 on
/// SIGTERM: the task stays a success.
#[test]
fn a_restart_after_the_upload_writes_nothing() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    task.start_sidecar(PodArgs::UidInPod, &[]);
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    task.sidecar_exits_0();
    let first = task.outputs();
    let _ = std::fs::remove_file(task.ready_file());
    std::fs::remove_file(task.status_file()).expect("the first run's status file");
    task.start_sidecar(PodArgs::UidInPod, &["--after-upload", "wait-for-sigterm"]);
    assert!(
        task.sidecar().wait(Duration::from_millis(300)).is_none(),
        "exited before SIGTERM"
    );
    task.sidecar().signal(libc::SIGTERM);
    let logs = task.sidecar_exits_0();
    let status = task.status();
    assert_eq!(status.outcome, Outcome::AlreadyDone, "{status:?}\n{logs}");
    assert_eq!(task.outputs(), first, "outputs.pb changed");
}

/// Propeller's stock uploader: no capabilities at all (`copilot.go` sets none). eBPF
/// cannot load, so the sidecar does what the Go binary's `signal` watcher does: it
/// says why once, uploads when SIGTERM comes (the kubelet sends it once the regular
/// containers have ended), and exits 0.
#[test]
fn without_capabilities_the_sidecar_uploads_on_sigterm() {
    let mut task = Task::new(Layout::Cgroupfs, mixed_outputs());
    task.download();
    let wrapper = [
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
    ];
    task.start_sidecar_wrapped(
        &wrapper,
        PodArgs::Cgroup,
        &["--after-upload", "wait-for-sigterm"],
    );
    let pid = task.sidecar().pid();
    assert_eq!(cap_mask(pid, "CapEff"), 0, "the sidecar kept capabilities");
    task.start_main(MIXED_SCRIPT, ContainerOpts::default());
    task.wait_main();
    assert!(
        task.sidecar().wait(Duration::from_millis(500)).is_none(),
        "exited before SIGTERM"
    );
    assert!(task.outputs_pb().is_none(), "uploaded before SIGTERM");
    task.sidecar().signal(libc::SIGTERM);
    let logs = task.sidecar_exits_0();
    assert_eq!(
        logs.matches("falling back to the signal watcher").count(),
        1,
        "{logs}"
    );
    check_mixed(&task, &task.outputs());
}
