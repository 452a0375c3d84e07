//! Node scale (issue 9): one eBPF program set per node, pinned in bpffs and
//! shared by every pod's copilot, each pod with a ring buffer of its own.
//!
//! Each test mounts a bpffs of its own (a node no other test shares) and points
//! `copilot --bpf-dir` into it.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use copilot::{lifecycle::Source, trace::ContainerState, tracer::SetUse};
use integration_test::{
    Bpffs, Container, ContainerOpts, Event, Gate, Layout, PodCgroup, Trace, join_at_exec, wait_comm,
};

/// Generous: 250 copilots starting on two cores take a while.
const T: Duration = Duration::from_secs(60);
const LOADED: &str = "loaded and pinned the node's eBPF programs";

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// Waits for `ready` and checks which program set the tracer uses.
fn ready(trace: &mut Trace, set: &str) -> Event {
    let ready = trace.wait_ready(T);
    assert_eq!(
        ready.ready().map(|r| match r.programs {
            SetUse::Node { .. } => "node",
            SetUse::Private { .. } => "private",
        }),
        Some(set),
        "{ready}\nstderr:\n{}",
        trace.stderr()
    );
    ready
}

/// Waits for `ready` and checks that the tracer loaded programs of its own, for a
/// reason that says `why`.
fn ready_private(trace: &mut Trace, why: &str) {
    let r = ready(trace, "private");
    assert!(
        r.ready().is_some_and(
            |r| matches!(&r.programs, SetUse::Private { reason } if reason.contains(why))
        ),
        "{r}"
    );
}

/// A container cgroup `name` in `pod` (as the runtime makes it before the first exec).
fn container_dir(pod: &PodCgroup, name: &str) -> PathBuf {
    let dir = pod.path().join(name);
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// Runs `sh -c script` as the first process of container cgroup `dir`.
fn run_in(dir: &Path, script: &str, stdin: Stdio) -> Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).stdin(stdin);
    join_at_exec(&mut cmd, dir);
    cmd.spawn().expect("spawning sh")
}

fn main_exit(trace: &mut Trace, pid: u32) -> Event {
    trace.next_matching(|e| e.is_exit() && e.pid() == Some(pid) && e.is_main(), T)
}

/// Every exec and exit a tracer reported is in `container` (a cgroup id).
fn assert_only_own(trace: &Trace, container: u64) {
    for e in trace.history() {
        if e.is_exec() || e.is_exit() {
            assert_eq!(
                e.cgroup_id(),
                Some(container),
                "an event of another cgroup reached this pod's ring: {e}"
            );
        }
    }
}

fn pod_entries(bpffs: &Bpffs) -> Vec<String> {
    bpffs
        .set_entries()
        .into_iter()
        .filter(|n| n.starts_with("pod_"))
        .collect()
}

#[test]
fn pods_at_two_levels_share_one_set_and_see_only_their_own() {
    let bpffs = Bpffs::new();
    let besteffort = PodCgroup::new(Layout::Cgroupfs);
    let guaranteed = PodCgroup::new(Layout::Guaranteed);
    let mut a = Trace::start_in(&besteffort, &bpffs.node_dir());
    ready(&mut a, "node");
    let mut b = Trace::start_in(&guaranteed, &bpffs.node_dir());
    ready(&mut b, "node");

    let loaded = [&a, &b]
        .iter()
        .filter(|t| t.stderr().contains(LOADED))
        .count();
    assert_eq!(
        loaded, 1,
        "the first copilot loads the set, the second reuses it"
    );
    let entries = bpffs.set_entries();
    let links: Vec<&String> = entries.iter().filter(|n| n.starts_with("link_")).collect();
    assert!(
        links.len() == 3 || links.len() == 2,
        "exec, exit and (where the kernel has it) OOM links, once: {entries:?}"
    );
    for pod in [&besteffort, &guaranteed] {
        let entry = format!("pod_{}", pod.id());
        assert!(entries.contains(&entry), "{entry} registered: {entries:?}");
    }

    let ca = Container::run(
        &besteffort,
        &["sh", "-c", "exit 3"],
        ContainerOpts::default(),
    );
    let cb = Container::run(
        &guaranteed,
        &["sh", "-c", "exit 5"],
        ContainerOpts::default(),
    );
    let exit_a = main_exit(&mut a, ca.pid());
    assert_eq!(exit_a.exit_code(), Some(3), "{exit_a}");
    let exit_b = main_exit(&mut b, cb.pid());
    assert_eq!(exit_b.exit_code(), Some(5), "{exit_b}");
    // A container's main process is pid 1 of its own PID namespace.
    for (trace, ctr) in [(&a, &ca), (&b, &cb)] {
        let exec = trace
            .history()
            .iter()
            .find(|e| e.is_exec() && e.pid() == Some(ctr.pid()))
            .unwrap_or_else(|| panic!("no exec of {}", ctr.pid()));
        assert_eq!(exec.process().map(|p| p.ns_pid), Some(1), "{exec}");
        assert_ne!(
            exec.pid(),
            Some(1),
            "the host pid is kept beside it: {exec}"
        );
    }
    assert_only_own(&a, inode(ca.cgroup_path()));
    assert_only_own(&b, inode(cb.cgroup_path()));

    drop(a);
    let left = pod_entries(&bpffs);
    assert_eq!(
        left,
        vec![format!("pod_{}", guaranteed.id())],
        "a copilot that exits unregisters its pod"
    );
}

/// The programs' gate admits only the processes under a top cgroup that holds
/// pods: the kubelet's, which every copilot adds, and the top of each registered
/// pod. A pod cgroup made outside the kubelet's tops is seen once its copilot
/// registers it, beside a kubelet pod on the same set.
#[test]
fn a_pod_outside_the_kubelets_cgroups_passes_the_gate() {
    let bpffs = Bpffs::new();
    let kubelet = PodCgroup::new(Layout::Guaranteed);
    let outside = PodCgroup::new(Layout::Outside(0));
    let mut a = Trace::start_in(&kubelet, &bpffs.node_dir());
    ready(&mut a, "node");
    let mut b = Trace::start_in(&outside, &bpffs.node_dir());
    ready(&mut b, "node");

    let cb = Container::run(&outside, &["sh", "-c", "exit 4"], ContainerOpts::default());
    let ca = Container::run(&kubelet, &["sh", "-c", "exit 6"], ContainerOpts::default());
    let exit_b = main_exit(&mut b, cb.pid());
    assert_eq!(exit_b.exit_code(), Some(4), "{exit_b}");
    let exit_a = main_exit(&mut a, ca.pid());
    assert_eq!(exit_a.exit_code(), Some(6), "{exit_a}");
    assert_only_own(&a, inode(ca.cgroup_path()));
    assert_only_own(&b, inode(cb.cgroup_path()));
}

/// More top cgroups than the gate's value has slots (`GATE_TOPS`, 6; with the
/// kubelet's two here, eight hand-made tops make ten): the tops that find no slot
/// are looked up in `TOPS`, and every pod still sees its own main exit.
#[test]
fn tops_past_the_gates_slots_still_pass_it() {
    const TOPS: u8 = 8;
    let bpffs = Bpffs::new();
    let pods: Vec<PodCgroup> = (1..=TOPS)
        .map(|n| PodCgroup::new(Layout::Outside(n)))
        .collect();
    let mut traces: Vec<Trace> = pods
        .iter()
        .map(|p| {
            let mut t = Trace::start_in(p, &bpffs.node_dir());
            ready(&mut t, "node");
            t
        })
        .collect();
    let containers: Vec<Container> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let script = format!("exit {}", 10 + i);
            Container::run(p, &["sh", "-c", &script], ContainerOpts::default())
        })
        .collect();
    for (i, (t, c)) in traces.iter_mut().zip(&containers).enumerate() {
        let exit = main_exit(t, c.pid());
        assert_eq!(exit.exit_code(), Some(10 + i as u8), "pod {i}: {exit}");
        assert_only_own(t, inode(c.cgroup_path()));
    }
}

/// 250 pods (Kubernetes' maximum per node), each with its own copilot: the first 50
/// start at once on a fresh node, then the rest. All use the one set; each sees its
/// own main process with its own status, and nothing of the others.
#[test]
fn two_hundred_fifty_pods_on_one_node() {
    const PODS: usize = 250;
    const AT_ONCE: usize = 50;
    let bpffs = Bpffs::new();
    let layouts = [Layout::Cgroupfs, Layout::Systemd, Layout::Guaranteed];
    let pods: Vec<PodCgroup> = (0..PODS).map(|i| PodCgroup::new(layouts[i % 3])).collect();
    let mut traces: Vec<Trace> = pods[..AT_ONCE]
        .iter()
        .map(|p| Trace::start_in(p, &bpffs.node_dir()))
        .collect();
    for t in &mut traces {
        ready(t, "node");
    }
    let loaded = traces
        .iter()
        .filter(|t| t.stderr().contains(LOADED))
        .count();
    assert_eq!(
        loaded, 1,
        "{AT_ONCE} copilots started at once load the set once"
    );
    traces.extend(
        pods[AT_ONCE..]
            .iter()
            .map(|p| Trace::start_in(p, &bpffs.node_dir())),
    );
    for t in &mut traces[AT_ONCE..] {
        ready(t, "node");
    }
    assert_eq!(pod_entries(&bpffs).len(), PODS, "every pod registered");

    let dirs: Vec<PathBuf> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| container_dir(p, &p.container_dir_name(&format!("{i:064x}"))))
        .collect();
    let mut children: Vec<Child> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| run_in(d, &format!("exit {}", i % 256), Stdio::null()))
        .collect();
    for c in &mut children {
        c.wait().expect("waiting for a pod's main process");
    }
    for (i, (trace, child)) in traces.iter_mut().zip(&children).enumerate() {
        let exit = main_exit(trace, child.id());
        assert_eq!(exit.exit_code(), Some((i % 256) as u8), "pod {i}: {exit}");
        assert_only_own(trace, inode(&dirs[i]));
    }
}

/// A copilot killed with SIGKILL leaves its registration; the next copilot on the
/// node collects it once the pod's cgroup is gone (cgroup ids are not reused within
/// a boot), and not before.
#[test]
fn a_killed_copilots_pod_is_collected_once_its_cgroup_is_gone() {
    let bpffs = Bpffs::new();
    let gone = PodCgroup::new(Layout::Cgroupfs);
    let gone_id = gone.id();
    let mut killed = Trace::start_in(&gone, &bpffs.node_dir());
    ready(&mut killed, "node");
    killed.kill();
    let entry = format!("pod_{gone_id}");

    let still = PodCgroup::new(Layout::Systemd);
    let mut t = Trace::start_in(&still, &bpffs.node_dir());
    ready(&mut t, "node");
    assert!(
        pod_entries(&bpffs).contains(&entry),
        "the pod still exists: its registration stays (a restarted copilot takes it over)"
    );

    drop(gone);
    let other = PodCgroup::new(Layout::Guaranteed);
    let mut t2 = Trace::start_in(&other, &bpffs.node_dir());
    ready(&mut t2, "node");
    assert!(
        t2.stderr().contains(&format!(
            "collected a gone pod's registration pod_cgroup_id={gone_id}"
        )),
        "{}",
        t2.stderr()
    );
    let entries = pod_entries(&bpffs);
    assert!(!entries.contains(&entry), "{entries:?}");
    assert_eq!(entries.len(), 2, "{entries:?}");
}

/// The main container exits while its pod's copilot is down (killed, about to be
/// restarted): the shared programs still record the exit, so the restarted copilot
/// reports the exact status, not "unknown".
#[test]
fn an_exit_while_the_pods_copilot_was_down_keeps_its_status() {
    let bpffs = Bpffs::new();
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let mut first = Trace::start_in(&pod, &bpffs.node_dir());
    ready(&mut first, "node");
    let dir = container_dir(&pod, &pod.container_dir_name(&"7".repeat(64)));
    let mut main = run_in(&dir, "read line; exit 7", Stdio::piped());
    first.next_matching(|e| e.is_exec() && e.pid() == Some(main.id()), T);
    first.kill();

    main.stdin
        .take()
        .expect("piped")
        .write_all(b"go\n")
        .expect("writing to main");
    main.wait().expect("waiting for main");

    let mut second = Trace::start_in(&pod, &bpffs.node_dir());
    let exited = second.next_matching(
        |e| e.is_container() && e.state() == Some(ContainerState::Exited),
        T,
    );
    assert_eq!(exited.exit_code(), Some(7), "{exited}");
    assert_eq!(exited.pid(), Some(main.id()), "{exited}");
    ready(&mut second, "node");
}

/// Where the directory is not on a bpffs, copilot loads programs of its own and
/// says why; it sees everything as before.
#[test]
fn without_bpffs_the_programs_are_private() {
    let not_bpffs = tempfile::tempdir().expect("temporary directory");
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let mut t = Trace::start_in(&pod, not_bpffs.path());
    ready_private(&mut t, "is not on a bpffs");
    let ctr = Container::run(&pod, &["sh", "-c", "exit 6"], ContainerOpts::default());
    assert_eq!(main_exit(&mut t, ctr.pid()).exit_code(), Some(6));
}

/// Two copilots on one pod (a `copilot trace` beside the sidecar): the second
/// leaves the first's ring alone and loads its own programs; both see the exit.
#[test]
fn a_second_copilot_on_one_pod_loads_its_own_programs() {
    let bpffs = Bpffs::new();
    let pod = PodCgroup::new(Layout::Systemd);
    let mut first = Trace::start_in(&pod, &bpffs.node_dir());
    ready(&mut first, "node");
    let mut second = Trace::start_in(&pod, &bpffs.node_dir());
    ready_private(&mut second, "already follows this pod");
    let ctr = Container::run(&pod, &["sh", "-c", "exit 4"], ContainerOpts::default());
    assert_eq!(main_exit(&mut first, ctr.pid()).exit_code(), Some(4));
    assert_eq!(main_exit(&mut second, ctr.pid()).exit_code(), Some(4));
}

/// A pod whose sandbox (`pause`) and main container (held until `gate` opens, then
/// exit 3) run before any copilot of the pod starts.
fn running_pod(gate: &Gate) -> (PodCgroup, Container, Container) {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    let sandbox = Container::run(&pod, &["pause"], ContainerOpts::default());
    wait_comm(sandbox.pid(), "pause", T);
    let opts = ContainerOpts {
        mounts: vec![gate.mount()],
        ..Default::default()
    };
    let main = Container::run(&pod, &["sh", "-c", "read x < /ctl/go; exit 3"], opts);
    wait_comm(main.pid(), "sh", T);
    (pod, sandbox, main)
}

fn container_line<'a>(trace: &'a Trace, ctr: &Container, state: ContainerState) -> &'a Event {
    trace
        .history()
        .iter()
        .find(|e| {
            e.is_container() && e.container_id() == Some(ctr.id()) && e.state() == Some(state)
        })
        .unwrap_or_else(|| panic!("no `{}` line for {}", state.as_str(), ctr.id()))
}

/// No hostPID: the pod's copilot runs in the pod, as pid 1 of its own PID namespace,
/// in its own mount and cgroup namespaces, without tracefs; the sandbox and the main
/// container run in theirs, and started before it. Another pod's copilot had loaded
/// the node set: its node-wide record names each container's main process, so the
/// main exit has its exact status.
#[test]
fn without_hostpid_a_main_that_started_first_keeps_its_exact_status() {
    let bpffs = Bpffs::new();
    let other = PodCgroup::new(Layout::Guaranteed);
    let mut loader = Trace::start_in(&other, &bpffs.node_dir());
    ready(&mut loader, "node");
    let gate = Gate::new();
    let (pod, sandbox, main) = running_pod(&gate);

    let (mut t, own) = Trace::start_in_pod(&pod, &bpffs.node_dir());
    ready(&mut t, "node");
    let started = container_line(&t, &main, ContainerState::Started);
    assert_eq!(
        started.pid(),
        Some(main.pid()),
        "from the kernel's record: {started}"
    );
    assert_eq!(started.source(), Some(Source::Snapshot), "{started}");
    let paused = container_line(&t, &sandbox, ContainerState::Started);
    assert_eq!(paused.pid(), Some(sandbox.pid()), "{paused}");
    // Its own container: its own host pid (its exec was the container's first),
    // never the pid 1 its own /proc shows for itself.
    let copilot_pid: u32 = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid()))
        .expect("nsrun's children")
        .trim()
        .parse()
        .expect("one child");
    let itself = t
        .history()
        .iter()
        .find(|e| e.cgroup() == Some(own.as_path()) && e.state() == Some(ContainerState::Started))
        .unwrap_or_else(|| panic!("no `started` line for its own container"));
    assert_eq!(itself.pid(), Some(copilot_pid), "{itself}");

    gate.open();
    let exited = t.next_matching(
        |e| {
            e.is_container()
                && e.container_id() == Some(main.id())
                && e.state() == Some(ContainerState::Exited)
        },
        T,
    );
    assert_eq!(exited.exit_code(), Some(3), "{exited}");
    assert_eq!(exited.pid(), Some(main.pid()), "{exited}");
}

/// The same on a fresh node (no copilot ran before, so no record): the running
/// main is reported started without a pid, and its exit is still seen with its
/// status, from the exit of pid 1 of its PID namespace.
#[test]
fn without_hostpid_on_a_fresh_node_the_exit_of_a_main_that_started_first_is_seen() {
    let bpffs = Bpffs::new();
    let gate = Gate::new();
    let (pod, _sandbox, main) = running_pod(&gate);
    let (mut t, _own) = Trace::start_in_pod(&pod, &bpffs.node_dir());
    ready(&mut t, "node");
    let started = container_line(&t, &main, ContainerState::Started);
    assert_eq!(started.pid(), None, "nothing can name it: {started}");

    gate.open();
    let exited = t.next_matching(
        |e| {
            e.is_container()
                && e.container_id() == Some(main.id())
                && e.state() == Some(ContainerState::Exited)
        },
        T,
    );
    assert_eq!(exited.exit_code(), Some(3), "{exited}");
    assert_eq!(exited.pid(), Some(main.pid()), "{exited}");
}

/// A second build of copilot: this binary with one byte of its embedded eBPF object
/// changed where no loader looks (the ELF header's padding, `EI_PAD`), so the object's
/// hash, and so the name of its node set, differ, as they do between two releases.
fn second_build(dir: &Path) -> PathBuf {
    let mut bin = std::fs::read(integration_test::copilot_bin()).expect("reading copilot");
    // e_ident: magic, ELFCLASS64, little-endian; e_machine (offset 18) EM_BPF (247).
    let bpf_objects: Vec<usize> = bin
        .windows(20)
        .enumerate()
        .filter(|(_, w)| w[..6] == *b"\x7fELF\x02\x01" && w[18..20] == 247u16.to_le_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(bpf_objects.len(), 1, "one eBPF object embedded in copilot");
    bin[bpf_objects[0] + 9] ^= 0x5a;
    let path = dir.join("copilot-second-build");
    std::fs::write(&path, &bin).expect("writing the second build");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    path
}

/// Two builds of copilot on one node (a rolling upgrade): each loads and pins its own
/// set beside the other's, and each pod's copilot sees its own pod.
#[test]
fn two_builds_side_by_side_each_use_their_own_set() {
    let bpffs = Bpffs::new();
    let bin_dir = tempfile::tempdir().expect("temporary directory");
    let second = second_build(bin_dir.path());
    let (old_pod, new_pod) = (
        PodCgroup::new(Layout::Cgroupfs),
        PodCgroup::new(Layout::Systemd),
    );
    let mut old = Trace::start_in(&old_pod, &bpffs.node_dir());
    ready(&mut old, "node");
    let node_dir = bpffs.node_dir();
    let mut new = Trace::spawn_program(
        &second,
        &[
            "--bpf-dir",
            &node_dir.to_string_lossy(),
            "trace",
            "--pod-cgroup",
            &new_pod.path().to_string_lossy(),
        ],
    );
    ready(&mut new, "node");
    let sets = std::fs::read_dir(&node_dir)
        .expect("listing the node dir")
        .filter_map(Result::ok)
        .count();
    assert_eq!(sets, 2, "one set per build");
    assert!(
        new.stderr().contains(LOADED),
        "the second build loads its own set"
    );

    let a = Container::run(&old_pod, &["sh", "-c", "exit 3"], ContainerOpts::default());
    let b = Container::run(&new_pod, &["sh", "-c", "exit 4"], ContainerOpts::default());
    assert_eq!(main_exit(&mut old, a.pid()).exit_code(), Some(3));
    assert_eq!(main_exit(&mut new, b.pid()).exit_code(), Some(4));
    assert_only_own(&old, inode(a.cgroup_path()));
    assert_only_own(&new, inode(b.cgroup_path()));
}
