//! Service-account tokens: mint, decode without verifying, and verify against
//! a key set the way kube-apiserver does.
//!
//! Verification picks the key by `kid` (every key with that kid, or every key
//! of the header's algorithm when there is no `kid`), accepts only RS256 and
//! ES256 and no `crit` extension, checks `exp`, `nbf` and `iat` with a stated
//! leeway at a given time (refusing a token that would never expire unless it
//! is a legacy token), then the issuer and the audience. Every failure is its
//! own [`TokenError`] variant.

mod claims;

pub use claims::{
    BoundToken, BoundTokenError, Claims, DEFAULT_BOUND_TOKEN_SECONDS, KubernetesClaims,
    LEGACY_ISSUER, MIN_BOUND_TOKEN_SECONDS, ObjectRef, ServiceAccountIdentity, TokenKind,
};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::crypto::{SignError, SigningKey};
use crate::key::Algorithm;
use crate::keyset::{KeySet, LoadedKey};
use crate::{KeyId, KeyVersion};

/// Largest token accepted. Kubernetes tokens are around 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The clock skew allowed on `exp`, `nbf` and `iat`: one minute, as
/// kube-apiserver allows (go-jose's default leeway).
pub const DEFAULT_LEEWAY_SECONDS: i64 = 60;

/// The JOSE header of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Extensions the verifier must understand (RFC 7515 section 4.1.11).
    /// We understand none, so a token with a `crit` member is refused,
    /// whatever its value: `Some` whenever the member is present, even as
    /// `null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub crit: Option<serde_json::Value>,
}

/// `Some` for any value of a member that is present, `null` included
/// (`#[serde(default)]` gives `None` only when it is absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Why a token could not be decoded or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("malformed token: the {part} is not base64url without padding")]
    BadBase64 { part: &'static str },
    #[error("malformed token: the {part} is not UTF-8")]
    NotUtf8 { part: &'static str },
    #[error("malformed token: the {part} is not valid JSON: {detail}")]
    BadJson { part: &'static str, detail: String },
    #[error("algorithm {alg:?} is not allowed; only RS256 and ES256 are accepted")]
    AlgorithmNotAllowed { alg: String },
    #[error("the header names critical extensions, which are not supported")]
    CriticalExtension,
    #[error("no trusted key has kid {kid:?}")]
    UnknownKid { kid: String },
    #[error("no trusted key for algorithm {alg}")]
    NoKeyForAlgorithm { alg: Algorithm },
    #[error("the header says {alg} but key {kid:?} is a {key_alg} key")]
    AlgorithmKeyMismatch {
        alg: Algorithm,
        kid: String,
        key_alg: Algorithm,
    },
    #[error("bad signature (checked against {tried} trusted key(s))")]
    BadSignature { tried: usize },
    #[error("expired at {} (checked at {}, leeway {leeway} s)", time(*exp), time(*at))]
    Expired { exp: i64, at: i64, leeway: i64 },
    #[error("not valid before {} (checked at {}, leeway {leeway} s)", time(*nbf), time(*at))]
    NotYetValid { nbf: i64, at: i64, leeway: i64 },
    #[error("issued in the future at {} (checked at {}, leeway {leeway} s)", time(*iat), time(*at))]
    IssuedInFuture { iat: i64, at: i64, leeway: i64 },
    #[error("the token has no {0:?} claim, which a bound token must have")]
    MissingClaim(&'static str),
    #[error(
        "the token has no \"exp\" claim and is not a legacy service-account token, \
         so it would be valid forever"
    )]
    NoExpiry,
    #[error("wrong issuer {found:?}; expected one of {expected:?}")]
    WrongIssuer {
        found: Option<String>,
        expected: Vec<String>,
    },
    #[error("wrong audience {found:?}; expected one of {expected:?}")]
    WrongAudience {
        found: Vec<String>,
        expected: Vec<String>,
    },
}

/// Seconds since the epoch as RFC 3339, for messages.
fn time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

impl TokenError {
    /// A short, stable name of the failure, for JSON output and JS errors.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::TooLarge { .. } => "too_large",
            TokenError::Malformed(_)
            | TokenError::BadBase64 { .. }
            | TokenError::NotUtf8 { .. }
            | TokenError::BadJson { .. } => "malformed",
            TokenError::AlgorithmNotAllowed { .. } | TokenError::CriticalExtension => {
                "algorithm_not_allowed"
            }
            TokenError::UnknownKid { .. } | TokenError::NoKeyForAlgorithm { .. } => "unknown_kid",
            TokenError::AlgorithmKeyMismatch { .. } => "algorithm_key_mismatch",
            TokenError::BadSignature { .. } => "bad_signature",
            TokenError::Expired { .. } => "expired",
            TokenError::NotYetValid { .. } | TokenError::IssuedInFuture { .. } => "not_yet_valid",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::NoExpiry => "no_expiry",
            TokenError::WrongIssuer { .. } => "wrong_issuer",
            TokenError::WrongAudience { .. } => "wrong_audience",
        }
    }
}

/// A token split and decoded, not verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded<'t> {
    pub header: Header,
    pub claims: Claims,
    /// `header "." claims`, the bytes the signature covers.
    pub signing_input: &'t str,
    pub signature: Vec<u8>,
}

impl Decoded<'_> {
    pub fn kind(&self) -> TokenKind {
        self.claims.kind()
    }
}

/// Splits and decodes a token without checking its signature. Use it to look,
/// never to trust.
pub fn decode(token: &str) -> Result<Decoded<'_>, TokenError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge {
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "a JWS compact token has exactly three dot-separated parts",
        ));
    };
    let decode_part = |part: &'static str, text: &str| {
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| TokenError::BadBase64 { part })
    };
    let header_json = decode_part("header", header_b64)?;
    let claims_json = decode_part("claims", claims_b64)?;
    let signature = decode_part("signature", signature_b64)?;
    // Checked as a whole first: serde_json does not check the bytes of
    // members it skips.
    let header_json = utf8("header", &header_json)?;
    let claims_json = utf8("claims", &claims_json)?;
    let header: Header = serde_json::from_str(header_json).map_err(|e| TokenError::BadJson {
        part: "header",
        detail: e.to_string(),
    })?;
    let claims: Claims = serde_json::from_str(claims_json).map_err(|e| TokenError::BadJson {
        part: "claims",
        detail: e.to_string(),
    })?;
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    Ok(Decoded {
        header,
        claims,
        signing_input,
        signature,
    })
}

fn utf8<'b>(part: &'static str, bytes: &'b [u8]) -> Result<&'b str, TokenError> {
    std::str::from_utf8(bytes).map_err(|_| TokenError::NotUtf8 { part })
}

/// Signs claims into a compact JWS with the header kube-apiserver writes
/// (`alg` and `kid`).
pub fn mint(claims: &Claims, key: &dyn SigningKey) -> Result<String, SignError> {
    let header = encoded_header(key, None);
    // Serializing this plain struct cannot fail.
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(header.len() + claims.len() * 4 / 3 + 400);
    token.push_str(&header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = sign_encoded(&header, &token[header.len() + 1..], key)?;
    token.push('.');
    token.push_str(&signature);
    Ok(token)
}

/// The base64url JOSE header of a token `key` signs: `alg`, `kid`, and
/// `typ` when given.
pub fn encoded_header(key: &dyn SigningKey, typ: Option<&str>) -> String {
    let header = Header {
        alg: key.algorithm().as_str().to_owned(),
        kid: Some(key.kid().as_str().to_owned()),
        typ: typ.map(str::to_owned),
        crit: None,
    };
    // Serializing this plain struct cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default())
}

/// The base64url signature of `header.claims`, both already base64url (as
/// KEP-740 hands an external signer the claims).
pub fn sign_encoded(header: &str, claims: &str, key: &dyn SigningKey) -> Result<String, SignError> {
    let mut message = String::with_capacity(header.len() + 1 + claims.len());
    message.push_str(header);
    message.push('.');
    message.push_str(claims);
    Ok(URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes())?))
}

/// Signs an already serialized header and claims.
pub fn sign_parts(header: &[u8], claims: &[u8], key: &dyn SigningKey) -> Result<String, SignError> {
    let mut token = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 400);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

/// What a verifier expects of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectations {
    /// Accepted issuers; empty accepts any (the caller then shows the issuer).
    pub issuers: Vec<String>,
    /// Accepted audiences; the token must name one of them. Empty skips the
    /// check. A token without `aud` (a legacy token) fails a non-empty list.
    pub audiences: Vec<String>,
    /// The time of the check, seconds since the epoch.
    pub at: i64,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway_seconds: i64,
}

impl Expectations {
    /// Any issuer and audience, at `at`, with the default leeway.
    pub fn at(at: i64) -> Expectations {
        Expectations {
            issuers: Vec::new(),
            audiences: Vec::new(),
            at,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
        }
    }
}

/// A verified token and the key that verified it.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub header: Header,
    pub claims: Claims,
    pub kid: KeyId,
    pub key_version: Option<KeyVersion>,
    pub algorithm: Algorithm,
}

impl Verified {
    pub fn kind(&self) -> TokenKind {
        self.claims.kind()
    }
}

/// Whether a token with no `exp` that is not a legacy token (which has none
/// by design) is accepted. A bound token without `exp` is always refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoExpiry {
    /// Refuse it ([`TokenError::NoExpiry`]): it would be valid forever.
    Refuse,
    /// Accept it, for tokens from issuers that never set `exp`.
    Allow,
}

/// Verifies a token against a key set and expectations; a token that would
/// never expire is refused ([`NoExpiry::Refuse`]).
pub fn verify(token: &str, keys: &KeySet, expect: &Expectations) -> Result<Verified, TokenError> {
    verify_with(token, keys, expect, NoExpiry::Refuse)
}

/// [`verify`], saying what to do with a token that has no `exp`.
pub fn verify_with(
    token: &str,
    keys: &KeySet,
    expect: &Expectations,
    no_expiry: NoExpiry,
) -> Result<Verified, TokenError> {
    let decoded = decode(token)?;
    let key = check_signature(&decoded, keys)?;
    check_claims(&decoded.claims, expect, no_expiry)?;
    Ok(Verified {
        kid: key.trusted.kid.clone(),
        key_version: key.trusted.version,
        algorithm: key.trusted.key.algorithm(),
        header: decoded.header,
        claims: decoded.claims,
    })
}

fn check_signature<'k>(
    decoded: &Decoded<'_>,
    keys: &'k KeySet,
) -> Result<&'k LoadedKey, TokenError> {
    let header = &decoded.header;
    let Some(alg) = Algorithm::from_jws(&header.alg) else {
        return Err(TokenError::AlgorithmNotAllowed {
            alg: header.alg.clone(),
        });
    };
    if header.crit.is_some() {
        return Err(TokenError::CriticalExtension);
    }
    let message = decoded.signing_input.as_bytes();
    if let Some(kid) = &header.kid {
        // A key set may hold several keys under one kid (a JWKS names keys
        // as it likes): try each of them that fits the algorithm.
        let mut named = keys
            .keys
            .iter()
            .filter(|k| k.trusted.kid.as_str() == kid)
            .peekable();
        let Some(first) = named.peek() else {
            return Err(TokenError::UnknownKid { kid: kid.clone() });
        };
        let first_alg = first.trusted.key.algorithm();
        let mut tried = 0;
        for key in named.filter(|k| k.trusted.key.algorithm() == alg) {
            tried += 1;
            if key.verifier.verify(message, &decoded.signature) {
                return Ok(key);
            }
        }
        return Err(if tried == 0 {
            TokenError::AlgorithmKeyMismatch {
                alg,
                kid: kid.clone(),
                key_alg: first_alg,
            }
        } else {
            TokenError::BadSignature { tried }
        });
    }
    // No kid: try every key of the header's algorithm, as kube-apiserver does.
    let mut tried = 0;
    for key in keys
        .keys
        .iter()
        .filter(|k| k.trusted.key.algorithm() == alg)
    {
        tried += 1;
        if key.verifier.verify(message, &decoded.signature) {
            return Ok(key);
        }
    }
    if tried == 0 {
        return Err(TokenError::NoKeyForAlgorithm { alg });
    }
    Err(TokenError::BadSignature { tried })
}

fn check_claims(
    claims: &Claims,
    expect: &Expectations,
    no_expiry: NoExpiry,
) -> Result<(), TokenError> {
    let (at, leeway) = (expect.at, expect.leeway_seconds);
    match (claims.exp, claims.kind()) {
        (Some(exp), _) if at > exp.saturating_add(leeway) => {
            return Err(TokenError::Expired { exp, at, leeway });
        }
        (None, TokenKind::Bound) => return Err(TokenError::MissingClaim("exp")),
        (None, TokenKind::Other) if no_expiry == NoExpiry::Refuse => {
            return Err(TokenError::NoExpiry);
        }
        _ => {}
    }
    if let Some(nbf) = claims.nbf
        && at < nbf.saturating_sub(leeway)
    {
        return Err(TokenError::NotYetValid { nbf, at, leeway });
    }
    if let Some(iat) = claims.iat
        && at < iat.saturating_sub(leeway)
    {
        return Err(TokenError::IssuedInFuture { iat, at, leeway });
    }
    if !expect.issuers.is_empty()
        && !claims
            .iss
            .as_ref()
            .is_some_and(|iss| expect.issuers.contains(iss))
    {
        return Err(TokenError::WrongIssuer {
            found: claims.iss.clone(),
            expected: expect.issuers.clone(),
        });
    }
    if !expect.audiences.is_empty() {
        let found = claims.aud.clone().unwrap_or_default();
        if !found.iter().any(|a| expect.audiences.contains(a)) {
            return Err(TokenError::WrongAudience {
                found,
                expected: expect.audiences.clone(),
            });
        }
    }
    Ok(())
}
