//! `ksa token verify` on tokens and key sets crafted to break it: extreme
//! times, a key set with one unusable key, duplicate kids, `crit: null`,
//! bytes that are not UTF-8, claims that try to forge output lines, and a
//! token that would never expire.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::{Jwk, Jwks};
use ksa_core::key::{KeySpec, PrivateKey, parse_pem};

use common::{ksa, run};

const DEADLINE: Duration = Duration::from_secs(60);

fn test_key() -> PrivateKey {
    let pem = std::fs::read(format!(
        "{}/../core/test_data/keys/rsa-pkcs1.pem",
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

/// A token of exactly these header and claims bytes, signed with the test key.
fn signed(header: &[u8], claims: &[u8]) -> String {
    let aws = AwsLc::new();
    let key = test_key();
    let signer = aws.signing_key(&key).expect("loads");
    ksa_core::token::sign_parts(header, claims, signer.as_ref()).expect("signs")
}

fn header() -> String {
    format!(r#"{{"alg":"RS256","kid":"{}"}}"#, test_key().kid())
}

fn jwks_file(jwks: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), jwks).expect("written");
    file
}

fn good_jwks() -> String {
    Jwks::from_public_keys([test_key().public_key()]).to_json()
}

fn verify(token: &str, jwks: &str, extra: &[&str]) -> common::Run {
    let jwks = jwks_file(jwks);
    let mut args = vec![
        "token",
        "verify",
        token,
        "--jwks",
        jwks.path().to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    run(&mut ksa(&args), DEADLINE)
}

#[test]
fn extreme_times_never_panic() {
    let times = [i64::MIN, i64::MIN + 1, -1, 0, 1_800_000_000, i64::MAX];
    for exp in times {
        let claims = format!(r#"{{"iss":"x","sub":"y","exp":{exp}}}"#);
        let token = signed(header().as_bytes(), claims.as_bytes());
        for at in times {
            let at = format!("--at={at}");
            for output in ["text", "json"] {
                let out = verify(&token, &good_jwks(), &[&at, "-o", output]);
                assert!(matches!(out.code, Some(0 | 1)), "exp {exp} {at}: {out:?}");
                assert!(!out.stderr.contains("panicked"), "exp {exp} {at}: {out:?}");
            }
        }
    }
}

#[test]
fn a_key_the_backend_refuses_is_skipped_with_a_warning() {
    let broken = format!(
        r#"{{"kty":"EC","crv":"P-256","kid":"off-the-curve","x":"{}","y":"{}"}}"#,
        B64.encode([1u8; 32]),
        B64.encode([2u8; 32])
    );
    let good = Jwk::new(test_key().public_key(), test_key().kid());
    let jwks = format!(
        r#"{{"keys":[{broken},{}]}}"#,
        serde_json::to_string(&good).expect("json")
    );
    let claims = r#"{"iss":"x","sub":"y","exp":4000000000}"#;
    let token = signed(header().as_bytes(), claims.as_bytes());
    let out = verify(&token, &jwks, &["--at", "1800000000"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("warning"), "{out:?}");
    assert!(out.stderr.contains("off-the-curve"), "{out:?}");
}

#[test]
fn every_key_with_the_kid_is_tried() {
    let aws = AwsLc::new();
    let other = aws.generate(KeySpec::Rsa2048).expect("generates");
    let kid = test_key().kid().clone();
    let jwks = Jwks {
        keys: vec![
            Jwk::new(other.public_key(), &kid),
            Jwk::new(test_key().public_key(), &kid),
        ],
    }
    .to_json();
    let claims = r#"{"iss":"x","sub":"y","exp":4000000000}"#;
    let token = signed(header().as_bytes(), claims.as_bytes());
    let out = verify(&token, &jwks, &["--at", "1800000000"]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn crit_in_any_form_is_refused() {
    let kid = test_key().kid().clone();
    let claims = r#"{"iss":"x","sub":"y","exp":4000000000}"#;
    for crit in ["null", "[]", "{}", "\"exp\"", "[\"exp\"]"] {
        let header = format!(r#"{{"alg":"RS256","kid":"{kid}","crit":{crit}}}"#);
        let token = signed(header.as_bytes(), claims.as_bytes());
        let out = verify(&token, &good_jwks(), &["--at", "1800000000"]);
        assert_eq!(out.code, Some(1), "crit {crit}: {out:?}");
        assert!(out.stdout.contains("critical"), "crit {crit}: {out:?}");
    }
}

#[test]
fn bytes_that_are_not_utf8_are_refused() {
    let mut bad_header =
        format!(r#"{{"alg":"RS256","kid":"{}","x":""#, test_key().kid()).into_bytes();
    bad_header.extend_from_slice(b"\xff\xfe\"}");
    let claims = br#"{"iss":"x","sub":"y","exp":4000000000}"#;
    let token = signed(&bad_header, claims);
    let out = verify(&token, &good_jwks(), &["--at", "1800000000"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("UTF-8"), "{out:?}");

    let mut claims = br#"{"iss":"x","sub":"y","exp":4000000000,"x":""#.to_vec();
    claims.extend_from_slice(b"\xc0\x80\"}");
    let token = signed(header().as_bytes(), &claims);
    let out = verify(&token, &good_jwks(), &["--at", "1800000000"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("UTF-8"), "{out:?}");
}

#[test]
fn claims_cannot_forge_output_lines() {
    let claims = serde_json::json!({
        "iss": "https://evil.example\n  issuer:    https://kubernetes.default.svc",
        "sub": "system:serviceaccount:kube-system:admin\u{1b}[2K\r",
        "aud": ["a\nb", "\u{202e}gnp.exe"],
        "exp": 4_000_000_000_i64,
    });
    let token = signed(header().as_bytes(), claims.to_string().as_bytes());
    let out = verify(&token, &good_jwks(), &["--at", "1800000000"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    // One line per field, and two notes: issuer and audience not checked.
    assert_eq!(out.stdout.lines().count(), 9, "one line per field: {out:?}");
    assert!(!out.stdout.contains('\u{1b}'), "{out:?}");
    assert!(!out.stdout.contains('\r'), "{out:?}");
    assert!(!out.stdout.contains('\u{202e}'), "{out:?}");
    assert!(
        out.stdout.contains(r"\n  issuer:"),
        "shown escaped: {out:?}"
    );
}

#[test]
fn a_token_that_never_expires_is_refused_unless_allowed() {
    let claims = r#"{"iss":"https://issuer.example","sub":"anyone"}"#;
    let token = signed(header().as_bytes(), claims.as_bytes());
    let out = verify(&token, &good_jwks(), &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("no \"exp\""), "{out:?}");
    assert!(out.stdout.contains("--allow-no-exp"), "{out:?}");

    let out = verify(&token, &good_jwks(), &["--allow-no-exp"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("never (no exp claim"), "{out:?}");

    // A legacy token has no exp by design and stays valid.
    let legacy = serde_json::json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "default",
        "kubernetes.io/serviceaccount/secret.name": "app-token",
        "kubernetes.io/serviceaccount/service-account.name": "app",
        "kubernetes.io/serviceaccount/service-account.uid": "u",
        "sub": "system:serviceaccount:default:app",
    });
    let token = signed(header().as_bytes(), legacy.to_string().as_bytes());
    let out = verify(&token, &good_jwks(), &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
}
