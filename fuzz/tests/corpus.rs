//! The committed corpus: its seeds are generated here (so each says what it
//! covers) and every file of it runs through the targets as a plain test.
//! `COPILOT_FUZZ_WRITE_SEEDS=1 cargo test` rewrites the seed files.
use std::path::{Path, PathBuf};

use copilot::{
    literals::make,
    proto::core::{Literal, Schema, StructuredDataset, Union, scalar},
};
use prost::Message as _;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn plan_seeds() -> Seeds {
    let map = |items: Vec<(&str, Literal)>| make::literal_map(items).encode_to_vec();
    vec![
        ("empty", Vec::new()),
        (
            "primitives",
            map(vec![
                ("i", make::integer(-3)),
                ("f", make::float(2.5)),
                ("s", make::string("text")),
                ("b", make::boolean(true)),
                ("t", make::datetime(1_700_000_000, 5)),
                ("d", make::duration(3723, 500_000_000)),
                ("n", make::none()),
                ("bin", make::binary(vec![0, 1, 2], "tag")),
            ]),
        ),
        (
            "blobs",
            map(vec![
                ("one", make::blob("s3://bucket/a/file.csv", "csv", false)),
                ("dir", make::blob("s3://bucket/a/dir", "", true)),
                (
                    "schema",
                    make::scalar_literal(scalar::Value::Schema(Schema {
                        uri: "gs://b/schema".into(),
                        r#type: None,
                    })),
                ),
                (
                    "sd",
                    make::scalar_literal(scalar::Value::StructuredDataset(StructuredDataset {
                        uri: "abfs://c@a.dfs.core.windows.net/sd".into(),
                        metadata: None,
                    })),
                ),
            ]),
        ),
        (
            "nested",
            map(vec![
                (
                    "c",
                    make::collection(vec![
                        make::blob("s3://b/x.txt", "", false),
                        make::blob("s3://b/x.txt", "", false),
                        make::map([("k", make::collection(vec![make::integer(1)]))]),
                    ]),
                ),
                (
                    "u",
                    make::scalar_literal(scalar::Value::Union(Box::new(Union {
                        value: Some(Box::new(make::string("inner"))),
                        r#type: None,
                    }))),
                ),
            ]),
        ),
        (
            "hostile-names",
            map(vec![
                ("..", make::integer(1)),
                ("a/b", make::integer(2)),
                ("inputs.pb", make::integer(3)),
                (
                    "m",
                    make::map([("../../etc", make::integer(4)), ("", make::integer(5))]),
                ),
            ]),
        ),
        (
            "local-sources",
            map(vec![
                ("env", make::blob("file:///proc/self/environ", "", false)),
                ("plain", make::blob("/etc/passwd", "", false)),
                ("off", make::offloaded("file:///etc/hostname")),
                ("q", make::blob("s3://b/k?x=1#frag", "", false)),
            ]),
        ),
    ]
}

fn upload_seeds() -> Seeds {
    let folder = |entries: &[&str]| entries.join("\0").into_bytes();
    vec![
        (
            "every-output",
            folder(&["fm/a", "fm/sub/b", "fb", "fc/0", "fc/1", "fk/x", "fn", "fs"]),
        ),
        (
            "encoded-names",
            folder(&[
                "fm/%2e%2e/%2e%2e/X/f",
                "fm/a#1",
                "fm/a#2",
                "fm/q?x=1",
                "fm/pct%41",
                "fm/sp ace",
            ]),
        ),
        (
            "collection-indices",
            folder(&["fc/0", "fc/00", "fc/0.txt", "fc/18446744073709551615"]),
        ),
        (
            "symlinks-out",
            folder(&["lb", "fm/a", "lm/link", "lk/x", "ls", "dn"]),
        ),
        (
            "fifos",
            folder(&[
                "pb", "fm/a", "pm/fifo", "ps", "fk/k#1", "fk/k#2", "fk/k?v=3",
            ]),
        ),
        ("newline-name", folder(&["fm/nl\nname", "fm/plain"])),
    ]
}

/// Named inputs of one target.
type Seeds = Vec<(&'static str, Vec<u8>)>;

/// A target: its name, its seeds and its body.
type Target = (&'static str, Seeds, fn(&[u8]));

fn targets() -> [Target; 2] {
    [
        ("download_plan", plan_seeds(), copilot_fuzz::download_plan),
        (
            "upload_mapping",
            upload_seeds(),
            copilot_fuzz::upload_mapping,
        ),
    ]
}

#[test]
fn the_committed_seeds_are_current() {
    let write = std::env::var("COPILOT_FUZZ_WRITE_SEEDS").is_ok_and(|v| v == "1");
    for (target, seeds, _) in targets() {
        let dir = corpus(target);
        for (name, bytes) in seeds {
            let path = dir.join(format!("seed-{name}"));
            if write {
                std::fs::create_dir_all(&dir).expect("mkdir");
                std::fs::write(&path, &bytes).expect("write seed");
            }
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (COPILOT_FUZZ_WRITE_SEEDS=1 writes it)",
                    path.display()
                )
            });
            assert_eq!(committed, bytes, "{} is stale", path.display());
        }
    }
}

#[test]
fn every_corpus_file_runs_clean() {
    for (target, _, run) in targets() {
        let mut ran = 0;
        for entry in std::fs::read_dir(corpus(target)).expect("the corpus folder") {
            let path = entry.expect("entry").path();
            run(&std::fs::read(&path).expect("read"));
            ran += 1;
        }
        assert!(ran > 0, "{target}: empty corpus");
    }
}
