//! Compiles the static C helper programs of `helpers/` that the test containers run.
use std::{env, path::PathBuf, process::Command};

const HELPERS: &[&str] = &[
    "leader_exit",
    "spawner",
    "memhog",
    "pause",
    "nsrun",
    "exit_stamp",
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in HELPERS {
        let src = format!("helpers/{name}.c");
        println!("cargo:rerun-if-changed={src}");
        let out = out_dir.join(name);
        let status = Command::new("gcc")
            .args(["-static", "-O2", "-pthread", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running gcc for {src} (run `cargo xtask setup`): {e}"));
        assert!(
            status.success(),
            "gcc -static failed for {src}: {status} (static libc comes with libc6-dev; run `cargo xtask setup`)"
        );
    }
    println!("cargo:rustc-env=HELPERS_DIR={}", out_dir.display());
}
