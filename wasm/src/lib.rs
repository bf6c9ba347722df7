//! `ksa-wasm`: `ksa-core` for browsers, through wasm-bindgen.
//!
//! Exports `decodeStatus(text)`, `decodeToken(jwt)` and
//! `verifyToken(jwt, jwksJson, options)`, returning plain JS objects typed by
//! the TypeScript definitions below. Every error becomes a JS `Error` with a
//! `kind` field, in [`to_js`] alone. Nothing signs in the browser: only the
//! pure-Rust verifier is built in.
//!
//! The logic lives in [`api`] and is tested natively with the shared
//! vectors; `tests/browser.rs` runs the same vectors in headless Chromium.
//! `cargo xtask wasm` builds the package for the inspector page in `www/`.

pub mod api;

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** A rotation step (SPEC section 2). */
export type Step = "Generate" | "Trust" | "Sign" | "RefreshTokens" | "Retire" | "Completed";

/** A parsed status line. */
export interface StatusLine {
  /** The KSASigningKeyVersion: the version being rotated to. */
  keyVersion: number;
  /** True exactly when the rotation is completed. */
  status: boolean;
  reason: string;
  tokenVersion: number;
  privateKeyVersion: number;
  publicKeyVersions: number[];
  /** The steps whose confirmed numbers the line carries: one step, or
   *  Generate and Trust together, which confirm the same numbers. */
  steps: Step[];
}

/** A parsed issuer status line (SPEC section 10). */
export interface IssuerStatusLine {
  /** The KSAIssuer: the issuer being rotated to. */
  issuer: string;
  /** True exactly when the rotation is completed. */
  status: boolean;
  reason: string;
  tokenIssuer: string;
  signingIssuer: string;
  /** The signing issuer first, as the flags list them. */
  acceptedIssuers: string[];
  /** The steps whose confirmed issuers the line carries. */
  steps: Step[];
}

export interface JoseHeader {
  alg: string;
  kid?: string;
  typ?: string;
  crit?: unknown;
}

export interface ObjectRef {
  name: string;
  uid: string;
}

/** The `kubernetes.io` claim of a bound token. */
export interface KubernetesClaims {
  namespace: string;
  node?: ObjectRef;
  pod?: ObjectRef;
  secret?: ObjectRef;
  serviceaccount: ObjectRef;
  /** When a kubelet should refresh the token, seconds since the epoch. */
  warnafter?: number;
  [claim: string]: unknown;
}

/** Every claim; times are seconds since the epoch. */
export interface Claims {
  aud?: string[];
  exp?: number;
  iat?: number;
  iss?: string;
  jti?: string;
  nbf?: number;
  sub?: string;
  "kubernetes.io"?: KubernetesClaims;
  "kubernetes.io/serviceaccount/namespace"?: string;
  "kubernetes.io/serviceaccount/secret.name"?: string;
  "kubernetes.io/serviceaccount/service-account.name"?: string;
  "kubernetes.io/serviceaccount/service-account.uid"?: string;
  [claim: string]: unknown;
}

/** Legacy: a long-lived Secret token; bound: a TokenRequest token. */
export type TokenKind = "legacy" | "bound" | "other";

export interface ServiceAccount {
  namespace: string;
  name: string;
  uid: string;
}

export interface DecodedToken {
  verified: false;
  kind: TokenKind;
  header: JoseHeader;
  claims: Claims;
  serviceAccount: ServiceAccount | null;
}

export interface VerifiedToken {
  valid: true;
  kind: TokenKind;
  /** The kid of the trusted key that verified the signature. */
  kid: string;
  algorithm: "RS256" | "ES256";
  header: JoseHeader;
  claims: Claims;
  serviceAccount: ServiceAccount | null;
}

export interface VerifyOptions {
  /** Accepted issuers; empty or absent accepts any. */
  issuers?: string[];
  /** Accepted audiences; the token must name one of them. */
  audiences?: string[];
  /** The time to verify at, seconds since the epoch; default now. */
  at?: number;
}

/** What went wrong, as a stable name. */
export type ErrorKind =
  | "bad_status_line" | "bad_jwks" | "bad_options"
  | "too_large" | "malformed" | "algorithm_not_allowed" | "unknown_kid"
  | "algorithm_key_mismatch" | "bad_signature" | "expired" | "not_yet_valid"
  | "missing_claim" | "wrong_issuer" | "wrong_audience";

/** Every function throws a KsaError: an Error with a `kind`. */
export interface KsaError extends Error {
  kind: ErrorKind;
}
"#;

/// The one conversion of results to JS values and errors.
fn to_js(result: Result<serde_json::Value, api::ApiError>) -> Result<JsValue, JsValue> {
    match result {
        // Through JSON text: plain objects, numbers as JS numbers.
        Ok(value) => js_sys::JSON::parse(&value.to_string()),
        Err(error) => {
            let js = js_sys::Error::new(&error.message);
            // Setting a field on a fresh Error object cannot fail.
            let _ = js_sys::Reflect::set(&js, &"kind".into(), &error.kind.into());
            Err(js.into())
        }
    }
}

/// Parses a status line, on one line or broken over several.
#[wasm_bindgen(
    js_name = decodeStatus,
    unchecked_return_type = "StatusLine | IssuerStatusLine"
)]
pub fn decode_status(text: &str) -> Result<JsValue, JsValue> {
    to_js(api::decode_status(text))
}

/// Decodes a token's header and claims without verifying it.
#[wasm_bindgen(js_name = decodeToken, unchecked_return_type = "DecodedToken")]
pub fn decode_token(jwt: &str) -> Result<JsValue, JsValue> {
    to_js(api::decode_token(jwt))
}

/// Verifies a token against a JWKS document (as served by kube-apiserver at
/// `/openid/v1/jwks`).
#[wasm_bindgen(js_name = verifyToken, unchecked_return_type = "VerifiedToken")]
pub fn verify_token(
    jwt: &str,
    #[wasm_bindgen(js_name = jwksJson)] jwks_json: &str,
    #[wasm_bindgen(unchecked_param_type = "VerifyOptions | undefined")] options: JsValue,
) -> Result<JsValue, JsValue> {
    let options = if options.is_undefined() || options.is_null() {
        Ok(api::VerifyOptions::default())
    } else {
        // Through JSON text, so unknown members are refused by name.
        let text = js_sys::JSON::stringify(&options)
            .ok()
            .and_then(|text| text.as_string())
            .unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| api::ApiError {
            kind: "bad_options",
            message: format!("bad options: {e}; expected {{issuers?, audiences?, at?}}"),
        })
    };
    let now = (js_sys::Date::now() / 1000.0) as i64;
    to_js(options.and_then(|options| api::verify_token(jwt, jwks_json, options, now)))
}
