//! An outputs folder written by a hostile task (issue 13, items 1, 2, 3, 6, 8):
//! encoded names, names a URL would change, symlink and FIFO swaps, collection
//! folders that used to crash the sidecar, and `_ERROR` trouble. Each case runs
//! against a real `file://` store in a temporary folder, so a write outside the
//! prefix would land on disk where the test looks for it.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use copilot::{
    literals::{
        ErrorFile, UploadLimits, collect_outputs, make, read_error_file, upload::UploadError,
    },
    proto::core::{self, LiteralMap, SimpleType, TypedInterface, Variable, VariableMap},
    storage::{Progress, StorageConfig, StorageError, Store, key::KeyError},
};

fn interface(vars: Vec<(&str, core::LiteralType)>) -> TypedInterface {
    TypedInterface {
        inputs: None,
        outputs: Some(VariableMap {
            variables: vars
                .into_iter()
                .map(|(n, t)| {
                    (
                        n.to_owned(),
                        Variable {
                            r#type: Some(t),
                            ..Variable::default()
                        },
                    )
                })
                .collect(),
        }),
    }
}

/// A `file://` store root with the raw prefix two levels down, and the outputs folder.
struct Stand {
    root: tempfile::TempDir,
    outputs: tempfile::TempDir,
    store: Store,
}

impl Stand {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("tempdir"),
            outputs: tempfile::tempdir().expect("tempdir"),
            store: Store::new(StorageConfig::default()),
        }
    }

    fn out(&self, rel: &str) -> PathBuf {
        self.outputs.path().join(rel)
    }

    fn write(&self, rel: &str, data: &str) {
        let p = self.out(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }

    fn raw_prefix(&self) -> String {
        format!("file://{}/exec/raw", self.root.path().display())
    }

    async fn collect(&self, iface: &TypedInterface) -> Result<LiteralMap, UploadError> {
        collect_outputs(
            self.outputs.path(),
            iface,
            &self.store,
            &self.raw_prefix(),
            &UploadLimits::default(),
            &Arc::new(Progress::default()),
        )
        .await
    }

    /// Every file under the store root, relative to it.
    fn stored(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).expect("list") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    out.push(p.strip_prefix(base).expect("under").display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), self.root.path(), &mut out);
        out.sort();
        out
    }
}

fn multipart() -> core::LiteralType {
    make::blob_literal_type("", true)
}

fn key_error(err: &UploadError) -> Option<&KeyError> {
    match err {
        UploadError::Key { source, .. } => match source.as_ref() {
            StorageError::Key { source, .. } => Some(source),
            _ => None,
        },
        _ => None,
    }
}

#[tokio::test]
async fn encoded_dot_segments_never_leave_the_prefix() {
    let s = Stand::new();
    s.write("m/%2e%2e/%2e%2e/%2e%2e/X/f", "owned");
    let err = s
        .collect(&interface(vec![("m", multipart())]))
        .await
        .expect_err("an encoded `..` must be refused");
    assert!(
        matches!(key_error(&err), Some(KeyError::Char { ch: '%', .. })),
        "{err:?}"
    );
    assert_eq!(s.stored(), Vec::<String>::new(), "nothing written anywhere");
}

#[tokio::test]
async fn names_a_url_would_change_are_refused_not_renamed() {
    for name in ["a#1", "q?x=1", "pct%41", "sp%20ace", "nl\nname"] {
        let s = Stand::new();
        s.write("m/a", "plain");
        s.write(&format!("m/{name}"), "odd");
        let err = s
            .collect(&interface(vec![("m", multipart())]))
            .await
            .expect_err(name);
        assert!(
            matches!(key_error(&err), Some(KeyError::Char { .. })),
            "{name:?}: {err:?}"
        );
        assert!(err.to_string().contains("output m"), "{err}");
        assert_eq!(
            s.stored(),
            Vec::<String>::new(),
            "{name:?}: nothing uploaded"
        );
    }
}

#[tokio::test]
async fn every_plain_name_maps_to_its_own_object() {
    let s = Stand::new();
    for name in ["a", "sp ace", "naïve", "[x]", "..dots", "a=b&c", "~tilde"] {
        s.write(&format!("m/{name}"), name);
    }
    let got = s
        .collect(&interface(vec![("m", multipart())]))
        .await
        .expect("plain names");
    let raw = format!("{}/", s.raw_prefix());
    assert_eq!(got.literals["m"], make::blob(format!("{raw}m"), "", true));
    let stored = s.stored();
    assert_eq!(stored.len(), 7, "one object per file: {stored:?}");
    for name in ["a", "sp ace", "naïve", "[x]", "..dots", "a=b&c", "~tilde"] {
        let url = format!("{raw}m/{name}");
        let bytes = s.store.read_bytes(&url, 100).await.expect(&url);
        assert_eq!(bytes, name.as_bytes(), "{url} holds its own file");
    }
}

#[tokio::test]
async fn map_keys_that_would_merge_are_refused() {
    let s = Stand::new();
    for key in ["k#1", "k#2", "k?v=3"] {
        s.write(&format!("m/{key}"), key);
    }
    let err = s
        .collect(&interface(vec![(
            "m",
            make::map_type(make::blob_literal_type("", false)),
        )]))
        .await
        .expect_err("keys that would be one object");
    assert!(
        matches!(key_error(&err), Some(KeyError::Char { .. })),
        "{err:?}"
    );
    assert_eq!(s.stored(), Vec::<String>::new());
}

#[tokio::test]
async fn a_folder_swapped_for_a_symlink_is_refused() {
    let s = Stand::new();
    let secret = tempfile::tempdir().expect("tempdir");
    std::fs::write(secret.path().join("passwd"), "root:x:0:0").expect("write");
    // What a racing task leaves after the check: the folder is now a symlink out.
    std::os::unix::fs::symlink(secret.path(), s.out("m")).expect("symlink");
    let err = s
        .collect(&interface(vec![("m", multipart())]))
        .await
        .expect_err("symlinked folder");
    assert!(matches!(err, UploadError::Escapes { .. }), "{err:?}");
    assert_eq!(s.stored(), Vec::<String>::new());
}

#[tokio::test]
async fn a_fifo_never_blocks_the_upload() {
    let s = Stand::new();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.out("n"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        s.collect(&interface(vec![(
            "n",
            make::simple_type(SimpleType::Integer),
        )])),
    )
    .await
    .expect("returns at once, never waits for a FIFO writer")
    .expect_err("a FIFO is no value");
    assert!(
        matches!(err, UploadError::WrongKind { found: "FIFO", .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.out("_ERROR"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let file = read_error_file(s.outputs.path(), 1000);
    assert!(
        matches!(&file, ErrorFile::Unreadable { problem } if problem.contains("FIFO")),
        "{file:?}"
    );
}

/// The races of issue 13 item 3, run for real: a task process swaps `_ERROR` with
/// a symlink to a secret (renameat2 RENAME_EXCHANGE in a loop) while the sidecar
/// reads it. The secret must never be read.
#[test]
fn error_file_exchanged_with_a_symlink_never_leaks() {
    let s = Stand::new();
    let secret = tempfile::tempdir().expect("tempdir");
    std::fs::write(secret.path().join("token"), "SECRET-TOKEN").expect("write");
    s.write("_ERROR", "plain message");
    std::os::unix::fs::symlink(secret.path().join("token"), s.out("swap")).expect("symlink");
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let (a, b, flag, count) = (s.out("_ERROR"), s.out("swap"), stop.clone(), swaps.clone());
    let swapper = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &a,
                rustix::fs::CWD,
                &b,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .expect("exchange");
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    // On two busy cores the swapper may not be scheduled for a while: read only
    // once it runs, and until both sides were met (or a deadline), not a fixed
    // number of times, which a descheduled swapper can outlast.
    while swaps.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut seen, mut reads) = ((0, 0), 0u32);
    while reads < 2000 || (seen.0 == 0 || seen.1 == 0) && Instant::now() < deadline {
        reads += 1;
        match read_error_file(s.outputs.path(), 1000) {
            ErrorFile::Message { text, .. } => {
                assert_eq!(text, "plain message");
                seen.0 += 1;
            }
            ErrorFile::Unreadable { problem } => {
                assert!(!problem.contains("SECRET"), "{problem}");
                seen.1 += 1;
            }
            ErrorFile::Absent => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("swapper");
    let swaps = swaps.load(Ordering::Relaxed);
    assert!(swaps > 100, "the race ran ({swaps} exchanges)");
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "both sides of the race were met: {seen:?}"
    );
}

#[tokio::test]
async fn collection_folders_that_crashed_are_errors() {
    let list = || {
        interface(vec![(
            "l",
            make::collection_type(make::simple_type(SimpleType::Integer)),
        )])
    };
    type Expect = fn(&UploadError) -> bool;
    let cases: &[(&[&str], Expect)] = &[
        (&["0", "18446744073709551615"], |e| {
            matches!(e, UploadError::NotAnItem { .. })
        }),
        (&["0", "100000000000"], |e| {
            matches!(e, UploadError::NotAnItem { .. })
        }),
        (&["0", "00", "0.txt"], |e| {
            matches!(e, UploadError::DuplicateItem { index: 0, .. })
        }),
        (&["0", "2"], |e| matches!(e, UploadError::NotAnItem { .. })),
        (&["1"], |e| matches!(e, UploadError::NotAnItem { .. })),
        (&["0", "README"], |e| {
            matches!(e, UploadError::NotAnItem { .. })
        }),
    ];
    for (names, expected) in cases {
        let s = Stand::new();
        for name in *names {
            s.write(&format!("l/{name}"), "1");
        }
        let err = s.collect(&list()).await.expect_err("malformed collection");
        assert!(expected(&err), "{names:?}: {err:?}");
    }
    let s = Stand::new();
    for (name, v) in [("1.txt", "11"), ("0", "10"), ("2.int", "12")] {
        s.write(&format!("l/{name}"), v);
    }
    let got = s.collect(&list()).await.expect("dense items");
    assert_eq!(
        got.literals["l"],
        make::collection(vec![
            make::integer(10),
            make::integer(11),
            make::integer(12)
        ])
    );
}

#[tokio::test]
async fn output_document_names_are_one_plain_file_name() {
    let s = Stand::new();
    let prefix = format!("file://{}/exec/outputs", s.root.path().display());
    for name in ["../../x.pb", "a/b.pb", "%2e%2e", "..", ""] {
        let err = s
            .store
            .child(&prefix, &[name])
            .expect_err("not a plain file name");
        assert!(matches!(err, StorageError::Key { .. }), "{name:?}: {err}");
    }
    assert_eq!(
        s.store.child(&prefix, &["errors.pb"]).expect("plain"),
        format!("{prefix}/errors.pb")
    );
}

/// Names drawn from the characters that matter to URLs and paths.
fn names() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let chars = prop::sample::select(vec![
        'a', 'b', '0', '.', '%', '2', 'e', '#', '?', '=', '/', '\\', ' ', '\n', '\t', '[', ']',
        '~', '&', '+', ';', '@', ':', 'é', '字', '\u{7f}', '\u{85}',
    ]);
    prop::collection::vec(chars, 1..10).prop_map(|v| v.into_iter().collect())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

    /// The name-to-key mapping is one-to-one and never leaves its prefix: the key a
    /// reader derives from each URL (percent-decoded, as object_store does) is the
    /// prefix's key followed by exactly the names given.
    #[test]
    fn names_map_to_distinct_keys_under_the_prefix(a in names(), b in names(), c in names()) {
        // One store for all cases: building one per case took 30 s in a debug build.
        static STORE: std::sync::LazyLock<Store> =
            std::sync::LazyLock::new(|| Store::new(StorageConfig::default()));
        let store = &*STORE;
        for prefix in ["s3://bucket/exec/raw", "mem://bucket/exec/raw", "file:///tmp/exec/raw"] {
            let key = |url: &str| {
                let parsed = url::Url::parse(url).expect("a URL");
                object_store::path::Path::from_url_path(parsed.path())
                    .expect("a key")
                    .parts()
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
            };
            let base = key(prefix);
            let ua = store.child(prefix, &[&a, &c]);
            let ub = store.child(prefix, &[&b, &c]);
            for (name, url) in [(&a, &ua), (&b, &ub)] {
                if let Ok(url) = url {
                    let mut expected = base.clone();
                    expected.extend([name.clone(), c.clone()]);
                    proptest::prop_assert_eq!(key(url), expected, "{}", url);
                }
            }
            if let (Ok(ua), Ok(ub)) = (&ua, &ub) {
                proptest::prop_assert_eq!(a == b, key(ua) == key(ub), "one-to-one: {:?} {:?}", a, b);
            }
        }
    }
}
