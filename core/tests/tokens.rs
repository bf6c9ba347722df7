//! Keys and tokens across both crypto backends, checked against independent
//! oracles: OpenSSL's key ids and the jsonwebtoken crate.

use ksa_core::crypto::{AwsLc, CryptoBackend, RustCrypto, SigningBackend as _};
use ksa_core::jwk::{JwkError, Jwks, parse_jwks};
use ksa_core::key::{Algorithm, KeyError, KeySpec, PrivateKeyFormat, parse_pem};
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{self, Claims, Expectations, ObjectRef, TokenError, TokenKind};
use serde_json::Value;

fn test_data(name: &str) -> Vec<u8> {
    let path = format!("{}/test_data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn kid_of(name: &str) -> String {
    String::from_utf8(test_data(name))
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn kid_matches_openssl_for_every_encoding() {
    for (files, kid) in [
        (
            ["rsa-pkcs1.pem", "rsa-pkcs8.pem", "rsa-pub.pem"],
            kid_of("keys/rsa.kid"),
        ),
        (
            ["ec-sec1.pem", "ec-pkcs8.pem", "ec-pub.pem"],
            kid_of("keys/ec.kid"),
        ),
    ] {
        for file in files {
            let keys = parse_pem(&test_data(&format!("keys/{file}"))).expect(file);
            let public: Vec<_> = keys.public_keys().collect();
            assert_eq!(public.len(), 1, "{file}");
            assert_eq!(public[0].kid().as_str(), kid, "{file}");
        }
    }
}

#[test]
fn several_blocks_in_one_file_and_non_key_blocks_skipped() {
    let mut file = test_data("keys/rsa-pub.pem");
    file.extend(b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n");
    file.extend(test_data("keys/ec-sec1.pem"));
    let keys = parse_pem(&file).expect("parses");
    let algorithms: Vec<_> = keys.public_keys().map(|k| k.algorithm()).collect();
    assert_eq!(algorithms, [Algorithm::RS256, Algorithm::ES256]);
    assert_eq!(keys.skipped_labels, ["EC PARAMETERS"]);
    assert_eq!(keys.private_keys().count(), 1);
}

#[test]
fn bad_pem_gets_typed_errors() {
    assert!(matches!(parse_pem(b""), Err(KeyError::NoKeys { .. })));
    assert!(matches!(
        parse_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        Err(KeyError::NoKeys { labels }) if labels == ["CERTIFICATE"]
    ));
    assert!(matches!(
        parse_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        Err(KeyError::Der { .. })
    ));
    assert!(matches!(
        parse_pem(b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n"),
        Err(KeyError::Pem(_))
    ));
    let big = vec![b'a'; ksa_core::MAX_INPUT_BYTES + 1];
    assert!(matches!(parse_pem(&big), Err(KeyError::TooLarge { .. })));
}

#[test]
fn private_keys_round_trip_in_their_format_and_never_show_in_debug() {
    let pem = test_data("keys/rsa-pkcs1.pem");
    let keys = parse_pem(&pem).expect("parses");
    let key = keys.private_keys().next().expect("a private key");
    assert_eq!(key.format(), PrivateKeyFormat::Pkcs1);
    assert_eq!(
        key.to_pem().as_str(),
        String::from_utf8(pem).expect("utf-8")
    );
    let debug = format!("{key:?}");
    assert!(
        !debug.contains("MII") && !debug.contains("secret"),
        "{debug}"
    );
}

#[test]
fn generated_keys_sign_tokens_both_backends_verify() {
    let aws = AwsLc::new();
    let backends: [&dyn CryptoBackend; 2] = [&aws, &RustCrypto];
    for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::EcP256] {
        let key = aws.generate(spec).expect("generates");
        assert_eq!(key.algorithm(), spec.algorithm());
        let reparsed = parse_pem(key.to_pem().as_bytes()).expect("own PEM parses");
        assert_eq!(reparsed.public_keys().next(), Some(key.public_key()));
        let signer = aws.signing_key(&key).expect("loads");
        let claims = Claims::legacy(
            "default",
            &ObjectRef {
                name: "sa".into(),
                uid: "u".into(),
            },
            "sa-token",
        );
        let jwt = token::mint(&claims, signer.as_ref()).expect("mints");
        for backend in backends {
            let set = KeySet::new(
                [TrustedKey::derived(key.public_key().clone())
                    .with_version(ksa_core::KeyVersion::new(7))],
                backend,
            )
            .expect("loads");
            let verified = token::verify(&jwt, &set, &Expectations::at(0)).expect("verifies");
            assert_eq!(verified.kid, *key.kid());
            assert_eq!(verified.key_version, Some(ksa_core::KeyVersion::new(7)));
            assert_eq!(verified.kind(), TokenKind::Legacy);
        }
    }
}

#[test]
fn jsonwebtoken_accepts_our_tokens_and_we_accept_its() {
    use jsonwebtoken::{Algorithm as JwtAlg, DecodingKey, EncodingKey, Header, Validation};
    let aws = AwsLc::new();
    let keys = parse_pem(&test_data("keys/rsa-pkcs8.pem")).expect("parses");
    let key = keys.private_keys().next().expect("private");
    let claims = serde_json::json!({"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:a:b",
        "kubernetes.io/serviceaccount/namespace": "a", "kubernetes.io/serviceaccount/service-account.name": "b"});
    let claims: Claims = serde_json::from_value(claims).expect("claims");
    let ours = token::mint(&claims, aws.signing_key(key).expect("loads").as_ref()).expect("mints");

    let decoding = DecodingKey::from_rsa_pem(&test_data("keys/rsa-pub.pem")).expect("pem");
    let mut validation = Validation::new(JwtAlg::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let theirs = jsonwebtoken::decode::<Value>(&ours, &decoding, &validation)
        .expect("jsonwebtoken verifies ours");
    assert_eq!(theirs.header.kid.as_deref(), Some(key.kid().as_str()));

    let encoding = EncodingKey::from_rsa_pem(&test_data("keys/rsa-pkcs1.pem")).expect("pem");
    let mut header = Header::new(JwtAlg::RS256);
    header.kid = Some(key.kid().to_string());
    let minted = jsonwebtoken::encode(&header, &claims, &encoding).expect("encodes");
    for backend in [&aws as &dyn CryptoBackend, &RustCrypto] {
        let set =
            KeySet::new([TrustedKey::derived(key.public_key().clone())], backend).expect("set");
        token::verify(&minted, &set, &Expectations::at(0)).expect("we verify jsonwebtoken's token");
    }
}

#[test]
fn shared_vectors_pass_on_both_backends() {
    let document: Value = serde_json::from_slice(&test_data("vectors.json")).expect("json");
    let trusted = parse_jwks(&document["jwks"].to_string()).expect("jwks");
    let aws = AwsLc::new();
    let mut checked = 0;
    for backend in [&aws as &dyn CryptoBackend, &RustCrypto] {
        let set = KeySet::new(trusted.clone(), backend).expect("loads");
        for vector in document["vectors"].as_array().expect("vectors") {
            let strings = |field: &str| -> Vec<String> {
                vector[field]
                    .as_array()
                    .expect(field)
                    .iter()
                    .map(|v| v.as_str().expect("str").to_owned())
                    .collect()
            };
            let expect = Expectations {
                issuers: strings("issuers"),
                audiences: strings("audiences"),
                at: vector["at"].as_i64().expect("at"),
                leeway_seconds: token::DEFAULT_LEEWAY_SECONDS,
            };
            let name = vector["name"].as_str().expect("name");
            let outcome = token::verify(vector["token"].as_str().expect("token"), &set, &expect);
            match (vector["expect"].as_str().expect("expect"), outcome) {
                ("ok", Ok(verified)) => {
                    assert_eq!(
                        Some(verified.kid.as_str()),
                        vector["kid"].as_str(),
                        "{name}"
                    );
                }
                (expected, Err(error)) => assert_eq!(error.kind(), expected, "{name}: {error}"),
                (expected, Ok(_)) => panic!("{name}: expected {expected}, verified"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 26, "only {checked} vectors checked");
}

#[test]
fn header_algorithm_must_fit_the_key() {
    let aws = AwsLc::new();
    let ec = parse_pem(&test_data("keys/ec-sec1.pem")).expect("ec");
    let ec = ec.private_keys().next().expect("private");
    let rsa = parse_pem(&test_data("keys/rsa-pkcs8.pem")).expect("rsa");
    let rsa = rsa.private_keys().next().expect("private");
    // An RS256 token whose kid names the EC key.
    let header =
        serde_json::to_vec(&serde_json::json!({"alg": "RS256", "kid": ec.kid()})).expect("json");
    let jwt = token::sign_parts(&header, b"{}", aws.signing_key(rsa).expect("rsa").as_ref())
        .expect("signs");
    let set = KeySet::new([TrustedKey::derived(ec.public_key().clone())], &aws).expect("set");
    assert!(matches!(
        token::verify(&jwt, &set, &Expectations::at(0)),
        Err(TokenError::AlgorithmKeyMismatch {
            alg: Algorithm::RS256,
            key_alg: Algorithm::ES256,
            ..
        })
    ));
}

#[test]
fn jwks_round_trips_and_refuses_private_members() {
    let keys = parse_pem(&test_data("keys/rsa-pub.pem")).expect("parses");
    let public: Vec<_> = keys.public_keys().cloned().collect();
    let json = Jwks::from_public_keys(&public).to_json();
    assert!(
        json.starts_with(r#"{"keys":[{"use":"sig","kty":"RSA","kid":""#),
        "{json}"
    );
    let back = parse_jwks(&json).expect("parses");
    assert_eq!(back[0].key, public[0]);
    assert_eq!(back[0].kid, *public[0].kid());

    let leaked = json.replace(r#""use":"sig""#, r#""use":"sig","d":"AAAA""#);
    assert_eq!(
        parse_jwks(&leaked),
        Err(JwkError::PrivateMember {
            index: 0,
            member: "d"
        })
    );
    assert_eq!(parse_jwks("[]"), Err(JwkError::NotAJwks));
    let skipped = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"},{"kty":"RSA","use":"enc","n":"AA","e":"AQAB"}]}"#;
    assert_eq!(parse_jwks(skipped).expect("skips").len(), 0);
    assert!(matches!(
        parse_jwks(r#"{"keys":[{"kty":"RSA","e":"AQAB"}]}"#),
        Err(JwkError::MissingMember {
            index: 0,
            member: "n",
            ..
        })
    ));
    assert!(matches!(
        parse_jwks(r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#),
        Err(JwkError::Key {
            index: 0,
            source: KeyError::RsaKeySize { .. }
        })
    ));
}
