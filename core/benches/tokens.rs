//! Criterion benchmarks of the core: whole-token mint and verify, and key
//! generation. `cargo xtask bench` runs them beside `openssl speed`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ksa_core::crypto::{AwsLc, CryptoBackend, RustCrypto, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey};
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{self, BoundToken, Claims, Expectations, ObjectRef};

fn bound_claims() -> Claims {
    BoundToken {
        issuer: "https://kubernetes.default.svc.cluster.local".into(),
        audiences: vec!["https://kubernetes.default.svc".into()],
        namespace: "ci".into(),
        service_account: ObjectRef {
            name: "builder".into(),
            uid: "6f1c1a0e-2b1f-4a43-9e1c-3b9c1f0c7d11".into(),
        },
        pod: Some(ObjectRef {
            name: "builder-7d9f".into(),
            uid: "0b3c5a52-0f8e-4a5e-8d2e-5f4f6c1b2a90".into(),
        }),
        node: None,
        secret: None,
        issued_at: 1_800_000_000,
        lifetime_seconds: 3600,
        jti: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
    }
    .claims()
    .expect("valid claims")
}

/// A key set as a verifier holds it during a rotation: the old and new key.
fn key_set(keys: &[&PrivateKey], backend: &dyn CryptoBackend) -> KeySet {
    KeySet::new(
        keys.iter()
            .map(|k| TrustedKey::derived(k.public_key().clone())),
        backend,
    )
    .expect("loads")
}

fn tokens(c: &mut Criterion) {
    let aws = AwsLc::new();
    let claims = bound_claims();
    let expect = Expectations {
        issuers: vec!["https://kubernetes.default.svc.cluster.local".into()],
        audiences: vec!["https://kubernetes.default.svc".into()],
        at: 1_800_000_100,
        leeway_seconds: token::DEFAULT_LEEWAY_SECONDS,
    };
    let mut group = c.benchmark_group("tokens");
    for (name, spec) in [("rs256", KeySpec::Rsa2048), ("es256", KeySpec::EcP256)] {
        let old = aws.generate(spec).expect("generates");
        let new = aws.generate(spec).expect("generates");
        let signer = aws.signing_key(&new).expect("loads");
        group.bench_function(format!("mint_{name}"), |b| {
            b.iter(|| token::mint(black_box(&claims), signer.as_ref()).expect("mints"))
        });
        if spec == KeySpec::Rsa2048 {
            // The signature alone, to tell the cost of the token around it
            // from the cost of the backend.
            let input = token::mint(&claims, signer.as_ref()).expect("mints");
            let (input, _) = input.rsplit_once('.').expect("three parts");
            group.bench_function("raw_sign_rs256", |b| {
                b.iter(|| signer.sign(black_box(input.as_bytes())).expect("signs"))
            });
        }
        let jwt = token::mint(&claims, signer.as_ref()).expect("mints");
        let set = key_set(&[&old, &new], &aws);
        group.bench_function(format!("verify_{name}"), |b| {
            b.iter(|| token::verify(black_box(&jwt), &set, &expect).expect("verifies"))
        });
        if spec == KeySpec::Rsa2048 {
            let set = key_set(&[&old, &new], &RustCrypto);
            group.bench_function("verify_rs256_rust_crypto", |b| {
                b.iter(|| token::verify(black_box(&jwt), &set, &expect).expect("verifies"))
            });
        }
    }
    group.finish();
}

fn keygen(c: &mut Criterion) {
    let aws = AwsLc::new();
    let mut group = c.benchmark_group("keygen");
    group.sample_size(20);
    group.bench_function("rsa2048", |b| {
        b.iter(|| aws.generate(KeySpec::Rsa2048).expect("generates"))
    });
    group.finish();
}

criterion_group!(benches, tokens, keygen);
criterion_main!(benches);
