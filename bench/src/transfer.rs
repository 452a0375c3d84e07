//! Figure 9: transfers through copilot (sidecar upload, `copilot download`) beside
//! `rclone copy` against the same loopback moto S3 server, and copilot's local-file
//! store beside `cp -r`. Two shapes: one big file, many 4 KiB files.
use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    proto::{Type, outputs_interface},
    util::{make_files, tree_size},
};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto(binary: &Path) -> anyhow::Result<Moto> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} (run `cargo xtask setup`)", binary.display()))?;
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("moto_server did not listen on {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(moto)
}

/// Runs `cmd` and returns its wall time; fails with its stderr if it fails.
fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

struct Tools<'a> {
    copilot: &'a Path,
    moto: &'a Moto,
}

impl Tools<'_> {
    fn s3_flags(&self) -> Vec<String> {
        vec![
            "--storage.type=s3".into(),
            format!(
                "--storage.connection.endpoint=http://127.0.0.1:{}",
                self.moto.port
            ),
            "--storage.connection.region=us-east-1".into(),
            "--storage.connection.auth-type=accesskey".into(),
            "--storage.connection.access-key=testing".into(),
            "--storage.connection.secret-key=testing".into(),
            "--storage.connection.disable-ssl".into(),
        ]
    }

    fn copilot(&self, s3: bool) -> Command {
        let mut c = Command::new(self.copilot);
        c.env_remove("AWS_CA_BUNDLE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["--log-level", "warn"]);
        if s3 {
            c.args(self.s3_flags());
        }
        c
    }

    fn rclone(&self) -> Command {
        let mut c = Command::new("rclone");
        // rclone rejects this machine's AWS_CA_BUNDLE ("unsupported transport").
        c.env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG_MOTO_TYPE", "s3")
            .env("RCLONE_CONFIG_MOTO_PROVIDER", "Other")
            .env(
                "RCLONE_CONFIG_MOTO_ENDPOINT",
                format!("http://127.0.0.1:{}", self.moto.port),
            )
            .env("RCLONE_CONFIG_MOTO_ACCESS_KEY_ID", "testing")
            .env("RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY", "testing")
            .env("RCLONE_CONFIG_MOTO_REGION", "us-east-1")
            .env("RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE", "true");
        c
    }

    /// `copilot sidecar` with no watcher: uploads `dir/<name>` as output `name`.
    fn upload(
        &self,
        s3: bool,
        dir: &Path,
        name: &str,
        multipart: bool,
        prefix: &str,
    ) -> anyhow::Result<f64> {
        let iface = outputs_interface(&[(name, Type::Blob { multipart })]);
        timed(
            self.copilot(s3)
                .args([
                    "sidecar",
                    "--after-upload",
                    "exit",
                    "--start-watcher-type",
                    "noop",
                    "--exit-watcher-type",
                    "noop",
                ])
                .arg("--from-local-dir")
                .arg(dir)
                .args(["--to-output-prefix", &format!("{prefix}/out")])
                .args(["--to-raw-output", &format!("{prefix}/raw")])
                .args(["--interface", &iface]),
        )
    }

    /// `copilot download` of the outputs.pb the upload wrote.
    fn download(&self, s3: bool, prefix: &str, to: &Path) -> anyhow::Result<f64> {
        timed(
            self.copilot(s3)
                .args([
                    "download",
                    "--from-remote",
                    &format!("{prefix}/out/outputs.pb"),
                ])
                .args(["--to-output-prefix", &format!("{prefix}/dl")])
                .arg("--to-local-dir")
                .arg(to)
                .args(["--format", "JSON"]),
        )
    }
}

fn check(what: &str, got: (u64, u64), want: (u64, u64)) -> anyhow::Result<()> {
    if got.0 < want.0 || got.1 < want.1 {
        bail!(
            "{what}: {} bytes in {} files, expected {} in {}",
            got.0,
            got.1,
            want.0,
            want.1
        );
    }
    Ok(())
}

pub fn run(
    copilot: &Path,
    moto_bin: &Path,
    big_bytes: usize,
    small_files: usize,
) -> anyhow::Result<Value> {
    let work = tempfile::Builder::new()
        .prefix("bench-transfer-")
        .tempdir_in("/var/tmp")?;
    let w = work.path();
    let src: PathBuf = w.join("src");
    // Shape "big": src/big/big (one file); shape "small": src/small/small/ (a directory).
    make_files(&w.join("gen-big"), 1, big_bytes)?;
    std::fs::create_dir_all(src.join("big"))?;
    std::fs::rename(w.join("gen-big/f00000.bin"), src.join("big/big"))?;
    make_files(&src.join("small/small"), small_files, 4096)?;
    let moto = start_moto(moto_bin)?;
    let t = Tools {
        copilot,
        moto: &moto,
    };
    timed(t.rclone().args(["mkdir", "moto:bench"]))?;
    let mut shapes = serde_json::Map::new();
    for (shape, multipart) in [("big", false), ("small", true)] {
        let local = src.join(shape);
        let want = tree_size(&local);
        let payload = local.join(shape);
        // copilot → S3 and back.
        let cp_prefix = format!("s3://bench/copilot-{shape}");
        let c_up = t.upload(true, &local, shape, multipart, &cp_prefix)?;
        let dl = w.join(format!("dl-copilot-{shape}"));
        let c_down = t.download(true, &cp_prefix, &dl)?;
        check("copilot download", tree_size(&dl.join(shape)), want)?;
        // rclone → the same server and back.
        let r_up = timed(
            t.rclone()
                .arg("copy")
                .arg(&payload)
                .arg(format!("moto:bench/rclone-{shape}")),
        )?;
        let rdl = w.join(format!("dl-rclone-{shape}"));
        let r_down = timed(
            t.rclone()
                .arg("copy")
                .arg(format!("moto:bench/rclone-{shape}"))
                .arg(&rdl),
        )?;
        check("rclone download", tree_size(&rdl), want)?;
        // Local-file store and cp -r.
        let store = w.join(format!("store-{shape}"));
        let lp = format!("file://{}", store.display());
        let l_up = t.upload(false, &local, shape, multipart, &lp)?;
        let ldl = w.join(format!("dl-local-{shape}"));
        let l_down = t.download(false, &lp, &ldl)?;
        check("copilot local download", tree_size(&ldl.join(shape)), want)?;
        let cp_dst = w.join(format!("cp-{shape}"));
        let cp = timed(Command::new("cp").arg("-r").arg(&payload).arg(&cp_dst))?;
        check("cp -r", tree_size(&cp_dst), want)?;
        let mib = want.0 as f64 / (1 << 20) as f64;
        shapes.insert(
            shape.into(),
            json!({
                "bytes": want.0,
                "files": want.1,
                "s3": {
                    "copilot_upload_s": c_up,
                    "copilot_download_s": c_down,
                    "rclone_upload_s": r_up,
                    "rclone_download_s": r_down,
                    "upload_ratio_vs_rclone": r_up / c_up,
                    "download_ratio_vs_rclone": r_down / c_down,
                    "copilot_upload_mib_s": mib / c_up,
                    "copilot_download_mib_s": mib / c_down,
                },
                "local": {
                    "copilot_upload_s": l_up,
                    "copilot_download_s": l_down,
                    "cp_r_s": cp,
                    "upload_ratio_vs_cp": cp / l_up,
                    "download_ratio_vs_cp": cp / l_down,
                },
            }),
        );
        // Free the space before the next shape.
        for d in [&dl, &rdl, &ldl, &cp_dst, &store] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    Ok(Value::Object(shapes))
}
