//! A pure-Rust verifier for wasm32, where aws-lc-rs does not build. It only
//! takes public keys: the `rsa` crate's private-key operations have a known
//! timing side channel (RUSTSEC-2023-0071), so no private key ever reaches it.

use p256::ecdsa::signature::Verifier as _;
use rsa::BigUint;
use rsa::pkcs1v15;
use sha2::Sha256;

use super::{CryptoBackend, VerifyingKey};
use crate::key::{KeyError, MAX_RSA_BITS, PublicKey, PublicNumbers};

/// The pure-Rust verifier.
#[derive(Debug, Default, Clone, Copy)]
pub struct RustCrypto;

struct RsaVerifier(pkcs1v15::VerifyingKey<Sha256>);

impl VerifyingKey for RsaVerifier {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        pkcs1v15::Signature::try_from(signature)
            .is_ok_and(|signature| self.0.verify(message, &signature).is_ok())
    }
}

struct EcVerifier(p256::ecdsa::VerifyingKey);

impl VerifyingKey for EcVerifier {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        p256::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|signature| self.0.verify(message, &signature).is_ok())
    }
}

impl CryptoBackend for RustCrypto {
    fn verifying_key(&self, key: &PublicKey) -> Result<Box<dyn VerifyingKey>, KeyError> {
        match key.numbers() {
            PublicNumbers::Rsa { n, e } => {
                let public = rsa::RsaPublicKey::new_with_max_size(
                    BigUint::from_bytes_be(n),
                    BigUint::from_bytes_be(e),
                    MAX_RSA_BITS,
                )
                .map_err(|e| KeyError::Rejected(e.to_string()))?;
                Ok(Box::new(RsaVerifier(pkcs1v15::VerifyingKey::new(public))))
            }
            PublicNumbers::EcP256 { .. } => {
                let point = key.ec_point().unwrap_or_default();
                let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| KeyError::BadEcPoint)?;
                Ok(Box::new(EcVerifier(verifying)))
            }
        }
    }
}
