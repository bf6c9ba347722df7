//! Every parser returns, without panicking, on any input: arbitrary text
//! and valid inputs with bytes changed, cut or repeated. The same
//! properties run under libFuzzer in `fuzz/` (`cargo xtask fuzz`); these run
//! on stable in every test run. Tokens have their own in
//! `token_properties.rs`.

use ksa_core::issuer::{self, Issuer};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::parse_pem;
use ksa_core::status;
use proptest::prelude::*;

const ISSUER_STATUS: &str = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: False, reason: KSAIssuerRotationProcessedReason, message:{"tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}"#;
const STATUS: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":1,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#;

fn test_data(name: &str) -> Vec<u8> {
    let path = format!("{}/test_data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A JWKS of the test keys, as the API server serves it.
fn jwks() -> String {
    let mut keys = Vec::new();
    for file in ["keys/rsa-pub.pem", "keys/ec-pub.pem"] {
        let pem = parse_pem(&test_data(file)).expect("test key");
        keys.extend(pem.public_keys().cloned());
    }
    ksa_core::jwk::Jwks::from_public_keys(&keys).to_json()
}

/// `valid` changed: a byte replaced, a range cut out, a range repeated.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (0..3u8, 0..len, 0..len, any::<u8>(), 1..8usize).prop_map(move |(how, a, b, byte, times)| {
        let (low, high) = (a.min(b), a.max(b));
        let mut out = valid.clone();
        match how {
            0 => out[a] = byte,
            1 => {
                out.drain(low..high);
            }
            _ => {
                let piece = out[low..high].to_vec();
                for _ in 0..times {
                    out.splice(high..high, piece.iter().copied());
                }
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn status_lines_never_panic(text in "\\PC{0,400}", changed in mutated(STATUS.as_bytes().to_vec())) {
        let _ = status::parse(&text);
        let _ = status::parse(&String::from_utf8_lossy(&changed));
    }

    #[test]
    fn issuer_status_lines_and_issuers_never_panic(
        text in "\\PC{0,400}",
        changed in mutated(ISSUER_STATUS.as_bytes().to_vec()),
    ) {
        let changed = String::from_utf8_lossy(&changed);
        for input in [text.as_str(), &changed] {
            if let Ok(line) = issuer::parse(input) {
                // What parses prints back to what parses the same.
                prop_assert_eq!(issuer::parse(&line.to_string()), Ok(line));
            }
            let _ = Issuer::target(input);
        }
    }

    #[test]
    fn jwks_never_panics(text in "\\PC{0,400}", changed in mutated(jwks().into_bytes())) {
        let _ = parse_jwks(&text);
        let _ = parse_jwks(&String::from_utf8_lossy(&changed));
    }

    #[test]
    fn pem_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        private in mutated(test_data("keys/rsa-pkcs1.pem")),
        public in mutated(test_data("keys/ec-pub.pem")),
        pkcs8 in mutated(test_data("keys/ec-pkcs8.pem")),
    ) {
        for input in [&bytes, &private, &public, &pkcs8] {
            let _ = parse_pem(input);
        }
    }
}
