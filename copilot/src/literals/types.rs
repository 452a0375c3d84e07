//! Does a literal fit a `LiteralType`? Used to check downloaded inputs
//! against the task's input interface before anything is written.
use crate::proto::core::{
    EnumType, Literal, LiteralType, SimpleType, UnionType, blob_type::BlobDimensionality, literal,
    literal_type, primitive, scalar,
};

/// A literal that does not fit its declared type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("input {path}: expected {expected}, found {found}")]
pub struct TypeMismatch {
    /// Where in the input, e.g. `x`, `x[2]`, `x["k"]`.
    pub path: String,
    pub expected: String,
    pub found: String,
}

/// A short description of a literal's kind, for messages.
pub fn describe_literal(lit: &Literal) -> String {
    match &lit.value {
        None => "an empty literal".into(),
        Some(literal::Value::Collection(c)) => format!("a collection of {}", c.literals.len()),
        Some(literal::Value::Map(m)) => format!("a map of {}", m.literals.len()),
        Some(literal::Value::OffloadedMetadata(_)) => "an offloaded literal".into(),
        Some(literal::Value::Scalar(s)) => match &s.value {
            None => "an empty scalar".into(),
            Some(scalar::Value::Primitive(p)) => match &p.value {
                None => "an empty primitive".into(),
                Some(primitive::Value::Integer(_)) => "an integer".into(),
                Some(primitive::Value::FloatValue(_)) => "a float".into(),
                Some(primitive::Value::StringValue(_)) => "a string".into(),
                Some(primitive::Value::Boolean(_)) => "a boolean".into(),
                Some(primitive::Value::Datetime(_)) => "a datetime".into(),
                Some(primitive::Value::Duration(_)) => "a duration".into(),
            },
            Some(scalar::Value::Blob(b)) => {
                let multipart = b
                    .metadata
                    .as_ref()
                    .and_then(|m| m.r#type.as_ref())
                    .is_some_and(|t| t.dimensionality == BlobDimensionality::Multipart as i32);
                if multipart {
                    "a multipart blob".into()
                } else {
                    "a single blob".into()
                }
            }
            Some(scalar::Value::Binary(_)) => "binary".into(),
            Some(scalar::Value::Schema(_)) => "a schema".into(),
            Some(scalar::Value::NoneType(_)) => "none".into(),
            Some(scalar::Value::Error(_)) => "an error".into(),
            Some(scalar::Value::Generic(_)) => "a generic (struct)".into(),
            Some(scalar::Value::StructuredDataset(_)) => "a structured dataset".into(),
            Some(scalar::Value::Union(_)) => "a union value".into(),
        },
    }
}

/// A short description of a type, for messages.
pub fn describe_type(t: &LiteralType) -> String {
    match &t.r#type {
        None => "any".into(),
        Some(literal_type::Type::Simple(s)) => SimpleType::try_from(*s)
            .map(|s| s.as_str_name().to_ascii_lowercase())
            .unwrap_or_else(|_| format!("simple type {s}")),
        Some(literal_type::Type::Schema(_)) => "a schema".into(),
        Some(literal_type::Type::CollectionType(inner)) => {
            format!("a collection of {}", describe_type(inner))
        }
        Some(literal_type::Type::MapValueType(inner)) => {
            format!("a map of {}", describe_type(inner))
        }
        Some(literal_type::Type::Blob(b)) => {
            if b.dimensionality == BlobDimensionality::Multipart as i32 {
                "a multipart blob".into()
            } else {
                "a single blob".into()
            }
        }
        Some(literal_type::Type::EnumType(e)) => format!("one of {:?}", e.values),
        Some(literal_type::Type::StructuredDatasetType(_)) => "a structured dataset".into(),
        Some(literal_type::Type::UnionType(u)) => {
            format!(
                "a union of ({})",
                u.variants
                    .iter()
                    .map(describe_type)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

/// Checks `lit` against `ty`; `path` names the input in the error.
pub fn check(lit: &Literal, ty: &LiteralType, path: &str) -> Result<(), TypeMismatch> {
    use literal_type::Type as T;
    let mismatch = || TypeMismatch {
        path: path.to_owned(),
        expected: describe_type(ty),
        found: describe_literal(lit),
    };
    let fits = |ok: bool| if ok { Ok(()) } else { Err(mismatch()) };
    let scalar = match &lit.value {
        Some(literal::Value::Scalar(s)) => s.value.as_ref(),
        _ => None,
    };
    // None fits any optional (union with none) and the none type; a union literal is checked by its value.
    if let Some(scalar::Value::Union(u)) = scalar {
        let Some(inner) = u.value.as_deref() else {
            return Err(mismatch());
        };
        return match &ty.r#type {
            Some(T::UnionType(union)) => fits(fits_any_variant(inner, union, path)),
            _ => check(inner, ty, path),
        };
    }
    let Some(kind) = &ty.r#type else {
        return Ok(());
    };
    match (kind, &lit.value) {
        (_, Some(literal::Value::OffloadedMetadata(_))) => Ok(()),
        (T::UnionType(union), _) => fits(fits_any_variant(lit, union, path)),
        (T::CollectionType(inner), Some(literal::Value::Collection(c))) => {
            for (i, item) in c.literals.iter().enumerate() {
                check(item, inner, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (T::MapValueType(inner), Some(literal::Value::Map(m))) => {
            for (k, item) in &m.literals {
                check(item, inner, &format!("{path}[{k:?}]"))?;
            }
            Ok(())
        }
        (T::Simple(simple), Some(literal::Value::Scalar(_))) => {
            let simple = SimpleType::try_from(*simple).map_err(|_| mismatch())?;
            fits(fits_simple(simple, scalar))
        }
        (T::Blob(_), _) => fits(matches!(scalar, Some(scalar::Value::Blob(_)))),
        (T::Schema(_), _) => fits(matches!(scalar, Some(scalar::Value::Schema(_)))),
        (T::StructuredDatasetType(_), _) => {
            fits(matches!(scalar, Some(scalar::Value::StructuredDataset(_))))
        }
        (T::EnumType(e), _) => fits(fits_enum(e, scalar)),
        _ => Err(mismatch()),
    }
}

/// Whether `lit` fits at least one of the union's variants.
fn fits_any_variant(lit: &Literal, union: &UnionType, path: &str) -> bool {
    union.variants.iter().any(|v| check(lit, v, path).is_ok())
}

/// Whether a scalar fits a simple type (`STRUCT` takes a generic or binary value).
fn fits_simple(simple: SimpleType, scalar: Option<&scalar::Value>) -> bool {
    match (simple, scalar) {
        (SimpleType::None, Some(scalar::Value::NoneType(_)))
        | (SimpleType::Struct, Some(scalar::Value::Generic(_) | scalar::Value::Binary(_)))
        | (SimpleType::Binary, Some(scalar::Value::Binary(_)))
        | (SimpleType::Error, Some(scalar::Value::Error(_))) => true,
        (s, Some(scalar::Value::Primitive(p))) => matches!(
            (s, &p.value),
            (SimpleType::Integer, Some(primitive::Value::Integer(_)))
                | (SimpleType::Float, Some(primitive::Value::FloatValue(_)))
                | (SimpleType::String, Some(primitive::Value::StringValue(_)))
                | (SimpleType::Boolean, Some(primitive::Value::Boolean(_)))
                | (SimpleType::Datetime, Some(primitive::Value::Datetime(_)))
                | (SimpleType::Duration, Some(primitive::Value::Duration(_)))
        ),
        _ => false,
    }
}

/// Whether a scalar is a string among the enum's values (any string if it has none).
fn fits_enum(e: &EnumType, scalar: Option<&scalar::Value>) -> bool {
    match scalar {
        Some(scalar::Value::Primitive(p)) => matches!(
            &p.value,
            Some(primitive::Value::StringValue(s)) if e.values.is_empty() || e.values.contains(s)
        ),
        _ => false,
    }
}
