//! The pure-Rust RSA verifier (num-bigint exponentiation, byte-for-byte
//! comparison with the expected encoding) against two oracles: aws-lc-rs and
//! the `rsa` crate's own PKCS#1 v1.5 verifier. On genuine signatures and on
//! every kind of forgery the three must agree.

#![cfg(all(feature = "aws-lc", feature = "rust-crypto"))]

use ksa_core::crypto::{AwsLc, CryptoBackend as _, RustCrypto, SigningBackend as _};
use ksa_core::key::{KeySpec, PublicNumbers};
use proptest::prelude::*;
use rsa::signature::Verifier as _;

struct Oracles {
    /// The private exponent, to sign encodings no honest signer makes.
    d: num_bigint::BigUint,
    ours: Box<dyn ksa_core::crypto::VerifyingKey>,
    aws: Box<dyn ksa_core::crypto::VerifyingKey>,
    rsa: rsa::pkcs1v15::VerifyingKey<sha2::Sha256>,
    signer: Box<dyn ksa_core::crypto::SigningKey>,
    modulus: Vec<u8>,
}

fn oracles(spec: KeySpec) -> Oracles {
    let aws = AwsLc::new();
    let key = aws.generate(spec).expect("key generation");
    let PublicNumbers::Rsa { n, e } = key.public_key().numbers() else {
        panic!("an RSA key")
    };
    let private = pkcs8::PrivateKeyInfo::try_from(key.secret_der())
        .ok()
        .and_then(|info| pkcs1::RsaPrivateKey::try_from(info.private_key).ok())
        .or_else(|| pkcs1::RsaPrivateKey::try_from(key.secret_der()).ok())
        .expect("a PKCS#8 or PKCS#1 RSA key");
    let d = num_bigint::BigUint::from_bytes_be(private.private_exponent.as_bytes());
    let public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(n),
        rsa::BigUint::from_bytes_be(e),
    )
    .expect("rsa accepts the key");
    Oracles {
        d,
        ours: RustCrypto.verifying_key(key.public_key()).expect("ours"),
        aws: aws.verifying_key(key.public_key()).expect("aws-lc"),
        rsa: rsa::pkcs1v15::VerifyingKey::new(public),
        signer: aws.signing_key(&key).expect("signer"),
        modulus: n.to_vec(),
    }
}

impl Oracles {
    /// Raw RSA with the private key: `encoded^d mod n`.
    fn sign_raw(&self, encoded: &[u8]) -> Vec<u8> {
        let n = num_bigint::BigUint::from_bytes_be(&self.modulus);
        let s = num_bigint::BigUint::from_bytes_be(encoded).modpow(&self.d, &n);
        let mut bytes = s.to_bytes_be();
        while bytes.len() < self.modulus.len() {
            bytes.insert(0, 0);
        }
        bytes
    }

    /// What every verifier says; panics when they disagree.
    fn verdict(&self, message: &[u8], signature: &[u8]) -> bool {
        let ours = self.ours.verify(message, signature);
        let aws = self.aws.verify(message, signature);
        let rsa = rsa::pkcs1v15::Signature::try_from(signature)
            .is_ok_and(|s| self.rsa.verify(message, &s).is_ok());
        assert_eq!(ours, aws, "ours vs aws-lc on {signature:02x?}");
        assert_eq!(ours, rsa, "ours vs the rsa crate on {signature:02x?}");
        ours
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn genuine_and_altered_signatures_get_the_same_verdict(
        message in proptest::collection::vec(any::<u8>(), 0..300),
        position in any::<prop::sample::Index>(),
        flip in 1u8..,
    ) {
        thread_local! {
            static KEY: Oracles = oracles(KeySpec::Rsa2048);
        }
        KEY.with(|key| {
            let signature = key.signer.sign(&message).expect("signs");
            prop_assert!(key.verdict(&message, &signature));
            let mut altered = signature.clone();
            let at = position.index(altered.len());
            altered[at] ^= flip;
            prop_assert!(!key.verdict(&message, &altered));
            let mut other_message = message.clone();
            other_message.push(0);
            prop_assert!(!key.verdict(&other_message, &signature));
            Ok(())
        })?;
    }
}

const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA1_DIGEST_INFO: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];

/// `0x00 0x01 0xff.. 0x00 T`, k bytes, with T = digest info and digest.
fn encoding(k: usize, block_type: u8, info: &[u8], digest: &[u8], trailer: &[u8]) -> Vec<u8> {
    let mut t = info.to_vec();
    t.extend_from_slice(digest);
    t.extend_from_slice(trailer);
    let mut encoded = vec![0x00, block_type];
    encoded.resize(k - t.len() - 1, 0xff);
    encoded.push(0x00);
    encoded.extend_from_slice(&t);
    encoded
}

#[test]
fn signatures_over_wrong_encodings_are_refused_by_all() {
    use sha2::Digest as _;
    let key = oracles(KeySpec::Rsa2048);
    let k = key.modulus.len();
    let message = b"header.claims";
    let digest = sha2::Sha256::digest(message);
    let good = encoding(k, 0x01, &SHA256_DIGEST_INFO, &digest, &[]);
    assert!(
        key.verdict(message, &key.sign_raw(&good)),
        "the honest encoding"
    );

    let mut wrong_padding = good.clone();
    wrong_padding[5] = 0xfe;
    let mut short_padding = vec![0x00, 0x01, 0xff, 0x00];
    short_padding.resize(k - SHA256_DIGEST_INFO.len() - digest.len(), 0x5a);
    short_padding.extend_from_slice(&SHA256_DIGEST_INFO);
    short_padding.extend_from_slice(&digest);
    let other_digest = sha2::Sha256::digest(b"other");
    let sha1_digest = [0x11; 20];
    let forged = [
        encoding(k, 0x02, &SHA256_DIGEST_INFO, &digest, &[]),
        wrong_padding,
        short_padding,
        encoding(k, 0x01, &SHA256_DIGEST_INFO, &other_digest, &[]),
        encoding(k, 0x01, &SHA1_DIGEST_INFO, &sha1_digest, &[]),
        // Garbage after the digest (the shape of Bleichenbacher's forgery).
        encoding(k, 0x01, &SHA256_DIGEST_INFO, &digest, &[0xab; 8]),
        // The digest without its DigestInfo.
        encoding(k, 0x01, &[], &digest, &[]),
    ];
    for (index, encoded) in forged.iter().enumerate() {
        assert_eq!(encoded.len(), k);
        assert!(
            !key.verdict(message, &key.sign_raw(encoded)),
            "forgery {index}"
        );
    }
}

#[test]
fn malformed_signatures_are_refused_by_all() {
    for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072] {
        let key = oracles(spec);
        let message = b"header.claims";
        let signature = key.signer.sign(message).expect("signs");
        let k = signature.len();
        let mut with_leading_zero = vec![0u8];
        with_leading_zero.extend_from_slice(&signature);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            signature[1..].to_vec(),
            with_leading_zero,
            vec![0; k],
            vec![1; k],
            vec![0xff; k],
            // s = n and s = n + 1: not less than the modulus.
            key.modulus.clone(),
            {
                let mut above = key.modulus.clone();
                *above.last_mut().expect("bytes") += 1;
                above
            },
        ];
        for case in cases {
            assert!(!key.verdict(message, &case), "{} bytes", case.len());
        }
        assert!(key.verdict(message, &signature));
    }
}
