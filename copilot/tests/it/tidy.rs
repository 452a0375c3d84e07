//! House rules of the `copilot` crate, checked on its sources (as rust-analyzer's
//! tidy tests do): the command line stays at the edge, and every library file
//! says what it owns.
//!
//! - `crate::cli` (clap's definitions of the command line) is used only by
//!   `src/cli/` and `src/main.rs`: the commands take plain options, a built
//!   `Store` and an error-document target, so a library user never needs clap.
//! - `clap` itself appears outside `src/cli/` only as `clap::ValueEnum` derives
//!   on the enums whose values are flag values.
//! - Every library file starts with a `//!` doc.
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn library_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} files under src",
        files.len()
    );
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .expect("under src")
                .display()
                .to_string();
            let text = std::fs::read_to_string(&p).expect("reading a source file");
            (rel, text)
        })
        .collect()
}

fn is_cli(rel: &str) -> bool {
    rel == "main.rs" || rel.starts_with("cli/")
}

/// Lines of `text` outside `//` comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
}

#[test]
fn the_command_line_stays_in_cli() {
    let mut found = Vec::new();
    for (rel, text) in library_files().iter().filter(|(r, _)| !is_cli(r)) {
        for (n, line) in code_lines(text) {
            if line.contains("crate::cli") || line.contains("cli::") && line.contains("use ") {
                found.push(format!("{rel}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "crate::cli outside cli/ and main.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn clap_outside_cli_is_only_value_enums() {
    let mut found = Vec::new();
    for (rel, text) in library_files().iter().filter(|(r, _)| !is_cli(r)) {
        for (n, line) in code_lines(text) {
            let rest = line.replace("clap::ValueEnum", "");
            if rest.contains("clap::") || rest.contains("#[arg(") || rest.contains("#[command(") {
                found.push(format!("{rel}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "clap outside cli/:\n{}", found.join("\n"));
}

#[test]
fn every_library_file_says_what_it_owns() {
    let missing: Vec<String> = library_files()
        .into_iter()
        .filter(|(rel, _)| rel != "main.rs")
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        missing.is_empty(),
        "library files without a //! doc: {missing:?}"
    );
}
