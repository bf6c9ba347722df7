//! JWKS parsing, then loading what parsed into a key set: never panics.
#![no_main]

use ksa_core::crypto::RustCrypto;
use ksa_core::keyset::KeySet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(keys) = ksa_core::jwk::parse_jwks(text) {
        let _ = KeySet::new(keys, &RustCrypto);
    }
});
