//! kubectl's output conventions (issue 33): `-o wide` and `-o
//! jsonpath=TEMPLATE` wherever `-o` is, and the short forms `ksa rotate |
//! status | plan` beside the gkectl path, which stays as it is.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::fake_api::{self, FakeApi, Request};
use common::{ksa, run, vector_token};

const DEADLINE: Duration = Duration::from_secs(60);

/// An admin cluster whose rotation `user-cluster-1` is at step Trust of key
/// version 2.
fn admin_cluster() -> FakeApi {
    FakeApi::serve(|request: &Request| {
        let path = request.path.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("GET", "/version") => fake_api::version(),
            ("GET", "/apis/ksa.dev/v1alpha1") => fake_api::crd_served(),
            (
                "GET",
                "/apis/ksa.dev/v1alpha1/namespaces/user-cluster-1/ksasigningkeyrotations/user-cluster-1",
            ) => (
                200,
                serde_json::json!({
                    "apiVersion": "ksa.dev/v1alpha1", "kind": "KSASigningKeyRotation",
                    "metadata": {
                        "name": "user-cluster-1", "namespace": "user-cluster-1",
                        "resourceVersion": "5", "generation": 1
                    },
                    "spec": {"keyVersion": 2},
                    "status": {
                        "keyVersion": 2, "step": "Trust", "tokenVersion": 1,
                        "privateKeyVersion": 1, "publicKeyVersions": [1, 2],
                        "waitingFor": "API servers accepting key 2: 1/3"
                    }
                }),
            ),
            _ => fake_api::not_found(),
        }
    })
}

fn config() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(file, "name: user-cluster-1").expect("written");
    file
}

fn ksa_with(args: &[&str], api: &FakeApi) -> (common::Run, tempfile::NamedTempFile) {
    let home = tempfile::tempdir().expect("home");
    let config = config();
    let kubeconfig = api.kubeconfig("default");
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "--config",
        config.path().to_str().expect("path"),
        "--kubeconfig",
        kubeconfig.path().to_str().expect("path"),
    ]);
    let mut command = ksa(&all);
    command.env_remove("KUBECONFIG").env("HOME", home.path());
    (run(&mut command, DEADLINE), config)
}

#[test]
fn status_takes_wide_and_jsonpath_in_both_forms() {
    let api = admin_cluster();
    for status in [
        &["update", "credentials", "ksa-signing-key", "status"][..],
        &["status"],
    ] {
        let wide = [status, &["-o", "wide"]].concat();
        let (out, _) = ksa_with(&wide, &api);
        assert_eq!(out.code, Some(0), "{status:?}: {out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", out.stdout);
        let header: Vec<&str> = lines[0]
            .split("   ")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        assert_eq!(
            header,
            [
                "NAME",
                "TARGET",
                "KEY",
                "STEP",
                "STATUS",
                "REASON",
                "TOKEN",
                "PRIVATE",
                "PUBLIC",
                "STEP AGE",
                "WAITING FOR"
            ]
        );
        for cell in [
            "user-cluster-1",
            "Trust",
            "False",
            "KSASigningKeyRotationProcessedReason",
            "1,2",
            "API servers accepting key 2: 1/3",
        ] {
            assert!(lines[1].contains(cell), "{cell:?} missing: {}", out.stdout);
        }

        let jsonpath = [
            status,
            &["-o", "jsonpath={.cluster} {.step} {.publicKeyVersions[*]}"],
        ]
        .concat();
        let (out, _) = ksa_with(&jsonpath, &api);
        assert_eq!(out.code, Some(0), "{status:?}: {out:?}");
        assert_eq!(out.stdout, "user-cluster-1 Trust 1 2\n");
    }
}

#[test]
fn plan_is_rotate_dry_run_and_rotate_is_the_key_rotation() {
    // Both short forms reach the cluster the gkectl path reaches, and plan
    // changes nothing.
    let api = admin_cluster();
    let (out, _) = ksa_with(&["rotate", "--skip-prompt"], &api);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr
            .contains("a rotation is already in progress (key version 2, step Trust)"),
        "{}",
        out.stderr
    );
    let (out, _) = ksa_with(&["plan", "-o", "json"], &api);
    assert_eq!(out.code, Some(3), "{out:?}");
    let changed: Vec<Request> = api
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
    // Without a cluster, each says what to give.
    for short in ["rotate", "plan", "status"] {
        let out = run(&mut ksa(&[short]), DEADLINE);
        assert_eq!(out.code, Some(2), "{short}: {out:?}");
        assert!(
            out.stderr.contains("which cluster?"),
            "{short}: {}",
            out.stderr
        );
    }
    // `status decode` is still there.
    let out = run(
        &mut ksa(&[
            "status",
            "decode",
            r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#,
            "-o",
            "jsonpath={.keyVersion}",
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "2\n");
}

#[test]
fn jsonpath_works_wherever_o_is_and_wide_only_where_it_means_something() {
    let out = run(
        &mut ksa(&["version", "-o", "jsonpath={.version}"]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), env!("CARGO_PKG_VERSION"));

    let jwks = common::jwks_file();
    let token = vector_token("valid RS256 bound token");
    let out = run(
        &mut ksa(&[
            "token",
            "verify",
            &token,
            "--jwks",
            jwks.path().to_str().expect("path"),
            "--at",
            "1800000000",
            "-o",
            "jsonpath={.valid} {.kind}",
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "true bound\n");
    let out = run(
        &mut ksa(&["token", "decode", &token, "-o", "jsonpath={.claims.sub}"]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("system:serviceaccount:"), "{out:?}");

    for (args, says) in [
        (
            &["version", "-o", "wide"][..],
            "formats are text, json, yaml and jsonpath=TEMPLATE",
        ),
        (&["version", "-o", "jsonpath"], "jsonpath needs a template"),
        (
            &["version", "-o", "jsonpath={range .x}{end}"],
            "range/end is not supported",
        ),
    ] {
        let out = run(&mut ksa(args), DEADLINE);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
}

/// `KSA_COMPLETE=fish ksa -- ksa WORDS...`: what the completion script asks.
fn complete(words: &[&str], kubeconfig: &Path) -> common::Run {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ksa"));
    command
        .arg("--")
        .arg("ksa")
        .args(words)
        .env("KSA_COMPLETE", "fish")
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().expect("dir"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    run(&mut command, DEADLINE)
}

#[test]
fn contexts_and_namespaces_complete_and_a_silent_cluster_costs_two_seconds() {
    let api = FakeApi::serve(|request: &Request| {
        match request.path.split('?').next().unwrap_or_default() {
            "/api/v1/namespaces" => (
                200,
                serde_json::json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                    "metadata": {"resourceVersion": "1"},
                    "items": [
                        {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "default"}},
                        {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "user-cluster-1"}},
                    ]
                }),
            ),
            _ => fake_api::not_found(),
        }
    });
    let kubeconfig = fake_api::kubeconfig(
        &[
            ("fake", &api.url(), "default"),
            ("prod-admin", &api.url(), "default"),
        ],
        "fake",
    );
    let out = complete(&["status", "--context", ""], kubeconfig.path());
    assert_eq!(out.stdout, "fake\nprod-admin\n", "{out:?}");
    let out = complete(
        &[
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--context",
            "pr",
        ],
        kubeconfig.path(),
    );
    assert_eq!(out.stdout, "prod-admin\n", "{out:?}");
    let out = complete(&["status", "-n", "user"], kubeconfig.path());
    assert_eq!(out.stdout, "user-cluster-1\n", "{out:?}");
    // kubectl's plugin completion too.
    let out = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_kubectl_complete-ksa"))
            .args(["status", "--namespace", ""])
            .env("KUBECONFIG", kubeconfig.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
        DEADLINE,
    );
    assert_eq!(out.stdout, "default\nuser-cluster-1\n:4\n", "{out:?}");

    // A cluster that accepts and never answers: nothing offered, soon.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = format!("http://{}", silent.local_addr().expect("address"));
    let kubeconfig = fake_api::kubeconfig(&[("silent", &server, "default")], "silent");
    let out = complete(&["status", "-n", ""], kubeconfig.path());
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    assert!(out.took < Duration::from_secs(10), "took {:?}", out.took);
    drop(silent);
}

#[test]
fn colour_follows_anstreams_rules() {
    let jwks = common::jwks_file();
    let token = vector_token("valid RS256 bound token");
    let verify = |env: &[(&str, &str)]| {
        let mut command = ksa(&[
            "token",
            "verify",
            &token,
            "--jwks",
            jwks.path().to_str().expect("path"),
            "--at",
            "1800000000",
        ]);
        command.env_remove("NO_COLOR");
        for (name, value) in env {
            command.env(name, value);
        }
        run(&mut command, DEADLINE)
    };
    // Not a terminal: no colour, NO_COLOR or not.
    let out = verify(&[]);
    assert!(out.stdout.starts_with("valid bound token"), "{out:?}");
    // Forced (CLICOLOR_FORCE), unless NO_COLOR.
    let out = verify(&[("CLICOLOR_FORCE", "1")]);
    assert!(
        out.stdout
            .starts_with("\u{1b}[32mvalid\u{1b}[0m bound token"),
        "{out:?}"
    );
    let out = verify(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(out.stdout.starts_with("valid bound token"), "{out:?}");
}

/// The `keys` commands take `-o jsonpath=` too: the kid of a generated key
/// and the algorithm of a JWKS's key, as a script would pick them.
#[test]
fn keys_commands_take_jsonpath() {
    let dir = tempfile::tempdir().expect("dir");
    let out_dir = dir.path().join("keys");
    let out_dir = out_dir.to_str().expect("path");
    let generated = run(
        &mut ksa(&[
            "keys",
            "generate",
            "--algorithm",
            "ES256",
            "--out",
            out_dir,
            "-o",
            "jsonpath={.kid}",
        ]),
        DEADLINE,
    );
    assert_eq!(generated.code, Some(0), "{generated:?}");
    let kid = generated.stdout.trim().to_owned();
    assert_eq!(kid.len(), 43, "a kid, alone: {:?}", generated.stdout);
    let public = format!("{out_dir}/sa.pub");
    let jwks = run(
        &mut ksa(&[
            "keys",
            "jwks",
            &public,
            "-o",
            "jsonpath={.keys[0].kid} {.keys[0].alg}",
        ]),
        DEADLINE,
    );
    assert_eq!(jwks.code, Some(0), "{jwks:?}");
    assert_eq!(jwks.stdout.trim(), format!("{kid} ES256"));
    // jwks prints data only: text is refused, naming the formats.
    let text = run(&mut ksa(&["keys", "jwks", &public, "-o", "text"]), DEADLINE);
    assert_eq!(text.code, Some(2), "{text:?}");
    assert!(
        text.stderr.contains("json, yaml and jsonpath=TEMPLATE"),
        "{}",
        text.stderr
    );
}

/// A `COMPLETE` variable set for another tool does not turn a ksa command
/// into a completion answer (hostile read of issue 33): ksa's is
/// `KSA_COMPLETE`.
#[test]
fn another_tools_complete_variable_changes_nothing() {
    let mut command = ksa(&["version", "-o", "json"]);
    command.env("COMPLETE", "bash");
    let out = run(&mut command, DEADLINE);
    assert_eq!(out.code, Some(0), "{out:?}");
    let version: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("the version, as JSON");
    assert!(version["version"].is_string(), "{version}");
}
