//! Public and private keys in the formats kube-apiserver reads, and the key id
//! it derives from them.
//!
//! kube-apiserver reads `--service-account-key-file` and
//! `--service-account-signing-key-file` as PEM files that may hold several
//! blocks: PKIX `PUBLIC KEY`, PKCS#1 `RSA PRIVATE KEY`, PKCS#8 `PRIVATE KEY`
//! and SEC1 `EC PRIVATE KEY` (whose public half it uses). Blocks of other kinds
//! (`EC PARAMETERS`, say) are tolerated and skipped, as it does.
//!
//! Every public key is kept in the canonical DER SubjectPublicKeyInfo that Go's
//! `x509.MarshalPKIXPublicKey` writes, because the key id is a hash of exactly
//! those bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spki::der::asn1::{BitString, Null, ObjectIdentifier, UintRef};
use spki::der::{Any, Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

use crate::{KeyId, MAX_INPUT_BYTES};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// Smallest RSA modulus accepted. Smaller keys are breakable, and kube-apiserver
/// verifiers built on Go refuse keys under 1024 bits already.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, matching the verifiers' upper bound.
pub const MAX_RSA_BITS: usize = 8192;

/// A JWS signature algorithm. Only these two are ever accepted: never `none`,
/// never an HMAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }

    /// Parses a JWS `alg` value; anything but `RS256` and `ES256` is refused.
    pub fn from_jws(alg: &str) -> Option<Algorithm> {
        match alg {
            "RS256" => Some(Algorithm::RS256),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What key to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeySpec {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
}

impl KeySpec {
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeySpec::EcP256 => Algorithm::ES256,
            _ => Algorithm::RS256,
        }
    }

    /// The key for an algorithm and, for RSA, a modulus size.
    pub fn from_parts(algorithm: Algorithm, rsa_bits: Option<u32>) -> Result<KeySpec, KeyError> {
        match (algorithm, rsa_bits) {
            (Algorithm::ES256, None) => Ok(KeySpec::EcP256),
            (Algorithm::ES256, Some(bits)) => Err(KeyError::UnsupportedKeySize {
                bits,
                allowed: "none: ES256 keys are P-256",
            }),
            (Algorithm::RS256, None | Some(2048)) => Ok(KeySpec::Rsa2048),
            (Algorithm::RS256, Some(3072)) => Ok(KeySpec::Rsa3072),
            (Algorithm::RS256, Some(4096)) => Ok(KeySpec::Rsa4096),
            (Algorithm::RS256, Some(bits)) => Err(KeyError::UnsupportedKeySize {
                bits,
                allowed: "2048, 3072 or 4096",
            }),
        }
    }
}

/// Why a key could not be read, written or generated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("input is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error("no RSA or ECDSA key found in the PEM data (blocks seen: {labels:?})")]
    NoKeys { labels: Vec<String> },
    #[error("malformed {what}: {detail}")]
    Der { what: &'static str, detail: String },
    #[error("unsupported key type {oid}; only RSA and ECDSA P-256 keys are supported")]
    UnsupportedKeyType { oid: String },
    #[error("unsupported elliptic curve {curve}; only P-256 (ES256) is supported")]
    UnsupportedCurve { curve: String },
    #[error("the EC public key is not an uncompressed P-256 point")]
    BadEcPoint,
    #[error("RSA key of {bits} bits; between {MIN_RSA_BITS} and {MAX_RSA_BITS} are required")]
    RsaKeySize { bits: usize },
    #[error("unsupported key size {bits}; allowed: {allowed}")]
    UnsupportedKeySize { bits: u32, allowed: &'static str },
    #[error(
        "EC private key carries no public key; re-export it with `openssl ec -in KEY -out KEY`"
    )]
    MissingEcPublicKey,
    #[error("the crypto backend rejected the key: {0}")]
    Rejected(String),
}

fn der_error(what: &'static str) -> impl Fn(spki::der::Error) -> KeyError {
    move |e| KeyError::Der {
        what,
        detail: e.to_string(),
    }
}

/// The public numbers of a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublicNumbers {
    /// Big-endian modulus and exponent, without leading zero bytes.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The affine coordinates of a P-256 point.
    EcP256 { x: [u8; 32], y: [u8; 32] },
}

/// A public key: its numbers, its canonical SubjectPublicKeyInfo and the key
/// id kube-apiserver derives from it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    numbers: PublicNumbers,
    spki_der: Vec<u8>,
    kid: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("kid", &self.kid)
            .finish()
    }
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo (the `PUBLIC KEY` PEM block).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let spki =
            SubjectPublicKeyInfoRef::from_der(der).map_err(der_error("SubjectPublicKeyInfo"))?;
        let key_bytes = spki.subject_public_key.raw_bytes();
        if spki.algorithm.oid == RSA_ENCRYPTION {
            let rsa = pkcs1::RsaPublicKey::from_der(key_bytes)
                .map_err(der_error("PKCS#1 RSA public key"))?;
            PublicKey::from_rsa(rsa.modulus.as_bytes(), rsa.public_exponent.as_bytes())
        } else if spki.algorithm.oid == EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(oid) if oid == SECP256R1 => PublicKey::from_ec_point(key_bytes),
                Some(oid) => Err(KeyError::UnsupportedCurve {
                    curve: oid.to_string(),
                }),
                None => Err(KeyError::UnsupportedCurve {
                    curve: "(no named curve)".into(),
                }),
            }
        } else {
            Err(KeyError::UnsupportedKeyType {
                oid: spki.algorithm.oid.to_string(),
            })
        }
    }

    /// Builds an RSA public key from its big-endian modulus and exponent.
    pub fn from_rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = bit_len(n);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(KeyError::RsaKeySize { bits });
        }
        if e.is_empty() || e.len() > 8 || e.last().is_some_and(|b| b & 1 == 0) {
            return Err(KeyError::Der {
                what: "RSA public key",
                detail: "the public exponent must be odd and at most 64 bits".into(),
            });
        }
        let pkcs1 = pkcs1::RsaPublicKey {
            modulus: UintRef::new(n).map_err(der_error("RSA modulus"))?,
            public_exponent: UintRef::new(e).map_err(der_error("RSA exponent"))?,
        }
        .to_der()
        .map_err(der_error("RSA public key"))?;
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::from(Null)),
            },
            subject_public_key: BitString::from_bytes(&pkcs1)
                .map_err(der_error("RSA public key"))?,
        };
        let numbers = PublicNumbers::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        };
        PublicKey::with_spki(numbers, &spki)
    }

    /// Builds a P-256 public key from its uncompressed SEC1 point (`04 || x || y`).
    pub fn from_ec_point(point: &[u8]) -> Result<PublicKey, KeyError> {
        let [0x04, coordinates @ ..] = point else {
            return Err(KeyError::BadEcPoint);
        };
        let (Ok(x), Ok(y)) = (
            <[u8; 32]>::try_from(coordinates.get(..32).unwrap_or_default()),
            <[u8; 32]>::try_from(coordinates.get(32..).unwrap_or_default()),
        ) else {
            return Err(KeyError::BadEcPoint);
        };
        PublicKey::from_ec_coordinates(x, y)
    }

    /// Builds a P-256 public key from its affine coordinates. Whether the point
    /// is on the curve is checked by the crypto backend when it is used.
    pub fn from_ec_coordinates(x: [u8; 32], y: [u8; 32]) -> Result<PublicKey, KeyError> {
        let mut point = Vec::with_capacity(65);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: EC_PUBLIC_KEY,
                parameters: Some(Any::encode_from(&SECP256R1).map_err(der_error("curve"))?),
            },
            subject_public_key: BitString::from_bytes(&point).map_err(der_error("EC point"))?,
        };
        PublicKey::with_spki(PublicNumbers::EcP256 { x, y }, &spki)
    }

    fn with_spki(
        numbers: PublicNumbers,
        spki: &SubjectPublicKeyInfoOwned,
    ) -> Result<PublicKey, KeyError> {
        let spki_der = spki.to_der().map_err(der_error("SubjectPublicKeyInfo"))?;
        let kid = KeyId::new(URL_SAFE_NO_PAD.encode(Sha256::digest(&spki_der)));
        Ok(PublicKey {
            numbers,
            spki_der,
            kid,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.numbers {
            PublicNumbers::Rsa { .. } => Algorithm::RS256,
            PublicNumbers::EcP256 { .. } => Algorithm::ES256,
        }
    }

    /// The key id kube-apiserver derives for this key.
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    pub fn numbers(&self) -> &PublicNumbers {
        &self.numbers
    }

    /// The canonical DER SubjectPublicKeyInfo (PKIX).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The uncompressed SEC1 point (P-256 only).
    pub fn ec_point(&self) -> Option<Vec<u8>> {
        match &self.numbers {
            PublicNumbers::EcP256 { x, y } => {
                let mut point = vec![0x04];
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                Some(point)
            }
            PublicNumbers::Rsa { .. } => None,
        }
    }

    /// The size of the key in bits.
    pub fn bits(&self) -> usize {
        match &self.numbers {
            PublicNumbers::Rsa { n, .. } => bit_len(n),
            PublicNumbers::EcP256 { .. } => 256,
        }
    }

    /// The key as a PKIX `PUBLIC KEY` PEM block.
    pub fn to_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PUBLIC KEY", self.spki_der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn bit_len(be: &[u8]) -> usize {
    let be = strip_leading_zeros(be);
    match be.first() {
        Some(top) => be.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// How a private key was encoded, so it is written back the way it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrivateKeyFormat {
    /// `PRIVATE KEY`: PKCS#8, what `ksa keys generate` writes.
    Pkcs8,
    /// `RSA PRIVATE KEY`: PKCS#1, what kubeadm writes for `sa.key`.
    Pkcs1,
    /// `EC PRIVATE KEY`: SEC1.
    Sec1,
}

impl PrivateKeyFormat {
    pub fn pem_label(self) -> &'static str {
        match self {
            PrivateKeyFormat::Pkcs8 => "PRIVATE KEY",
            PrivateKeyFormat::Pkcs1 => "RSA PRIVATE KEY",
            PrivateKeyFormat::Sec1 => "EC PRIVATE KEY",
        }
    }
}

/// A private key's DER bytes, with its public half. The bytes are zeroized on
/// drop, and neither `Debug` nor any other formatting shows them.
///
/// Only a crypto backend that is constant-time (aws-lc-rs) ever turns these
/// bytes into a signing key; the pure-Rust `rsa` crate never sees them.
#[derive(Clone)]
pub struct PrivateKey {
    der: Zeroizing<Vec<u8>>,
    format: PrivateKeyFormat,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.public.algorithm())
            .field("kid", self.public.kid())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads a private key from DER in the given format, deriving its public
    /// half from the structure itself.
    pub fn from_der(der: &[u8], format: PrivateKeyFormat) -> Result<PrivateKey, KeyError> {
        let public = match format {
            PrivateKeyFormat::Pkcs1 => rsa_public_of_pkcs1(der)?,
            PrivateKeyFormat::Sec1 => ec_public_of_sec1(der)?,
            PrivateKeyFormat::Pkcs8 => {
                let info = pkcs8::PrivateKeyInfo::from_der(der)
                    .map_err(der_error("PKCS#8 private key"))?;
                if info.algorithm.oid == RSA_ENCRYPTION {
                    rsa_public_of_pkcs1(info.private_key)?
                } else if info.algorithm.oid == EC_PUBLIC_KEY {
                    let curve = info
                        .algorithm
                        .parameters
                        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
                    if curve != Some(SECP256R1) {
                        return Err(KeyError::UnsupportedCurve {
                            curve: curve.map_or("(no named curve)".into(), |c| c.to_string()),
                        });
                    }
                    ec_public_of_sec1(info.private_key)?
                } else {
                    return Err(KeyError::UnsupportedKeyType {
                        oid: info.algorithm.oid.to_string(),
                    });
                }
            }
        };
        Ok(PrivateKey {
            der: Zeroizing::new(der.to_vec()),
            format,
            public,
        })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    pub fn kid(&self) -> &KeyId {
        self.public.kid()
    }

    pub fn format(&self) -> PrivateKeyFormat {
        self.format
    }

    /// The DER bytes, for a crypto backend to load. Never log them.
    pub fn secret_der(&self) -> &[u8] {
        &self.der
    }

    /// The key as one PEM block in the format it was read or generated in.
    /// The returned string holds secret material; it is zeroized on drop.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem::encode_config(
            &pem::Pem::new(self.format.pem_label(), self.der.to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ))
    }
}

fn rsa_public_of_pkcs1(der: &[u8]) -> Result<PublicKey, KeyError> {
    let key = pkcs1::RsaPrivateKey::from_der(der).map_err(der_error("PKCS#1 RSA private key"))?;
    PublicKey::from_rsa(key.modulus.as_bytes(), key.public_exponent.as_bytes())
}

fn ec_public_of_sec1(der: &[u8]) -> Result<PublicKey, KeyError> {
    let key = sec1::EcPrivateKey::from_der(der).map_err(der_error("SEC1 EC private key"))?;
    if let Some(sec1::EcParameters::NamedCurve(curve)) = key.parameters
        && curve != SECP256R1
    {
        return Err(KeyError::UnsupportedCurve {
            curve: curve.to_string(),
        });
    }
    let point = key.public_key.ok_or(KeyError::MissingEcPublicKey)?;
    PublicKey::from_ec_point(point)
}

/// One key found in a PEM file.
#[derive(Clone, Debug)]
pub enum PemKey {
    Public(PublicKey),
    Private(PrivateKey),
}

impl PemKey {
    pub fn public_key(&self) -> &PublicKey {
        match self {
            PemKey::Public(key) => key,
            PemKey::Private(key) => key.public_key(),
        }
    }
}

/// The keys of a PEM file, in file order, and the labels of blocks skipped.
#[derive(Clone, Debug, Default)]
pub struct PemKeys {
    pub keys: Vec<PemKey>,
    pub skipped_labels: Vec<String>,
}

impl PemKeys {
    /// The public halves of every key, as kube-apiserver's
    /// `--service-account-key-file` reads them.
    pub fn public_keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter().map(PemKey::public_key)
    }

    /// The private keys, in file order.
    pub fn private_keys(&self) -> impl Iterator<Item = &PrivateKey> {
        self.keys.iter().filter_map(|k| match k {
            PemKey::Private(key) => Some(key),
            PemKey::Public(_) => None,
        })
    }
}

/// Reads every key in PEM text. Fails when a key block is malformed or when
/// the text holds no key at all, as kube-apiserver does.
pub fn parse_pem(text: &[u8]) -> Result<PemKeys, KeyError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(KeyError::TooLarge {
            len: text.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    let blocks = pem::parse_many(text).map_err(|e| KeyError::Pem(e.to_string()))?;
    // The pem crate passes over a BEGIN line that no END line closes.
    let begun = text.windows(11).filter(|w| w == b"-----BEGIN ").count();
    if begun > blocks.len() {
        return Err(KeyError::Pem(
            "a -----BEGIN line has no matching -----END line (is the file cut short?)".into(),
        ));
    }
    let mut found = PemKeys::default();
    for block in &blocks {
        let key = match block.tag() {
            "PUBLIC KEY" => PemKey::Public(PublicKey::from_spki_der(block.contents())?),
            "PRIVATE KEY" => PemKey::Private(PrivateKey::from_der(
                block.contents(),
                PrivateKeyFormat::Pkcs8,
            )?),
            "RSA PRIVATE KEY" => PemKey::Private(PrivateKey::from_der(
                block.contents(),
                PrivateKeyFormat::Pkcs1,
            )?),
            "EC PRIVATE KEY" => PemKey::Private(PrivateKey::from_der(
                block.contents(),
                PrivateKeyFormat::Sec1,
            )?),
            other => {
                found.skipped_labels.push(other.to_owned());
                continue;
            }
        };
        found.keys.push(key);
    }
    if found.keys.is_empty() {
        return Err(KeyError::NoKeys {
            labels: found.skipped_labels,
        });
    }
    Ok(found)
}

/// Writes public keys as concatenated `PUBLIC KEY` blocks: the form
/// `--service-account-key-file` reads.
pub fn public_keys_to_pem<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> String {
    keys.into_iter().map(PublicKey::to_pem).collect()
}
