//! Snapshots of every tool command's output and errors, run as a user runs
//! them: the real `ksa` binary, its stdout, stderr and exit code. Update with
//! `INSTA_UPDATE=always cargo test -p ksa-cli` and review the diff.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::{jwks_file, vector_token};

const SPEC_LINE: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#;

fn core_data(name: &str) -> String {
    format!("{}/../core/test_data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `ksa` and renders what a user sees.
fn ksa(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ksa"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env_remove("KSA_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ksa runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("stdin written");
    drop(input);
    let output = child.wait_with_output().expect("ksa exits");
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn status_decode() {
    insta::assert_snapshot!(
        "status_decode_one_line",
        ksa(&["status", "decode", SPEC_LINE], None)
    );
    let broken = SPEC_LINE
        .replace(", ", ",\n  ")
        .replace("is - ", "is -\n  ");
    insta::assert_snapshot!(
        "status_decode_stdin_broken_lines",
        ksa(&["status", "decode", "-"], Some(&broken))
    );
    insta::assert_snapshot!(
        "status_decode_bad",
        ksa(
            &["status", "decode", &SPEC_LINE.replace("[1,2]", "[2,1]")],
            None
        )
    );
}

#[test]
fn status_decode_issuer_lines() {
    let line = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: False, reason: KSAIssuerRotationProcessedReason, message:{"tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}"#;
    insta::assert_snapshot!(
        "status_decode_issuer",
        ksa(&["status", "decode", line], None)
    );
    insta::assert_snapshot!(
        "status_decode_issuer_bad",
        ksa(
            &[
                "status",
                "decode",
                &line.replace("status: False", "status: True")
            ],
            None
        )
    );
}

#[test]
fn keys_jwks_and_bad_keys() {
    insta::assert_snapshot!(
        "keys_jwks",
        ksa(
            &[
                "keys",
                "jwks",
                &core_data("keys/rsa-pub.pem"),
                &core_data("keys/ec-sec1.pem")
            ],
            None
        )
    );
    let mut bad = tempfile::NamedTempFile::new().expect("temp");
    write!(
        bad,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    .expect("written");
    let out = ksa(&["keys", "jwks", bad.path().to_str().expect("path")], None)
        .replace(bad.path().to_str().expect("path"), "BAD.pem");
    insta::assert_snapshot!("keys_jwks_bad_pem", out);
    insta::assert_snapshot!(
        "keys_generate_bad_bits",
        ksa(
            &[
                "keys",
                "generate",
                "--bits",
                "1024",
                "--out",
                "/nonexistent"
            ],
            None
        )
    );
}

#[test]
fn keys_generate_writes_private_key_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = ksa(
        &[
            "keys",
            "generate",
            "--algorithm",
            "ES256",
            "--out",
            dir.path().to_str().expect("path"),
        ],
        None,
    );
    assert!(out.starts_with("exit: 0"), "{out}");
    let mode = std::fs::metadata(dir.path().join("sa.key"))
        .expect("sa.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = ksa(
        &[
            "keys",
            "generate",
            "--algorithm",
            "ES256",
            "--out",
            dir.path().to_str().expect("path"),
        ],
        None,
    )
    .replace(dir.path().to_str().expect("path"), "DIR");
    insta::assert_snapshot!("keys_generate_refuses_to_overwrite", again);
}

#[test]
fn token_decode_and_verify() {
    let jwks = jwks_file();
    let jwks = jwks.path().to_str().expect("path");
    let valid = vector_token("valid RS256 bound token");
    insta::assert_snapshot!("token_decode", ksa(&["token", "decode", &valid], None));
    let verify_at = |token: &str, at: &str, extra: &[&str]| {
        let mut args = vec![
            "token",
            "verify",
            token,
            "--jwks",
            jwks,
            "--issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--audience",
            "https://kubernetes.default.svc",
            "--at",
            at,
        ];
        args.extend_from_slice(extra);
        ksa(&args, None)
    };
    let verify = |token: &str, extra: &[&str]| verify_at(token, "2027-01-15T08:00:00Z", extra);
    insta::assert_snapshot!("token_verify_valid", verify(&valid, &[]));
    insta::assert_snapshot!("token_verify_valid_json", verify(&valid, &["-o", "json"]));
    insta::assert_snapshot!(
        "token_verify_expired",
        verify(&vector_token("expired"), &[])
    );
    insta::assert_snapshot!(
        "token_verify_alg_none",
        verify(&vector_token("alg none"), &[])
    );
    insta::assert_snapshot!(
        "token_verify_tampered_json",
        verify(&vector_token("tampered claims"), &["-o", "json"])
    );
    insta::assert_snapshot!(
        "token_verify_no_keys",
        ksa(&["token", "verify", &valid], None)
    );
    insta::assert_snapshot!("token_verify_bad_at", verify_at(&valid, "yesterday", &[]));
    insta::assert_snapshot!("token_verify_stdin_unix_time", {
        let args = ["token", "verify", "-", "--jwks", jwks, "--at", "1800000000"];
        ksa(&args, Some(&valid))
    });
}

#[test]
fn config_errors_name_the_field() {
    let mut config = tempfile::NamedTempFile::new().expect("temp");
    write!(
        config,
        "name: user-cluster-1\nksaSigningKeyRotation:\n  key: DSA-1024\n"
    )
    .expect("written");
    let out = ksa(
        &[
            "update",
            "credentials",
            "ksa-signing-key",
            "status",
            "--config",
            config.path().to_str().expect("path"),
        ],
        None,
    );
    insta::assert_snapshot!("config_bad_key", out);
    let mut typo = tempfile::NamedTempFile::new().expect("temp");
    write!(
        typo,
        "name: user-cluster-1\nksaSigningKeyRotation:\n  tokenRefresh:\n    polcy: wait\n"
    )
    .expect("written");
    let out = ksa(
        &[
            "update",
            "credentials",
            "ksa-signing-key",
            "status",
            "--config",
            typo.path().to_str().expect("path"),
        ],
        None,
    );
    insta::assert_snapshot!("config_unknown_key", out);
}

#[test]
fn help() {
    insta::assert_snapshot!("help", ksa(&["--help"], None));
    insta::assert_snapshot!(
        "help_rotate",
        ksa(
            &[
                "update",
                "credentials",
                "ksa-signing-key",
                "rotate",
                "--help"
            ],
            None
        )
    );
    insta::assert_snapshot!(
        "help_issuer_rotate",
        ksa(
            &["update", "credentials", "ksa-issuer", "rotate", "--help"],
            None
        )
    );
}
