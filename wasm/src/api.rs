//! The browser API as plain Rust: every function takes text and returns a
//! JSON value or an [`ApiError`], so it is tested natively; `lib.rs` only
//! moves values across the wasm boundary.

use ksa_core::crypto::RustCrypto;
use ksa_core::jwk::parse_jwks;
use ksa_core::keyset::KeySet;
use ksa_core::token::{self, DEFAULT_LEEWAY_SECONDS, Expectations};
use serde::Deserialize;
use serde_json::{Value, json};

/// An error for JavaScript: a stable `kind` and a message naming what was
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(kind: &'static str, message: impl ToString) -> ApiError {
        ApiError {
            kind,
            message: message.to_string(),
        }
    }
}

/// `decodeStatus(text)`: a status line, on one line or several: a key
/// rotation's (SPEC section 2) or an issuer rotation's (section 10, with
/// `issuer` set).
pub fn decode_status(text: &str) -> Result<Value, ApiError> {
    // The core's one decoded form, which `ksa status decode` prints too.
    ksa_core::status::decode(text).map_err(|e| ApiError::new("bad_status_line", e))
}

/// `decodeToken(jwt)`: header and claims, unverified.
pub fn decode_token(jwt: &str) -> Result<Value, ApiError> {
    let decoded = token::decode(jwt).map_err(|e| ApiError::new(e.kind(), e))?;
    Ok(json!({
        "verified": false,
        "kind": decoded.kind(),
        "header": decoded.header,
        "claims": decoded.claims,
        "serviceAccount": decoded.claims.service_account(),
    }))
}

/// The `options` of `verifyToken`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyOptions {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    /// Seconds since the epoch.
    pub at: Option<i64>,
}

/// `verifyToken(jwt, jwksJson, options)`: `now` is the caller's clock
/// (seconds), used when `options.at` is absent.
pub fn verify_token(
    jwt: &str,
    jwks: &str,
    options: VerifyOptions,
    now: i64,
) -> Result<Value, ApiError> {
    let trusted = parse_jwks(jwks).map_err(|e| ApiError::new("bad_jwks", e))?;
    let keys = KeySet::new(trusted, &RustCrypto).map_err(|e| ApiError::new("bad_jwks", e))?;
    let expect = Expectations {
        issuers: options.issuers,
        audiences: options.audiences,
        at: options.at.unwrap_or(now),
        leeway_seconds: DEFAULT_LEEWAY_SECONDS,
    };
    let verified = token::verify(jwt, &keys, &expect).map_err(|e| ApiError::new(e.kind(), e))?;
    Ok(json!({
        "valid": true,
        "kind": verified.kind(),
        "kid": verified.kid,
        "algorithm": verified.algorithm,
        "header": verified.header,
        "claims": verified.claims,
        "serviceAccount": verified.claims.service_account(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../core/test_data/vectors.json")).expect("vectors")
    }

    #[test]
    fn shared_vectors_give_their_expected_outcome() {
        let document = vectors();
        let jwks = document["jwks"].to_string();
        for vector in document["vectors"].as_array().expect("vectors") {
            let options: VerifyOptions = serde_json::from_value(json!({
                "issuers": vector["issuers"], "audiences": vector["audiences"], "at": vector["at"],
            }))
            .expect("options");
            let token = vector["token"].as_str().expect("token");
            let outcome = verify_token(token, &jwks, options, 0);
            match (vector["expect"].as_str().expect("expect"), outcome) {
                ("ok", Ok(value)) => assert_eq!(value["kid"], vector["kid"]),
                (kind, Err(error)) => assert_eq!(error.kind, kind, "{}", vector["name"]),
                (kind, Ok(_)) => panic!("{}: expected {kind}", vector["name"]),
            }
        }
    }

    #[test]
    fn status_lines_and_tokens_decode_with_typed_errors() {
        let line = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#;
        assert_eq!(decode_status(line).expect("decodes")["status"], true);
        assert_eq!(
            decode_status("nonsense").expect_err("refused").kind,
            "bad_status_line"
        );
        let issuer = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: False, reason: KSAIssuerRotationProcessedReason, message:{"tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}"#;
        let decoded = decode_status(issuer).expect("decodes");
        assert_eq!(decoded["signingIssuer"], "https://b.example");
        assert_eq!(decoded["steps"], serde_json::json!(["RefreshTokens"]));
        let broken = issuer.replace("\"https://a.example\"]", "\"https://b.example\"]");
        assert_eq!(
            decode_status(&broken).expect_err("refused").kind,
            "bad_status_line"
        );
        assert_eq!(decode_token("a.b").expect_err("refused").kind, "malformed");
        let options = VerifyOptions::default();
        assert_eq!(
            verify_token("x.y.z", "{}", options, 0)
                .expect_err("refused")
                .kind,
            "bad_jwks"
        );
    }
}
