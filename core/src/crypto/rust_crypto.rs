//! A pure-Rust verifier for wasm32, where aws-lc-rs does not build. It only
//! takes public keys: the `rsa` crate's private-key operations have a known
//! timing side channel (RUSTSEC-2023-0071), so no private key ever reaches it.
//!
//! RSA: the `rsa` crate checks the public key (size, exponent) and supplies
//! the SHA-256 DigestInfo; the public exponentiation uses `num-bigint`,
//! whose multiplication is about six times faster than that of the
//! `num-bigint-dig` inside rsa 0.9 (2048-bit modulus, e = 65537: 76 µs
//! against 492 µs natively), which the in-browser target of 3,000
//! verifications per second needs. Verification follows RFC 8017 section
//! 8.2.2: the signature raised to e modulo n must equal, byte for byte, the
//! EMSA-PKCS1-v1_5 encoding of the message's digest; nothing is parsed.

use num_bigint::BigUint;
use p256::ecdsa::signature::Verifier as _;
use sha2::{Digest as _, Sha256};

use super::{CryptoBackend, VerifyingKey};
use crate::key::{KeyError, MAX_RSA_BITS, PublicKey, PublicNumbers};

/// The pure-Rust verifier.
#[derive(Debug, Default, Clone, Copy)]
pub struct RustCrypto;

/// RSASSA-PKCS1-v1_5 with SHA-256, for one public key.
struct RsaVerifier {
    n: BigUint,
    e: BigUint,
    /// The modulus length in bytes: every signature has exactly this length.
    k: usize,
    /// The encoding every valid signature opens with, up to the digest:
    /// `0x01 0xff.. 0x00 DigestInfo` (the leading `0x00` is not kept, as
    /// `to_bytes_be` drops it from the recovered value too).
    encoding_prefix: Vec<u8>,
}

impl RsaVerifier {
    fn new(n: &[u8], e: &[u8]) -> Result<RsaVerifier, KeyError> {
        // The rsa crate's checks: modulus size, exponent range.
        rsa::RsaPublicKey::new_with_max_size(
            rsa::BigUint::from_bytes_be(n),
            rsa::BigUint::from_bytes_be(e),
            MAX_RSA_BITS,
        )
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
        let n = BigUint::from_bytes_be(n);
        let k = n.bits().div_ceil(8) as usize;
        let digest_info = rsa::pkcs1v15::Pkcs1v15Sign::new::<Sha256>().prefix;
        let tail = digest_info.len() + Sha256::output_size();
        // RFC 8017 9.2 step 3: at least 8 bytes of padding.
        let padding = k
            .checked_sub(tail + 3)
            .filter(|p| *p >= 8)
            .ok_or_else(|| KeyError::Rejected(format!("a {k}-byte modulus is too short")))?;
        let mut encoding_prefix = Vec::with_capacity(k - Sha256::output_size());
        encoding_prefix.push(0x01);
        encoding_prefix.resize(1 + padding, 0xff);
        encoding_prefix.push(0x00);
        encoding_prefix.extend_from_slice(&digest_info);
        Ok(RsaVerifier {
            n,
            e: BigUint::from_bytes_be(e),
            k,
            encoding_prefix,
        })
    }
}

impl VerifyingKey for RsaVerifier {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        if signature.len() != self.k {
            return false;
        }
        let s = BigUint::from_bytes_be(signature);
        if s >= self.n {
            return false;
        }
        // Left-to-right square and multiply; every value here is public.
        let mut m = BigUint::from(1u8);
        for bit in (0..self.e.bits()).rev() {
            m = &m * &m % &self.n;
            if self.e.bit(bit) {
                m = m * &s % &self.n;
            }
        }
        let recovered = m.to_bytes_be();
        let digest = Sha256::digest(message);
        recovered.len() == self.encoding_prefix.len() + digest.len()
            && recovered.starts_with(&self.encoding_prefix)
            && recovered.ends_with(&digest)
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
            PublicNumbers::Rsa { n, e } => Ok(Box::new(RsaVerifier::new(n, e)?)),
            PublicNumbers::EcP256 { .. } => {
                let point = key.ec_point().unwrap_or_default();
                let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| KeyError::BadEcPoint)?;
                Ok(Box::new(EcVerifier(verifying)))
            }
        }
    }
}
