//! The key set a signer serves: one signing key and the public keys
//! kube-apiserver trusts, read from the same `sa.key` and `sa.pub` the
//! controller publishes for API servers that read key files.

use std::time::SystemTime;

use ksa_core::KeyId;
use ksa_core::crypto::{AwsLc, SigningBackend as _, SigningKey};
use ksa_core::key::{KeyError, PublicKey, parse_pem};
use ksa_core::token;

/// Why a key set was refused; the signer then keeps serving the previous one.
#[derive(Debug, thiserror::Error)]
pub enum SignerKeysError {
    #[error("sa.key: {0}")]
    SigningPem(KeyError),
    #[error("sa.pub: {0}")]
    PublicPem(KeyError),
    #[error("sa.key holds no private key")]
    NoSigningKey,
    #[error("sa.key holds {0} private keys; exactly one signs")]
    SeveralSigningKeys(usize),
    #[error("sa.pub holds no public key")]
    NoPublicKeys,
    #[error(
        "the signing key {kid} is not among the public keys of sa.pub; \
         the signer never signs with a key API servers do not trust"
    )]
    SigningKeyNotTrusted { kid: KeyId },
    #[error("the signing key cannot be loaded: {0}")]
    Backend(KeyError),
}

/// A loaded key set. `Debug` names kids only.
pub struct SignerKeys {
    signing: Box<dyn SigningKey>,
    /// The base64url JOSE header every token gets: `alg`, `kid`, `typ`
    /// (the core's, for this key).
    header: String,
    trusted: Vec<PublicKey>,
    /// When this key set was first served.
    pub data_timestamp: SystemTime,
}

impl std::fmt::Debug for SignerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerKeys")
            .field("signing", self.signing.kid())
            .field("trusted", &self.trusted_kids())
            .finish()
    }
}

impl SignerKeys {
    /// Reads `sa.key` (one private key) and `sa.pub` (the trusted public
    /// keys, in order) and checks that the signing key is trusted.
    pub fn from_pem(
        sa_key: &[u8],
        sa_pub: &[u8],
        now: SystemTime,
    ) -> Result<SignerKeys, SignerKeysError> {
        let private = parse_pem(sa_key).map_err(SignerKeysError::SigningPem)?;
        let mut private_keys = private.private_keys();
        let signing = private_keys.next().ok_or(SignerKeysError::NoSigningKey)?;
        let extra = private_keys.count();
        if extra > 0 {
            return Err(SignerKeysError::SeveralSigningKeys(extra + 1));
        }
        let trusted: Vec<PublicKey> = parse_pem(sa_pub)
            .map_err(SignerKeysError::PublicPem)?
            .public_keys()
            .cloned()
            .collect();
        if trusted.is_empty() {
            return Err(SignerKeysError::NoPublicKeys);
        }
        if !trusted.iter().any(|k| k.kid() == signing.kid()) {
            return Err(SignerKeysError::SigningKeyNotTrusted {
                kid: signing.kid().clone(),
            });
        }
        let signing = AwsLc::new()
            .signing_key(signing)
            .map_err(SignerKeysError::Backend)?;
        Ok(SignerKeys {
            header: token::encoded_header(signing.as_ref(), Some("JWT")),
            signing,
            trusted,
            data_timestamp: now,
        })
    }

    pub fn signing_kid(&self) -> &KeyId {
        self.signing.kid()
    }

    pub fn trusted(&self) -> &[PublicKey] {
        &self.trusted
    }

    pub fn trusted_kids(&self) -> Vec<&KeyId> {
        self.trusted.iter().map(PublicKey::kid).collect()
    }

    /// Whether `other` signs with the same key and trusts the same keys.
    pub fn same_keys(&self, other: &SignerKeys) -> bool {
        self.signing_kid() == other.signing_kid() && self.trusted_kids() == other.trusted_kids()
    }

    /// Signs base64url `claims` as kube-apiserver asks: returns the header
    /// and the signature over `header.claims`, both base64url.
    pub fn sign(&self, claims: &str) -> Result<(String, String), SignRefusal> {
        if claims.is_empty() {
            return Err(SignRefusal::BadClaims("claims are empty"));
        }
        if claims.len() > ksa_core::token::MAX_TOKEN_BYTES {
            return Err(SignRefusal::BadClaims("claims exceed 64 KiB"));
        }
        if !claims
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SignRefusal::BadClaims(
                "claims are not unpadded base64url text",
            ));
        }
        let signature = token::sign_encoded(&self.header, claims, self.signing.as_ref())
            .map_err(|e| SignRefusal::Failed(e.to_string()))?;
        Ok((self.header.clone(), signature))
    }
}

/// Why a Sign call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignRefusal {
    #[error("{0}")]
    BadClaims(&'static str),
    #[error("signing failed: {0}")]
    Failed(String),
}
