//! Wire compatibility: messages built with copilot's prost types encode to
//! exactly the bytes the `flyteidl` PyPI package produces (see
//! `golden/make_golden.py`), and those bytes decode to the same messages.
use copilot::{
    literals::make,
    proto::core::{
        self, ErrorDocument, Literal, LiteralMap, LiteralType, SimpleType, TypedInterface,
        Variable, VariableMap, literal, literal_type, scalar,
    },
};
use prost::Message;

fn golden(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/it/golden/{name}.pb", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(name: &str, ours: &M) {
    let bytes = golden(name);
    let decoded = M::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("{name}: golden bytes do not decode: {e}"));
    assert_eq!(&decoded, ours, "{name}: decoded golden message differs");
    assert_eq!(
        ours.encode_to_vec(),
        bytes,
        "{name}: our encoding differs from flyteidl's"
    );
}

#[test]
fn primitives_match_flyteidl() {
    let ours = make::literal_map([
        ("i", make::integer(-42)),
        ("f", make::float(2.5)),
        ("s", make::string("hello")),
        ("b", make::boolean(true)),
        ("dt", make::datetime(1_704_164_645, 500_000_000)),
        ("dur", make::duration(3723, 500_000_000)),
    ]);
    assert_wire::<LiteralMap>("primitives", &ours);
}

#[test]
fn mixed_literal_map_matches_flyteidl() {
    let int_type = make::simple_type(SimpleType::Integer);
    let generic =
        copilot::literals::values::json_to_struct(r#"{"a": 1, "b": ["x", true]}"#).expect("json");
    let mut meta = make::integer(3);
    meta.hash = "abc".into();
    meta.metadata = [
        ("k1".to_owned(), "v1".to_owned()),
        ("k0".to_owned(), "v0".to_owned()),
    ]
    .into_iter()
    .collect();
    let ours = make::literal_map([
        ("blob", make::blob("s3://bucket/raw/file.csv", "csv", false)),
        ("dir", make::blob("s3://bucket/raw/dir", "", true)),
        (
            "files",
            make::collection(vec![
                make::blob("s3://bucket/raw/a.txt", "", false),
                make::blob("s3://bucket/raw/b.txt", "", false),
            ]),
        ),
        (
            "nested",
            make::map([("x", make::integer(1)), ("y", make::string("why"))]),
        ),
        ("none", make::none()),
        ("bin", make::binary(b"\x81\xa1a\x01".to_vec(), "msgpack")),
        ("g", make::scalar_literal(scalar::Value::Generic(generic))),
        (
            "err",
            make::scalar_literal(scalar::Value::Error(core::Error {
                failed_node_id: "n0".into(),
                message: "bad".into(),
            })),
        ),
        (
            "u",
            make::scalar_literal(scalar::Value::Union(Box::new(core::Union {
                value: Some(Box::new(make::integer(5))),
                r#type: Some(int_type.clone()),
            }))),
        ),
        (
            "schema",
            make::scalar_literal(scalar::Value::Schema(core::Schema {
                uri: "s3://bucket/raw/schema".into(),
                r#type: Some(core::SchemaType {
                    columns: vec![core::schema_type::SchemaColumn {
                        name: "c".into(),
                        r#type: core::schema_type::schema_column::SchemaColumnType::Float as i32,
                    }],
                }),
            })),
        ),
        (
            "sd",
            make::scalar_literal(scalar::Value::StructuredDataset(core::StructuredDataset {
                uri: "s3://bucket/raw/sd".into(),
                metadata: Some(core::StructuredDatasetMetadata {
                    structured_dataset_type: Some(core::StructuredDatasetType {
                        format: "parquet".into(),
                        ..Default::default()
                    }),
                }),
            })),
        ),
        (
            "off",
            Literal {
                value: Some(literal::Value::OffloadedMetadata(
                    core::LiteralOffloadedMetadata {
                        uri: "s3://bucket/off/lit".into(),
                        size_bytes: 1234,
                        inferred_type: Some(int_type),
                    },
                )),
                ..Default::default()
            },
        ),
        ("meta", meta),
    ]);
    assert_wire::<LiteralMap>("mixed", &ours);
}

#[test]
fn typed_interface_matches_flyteidl() {
    let var = |t: LiteralType| Variable {
        r#type: Some(t),
        description: "d".into(),
    };
    let with_tag = |mut t: LiteralType, tag: &str| {
        t.structure = Some(core::TypeStructure {
            tag: tag.into(),
            ..Default::default()
        });
        t
    };
    let ours = TypedInterface {
        inputs: Some(VariableMap {
            variables: [
                ("a".to_owned(), var(make::simple_type(SimpleType::String))),
                ("b".to_owned(), var(make::blob_literal_type("csv", true))),
            ]
            .into_iter()
            .collect(),
        }),
        outputs: Some(VariableMap {
            variables: [
                (
                    "o".to_owned(),
                    var(make::collection_type(make::map_type(make::simple_type(
                        SimpleType::Float,
                    )))),
                ),
                (
                    "u".to_owned(),
                    var(LiteralType {
                        r#type: Some(literal_type::Type::UnionType(core::UnionType {
                            variants: vec![
                                with_tag(make::simple_type(SimpleType::Integer), "int"),
                                make::simple_type(SimpleType::None),
                            ],
                        })),
                        ..Default::default()
                    }),
                ),
                (
                    "e".to_owned(),
                    var(LiteralType {
                        r#type: Some(literal_type::Type::EnumType(core::EnumType {
                            values: vec!["x".into(), "y".into()],
                        })),
                        ..Default::default()
                    }),
                ),
            ]
            .into_iter()
            .collect(),
        }),
    };
    assert_wire::<TypedInterface>("interface", &ours);
}

#[test]
fn error_document_matches_flyteidl() {
    let ours = ErrorDocument {
        error: Some(core::ContainerError {
            code: "InputDownloadFailed".into(),
            message: "boom".into(),
            kind: core::container_error::Kind::Recoverable as i32,
            origin: core::execution_error::ErrorKind::System as i32,
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            worker: "pod-1".into(),
        }),
    };
    assert_wire::<ErrorDocument>("error_document", &ours);
}

#[test]
fn truncated_and_garbage_bytes_are_decode_errors() {
    let bytes = golden("mixed");
    for cut in [1, bytes.len() / 3, bytes.len() - 1] {
        assert!(
            LiteralMap::decode(&bytes[..cut]).is_err(),
            "truncated at {cut} must not decode"
        );
    }
    assert!(LiteralMap::decode(&b"\xff\xff\xff\xff garbage"[..]).is_err());
}
