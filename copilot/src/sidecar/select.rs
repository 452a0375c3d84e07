//! Which container of the pod is the main one: one pure decision over the
//! [`lifecycle::Pod`](crate::lifecycle::Pod), taken again at every change.
//!
//! In order: a container named by `--main-container-id` (its cgroup name or the
//! container id in it); else the sibling rule, the only container that has started
//! and is neither the sandbox (`pause`, a runtime's helper cgroup), copilot's own,
//! nor another copilot (the downloader); else a container whose processes were
//! hidden when copilot looked, once it exits. Two siblings cannot be told apart:
//! that is [`Ambiguous`].

use std::path::{Path, PathBuf};

use crate::{
    cgroup::container_id,
    lifecycle::{Container, Pod, State},
};

/// Which container is the main one, as the user named it.
#[derive(Debug, Clone, Default)]
pub struct MainSelector {
    /// Container id (64 hex) or cgroup directory name.
    pub id: Option<String>,
}

/// What copilot knows about itself, to leave itself out.
#[derive(Debug, Clone, Default)]
pub struct Own {
    /// Its own container's cgroup (only the last component is compared).
    pub cgroup: PathBuf,
    /// Its own command name (`/proc/self/comm`): a container running it is the
    /// downloader init container, not the task.
    pub comm: String,
}

/// More than one container could be the main one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot tell the main container: {count} candidates in the pod ({found}); pass --main-container-id or --watch-container"
)]
pub struct Ambiguous {
    pub count: usize,
    /// Each candidate's cgroup name and command.
    pub found: String,
}

/// How a container cgroup in the pod relates to the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Sandbox,
    Own,
    Candidate,
}

/// Classifies a container for the sibling rule: the sandbox runs `pause`, and
/// the sidecar's own container is the one holding this process.
pub fn role(name: &str, main_comm: Option<&str>, own: &Path) -> Role {
    if own.file_name().is_some_and(|n| n == name) {
        Role::Own
    } else if main_comm == Some("pause") {
        Role::Sandbox
    } else if container_id::parse(name).is_none() && !name.is_empty() {
        // A cgroup that is not a container (a runtime's helper cgroup).
        Role::Sandbox
    } else {
        Role::Candidate
    }
}

/// The main container's cgroup id, `None` while it cannot be told yet.
pub fn main_container(
    pod: &Pod,
    selector: &MainSelector,
    own: &Own,
) -> Result<Option<u64>, Ambiguous> {
    if let Some(want) = &selector.id {
        return Ok(pod
            .containers()
            .find(|c| c.name == *want || container_id::parse(&c.name).as_deref() == Some(want))
            .map(|c| c.cgroup_id));
    }
    let candidates: Vec<&Container> = pod
        .containers()
        .filter(|c| {
            let comm = c.main_comm.as_deref();
            // A cgroup exists before its container's first exec: until then it may be
            // the downloader, or any container, so it is nobody's main yet.
            !matches!(c.state, State::Created)
                && role(&c.name, comm, &own.cgroup) == Role::Candidate
                // Another copilot (the downloader init container) is not the task.
                && comm != Some(own.comm.as_str())
        })
        .collect();
    // A container already running, unseen, when we looked (no hostPID, and no
    // record of its first exec: it started before any copilot on the node) is
    // the sandbox in Flyte's order, where the uploader starts before the
    // downloader and the main container. It is main only if nothing else can be
    // and it exits (its pid 1's exit gives the status): a main container that
    // started before the sidecar, on a node where nothing recorded it.
    let (hidden, candidates): (Vec<&Container>, Vec<&Container>) =
        candidates.into_iter().partition(|c| c.hidden);
    match candidates.as_slice() {
        [] => Ok(hidden
            .iter()
            .find(|c| matches!(c.state, State::Exited(_)))
            .map(|c| c.cgroup_id)),
        [one] => Ok(Some(one.cgroup_id)),
        many => Err(Ambiguous {
            count: many.len(),
            found: many
                .iter()
                .map(|c| {
                    format!(
                        "{} ({})",
                        c.name,
                        c.main_comm.as_deref().unwrap_or("not started")
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Seen, Source};

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn own() -> Own {
        Own {
            cgroup: PathBuf::from(format!("/kubepods/pod1/{}", id('b'))),
            comm: "copilot".into(),
        }
    }

    /// A pod with its sandbox and copilot's own container running.
    fn pod() -> Pod {
        let mut pod = Pod::default();
        running(&mut pod, 1, &id('0'), "pause");
        running(&mut pod, 2, &id('b'), "copilot");
        pod
    }

    fn running(pod: &mut Pod, cg: u64, name: &str, comm: &str) {
        pod.snapshot(
            cg,
            name,
            Seen::Running {
                pid: cg as u32 * 10,
            },
        );
        pod.set_comm(cg, comm);
    }

    fn choose(pod: &Pod, want: Option<&str>) -> Result<Option<u64>, Ambiguous> {
        let selector = MainSelector {
            id: want.map(str::to_owned),
        };
        main_container(pod, &selector, &own())
    }

    #[test]
    fn sibling_roles() {
        let a = id('a');
        let own = own().cgroup;
        assert_eq!(role(&a, Some("pause"), &own), Role::Sandbox);
        assert_eq!(role(&id('b'), Some("copilot"), &own), Role::Own);
        assert_eq!(role(&a, Some("python"), &own), Role::Candidate);
        assert_eq!(role(&a, None, &own), Role::Candidate);
        assert_eq!(role("crio-conmon-x.scope", None, &own), Role::Sandbox);
    }

    #[test]
    fn a_named_container_wins_by_cgroup_name_or_container_id() {
        let mut pod = pod();
        running(&mut pod, 3, &id('c'), "python");
        running(
            &mut pod,
            4,
            &format!("cri-containerd-{}.scope", id('d')),
            "envoy",
        );
        assert_eq!(choose(&pod, Some(&id('d'))), Ok(Some(4)));
        assert_eq!(
            choose(&pod, Some(&format!("cri-containerd-{}.scope", id('d')))),
            Ok(Some(4))
        );
        // Named, even before it starts, and even when the sibling rule would refuse.
        pod.add(5, &id('e'), Source::Cgroup);
        assert_eq!(choose(&pod, Some(&id('e'))), Ok(Some(5)));
        assert_eq!(choose(&pod, Some(&id('f'))), Ok(None));
    }

    #[test]
    fn the_one_started_sibling_is_main() {
        let mut pod = pod();
        assert_eq!(choose(&pod, None), Ok(None), "only sandbox and own");
        // Created, not started: nobody's main yet.
        pod.add(3, &id('c'), Source::Cgroup);
        assert_eq!(choose(&pod, None), Ok(None));
        // The downloader: another copilot.
        running(&mut pod, 4, &id('d'), "copilot");
        // A runtime's helper cgroup.
        running(&mut pod, 5, "crio-conmon-x.scope", "conmon");
        assert_eq!(choose(&pod, None), Ok(None));
        pod.snapshot(3, &id('c'), Seen::Running { pid: 30 });
        pod.set_comm(3, "python");
        assert_eq!(choose(&pod, None), Ok(Some(3)));
        // It stays main once exited.
        pod.emptied(3, true);
        assert_eq!(choose(&pod, None), Ok(Some(3)));
    }

    #[test]
    fn two_started_siblings_are_ambiguous() {
        let mut pod = pod();
        running(&mut pod, 3, &id('c'), "python");
        pod.snapshot(4, &id('d'), Seen::Waiting { pid: 40 });
        assert_eq!(choose(&pod, None), Ok(Some(3)), "waiting is not started");
        pod.snapshot(4, &id('d'), Seen::Running { pid: 40 });
        let err = choose(&pod, None).expect_err("two candidates");
        assert_eq!(err.count, 2);
        assert_eq!(
            err.found,
            format!("{} (python), {} (not started)", id('c'), id('d'))
        );
        assert!(err.to_string().contains("--main-container-id"), "{err}");
    }

    #[test]
    fn a_hidden_container_is_main_only_alone_and_once_exited() {
        let mut pod = pod();
        pod.snapshot(3, &id('c'), Seen::Hidden);
        assert_eq!(choose(&pod, None), Ok(None), "hidden and running");
        pod.emptied(3, true);
        assert_eq!(choose(&pod, None), Ok(Some(3)), "hidden and exited");
        running(&mut pod, 4, &id('d'), "python");
        assert_eq!(choose(&pod, None), Ok(Some(4)), "a visible sibling first");
    }
}
