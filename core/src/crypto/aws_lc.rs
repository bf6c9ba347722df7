//! The aws-lc-rs backend: constant-time key generation and signing, and fast
//! verification with keys parsed once.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
};

use super::{CryptoBackend, SignError, SigningBackend, SigningKey, VerifyingKey};
use crate::KeyId;
use crate::key::{Algorithm, KeyError, KeySpec, PrivateKey, PrivateKeyFormat, PublicKey};

/// The aws-lc-rs backend. It holds the system random number generator, used
/// for key generation and ECDSA nonces.
#[derive(Debug, Default, Clone)]
pub struct AwsLc {
    rng: SystemRandom,
}

impl AwsLc {
    pub fn new() -> AwsLc {
        AwsLc::default()
    }
}

struct Verifier(ParsedPublicKey);

impl VerifyingKey for Verifier {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify_sig(message, signature).is_ok()
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct Signer {
    pair: Pair,
    kid: KeyId,
    rng: SystemRandom,
}

impl SigningKey for Signer {
    fn algorithm(&self) -> Algorithm {
        match self.pair {
            Pair::Rsa(_) => Algorithm::RS256,
            Pair::Ec(_) => Algorithm::ES256,
        }
    }

    fn kid(&self) -> &KeyId {
        &self.kid
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                    .map_err(|_| SignError::Backend)?;
                Ok(signature)
            }
            Pair::Ec(pair) => pair
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError::Backend),
        }
    }
}

fn rejected(e: impl std::fmt::Display) -> KeyError {
    KeyError::Rejected(e.to_string())
}

impl CryptoBackend for AwsLc {
    fn verifying_key(&self, key: &PublicKey) -> Result<Box<dyn VerifyingKey>, KeyError> {
        let parsed = match key.algorithm() {
            Algorithm::RS256 => ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.spki_der()),
            Algorithm::ES256 => ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.spki_der()),
        }
        .map_err(rejected)?;
        Ok(Box::new(Verifier(parsed)))
    }
}

impl SigningBackend for AwsLc {
    fn generate(&self, spec: KeySpec) -> Result<PrivateKey, KeyError> {
        let pkcs8 = match spec {
            KeySpec::EcP256 => {
                let pair =
                    EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(rejected)?;
                pair.to_pkcs8v1().map_err(rejected)?.as_ref().to_vec()
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let size = match spec {
                    KeySpec::Rsa3072 => KeySize::Rsa3072,
                    KeySpec::Rsa4096 => KeySize::Rsa4096,
                    _ => KeySize::Rsa2048,
                };
                let pair = RsaKeyPair::generate(size).map_err(rejected)?;
                pair.as_der().map_err(rejected)?.as_ref().to_vec()
            }
        };
        // The DER buffer is moved into a zeroizing container by `from_der`'s
        // copy; wipe this one too.
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        PrivateKey::from_der(&pkcs8, PrivateKeyFormat::Pkcs8)
    }

    fn signing_key(&self, key: &PrivateKey) -> Result<Box<dyn SigningKey>, KeyError> {
        let der = key.secret_der();
        let pair = match (key.algorithm(), key.format()) {
            (Algorithm::RS256, PrivateKeyFormat::Pkcs1) => {
                Pair::Rsa(RsaKeyPair::from_der(der).map_err(rejected)?)
            }
            (Algorithm::RS256, _) => Pair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(rejected)?),
            (Algorithm::ES256, _) => Pair::Ec(
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(rejected)?,
            ),
        };
        // Refuse a key whose arithmetic does not match the public half we
        // derived from its structure: the kid would lie about the signer.
        let backend_public = match &pair {
            Pair::Rsa(p) => {
                PublicKey::from_spki_der(p.public_key().as_der().map_err(rejected)?.as_ref())?
            }
            Pair::Ec(p) => PublicKey::from_ec_point(p.public_key().as_ref())?,
        };
        if backend_public != *key.public_key() {
            return Err(KeyError::Rejected(
                "the public key stored with the private key does not match it".into(),
            ));
        }
        Ok(Box::new(Signer {
            pair,
            kid: key.kid().clone(),
            rng: self.rng.clone(),
        }))
    }
}
