//! `token verify` reports the version of the key that verified a token
//! (SPEC section 3) when ksa knows it: from the rotation's key Secrets
//! (`--rotation`), from a kubeadm key file's name (`sa-v2.pub`), or from
//! another key of the same kid; null from a JWKS alone (issue 33, trap 5).

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::fake_api::{self, FakeApi, Request};
use common::{ksa, run};

const DEADLINE: Duration = Duration::from_secs(60);

/// A key pair in `dir` (sa.key, sa.pub) and a bound token it signed.
fn key_and_token(dir: &Path) -> String {
    let out = run(
        &mut ksa(&[
            "keys",
            "generate",
            "--algorithm",
            "ES256",
            "--out",
            dir.to_str().expect("path"),
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = run(
        &mut ksa(&[
            "token",
            "mint",
            "--key",
            dir.join("sa.key").to_str().expect("path"),
            "bound",
            "--issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--audience",
            "vault",
            "--namespace",
            "default",
            "--service-account",
            "app",
            "--uid",
            "6f1c0000-0000-0000-0000-000000000000",
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    out.stdout.trim().to_owned()
}

fn verify(token: &str, extra: &[&str]) -> (serde_json::Value, common::Run) {
    let mut args = vec!["token", "verify", token, "-o", "json"];
    args.extend_from_slice(extra);
    let out = run(&mut ksa(&args), DEADLINE);
    assert_eq!(out.code, Some(0), "{extra:?}: {out:?}");
    let verdict = serde_json::from_str(&out.stdout).expect("JSON");
    (verdict, out)
}

/// The JWKS of the key pair in `dir`, as the API server serves it.
fn jwks_of(dir: &Path) -> std::path::PathBuf {
    let out = run(
        &mut ksa(&["keys", "jwks", dir.join("sa.pub").to_str().expect("path")]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let path = dir.join("jwks.json");
    std::fs::write(&path, out.stdout).expect("jwks.json");
    path
}

#[test]
fn a_kubeadm_key_files_name_gives_the_version_and_a_jwks_alone_gives_none() {
    let dir = tempfile::tempdir().expect("dir");
    let token = key_and_token(dir.path());
    let jwks = jwks_of(dir.path());
    let (verdict, _) = verify(&token, &["--jwks", jwks.to_str().expect("path")]);
    assert_eq!(verdict["keyVersion"], serde_json::Value::Null, "{verdict}");

    let versioned = dir.path().join("sa-v2.pub");
    std::fs::copy(dir.path().join("sa.pub"), &versioned).expect("sa-v2.pub");
    let (verdict, _) = verify(&token, &["--public-key", versioned.to_str().expect("path")]);
    assert_eq!(verdict["keyVersion"], 2, "{verdict}");
    // The JWKS's key of the same kid takes the version too.
    let (verdict, _) = verify(
        &token,
        &[
            "--jwks",
            jwks.to_str().expect("path"),
            "--public-key",
            versioned.to_str().expect("path"),
        ],
    );
    assert_eq!(verdict["keyVersion"], 2, "{verdict}");
    // And the text says it.
    let out = run(
        &mut ksa(&[
            "token",
            "verify",
            &token,
            "--public-key",
            versioned.to_str().expect("path"),
        ]),
        DEADLINE,
    );
    assert!(
        out.stdout.contains("\n  key version: 2\n"),
        "{}",
        out.stdout
    );
}

/// An admin cluster holding key version 3 of rotation `user-cluster-1`.
fn admin_cluster(key_pem: String) -> FakeApi {
    FakeApi::serve(move |request: &Request| {
        let path = request.path.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("GET", "/version") => fake_api::version(),
            ("GET", "/api/v1/namespaces/user-cluster-1/secrets")
                if request
                    .path
                    .contains("labelSelector=ksa.dev%2Frotation%3Duser-cluster-1") =>
            {
                (
                    200,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "1"},
                        "items": [{
                            "metadata": {
                                "name": "user-cluster-1-signing-key-v3",
                                "namespace": "user-cluster-1",
                                "labels": {
                                    "app.kubernetes.io/managed-by": "ksa",
                                    "ksa.dev/rotation": "user-cluster-1",
                                    "ksa.dev/key-version": "3",
                                },
                            },
                            "type": "Opaque",
                            "data": {
                                "key.pem": base64::engine::general_purpose::STANDARD.encode(&key_pem)
                            },
                        }],
                    }),
                )
            }
            _ => fake_api::not_found(),
        }
    })
}

#[test]
fn the_rotations_key_secrets_give_the_version() {
    let dir = tempfile::tempdir().expect("dir");
    let token = key_and_token(dir.path());
    let jwks = jwks_of(dir.path());
    let key_pem = std::fs::read_to_string(dir.path().join("sa.key")).expect("sa.key");
    let api = admin_cluster(key_pem);
    let kubeconfig = api.kubeconfig("user-cluster-1");
    let kubeconfig = kubeconfig.path().to_str().expect("path");
    // With a JWKS: the versions only.
    let (verdict, _) = verify(
        &token,
        &[
            "--jwks",
            jwks.to_str().expect("path"),
            "--rotation",
            "user-cluster-1",
            "--kubeconfig",
            kubeconfig,
        ],
    );
    assert_eq!(verdict["keyVersion"], 3, "{verdict}");
    // Alone: the rotation's keys are the keys trusted.
    let (verdict, _) = verify(
        &token,
        &[
            "--rotation",
            "user-cluster-1",
            "-n",
            "user-cluster-1",
            "--kubeconfig",
            kubeconfig,
        ],
    );
    assert_eq!(verdict["keyVersion"], 3, "{verdict}");
    assert_eq!(verdict["valid"], true, "{verdict}");
}
