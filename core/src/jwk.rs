//! JWK and JWKS (RFC 7517), as kube-apiserver serves them at `/openid/v1/jwks`.
//!
//! Reading is strict where it matters for safety and lenient where RFC 7517
//! asks: keys of unknown type or for another use are skipped, but a JWK that
//! carries private members is refused outright, since publishing one is a leak.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::key::{Algorithm, KeyError, PublicKey, PublicNumbers};
use crate::keyset::TrustedKey;
use crate::{KeyId, MAX_INPUT_BYTES};

/// Members that only a private JWK has (RFC 7518 sections 6.2.2 and 6.3.2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// One public JWK, serialized in the member order kube-apiserver uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Jwk {
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub kty: &'static str,
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    pub alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl Jwk {
    /// The JWK of a public key under the given key id.
    pub fn new(key: &PublicKey, kid: &KeyId) -> Jwk {
        let mut jwk = Jwk {
            use_: "sig",
            kty: "RSA",
            kid: kid.as_str().to_owned(),
            crv: None,
            alg: key.algorithm().as_str(),
            n: None,
            e: None,
            x: None,
            y: None,
        };
        match key.numbers() {
            PublicNumbers::Rsa { n, e } => {
                jwk.n = Some(URL_SAFE_NO_PAD.encode(n));
                jwk.e = Some(URL_SAFE_NO_PAD.encode(e));
            }
            PublicNumbers::EcP256 { x, y } => {
                jwk.kty = "EC";
                jwk.crv = Some("P-256");
                jwk.x = Some(URL_SAFE_NO_PAD.encode(x));
                jwk.y = Some(URL_SAFE_NO_PAD.encode(y));
            }
        }
        jwk
    }
}

/// A JWK Set document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The JWKS of public keys, each under the key id kube-apiserver derives.
    pub fn from_public_keys<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Jwks {
        Jwks {
            keys: keys.into_iter().map(|k| Jwk::new(k, k.kid())).collect(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing a struct of strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a JWK or JWKS was refused. `index` is the position in `keys`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwkError {
    #[error("JWKS is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("JWKS is not valid JSON: {0}")]
    Json(String),
    #[error("JWKS must be a JSON object with a \"keys\" array")]
    NotAJwks,
    #[error("keys[{index}] is not a JSON object")]
    NotAnObject { index: usize },
    #[error("keys[{index}] has no \"{member}\" member, which a {kty} key needs")]
    MissingMember {
        index: usize,
        member: &'static str,
        kty: String,
    },
    #[error("keys[{index}].{member} is malformed: {detail}")]
    BadMember {
        index: usize,
        member: &'static str,
        detail: String,
    },
    #[error(
        "keys[{index}] contains the private member \"{member}\"; a JWKS must hold public keys only"
    )]
    PrivateMember { index: usize, member: &'static str },
    #[error("keys[{index}] says alg {alg} but is a {kty} key")]
    AlgorithmMismatch {
        index: usize,
        alg: String,
        kty: String,
    },
    #[error("keys[{index}]: {source}")]
    Key { index: usize, source: KeyError },
}

/// Reads a JWKS into the keys it trusts. Keys of an unknown `kty`, with a
/// `use` other than `sig`, or with an `alg` other than RS256 and ES256 are
/// skipped, as RFC 7517 section 5 asks.
pub fn parse_jwks(text: &str) -> Result<Vec<TrustedKey>, JwkError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(JwkError::TooLarge {
            len: text.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    let document: Value = serde_json::from_str(text).map_err(|e| JwkError::Json(e.to_string()))?;
    let Some(Value::Array(keys)) = document.get("keys") else {
        return Err(JwkError::NotAJwks);
    };
    let mut trusted = Vec::with_capacity(keys.len());
    for (index, jwk) in keys.iter().enumerate() {
        let Value::Object(jwk) = jwk else {
            return Err(JwkError::NotAnObject { index });
        };
        if let Some(key) = parse_jwk(index, jwk)? {
            trusted.push(key);
        }
    }
    Ok(trusted)
}

fn parse_jwk(index: usize, jwk: &Map<String, Value>) -> Result<Option<TrustedKey>, JwkError> {
    if let Some(member) = PRIVATE_MEMBERS.into_iter().find(|m| jwk.contains_key(*m)) {
        return Err(JwkError::PrivateMember { index, member });
    }
    let text = |member: &'static str| -> Result<Option<&str>, JwkError> {
        match jwk.get(member) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(JwkError::BadMember {
                index,
                member,
                detail: "expected a string".into(),
            }),
        }
    };
    let kty = text("kty")?.unwrap_or_default().to_owned();
    if !matches!(kty.as_str(), "RSA" | "EC") || text("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let required = |member: &'static str| -> Result<Vec<u8>, JwkError> {
        let value = text(member)?.ok_or_else(|| JwkError::MissingMember {
            index,
            member,
            kty: kty.clone(),
        })?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|e| JwkError::BadMember {
                index,
                member,
                detail: format!("not base64url without padding: {e}"),
            })
    };
    let key = if kty == "RSA" {
        PublicKey::from_rsa(&required("n")?, &required("e")?)
    } else {
        match text("crv")? {
            Some("P-256") => {}
            Some(other) => {
                return Err(JwkError::Key {
                    index,
                    source: KeyError::UnsupportedCurve {
                        curve: other.to_owned(),
                    },
                });
            }
            None => {
                return Err(JwkError::MissingMember {
                    index,
                    member: "crv",
                    kty,
                });
            }
        }
        let coordinate = |member: &'static str| -> Result<[u8; 32], JwkError> {
            <[u8; 32]>::try_from(required(member)?).map_err(|_| JwkError::BadMember {
                index,
                member,
                detail: "a P-256 coordinate is 32 bytes".into(),
            })
        };
        PublicKey::from_ec_coordinates(coordinate("x")?, coordinate("y")?)
    }
    .map_err(|source| JwkError::Key { index, source })?;
    if let Some(alg) = text("alg")? {
        match Algorithm::from_jws(alg) {
            Some(a) if a == key.algorithm() => {}
            Some(_) => {
                return Err(JwkError::AlgorithmMismatch {
                    index,
                    alg: alg.to_owned(),
                    kty,
                });
            }
            None => return Ok(None),
        }
    }
    let kid = text("kid")?.map_or_else(|| key.kid().clone(), KeyId::new);
    Ok(Some(TrustedKey::new(kid, key)))
}
