//! A private key is what its arithmetic is, not what its structure says.
//! A SEC1 key carries its public point beside the private scalar, and ksa
//! derives the kid from that point: a key with the cluster's point and a
//! scalar of someone else's has the cluster's kid. The backend refuses to
//! load it (`SigningBackend::signing_key`), which is what the controller's
//! check of an imported key and `ksa keys import` rely on.

#![cfg(feature = "aws-lc")]

use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey, PrivateKeyFormat};
use sec1::der::{Decode as _, Encode as _};

/// The SEC1 structure inside a generated key's PKCS#8.
fn sec1_of(key: &PrivateKey) -> Vec<u8> {
    let info = pkcs8::PrivateKeyInfo::from_der(key.secret_der()).expect("PKCS#8");
    info.private_key.to_vec()
}

#[test]
fn a_key_with_another_keys_public_point_has_its_kid_but_is_refused() {
    let backend = AwsLc::new();
    let cluster = backend.generate(KeySpec::EcP256).expect("key");
    let attacker = backend.generate(KeySpec::EcP256).expect("key");
    let cluster_sec1 = sec1_of(&cluster);
    let attacker_sec1 = sec1_of(&attacker);
    let cluster_ec = sec1::EcPrivateKey::from_der(&cluster_sec1).expect("SEC1");
    let attacker_ec = sec1::EcPrivateKey::from_der(&attacker_sec1).expect("SEC1");
    let forged = sec1::EcPrivateKey {
        private_key: attacker_ec.private_key,
        parameters: attacker_ec.parameters,
        public_key: cluster_ec.public_key,
    }
    .to_der()
    .expect("DER");
    let forged = PrivateKey::from_der(&forged, PrivateKeyFormat::Sec1).expect("parses");
    assert_eq!(
        forged.kid(),
        cluster.kid(),
        "the structure lends it the kid"
    );
    assert!(backend.signing_key(&forged).is_err(), "but it is refused");
    assert!(backend.signing_key(&cluster).is_ok());
}
