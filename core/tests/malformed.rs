//! The malformed-input corpus: inputs an operator or an attacker could hand
//! each parser (status lines, tokens, JWKS, PEM), each with the typed error
//! it must get and a piece of the message that names what was wrong. The
//! user cluster config has its own corpus in the CLI's tests.
#![cfg(all(feature = "aws-lc", feature = "rust-crypto"))]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ksa_core::crypto::{AwsLc, CryptoBackend, RustCrypto, SigningBackend as _};
use ksa_core::jwk::{JwkError, parse_jwks};
use ksa_core::key::{KeyError, parse_pem};
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::rotation::InvariantViolation;
use ksa_core::status::{StatusLineError, parse};
use ksa_core::token::{self, Claims, Expectations, ObjectRef, TokenError};
use ksa_core::{MAX_INPUT_BYTES, token::MAX_TOKEN_BYTES};

/// One malformed input: what it is, the input, whether the error is the
/// expected variant, and text the message must contain.
struct Case<E> {
    name: &'static str,
    input: String,
    expected: fn(&E) -> bool,
    says: &'static str,
}

fn case<E>(
    name: &'static str,
    input: impl Into<String>,
    expected: fn(&E) -> bool,
    says: &'static str,
) -> Case<E> {
    Case {
        name,
        input: input.into(),
        expected,
        says,
    }
}

/// Runs every case; returns how many ran. Collects every mismatch before
/// failing, so one run shows them all.
fn check<E, T>(cases: &[Case<E>], parse: impl Fn(&str) -> Result<T, E>) -> usize
where
    E: std::fmt::Debug + std::fmt::Display,
{
    let mut wrong = Vec::new();
    for case in cases {
        match parse(&case.input) {
            Ok(_) => wrong.push(format!("{}: accepted", case.name)),
            Err(error) if !(case.expected)(&error) => {
                wrong.push(format!("{}: wrong error {error:?}", case.name));
            }
            Err(error) if !error.to_string().contains(case.says) => wrong.push(format!(
                "{}: message {:?} does not say {:?}",
                case.name,
                error.to_string(),
                case.says
            )),
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    cases.len()
}

const PREFIX: &str = "State of KSASigningKeyRotation with KSASigningKeyVersion";

fn status(version: &str, status: &str, reason: &str, message: &str) -> String {
    format!("{PREFIX} {version} is - status: {status}, reason: {reason}, message:{message}")
}

const PROCESSED: &str = "KSASigningKeyRotationProcessedReason";
const COMPLETED: &str = "KSASigningKeyRotationCompleted";
const GOOD_MESSAGE: &str = r#"{"tokenVersion":1,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#;

fn status_cases() -> Vec<Case<StatusLineError>> {
    use StatusLineError as E;
    vec![
        case("empty", "", |e| matches!(e, E::MissingPrefix), "start with"),
        case(
            "prose",
            "the rotation is done",
            |e| matches!(e, E::MissingPrefix),
            "start with",
        ),
        case(
            "lowercase prefix",
            status("2", "False", PROCESSED, GOOD_MESSAGE).to_lowercase(),
            |e| matches!(e, E::MissingPrefix),
            "start with",
        ),
        case(
            "over the size cap",
            format!("{PREFIX} {}", "9".repeat(MAX_INPUT_BYTES)),
            |e| matches!(e, E::TooLarge { .. }),
            "at most 1048576",
        ),
        case(
            "version word",
            status("two", "False", PROCESSED, GOOD_MESSAGE),
            |e| matches!(e, E::BadKeyVersion(v) if v == "two"),
            "\"two\"",
        ),
        case(
            "version zero",
            status("0", "False", PROCESSED, GOOD_MESSAGE),
            |e| matches!(e, E::BadKeyVersion(_)),
            "positive whole number",
        ),
        case(
            "version negative",
            status("-2", "False", PROCESSED, GOOD_MESSAGE),
            |e| matches!(e, E::BadKeyVersion(_)),
            "positive whole number",
        ),
        case(
            "version overflows u64",
            status("18446744073709551616", "False", PROCESSED, GOOD_MESSAGE),
            |e| matches!(e, E::BadKeyVersion(_)),
            "18446744073709551616",
        ),
        case(
            "no separator",
            format!("{PREFIX} 2 status: False"),
            |e| matches!(e, E::Expected { .. }),
            "expected",
        ),
        case(
            "status word",
            status("2", "Maybe", PROCESSED, GOOD_MESSAGE),
            |e| matches!(e, E::BadStatus(s) if s == "Maybe"),
            "neither True nor False",
        ),
        case(
            "unknown reason",
            status("2", "False", "RotationFailed", GOOD_MESSAGE),
            |e| matches!(e, E::UnknownReason(_)),
            "RotationFailed",
        ),
        case(
            "True while processing",
            status("2", "True", PROCESSED, GOOD_MESSAGE),
            |e| matches!(e, E::StatusReasonMismatch { status: true, .. }),
            "does not fit reason",
        ),
        case(
            "False yet completed",
            status(
                "2",
                "False",
                COMPLETED,
                r#"{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#,
            ),
            |e| matches!(e, E::StatusReasonMismatch { status: false, .. }),
            "does not fit reason",
        ),
        case(
            "message not JSON",
            status("2", "False", PROCESSED, "pending"),
            |e| matches!(e, E::BadMessage(_)),
            "message is not",
        ),
        case(
            "message missing a member",
            status(
                "2",
                "False",
                PROCESSED,
                r#"{"tokenVersion":1,"publicKeyVersions":[1,2]}"#,
            ),
            |e| matches!(e, E::BadMessage(_)),
            "privateKeyVersion",
        ),
        case(
            "message numbers as strings",
            status(
                "2",
                "False",
                PROCESSED,
                r#"{"tokenVersion":"1","privateKeyVersion":2,"publicKeyVersions":[1,2]}"#,
            ),
            |e| matches!(e, E::BadMessage(_)),
            "message is not",
        ),
        case(
            "no public keys",
            status(
                "2",
                "False",
                PROCESSED,
                r#"{"tokenVersion":1,"privateKeyVersion":1,"publicKeyVersions":[]}"#,
            ),
            |e| matches!(e, E::Invariant(InvariantViolation::NoPublicKeys)),
            "invariant",
        ),
        case(
            "signing key not trusted",
            status(
                "2",
                "False",
                PROCESSED,
                r#"{"tokenVersion":1,"privateKeyVersion":2,"publicKeyVersions":[1]}"#,
            ),
            |e| matches!(e, E::Invariant(InvariantViolation::PrivateKeyNotTrusted(2))),
            "invariant",
        ),
        case(
            "public keys descending",
            status(
                "2",
                "False",
                PROCESSED,
                r#"{"tokenVersion":1,"privateKeyVersion":1,"publicKeyVersions":[2,1]}"#,
            ),
            |e| matches!(e, E::Invariant(InvariantViolation::NotAscending(_))),
            "invariant",
        ),
        case(
            "completed with an old token version",
            status(
                "2",
                "True",
                COMPLETED,
                r#"{"tokenVersion":1,"privateKeyVersion":2,"publicKeyVersions":[2]}"#,
            ),
            |e| matches!(e, E::NotCompleted { .. } | E::Invariant(_)),
            "tokenVersion 1",
        ),
        case(
            "text after the message",
            format!("{} and more", status("2", "False", PROCESSED, GOOD_MESSAGE)),
            |e| matches!(e, E::TrailingText(_)),
            "after the message",
        ),
    ]
}

#[test]
fn status_lines() {
    assert!(check(&status_cases(), parse) >= 20);
}

fn b64(json: &str) -> String {
    B64.encode(json)
}

/// A token with this header and these claims, and a signature of junk.
fn unsigned(header: &str, claims: &str) -> String {
    format!("{}.{}.{}", b64(header), b64(claims), B64.encode([7u8; 256]))
}

const RS256: &str = r#"{"alg":"RS256","kid":"k"}"#;
const CLAIMS: &str = r#"{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:a:b"}"#;

/// Decoding alone: the token's shape.
fn decode_cases() -> Vec<Case<TokenError>> {
    use TokenError as E;
    vec![
        case(
            "empty",
            "",
            |e| matches!(e, E::Malformed(_)),
            "malformed token",
        ),
        case(
            "one part",
            "abc",
            |e| matches!(e, E::Malformed(_)),
            "malformed token",
        ),
        case(
            "two parts",
            "abc.def",
            |e| matches!(e, E::Malformed(_)),
            "malformed token",
        ),
        case(
            "four parts",
            "a.b.c.d",
            |e| matches!(e, E::Malformed(_)),
            "malformed token",
        ),
        case(
            "over the size cap",
            "a".repeat(MAX_TOKEN_BYTES + 1),
            |e| matches!(e, E::TooLarge { .. }),
            "at most 65536",
        ),
        case(
            "header not base64url",
            format!("!!!.{}.c2ln", b64(CLAIMS)),
            |e| matches!(e, E::BadBase64 { part: "header" }),
            "header",
        ),
        case(
            "header with padding",
            format!("{}=.{}.c2ln", b64(RS256), b64(CLAIMS)),
            |e| matches!(e, E::BadBase64 { .. }),
            "base64url",
        ),
        case(
            "header not JSON",
            unsigned("alg=RS256", CLAIMS),
            |e| matches!(e, E::BadJson { part: "header", .. }),
            "not valid JSON",
        ),
        case(
            "header an array",
            unsigned("[1]", CLAIMS),
            |e| matches!(e, E::BadJson { part: "header", .. }),
            "header",
        ),
        case(
            "claims not JSON",
            unsigned(RS256, "sub=me"),
            |e| matches!(e, E::BadJson { .. }),
            "not valid JSON",
        ),
        case(
            "claims not base64url",
            format!("{}.*.c2ln", b64(RS256)),
            |e| matches!(e, E::BadBase64 { .. }),
            "base64url",
        ),
        case(
            "alg missing",
            unsigned(r#"{"kid":"k"}"#, CLAIMS),
            |e| matches!(e, E::BadJson { .. } | E::AlgorithmNotAllowed { .. }),
            "alg",
        ),
    ]
}

#[test]
fn tokens_that_do_not_decode() {
    assert!(check(&decode_cases(), |text| token::decode(text).map(drop)) >= 12);
}

/// Verification: well-formed tokens that must not be trusted.
#[test]
fn tokens_that_do_not_verify() {
    use TokenError as E;
    let aws = AwsLc::new();
    let pem = std::fs::read(format!(
        "{}/test_data/keys/rsa-pkcs1.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key");
    let keys = parse_pem(&pem).expect("parses");
    let key = keys.private_keys().next().expect("a private key");
    let signer = aws.signing_key(key).expect("loads");
    let set = KeySet::new([TrustedKey::derived(key.public_key().clone())], &aws).expect("key set");
    let account = ObjectRef {
        name: "b".into(),
        uid: "u".into(),
    };
    let mint = |claims: Claims| token::mint(&claims, signer.as_ref()).expect("mints");
    let bound = |iat: i64, nbf: i64, exp: i64| {
        let mut claims = Claims::legacy("a", &account, "b-token");
        claims.iss = Some("https://issuer.example".into());
        claims.aud = Some(vec!["api".into()]);
        claims.iat = Some(iat);
        claims.nbf = Some(nbf);
        claims.exp = Some(exp);
        mint(claims)
    };
    let good = bound(1000, 1000, 5000);
    let mut bytes = good.clone().into_bytes();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).expect("ascii");
    let unknown_kid = {
        let (_, rest) = good.split_once('.').expect("dots");
        format!(
            "{}.{rest}",
            b64(r#"{"alg":"RS256","kid":"someone-else","typ":"JWT"}"#)
        )
    };
    let es256 = {
        let (_, rest) = good.split_once('.').expect("dots");
        format!(
            "{}.{rest}",
            b64(&format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key.kid()))
        )
    };
    let expect = |at: i64, issuers: &[&str], audiences: &[&str]| Expectations {
        issuers: issuers.iter().map(|s| s.to_string()).collect(),
        audiences: audiences.iter().map(|s| s.to_string()).collect(),
        ..Expectations::at(at)
    };
    // Decoding shows any token, as an inspector must; verifying refuses
    // what cannot be trusted.
    type Expected = fn(&TokenError) -> bool;
    let cases: Vec<(&str, String, Expectations, Expected, &str)> = vec![
        (
            "alg none",
            unsigned(r#"{"alg":"none"}"#, CLAIMS),
            expect(2000, &[], &[]),
            |e| matches!(e, E::AlgorithmNotAllowed { alg } if alg == "none"),
            "\"none\" is not allowed",
        ),
        (
            "alg HS256",
            unsigned(r#"{"alg":"HS256"}"#, CLAIMS),
            expect(2000, &[], &[]),
            |e| matches!(e, E::AlgorithmNotAllowed { .. }),
            "HS256",
        ),
        (
            "critical extension",
            unsigned(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, CLAIMS),
            expect(2000, &[], &[]),
            |e| matches!(e, E::CriticalExtension),
            "critical",
        ),
        (
            "signature changed",
            tampered,
            expect(2000, &[], &[]),
            |e| matches!(e, E::BadSignature { .. }),
            "bad signature",
        ),
        (
            "unknown kid",
            unknown_kid,
            expect(2000, &[], &[]),
            |e| matches!(e, E::UnknownKid { .. }),
            "someone-else",
        ),
        (
            "kid of an RSA key, header ES256",
            es256,
            expect(2000, &[], &[]),
            |e| matches!(e, E::AlgorithmKeyMismatch { .. }),
            "ES256",
        ),
        (
            "expired",
            good.clone(),
            expect(9000, &[], &[]),
            |e| matches!(e, E::Expired { .. }),
            "expired at",
        ),
        (
            "not yet valid",
            bound(1000, 4000, 5000),
            expect(2000, &[], &[]),
            |e| matches!(e, E::NotYetValid { .. }),
            "not valid before",
        ),
        (
            "issued in the future",
            bound(4000, 1000, 5000),
            expect(2000, &[], &[]),
            |e| matches!(e, E::IssuedInFuture { .. }),
            "issued in the future",
        ),
        (
            "wrong issuer",
            good.clone(),
            expect(2000, &["https://other.example"], &[]),
            |e| matches!(e, E::WrongIssuer { .. }),
            "https://issuer.example",
        ),
        (
            "wrong audience",
            good.clone(),
            expect(2000, &[], &["vault"]),
            |e| matches!(e, E::WrongAudience { .. }),
            "vault",
        ),
    ];
    let mut wrong = Vec::new();
    for (name, jwt, expectations, expected, says) in &cases {
        match token::verify(jwt, &set, expectations) {
            Ok(_) => wrong.push(format!("{name}: accepted")),
            Err(e) if !expected(&e) || !e.to_string().contains(says) => {
                wrong.push(format!("{name}: {e:?} ({e})"));
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    token::verify(
        &good,
        &set,
        &expect(2000, &["https://issuer.example"], &["api"]),
    )
    .expect("the unaltered token verifies");
}

/// A 512-bit RSA modulus: far too small to trust.
const SMALL_N: &str =
    "tWFbjuNuLNl_dT7keyO4Bm3DCfXguDMq66ps1cigcqFYA5u_luYseulVWK7XeERXw94AHqZ3lzOD2ZYSop4zpw";

fn jwks_cases() -> Vec<Case<JwkError>> {
    use JwkError as E;
    let n = B64.encode([0xc5u8; 256]);
    let rsa = |members: &str| format!(r#"{{"keys":[{{"kty":"RSA","e":"AQAB",{members}}}]}}"#);
    vec![
        case("empty", "", |e| matches!(e, E::Json(_)), "not valid JSON"),
        case(
            "truncated",
            r#"{"keys":[{"kty":"RSA""#,
            |e| matches!(e, E::Json(_)),
            "not valid JSON",
        ),
        case(
            "an array",
            "[]",
            |e| matches!(e, E::NotAJwks),
            "\"keys\" array",
        ),
        case(
            "keys an object",
            r#"{"keys":{}}"#,
            |e| matches!(e, E::NotAJwks),
            "\"keys\" array",
        ),
        case(
            "no keys member",
            r#"{"kid":"a"}"#,
            |e| matches!(e, E::NotAJwks),
            "\"keys\" array",
        ),
        case(
            "key a number",
            r#"{"keys":[1]}"#,
            |e| matches!(e, E::NotAnObject { index: 0 }),
            "keys[0]",
        ),
        case(
            "RSA without n",
            rsa(r#""kid":"a""#),
            |e| matches!(e, E::MissingMember { member: "n", .. }),
            "\"n\"",
        ),
        case(
            "n not base64url",
            rsa(r#""n":"%%%""#),
            |e| matches!(e, E::BadMember { member: "n", .. }),
            "keys[0].n",
        ),
        case(
            "n a number",
            rsa(r#""n":12"#),
            |e| matches!(e, E::BadMember { member: "n", .. }),
            "keys[0].n",
        ),
        case(
            "private exponent",
            rsa(&format!(r#""n":"{n}","d":"AQAB""#)),
            |e| matches!(e, E::PrivateMember { member: "d", .. }),
            "private member \"d\"",
        ),
        case(
            "private prime",
            rsa(&format!(r#""n":"{n}","p":"AQAB""#)),
            |e| matches!(e, E::PrivateMember { member: "p", .. }),
            "\"p\"",
        ),
        case(
            "alg of another kind",
            rsa(&format!(r#""n":"{n}","alg":"ES256""#)),
            |e| matches!(e, E::AlgorithmMismatch { .. }),
            "ES256",
        ),
        case(
            "512-bit modulus",
            rsa(&format!(r#""n":"{SMALL_N}""#)),
            |e| {
                matches!(
                    e,
                    E::Key {
                        source: KeyError::RsaKeySize { bits: 512 },
                        ..
                    }
                )
            },
            "512 bits",
        ),
        case(
            "EC private key",
            r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}]}"#,
            |e| matches!(e, E::PrivateMember { member: "d", .. }),
            "\"d\"",
        ),
        case(
            "EC on P-384",
            format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-384","x":"{}","y":"{}"}}]}}"#,
                B64.encode([1u8; 48]),
                B64.encode([2u8; 48])
            ),
            |e| {
                matches!(
                    e,
                    E::Key {
                        source: KeyError::UnsupportedCurve { .. },
                        ..
                    } | E::BadMember { .. }
                )
            },
            "P-384",
        ),
        case(
            "over the size cap",
            format!(r#"{{"keys":[],"pad":"{}"}}"#, "a".repeat(MAX_INPUT_BYTES)),
            |e| matches!(e, E::TooLarge { .. }),
            "at most 1048576",
        ),
    ]
}

/// A JWKS that parses but names a point off the curve: the crypto backends
/// refuse to load it into a key set.
#[test]
fn jwks_key_the_backends_refuse() {
    let text = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}]}}"#,
        B64.encode([1u8; 32]),
        B64.encode([2u8; 32])
    );
    let keys = parse_jwks(&text).expect("well-formed");
    let aws = AwsLc::new();
    let backends: [&dyn CryptoBackend; 2] = [&aws, &RustCrypto];
    for backend in backends {
        let error = KeySet::new(keys.clone(), backend).expect_err("off the curve");
        assert!(
            matches!(error, KeyError::Rejected(_) | KeyError::BadEcPoint),
            "{error:?}"
        );
    }
}

#[test]
fn jwks_documents() {
    assert!(check(&jwks_cases(), parse_jwks) >= 15);
}

fn pem(label: &str, body: &str) -> String {
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

fn pem_cases() -> Vec<Case<KeyError>> {
    use KeyError as E;
    vec![
        case(
            "empty",
            "",
            |e| matches!(e, E::NoKeys { .. }),
            "no RSA or ECDSA key",
        ),
        case(
            "text",
            "this is not a key\n",
            |e| matches!(e, E::NoKeys { .. }),
            "no RSA or ECDSA key",
        ),
        case(
            "a certificate only",
            pem("CERTIFICATE", "AAAA"),
            |e| matches!(e, E::NoKeys { labels } if labels == &["CERTIFICATE"]),
            "CERTIFICATE",
        ),
        case(
            "body not base64",
            pem("PUBLIC KEY", "!!!!"),
            |e| matches!(e, E::Pem(_)),
            "malformed PEM",
        ),
        case(
            "no END line",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n",
            |e| matches!(e, E::Pem(_)),
            "malformed PEM",
        ),
        case(
            "END of another label",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            |e| matches!(e, E::Pem(_)),
            "malformed PEM",
        ),
        case(
            "public key DER junk",
            pem("PUBLIC KEY", "AAAA"),
            |e| matches!(e, E::Der { .. }),
            "malformed",
        ),
        case(
            "RSA private key DER junk",
            pem("RSA PRIVATE KEY", "MAMCAQA="),
            |e| matches!(e, E::Der { .. }),
            "malformed",
        ),
        case(
            "PKCS#8 DER junk",
            pem("PRIVATE KEY", "MAA="),
            |e| matches!(e, E::Der { .. }),
            "malformed",
        ),
        case(
            "Ed25519 public key",
            pem(
                "PUBLIC KEY",
                "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=",
            ),
            |e| matches!(e, E::UnsupportedKeyType { .. }),
            "1.3.101.112",
        ),
        case(
            "P-384 public key",
            pem(
                "PUBLIC KEY",
                "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE4b12I+yS6o0L1S706deqkh2iayrjEK2m\nWn/3sXUsAIfkbriT8YSIoXz3m4JdRKCwvvJODHYgX2yj3Pc7rMW+ARRLALcexfBO\nBBU/WBwn6vNxxXyY4eSXCDMwGmsNEgYk",
            ),
            |e| matches!(e, E::UnsupportedCurve { .. }),
            "P-256",
        ),
        case(
            "512-bit RSA public key",
            pem(
                "PUBLIC KEY",
                "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBANdjlErxofXCTSbN+YhfcjtFfiloHM4J\nEguMPxuXqwUAnhcH/WkdnvxnkpbnDtoSlbIy6uA1Bphw2iShUNqpM28CAwEAAQ==",
            ),
            |e| matches!(e, E::RsaKeySize { bits: 512 }),
            "512 bits",
        ),
        case(
            "over the size cap",
            "a".repeat(MAX_INPUT_BYTES + 1),
            |e| matches!(e, E::TooLarge { .. }),
            "at most 1048576",
        ),
    ]
}

#[test]
fn pem_files() {
    assert!(check(&pem_cases(), |text| parse_pem(text.as_bytes())) >= 13);
}

#[test]
fn the_corpus_has_at_least_fifty_inputs() {
    // The verification cases (11) and the key the backends refuse (1) are
    // counted by hand: they need keys.
    let total = status_cases().len()
        + decode_cases().len()
        + 11
        + 1
        + jwks_cases().len()
        + pem_cases().len();
    assert!(total >= 50, "{total}");
}
