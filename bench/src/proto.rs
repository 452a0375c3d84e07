//! Just enough protobuf to write a `flyteidl.core.TypedInterface` (field numbers from
//! `proto/flyteidl/core/interface.proto` and `types.proto`) for `sidecar --interface`.

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

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn field_varint(field: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(field << 3), out);
    varint(v, out);
}

fn literal_type(t: Type) -> Vec<u8> {
    let mut out = Vec::new();
    match t {
        // LiteralType.simple = 1 (SimpleType INTEGER = 1, FLOAT = 2, STRING = 3)
        Type::Integer => field_varint(1, 1, &mut out),
        Type::Float => field_varint(1, 2, &mut out),
        Type::String => field_varint(1, 3, &mut out),
        // LiteralType.blob = 5: BlobType { format = 1, dimensionality = 2 }
        Type::Blob { multipart } => {
            let mut blob = Vec::new();
            if multipart {
                field_varint(2, 1, &mut blob);
            }
            field_bytes(5, &blob, &mut out);
        }
    }
    out
}

/// `TypedInterface { outputs: VariableMap { variables: map<string, Variable> } }`, base64.
pub fn outputs_interface(outputs: &[(&str, Type)]) -> String {
    let mut map = Vec::new();
    for (name, t) in outputs {
        let mut variable = Vec::new();
        field_bytes(1, &literal_type(*t), &mut variable);
        let mut entry = Vec::new();
        field_bytes(1, name.as_bytes(), &mut entry);
        field_bytes(2, &variable, &mut entry);
        field_bytes(1, &entry, &mut map);
    }
    let mut iface = Vec::new();
    field_bytes(2, &map, &mut iface);
    base64(&iface)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(A[(n >> shift & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn one_integer_output() {
        // outputs { variables { key: "x" value { type { simple: INTEGER } } } }
        assert_eq!(
            outputs_interface(&[("x", Type::Integer)]),
            base64(&[
                0x12, 0x0b, 0x0a, 0x09, 0x0a, 0x01, b'x', 0x12, 0x04, 0x0a, 0x02, 0x08, 0x01
            ])
        );
    }
}
