//! Exit codes that never lie: an invalid token exits 1 whatever happens to
//! stdout, a check that could not be made exits 4, and a closed stdout after
//! a success exits 0 quietly.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{jwks_file, ksa, run, vector_token};

const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `ksa` with stdout a pipe whose read end is already closed.
fn into_closed_pipe(args: &[&str]) -> common::Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut command = ksa(args);
    command.stdout(Stdio::from(writer));
    run(&mut command, DEADLINE)
}

fn verify_args<'a>(token: &'a str, jwks: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "token",
        "verify",
        token,
        "--jwks",
        jwks,
        "--at",
        "1800000000",
        "-o",
        output,
    ]
}

#[test]
fn an_invalid_token_exits_1_into_a_closed_pipe() {
    let jwks = jwks_file();
    let jwks = jwks.path().to_str().expect("path");
    let token = vector_token("tampered claims");
    for output in ["text", "json", "yaml"] {
        let out = into_closed_pipe(&verify_args(&token, jwks, output));
        assert_eq!(out.code, Some(1), "-o {output}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{out:?}");
    }
}

#[test]
fn a_valid_token_exits_0_into_a_closed_pipe() {
    let jwks = jwks_file();
    let jwks = jwks.path().to_str().expect("path");
    let token = vector_token("valid RS256 bound token");
    let out = into_closed_pipe(&verify_args(&token, jwks, "text"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stderr, "", "quiet");
}

#[test]
fn completions_into_a_closed_pipe_exit_quietly() {
    let out = into_closed_pipe(&["completions", "bash"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    assert_eq!(out.stderr, "", "quiet");
}

#[test]
fn an_unreadable_jwks_url_is_not_an_invalid_token() {
    let token = vector_token("valid RS256 bound token");
    // Port 9 (discard) on 127.0.0.1: nothing listens there in the test
    // environment, so the connection is refused at once.
    let out = run(
        &mut ksa(&[
            "token",
            "verify",
            &token,
            "--jwks",
            "http://127.0.0.1:9/openid/v1/jwks",
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("could not fetch the JWKS"), "{out:?}");
}

#[test]
fn help_documents_every_exit_code() {
    let out = run(&mut ksa(&["--help"]), DEADLINE);
    for code in [
        "0  done",
        "1  failed",
        "2  usage error or bad input",
        "3  refused",
        "4  could not check",
    ] {
        assert!(out.stdout.contains(code), "{code:?} missing: {out:?}");
    }
}

#[test]
fn an_issuer_that_cannot_be_rotated_to_exits_2_before_anything_is_read() {
    // Neither the config nor the kubeconfig exists: the URL is refused
    // first, and nothing is read or changed.
    for (url, named) in [
        ("http://issuer.example", "not https"),
        ("https://", "not a URL"),
        ("https://issuer.example/?a=b", "query or a fragment"),
        ("https://issuer.example/#x", "query or a fragment"),
        ("https://user:pw@issuer.example", "user name or password"),
        ("issuer.example", "not a URL"),
    ] {
        for mode in [
            ["--config", "/nonexistent/c.yaml"],
            ["--pki-dir", "/nonexistent/pki"],
        ] {
            let mut args = vec![
                "update",
                "credentials",
                "ksa-issuer",
                "rotate",
                "--issuer",
                url,
                "--skip-prompt",
                "--kubeconfig",
                "/nonexistent/kubeconfig",
            ];
            args.extend(mode);
            if mode[0] == "--pki-dir" {
                args.extend(["--manifests-dir", "/nonexistent/manifests"]);
            }
            let out = run(&mut ksa(&args), DEADLINE);
            assert_eq!(out.code, Some(2), "{url} {mode:?}: {out:?}");
            assert!(out.stderr.contains("--issuer"), "{url}: {out:?}");
            assert!(out.stderr.contains(named), "{url}: {out:?}");
        }
    }
}

#[test]
fn version_names_the_commit_its_date_and_the_target() {
    let out = run(&mut ksa(&["version", "-o", "json"]), DEADLINE);
    assert_eq!(out.code, Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    for field in ["commit", "commitDate", "target"] {
        assert!(
            json[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {json}"
        );
    }
    let long = run(&mut ksa(&["--version"]), DEADLINE);
    assert!(
        long.stdout
            .contains(json["commit"].as_str().unwrap_or("none")),
        "{long:?}"
    );
}
