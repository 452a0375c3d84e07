//! Small constructors for literals and types (upload, tests, the sidecar).
use std::collections::BTreeMap;

use crate::proto::core::{
    Binary, Blob, BlobMetadata, BlobType, Literal, LiteralCollection, LiteralMap, LiteralType,
    Primitive, Scalar, SimpleType, Void, blob_type::BlobDimensionality, literal, literal_type,
    primitive, scalar,
};

pub fn scalar_literal(value: scalar::Value) -> Literal {
    Literal {
        value: Some(literal::Value::Scalar(Box::new(Scalar {
            value: Some(value),
        }))),
        ..Default::default()
    }
}

pub fn primitive_literal(value: primitive::Value) -> Literal {
    scalar_literal(scalar::Value::Primitive(Primitive { value: Some(value) }))
}

pub fn integer(v: i64) -> Literal {
    primitive_literal(primitive::Value::Integer(v))
}
pub fn float(v: f64) -> Literal {
    primitive_literal(primitive::Value::FloatValue(v))
}
pub fn string(v: impl Into<String>) -> Literal {
    primitive_literal(primitive::Value::StringValue(v.into()))
}
pub fn boolean(v: bool) -> Literal {
    primitive_literal(primitive::Value::Boolean(v))
}
pub fn datetime(seconds: i64, nanos: i32) -> Literal {
    primitive_literal(primitive::Value::Datetime(prost_types::Timestamp {
        seconds,
        nanos,
    }))
}
pub fn duration(seconds: i64, nanos: i32) -> Literal {
    primitive_literal(primitive::Value::Duration(prost_types::Duration {
        seconds,
        nanos,
    }))
}
pub fn none() -> Literal {
    scalar_literal(scalar::Value::NoneType(Void {}))
}
pub fn binary(value: Vec<u8>, tag: impl Into<String>) -> Literal {
    scalar_literal(scalar::Value::Binary(Binary {
        value,
        tag: tag.into(),
    }))
}

pub fn blob_type(format: impl Into<String>, multipart: bool) -> BlobType {
    let dimensionality = if multipart {
        BlobDimensionality::Multipart
    } else {
        BlobDimensionality::Single
    };
    BlobType {
        format: format.into(),
        dimensionality: dimensionality as i32,
    }
}

pub fn blob(uri: impl Into<String>, format: impl Into<String>, multipart: bool) -> Literal {
    scalar_literal(scalar::Value::Blob(Blob {
        metadata: Some(BlobMetadata {
            r#type: Some(blob_type(format, multipart)),
        }),
        uri: uri.into(),
    }))
}

/// A literal stored elsewhere: the serialized `Literal` at `uri`.
pub fn offloaded(uri: impl Into<String>) -> Literal {
    Literal {
        value: Some(literal::Value::OffloadedMetadata(
            crate::proto::core::LiteralOffloadedMetadata {
                uri: uri.into(),
                ..Default::default()
            },
        )),
        ..Literal::default()
    }
}

pub fn collection(items: Vec<Literal>) -> Literal {
    Literal {
        value: Some(literal::Value::Collection(LiteralCollection {
            literals: items,
        })),
        ..Default::default()
    }
}

pub fn map<K: Into<String>>(items: impl IntoIterator<Item = (K, Literal)>) -> Literal {
    Literal {
        value: Some(literal::Value::Map(literal_map(items))),
        ..Default::default()
    }
}

pub fn literal_map<K: Into<String>>(items: impl IntoIterator<Item = (K, Literal)>) -> LiteralMap {
    LiteralMap {
        literals: items
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect::<BTreeMap<_, _>>(),
    }
}

pub fn simple_type(t: SimpleType) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::Simple(t as i32)),
        ..Default::default()
    }
}
pub fn blob_literal_type(format: impl Into<String>, multipart: bool) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::Blob(blob_type(format, multipart))),
        ..Default::default()
    }
}
pub fn collection_type(inner: LiteralType) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::CollectionType(Box::new(inner))),
        ..Default::default()
    }
}
pub fn map_type(inner: LiteralType) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::MapValueType(Box::new(inner))),
        ..Default::default()
    }
}
