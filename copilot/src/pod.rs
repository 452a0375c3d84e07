//! Finding the pod cgroup, and copilot's own container in it.
//!
//! The pod cgroup comes from `--pod-cgroup`, else from the pod UID searched
//! under the host's cgroupfs, else from the sidecar's own cgroup (its parent).
//! Which container in it is the main one is decided in `sidecar::select`.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::cgroup::{self, Cgroup, Hierarchy};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(
        "no cgroup for pod {uid} under {root} (looked for pod{uid} and *-pod{underscored}.slice)"
    )]
    PodNotFound {
        uid: String,
        underscored: String,
        root: PathBuf,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "copilot runs in a private cgroup namespace (its cgroup is `/`), so its pod cannot be \
         inferred: pass --pod-uid (or set POD_UID from the downward API) or --pod-cgroup, with \
         the host's cgroupfs mounted at --cgroup-root"
    )]
    PrivateNamespace,
    #[error("copilot's own cgroup {0} has no parent cgroup to take for the pod")]
    NoParent(PathBuf),
}

/// How the user identified the pod.
#[derive(Debug, Clone, Default)]
pub struct PodSelector {
    pub pod_cgroup: Option<PathBuf>,
    pub pod_uid: Option<String>,
    /// Where the host's cgroupfs is mounted (the v2 tree is this or `<this>/unified`).
    pub cgroup_root: PathBuf,
}

/// Resolves the pod cgroup; returns the hierarchy it lives in too.
pub fn find_pod(sel: &PodSelector) -> Result<(Hierarchy, Cgroup), Error> {
    let hierarchy =
        Hierarchy::discover(Some(&sel.cgroup_root)).or_else(|_| Hierarchy::discover(None))?;
    if let Some(p) = &sel.pod_cgroup {
        return Ok((hierarchy.clone(), hierarchy.resolve(p)?));
    }
    if let Some(uid) = &sel.pod_uid {
        let path = search_pod_uid(&hierarchy.mount, uid)?;
        return Ok((hierarchy.clone(), hierarchy.resolve(&path)?));
    }
    let own = own_cgroup()?;
    if own == Path::new("/") {
        return Err(Error::PrivateNamespace);
    }
    let parent = own.parent().ok_or_else(|| Error::NoParent(own.clone()))?;
    if parent == Path::new("/") {
        return Err(Error::NoParent(own));
    }
    Ok((hierarchy.clone(), hierarchy.resolve(parent)?))
}

/// The sidecar's own cgroup v2 path, from `/proc/self/cgroup` (`0::/path`).
pub fn own_cgroup() -> Result<PathBuf, Error> {
    const PATH: &str = "/proc/self/cgroup";
    let text = fs::read_to_string(PATH).map_err(|source| Error::Read {
        path: PATH.into(),
        source,
    })?;
    Ok(parse_own_cgroup(&text).unwrap_or_else(|| PathBuf::from("/")))
}

/// The sidecar's own container among `pod`'s children, where `/proc/self/cgroup`
/// cannot tell (it reads `0::/` in a private cgroup namespace): a container's own
/// cgroupfs mount has the container's cgroup as its root, so the inode of that
/// mount's root is the container's cgroup id. `/` when none matches.
pub fn own_container_in(pod: &Cgroup) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let own = own_cgroup().unwrap_or_else(|_| PathBuf::from("/"));
    if own != Path::new("/") {
        return own;
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let roots: Vec<u64> = cgroup2_mount_points(&mounts)
        .filter_map(|p| fs::metadata(p).ok().map(|m| m.ino()))
        .collect();
    pod.children()
        .unwrap_or_default()
        .into_iter()
        .find(|(_, id)| roots.contains(id))
        .map_or(own, |(name, _)| pod.rel.join(name))
}

/// Mount points of the cgroup2 mounts in a `/proc/self/mountinfo` text.
fn cgroup2_mount_points(mountinfo: &str) -> impl Iterator<Item = &str> {
    mountinfo.lines().filter_map(|line| {
        let fs = line.split(" - ").nth(1)?.split(' ').next()?;
        (fs == "cgroup2").then(|| line.split(' ').nth(4)).flatten()
    })
}

fn parse_own_cgroup(text: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim()))
}

/// Breadth-first search for the pod's directory, a few levels deep (the
/// kubelet puts pods at most at `kubepods.slice/kubepods-<qos>.slice/…`).
fn search_pod_uid(mount: &Path, uid: &str) -> Result<PathBuf, Error> {
    let underscored = uid.replace('-', "_");
    let cgroupfs_name = format!("pod{uid}");
    let systemd_suffix = format!("-pod{underscored}.slice");
    let mut level = vec![mount.to_path_buf()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for dir in level {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if name == cgroupfs_name || name.ends_with(&systemd_suffix) {
                    return Ok(e.path());
                }
                // Only descend into the kubelet's own tree.
                if name.starts_with("kubepods") || name == "besteffort" || name == "burstable" {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    Err(Error::PodNotFound {
        uid: uid.into(),
        underscored,
        root: mount.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mounts_from_mountinfo() {
        let text = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                    31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    40 30 0:26 /.. /host/cgroup ro - cgroup2 cgroup2 rw\n";
        let points: Vec<&str> = cgroup2_mount_points(text).collect();
        assert_eq!(points, ["/sys/fs/cgroup", "/host/cgroup"]);
    }

    #[test]
    fn own_cgroup_lines() {
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/kubepods/pod1/abc\n";
        assert_eq!(
            parse_own_cgroup(hybrid),
            Some(PathBuf::from("/kubepods/pod1/abc"))
        );
        assert_eq!(parse_own_cgroup("0::/\n"), Some(PathBuf::from("/")));
        assert_eq!(parse_own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn pod_uid_search_in_both_layouts() {
        let root = tempfile::tempdir().unwrap();
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let cgroupfs = root
            .path()
            .join("kubepods/besteffort")
            .join(format!("pod{uid}"));
        fs::create_dir_all(&cgroupfs).unwrap();
        assert_eq!(search_pod_uid(root.path(), uid).unwrap(), cgroupfs);

        let root = tempfile::tempdir().unwrap();
        let slice = root
            .path()
            .join("kubepods.slice/kubepods-burstable.slice")
            .join(format!(
                "kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            ));
        fs::create_dir_all(&slice).unwrap();
        assert_eq!(search_pod_uid(root.path(), uid).unwrap(), slice);

        let err = search_pod_uid(root.path(), "11111111-2222-3333-4444-555555555555").unwrap_err();
        assert!(
            err.to_string().contains("no cgroup for pod 11111111"),
            "{err}"
        );
    }
}
