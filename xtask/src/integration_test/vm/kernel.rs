//! The kernels of the matrix: Debian's packaged 6.1 and 6.12 images, and the host's own.
//!
//! Debian images are fetched with `apt-get download` and only their `boot/` directory is
//! unpacked (`dpkg-deb --fsys-tarfile | tar -x ./boot`: `dpkg-deb -x` would also unpack
//! some 400 MiB of modules per kernel that the VM never loads — everything the tests need
//! is built in, see [`REQUIRED_CONFIG`]). Unpacked kernels are cached in
//! `target/vm/kernels/<release>/`; apt's local package lists decide which release is the
//! newest, so a cached kernel costs no network.
use std::{
    cmp::Ordering,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Config options the VM needs built in (`=y`): there are no modules in the initramfs.
/// Checked in Debian's 6.1.0-56 and 6.12.117 configs: all `=y`.
pub const REQUIRED_CONFIG: &[&str] = &[
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_DEVTMPFS",
    "CONFIG_TMPFS",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_CGROUPS",
    "CONFIG_MEMCG",
    "CONFIG_CGROUP_PIDS",
    "CONFIG_CGROUP_BPF",
    "CONFIG_PID_NS",
    "CONFIG_NET_NS",
    "CONFIG_BPF_SYSCALL",
    "CONFIG_BPF_EVENTS",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_TRACEPOINTS",
    "CONFIG_EVENT_TRACING",
];

/// A kernel the user asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// The newest Debian package whose name matches `regex` (apt-cache's syntax).
    Debian { label: String, regex: String },
    /// An exact Debian package name, `linux-image-…`.
    Package(String),
    /// The running kernel, `/boot/vmlinuz-$(uname -r)`.
    Host,
    /// A kernel image file on disk.
    Image(PathBuf),
}

impl Spec {
    /// The matrix when no kernel is named.
    pub fn defaults() -> Vec<Spec> {
        ["6.1", "6.12", "host"]
            .iter()
            .map(|s| Spec::parse(s).expect("valid default"))
            .collect()
    }

    /// `6.1`, `6.12`, `host`, `linux-image-…` or a path to a kernel image.
    pub fn parse(s: &str) -> anyhow::Result<Spec> {
        Ok(match s {
            // Debian 12's own kernel: `linux-image-6.1.0-<abi>-amd64`.
            "6.1" => Spec::Debian {
                label: s.into(),
                regex: r"^linux-image-6\.1\.0-[0-9]+-amd64$".into(),
            },
            // bookworm-security's backport: `linux-image-6.12.<n>+deb12-amd64`.
            "6.12" => Spec::Debian {
                label: s.into(),
                regex: r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64$".into(),
            },
            "host" => Spec::Host,
            _ if s.starts_with("linux-image-") => Spec::Package(s.into()),
            _ if s.contains('/') => Spec::Image(PathBuf::from(s)),
            _ => bail!(
                "unknown kernel {s:?}: use 6.1, 6.12, host, a Debian package name \
                 (linux-image-…) or a path to a kernel image"
            ),
        })
    }
}

/// A kernel image ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// What the user asked for (`6.1`, `host`, …).
    pub label: String,
    /// `uname -r` of the image, e.g. `6.1.0-56-amd64`.
    pub release: String,
    pub image: PathBuf,
    /// `.config` of the image, when known.
    pub config: Option<PathBuf>,
}

/// Either a kernel, or why this one cannot run here (reported, not fatal).
pub enum Resolved {
    Ready(Kernel),
    Unavailable { label: String, reason: String },
}

pub fn resolve(spec: &Spec, cache: &Path) -> anyhow::Result<Resolved> {
    match spec {
        Spec::Debian { label, regex } => {
            let package = newest_package(regex)?;
            Ok(Resolved::Ready(debian(label, &package, cache)?))
        }
        Spec::Package(package) => Ok(Resolved::Ready(debian(package, package, cache)?)),
        Spec::Host => Ok(host()),
        Spec::Image(path) => {
            if !path.is_file() {
                bail!("kernel image {} does not exist", path.display());
            }
            Ok(Resolved::Ready(Kernel {
                label: path.display().to_string(),
                release: path
                    .file_name()
                    .map(|n| {
                        n.to_string_lossy()
                            .trim_start_matches("vmlinuz-")
                            .to_string()
                    })
                    .unwrap_or_default(),
                image: path.clone(),
                config: None,
            }))
        }
    }
}

/// The running kernel's image, if this machine has it. Firecracker-style VMs (like the one
/// these sessions run in) boot a kernel that is not on their own disk: then the host kernel
/// is covered by the host suite (`cargo xtask integration-test`) only.
fn host() -> Resolved {
    let release = match cmd::output(Command::new("uname").arg("-r")) {
        Ok(r) => r.trim().to_string(),
        Err(e) => {
            return Resolved::Unavailable {
                label: "host".into(),
                reason: format!("uname -r: {e:#}"),
            };
        }
    };
    let image = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    if let Err(e) = std::fs::File::open(&image) {
        return Resolved::Unavailable {
            label: "host".into(),
            reason: format!(
                "the host kernel's image {} is not readable ({e}); the host suite \
                 (`cargo xtask integration-test`) covers {release}",
                image.display()
            ),
        };
    }
    let config = PathBuf::from(format!("/boot/config-{release}"));
    Resolved::Ready(Kernel {
        label: "host".into(),
        release,
        image,
        config: config.is_file().then_some(config),
    })
}

/// The newest package in apt's lists whose name matches `regex`.
///
/// Only the local lists are read; if they are empty (a fresh container that never ran
/// `apt-get update`), they are updated once.
fn newest_package(regex: &str) -> anyhow::Result<String> {
    let search = || -> anyhow::Result<Vec<String>> {
        let out = cmd::output(Command::new("apt-cache").args(["search", "--names-only", regex]))?;
        let re_names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect();
        Ok(re_names)
    };
    let mut names = search()?;
    if names.is_empty() {
        eprintln!("xtask: vm: no package matches {regex} in apt's lists; running apt-get update");
        cmd::run(
            Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        names = search()?;
    }
    names.sort_by(|a, b| natural_cmp(a, b));
    names
        .pop()
        .with_context(|| format!("no Debian package matches {regex} (apt-cache search)"))
}

/// Compares strings with runs of digits taken as numbers: `6.1.0-9` < `6.1.0-56`.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> Vec<(bool, String)> {
        let mut parts: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match parts.last_mut() {
                Some((d, part)) if *d == digit => part.push(c),
                _ => parts.push((digit, c.to_string())),
            }
        }
        parts
    };
    let (pa, pb) = (split(a), split(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => x
                .trim_start_matches('0')
                .len()
                .cmp(&y.trim_start_matches('0').len())
                .then_with(|| x.trim_start_matches('0').cmp(y.trim_start_matches('0'))),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// `linux-image-<release>` from the cache, or downloaded and unpacked into it.
fn debian(label: &str, package: &str, cache: &Path) -> anyhow::Result<Kernel> {
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{package} is not a linux-image-… package"))?
        .trim_end_matches("-unsigned")
        .to_string();
    let dir = cache.join(&release);
    let kernel = |dir: &Path| Kernel {
        label: label.to_string(),
        release: release.clone(),
        image: dir.join(format!("boot/vmlinuz-{release}")),
        config: Some(dir.join(format!("boot/config-{release}"))),
    };
    if kernel(&dir).image.is_file() {
        eprintln!(
            "xtask: vm: {label}: {package} (cached in {})",
            dir.display()
        );
        return Ok(kernel(&dir));
    }
    eprintln!("xtask: vm: {label}: fetching {package}");
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let tmp = cache.join(format!(".download-{release}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = download_and_unpack(package, &tmp).and_then(|()| {
        let unpacked = tmp.join("root");
        if !kernel(&unpacked).image.is_file() {
            bail!("{package} has no boot/vmlinuz-{release}");
        }
        std::fs::rename(&unpacked, &dir)
            .with_context(|| format!("moving the unpacked kernel to {}", dir.display()))
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    Ok(kernel(&dir))
}

fn download_and_unpack(package: &str, tmp: &Path) -> anyhow::Result<()> {
    // As root, apt-get warns that its `_apt` user cannot write here and downloads
    // unsandboxed; that is harmless.
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(tmp),
    )?;
    let deb = std::fs::read_dir(tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let root = tmp.join("root");
    std::fs::create_dir_all(&root)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning dpkg-deb")?;
    let tar_in = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&root)
        .arg("./boot")
        .stdin(tar_in)
        .status()
        .context("spawning tar")?;
    let dpkg = dpkg.wait().context("waiting for dpkg-deb")?;
    if !dpkg.success() || !tar.success() {
        bail!("unpacking {}: dpkg-deb {dpkg}, tar {tar}", deb.display());
    }
    Ok(())
}

/// The `REQUIRED_CONFIG` options that `config` does not build in.
pub fn missing_config(config: &Path) -> anyhow::Result<Vec<&'static str>> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    Ok(REQUIRED_CONFIG
        .iter()
        .copied()
        .filter(|opt| !text.lines().any(|l| l == format!("{opt}=y")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_of_kernel_packages() {
        let mut v = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-10-amd64",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v.last(), Some(&"linux-image-6.1.0-56-amd64"));
        let mut v = [
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.9+deb12-amd64",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v.last(), Some(&"linux-image-6.12.117+deb12-amd64"));
    }

    #[test]
    fn specs() {
        assert!(matches!(Spec::parse("6.1").unwrap(), Spec::Debian { .. }));
        assert_eq!(Spec::parse("host").unwrap(), Spec::Host);
        assert_eq!(
            Spec::parse("linux-image-6.1.0-56-amd64").unwrap(),
            Spec::Package("linux-image-6.1.0-56-amd64".into())
        );
        assert!(Spec::parse("5.10").is_err());
    }
}
