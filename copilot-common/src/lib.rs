//! Types shared by the eBPF programs (`copilot-ebpf`) and userspace (`copilot`).
//!
//! Everything here is `#[repr(C)]` with explicit padding, so both sides agree on
//! the layout byte for byte. The `user` feature adds `aya::Pod` so userspace can
//! read the structs out of maps and ring buffers and write them as globals.
#![no_std]

pub mod config;
pub mod event;
