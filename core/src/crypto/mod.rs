//! The seam between the pure core and cryptography.
//!
//! The core never draws randomness or touches a private key's arithmetic
//! itself. Verification goes through [`CryptoBackend`]; key generation and
//! signing through [`SigningBackend`]. Two backends exist:
//! - [`AwsLc`] (feature `aws-lc`): aws-lc-rs, constant-time, for everything
//!   native: generation, signing and fast verification.
//! - [`RustCrypto`] (feature `rust-crypto`): a pure-Rust verifier for wasm32.
//!   It only ever sees public keys; it cannot sign.
//!
//! Both pass the same verification vectors (see the tests of [`crate::token`]).

#[cfg(feature = "aws-lc")]
mod aws_lc;
#[cfg(feature = "rust-crypto")]
mod rust_crypto;

#[cfg(feature = "aws-lc")]
pub use aws_lc::AwsLc;
#[cfg(feature = "rust-crypto")]
pub use rust_crypto::RustCrypto;

use crate::KeyId;
use crate::key::{Algorithm, KeyError, KeySpec, PrivateKey, PublicKey};

/// A public key loaded into a backend, ready to check signatures. Loading
/// happens once per key, not once per token.
pub trait VerifyingKey: Send + Sync {
    /// Whether `signature` is a valid JWS signature (PKCS#1 v1.5 for RS256,
    /// fixed-size `r || s` for ES256) of `message` under this key.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool;
}

/// A private key loaded into a backend, ready to sign. Loading happens once
/// per key, not once per token.
pub trait SigningKey: Send + Sync {
    fn algorithm(&self) -> Algorithm;
    fn kid(&self) -> &KeyId;
    /// Signs `message` (the JWS signing input), returning the JWS signature.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// What every backend can do: check signatures.
pub trait CryptoBackend: Send + Sync {
    fn verifying_key(&self, key: &PublicKey) -> Result<Box<dyn VerifyingKey>, KeyError>;
}

/// What a native backend can do besides: make keys and sign.
pub trait SigningBackend: CryptoBackend {
    fn generate(&self, spec: KeySpec) -> Result<PrivateKey, KeyError>;
    fn signing_key(&self, key: &PrivateKey) -> Result<Box<dyn SigningKey>, KeyError>;
}

/// Why a signature could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    #[error("the crypto backend failed to sign")]
    Backend,
}
