//! `inputs.pb` bytes → budget, decoder, download planner (see `copilot_fuzz::download_plan`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| copilot_fuzz::download_plan(data));
