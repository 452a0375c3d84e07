//! The `deploy/` manifests, parsed into the Kubernetes API types (k8s-openapi, v1.33) so
//! they cannot rot, with the bits that matter checked: the native sidecar and its startup
//! probe, the capabilities the end-to-end tests prove sufficient, the host mounts, the
//! flags that must agree with each other, and Flyte's co-pilot configuration keys.
use std::{collections::BTreeSet, path::PathBuf};

use base64::Engine as _;
use copilot::proto::core::{LiteralType, SimpleType, TypedInterface, literal_type};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplate};
use prost::Message as _;

fn deploy(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn container<'a>(list: &'a [Container], name: &str) -> &'a Container {
    list.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value of `--flag=value` or `--flag value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&eq)
            .or_else(|| (a == name).then(|| args.get(i + 1).map(String::as_str))?)
    })
}

/// CAP_BPF + CAP_PERFMON added, everything else dropped, no way to regain more.
fn check_sidecar_security(c: &Container) {
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.privileged, Some(false), "not privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    // Kubernetes gives added capabilities to uid 0 only (non-root needs file caps).
    assert_eq!(sc.run_as_user, Some(0), "uid 0 gets the added capabilities");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    let add: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(add, BTreeSet::from(["BPF", "PERFMON"]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
}

/// The host mounts the sidecar reads, read-only, backed by hostPath volumes; the
/// node's bpffs, writable (the shared program set is pinned there); and not tracefs,
/// which the raw tracepoints do not need. No hostPID.
fn check_host_mounts(c: &Container, spec: &PodSpec) {
    assert_ne!(spec.host_pid, Some(true), "hostPID is not needed");
    assert!(
        !c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.contains("tracing")),
        "{} mounts tracefs",
        c.name
    );
    for (path, host, read_only) in [
        ("/sys/fs/cgroup", "/sys/fs/cgroup", true),
        ("/sys/kernel/btf", "/sys/kernel/btf", true),
        ("/sys/fs/bpf", "/sys/fs/bpf", false),
    ] {
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{} does not mount {path}", c.name));
        assert_eq!(
            mount.read_only.unwrap_or(false),
            read_only,
            "{path} read-only: {read_only}"
        );
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("no volume {}", mount.name));
        let hp = volume.host_path.as_ref().expect("a hostPath volume");
        assert_eq!(hp.path, host);
    }
}

fn check_pod_uid_env(c: &Container) {
    let env = c.env.as_ref().expect("env");
    let uid = env
        .iter()
        .find(|e| e.name == "POD_UID")
        .expect("POD_UID env");
    let field = uid
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("POD_UID from the downward API");
    assert_eq!(field.field_path, "metadata.uid");
}

#[test]
fn pod_example_runs_copilot_as_a_native_sidecar_with_minimal_capabilities() {
    let pod: Pod = serde_yaml_ng::from_str(&deploy("pod.yaml")).expect("pod.yaml is a Pod");
    let spec = pod.spec.as_ref().expect("spec");
    let inits = spec.init_containers.as_deref().expect("initContainers");
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["flyte-copilot-uploader", "flyte-copilot-downloader"],
        "the sidecar first, so the downloader and main wait for its startup probe"
    );
    let up = container(inits, "flyte-copilot-uploader");
    assert_eq!(
        up.restart_policy.as_deref(),
        Some("Always"),
        "native sidecar"
    );
    let args = up.args.as_deref().expect("args");
    assert_eq!(args[0], "sidecar");
    let ready = flag(args, "--ready-file").expect("--ready-file");
    let probe = up
        .startup_probe
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.as_deref())
        .expect("startupProbe exec");
    assert_eq!(probe, ["/bin/copilot", "probe", "--ready-file", ready]);
    assert!(
        up.volume_mounts
            .iter()
            .flatten()
            .any(|m| ready.starts_with(&format!("{}/", m.mount_path))),
        "the ready file is on a volume"
    );
    assert_eq!(
        up.command
            .as_deref()
            .and_then(|c| c.first())
            .map(String::as_str),
        Some("/bin/flyte-copilot"),
        "the path Flyte's plugin calls"
    );
    check_sidecar_security(up);
    check_host_mounts(up, spec);
    check_pod_uid_env(up);

    let iface = flag(args, "--interface").expect("--interface");
    let iface = TypedInterface::decode(
        base64::engine::general_purpose::STANDARD
            .decode(iface)
            .expect("base64")
            .as_slice(),
    )
    .expect("a TypedInterface");
    let answer = &iface.outputs.expect("outputs").variables["answer"];
    assert_eq!(
        answer.r#type,
        Some(LiteralType {
            r#type: Some(literal_type::Type::Simple(SimpleType::Integer as i32)),
            ..Default::default()
        })
    );

    let down = container(inits, "flyte-copilot-downloader");
    let dsc = down.security_context.as_ref().expect("securityContext");
    assert_eq!(
        dsc.run_as_non_root,
        Some(true),
        "the downloader needs no privilege"
    );
    assert!(
        dsc.capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_none()
    );

    // The folders the copilot flags name are the volumes the main container shares.
    let main = container(&spec.containers, "main");
    let mounted = |c: &Container, path: &str| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == path)
            .map(|m| m.name.clone())
    };
    let outputs = flag(args, "--from-local-dir").expect("--from-local-dir");
    assert_eq!(mounted(up, outputs), mounted(main, outputs));
    assert!(mounted(main, outputs).is_some());
    let dargs = down.args.as_deref().expect("args");
    let inputs = flag(dargs, "--to-local-dir").expect("--to-local-dir");
    assert_eq!(mounted(down, inputs), mounted(main, inputs));
    assert!(mounted(main, inputs).is_some());
}

#[test]
fn flyte_config_swaps_the_image_and_the_pod_template_adds_the_privileges() {
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&deploy("flyte-propeller-config.yaml")).expect("YAML");
    let k8s = &config["plugins"]["k8s"];
    let copilot = k8s["co-pilot"].as_mapping().expect("plugins.k8s.co-pilot");
    // The json tags of FlyteCoPilotConfig (flyteplugins flytek8s/config/config.go).
    let known = BTreeSet::from([
        "name",
        "image",
        "default-input-path",
        "default-output-path",
        "input-vol-name",
        "output-vol-name",
        "start-timeout",
        "timeout",
        "cpu",
        "memory",
        "storage",
        "storage-config-override",
        "storage-config-secret-name",
    ]);
    for key in copilot.keys() {
        let key = key.as_str().expect("string keys");
        assert!(known.contains(key), "unknown co-pilot key {key}");
    }
    assert!(copilot.contains_key("image"));
    for key in ["start-timeout", "timeout"] {
        let v = k8s["co-pilot"][key].as_str().expect(key);
        copilot::duration::parse_std(v)
            .unwrap_or_else(|e| panic!("{key}: {v:?} is not a Go duration: {e}"));
    }
    let prefix = k8s["co-pilot"]["name"].as_str().expect("name");
    let template_name = k8s["default-pod-template-name"]
        .as_str()
        .expect("default-pod-template-name");

    let template: PodTemplate = serde_yaml_ng::from_str(&deploy("flyte-pod-template.yaml"))
        .expect("flyte-pod-template.yaml is a PodTemplate");
    assert_eq!(template.metadata.name.as_deref(), Some(template_name));
    let spec = template
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .expect("template.spec");
    let inits = spec.init_containers.as_deref().expect("initContainers");
    // Flyte names the sidecar `<name>uploader` and merges the template's container of
    // that name onto it; slices are appended, so the template must not carry a command.
    let up = container(inits, &format!("{prefix}uploader"));
    assert!(up.command.is_none() && up.args.is_none());
    // The ready file comes from the environment, which `sidecar` and `probe` both read.
    let ready = up
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "COPILOT_READY_FILE")
        .and_then(|e| e.value.clone())
        .expect("COPILOT_READY_FILE");
    let probe = up
        .startup_probe
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .expect("startupProbe exec");
    assert_eq!(probe, ["/bin/flyte-copilot", "probe"]);
    assert!(
        up.volume_mounts
            .iter()
            .flatten()
            .any(|m| ready.starts_with(&format!("{}/", m.mount_path))),
        "the ready file is on a volume"
    );
    check_sidecar_security(up);
    check_host_mounts(up, spec);
    check_pod_uid_env(up);
    container(inits, &format!("{prefix}downloader"));
}

#[test]
fn containerfile_builds_a_static_binary_where_flyte_calls_it() {
    let text = deploy("Containerfile");
    for needle in [
        "RUSTFLAGS='-C target-feature=+crt-static'",
        "--target x86_64-unknown-linux-gnu",
        "static(-pie)? linked",
        "/bin/flyte-copilot",
        "USER 65532:65532",
    ] {
        assert!(text.contains(needle), "Containerfile lacks {needle:?}");
    }
    assert!(
        !text.contains("setcap"),
        "no file capabilities (see the Containerfile)"
    );
}
