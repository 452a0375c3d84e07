#![no_std]
// This file exists so that `copilot`'s build.rs can depend on this crate and be
// rebuilt when it changes; the programs are in the `copilot` binary target.
