//! `ksa status decode` and the browser's `decodeStatus` give the same JSON
//! for the same text, and refuse the same texts: both are the core's one
//! decoded form (`ksa_core::status::decode`), and this holds them to it.

mod common;

use std::time::Duration;

use ksa_core::KeyVersion;
use ksa_core::rotation::{RotationState, Step};

/// Every key line a rotation to version 2 or 3 writes, an issuer line at
/// each kind of step, the same broken over lines, and lines that are
/// refused.
fn texts() -> Vec<String> {
    let mut texts = Vec::new();
    for version in [1, 2, 3] {
        for step in Step::ROTATION.into_iter().chain([Step::Completed]) {
            if let Some(state) = RotationState::at(KeyVersion::new(version), step) {
                texts.push(state.status_line().to_string());
            }
        }
    }
    let issuer = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: False, reason: KSAIssuerRotationProcessedReason, message:{"tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}"#;
    let settled = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: True, reason: KSAIssuerRotationCompleted, message:{"tokenIssuer":"https://b.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example"]}"#;
    texts.extend([issuer.to_owned(), settled.to_owned()]);
    let broken: Vec<String> = texts
        .iter()
        .map(|line| line.replace("is - ", "is -\n").replace(", ", ",\n"))
        .collect();
    texts.extend(broken);
    let key = texts[0].clone();
    texts.extend([
        key.replace("status: True", "status: Maybe"),
        key.replace("KSASigningKeyVersion 1", "KSASigningKeyVersion x"),
        issuer.replace("status: False", "status: True"),
        "not a status line".to_owned(),
    ]);
    texts
}

#[test]
fn the_cli_and_wasm_decode_every_status_line_alike() {
    for text in texts() {
        let run = common::run(
            &mut common::ksa(&["status", "decode", &text]),
            Duration::from_secs(30),
        );
        match ksa_wasm::api::decode_status(&text) {
            Ok(expected) => {
                assert_eq!(run.code, Some(0), "{text}: {}", run.stderr);
                let printed: serde_json::Value =
                    serde_json::from_str(&run.stdout).expect("the CLI prints JSON");
                assert_eq!(printed, expected, "{text}");
                assert!(expected.get("steps").is_some(), "{text}: {expected}");
            }
            Err(error) => {
                assert_eq!(error.kind, "bad_status_line");
                assert_eq!(
                    run.code,
                    Some(2),
                    "{text}: the CLI accepted what wasm refused"
                );
                assert!(
                    run.stderr.contains(&error.message),
                    "{text}: {} does not say {}",
                    run.stderr,
                    error.message
                );
            }
        }
    }
}
