//! Verification at the edges: tokens and key sets crafted to slip past the
//! verifier or to crash it. Each case gets its exact error variant.
#![cfg(all(feature = "aws-lc", feature = "rust-crypto"))]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ksa_core::crypto::{AwsLc, CryptoBackend, RustCrypto, SigningBackend as _, SigningKey};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::{KeyError, KeySpec, PrivateKey, parse_pem};
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{self, Expectations, NoExpiry, TokenError};

fn test_key() -> PrivateKey {
    let pem = std::fs::read(format!(
        "{}/test_data/keys/rsa-pkcs1.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key");
    parse_pem(&pem)
        .expect("parses")
        .private_keys()
        .next()
        .expect("a private key")
        .clone()
}

fn signer() -> Box<dyn SigningKey> {
    AwsLc::new().signing_key(&test_key()).expect("loads")
}

fn signed(header: &[u8], claims: &[u8]) -> String {
    token::sign_parts(header, claims, signer().as_ref()).expect("signs")
}

fn header() -> String {
    format!(r#"{{"alg":"RS256","kid":"{}"}}"#, test_key().kid())
}

fn backends() -> [Box<dyn CryptoBackend>; 2] {
    [Box::new(AwsLc::new()), Box::new(RustCrypto)]
}

fn key_set(backend: &dyn CryptoBackend) -> KeySet {
    KeySet::new(
        [TrustedKey::derived(test_key().public_key().clone())],
        backend,
    )
    .expect("set")
}

const CLAIMS: &str = r#"{"iss":"x","sub":"y","exp":4000000000}"#;

#[test]
fn crit_in_any_form_is_refused() {
    for backend in backends() {
        let set = key_set(backend.as_ref());
        for crit in ["null", "[]", "{}", "\"exp\"", "[\"exp\"]", "0", "false"] {
            let header = format!(
                r#"{{"alg":"RS256","kid":"{}","crit":{crit}}}"#,
                test_key().kid()
            );
            let token = signed(header.as_bytes(), CLAIMS.as_bytes());
            assert_eq!(
                token::verify(&token, &set, &Expectations::at(0)).map(|_| ()),
                Err(TokenError::CriticalExtension),
                "crit {crit}"
            );
        }
    }
}

#[test]
fn header_and_claims_must_be_utf8() {
    let set = key_set(&AwsLc::new());
    let mut bad_header =
        format!(r#"{{"alg":"RS256","kid":"{}","x":""#, test_key().kid()).into_bytes();
    bad_header.extend_from_slice(b"\xff\"}");
    let token = signed(&bad_header, CLAIMS.as_bytes());
    assert_eq!(
        token::decode(&token).map(|_| ()),
        Err(TokenError::NotUtf8 { part: "header" })
    );
    assert_eq!(
        token::verify(&token, &set, &Expectations::at(0)).map(|_| ()),
        Err(TokenError::NotUtf8 { part: "header" })
    );
    let mut bad_claims = br#"{"iss":"x","sub":"y","exp":4000000000,"x":""#.to_vec();
    bad_claims.extend_from_slice(b"\xed\xa0\x80\"}");
    let token = signed(header().as_bytes(), &bad_claims);
    assert_eq!(
        token::verify(&token, &set, &Expectations::at(0)).map(|_| ()),
        Err(TokenError::NotUtf8 { part: "claims" })
    );
}

#[test]
fn every_key_with_the_kid_is_tried() {
    let aws = AwsLc::new();
    let other = aws.generate(KeySpec::Rsa2048).expect("generates");
    let ec = aws.generate(KeySpec::EcP256).expect("generates");
    let kid = test_key().kid().clone();
    let token = signed(header().as_bytes(), CLAIMS.as_bytes());
    for backend in backends() {
        let set = KeySet::new(
            [
                TrustedKey::new(kid.clone(), ec.public_key().clone()),
                TrustedKey::new(kid.clone(), other.public_key().clone()),
                TrustedKey::new(kid.clone(), test_key().public_key().clone()),
            ],
            backend.as_ref(),
        )
        .expect("set");
        let verified = token::verify(&token, &set, &Expectations::at(0)).expect("verifies");
        assert_eq!(verified.kid, kid);
        // Two RSA keys with the kid, neither the signer: both are tried.
        let wrong = KeySet::new(
            [
                TrustedKey::new(kid.clone(), other.public_key().clone()),
                TrustedKey::new(kid.clone(), other.public_key().clone()),
            ],
            backend.as_ref(),
        )
        .expect("set");
        assert_eq!(
            token::verify(&token, &wrong, &Expectations::at(0)).map(|_| ()),
            Err(TokenError::BadSignature { tried: 2 })
        );
    }
}

#[test]
fn extreme_times_never_panic() {
    let times = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
    let set = key_set(&AwsLc::new());
    for exp in times {
        for nbf in [None, Some(i64::MIN), Some(i64::MAX)] {
            let mut claims = serde_json::json!({"iss": "x", "sub": "y", "exp": exp, "iat": exp});
            if let Some(nbf) = nbf {
                claims["nbf"] = nbf.into();
            }
            let token = signed(header().as_bytes(), claims.to_string().as_bytes());
            for at in times {
                for leeway_seconds in [i64::MIN, -1, 0, 60, i64::MAX] {
                    let expect = Expectations {
                        leeway_seconds,
                        ..Expectations::at(at)
                    };
                    let outcome = token::verify(&token, &set, &expect);
                    if let Err(error) = outcome {
                        let _ = error.to_string();
                    }
                }
            }
        }
    }
}

#[test]
fn a_token_that_never_expires_is_refused_unless_allowed() {
    let set = key_set(&AwsLc::new());
    let token = signed(header().as_bytes(), br#"{"iss":"x","sub":"y"}"#);
    assert_eq!(
        token::verify(&token, &set, &Expectations::at(0)).map(|_| ()),
        Err(TokenError::NoExpiry)
    );
    assert_eq!(TokenError::NoExpiry.kind(), "no_expiry");
    let verified =
        token::verify_with(&token, &set, &Expectations::at(0), NoExpiry::Allow).expect("allowed");
    assert_eq!(verified.claims.exp, None);
}

#[test]
fn a_key_the_backend_refuses_is_skipped_and_named() {
    let text = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"off-the-curve","x":"{}","y":"{}"}},{}]}}"#,
        B64.encode([1u8; 32]),
        B64.encode([2u8; 32]),
        serde_json::to_string(&ksa_core::jwk::Jwk::new(
            test_key().public_key(),
            test_key().kid()
        ))
        .expect("json")
    );
    let keys = parse_jwks(&text).expect("well-formed");
    let token = signed(header().as_bytes(), CLAIMS.as_bytes());
    for backend in backends() {
        let (set, refused) = KeySet::load_usable(keys.clone(), backend.as_ref());
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].kid.as_str(), "off-the-curve");
        assert!(
            matches!(
                refused[0].error,
                KeyError::Rejected(_) | KeyError::BadEcPoint
            ),
            "{:?}",
            refused[0].error
        );
        token::verify(&token, &set, &Expectations::at(0)).expect("the usable key verifies");
    }
}
