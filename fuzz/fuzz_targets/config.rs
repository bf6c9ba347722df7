//! The user cluster config: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = ksa_cli::config::UserClusterConfig::parse(text);
});
