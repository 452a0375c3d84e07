//! FlyteIDL messages compiled from `proto/` with prost.
