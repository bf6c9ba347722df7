//! Writes the shared verification vectors to stdout:
//! `cargo run -p ksa-core --example vectors > core/test_data/vectors.json`.
//!
//! Native tests (both backends) and the wasm tests in Chromium check every
//! vector against the same expected outcome.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::Jwks;
use ksa_core::key::parse_pem;
use ksa_core::token::{BoundToken, Claims, ObjectRef, mint, sign_parts};
use serde_json::json;

const AT: i64 = 1_800_000_000;
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn main() -> anyhow::Result<()> {
    let backend = AwsLc::new();
    let rsa = parse_pem(include_bytes!("../test_data/keys/rsa-pkcs1.pem"))?;
    let ec = parse_pem(include_bytes!("../test_data/keys/ec-sec1.pem"))?;
    let rsa = rsa
        .private_keys()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no RSA key"))?;
    let ec = ec
        .private_keys()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no EC key"))?;
    let rsa_signer = backend.signing_key(rsa)?;
    let ec_signer = backend.signing_key(ec)?;
    let other = backend.generate(ksa_core::key::KeySpec::Rsa2048)?;
    let other_signer = backend.signing_key(&other)?;

    let sa = ObjectRef {
        name: "builder".into(),
        uid: "6f1c1a0e-2b1f-4a43-9e1c-3b9c1f0c7d11".into(),
    };
    let bound = |issued_at: i64| {
        BoundToken {
            issuer: ISSUER.into(),
            audiences: vec!["https://kubernetes.default.svc".into()],
            namespace: "ci".into(),
            service_account: sa.clone(),
            pod: Some(ObjectRef {
                name: "builder-7d9f".into(),
                uid: "0b3c5a52-0f8e-4a5e-8d2e-5f4f6c1b2a90".into(),
            }),
            node: Some(ObjectRef {
                name: "node-a".into(),
                uid: "a0e1b2c3-d4e5-4f60-8172-8394a5b6c7d8".into(),
            }),
            secret: None,
            issued_at,
            lifetime_seconds: 3600,
            jti: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        }
        .claims()
    };
    let fresh = bound(AT - 60)?;
    let stale = bound(AT - 7200)?;
    let future = bound(AT + 600)?;
    let legacy = Claims::legacy("ci", &sa, "builder-token-x7k2p");

    let valid_rs = mint(&fresh, rsa_signer.as_ref())?;
    let valid_es = mint(&fresh, ec_signer.as_ref())?;
    let tampered = {
        let mut claims = fresh.clone();
        claims.sub = Some("system:serviceaccount:kube-system:admin".into());
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
        let parts: Vec<&str> = valid_rs.split('.').collect();
        format!("{}.{body}.{}", parts[0], parts[2])
    };
    let unsigned = |header: serde_json::Value, claims: &Claims| -> anyhow::Result<String> {
        Ok(format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        ))
    };
    let alg_none = unsigned(json!({"alg": "none", "kid": rsa.kid()}), &fresh)?;
    // The classic confusion attack: HMAC keyed with the RSA public key PEM.
    let hmac = {
        let header = serde_json::to_vec(&json!({"alg": "HS256", "kid": rsa.kid()}))?;
        let claims = serde_json::to_vec(&fresh)?;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            rsa.public_key().to_pem().as_bytes(),
        );
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let no_kid = {
        let header = serde_json::to_vec(&json!({"alg": "RS256"}))?;
        sign_parts(&header, &serde_json::to_vec(&fresh)?, rsa_signer.as_ref())?
    };

    let issuers = vec![ISSUER.to_owned()];
    let audiences = vec!["https://kubernetes.default.svc".to_owned()];
    let vector = |name: &str, token: &str, expect: &str, kid: Option<&str>| {
        json!({"name": name, "token": token, "issuers": issuers, "audiences": audiences,
               "at": AT, "expect": expect, "kid": kid})
    };
    let mut vectors = vec![
        vector(
            "valid RS256 bound token",
            &valid_rs,
            "ok",
            Some(rsa.kid().as_str()),
        ),
        vector(
            "valid ES256 bound token",
            &valid_es,
            "ok",
            Some(ec.kid().as_str()),
        ),
        vector(
            "no kid: every key is tried",
            &no_kid,
            "ok",
            Some(rsa.kid().as_str()),
        ),
        vector("tampered claims", &tampered, "bad_signature", None),
        vector(
            "expired",
            &mint(&stale, rsa_signer.as_ref())?,
            "expired",
            None,
        ),
        vector(
            "not yet valid",
            &mint(&future, rsa_signer.as_ref())?,
            "not_yet_valid",
            None,
        ),
        vector("alg none", &alg_none, "algorithm_not_allowed", None),
        vector(
            "HS256 keyed with the public key",
            &hmac,
            "algorithm_not_allowed",
            None,
        ),
        vector(
            "unknown kid",
            &mint(&fresh, other_signer.as_ref())?,
            "unknown_kid",
            None,
        ),
        vector("malformed", "not.a-token", "malformed", None),
    ];
    let mut wrong_issuer = vector("wrong issuer", &valid_rs, "wrong_issuer", None);
    wrong_issuer["issuers"] = json!(["https://issuer.example"]);
    let mut wrong_audience = vector("wrong audience", &valid_es, "wrong_audience", None);
    wrong_audience["audiences"] = json!(["vault"]);
    let mut legacy_ok = vector(
        "legacy Secret token",
        &mint(&legacy, rsa_signer.as_ref())?,
        "ok",
        Some(rsa.kid().as_str()),
    );
    legacy_ok["issuers"] = json!(["kubernetes/serviceaccount"]);
    legacy_ok["audiences"] = json!([]);
    vectors.extend([wrong_issuer, wrong_audience, legacy_ok]);

    let jwks = Jwks::from_public_keys([rsa.public_key(), ec.public_key()]);
    let document = json!({"jwks": jwks, "vectors": vectors});
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}
