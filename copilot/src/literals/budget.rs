//! What materialising literals costs in memory, known before they are decoded.
//! Decoding cannot stream (prost builds the whole tree), and each literal then
//! becomes a decoded message, a planned file, a rewritten literal and a JSON value.
//! So a download estimates the cost of every serialized literal it reads from its
//! size and from the number of literals it holds, counted on the wire without
//! allocating, and refuses what would not fit in its memory limit with an error
//! that says so, rather than being OOM-killed with no error document.
//!
//! Measured with `/usr/bin/time -f %M copilot download` (release build): 10 MB of
//! one million integers peaked at 1,050 MB, 10.8 MB of 100,000 strings at 150 MB,
//! one 20 MB binary at 150 MB; hence [`BYTE_COST`] and [`LITERAL_COST`].

/// Memory per serialized byte (copies: wire, decoded, planned, rewritten, JSON).
pub const BYTE_COST: u64 = 8;
/// Memory per literal, beyond its bytes.
pub const LITERAL_COST: u64 = 1024;
/// Nesting deeper than this is left to prost, which refuses it (its limit is 100).
const MAX_DEPTH: u32 = 100;

/// Serialized literals that would not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{bytes} bytes holding {literals} literals would take about {} MiB to materialise, more than the {} MiB left of {limit_text}",
    cost >> 20,
    left >> 20
)]
pub struct OverBudget {
    pub bytes: u64,
    pub literals: u64,
    pub cost: u64,
    pub left: u64,
    pub limit_text: String,
}

/// The memory a download's literals may still take.
#[derive(Debug, Clone)]
pub struct Budget {
    left: u64,
    limit_text: String,
}

/// Which message the serialized bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    LiteralMap,
    Literal,
}

impl Budget {
    /// `limit_text` says where the limit comes from, for the error message.
    pub fn new(bytes: u64, limit_text: impl Into<String>) -> Self {
        Self {
            left: bytes,
            limit_text: limit_text.into(),
        }
    }

    /// The most serialized bytes worth reading: more could never fit.
    pub fn max_read(&self) -> u64 {
        self.left / BYTE_COST
    }

    /// The error for `bytes` too many to read at all (their literals uncounted).
    pub fn oversized(&self, bytes: u64) -> OverBudget {
        OverBudget {
            bytes,
            literals: 0,
            cost: bytes.saturating_mul(BYTE_COST),
            left: self.left,
            limit_text: self.limit_text.clone(),
        }
    }

    /// Takes the cost of `wire` (a serialized `message`) from the budget.
    pub fn take(&mut self, wire: &[u8], message: Message) -> Result<(), OverBudget> {
        let literals = match message {
            Message::LiteralMap => count_in_map(wire, 0),
            Message::Literal => count_in_literal(wire, 0) + 1,
        };
        let bytes = wire.len() as u64;
        let cost = bytes
            .saturating_mul(BYTE_COST)
            .saturating_add(literals.saturating_mul(LITERAL_COST));
        if cost > self.left {
            return Err(OverBudget {
                bytes,
                literals,
                cost,
                left: self.left,
                limit_text: self.limit_text.clone(),
            });
        }
        self.left -= cost;
        Ok(())
    }
}

/// Length-delimited fields of a message: (field number, payload). Stops at the
/// first malformed byte (prost reports it when it decodes).
fn fields(mut wire: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    std::iter::from_fn(move || {
        loop {
            let key = varint(&mut wire)?;
            let len = match key & 7 {
                0 => {
                    varint(&mut wire)?;
                    continue;
                }
                1 => 8,
                5 => 4,
                2 => usize::try_from(varint(&mut wire)?).ok()?,
                _ => return None,
            };
            if len > wire.len() {
                return None;
            }
            let (payload, rest) = wire.split_at(len);
            wire = rest;
            if key & 7 == 2 {
                return Some((key >> 3, payload));
            }
        }
    })
}

fn varint(wire: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = wire.split_first()?;
        *wire = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Literals in a `LiteralMap` (field 1: entries; entry field 2: the Literal).
fn count_in_map(wire: &[u8], depth: u32) -> u64 {
    if depth > MAX_DEPTH {
        return 0;
    }
    fields(wire)
        .filter(|(n, _)| *n == 1)
        .flat_map(|(_, entry)| fields(entry).filter(|(n, _)| *n == 2))
        .map(|(_, lit)| 1 + count_in_literal(lit, depth + 1))
        .sum()
}

/// Literals nested in a `Literal` (scalar 1 → union 9 → value 1; collection 2 →
/// literals 1; map 3), not counting itself.
fn count_in_literal(wire: &[u8], depth: u32) -> u64 {
    if depth > MAX_DEPTH {
        return 0;
    }
    fields(wire)
        .map(|(n, payload)| match n {
            1 => fields(payload)
                .filter(|(n, _)| *n == 9)
                .flat_map(|(_, union)| fields(union).filter(|(n, _)| *n == 1))
                .map(|(_, lit)| 1 + count_in_literal(lit, depth + 1))
                .sum(),
            2 => fields(payload)
                .filter(|(n, _)| *n == 1)
                .map(|(_, lit)| 1 + count_in_literal(lit, depth + 1))
                .sum(),
            3 => count_in_map(payload, depth + 1),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::{literals::make, proto::core::LiteralMap};

    fn count(map: &LiteralMap) -> u64 {
        count_in_map(&map.encode_to_vec(), 0)
    }

    #[test]
    fn every_nested_literal_is_counted() {
        let union = make::scalar_literal(crate::proto::core::scalar::Value::Union(Box::new(
            crate::proto::core::Union {
                value: Some(Box::new(make::integer(1))),
                r#type: None,
            },
        )));
        let map = make::literal_map([
            ("a", make::integer(1)),
            (
                "b",
                make::collection(vec![make::string("x"), make::map([("k", make::none())])]),
            ),
            ("c", union),
        ]);
        // a; b, its two items, the map's one value; c and its union's value.
        assert_eq!(count(&map), 7);
        assert_eq!(count(&LiteralMap::default()), 0);
    }

    #[test]
    fn a_million_integers_do_not_fit_where_one_large_string_does() {
        let ints = make::literal_map([(
            "x",
            make::collection((0..1_000_000).map(make::integer).collect()),
        )]);
        let wire = ints.encode_to_vec();
        let mut budget = Budget::new(104 << 20, "the memory limit");
        let err = budget
            .take(&wire, Message::LiteralMap)
            .expect_err("too many");
        assert_eq!(err.literals, 1_000_001);
        assert!(err.to_string().contains("1000001 literals"), "{err}");
        let one = make::literal_map([("s", make::string("y".repeat(10 << 20)))]);
        budget
            .take(&one.encode_to_vec(), Message::LiteralMap)
            .expect("10 MiB of one string fits in 104 MiB");
        assert!(budget.max_read() < 3 << 20, "{}", budget.max_read());
    }

    #[test]
    fn garbage_counts_what_it_can_and_never_panics() {
        for wire in [&[0xff_u8; 12][..], &[0x0a, 0x80], &[0x0a, 0x05, 0x12], &[]] {
            let _ = count_in_map(wire, 0);
            let _ = count_in_literal(wire, 0);
        }
    }
}
