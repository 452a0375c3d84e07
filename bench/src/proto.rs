//! The `sidecar --interface` argument for the bench's outputs, built from
//! copilot's own FlyteIDL types rather than by hand.
use base64::Engine as _;
use copilot::{
    literals::make,
    proto::core::{LiteralType, SimpleType, TypedInterface, Variable, VariableMap},
};
use prost::Message as _;

/// An output's type.
#[derive(Clone, Copy)]
pub enum Type {
    Integer,
    Float,
    String,
    /// Blob, `multipart` = a directory.
    Blob {
        multipart: bool,
    },
}

impl Type {
    fn literal_type(self) -> LiteralType {
        match self {
            Self::Integer => make::simple_type(SimpleType::Integer),
            Self::Float => make::simple_type(SimpleType::Float),
            Self::String => make::simple_type(SimpleType::String),
            Self::Blob { multipart } => make::blob_literal_type("", multipart),
        }
    }
}

/// `TypedInterface { outputs: VariableMap { variables } }`, serialized and base64 encoded.
pub fn outputs_interface(outputs: &[(&str, Type)]) -> String {
    let variables = outputs
        .iter()
        .map(|(name, t)| {
            let variable = Variable {
                r#type: Some(t.literal_type()),
                ..Variable::default()
            };
            ((*name).to_owned(), variable)
        })
        .collect();
    let interface = TypedInterface {
        inputs: None,
        outputs: Some(VariableMap { variables }),
    };
    base64::engine::general_purpose::STANDARD.encode(interface.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_integer_output_round_trips() {
        let text = outputs_interface(&[("x", Type::Integer)]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64");
        let interface = TypedInterface::decode(bytes.as_slice()).expect("a TypedInterface");
        let outputs = interface.outputs.expect("outputs");
        assert_eq!(
            outputs.variables["x"].r#type,
            Some(make::simple_type(SimpleType::Integer))
        );
    }
}
