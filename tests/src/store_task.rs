//! A task's data plane against a storage server, without a pod: `copilot download`,
//! and `copilot sidecar` with the Go-compatible `signal` watchers (it uploads when
//! SIGTERM comes), pointed at a store by its `--storage.*` flags and environment
//! ([`StoreAccess`]). Shared by the tests of each store (Azure, GCS), which differ only
//! in those.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{SimpleType, TypedInterface, Variable, VariableMap},
};
use prost::Message as _;

use crate::{copilot_bin, pidfd_wait};

/// How copilot reaches one store: its flags, the environment a pod would get (a
/// mounted Secret), and the variables of the calling environment to remove so that
/// only those count.
pub struct StoreAccess {
    pub flags: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    pub env_remove: &'static [&'static str],
}

impl StoreAccess {
    /// `copilot <flags> <args>` with this store's environment, stdin closed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(copilot_bin());
        cmd.args(&self.flags).args(args);
        for var in self.env_remove {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// `copilot download` of `from` into `dir`, errors to `prefix`.
    pub fn download(&self, from: &str, prefix: &str, dir: &Path) -> Output {
        self.command(&[
            "download",
            "--from-remote",
            from,
            "--to-output-prefix",
            prefix,
            "--to-local-dir",
        ])
        .arg(dir)
        .output()
        .expect("running copilot download")
    }
}

/// The outputs [`make_outputs`] writes, as a base64 `TypedInterface`: `answer`
/// (an integer), `big` (a single blob), `many` (a multipart blob).
pub fn outputs_interface() -> String {
    let var = |ty| Variable {
        r#type: Some(ty),
        ..Variable::default()
    };
    let iface = TypedInterface {
        inputs: None,
        outputs: Some(VariableMap {
            variables: [
                (
                    "answer".to_string(),
                    var(make::simple_type(SimpleType::Integer)),
                ),
                ("big".to_string(), var(make::blob_literal_type("", false))),
                ("many".to_string(), var(make::blob_literal_type("", true))),
            ]
            .into(),
        }),
    };
    base64::engine::general_purpose::STANDARD.encode(iface.encode_to_vec())
}

/// `size` bytes of a pattern no shifted copy matches.
pub fn big_bytes(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// The outputs of [`outputs_interface`] in `dir`: `answer` 42, `big` of `big` bytes,
/// `many` of `files` small files.
pub fn make_outputs(dir: &Path, files: usize, big: usize) {
    std::fs::create_dir_all(dir.join("many")).expect("mkdir");
    std::fs::write(dir.join("answer"), "42\n").expect("write");
    std::fs::write(dir.join("big"), big_bytes(big)).expect("write");
    for i in 0..files {
        std::fs::write(dir.join("many").join(format!("f{i:04}")), format!("{i}")).expect("write");
    }
}

/// Panics if `text` (what: a log, a command line, a document) holds any of `secrets`.
pub fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} holds a credential:\n{text}");
    }
}

/// `copilot sidecar` with the `signal` watchers, uploading `<work>/outputs` (typed by
/// [`outputs_interface`]) to `<prefix>/out` and `<prefix>/raw` when SIGTERM comes; its
/// log in `<work>/sidecar.log`.
pub struct Sidecar {
    child: Child,
    stderr: PathBuf,
}

impl Sidecar {
    /// Starts it and waits for its ready file.
    pub fn start(store: &StoreAccess, work: &Path, prefix: &str) -> Self {
        let stderr = work.join("sidecar.log");
        let ready = work.join("ready");
        let raw = format!("{prefix}/raw");
        let out = format!("{prefix}/out");
        let iface = outputs_interface();
        let child = store
            .command(&[
                "sidecar",
                "--start-watcher-type=signal",
                "--exit-watcher-type=signal",
                "--after-upload=exit",
                "--to-output-prefix",
                &out,
                "--to-raw-output",
                &raw,
                "--interface",
                &iface,
                "--ready-file",
                &ready.to_string_lossy(),
                "--from-local-dir",
            ])
            .arg(work.join("outputs"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("log file"))
            .spawn()
            .expect("spawning copilot sidecar");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the sidecar never wrote its ready file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, stderr }
    }

    /// Its command line, as `ps` shows it.
    pub fn cmdline(&self) -> String {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.child.id())).unwrap_or_default();
        String::from_utf8_lossy(&raw).replace('\0', " ")
    }

    /// SIGTERM: the upload starts.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// SIGTERM, then its exit code and log.
    pub fn finish(mut self, timeout: Duration) -> (i32, String) {
        self.terminate();
        assert!(
            pidfd_wait(self.child.id(), timeout),
            "the sidecar did not exit within {timeout:?}"
        );
        let code = self.child.wait().expect("wait").code().unwrap_or(-1);
        (
            code,
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }
}
