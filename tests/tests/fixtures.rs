//! The fixtures proven on their own, without copilot: rootfs, pod cgroups in both
//! layouts, runc containers (lifecycle, exit codes, kill, OOM under a memory limit,
//! cleanup), the C helpers, and the `Trace` reader.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use copilot::{
    lifecycle::Source,
    trace::{self, ContainerState, Exec, Exit, GroupDead, Line, Process, Ready},
    tracer::SetUse,
};
use integration_test::{
    Container, ContainerOpts, Gate, HELPERS, Layout, Mount, PodCgroup, Trace, cgroup2_mount,
    rootfs, v1_mounts,
};

const T: Duration = Duration::from_secs(10);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A host directory bind-mounted at `/out`, for containers to report results.
fn out_dir() -> (tempfile::TempDir, Mount) {
    let dir = tempfile::Builder::new()
        .prefix("out-")
        .tempdir()
        .expect("out dir");
    let mount = Mount {
        source: dir.path().to_path_buf(),
        destination: "/out".into(),
        read_only: false,
    };
    (dir, mount)
}

fn v1_memory_mount() -> std::path::PathBuf {
    v1_mounts()
        .into_iter()
        .find(|(_, opts)| opts.split(',').any(|o| o == "memory"))
        .map(|(p, _)| p)
        .expect("this host has a cgroup v1 memory hierarchy")
}

#[test]
fn rootfs_has_busybox_applets_and_helpers() {
    let root = rootfs();
    for name in ["busybox", "sh", "sleep", "true", "kill"]
        .iter()
        .chain(HELPERS)
    {
        let p = root.join("bin").join(name);
        assert!(p.exists(), "{} missing", p.display());
    }
    assert_eq!(rootfs(), root, "built once per process");
    assert!(root.starts_with(integration_test::workspace_root().join("target/integration")));
}

#[test]
fn pod_cgroup_layouts_are_created_and_removed() {
    for layout in Layout::ALL {
        let pod = PodCgroup::new(layout);
        let path = pod.path().to_path_buf();
        assert!(path.starts_with(cgroup2_mount()), "{}", path.display());
        assert!(
            path.join("cgroup.procs").is_file(),
            "{} is not a cgroup",
            path.display()
        );
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        match layout {
            Layout::Cgroupfs => {
                assert_eq!(name, format!("pod{}", pod.uid()));
                assert!(pod.rel().starts_with("/kubepods/besteffort"));
            }
            Layout::Guaranteed => {
                assert_eq!(name, format!("pod{}", pod.uid()));
                assert_eq!(pod.rel().parent(), Some(std::path::Path::new("/kubepods")));
                assert_eq!(pod.container_dir_name("ab"), "ab");
            }
            Layout::Systemd => {
                assert_eq!(
                    name,
                    format!(
                        "kubepods-besteffort-pod{}.slice",
                        pod.uid().replace('-', "_")
                    )
                );
                assert!(
                    pod.rel()
                        .starts_with("/kubepods.slice/kubepods-besteffort.slice")
                );
                assert_eq!(pod.container_dir_name("ab"), "cri-containerd-ab.scope");
            }
            Layout::Outside(_) => unreachable!("not in Layout::ALL"),
        }
        assert_eq!(pod.uid().len(), 36);
        assert!(pod.id() > 1);
        drop(pod);
        assert!(!path.exists(), "{} not removed", path.display());
    }
}

#[test]
fn container_create_start_and_exit_codes_in_both_layouts() {
    for layout in Layout::ALL {
        let pod = PodCgroup::new(layout);
        let gate = Gate::new();
        let (out, out_mount) = out_dir();
        let opts = ContainerOpts {
            mounts: vec![gate.mount(), out_mount],
            ..Default::default()
        };
        let ctr = Container::create(
            &pod,
            &[
                "sh",
                "-c",
                "echo hello; read x < /ctl/go; sh -c 'exit 3'; echo $? > /out/code; exit 4",
            ],
            opts,
        );
        assert_eq!(ctr.id().len(), 64);
        assert_eq!(
            ctr.cgroup_path(),
            pod.path().join(pod.container_dir_name(ctr.id()))
        );
        assert_eq!(ctr.state(), "created");
        // Created: runc's init waits in the container cgroup, nothing exec'd yet.
        let procs = read(&ctr.cgroup_path().join("cgroup.procs"));
        assert_eq!(
            procs.trim(),
            ctr.pid().to_string(),
            "cgroup.procs after create"
        );
        assert_eq!(
            read(Path::new(&format!("/proc/{}/comm", ctr.pid()))).trim(),
            "runc:[2:INIT]"
        );

        ctr.start();
        assert_eq!(ctr.state(), "running");
        assert_eq!(pod.procs(), vec![ctr.pid()]);
        gate.open();
        assert!(
            ctr.wait_exited(T),
            "container did not exit: {}",
            ctr.output()
        );
        assert_eq!(ctr.state(), "stopped");
        assert_eq!(ctr.output(), "hello\n");
        assert_eq!(read(&out.path().join("code")), "3\n");
        // The cgroup of an exited container stays (empty) until runc delete.
        assert!(ctr.cgroup_path().is_dir());
        assert!(pod.procs().is_empty());
    }
}

#[test]
fn helpers_exit_with_the_given_codes() {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let (out, out_mount) = out_dir();
    let script = "leader_exit 100 7; echo leader_exit=$? > /out/a; \
                  spawner 20 5; echo spawner=$? > /out/b";
    let ctr = Container::run(
        &pod,
        &["sh", "-c", script],
        ContainerOpts {
            mounts: vec![out_mount],
            ..Default::default()
        },
    );
    assert!(
        ctr.wait_exited(T),
        "container did not exit: {}",
        ctr.output()
    );
    assert_eq!(
        read(&out.path().join("a")),
        "leader_exit=7\n",
        "{}",
        ctr.output()
    );
    assert_eq!(
        read(&out.path().join("b")),
        "spawner=5\n",
        "{}",
        ctr.output()
    );
}

#[test]
fn leader_exit_keeps_the_process_alive_with_a_zombie_leader() {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let ctr = Container::run(
        &pod,
        &["leader_exit", "3000", "0"],
        ContainerOpts::default(),
    );
    let status = Path::new("/proc")
        .join(ctr.pid().to_string())
        .join("status");
    let deadline = Instant::now() + T;
    // The leader thread is a zombie ("Z") while the second thread sleeps.
    while !read(&status)
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'))
    {
        assert!(
            Instant::now() < deadline,
            "leader never became a zombie:\n{}",
            read(&status)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        read(&status).lines().any(|l| l == "Threads:\t2"),
        "{}",
        read(&status)
    );
    assert!(ctr.wait_exited(T));
}

#[test]
fn container_kill_sigkill() {
    let pod = PodCgroup::new(Layout::Systemd);
    let ctr = Container::run(&pod, &["sleep", "1000"], ContainerOpts::default());
    assert!(
        !ctr.wait_exited(Duration::from_millis(100)),
        "sleep exited by itself"
    );
    ctr.kill(9);
    assert!(ctr.wait_exited(T), "not killed");
}

#[test]
fn memory_limit_oom_kills_memhog() {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let (out, out_mount) = out_dir();
    let ctr = Container::run(
        &pod,
        &["sh", "-c", "memhog; echo $? > /out/status"],
        ContainerOpts {
            memory_limit: Some(32 << 20),
            mounts: vec![out_mount],
            ..Default::default()
        },
    );
    assert!(
        ctr.wait_exited(T),
        "memhog was not OOM-killed: {}",
        ctr.output()
    );
    // 128 + SIGKILL: the OOM killer picked memhog, not the shell.
    assert_eq!(
        read(&out.path().join("status")),
        "137\n",
        "{}",
        ctr.output()
    );
    // The memory controller is v1-only here: runc set the limit there.
    let rel = pod.rel().strip_prefix("/").expect("absolute");
    let v1 = v1_memory_mount()
        .join(rel)
        .join(pod.container_dir_name(ctr.id()));
    assert_eq!(
        read(&v1.join("memory.limit_in_bytes")).trim(),
        (32u64 << 20).to_string()
    );
    let oom = read(&v1.join("memory.oom_control"));
    assert!(
        oom.lines().any(|l| l == "oom_kill 1"),
        "memory.oom_control:\n{oom}"
    );
}

#[test]
fn dropping_the_pod_kills_containers_and_removes_v1_and_v2_dirs() {
    let pod = PodCgroup::new(Layout::Systemd);
    let ctr = Container::run(&pod, &["sleep", "1000"], ContainerOpts::default());
    let rel = pod.rel().strip_prefix("/").expect("absolute").to_path_buf();
    let v2 = pod.path().to_path_buf();
    let v1 = v1_memory_mount()
        .join(&rel)
        .join(pod.container_dir_name(ctr.id()));
    assert!(
        v1.is_dir(),
        "runc did not create the v1 memory cgroup {}",
        v1.display()
    );
    drop(pod);
    assert!(
        integration_test::pidfd_wait(ctr.pid(), T),
        "pod drop did not kill the container"
    );
    assert!(!v2.exists(), "{} left behind", v2.display());
    assert!(!v1.exists(), "{} left behind", v1.display());
    drop(ctr); // runc delete of an already-removed container must not panic
}

/// A started container, `ready`, an exec and an exit of pid 5 with code 0.
fn fake_lines() -> [Line; 4] {
    let process = Process {
        time_ns: 1,
        pid: 5,
        tid: 5,
        ns_pid: 1,
        ns_tid: 1,
        ppid: 4,
        comm: "sh".into(),
        cgroup_id: 3,
        container_id: Some("c".into()),
        main: true,
    };
    [
        Line::Container(trace::Container {
            container_id: Some("c".into()),
            cgroup: "/sys/fs/cgroup/p/c".into(),
            cgroup_id: 3,
            state: ContainerState::Started,
            pid: Some(5),
            exit_code: None,
            signal: None,
            oom_killed: false,
            time_ns: Some(1),
            seen_ns: 2,
            source: Source::Event,
        }),
        Line::Ready(Ready {
            pod_cgroup: "/sys/fs/cgroup/p".into(),
            cgroup_id: 2,
            programs: SetUse::Private {
                reason: "a fixture".into(),
            },
        }),
        Line::Exec(Exec {
            process: process.clone(),
            filename: "/bin/sh".into(),
            filename_truncated: false,
        }),
        Line::Exit(Exit {
            process,
            status: 0,
            exit_code: Some(0),
            signal: None,
            core_dumped: false,
            oom_killed: false,
            group_dead: GroupDead::Tracepoint,
        }),
    ]
}

#[test]
fn trace_fixture_reads_json_lines_in_order() {
    let lines = fake_lines()
        .iter()
        .map(|l| format!("echo '{}'; ", l.to_json().expect("encodes")))
        .collect::<String>();
    let script = format!("{lines}trap 'exit 0' TERM; while :; do sleep 0.05; done");
    let mut trace = Trace::spawn_program(Path::new("/bin/sh"), &["-c", &script]);
    trace.wait_ready(T);
    // Lines before `ready` stay pending.
    let c = trace.next_matching(|e| e.is_container(), T);
    assert_eq!(c.state(), Some(ContainerState::Started));
    let upto = trace.collect_until(|e| e.is_exit(), T);
    assert_eq!(upto.len(), 2);
    assert_eq!(upto[1].exit_code(), Some(0));
    assert_eq!(upto[1].pid(), Some(5));
    assert!(
        trace
            .try_next_matching(|_| true, Duration::from_millis(50))
            .is_none()
    );
    assert_eq!(trace.history().len(), 4);
}

#[test]
#[should_panic(expected = "did not exit within 5 s of SIGTERM")]
fn trace_fixture_fails_on_a_tracer_that_ignores_sigterm() {
    let ready = fake_lines()[1].to_json().expect("encodes");
    let script = format!("trap '' TERM; echo '{ready}'; while :; do sleep 0.05; done");
    let mut trace = Trace::spawn_program(Path::new("/bin/sh"), &["-c", &script]);
    trace.wait_ready(T);
}

#[test]
#[should_panic(expected = "non-JSON-object line")]
fn trace_fixture_fails_on_a_non_json_line() {
    let mut trace = Trace::spawn_program(Path::new("/bin/sh"), &["-c", "echo hello; exit 0"]);
    trace.wait_ready(T);
}

#[test]
#[should_panic(expected = "not a trace line")]
fn trace_fixture_fails_on_a_json_object_that_is_not_a_trace_line() {
    let mut trace = Trace::spawn_program(
        Path::new("/bin/sh"),
        &["-c", "echo '{\"type\":\"ready\"}'; exit 0"],
    );
    trace.wait_ready(T);
}
