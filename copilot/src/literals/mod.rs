//! FlyteIDL literals ↔ local files, both directions.
