//! copilot's image (`cargo xtask image`) in a real container engine: podman loads the
//! archive, and the image runs `copilot --version` and a whole `copilot download` from
//! a store on a mounted folder, as uid 65532, with no network. Nothing is skipped: no
//! podman, not root or no archive is a failure with the fix in its message.
use std::{os::unix::fs::MetadataExt as _, path::Path};

use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{SimpleType, Variable, VariableMap},
};
use integration_test::{Podman, image_archive};
use prost::Message as _;

/// The image's user and group (distroless's `nonroot`).
const UID: u32 = 65532;
const LABEL_EBPF: &str = "copilot.ebpf.object-hash";

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn var(ty: copilot::proto::core::LiteralType) -> Variable {
    Variable {
        r#type: Some(ty),
        description: String::new(),
    }
}

#[test]
fn the_image_loads_and_downloads_inputs_as_nonroot() {
    let archive = image_archive();
    let podman = Podman::new();
    let id = podman.load(&archive);

    // What the image says about itself.
    let inspect = |format: &str| podman.ok(&["image", "inspect", "--format", format, &id]);
    assert_eq!(inspect("{{.Config.User}}").trim(), "65532:65532");
    let version = inspect(r#"{{index .Config.Labels "org.opencontainers.image.version"}}"#);
    let hash = inspect(&format!(r#"{{{{index .Config.Labels "{LABEL_EBPF}"}}}}"#));
    let (version, hash) = (version.trim(), hash.trim());
    assert!(
        !version.is_empty() && hash.len() == 16,
        "labels: {version:?} {hash:?}"
    );
    let names = inspect("{{.RepoTags}}");
    assert!(
        names.contains(&format!("copilot:{version}")),
        "podman names the image copilot:{version}: {names}"
    );

    // Both paths run the same static binary, which reports the labels' values.
    for entrypoint in ["/bin/copilot", "/bin/flyte-copilot"] {
        let out = podman.run(&["--entrypoint", entrypoint, &id, "--version"]);
        assert!(
            out.status.success(),
            "{entrypoint} --version in the image failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("copilot {version} (eBPF object {hash})"),
            "{entrypoint} --version"
        );
    }

    // A store on a folder, read-only in the container, and an inputs volume that only
    // uid 65532 may write: the download succeeds only as that user.
    let dir = tempfile::tempdir().expect("tempdir");
    chmod(dir.path(), 0o755);
    let store = dir.path().join("store");
    let inputs_dir = dir.path().join("inputs");
    std::fs::create_dir_all(store.join("raw")).expect("store");
    std::fs::create_dir(&inputs_dir).expect("inputs");
    std::os::unix::fs::chown(&inputs_dir, Some(UID), Some(UID)).expect("chown inputs");
    chmod(&inputs_dir, 0o700);
    std::fs::write(store.join("raw/text.txt"), "from the image\n").expect("blob");
    let inputs = make::literal_map([
        ("n", make::integer(6)),
        ("name", make::string("Flyte")),
        (
            "text",
            make::blob("file:///store/raw/text.txt", "txt", false),
        ),
    ]);
    std::fs::write(store.join("inputs.pb"), inputs.encode_to_vec()).expect("inputs.pb");
    let interface = VariableMap {
        variables: [
            ("n", make::simple_type(SimpleType::Integer)),
            ("name", make::simple_type(SimpleType::String)),
            ("text", make::blob_literal_type("txt", false)),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_owned(), var(t)))
        .collect(),
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(interface.encode_to_vec());
    let out = podman.run(&[
        "--volume",
        &format!("{}:/store:ro", store.display()),
        "--volume",
        &format!("{}:/var/inputs", inputs_dir.display()),
        &id,
        "download",
        "--from-remote",
        "file:///store/inputs.pb",
        "--to-output-prefix",
        "file:///store/out",
        "--to-local-dir",
        "/var/inputs",
        "--format",
        "JSON",
        "--input-interface",
        &b64,
    ]);
    assert!(
        out.status.success(),
        "copilot download in the image failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let read = |name: &str| {
        std::fs::read_to_string(inputs_dir.join(name))
            .unwrap_or_else(|e| panic!("reading downloaded {name}: {e}"))
    };
    assert_eq!(read("n").trim(), "6");
    assert_eq!(read("name"), "Flyte");
    assert_eq!(read("text"), "from the image\n");
    let json: serde_json::Value = serde_json::from_str(&read("inputs.json")).expect("inputs.json");
    assert_eq!(json["n"], 6, "inputs.json: {json}");
    assert_eq!(json["name"], "Flyte", "inputs.json: {json}");
    // The files are the process's: it ran as 65532:65532, not as root.
    for name in ["n", "name", "text", "inputs.json", "inputs.pb"] {
        let meta = std::fs::metadata(inputs_dir.join(name)).expect("metadata");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (UID, UID),
            "{name} was written by uid {} gid {}",
            meta.uid(),
            meta.gid()
        );
    }
}
