//! A whole Flyte task on this machine, local files as the object store: what
//! `cargo xtask demo` runs (through the `copilot-demo` binary of this crate).
//!
//! The store is a directory (`<root>/store`, addressed with `file://` URLs). The pod is a
//! pod-like cgroup with a `pause` sandbox; `copilot download` fills the inputs volume;
//! `copilot sidecar` runs in its own container cgroup of the pod, with no pod flags (it
//! infers the pod and picks the main container by the sibling rule) and a ready file;
//! then a busybox main container started with runc reads its inputs and writes outputs.
//! Everything is torn down when [`run`] returns (RAII), also on failure.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{
        ErrorDocument, Literal, LiteralMap, SimpleType, TypedInterface, Variable, VariableMap,
        literal, primitive, scalar,
    },
    sidecar::status::{Main, Status},
};
use prost::Message as _;

use crate::{Container, ContainerOpts, Copilot, Layout, Mount, Placement, PodCgroup, run_copilot};

const T: Duration = Duration::from_secs(30);

/// What the main container does with its inputs.
const SCRIPT: &str = r#"set -e
echo "main: n=$(cat /in/n) name=$(cat /in/name) scale=$(cat /in/scale)"
echo $(( $(cat /in/n) * 7 )) > /out/total
printf 'Hello, %s!' "$(cat /in/name)" > /out/message
echo 4.5 > /out/scaled
echo true > /out/done
tr a-z A-Z < /in/text > /out/shout
echo "main: wrote $(ls /out | tr '\n' ' ')"
"#;

/// What happened, for printing; `Err` if anything went wrong.
#[derive(Debug)]
pub struct Report {
    pub lines: Vec<String>,
    pub since_exit_ms: Option<f64>,
    pub outputs: LiteralMap,
}

/// Runs the task under `root` (wiped first) and reports; failures come back as `Err`.
pub fn run(root: &Path) -> Result<Report, String> {
    let mut lines = Vec::new();
    let mut say = |s: String| {
        println!("{s}");
        lines.push(s);
    };
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(|e| format!("removing {}: {e}", root.display()))?;
    }
    let store = root.join("store");
    let volumes = root.join("pod");
    for d in [
        store.join("raw/in"),
        store.join("run"),
        volumes.join("inputs"),
        volumes.join("outputs"),
        volumes.join("run"),
    ] {
        std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let url = |p: &Path| format!("file://{}", p.display());

    // The "remote" inputs: a LiteralMap with a blob next to it.
    let text = store.join("raw/in/text.txt");
    std::fs::write(&text, "copilot sees the exit in the kernel\n").map_err(|e| e.to_string())?;
    let inputs = make::literal_map([
        ("n", make::integer(6)),
        ("name", make::string("Flyte")),
        ("scale", make::float(1.5)),
        ("text", make::blob(url(&text), "txt", false)),
    ]);
    let inputs_pb = store.join("run/inputs.pb");
    std::fs::write(&inputs_pb, inputs.encode_to_vec()).map_err(|e| e.to_string())?;
    let iface = interface();
    say(format!("object store   {} (local files)", store.display()));
    say(format!(
        "inputs.pb      {} (n=6, name=\"Flyte\", scale=1.5, text=blob)",
        url(&inputs_pb)
    ));

    let pod = PodCgroup::new(Layout::Cgroupfs);
    let _sandbox = Container::run(&pod, &["pause"], ContainerOpts::default());
    say(format!("pod cgroup     {}", pod.path().display()));
    crate::env::try_wait_comm(_sandbox.pid(), "pause", T)?;
    say(format!(
        "sandbox        {} (pause, pid {})",
        short(_sandbox.id()),
        _sandbox.pid()
    ));

    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let out_prefix = url(&store.join("run/out"));
    let (code, stderr) = run_copilot(
        &[
            "download".into(),
            "--from-remote".into(),
            url(&inputs_pb),
            "--to-output-prefix".into(),
            out_prefix.clone(),
            "--to-local-dir".into(),
            volumes.join("inputs").display().to_string(),
            "--format".into(),
            "JSON".into(),
            "--input-interface".into(),
            b64(iface
                .inputs
                .as_ref()
                .map(|i| i.encode_to_vec())
                .unwrap_or_default()),
        ],
        &[],
    );
    if code != 0 {
        return Err(format!("copilot download failed ({code}):\n{stderr}"));
    }
    let mut files: Vec<String> = std::fs::read_dir(volumes.join("inputs"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    say(format!(
        "1. download    {} -> {}",
        files.join(" "),
        volumes.join("inputs").display()
    ));

    let ready = volumes.join("run/ready");
    let status_file = volumes.join("run/status.json");
    let started = Instant::now();
    let mut sidecar = Copilot::spawn(
        "  sidecar",
        &[
            "sidecar".into(),
            // The kubelet would SIGTERM this native sidecar once main has ended; the
            // demo has no kubelet, so the sidecar exits once the upload is done.
            "--after-upload".into(),
            "exit".into(),
            "--to-output-prefix".into(),
            out_prefix.clone(),
            "--to-raw-output".into(),
            url(&store.join("raw/out")),
            "--from-local-dir".into(),
            volumes.join("outputs").display().to_string(),
            "--interface".into(),
            b64(iface.encode_to_vec()),
            "--ready-file".into(),
            ready.display().to_string(),
            "--status-file".into(),
            status_file.display().to_string(),
        ],
        &[],
        &pod,
        Placement::OwnContainer,
    );
    sidecar.wait_for_file(&ready, T);
    say(format!(
        "2. sidecar     ready after {} ms (eBPF attached, pod snapshot taken), in {}",
        started.elapsed().as_millis(),
        sidecar
            .own_cgroup()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    ));

    let main = Container::run(
        &pod,
        &["sh", "-c", SCRIPT],
        ContainerOpts {
            mounts: vec![
                Mount {
                    source: volumes.join("inputs"),
                    destination: "/in".into(),
                    read_only: true,
                },
                Mount {
                    source: volumes.join("outputs"),
                    destination: "/out".into(),
                    read_only: false,
                },
            ],
            ..Default::default()
        },
    );
    say(format!(
        "3. main        {} (busybox sh, pid {}) started with runc",
        short(main.id()),
        main.pid()
    ));
    if !main.wait_exited(T) {
        return Err(format!(
            "the main container did not exit:\n{}",
            main.output()
        ));
    }
    for l in main.output().lines() {
        say(format!("               | {l}"));
    }
    let code = sidecar
        .wait(T)
        .ok_or_else(|| format!("the sidecar did not finish:\n{}", sidecar.stderr()))?
        .code();
    let logs = sidecar.stderr();
    if code != Some(0) {
        return Err(format!("the sidecar exited with {code:?}:\n{logs}"));
    }
    let result = Status::read(&status_file)
        .map_err(|e| format!("{}: {e}\nsidecar:\n{logs}", status_file.display()))?;
    let seen = match result.main.as_ref() {
        Some(Main {
            exit_code: Some(code),
            ..
        }) => format!("exit code {code}"),
        Some(Main {
            signal: Some(sig), ..
        }) => format!("killed by signal {sig}"),
        _ => return Err(format!("the sidecar did not report the exit:\n{logs}")),
    };
    say(format!("4. sidecar saw the main container exit: {seen}"));
    let since_exit_ms = result.since_exit_ms;
    let outputs_pb = store.join("run/out/outputs.pb");
    let errors_pb = store.join("run/out/errors.pb");
    if errors_pb.exists() {
        let doc = ErrorDocument::decode(
            std::fs::read(&errors_pb)
                .map_err(|e| e.to_string())?
                .as_slice(),
        )
        .map_err(|e| e.to_string())?;
        return Err(format!("the task failed: {:?}", doc.error));
    }
    let bytes = std::fs::read(&outputs_pb)
        .map_err(|e| format!("reading {}: {e}\nsidecar:\n{logs}", outputs_pb.display()))?;
    let outputs = LiteralMap::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    say(format!(
        "5. upload      {} written {} after the exit",
        url(&outputs_pb),
        since_exit_ms.map_or("(time unknown)".into(), |ms: f64| format!("{ms:.1} ms"))
    ));
    say("outputs:".into());
    let mut check = String::new();
    for (name, lit) in &outputs.literals {
        let shown = show(lit);
        say(format!("   {name:<8} = {shown}"));
        let _ = write!(check, "{name}={shown};");
    }
    let want = [
        ("total", "42"),
        ("message", "\"Hello, Flyte!\""),
        ("scaled", "4.5"),
        ("done", "true"),
    ];
    for (k, v) in want {
        if !check.contains(&format!("{k}={v};")) {
            return Err(format!("output {k} is not {v}: {check}"));
        }
    }
    let shout = outputs
        .literals
        .get("shout")
        .and_then(blob_path)
        .ok_or("output shout is not a blob")?;
    let content =
        std::fs::read_to_string(&shout).map_err(|e| format!("{}: {e}", shout.display()))?;
    if content != "COPILOT SEES THE EXIT IN THE KERNEL\n" {
        return Err(format!("the shout blob holds {content:?}"));
    }
    Ok(Report {
        lines,
        since_exit_ms,
        outputs,
    })
}

fn interface() -> TypedInterface {
    let vars = |v: &[(&str, SimpleType)], blob: &str| VariableMap {
        variables: v
            .iter()
            .map(|(k, t)| (k.to_string(), var(make::simple_type(*t))))
            .chain(std::iter::once((
                blob.to_string(),
                var(make::blob_literal_type("txt", false)),
            )))
            .collect(),
    };
    TypedInterface {
        inputs: Some(vars(
            &[
                ("n", SimpleType::Integer),
                ("name", SimpleType::String),
                ("scale", SimpleType::Float),
            ],
            "text",
        )),
        outputs: Some(vars(
            &[
                ("total", SimpleType::Integer),
                ("message", SimpleType::String),
                ("scaled", SimpleType::Float),
                ("done", SimpleType::Boolean),
            ],
            "shout",
        )),
    }
}

fn var(ty: copilot::proto::core::LiteralType) -> Variable {
    Variable {
        r#type: Some(ty),
        description: String::new(),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn show(lit: &Literal) -> String {
    let Some(literal::Value::Scalar(s)) = &lit.value else {
        return format!("{lit:?}");
    };
    match &s.value {
        Some(scalar::Value::Primitive(p)) => match &p.value {
            Some(primitive::Value::Integer(i)) => i.to_string(),
            Some(primitive::Value::FloatValue(f)) => f.to_string(),
            Some(primitive::Value::StringValue(v)) => format!("{v:?}"),
            Some(primitive::Value::Boolean(b)) => b.to_string(),
            other => format!("{other:?}"),
        },
        Some(scalar::Value::Blob(b)) => format!("blob {}", b.uri),
        other => format!("{other:?}"),
    }
}

fn blob_path(lit: &Literal) -> Option<PathBuf> {
    let Some(literal::Value::Scalar(s)) = &lit.value else {
        return None;
    };
    let Some(scalar::Value::Blob(b)) = &s.value else {
        return None;
    };
    b.uri.strip_prefix("file://").map(PathBuf::from)
}
