//! FlyteIDL messages compiled from `proto/` with prost (see `build.rs`).
//!
//! Only the package `flyteidl.core` is generated here; the Google well-known
//! types (`Timestamp`, `Duration`, `Struct`) come from [`prost_types`].

/// `flyteidl.*` packages.
pub mod flyteidl {
    /// `flyteidl.core`: literals, types, interfaces, error documents.
    pub mod core {
        #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant, reason = "generated code")]
        include!(concat!(env!("OUT_DIR"), "/flyteidl.core.rs"));
    }
}

pub use flyteidl::core;
