//! The memory this process may use: the lowest memory limit on the path from its
//! own cgroup up to the root of the hierarchy (cgroup v2 `memory.max`, or v1
//! `memory.limit_in_bytes` on hybrid hosts), the limit that OOM-kills the container.
//! Bounds the work that cannot stream (decoding protobuf literals).
use std::path::{Path, PathBuf};

/// The memory limit of this process's cgroup or any ancestor, if there is one.
pub fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    memory_dirs(&own, &mountinfo)
        .into_iter()
        .flat_map(|(mount, dir, file)| limits_up_to(&mount, dir, file))
        .min()
}

/// For each memory hierarchy: (mount point, this process's cgroup directory, limit file).
fn memory_dirs(own: &str, mountinfo: &str) -> Vec<(PathBuf, PathBuf, &'static str)> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        // `36 25 0:31 /root /mount rw,relatime shared:14 - cgroup cgroup rw,memory`
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(mount), Some(fstype)) = (pre.get(3), pre.get(4), post.first()) else {
            continue;
        };
        let options = post.get(2).copied().unwrap_or_default();
        let (rel, file) = match *fstype {
            "cgroup2" => (own_path(own, |c| c.is_empty()), "memory.max"),
            "cgroup" if options.split(',').any(|o| o == "memory") => (
                own_path(own, |c| c.split(',').any(|c| c == "memory")),
                "memory.limit_in_bytes",
            ),
            _ => continue,
        };
        let Some(rel) = rel else { continue };
        let rel = rel.strip_prefix(root).unwrap_or(rel);
        let mount = PathBuf::from(mount);
        let dir = mount.join(rel.trim_start_matches('/'));
        // A cgroup namespace we cannot see out of: the mount is our own cgroup.
        let dir = if dir.is_dir() { dir } else { mount.clone() };
        found.push((mount, dir, file));
    }
    found
}

/// The path of this process's cgroup in the hierarchy whose controllers match.
fn own_path(own: &str, controllers: impl Fn(&str) -> bool) -> Option<&str> {
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, c, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers(c).then_some(path)
    })
}

fn limits_up_to(mount: &Path, mut dir: PathBuf, file: &str) -> Vec<u64> {
    let mut limits = Vec::new();
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join(file))
            && let Ok(bytes) = text.trim().parse::<u64>()
        {
            limits.push(bytes);
        }
        if dir == mount || !dir.pop() || !dir.starts_with(mount) {
            return limits;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_limit_on_the_path_wins() {
        let root = tempfile::tempdir().expect("tempdir");
        let leaf = root.path().join("a/b/c");
        std::fs::create_dir_all(&leaf).expect("mkdir");
        std::fs::write(root.path().join("a/memory.max"), "1000\n").expect("write");
        std::fs::write(root.path().join("a/b/memory.max"), "max\n").expect("write");
        std::fs::write(leaf.join("memory.max"), "5000\n").expect("write");
        let mut found = limits_up_to(root.path(), leaf, "memory.max");
        found.sort();
        assert_eq!(found, vec![1000, 5000]);
    }

    #[test]
    fn both_hierarchies_of_a_hybrid_host_are_found() {
        let own = "12:memory:/kubepods/pod1/c1\n1:name=systemd:/x\n0::/kubepods/pod1/c1\n";
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
36 25 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
37 25 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct
";
        let dirs = memory_dirs(own, mountinfo);
        let files: Vec<&str> = dirs.iter().map(|(_, _, f)| *f).collect();
        assert_eq!(files, ["memory.max", "memory.limit_in_bytes"]);
        // Neither path exists here, so each falls back to its mount.
        assert_eq!(dirs[1].1, Path::new("/sys/fs/cgroup/memory"));
    }
}
