//! Property tests of tokens: whatever the claims, a minted token verifies,
//! and no single changed byte survives verification.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ksa_core::crypto::{AwsLc, SigningBackend as _, SigningKey};
use ksa_core::key::{KeySpec, PrivateKey};
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{self, Claims, Expectations, NoExpiry};
use proptest::prelude::*;

struct Fixture {
    rsa: PrivateKey,
    ec: PrivateKey,
    signers: Vec<Box<dyn SigningKey>>,
    keys: KeySet,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let aws = AwsLc::new();
        let rsa = aws.generate(KeySpec::Rsa2048).expect("rsa");
        let ec = aws.generate(KeySpec::EcP256).expect("ec");
        let signers = vec![
            aws.signing_key(&rsa).expect("rsa"),
            aws.signing_key(&ec).expect("ec"),
        ];
        let keys = KeySet::new(
            [
                TrustedKey::derived(rsa.public_key().clone()),
                TrustedKey::derived(ec.public_key().clone()),
            ],
            &aws,
        )
        .expect("keys");
        Fixture {
            rsa,
            ec,
            signers,
            keys,
        }
    })
}

fn claims() -> impl Strategy<Value = Claims> {
    (
        proptest::option::of("[ -~]{0,40}"),
        proptest::option::of("[a-z:.-]{1,40}"),
        proptest::option::of(prop::collection::vec("[ -~]{0,20}", 0..4)),
        proptest::option::of(0..4_000_000_000i64),
        prop::collection::btree_map("[a-z]{1,8}", "\\PC{0,16}", 0..4),
    )
        .prop_map(|(iss, sub, aud, iat, other)| Claims {
            iss,
            sub,
            aud,
            iat,
            other: other
                .into_iter()
                .map(|(k, v)| (format!("x-{k}"), serde_json::Value::String(v)))
                .collect::<BTreeMap<_, _>>(),
            ..Claims::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn minted_tokens_verify_and_any_changed_byte_fails(
        claims in claims(),
        which in 0..2usize,
        position in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let f = fixture();
        let jwt = token::mint(&claims, f.signers[which].as_ref()).expect("mints");
        let at = claims.iat.unwrap_or(0);
        // The generated claims have no exp: allowed here, where the subject
        // is the signature.
        let verify = |jwt: &str| token::verify_with(jwt, &f.keys, &Expectations::at(at), NoExpiry::Allow);
        let verified = verify(&jwt).expect("verifies");
        prop_assert_eq!(&verified.claims, &claims);
        let expected_kid = if which == 0 { f.rsa.kid() } else { f.ec.kid() };
        prop_assert_eq!(&verified.kid, expected_kid);

        let mut bytes = jwt.into_bytes();
        let i = position.index(bytes.len());
        bytes[i] ^= flip;
        // A changed byte may make the text invalid UTF-8; then it is not a token.
        if let Ok(changed) = String::from_utf8(bytes) {
            prop_assert!(verify(&changed).is_err(),
                "byte {} changed and the token still verified", i);
        }
    }

    #[test]
    fn decode_and_verify_never_panic_on_any_text(text in "\\PC{0,300}", dots in "[A-Za-z0-9_.-]{0,300}") {
        let f = fixture();
        for input in [&text, &dots] {
            let _ = token::decode(input);
            let _ = token::verify(input, &f.keys, &Expectations::at(0));
        }
    }
}
