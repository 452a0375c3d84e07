//! An outputs folder → output literals and uploads (see `copilot_fuzz::upload_mapping`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| copilot_fuzz::upload_mapping(data));
