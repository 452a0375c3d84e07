//! The fuzz targets' bodies, as plain functions so the committed corpus also runs
//! as an ordinary test (`cargo test` in this folder, no nightly needed).
//!
//! - [`download_plan`]: bytes a task upstream could have written as `inputs.pb` →
//!   the wire counter of the memory budget, prost's decoder, the download planner.
//!   Never a panic; every planned path stays below the inputs folder; with local
//!   files refused, no planned source is a local file.
//! - [`upload_mapping`]: bytes → a real outputs folder (files, folders, symlinks out
//!   of it, FIFOs, any name) → the outputs-to-literals mapping and its uploads to
//!   the in-memory store. Never a panic; every object written lies under the raw
//!   prefix, each output URI names its own object, and no uploaded byte comes from
//!   outside the folder.
use std::{
    collections::HashSet,
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    path::{Component, Path},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use copilot::{
    literals::{
        Layout, MetadataFormat, UploadLimits,
        budget::{Budget, Message as Wire},
        collect_outputs,
        download::{Action, Options, metadata_files, plan},
        make,
    },
    proto::core::{
        Literal, LiteralMap, SimpleType, TypedInterface, Variable, VariableMap, literal, scalar,
    },
    storage::{Progress, StorageConfig, Store, is_local_file},
};
use prost::Message as _;

const INPUTS: &str = "/inputs";
/// The content of the file every outside symlink points at.
const OUTSIDE: &[u8] = b"outside the outputs folder";

/// See the module documentation.
pub fn download_plan(data: &[u8]) {
    let _ = Budget::new(u64::MAX, "fuzz").take(data, Wire::LiteralMap);
    let Ok(map) = LiteralMap::decode(data) else {
        return;
    };
    for (layout, local_uris) in [(Layout::Direct, false), (Layout::NamedDir, true)] {
        let options = Options {
            layout,
            local_uris,
            ..Options::default()
        };
        let Ok(plan) = plan(&map, Path::new(INPUTS), &options) else {
            continue;
        };
        for action in &plan.actions {
            let (rel, source) = match action {
                Action::Mkdir(rel) | Action::Write(rel, _) => (rel, None),
                Action::Single { rel, uri, .. }
                | Action::Multipart { rel, uri, .. }
                | Action::Dataset { rel, uri, .. } => (rel, Some(uri)),
            };
            assert!(
                !rel.as_os_str().is_empty()
                    && rel.components().all(|c| matches!(c, Component::Normal(_))),
                "planned path {rel:?} is not plainly below the inputs folder"
            );
            if let Some(uri) = source {
                assert!(
                    local_uris || !is_local_file(uri),
                    "local source {uri:?} planned although local files are refused"
                );
            }
        }
        for lit in plan.literals.literals.values() {
            each_uri(lit, &mut |uri| {
                assert!(
                    uri.starts_with(&format!("{INPUTS}/")),
                    "rewritten URI {uri:?} is not below {INPUTS}"
                );
            });
        }
        for format in [MetadataFormat::Json, MetadataFormat::Yaml] {
            let _ = metadata_files(&plan, format);
        }
    }
}

/// Calls `f` with every blob, schema and dataset URI in `lit`.
fn each_uri(lit: &Literal, f: &mut impl FnMut(&str)) {
    match &lit.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Blob(b)) => f(&b.uri),
            Some(scalar::Value::Schema(s)) => f(&s.uri),
            Some(scalar::Value::StructuredDataset(d)) => f(&d.uri),
            Some(scalar::Value::Union(u)) => {
                if let Some(inner) = &u.value {
                    each_uri(inner, f);
                }
            }
            _ => {}
        },
        Some(literal::Value::Collection(c)) => c.literals.iter().for_each(|l| each_uri(l, f)),
        Some(literal::Value::Map(m)) => m.literals.values().for_each(|l| each_uri(l, f)),
        _ => {}
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The outputs every folder is read against: each shape the mapping knows.
fn interface() -> TypedInterface {
    let var = |ty| Variable {
        r#type: Some(ty),
        ..Variable::default()
    };
    let vars = [
        ("m", make::blob_literal_type("", true)),
        ("b", make::blob_literal_type("", false)),
        (
            "c",
            make::collection_type(make::simple_type(SimpleType::String)),
        ),
        ("k", make::map_type(make::blob_literal_type("", false))),
        ("n", make::simple_type(SimpleType::Integer)),
        ("s", make::simple_type(SimpleType::String)),
    ];
    TypedInterface {
        inputs: None,
        outputs: Some(VariableMap {
            variables: vars
                .into_iter()
                .map(|(name, ty)| (name.to_owned(), var(ty)))
                .collect(),
        }),
    }
}

/// Builds the folder `data` describes: NUL-separated entries, each a kind byte
/// (`f` file, `d` folder, `l` symlink out of the folder, `p` FIFO) and a path.
/// Returns the contents written.
fn build(root: &Path, outside: &Path, data: &[u8]) -> HashSet<Vec<u8>> {
    let mut contents = HashSet::new();
    for (i, entry) in data.split(|b| *b == 0).take(64).enumerate() {
        let Some((&kind, path)) = entry.split_first() else {
            continue;
        };
        let rel = Path::new(OsStr::from_bytes(path));
        let plain = rel.components().count() <= 5
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain || path.len() > 200 {
            continue;
        }
        let at = root.join(rel);
        if std::fs::symlink_metadata(&at).is_ok() {
            // Never write into what is there: a FIFO would block the harness itself.
            continue;
        }
        if let Some(parent) = at.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match kind {
            b'd' => {
                let _ = std::fs::create_dir_all(&at);
            }
            b'l' => {
                let _ = std::os::unix::fs::symlink(outside, &at);
            }
            b'p' => {
                if let Ok(c) = std::ffi::CString::new(at.as_os_str().as_bytes()) {
                    // SAFETY: a valid NUL-terminated path.
                    unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
                }
            }
            _ => {
                let content = format!("{i}").into_bytes();
                if std::fs::write(&at, &content).is_ok() {
                    contents.insert(content);
                }
            }
        }
    }
    contents
}

/// See the module documentation.
pub fn upload_mapping(data: &[u8]) {
    let Ok(work) = tempfile::tempdir() else {
        return;
    };
    let (root, outside) = (work.path().join("out"), work.path().join("outside"));
    if std::fs::create_dir(&root).is_err() || std::fs::write(&outside, OUTSIDE).is_err() {
        return;
    }
    let written = build(&root, &outside, data);
    // One store for every run (building its HTTP client costs 30 ms), a bucket each.
    static STORE: OnceLock<Store> = OnceLock::new();
    static RUN: AtomicU64 = AtomicU64::new(0);
    let store = STORE.get_or_init(|| Store::new(StorageConfig::default()));
    let bucket = format!("mem://run{}", RUN.fetch_add(1, Ordering::Relaxed));
    let raw = format!("{bucket}/exec/raw");
    let progress = Arc::new(Progress::default());
    let result = runtime().block_on(collect_outputs(
        &root,
        &interface(),
        store,
        &raw,
        &UploadLimits::default(),
        &progress,
    ));
    let objects = runtime()
        .block_on(store.list(&format!("{bucket}/")))
        .unwrap_or_default();
    for object in &objects {
        assert!(
            object.relative.starts_with("exec/raw/"),
            "object {:?} written outside the raw prefix",
            object.relative
        );
        let bytes = runtime()
            .block_on(store.read_bytes(object.object.url(), 1 << 20))
            .expect("a listed object reads back");
        assert!(
            bytes.as_ref() != OUTSIDE,
            "a file from outside the folder was uploaded"
        );
        assert!(
            written.contains(bytes.as_ref()),
            "uploaded bytes {bytes:?} were never written in the folder"
        );
    }
    let Ok(map) = result else {
        return;
    };
    let mut seen = HashSet::new();
    for lit in map.literals.values() {
        each_uri(lit, &mut |uri| {
            assert!(
                uri.starts_with(&format!("{raw}/")),
                "output URI {uri:?} is not below {raw}"
            );
            assert!(seen.insert(uri.to_owned()), "two outputs name {uri:?}");
        });
    }
}
