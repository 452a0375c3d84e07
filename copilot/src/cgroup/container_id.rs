//! Container ids from cgroup directory names, for the layouts that Kubernetes
//! container runtimes use.
//!
//! | runtime / driver         | container cgroup name                  |
//! |--------------------------|----------------------------------------|
//! | any, cgroupfs driver     | `<id>`                                 |
//! | containerd, systemd      | `cri-containerd-<id>.scope`            |
//! | CRI-O, systemd           | `crio-<id>.scope` (`crio-conmon-<id>.scope` is the monitor, not a container) |
//! | cri-dockerd, systemd     | `docker-<id>.scope`                    |
//! | containerd, cgroupfs in systemd slices | `cri-containerd:<id>` / `…:cri-containerd:<id>` |

/// What a cgroup directory under a pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupKind {
    /// A container, with its runtime id.
    Container(String),
    /// The CRI-O monitor process's cgroup: not a container.
    Conmon,
    /// Something else (a nested cgroup a runtime made, an unknown name).
    Other,
}

/// Classifies a cgroup directory name (the last path component).
pub fn classify(name: &str) -> CgroupKind {
    if let Some(rest) = name.strip_prefix("crio-conmon-")
        && is_id(rest.strip_suffix(".scope").unwrap_or(rest))
    {
        return CgroupKind::Conmon;
    }
    let candidates = [
        name.strip_prefix("cri-containerd-")
            .and_then(|s| s.strip_suffix(".scope")),
        name.strip_prefix("crio-")
            .and_then(|s| s.strip_suffix(".scope")),
        name.strip_prefix("docker-")
            .and_then(|s| s.strip_suffix(".scope")),
        name.rsplit_once(":cri-containerd:").map(|(_, id)| id),
        name.strip_prefix("cri-containerd:"),
        Some(name),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|id| is_id(id))
        .map_or(CgroupKind::Other, |id| CgroupKind::Container(id.to_owned()))
}

/// The container id in a cgroup directory name, if it names a container.
pub fn parse(name: &str) -> Option<String> {
    match classify(name) {
        CgroupKind::Container(id) => Some(id),
        _ => None,
    }
}

/// Container ids are 64 lowercase hex digits in every runtime here.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod UID in a pod cgroup directory name: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd), dashes restored.
pub fn pod_uid(name: &str) -> Option<String> {
    let name = name.strip_suffix(".slice").unwrap_or(name);
    let (_, uid) = name.rsplit_once("pod")?;
    let uid = uid.replace('_', "-");
    (uid.len() == 36 && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn every_runtime_layout() {
        for name in [
            ID.to_owned(),
            format!("cri-containerd-{ID}.scope"),
            format!("crio-{ID}.scope"),
            format!("docker-{ID}.scope"),
            format!("cri-containerd:{ID}"),
            format!("kubepods-besteffort-pod1234.slice:cri-containerd:{ID}"),
        ] {
            assert_eq!(parse(&name).as_deref(), Some(ID), "{name}");
        }
    }

    #[test]
    fn conmon_and_others_are_not_containers() {
        assert_eq!(
            classify(&format!("crio-conmon-{ID}.scope")),
            CgroupKind::Conmon
        );
        for name in [
            "init.scope",
            "cri-containerd-abc.scope",
            &ID[1..],
            &ID.to_uppercase(),
            &format!("{ID}0"),
            "docker-.scope",
            "",
        ] {
            assert_eq!(classify(name), CgroupKind::Other, "{name}");
        }
    }

    #[test]
    fn pod_uids() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        assert_eq!(pod_uid(&format!("pod{uid}")).as_deref(), Some(uid));
        let systemd = format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"));
        assert_eq!(pod_uid(&systemd).as_deref(), Some(uid));
        assert_eq!(pod_uid("kubepods-besteffort.slice"), None);
        assert_eq!(pod_uid("podxyz"), None);
    }
}
