//! `copilot trace` against real runc containers in pod-like cgroups (issue 2's
//! scenarios), black-box on its JSON lines. Most scenarios run in both cgroup layouts.
use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use copilot::{lifecycle::Source, trace::ContainerState};
use integration_test::{
    Container, ContainerOpts, Event, Gate, Layout, PodCgroup, Trace, cgroup2_mount, copilot_bin,
    random_hex, v1_mounts, wait_comm,
};

/// Generous: a loaded CI machine may be slow, but nothing here should take long.
const T: Duration = Duration::from_secs(10);

macro_rules! both_layouts {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::Layout;
            #[test]
            fn cgroupfs() {
                super::$name(Layout::Cgroupfs)
            }
            #[test]
            fn systemd() {
                super::$name(Layout::Systemd)
            }
        }
    )*};
}

both_layouts!(
    started_after_attach_exit_0,
    started_after_attach_exit_3,
    running_before_attach,
    finished_before_attach,
    sigkill,
    oom_kill,
    leader_exit_is_not_a_process_exit,
    execs_in_other_cgroups_never_reach_userspace,
    children_are_not_the_main_process,
);

/// Starts tracing `pod` from a container of its own in the pod, in its own PID,
/// mount and cgroup namespaces without tracefs (as a sidecar without hostPID),
/// waits for `ready` and checks what it says.
fn trace(pod: &PodCgroup) -> Trace {
    let mut trace = Trace::in_pod(pod);
    let ready = trace.wait_ready(T);
    assert_eq!(
        ready.ready().map(|r| r.pod_cgroup.as_path()),
        Some(pod.path()),
        "{ready}"
    );
    assert_eq!(ready.cgroup_id(), Some(pod.id()), "{ready}");
    trace
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// A container line's `cgroup` names the container's cgroup: the schema says "path";
/// copilot prints it relative to the pod cgroup, and an absolute path is as good.
fn assert_cgroup(line: &Event, pod: &PodCgroup, ctr: &Container) {
    let cgroup = line
        .cgroup()
        .unwrap_or_else(|| panic!("no `cgroup`: {line}"));
    assert_eq!(pod.path().join(cgroup), ctr.cgroup_path(), "{line}");
}

/// The main process's exec line: the entrypoint, exec'd by the pid runc reports.
fn expect_main_exec(trace: &mut Trace, ctr: &Container, filename: &str, comm: &str) -> Event {
    let exec = trace.next_matching(|e| e.is_exec() && e.pid() == Some(ctr.pid()), T);
    assert_eq!(exec.filename(), Some(filename), "{exec}");
    assert_eq!(exec.comm(), Some(comm), "{exec}");
    assert_eq!(exec.container_id(), Some(ctr.id()), "{exec}");
    assert_eq!(exec.cgroup_id(), Some(inode(ctr.cgroup_path())), "{exec}");
    assert!(
        exec.is_main(),
        "the entrypoint's exec is not marked main: {exec}"
    );
    assert!(exec.time_ns().is_some_and(|t| t > 0), "{exec}");
    exec
}

/// The main process's exit line.
fn expect_main_exit(trace: &mut Trace, ctr: &Container) -> Event {
    let exit = trace.next_matching(|e| e.is_exit() && e.pid() == Some(ctr.pid()), T);
    assert_eq!(exit.container_id(), Some(ctr.id()), "{exit}");
    assert!(
        exit.is_main(),
        "the main process's exit is not marked main: {exit}"
    );
    exit
}

/// The container's `exited` state line.
fn expect_container_exited(trace: &mut Trace, ctr: &Container) -> Event {
    let id = ctr.id().to_string();
    trace.next_matching(
        |e| {
            e.is_container()
                && e.container_id() == Some(&id)
                && e.state() == Some(ContainerState::Exited)
        },
        T,
    )
}

/// Nothing but the real main process may be called main (runc's own `/dev/fd/N`
/// re-exec and the `runc:[0:PARENT]`/`[1:CHILD]` exits happen in the container cgroup too),
/// and a container is `exited` once.
fn assert_only_main_is_main(trace: &Trace, ctr: &Container) {
    for e in trace.history() {
        if (e.is_exec() || e.is_exit()) && e.is_main() {
            assert_eq!(
                e.pid(),
                Some(ctr.pid()),
                "a process other than main is marked main: {e}"
            );
        }
    }
    let exited = trace
        .history()
        .iter()
        .filter(|e| e.is_container() && e.container_id() == Some(ctr.id()))
        .filter(|e| e.state() == Some(ContainerState::Exited))
        .count();
    assert_eq!(exited, 1, "container reported exited {exited} times");
}

fn exit_with_code(layout: Layout, args: &[&str], filename: &str, comm: &str, code: u8) {
    let pod = PodCgroup::new(layout);
    let mut trace = trace(&pod);
    let ctr = Container::run(&pod, args, ContainerOpts::default());
    let exec = expect_main_exec(&mut trace, &ctr, filename, comm);
    let exit = expect_main_exit(&mut trace, &ctr);
    assert_eq!(exit.exit_code(), Some(code), "{exit}");
    assert_eq!(exit.signal(), None, "{exit}");
    assert_eq!(exit.status(), Some(u32::from(code) << 8), "{exit}");
    assert_eq!(exit.oom_killed(), Some(false), "{exit}");
    assert_eq!(exit.core_dumped(), Some(false), "{exit}");
    assert!(
        exit.time_ns() >= exec.time_ns(),
        "exit before exec: {exec} {exit}"
    );
    let state = expect_container_exited(&mut trace, &ctr);
    assert_eq!(state.exit_code(), Some(code), "{state}");
    assert_eq!(state.signal(), None, "{state}");
    assert_eq!(state.oom_killed(), Some(false), "{state}");
    let started = trace
        .history()
        .iter()
        .find(|e| {
            e.is_container()
                && e.container_id() == Some(ctr.id())
                && e.state() == Some(ContainerState::Started)
        })
        .unwrap_or_else(|| panic!("no `started` line for {}", ctr.id()));
    assert_eq!(started.pid(), Some(ctr.pid()), "{started}");
    assert_cgroup(started, &pod, &ctr);
    assert_eq!(started.source(), Some(Source::Event), "{started}");
    assert_only_main_is_main(&trace, &ctr);
}

/// Scenario 1: a container started after attach, exit code 0.
fn started_after_attach_exit_0(layout: Layout) {
    exit_with_code(layout, &["true"], "/bin/true", "true", 0);
}

/// Scenario 1: a container started after attach, exit code 3.
fn started_after_attach_exit_3(layout: Layout) {
    exit_with_code(layout, &["sh", "-c", "exit 3"], "/bin/sh", "sh", 3);
}

/// Scenario 2: running before the tracer starts: found by the snapshot, its exit seen.
/// The node's programs are already loaded (another pod's copilot runs), as on any node
/// where copilot has run: without hostPID, their record names the running main.
fn running_before_attach(layout: Layout) {
    let other = PodCgroup::new(layout);
    let _other_copilot = trace(&other);
    let pod = PodCgroup::new(layout);
    let gate = Gate::new();
    let opts = ContainerOpts {
        mounts: vec![gate.mount()],
        ..Default::default()
    };
    let ctr = Container::run(&pod, &["sh", "-c", "read x < /ctl/go; exit 4"], opts);
    wait_comm(ctr.pid(), "sh", T);
    let mut trace = trace(&pod);
    let id = ctr.id().to_string();
    let started = trace.next_matching(
        |e| {
            e.is_container()
                && e.container_id() == Some(&id)
                && e.state() == Some(ContainerState::Started)
        },
        T,
    );
    assert_eq!(started.source(), Some(Source::Snapshot), "{started}");
    assert_eq!(started.pid(), Some(ctr.pid()), "{started}");
    gate.open();
    let exit = expect_main_exit(&mut trace, &ctr);
    assert_eq!(exit.exit_code(), Some(4), "{exit}");
    let state = expect_container_exited(&mut trace, &ctr);
    assert_eq!(state.exit_code(), Some(4), "{state}");
    assert_only_main_is_main(&trace, &ctr);
}

/// Scenario 3: finished before the tracer starts (cgroup still there, empty): reported
/// as exited right after `ready`, without waiting for anything to happen.
fn finished_before_attach(layout: Layout) {
    let pod = PodCgroup::new(layout);
    let ctr = Container::run(&pod, &["sh", "-c", "exit 2"], ContainerOpts::default());
    assert!(ctr.wait_exited(T), "container did not exit");
    assert!(ctr.cgroup_path().is_dir());
    let mut trace = trace(&pod);
    let ready_at = Instant::now();
    let state = expect_container_exited(&mut trace, &ctr);
    let after = ready_at.elapsed();
    assert!(
        matches!(state.source(), Some(Source::Snapshot | Source::Cgroup)),
        "exited container not reported from the snapshot/cgroup: {state}"
    );
    assert_cgroup(&state, &pod, &ctr);
    assert!(
        after < Duration::from_secs(2),
        "reported {after:?} after ready: not immediate"
    );
    assert!(
        !trace.history().iter().any(|e| e.is_exec() || e.is_exit()),
        "process lines for a container that ran before the trace: {:?}",
        trace.history()
    );
}

/// Scenario 4: SIGKILL.
fn sigkill(layout: Layout) {
    let pod = PodCgroup::new(layout);
    let mut trace = trace(&pod);
    let ctr = Container::run(&pod, &["sleep", "1000"], ContainerOpts::default());
    expect_main_exec(&mut trace, &ctr, "/bin/sleep", "sleep");
    ctr.kill(9);
    let exit = expect_main_exit(&mut trace, &ctr);
    assert_eq!(exit.signal(), Some(9), "{exit}");
    assert_eq!(exit.exit_code(), None, "{exit}");
    assert_eq!(exit.status(), Some(9), "{exit}");
    assert_eq!(
        exit.oom_killed(),
        Some(false),
        "a plain SIGKILL reported as OOM: {exit}"
    );
    let state = expect_container_exited(&mut trace, &ctr);
    assert_eq!(state.signal(), Some(9), "{state}");
    assert_eq!(state.oom_killed(), Some(false), "{state}");
    assert_only_main_is_main(&trace, &ctr);
}

/// Scenario 4: killed by the OOM killer under a memory limit (v1 memory controller here).
fn oom_kill(layout: Layout) {
    let pod = PodCgroup::new(layout);
    let mut trace = trace(&pod);
    let opts = ContainerOpts {
        memory_limit: Some(32 << 20),
        ..Default::default()
    };
    let ctr = Container::run(&pod, &["memhog"], opts);
    expect_main_exec(&mut trace, &ctr, "/bin/memhog", "memhog");
    let exit = expect_main_exit(&mut trace, &ctr);
    assert_eq!(exit.signal(), Some(9), "{exit}");
    assert_eq!(exit.exit_code(), None, "{exit}");
    assert_eq!(exit.oom_killed(), Some(true), "{exit}");
    let state = expect_container_exited(&mut trace, &ctr);
    assert_eq!(state.signal(), Some(9), "{state}");
    assert_eq!(state.oom_killed(), Some(true), "{state}");
    assert_only_main_is_main(&trace, &ctr);
}

/// Scenario 5: the leader thread exits first (pthread_exit) while a second thread runs
/// for another second: one exit line, when the last thread ends, with its exit code.
fn leader_exit_is_not_a_process_exit(layout: Layout) {
    let pod = PodCgroup::new(layout);
    let mut trace = trace(&pod);
    let ctr = Container::run(
        &pod,
        &["leader_exit", "1000", "6"],
        ContainerOpts::default(),
    );
    let exec = expect_main_exec(&mut trace, &ctr, "/bin/leader_exit", "leader_exit");
    let exit = expect_main_exit(&mut trace, &ctr);
    assert_eq!(exit.exit_code(), Some(6), "{exit}");
    let lived = exit
        .time_ns()
        .unwrap_or(0)
        .saturating_sub(exec.time_ns().unwrap_or(0));
    assert!(
        lived >= 900_000_000,
        "exit reported {lived} ns after exec: the leader's pthread_exit was taken for the process exit"
    );
    // The process dies with the second thread; the leader was already a zombie.
    assert_ne!(
        exit.tid(),
        exit.pid(),
        "the last thread to exit is not the leader: {exit}"
    );
    let exits = trace
        .history()
        .iter()
        .filter(|e| e.is_exit() && e.pid() == Some(ctr.pid()))
        .count();
    assert_eq!(exits, 1, "{exits} exit lines for one process");
    assert_eq!(
        expect_container_exited(&mut trace, &ctr).exit_code(),
        Some(6)
    );
}

/// Scenario 6: thousands of execs in a sibling pod never reach userspace.
///
/// A sentinel container in the traced pod runs after the noisy one has finished; the
/// ring buffer keeps order, so once the sentinel's exit is here, every event from
/// before it has been read.
fn execs_in_other_cgroups_never_reach_userspace(layout: Layout) {
    let pod = PodCgroup::new(layout);
    let other = PodCgroup::new(layout);
    let mut trace = trace(&pod);
    let noisy = Container::run(
        &other,
        &["sh", "-c", "spawner 3000 0; echo spawner=$?"],
        ContainerOpts::default(),
    );
    assert!(
        noisy.wait_exited(Duration::from_secs(120)),
        "spawner 3000 did not finish"
    );
    assert_eq!(
        noisy.output(),
        "spawner=0\n",
        "the 3000 execs did not all run"
    );
    let sentinel = Container::run(&pod, &["true"], ContainerOpts::default());
    expect_main_exit(&mut trace, &sentinel);
    for e in trace.history() {
        assert_ne!(e.kind(), "lost", "events lost: {e}");
        if e.is_exec() || e.is_exit() || e.is_container() {
            assert_eq!(
                e.container_id(),
                Some(sentinel.id()),
                "an event from outside the traced pod: {e}"
            );
        }
    }
    // runc 1.1 re-execs a memfd copy of itself (`/dev/fd/N`), twice; on a slow machine
    // both can land in the container cgroup.
    let n = trace
        .history()
        .iter()
        .filter(|e| e.is_exec() && !e.filename().is_some_and(|f| f.starts_with("/dev/fd/")))
        .count();
    assert!(
        n <= 1,
        "{n} exec lines besides runc's /dev/fd/N re-execs; only the sentinel's expected"
    );
}

/// Scenario 7: main forks and execs 200 children: 200 child exits that are not main,
/// then main's own exit with its code.
fn children_are_not_the_main_process(layout: Layout) {
    let pod = PodCgroup::new(layout);
    let mut trace = trace(&pod);
    let ctr = Container::run(&pod, &["spawner", "200", "5"], ContainerOpts::default());
    expect_main_exec(&mut trace, &ctr, "/bin/spawner", "spawner");
    let upto = trace.collect_until(|e| e.is_exit() && e.is_main(), T);
    let main_exit = upto.last().expect("collect_until returns the match");
    assert_eq!(main_exit.pid(), Some(ctr.pid()), "{main_exit}");
    assert_eq!(main_exit.exit_code(), Some(5), "{main_exit}");
    let children: Vec<&Event> = upto
        .iter()
        .filter(|e| e.is_exit() && e.comm() == Some("true"))
        .collect();
    assert_eq!(children.len(), 200, "child exits before main's");
    for c in &children {
        assert!(!c.is_main(), "a child is marked main: {c}");
        assert_eq!(c.exit_code(), Some(0), "{c}");
        assert_eq!(c.container_id(), Some(ctr.id()), "{c}");
        assert_eq!(c.process().map(|p| p.ppid), Some(ctr.pid()), "{c}");
        assert_ne!(c.pid(), Some(ctr.pid()), "{c}");
    }
    let child_execs = upto
        .iter()
        .filter(|e| e.is_exec() && e.filename() == Some("/bin/true"))
        .count();
    assert_eq!(child_execs, 200, "child exec lines");
    assert!(!upto.iter().any(|e| e.kind() == "lost"), "events lost");
    let state = expect_container_exited(&mut trace, &ctr);
    assert_eq!(state.exit_code(), Some(5), "{state}");
    assert_only_main_is_main(&trace, &ctr);
}

/// Scenario 8: `copilot trace --pod-cgroup <bad>` exits non-zero, naming the path;
/// returns its stderr.
fn bad_pod_cgroup(path: &Path) -> String {
    let mut child = Command::new(copilot_bin())
        .args(["trace", "--pod-cgroup"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning copilot");
    let deadline = Instant::now() + T;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "copilot trace --pod-cgroup {} did not exit within {T:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collecting output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "exit status {} for {}",
        out.status,
        path.display()
    );
    assert!(
        stderr.contains(&*path.to_string_lossy()),
        "stderr does not name {}:\n{stderr}",
        path.display()
    );
    assert!(
        !stdout.contains("\"ready\""),
        "ready printed for a bad cgroup: {stdout}"
    );
    stderr.into_owned()
}

#[test]
fn bad_input_nonexistent_pod_cgroup() {
    let pod = PodCgroup::new(Layout::Cgroupfs);
    bad_pod_cgroup(&pod.path().join(format!("pod-{}", random_hex(8))));
}

#[test]
fn bad_input_pod_cgroup_leading_out_of_the_mount() {
    let out = cgroup2_mount().join("..");
    let stderr = bad_pod_cgroup(&out);
    assert!(
        stderr.contains("leads out of the cgroup v2 mount"),
        "{stderr}"
    );
}

/// Removes an empty directory when dropped, the test passed or not.
struct Rmdir<'a>(&'a Path);

impl Drop for Rmdir<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.0);
    }
}

/// A pod's containers sit below it, and the programs stop every task above level 3
/// before any lookup (a node's services): a cgroup right under the root is no pod.
#[test]
fn bad_input_pod_cgroup_at_level_one() {
    let dir = cgroup2_mount().join(format!("copilot-test-{}", random_hex(8)));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let _guard = Rmdir(&dir);
    let stderr = bad_pod_cgroup(&dir);
    assert!(
        stderr.contains("at level 1 of the cgroup v2 hierarchy")
            && stderr.contains("levels 2 to 15"),
        "{stderr}"
    );
}

#[test]
fn bad_input_pod_cgroup_is_a_regular_file() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    bad_pod_cgroup(file.path());
}

#[test]
fn bad_input_pod_cgroup_in_a_cgroup_v1_hierarchy() {
    let (memory, _) = v1_mounts()
        .into_iter()
        .find(|(_, opts)| opts.split(',').any(|o| o == "memory"))
        .expect("this host has a cgroup v1 memory hierarchy");
    // A real v1 cgroup directory, not just the mount point.
    let dir = memory.join(format!("copilot-test-{}", random_hex(8)));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let _guard = Rmdir(&dir);
    assert!(
        dir.join("memory.limit_in_bytes").is_file(),
        "{} is not a v1 cgroup",
        dir.display()
    );
    bad_pod_cgroup(&dir);
}
