//! Loading and attaching the eBPF programs; the ring-buffer consumer.
