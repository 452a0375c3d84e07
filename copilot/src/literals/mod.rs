//! FlyteIDL literals ↔ local files, both directions.
pub mod names;
pub mod values;
