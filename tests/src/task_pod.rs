//! Flyte task pods for the pod runner ([`crate::RunningPod`]): the manifests of
//! `deploy/` and `tests/pods/`, pointed at a test node (a real S3 server, a bpffs of
//! its own), and what they leave: in the store, and in the uploader's status file
//! (`--status-file`, read by [`TestNode::status`]). Shared by the pod tests and the bench.
use std::path::{Path, PathBuf};

use copilot::{
    literals::make,
    proto::core::{ContainerError, ErrorDocument, LiteralMap},
    sidecar::status::Status,
};
use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, Pod, Volume, VolumeMount};
use prost::Message as _;

use crate::{Bpffs, Moto, PodConfig};

/// The uploader's name in Flyte's pods (`<co-pilot name prefix>uploader`).
pub const UPLOADER: &str = "flyte-copilot-uploader";
/// The downloader's name.
pub const DOWNLOADER: &str = "flyte-copilot-downloader";

/// A Pod manifest of the workspace (`deploy/pod.yaml`, `tests/pods/…`).
pub fn manifest(path: &str) -> Pod {
    let path = crate::workspace_root().join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a Pod: {e}", path.display()))
}

/// The value of `--name=value` or `--name value` in a container's args.
pub fn flag(c: &Container, name: &str) -> String {
    let eq = format!("{name}=");
    let args = c.args.as_deref().unwrap_or_default();
    args.iter()
        .enumerate()
        .find_map(|(i, a)| {
            a.strip_prefix(&eq)
                .or_else(|| (a == name).then(|| args.get(i + 1).map(String::as_str))?)
        })
        .unwrap_or_else(|| panic!("{} has no {name}", c.name))
        .to_string()
}

/// An init container of the pod, by name.
pub fn init_container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|list| list.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no init container {name}"))
}

/// The same, to change.
pub fn init_container_mut<'a>(pod: &'a mut Pod, name: &str) -> &'a mut Container {
    pod.spec
        .as_mut()
        .and_then(|s| s.init_containers.as_mut())
        .and_then(|list| list.iter_mut().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no init container {name}"))
}

/// `deploy/pod.yaml` with main running `sh -c script`.
pub fn deploy_pod(script: &str) -> Pod {
    let mut pod = manifest("deploy/pod.yaml");
    let spec = pod.spec.as_mut().expect("spec");
    spec.containers[0].command = Some(vec!["sh".into(), "-c".into(), script.into()]);
    pod
}

/// The uploader's `--to-output-prefix`: where outputs.pb or errors.pb go.
pub fn output_prefix(config: &PodConfig) -> String {
    flag(init_container(&config.pod, UPLOADER), "--to-output-prefix")
}

/// The uploader's `--status-file` folder in its container (a mount point of the
/// rootfs, [`crate::rootfs`]).
const STATUS_MOUNT: &str = "/var/run/copilot-status";
/// The hostPath volume of that folder; the runner maps it to the node's own folder.
const STATUS_VOLUME: &str = "copilot-status";
const STATUS_HOST_PATH: &str = "/var/lib/copilot-test-status";

/// A test node: the S3 server the pod's URLs point at, a bpffs of its own, and a
/// folder where the uploader writes its status file.
pub struct TestNode {
    pub moto: Moto,
    pub bpffs: Bpffs,
    status: tempfile::TempDir,
}

impl TestNode {
    pub fn new() -> Self {
        let status = tempfile::tempdir().expect("tempdir");
        // The uploader keeps only CAP_BPF and CAP_PERFMON: no CAP_DAC_OVERRIDE.
        std::fs::set_permissions(
            status.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod the status folder");
        Self {
            moto: Moto::start(),
            bpffs: Bpffs::new(),
            status,
        }
    }

    /// The uploader's status file (`--status-file`) on the host.
    pub fn status_path(&self) -> PathBuf {
        self.status.path().join("status.json")
    }

    /// What the uploader's status file says, once it has written one.
    pub fn status(&self) -> Option<Status> {
        let path = self.status_path();
        match Status::read(&path) {
            Ok(status) => Some(status),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }

    /// Has the pod's uploader write `--status-file` into [`TestNode::status_path`].
    /// (The runner maps the volume to it: [`PodConfig::host_paths`].)
    fn add_status_file(pod: &mut Pod) {
        let spec = pod.spec.as_mut().expect("spec");
        spec.volumes.get_or_insert_default().push(Volume {
            name: STATUS_VOLUME.into(),
            host_path: Some(HostPathVolumeSource {
                path: STATUS_HOST_PATH.into(),
                type_: None,
            }),
            ..Volume::default()
        });
        let up = init_container_mut(pod, UPLOADER);
        up.volume_mounts.get_or_insert_default().push(VolumeMount {
            name: STATUS_VOLUME.into(),
            mount_path: STATUS_MOUNT.into(),
            ..VolumeMount::default()
        });
        let file = Path::new(STATUS_MOUNT).join("status.json");
        up.args
            .get_or_insert_default()
            .push(format!("--status-file={}", file.display()));
    }

    /// The pod, pointed at this node: the host's network (the server listens on
    /// loopback), the copilot containers' `--storage.*` flags replaced by the server's
    /// (and its environment added), the bucket made, `n` written as the task's input,
    /// and the uploader's status file on the node ([`TestNode::status`]).
    pub fn prepare(&self, mut pod: Pod, n: i64) -> PodConfig {
        let spec = pod.spec.as_mut().expect("spec");
        spec.host_network = Some(true);
        for c in spec.init_containers.iter_mut().flatten() {
            if let Some(command) = &mut c.command {
                command.retain(|a| !a.starts_with("--storage."));
                command.extend(self.moto.flags());
            }
        }
        let inputs = flag(init_container(&pod, DOWNLOADER), "--from-remote");
        let bucket = inputs
            .strip_prefix("s3://")
            .and_then(|rest| rest.split('/').next())
            .expect("an s3:// input");
        self.moto.create_bucket(bucket);
        let literals = make::literal_map([("n", make::integer(n))]);
        self.moto.put(&inputs, literals.encode_to_vec());
        Self::add_status_file(&mut pod);
        let mut config = PodConfig::new(pod);
        config
            .host_paths
            .push((STATUS_HOST_PATH.into(), self.status.path().to_path_buf()));
        let bpf: PathBuf = self.bpffs.node_dir().parent().expect("bpffs").into();
        config.host_paths.push(("/sys/fs/bpf".into(), bpf));
        for name in [UPLOADER, DOWNLOADER] {
            for (k, v) in Moto::env() {
                config.env.push((name.into(), k.into(), v.into()));
            }
        }
        config
    }

    /// outputs.pb under `prefix`, if written.
    pub fn outputs(&self, prefix: &str) -> Option<LiteralMap> {
        let bytes = self.moto.get(&format!("{prefix}/outputs.pb"))?;
        Some(LiteralMap::decode(bytes.as_slice()).expect("outputs.pb is a LiteralMap"))
    }

    /// errors.pb under `prefix`, if written.
    pub fn error(&self, prefix: &str) -> Option<ContainerError> {
        let bytes = self.moto.get(&format!("{prefix}/errors.pb"))?;
        let doc = ErrorDocument::decode(bytes.as_slice()).expect("errors.pb is an ErrorDocument");
        Some(doc.error.expect("an error"))
    }
}

impl Default for TestNode {
    fn default() -> Self {
        Self::new()
    }
}
