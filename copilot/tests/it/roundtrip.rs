//! Round trips of every literal kind through the data plane, against the
//! in-memory store and local files: literals → files (download, both
//! layouts) and files → literals (upload), and back.
use std::{path::Path, sync::Arc};

use bytes::Bytes;
use copilot::{
    literals::{
        Layout, MetadataFormat, UploadLimits, collect_outputs, download::Options, download_inputs,
        make, upload::UploadError,
    },
    proto::core::{
        self, Literal, LiteralMap, SimpleType, TypedInterface, Variable, VariableMap, literal,
        scalar,
    },
    storage::{Progress, StorageConfig, Store},
};
use prost::Message as _;

fn store() -> Store {
    Store::new(StorageConfig::default())
}

fn options(layout: Layout, format: MetadataFormat) -> Options {
    Options {
        layout,
        format,
        ..Options::default()
    }
}

fn progress() -> Arc<Progress> {
    Arc::new(Progress::default())
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", p.as_ref().display()))
}

fn generic() -> Literal {
    let s =
        copilot::literals::values::json_to_struct(r#"{"a": 1, "b": ["x", true]}"#).expect("json");
    make::scalar_literal(scalar::Value::Generic(s))
}

async fn seed(store: &Store) {
    store
        .put_bytes(
            "mem://bucket/raw/single.csv",
            Bytes::from_static(b"a,b\n1,2\n"),
        )
        .await
        .expect("put");
    store
        .put_bytes("mem://bucket/raw/dir/part-0", Bytes::from_static(b"p0"))
        .await
        .expect("put");
    store
        .put_bytes(
            "mem://bucket/raw/dir/nested/deep/part-1",
            Bytes::from_static(b"p1"),
        )
        .await
        .expect("put");
    store
        .put_bytes("mem://bucket/raw/f1/data.txt", Bytes::from_static(b"one"))
        .await
        .expect("put");
    store
        .put_bytes("mem://bucket/raw/f2/data.txt", Bytes::from_static(b"two"))
        .await
        .expect("put");
    store
        .put_bytes(
            "mem://bucket/raw/f3/other.bin",
            Bytes::from_static(b"three"),
        )
        .await
        .expect("put");
    store
        .put_bytes("mem://bucket/raw/sd/00000", Bytes::from_static(b"parquet"))
        .await
        .expect("put");
    store
        .put_bytes("mem://bucket/raw/schema/0", Bytes::from_static(b"s0"))
        .await
        .expect("put");
    let offloaded = make::collection(vec![make::integer(7), make::integer(8)]);
    store
        .put_bytes(
            "mem://bucket/offloaded/lit",
            Bytes::from(offloaded.encode_to_vec()),
        )
        .await
        .expect("put");
}

fn all_kinds() -> LiteralMap {
    let union = make::scalar_literal(scalar::Value::Union(Box::new(core::Union {
        value: Some(Box::new(make::integer(5))),
        r#type: Some(make::simple_type(SimpleType::Integer)),
    })));
    let error = make::scalar_literal(scalar::Value::Error(core::Error {
        failed_node_id: "n0".into(),
        message: "bad thing".into(),
    }));
    let sd = make::scalar_literal(scalar::Value::StructuredDataset(core::StructuredDataset {
        uri: "mem://bucket/raw/sd".into(),
        metadata: None,
    }));
    let schema = make::scalar_literal(scalar::Value::Schema(core::Schema {
        uri: "mem://bucket/raw/schema".into(),
        r#type: None,
    }));
    let offloaded = Literal {
        value: Some(literal::Value::OffloadedMetadata(
            core::LiteralOffloadedMetadata {
                uri: "mem://bucket/offloaded/lit".into(),
                size_bytes: 10,
                inferred_type: None,
            },
        )),
        ..Default::default()
    };
    make::literal_map([
        ("i", make::integer(-42)),
        ("f", make::float(2.5)),
        ("whole", make::float(3.0)),
        ("s", make::string("hello world")),
        ("b", make::boolean(true)),
        ("dt", make::datetime(1_704_164_645, 500_000_000)),
        ("dur", make::duration(3723, 500_000_000)),
        ("n", make::none()),
        ("bin", make::binary(vec![0, 159, 146, 150], "msgpack")),
        ("err", error),
        ("g", generic()),
        (
            "blob",
            make::blob("mem://bucket/raw/single.csv", "csv", false),
        ),
        ("dir", make::blob("mem://bucket/raw/dir", "", true)),
        ("schema", schema),
        ("sd", sd),
        ("u", union),
        (
            "files",
            make::collection(vec![
                make::blob("mem://bucket/raw/f1/data.txt", "", false),
                make::blob("mem://bucket/raw/f2/data.txt", "", false),
                make::blob("mem://bucket/raw/f3/other.bin", "", false),
            ]),
        ),
        (
            "nested",
            make::map([
                (
                    "x",
                    make::collection(vec![make::integer(1), make::integer(2)]),
                ),
                ("y", make::string("why")),
            ]),
        ),
        ("off", offloaded),
    ])
}

#[tokio::test]
async fn download_every_kind_direct_layout() {
    let store = store();
    seed(&store).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = download_inputs(
        &store,
        all_kinds(),
        dir.path(),
        &options(Layout::Direct, MetadataFormat::Json),
        &progress(),
    )
    .await
    .expect("download");
    let d = dir.path().canonicalize().expect("canonical");
    assert_eq!(read(d.join("i")), "-42");
    assert_eq!(read(d.join("f")), "2.5");
    assert_eq!(read(d.join("whole")), "3");
    assert_eq!(read(d.join("s")), "hello world");
    assert_eq!(read(d.join("b")), "true");
    assert_eq!(read(d.join("dt")), "2024-01-02T03:04:05.5Z");
    assert_eq!(read(d.join("dur")), "1h2m3.5s");
    assert_eq!(read(d.join("n")), "null");
    assert_eq!(
        std::fs::read(d.join("bin")).expect("bin"),
        [0, 159, 146, 150]
    );
    assert_eq!(read(d.join("err")), "bad thing");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&read(d.join("g"))).expect("json"),
        serde_json::json!({"a": 1, "b": ["x", true]})
    );
    assert_eq!(read(d.join("blob")), "a,b\n1,2\n");
    assert_eq!(read(d.join("dir/part-0")), "p0");
    assert_eq!(
        read(d.join("dir/nested/deep/part-1")),
        "p1",
        "nested multipart keys keep their path"
    );
    assert_eq!(read(d.join("schema/0")), "s0");
    assert_eq!(read(d.join("sd/00000")), "parquet");
    assert_eq!(read(d.join("u")), "5");
    assert_eq!(read(d.join("files/0")), "one");
    assert_eq!(read(d.join("files/1")), "two");
    assert_eq!(read(d.join("files/2")), "three");
    assert_eq!(read(d.join("nested/x/1")), "2");
    assert_eq!(read(d.join("nested/y")), "why");
    assert_eq!(read(d.join("off/0")), "7");
    assert_eq!(read(d.join("off/1")), "8");

    // inputs.json: plain values, real durations/datetimes, local paths for blobs.
    let json: serde_json::Value =
        serde_json::from_str(&read(d.join("inputs.json"))).expect("inputs.json");
    assert_eq!(json["i"], serde_json::json!(-42));
    assert_eq!(json["f"], serde_json::json!(2.5));
    // A whole float is spelt as Go's encoding/json spells it: `3`, not `3.0`.
    assert!(read(d.join("inputs.json")).contains(r#""whole":3"#));
    // As Go's encoding/json writes a time.Duration: integer nanoseconds.
    assert_eq!(json["dur"], serde_json::json!(3_723_500_000_000_i64));
    assert_eq!(json["dt"], serde_json::json!("2024-01-02T03:04:05.5Z"));
    assert_eq!(json["n"], serde_json::Value::Null);
    assert_eq!(json["bin"], serde_json::json!("AJ+Slg=="));
    assert_eq!(
        json["blob"],
        serde_json::json!(d.join("blob").to_str().expect("utf-8"))
    );
    assert_eq!(json["nested"], serde_json::json!({"x": [1, 2], "y": "why"}));
    assert_eq!(json["off"], serde_json::json!([7, 8]));
    assert!(!d.join("inputs.yaml").exists());

    // inputs.pb: the same literals, blob URIs rewritten to local paths.
    let pb = LiteralMap::decode(
        std::fs::read(d.join("inputs.pb"))
            .expect("inputs.pb")
            .as_slice(),
    )
    .expect("decode");
    assert_eq!(pb, out.literals);
    let blob_uri = match &pb.literals["blob"].value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Blob(b)) => b.uri.clone(),
            other => panic!("blob expected, got {other:?}"),
        },
        other => panic!("scalar expected, got {other:?}"),
    };
    assert_eq!(blob_uri, d.join("blob").to_string_lossy());
    assert!(
        matches!(
            pb.literals["off"].value,
            Some(literal::Value::Collection(_))
        ),
        "offloaded literal resolved"
    );
    // No staging or partial files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".copilot"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn download_named_dir_layout_keeps_basenames_and_dedupes() {
    let store = store();
    seed(&store).await;
    let dir = tempfile::tempdir().expect("tempdir");
    download_inputs(
        &store,
        all_kinds(),
        dir.path(),
        &options(Layout::NamedDir, MetadataFormat::Yaml),
        &progress(),
    )
    .await
    .expect("download");
    let d = dir.path().canonicalize().expect("canonical");
    assert_eq!(
        read(d.join("blob/single.csv")),
        "a,b\n1,2\n",
        "single blob under <var>/<basename>"
    );
    assert_eq!(read(d.join("files/data.txt")), "one");
    assert_eq!(
        read(d.join("files/1_data.txt")),
        "two",
        "a colliding basename gets its index"
    );
    assert_eq!(read(d.join("files/other.bin")), "three");
    assert_eq!(read(d.join("i")), "-42", "non-blob inputs are unchanged");
    let yaml: serde_json::Value =
        serde_yaml_ng::from_str(&read(d.join("inputs.yaml"))).expect("inputs.yaml");
    assert_eq!(
        yaml["blob"],
        serde_json::json!(d.join("blob/single.csv").to_str().expect("utf-8"))
    );
    assert_eq!(yaml["s"], serde_json::json!("hello world"));
    assert!(!d.join("inputs.json").exists());
}

#[tokio::test]
async fn empty_inputs_are_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = download_inputs(
        &store(),
        LiteralMap::default(),
        dir.path(),
        &options(Layout::Direct, MetadataFormat::Json),
        &progress(),
    )
    .await
    .expect("empty inputs download");
    assert!(out.literals.literals.is_empty());
    assert_eq!(read(dir.path().join("inputs.json")), "{}");
    assert_eq!(
        std::fs::read(dir.path().join("inputs.pb")).expect("pb"),
        Vec::<u8>::new()
    );
}

#[tokio::test]
async fn missing_blob_fails_and_leaves_the_directory_untouched() {
    let store = store();
    seed(&store).await;
    let mut inputs = all_kinds();
    inputs.literals.insert(
        "zz_missing".into(),
        make::blob("mem://bucket/raw/nope", "", false),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("keep"), "mine").expect("write");
    let err = download_inputs(
        &store,
        inputs,
        dir.path(),
        &options(Layout::Direct, MetadataFormat::Json),
        &progress(),
    )
    .await
    .expect_err("missing blob must fail");
    let text = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(
        text.contains("zz_missing") && text.contains("mem://bucket/raw/nope"),
        "{text}"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["keep"], "nothing partial on disk");
}

#[tokio::test]
async fn traversal_names_are_refused() {
    let store = store();
    for (name, lit) in [
        ("..", make::integer(1)),
        ("../x", make::integer(1)),
        ("inputs.json", make::integer(1)),
        ("m", make::map([("../../etc", make::integer(1))])),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = download_inputs(
            &store,
            make::literal_map([(name, lit)]),
            dir.path(),
            &options(Layout::Direct, MetadataFormat::Json),
            &progress(),
        )
        .await
        .expect_err("traversal must be refused");
        assert!(err.to_string().contains("input"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            0,
            "{name}: nothing written"
        );
    }
    // A multipart blob whose object keys would escape is refused too (keys are checked).
    let s = copilot::literals::names::check_relative_key("a/../../b");
    assert!(s.is_err());
}

#[tokio::test]
async fn unknown_literal_kind_and_bad_scheme_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = download_inputs(
        &store(),
        make::literal_map([("x", Literal::default())]),
        dir.path(),
        &options(Layout::Direct, MetadataFormat::Json),
        &progress(),
    )
    .await
    .expect_err("empty literal");
    assert!(
        err.to_string().contains("input x") && err.to_string().contains("no value"),
        "{err}"
    );
    let err = download_inputs(
        &store(),
        make::literal_map([("y", make::blob("ftp://host/file", "", false))]),
        dir.path(),
        &options(Layout::Direct, MetadataFormat::Json),
        &progress(),
    )
    .await
    .expect_err("ftp scheme");
    let text = format!(
        "{err} / {:?}",
        std::error::Error::source(&err).map(ToString::to_string)
    );
    assert!(text.contains("ftp"), "{text}");
}

fn var(ty: core::LiteralType) -> Variable {
    Variable {
        r#type: Some(ty),
        description: String::new(),
    }
}

fn interface(vars: Vec<(&str, core::LiteralType)>) -> TypedInterface {
    TypedInterface {
        inputs: None,
        outputs: Some(VariableMap {
            variables: vars
                .into_iter()
                .map(|(k, t)| (k.to_owned(), var(t)))
                .collect(),
        }),
    }
}

#[tokio::test]
async fn upload_reads_every_supported_shape_and_round_trips() {
    let store = store();
    let out = tempfile::tempdir().expect("tempdir");
    let o = out.path();
    std::fs::write(o.join("i"), "  42\n").expect("w");
    std::fs::write(o.join("f.txt"), "2.5").expect("w");
    std::fs::write(o.join("s"), "text\n").expect("w");
    std::fs::write(o.join("b"), "True").expect("w");
    std::fs::write(o.join("dt"), "2024-01-02T03:04:05.5Z").expect("w");
    std::fs::write(o.join("dur"), "1h2m3.5s").expect("w");
    std::fs::write(o.join("g.json"), r#"{"a": 1}"#).expect("w");
    std::fs::write(o.join("blob"), "data").expect("w");
    std::fs::create_dir_all(o.join("dir/sub")).expect("mkdir");
    std::fs::write(o.join("dir/top"), "t").expect("w");
    std::fs::write(o.join("dir/sub/deep"), "d").expect("w");
    std::fs::create_dir(o.join("list")).expect("mkdir");
    std::fs::write(o.join("list/0"), "10").expect("w");
    std::fs::write(o.join("list/1.txt"), "11").expect("w");
    std::fs::create_dir(o.join("m")).expect("mkdir");
    std::fs::write(o.join("m/alpha"), "a").expect("w");
    std::fs::write(o.join("m/beta"), "b").expect("w");
    std::fs::write(o.join("opt"), "7").expect("w");
    let optional = core::LiteralType {
        r#type: Some(core::literal_type::Type::UnionType(core::UnionType {
            variants: vec![
                make::simple_type(SimpleType::Integer),
                make::simple_type(SimpleType::None),
            ],
        })),
        ..Default::default()
    };
    let iface = interface(vec![
        ("i", make::simple_type(SimpleType::Integer)),
        ("f", make::simple_type(SimpleType::Float)),
        ("s", make::simple_type(SimpleType::String)),
        ("b", make::simple_type(SimpleType::Boolean)),
        ("dt", make::simple_type(SimpleType::Datetime)),
        ("dur", make::simple_type(SimpleType::Duration)),
        ("g", make::simple_type(SimpleType::Struct)),
        ("nothing", make::simple_type(SimpleType::None)),
        ("blob", make::blob_literal_type("csv", false)),
        ("dir", make::blob_literal_type("", true)),
        (
            "list",
            make::collection_type(make::simple_type(SimpleType::Integer)),
        ),
        ("m", make::map_type(make::simple_type(SimpleType::String))),
        ("opt", optional.clone()),
        ("opt_absent", optional),
    ]);
    let collected = collect_outputs(
        o,
        &iface,
        &store,
        "mem://bucket/raw/run1",
        &UploadLimits::default(),
        &progress(),
    )
    .await
    .expect("collect");
    let map = collected;
    assert_eq!(map.literals["i"], make::integer(42));
    assert_eq!(map.literals["f"], make::float(2.5));
    assert_eq!(map.literals["s"], make::string("text"));
    assert_eq!(map.literals["b"], make::boolean(true));
    assert_eq!(
        map.literals["dt"],
        make::datetime(1_704_164_645, 500_000_000)
    );
    assert_eq!(map.literals["dur"], make::duration(3723, 500_000_000));
    assert_eq!(
        map.literals["g"],
        make::scalar_literal(scalar::Value::Generic(
            copilot::literals::values::json_to_struct(r#"{"a":1}"#).expect("json")
        ))
    );
    assert_eq!(map.literals["nothing"], make::none());
    assert_eq!(
        map.literals["blob"],
        make::blob("mem://bucket/raw/run1/blob", "csv", false)
    );
    assert_eq!(
        map.literals["dir"],
        make::blob("mem://bucket/raw/run1/dir", "", true)
    );
    assert_eq!(
        map.literals["list"],
        make::collection(vec![make::integer(10), make::integer(11)])
    );
    assert_eq!(
        map.literals["m"],
        make::map([("alpha", make::string("a")), ("beta", make::string("b"))])
    );
    let union_of = |lit: &Literal| match &lit.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Union(u)) => u.value.as_deref().cloned(),
            _ => None,
        },
        _ => None,
    };
    assert_eq!(union_of(&map.literals["opt"]), Some(make::integer(7)));
    assert_eq!(union_of(&map.literals["opt_absent"]), Some(make::none()));
    assert_eq!(
        store
            .read_bytes("mem://bucket/raw/run1/blob", 100)
            .await
            .expect("uploaded"),
        Bytes::from_static(b"data")
    );
    assert_eq!(
        store
            .read_bytes("mem://bucket/raw/run1/dir/sub/deep", 100)
            .await
            .expect("nested kept"),
        Bytes::from_static(b"d")
    );

    // And back down: the uploaded outputs download to the same content.
    let back = tempfile::tempdir().expect("tempdir");
    download_inputs(
        &store,
        map,
        back.path(),
        &options(Layout::Direct, MetadataFormat::Json),
        &progress(),
    )
    .await
    .expect("download outputs");
    assert_eq!(read(back.path().join("blob")), "data");
    assert_eq!(read(back.path().join("dir/sub/deep")), "d");
    assert_eq!(read(back.path().join("list/1")), "11");
    assert_eq!(read(back.path().join("dur")), "1h2m3.5s");
}

#[tokio::test]
async fn upload_errors_name_the_variable() {
    let store = store();
    let out = tempfile::tempdir().expect("tempdir");
    let o = out.path();
    std::fs::write(o.join("n"), "forty-two").expect("w");
    let err = collect_outputs(
        o,
        &interface(vec![("n", make::simple_type(SimpleType::Integer))]),
        &store,
        "mem://b/raw",
        &UploadLimits::default(),
        &progress(),
    )
    .await
    .expect_err("not an integer");
    assert!(
        matches!(err, UploadError::Parse { ref var, .. } if var == "n"),
        "{err}"
    );
    assert!(err.to_string().contains("output n"), "{err}");

    let err = collect_outputs(
        o,
        &interface(vec![("absent", make::simple_type(SimpleType::String))]),
        &store,
        "mem://b/raw",
        &UploadLimits::default(),
        &progress(),
    )
    .await
    .expect_err("missing");
    assert!(matches!(err, UploadError::Missing { .. }), "{err}");

    std::fs::write(o.join("big"), vec![b'1'; 2000]).expect("w");
    let limits = UploadLimits {
        max_value_bytes: 1024,
        ..UploadLimits::default()
    };
    let err = collect_outputs(
        o,
        &interface(vec![("big", make::simple_type(SimpleType::Integer))]),
        &store,
        "mem://b/raw",
        &limits,
        &progress(),
    )
    .await
    .expect_err("too large");
    assert!(
        matches!(
            err,
            UploadError::TooLarge {
                size: 2000,
                limit: 1024,
                ..
            }
        ),
        "{err}"
    );

    std::fs::write(o.join("amb.a"), "1").expect("w");
    std::fs::write(o.join("amb.b"), "2").expect("w");
    let err = collect_outputs(
        o,
        &interface(vec![("amb", make::simple_type(SimpleType::Integer))]),
        &store,
        "mem://b/raw",
        &UploadLimits::default(),
        &progress(),
    )
    .await
    .expect_err("ambiguous");
    assert!(matches!(err, UploadError::AmbiguousFile { .. }), "{err}");
}

#[tokio::test]
async fn upload_never_follows_symlinks_out_of_the_folder() {
    let store = store();
    let secret = tempfile::tempdir().expect("tempdir");
    std::fs::write(secret.path().join("passwd"), "root:x").expect("w");
    let out = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(secret.path().join("passwd"), out.path().join("leak"))
        .expect("symlink");
    let err = collect_outputs(
        out.path(),
        &interface(vec![("leak", make::blob_literal_type("", false))]),
        &store,
        "mem://b/raw",
        &UploadLimits::default(),
        &progress(),
    )
    .await
    .expect_err("escaping symlink");
    assert!(matches!(err, UploadError::Escapes { .. }), "{err}");
    std::fs::create_dir(out.path().join("d")).expect("mkdir");
    std::os::unix::fs::symlink(secret.path(), out.path().join("d/escape")).expect("symlink");
    let err = collect_outputs(
        out.path(),
        &interface(vec![("d", make::blob_literal_type("", true))]),
        &store,
        "mem://b/raw",
        &UploadLimits::default(),
        &progress(),
    )
    .await
    .expect_err("escaping symlink inside a directory");
    assert!(matches!(err, UploadError::Escapes { .. }), "{err}");
    // A relative symlink that stays inside is fine. An absolute one is refused even
    // when it points inside: it names the folder's path in the main container,
    // which is not where the sidecar has it mounted.
    std::fs::write(out.path().join("real"), "ok").expect("w");
    std::os::unix::fs::symlink(out.path().join("real"), out.path().join("absolute"))
        .expect("symlink");
    let err = collect_outputs(
        out.path(),
        &interface(vec![("absolute", make::simple_type(SimpleType::String))]),
        &store,
        "mem://b/raw",
        &UploadLimits::default(),
        &progress(),
    )
    .await
    .expect_err("absolute symlink");
    assert!(matches!(err, UploadError::Escapes { .. }), "{err}");
    std::os::unix::fs::symlink("real", out.path().join("inside")).expect("symlink");
    let got = collect_outputs(
        out.path(),
        &interface(vec![("inside", make::simple_type(SimpleType::String))]),
        &store,
        "mem://b/raw",
        &UploadLimits::default(),
        &progress(),
    )
    .await
    .expect("inside symlink");
    assert_eq!(got, make::literal_map([("inside", make::string("ok"))]));
}
