//! Where private key material may go, checked on the sources: the `rsa`
//! crate (pure Rust, not constant-time) only ever holds public keys, and
//! private key bytes live in zeroizing buffers. The end-to-end rotation
//! test checks the running system: no key material in logs, Events,
//! status, metrics or ConfigMaps.

use std::path::{Path, PathBuf};

/// The `rsa` crate items the workspace may use: public keys and the
/// PKCS#1 v1.5 DigestInfo prefix. Anything else (`RsaPrivateKey`, its
/// signing keys, `DecodeRsaPrivateKey`...) must not appear.
const RSA_ALLOWED: [&str; 3] = [
    "rsa::RsaPublicKey",
    "rsa::BigUint",
    "rsa::pkcs1v15::Pkcs1v15Sign",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every path into the `rsa` crate written in `text`: `rsa::a::B` and the
/// items of `use rsa::{...}`, as written up to the first character that
/// cannot be part of a path.
fn rsa_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (at, _) in text.match_indices("rsa::") {
        let before = text[..at].chars().next_back();
        // `aws_lc_rs::rsa::`, `ksa_core::...rsa::` are other crates' modules.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let path: String = text[at..]
            .chars()
            .take_while(|c| {
                c.is_alphanumeric()
                    || *c == '_'
                    || *c == ':'
                    || *c == '{'
                    || *c == '}'
                    || *c == ','
                    || *c == ' '
            })
            .collect();
        paths.push(path.trim_end_matches([':', ' ', ',']).to_owned());
    }
    paths
}

#[test]
fn the_rsa_crate_never_holds_a_private_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let mut files = Vec::new();
    for crate_dir in ["core", "cli", "controller", "wasm", "tests"] {
        sources(&root.join(crate_dir).join("src"), &mut files);
    }
    assert!(files.len() > 40, "found only {} source files", files.len());
    let mut used = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source");
        for path in rsa_paths(&text) {
            if !RSA_ALLOWED.iter().any(|allowed| path.starts_with(allowed)) {
                panic!(
                    "{} uses {path:?} of the rsa crate; it may hold public keys only ({RSA_ALLOWED:?})",
                    file.display()
                );
            }
            used.push(path);
        }
    }
    // The check looks at real uses (it would pass on nothing otherwise).
    assert!(
        used.iter().any(|p| p.starts_with("rsa::RsaPublicKey")),
        "{used:?}"
    );
}

#[test]
fn the_path_finder_sees_what_it_must_refuse() {
    let found = rsa_paths(
        "use rsa::{RsaPrivateKey, pkcs1::DecodeRsaPrivateKey};\nlet k = rsa::RsaPrivateKey::new(); aws_lc_rs::rsa::KeySize",
    );
    assert_eq!(
        found,
        [
            "rsa::{RsaPrivateKey, pkcs1::DecodeRsaPrivateKey}",
            "rsa::RsaPrivateKey::new"
        ]
    );
    assert!(
        found
            .iter()
            .all(|p| !RSA_ALLOWED.iter().any(|a| p.starts_with(a)))
    );
}

#[test]
fn private_key_bytes_are_zeroized_and_hidden_from_debug() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let key_rs = std::fs::read_to_string(root.join("src/key.rs")).expect("key.rs");
    assert!(
        key_rs.contains("der: Zeroizing<Vec<u8>>"),
        "PrivateKey keeps its DER in Zeroizing"
    );
    assert!(key_rs.contains("pub fn to_pem(&self) -> Zeroizing<String>"));
    let pem = std::fs::read(root.join("test_data/keys/rsa-pkcs1.pem")).expect("test key");
    let keys = ksa_core::key::parse_pem(&pem).expect("parses");
    let key = keys.private_keys().next().expect("private key");
    let debug = format!("{key:?}");
    assert!(
        !debug.contains("MII") && !debug.contains(&key.to_pem()[40..80]),
        "{debug}"
    );
}
