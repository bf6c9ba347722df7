//! Token decoding and verification against the test keys (the seeds are
//! tokens they signed): never panics, and what verifies decodes to the
//! same claims.
#![no_main]

use std::sync::LazyLock;

use ksa_core::crypto::RustCrypto;
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{self, Expectations};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let mut trusted = Vec::new();
    for pem in [
        include_bytes!("../../core/test_data/keys/rsa-pub.pem").as_slice(),
        include_bytes!("../../core/test_data/keys/ec-pub.pem").as_slice(),
    ] {
        let keys = ksa_core::key::parse_pem(pem).expect("test key");
        trusted.extend(keys.public_keys().cloned().map(TrustedKey::derived));
    }
    KeySet::new(trusted, &RustCrypto).expect("test keys load")
});

fuzz_target!(|text: &str| {
    let decoded = token::decode(text);
    if let Ok(verified) = token::verify(text, &KEYS, &Expectations::at(1_700_000_000)) {
        let decoded = decoded.expect("a verified token decodes");
        assert_eq!(decoded.claims, verified.claims);
    }
});
