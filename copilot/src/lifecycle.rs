//! The container state machine: created → started(pid) → exited(status).
