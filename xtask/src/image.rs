//! `cargo xtask image`: copilot's container image, written by hand as an OCI image
//! layout tarball, with no container engine and nothing pulled.
//!
//! The image is one gzip'd layer on nothing (scratch): the static `copilot` binary at
//! `/bin/copilot`, `/bin/flyte-copilot` a symlink to it (where Flyte's pod plugin calls
//! it), `/etc/passwd` and `/etc/group` with `nonroot` (65532), `/home/nonroot`, `/tmp`,
//! and this machine's CA bundle at `/etc/ssl/certs/ca-certificates.crt` (rustls reads the
//! native roots). It runs as `65532:65532`, as `deploy/Containerfile`'s image does (that
//! one on distroless/static, built from a registry). Labels: the crate version and the
//! hash of the eBPF object (the name of the node's program set).
//!
//! The archive holds `oci-layout`, `index.json` (with `org.opencontainers.image.ref.name`
//! and containerd's `io.containerd.image.name`) and `blobs/sha256/…`, plus Docker's
//! `manifest.json`, as `docker save` writes it, so that Docker, podman and containerd
//! (`ctr images import`) all load it and name it. Every timestamp is 0, entries are
//! sorted, and gzip's header carries no time or name: the same binary and CA bundle
//! give the same digests.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::cmd;

/// The image's user: distroless's `nonroot`.
const UID: u64 = 65532;
/// The CA bundle of Debian's `ca-certificates`, copied into the image at the same path.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The label with the eBPF object's hash (`copilot --version` prints it too).
pub const LABEL_EBPF: &str = "copilot.ebpf.object-hash";
const LABEL_VERSION: &str = "org.opencontainers.image.version";
/// The image's name without its tag; the tag is the crate version.
const NAME: &str = "copilot";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Where to write the archive [default: <target dir>/image/copilot.tar].
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Put this (static) copilot in the image instead of building one.
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
}

/// What [`build`] wrote.
#[derive(Debug)]
pub struct Image {
    pub path: PathBuf,
    /// `copilot:<version>`.
    pub reference: String,
    /// The manifest's digest (a registry's name for the image).
    pub manifest_digest: String,
    /// The config's digest (Docker's and podman's image id).
    pub config_digest: String,
    pub ebpf_hash: String,
    /// Bytes of the gzip'd layer and of the whole archive.
    pub layer_size: u64,
    pub archive_size: u64,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let image = build(&opts)?;
    println!("image: {}", image.path.display());
    println!("  reference        {}", image.reference);
    println!("  manifest digest  {}", image.manifest_digest);
    println!("  image id         {}", image.config_digest);
    println!("  eBPF object      {}", image.ebpf_hash);
    println!(
        "  size             {} bytes (layer {} bytes gzip'd)",
        image.archive_size, image.layer_size
    );
    println!(
        "  load it with     podman load -i {0} | docker load -i {0} | ctr images import {0}",
        image.path.display()
    );
    Ok(())
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"))
}

/// Where the archive lands unless `--output` says otherwise; the integration tests
/// look there when `COPILOT_IMAGE` is unset.
pub fn default_path() -> PathBuf {
    target_dir().join("image/copilot.tar")
}

/// Builds the static binary (unless given one), then writes the archive.
pub fn build(opts: &Options) -> anyhow::Result<Image> {
    let binary = match &opts.binary {
        Some(path) => path.clone(),
        None => build_static()?,
    };
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    ensure!(
        !needs_loader(&bytes).with_context(|| format!("reading {}", binary.display()))?,
        "{} is dynamically linked (it has an ELF interpreter): the image has no libc. \
         Build it with RUSTFLAGS='-C target-feature=+crt-static' --target x86_64-unknown-linux-gnu",
        binary.display()
    );
    let (version, ebpf_hash) = version_of(&binary)?;
    let ca_bundle = std::fs::read(CA_BUNDLE)
        .with_context(|| format!("reading {CA_BUNDLE} (Debian package ca-certificates)"))?;
    let archive = archive(&bytes, &ca_bundle, &version, &ebpf_hash)?;
    let path = opts.output.clone().unwrap_or_else(default_path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written next to its place and renamed: a half-written archive is never loaded.
    let partial = path.with_extension("tar.partial");
    std::fs::write(&partial, &archive.bytes)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("renaming {} into place", partial.display()))?;
    Ok(Image {
        path,
        reference: archive.reference,
        manifest_digest: archive.manifest_digest,
        config_digest: archive.config_digest,
        ebpf_hash,
        layer_size: archive.layer_size,
        archive_size: archive.bytes.len() as u64,
    })
}

/// `cargo build --release` of a copilot with glibc linked in (`+crt-static`), as
/// `deploy/Containerfile` builds it. `--target` keeps the flag away from build scripts
/// and from the eBPF object's build.
fn build_static() -> anyhow::Result<PathBuf> {
    cmd::cargo_build_env(
        &[
            "--locked",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "copilot",
            "--bin",
            "copilot",
        ],
        &[("RUSTFLAGS", "-C target-feature=+crt-static")],
        "copilot",
    )
}

/// The crate version and eBPF object hash that `copilot --version` prints
/// (`copilot 0.1.0 (eBPF object 0123456789abcdef)`).
fn version_of(binary: &Path) -> anyhow::Result<(String, String)> {
    let out = cmd::output(Command::new(binary).arg("--version"))?;
    parse_version(&out).with_context(|| {
        format!(
            "`{} --version` printed {out:?}: the image needs a copilot built with its eBPF \
             object (not AYA_BUILD_SKIP=1)",
            binary.display()
        )
    })
}

fn parse_version(out: &str) -> Option<(String, String)> {
    let rest = out.trim().strip_prefix("copilot ")?;
    let (version, rest) = rest.split_once(" (eBPF object ")?;
    let hash = rest.strip_suffix(')')?;
    (!version.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (version.to_owned(), hash.to_owned()))
}

/// Whether an ELF executable names a program interpreter (`PT_INTERP`): a dynamically
/// linked one does, a static or static-pie one does not.
fn needs_loader(elf: &[u8]) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    ensure!(
        elf.len() >= 64 && elf[..4] == *b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "not a 64-bit little-endian ELF file"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(p_type) = elf.get(at..at + 4) else {
            bail!("program header {i} is past the end of the file");
        };
        if u32::from_le_bytes(p_type.try_into()?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One entry of a tar archive.
enum Entry<'a> {
    Dir {
        path: &'a str,
        mode: u32,
        owner: u64,
    },
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
    Symlink {
        path: &'a str,
        target: &'a str,
    },
}

impl Entry<'_> {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// A tar of `entries` in path order, every one with mtime 0 and no user or group names.
fn tar(mut entries: Vec<Entry<'_>>) -> anyhow::Result<Vec<u8>> {
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in &entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        let (data, kind, mode, owner, size): (&[u8], _, _, _, _) = match entry {
            Entry::Dir { mode, owner, .. } => (&[], tar::EntryType::Directory, *mode, *owner, 0),
            Entry::File { mode, data, .. } => {
                (data, tar::EntryType::Regular, *mode, 0, data.len() as u64)
            }
            Entry::Symlink { target, .. } => {
                header.set_link_name(target)?;
                (&[], tar::EntryType::Symlink, 0o777, 0, 0)
            }
        };
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_size(size);
        builder
            .append_data(&mut header, entry.path(), data)
            .with_context(|| format!("adding {} to a tar", entry.path()))?;
    }
    Ok(builder.into_inner()?)
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The image's only layer, uncompressed.
fn layer(binary: &[u8], ca_bundle: &[u8]) -> anyhow::Result<Vec<u8>> {
    const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                          nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";
    let dir = |path, mode| Entry::Dir {
        path,
        mode,
        owner: 0,
    };
    tar(vec![
        dir("bin", 0o755),
        Entry::File {
            path: "bin/copilot",
            mode: 0o755,
            data: binary,
        },
        Entry::Symlink {
            path: "bin/flyte-copilot",
            target: "copilot",
        },
        dir("etc", 0o755),
        Entry::File {
            path: "etc/group",
            mode: 0o644,
            data: GROUP.as_bytes(),
        },
        Entry::File {
            path: "etc/passwd",
            mode: 0o644,
            data: PASSWD.as_bytes(),
        },
        dir("etc/ssl", 0o755),
        dir("etc/ssl/certs", 0o755),
        Entry::File {
            path: "etc/ssl/certs/ca-certificates.crt",
            mode: 0o644,
            data: ca_bundle,
        },
        dir("home", 0o755),
        Entry::Dir {
            path: "home/nonroot",
            mode: 0o700,
            owner: UID,
        },
        dir("tmp", 0o1777),
    ])
}

/// The archive's bytes and the names in it.
struct Archive {
    bytes: Vec<u8>,
    reference: String,
    manifest_digest: String,
    config_digest: String,
    layer_size: u64,
}

fn archive(
    binary: &[u8],
    ca_bundle: &[u8],
    version: &str,
    ebpf_hash: &str,
) -> anyhow::Result<Archive> {
    let layer_tar = layer(binary, ca_bundle)?;
    // GzBuilder writes mtime 0 and no file name: the bytes depend on the input only.
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer_tar)?;
    let layer_gz = gz.finish()?;
    let epoch = "1970-01-01T00:00:00Z";
    let config = serde_json::to_vec(&json!({
        "created": epoch,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": format!("{UID}:{UID}"),
            "Entrypoint": ["/bin/copilot"],
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                format!("SSL_CERT_FILE={CA_BUNDLE}"),
            ],
            "WorkingDir": "/",
            "Labels": {
                LABEL_VERSION: version,
                LABEL_EBPF: ebpf_hash,
                "org.opencontainers.image.title": NAME,
                "org.opencontainers.image.description": "copilot: Flyte CoPilot rebuilt on eBPF (download and sidecar)",
                "org.opencontainers.image.licenses": "Apache-2.0",
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [sha256(&layer_tar)] },
        "history": [{ "created": epoch, "created_by": "cargo xtask image" }],
    }))?;
    let descriptor = |media: &str, bytes: &[u8]| json!({ "mediaType": media, "digest": sha256(bytes), "size": bytes.len() });
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, &config),
        "layers": [descriptor(MEDIA_LAYER, &layer_gz)],
    }))?;
    let reference = format!("{NAME}:{version}");
    let mut manifest_descriptor = descriptor(MEDIA_MANIFEST, &manifest);
    manifest_descriptor["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    manifest_descriptor["annotations"] = json!({
        "org.opencontainers.image.ref.name": reference,
        "io.containerd.image.name": format!("docker.io/library/{reference}"),
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [manifest_descriptor],
    }))?;
    let blob = |bytes: &[u8]| format!("blobs/{}", sha256(bytes).replace(':', "/"));
    let (config_blob, layer_blob, manifest_blob) =
        (blob(&config), blob(&layer_gz), blob(&manifest));
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": config_blob,
        "RepoTags": [reference],
        "Layers": [layer_blob],
    }]))?;
    let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let dir = |path| Entry::Dir {
        path,
        mode: 0o755,
        owner: 0,
    };
    let file = |path, data| Entry::File {
        path,
        mode: 0o644,
        data,
    };
    let bytes = tar(vec![
        dir("blobs"),
        dir("blobs/sha256"),
        file(&config_blob, &config),
        file(&layer_blob, &layer_gz),
        file(&manifest_blob, &manifest),
        file("index.json", &index),
        file("manifest.json", &docker_manifest),
        file("oci-layout", oci_layout),
    ])?;
    Ok(Archive {
        bytes,
        reference,
        manifest_digest: sha256(&manifest),
        config_digest: sha256(&config),
        layer_size: layer_gz.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_line() {
        assert_eq!(
            parse_version("copilot 0.1.0 (eBPF object 0123456789abcdef)\n"),
            Some(("0.1.0".into(), "0123456789abcdef".into()))
        );
        assert_eq!(
            parse_version("copilot 0.1.0 (no eBPF object: built with AYA_BUILD_SKIP=1)"),
            None
        );
        assert_eq!(parse_version("copilot 0.1.0 (eBPF object xyz)"), None);
    }

    #[test]
    fn tells_a_dynamic_executable_from_a_static_one() {
        // This test binary is linked against glibc: it has an interpreter.
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        assert!(needs_loader(&me).expect("an ELF file"));
        // An ELF header with no program headers at all.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(!needs_loader(&elf).expect("an ELF file"));
        assert!(needs_loader(b"#!/bin/sh\n").is_err());
    }

    /// The entries of a tar, as `(path, kind, mode, uid, mtime, link)`.
    fn list(tar: &[u8]) -> Vec<(String, tar::EntryType, u32, u64, u64, Option<String>)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    h.entry_type(),
                    h.mode().expect("mode"),
                    h.uid().expect("uid"),
                    h.mtime().expect("mtime"),
                    e.link_name()
                        .expect("link")
                        .map(|l| l.display().to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn the_layer_has_the_binary_its_link_and_the_user() {
        let entries = list(&layer(b"ELF", b"CA").expect("layer"));
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/copilot",
                "bin/flyte-copilot",
                "etc",
                "etc/group",
                "etc/passwd",
                "etc/ssl",
                "etc/ssl/certs",
                "etc/ssl/certs/ca-certificates.crt",
                "home",
                "home/nonroot",
                "tmp"
            ]
        );
        assert!(entries.iter().all(|e| e.4 == 0), "mtime 0 everywhere");
        let link = &entries[2];
        assert_eq!(link.1, tar::EntryType::Symlink);
        assert_eq!(link.5.as_deref(), Some("copilot"));
        assert_eq!((entries[1].2, entries[1].3), (0o755, 0));
        assert_eq!(entries[10].3, UID, "the user owns its home");
        assert_eq!(entries[11].2, 0o1777);
    }

    #[test]
    fn the_archive_is_a_layout_with_consistent_digests_and_is_reproducible() {
        let a = archive(b"ELF", b"CA", "0.1.0", "0123456789abcdef").expect("archive");
        let b = archive(b"ELF", b"CA", "0.1.0", "0123456789abcdef").expect("archive");
        assert_eq!(a.bytes, b.bytes, "same input, same bytes");
        let other = archive(b"ELF2", b"CA", "0.1.0", "0123456789abcdef").expect("archive");
        assert_ne!(a.manifest_digest, other.manifest_digest);

        let mut files = std::collections::BTreeMap::new();
        for e in tar::Archive::new(&a.bytes[..]).entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            files.insert(path, data);
        }
        let json =
            |p: &str| -> serde_json::Value { serde_json::from_slice(&files[p]).expect("json") };
        // Every blob is stored under its own digest.
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/")
                && !hex.is_empty()
            {
                assert_eq!(sha256(data), format!("sha256:{hex}"));
            }
        }
        assert_eq!(json("oci-layout")["imageLayoutVersion"], "1.0.0");
        let index = json("index.json");
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], a.manifest_digest.as_str());
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "copilot:0.1.0"
        );
        let blob = |d: &serde_json::Value| {
            format!("blobs/{}", d.as_str().expect("digest").replace(':', "/"))
        };
        let manifest = json(&blob(&m["digest"]));
        assert_eq!(manifest["config"]["digest"], a.config_digest.as_str());
        let config = json(&blob(&manifest["config"]["digest"]));
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["Labels"][LABEL_VERSION], "0.1.0");
        assert_eq!(config["config"]["Labels"][LABEL_EBPF], "0123456789abcdef");
        // The layer's diff id is the digest of the uncompressed tar.
        let gz = &files[&blob(&manifest["layers"][0]["digest"])];
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar)
            .expect("gunzip");
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar).as_str());
        assert_eq!(json("manifest.json")[0]["RepoTags"][0], "copilot:0.1.0");
    }
}
