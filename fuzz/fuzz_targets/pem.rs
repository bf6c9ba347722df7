//! PEM key parsing: never panics, and a key it reads writes back as PEM
//! that reads as the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(keys) = ksa_core::key::parse_pem(bytes) {
        for key in keys.public_keys() {
            let again = ksa_core::key::parse_pem(key.to_pem().as_bytes()).expect("own PEM parses");
            assert_eq!(again.public_keys().next(), Some(key));
        }
    }
});
