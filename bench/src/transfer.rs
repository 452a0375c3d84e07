//! Figure 9: transfers through copilot (sidecar upload, `copilot download`) beside
//! `rclone copy` against the same loopback server, for S3 (moto) and Azure Blob
//! (azurite), and copilot's local-file store beside `cp -r`. Two shapes: one big
//! file, many 4 KiB files.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use bench_results::{LocalTransfer, RemoteTransfer, TransferShape, Transfers};

use integration_test::{Moto, azurite::Azurite};

use crate::{
    proto::{Type, outputs_interface},
    util::{make_files, tree_size},
};

/// Where a transfer goes.
#[derive(Clone, Copy)]
enum Remote {
    S3,
    Azure,
    Local,
}

/// The Azure container the figure uses.
const AZ_CONTAINER: &str = "bench";

/// Runs `cmd` and returns its wall time; fails with its stderr if it fails.
/// Errors name the program and its arguments, never the environment (where the
/// credentials are).
fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {line}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{line} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

struct Tools<'a> {
    copilot: &'a Path,
    moto: &'a Moto,
    azurite: &'a Azurite,
    /// A SAS token for [`AZ_CONTAINER`]: rclone (1.60) takes its endpoint as a domain
    /// to put the account in front of, so it reaches an emulator on another port
    /// only through a container's SAS URL.
    az_sas: String,
}

impl Tools<'_> {
    fn s3_flags(&self) -> Vec<String> {
        vec![
            "--storage.type=s3".into(),
            format!("--storage.connection.endpoint={}", self.moto.endpoint()),
            "--storage.connection.region=us-east-1".into(),
            "--storage.connection.auth-type=accesskey".into(),
            "--storage.connection.access-key=testing".into(),
            "--storage.connection.secret-key=testing".into(),
            "--storage.connection.disable-ssl".into(),
        ]
    }

    fn copilot(&self, remote: Remote) -> Command {
        let mut c = Command::new(self.copilot);
        c.env_remove("AWS_CA_BUNDLE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["--log-level", "warn"]);
        match remote {
            Remote::S3 => {
                c.args(self.s3_flags());
            }
            Remote::Azure => {
                c.args([
                    "--storage.type=azure".to_owned(),
                    format!("--storage.connection.endpoint={}", self.azurite.endpoint()),
                ])
                .envs(Azurite::key_env());
            }
            Remote::Local => {}
        }
        c
    }

    fn rclone(&self) -> Command {
        let mut c = Command::new("rclone");
        // rclone rejects this machine's AWS_CA_BUNDLE ("unsupported transport").
        c.env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG_MOTO_TYPE", "s3")
            .env("RCLONE_CONFIG_MOTO_PROVIDER", "Other")
            .env("RCLONE_CONFIG_MOTO_ENDPOINT", self.moto.endpoint())
            .env("RCLONE_CONFIG_MOTO_ACCESS_KEY_ID", "testing")
            .env("RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY", "testing")
            .env("RCLONE_CONFIG_MOTO_REGION", "us-east-1")
            .env("RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE", "true")
            .env("RCLONE_CONFIG_AZ_TYPE", "azureblob")
            .env(
                "RCLONE_CONFIG_AZ_SAS_URL",
                format!("{}/{AZ_CONTAINER}?{}", self.azurite.endpoint(), self.az_sas),
            );
        c
    }

    /// `copilot sidecar` with no watcher: uploads `dir/<name>` as output `name`.
    fn upload(
        &self,
        remote: Remote,
        dir: &Path,
        name: &str,
        multipart: bool,
        prefix: &str,
    ) -> anyhow::Result<f64> {
        let iface = outputs_interface(&[(name, Type::Blob { multipart })]);
        timed(
            self.copilot(remote)
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
    fn download(&self, remote: Remote, prefix: &str, to: &Path) -> anyhow::Result<f64> {
        timed(
            self.copilot(remote)
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
) -> anyhow::Result<Transfers> {
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
    let moto = Moto::start_with(moto_bin);
    let azurite = Azurite::start();
    let az_sas = azurite.create_container(AZ_CONTAINER);
    let t = Tools {
        copilot,
        moto: &moto,
        azurite: &azurite,
        az_sas,
    };
    timed(t.rclone().args(["mkdir", "moto:bench"]))?;
    let mut shapes = Transfers::default();
    for (shape, multipart) in [("big", false), ("small", true)] {
        let local = src.join(shape);
        let want = tree_size(&local);
        let remote = |remote, url, rclone_base| {
            remote_figures(&t, w, shape, multipart, want, (remote, url, rclone_base))
        };
        let figures = TransferShape {
            bytes: want.0,
            files: want.1,
            s3: Some(remote(Remote::S3, "s3://bench", "moto:bench")?),
            azure: Some(remote(Remote::Azure, "az://bench", "az:bench")?),
            local: local_figures(&t, w, shape, multipart, want)?,
        };
        if shape == "big" {
            shapes.big = Some(figures);
        } else {
            shapes.small = Some(figures);
        }
    }
    Ok(shapes)
}

/// copilot to a server and back, then rclone to the same server and back.
fn remote_figures(
    t: &Tools,
    w: &Path,
    shape: &str,
    multipart: bool,
    want: (u64, u64),
    (remote, url, rclone_base): (Remote, &str, &str),
) -> anyhow::Result<RemoteTransfer> {
    let local = w.join("src").join(shape);
    let prefix = format!("{url}/copilot-{shape}");
    let c_up = t.upload(remote, &local, shape, multipart, &prefix)?;
    let dl = w.join(format!("dl-copilot-{shape}"));
    let c_down = t.download(remote, &prefix, &dl)?;
    check("copilot download", tree_size(&dl.join(shape)), want)?;
    let r_up = timed(
        t.rclone()
            .arg("copy")
            .arg(local.join(shape))
            .arg(format!("{rclone_base}/rclone-{shape}")),
    )?;
    let rdl = w.join(format!("dl-rclone-{shape}"));
    let r_down = timed(
        t.rclone()
            .arg("copy")
            .arg(format!("{rclone_base}/rclone-{shape}"))
            .arg(&rdl),
    )?;
    check("rclone download", tree_size(&rdl), want)?;
    for d in [&dl, &rdl] {
        let _ = std::fs::remove_dir_all(d);
    }
    let mib = want.0 as f64 / (1 << 20) as f64;
    Ok(RemoteTransfer {
        copilot_upload_s: Some(c_up),
        copilot_download_s: Some(c_down),
        rclone_upload_s: Some(r_up),
        rclone_download_s: Some(r_down),
        upload_ratio_vs_rclone: Some(r_up / c_up),
        download_ratio_vs_rclone: Some(r_down / c_down),
        copilot_upload_mib_s: Some(mib / c_up),
        copilot_download_mib_s: Some(mib / c_down),
    })
}

/// copilot's local-file store, beside `cp -r`.
fn local_figures(
    t: &Tools,
    w: &Path,
    shape: &str,
    multipart: bool,
    want: (u64, u64),
) -> anyhow::Result<LocalTransfer> {
    let local = w.join("src").join(shape);
    let store = w.join(format!("store-{shape}"));
    let lp = format!("file://{}", store.display());
    let l_up = t.upload(Remote::Local, &local, shape, multipart, &lp)?;
    let ldl = w.join(format!("dl-local-{shape}"));
    let l_down = t.download(Remote::Local, &lp, &ldl)?;
    check("copilot local download", tree_size(&ldl.join(shape)), want)?;
    let cp_dst = w.join(format!("cp-{shape}"));
    let cp = timed(
        Command::new("cp")
            .arg("-r")
            .arg(local.join(shape))
            .arg(&cp_dst),
    )?;
    check("cp -r", tree_size(&cp_dst), want)?;
    for d in [&ldl, &cp_dst, &store] {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(LocalTransfer {
        copilot_upload_s: Some(l_up),
        copilot_download_s: Some(l_down),
        cp_r_s: Some(cp),
        upload_ratio_vs_cp: Some(cp / l_up),
        download_ratio_vs_cp: Some(cp / l_down),
    })
}
