//! Errors as a person new to ksa meets them (issue 33, trap 6): a 404 or an
//! answer that is not Kubernetes' never dumps internals and names the
//! object and the fix; a bad server URL names the context and the URL in
//! both modes; a command line that names no cluster says what to give;
//! kubectl's `-v=N` levels are taken.

mod common;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use common::fake_api::{self, FakeApi, Request};
use common::{ksa, run};

const DEADLINE: Duration = Duration::from_secs(60);

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

fn path(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().expect("a UTF-8 path")
}

fn ksa_isolated(args: &[&str], home: &Path) -> std::process::Command {
    let mut command = ksa(args);
    command.env_remove("KUBECONFIG").env("HOME", home);
    command
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    write!(file, "{text}").expect("written");
    file
}

/// A server that is not a Kubernetes API server: an HTML page for every
/// path, as a web server or a proxy answers.
fn web_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{BufRead as _, BufReader};
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                let body = "<!DOCTYPE HTML>\n<html><head><title>Error response</title></head>\n\
                            <body><h1>Error response</h1><p>Error code: 404</p></body></html>\n";
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

#[test]
fn an_answer_that_is_not_kubernetes_is_explained_not_dumped() {
    let home = tempfile::tempdir().expect("home");
    let server = format!("http://127.0.0.1:{}", web_server());
    let kubeconfig = fake_api::kubeconfig(&[("admin", &server, "default")], "admin");
    let config = config("name: user-cluster-1\n");
    let out = run(
        &mut ksa_isolated(
            &[
                "update",
                "credentials",
                "ksa-signing-key",
                "status",
                "--config",
                path(&config),
                "--kubeconfig",
                path(&kubeconfig),
            ],
            home.path(),
        ),
        DEADLINE,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    for dump in ["<html", "DOCTYPE", "Status {", "Failed to parse"] {
        assert!(!out.stderr.contains(dump), "{dump:?} shown: {}", out.stderr);
    }
    for part in [
        server.as_str(),
        "context admin",
        "no Kubernetes Status",
        "Kubernetes API server",
    ] {
        assert!(
            out.stderr.contains(part),
            "{part:?} missing: {}",
            out.stderr
        );
    }
}

/// A kubeadm node: a key and both static pod manifests.
fn kubeadm_node(root: &Path) -> (PathBuf, PathBuf) {
    let (pki, manifests) = (root.join("pki"), root.join("manifests"));
    std::fs::create_dir_all(&manifests).expect("manifests");
    let out = run(
        &mut ksa(&[
            "keys",
            "generate",
            "--algorithm",
            "ES256",
            "--out",
            pki.to_str().expect("path"),
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let dir = "/etc/kubernetes/pki";
    std::fs::write(
        manifests.join("kube-apiserver.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n    \
             - --service-account-issuer=https://kubernetes.default.svc.cluster.local\n    \
             - --service-account-key-file={dir}/sa.pub\n    \
             - --service-account-signing-key-file={dir}/sa.key\n    image: x\n"
        ),
    )
    .expect("kube-apiserver.yaml");
    std::fs::write(
        manifests.join("kube-controller-manager.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    \
             - kube-controller-manager\n    - --service-account-private-key-file={dir}/sa.key\n"
        ),
    )
    .expect("kube-controller-manager.yaml");
    (pki, manifests)
}

#[test]
fn kubeadm_rotate_against_a_bad_server_url_names_the_context_and_the_url() {
    let home = tempfile::tempdir().expect("home");
    let root = tempfile::tempdir().expect("root");
    let (pki, manifests) = kubeadm_node(root.path());
    let server = format!("http://127.0.0.1:{}", closed_port());
    let kubeconfig = fake_api::kubeconfig(
        &[("kubernetes-admin", &server, "default")],
        "kubernetes-admin",
    );
    for extra in [&["--dry-run"][..], &[]] {
        let mut args = vec![
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--pki-dir",
            pki.to_str().expect("path"),
            "--manifests-dir",
            manifests.to_str().expect("path"),
            "--kubeconfig",
            path(&kubeconfig),
            "--skip-prompt",
        ];
        args.extend_from_slice(extra);
        let out = run(&mut ksa_isolated(&args, home.path()), DEADLINE);
        assert_eq!(out.code, Some(1), "{extra:?}: {out:?}");
        for part in [
            server.as_str(),
            "context kubernetes-admin",
            &format!("kubeconfig {}", path(&kubeconfig)),
        ] {
            assert!(
                out.stderr.contains(part),
                "{extra:?}: {part:?} missing: {}",
                out.stderr
            );
        }
    }
}

/// An admin cluster with the CRD, a running controller and the imported
/// key, whose rotation names a kubeconfig Secret that does not exist.
fn admin_cluster_without_the_kubeconfig_secret(key_pem: String) -> FakeApi {
    FakeApi::serve(move |request: &Request| {
        let path = request.path.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("GET", "/version") => fake_api::version(),
            ("GET", "/apis/ksa.dev/v1alpha1") => fake_api::crd_served(),
            ("GET", "/api/v1/namespaces/user-cluster-1/secrets/user-cluster-1-signing-key-v1") => (
                200,
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {
                        "name": "user-cluster-1-signing-key-v1", "namespace": "user-cluster-1",
                        "labels": {
                            "app.kubernetes.io/managed-by": "ksa",
                            "ksa.dev/rotation": "user-cluster-1",
                            "ksa.dev/key-version": "1",
                        },
                    },
                    "type": "Opaque",
                    "data": {"key.pem": base64::engine::general_purpose::STANDARD.encode(&key_pem)},
                }),
            ),
            ("GET", "/api/v1/namespaces/user-cluster-1/secrets/uc-kubeconfig") => (
                404,
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "secrets \"uc-kubeconfig\" not found", "reason": "NotFound",
                    "details": {"name": "uc-kubeconfig", "kind": "secrets"}, "code": 404
                }),
            ),
            _ => fake_api::not_found(),
        }
    })
}

#[test]
fn a_missing_kubeconfig_secret_is_named_with_its_config_field_and_the_fix() {
    let home = tempfile::tempdir().expect("home");
    let keys = tempfile::tempdir().expect("keys");
    let out = run(
        &mut ksa(&[
            "keys",
            "generate",
            "--algorithm",
            "ES256",
            "--out",
            keys.path().to_str().expect("path"),
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let key_pem = std::fs::read_to_string(keys.path().join("sa.key")).expect("sa.key");
    let api = admin_cluster_without_the_kubeconfig_secret(key_pem);
    let kubeconfig = api.kubeconfig("default");
    let config =
        config("name: user-cluster-1\nksaSigningKeyRotation:\n  kubeconfigSecret: uc-kubeconfig\n");
    let out = run(
        &mut ksa_isolated(
            &[
                "update",
                "credentials",
                "ksa-signing-key",
                "rotate",
                "--config",
                path(&config),
                "--kubeconfig",
                path(&kubeconfig),
                "--dry-run",
            ],
            home.path(),
        ),
        DEADLINE,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    for part in [
        "Secret user-cluster-1/uc-kubeconfig",
        "ksaSigningKeyRotation.kubeconfigSecret",
        "kubectl create secret generic uc-kubeconfig -n user-cluster-1 --from-file=value=",
        "context fake",
    ] {
        assert!(
            out.stderr.contains(part),
            "{part:?} missing: {}",
            out.stderr
        );
    }
}

#[test]
fn rotate_and_status_with_no_cluster_say_what_to_give() {
    for args in [
        &["update", "credentials", "ksa-signing-key", "rotate"][..],
        &["update", "credentials", "ksa-signing-key", "status"],
        &[
            "update",
            "credentials",
            "ksa-issuer",
            "rotate",
            "--issuer",
            "https://b.example",
        ],
    ] {
        let out = run(&mut ksa(args), DEADLINE);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        for part in [
            "--config USER_CLUSTER_CONFIG",
            "--kubeconfig",
            "kubeadm control plane",
            "--pki-dir /etc/kubernetes/pki --manifests-dir /etc/kubernetes/manifests",
        ] {
            assert!(
                out.stderr.contains(part),
                "{args:?}: {part:?} missing: {}",
                out.stderr
            );
        }
        assert!(!out.stderr.contains("required arguments"), "{}", out.stderr);
    }
    let out = run(
        &mut ksa(&[
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--pki-dir",
            "/etc/kubernetes/pki",
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("--pki-dir needs --manifests-dir: kubeadm's static pod manifests"),
        "{}",
        out.stderr
    );
}

#[test]
fn verbosity_takes_kubectls_levels_and_v_alone() {
    for args in [
        &["-v", "version"][..],
        &["-v=6", "version"],
        &["--v=6", "version"],
        &["-v", "6", "version"],
        &["version", "--v", "2"],
        &["--verbose", "version"],
    ] {
        let out = run(&mut ksa(args), DEADLINE);
        assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
        assert!(out.stdout.starts_with("ksa "), "{args:?}: {out:?}");
    }
    let out = run(&mut ksa(&["-v=11", "version"]), DEADLINE);
    assert_eq!(out.code, Some(2), "{out:?}");
    // Level 6 logs each request; the default logs none.
    let api = FakeApi::serve(|request: &Request| match request.path.as_str() {
        "/version" => fake_api::version(),
        _ => fake_api::not_found(),
    });
    let home = tempfile::tempdir().expect("home");
    let kubeconfig = api.kubeconfig("default");
    let config = config("name: user-cluster-1\n");
    let status = |level: &str| {
        run(
            &mut ksa_isolated(
                &[
                    level,
                    "update",
                    "credentials",
                    "ksa-signing-key",
                    "status",
                    "--config",
                    path(&config),
                    "--kubeconfig",
                    path(&kubeconfig),
                ],
                home.path(),
            ),
            DEADLINE,
        )
    };
    let quiet = status("-v=0");
    let loud = status("-v=6");
    assert!(!quiet.stderr.contains("DEBUG"), "{}", quiet.stderr);
    assert!(
        loud.stderr.contains("DEBUG") && loud.stderr.contains("/version"),
        "{}",
        loud.stderr
    );
}
