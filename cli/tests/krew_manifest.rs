//! The krew plugin manifest (`cli/krew/ksa.yaml`) parses, names the
//! binaries this package builds, and carries this package's version. Its
//! `uri` and `sha256` are placeholders, which `cargo xtask dist` fills in
//! for the archive it builds; `tests/tests/krew.rs` installs it with krew.

fn manifest() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/krew/ksa.yaml");
    let text = std::fs::read_to_string(path).expect("the manifest");
    serde_saphyr::from_str(&text).expect("YAML")
}

/// The `[[bin]]` names of cli/Cargo.toml.
fn binaries() -> Vec<String> {
    let text = include_str!("../Cargo.toml");
    text.split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            let line = section.lines().find(|l| l.starts_with("name = "))?;
            Some(
                line.trim_start_matches("name = ")
                    .trim_matches('"')
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_krew_manifest_names_the_plugin_binaries_and_the_version() {
    let manifest = manifest();
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "ksa");
    let spec = &manifest["spec"];
    assert_eq!(
        spec["version"],
        format!("v{}", env!("CARGO_PKG_VERSION")),
        "the manifest's version is this package's"
    );
    for field in ["shortDescription", "description", "homepage"] {
        assert!(spec[field].is_string(), "spec.{field} is missing");
    }
    let built = binaries();
    assert!(
        built.contains(&"kubectl-ksa".to_owned())
            && built.contains(&"kubectl_complete-ksa".to_owned()),
        "{built:?}"
    );
    let platforms = spec["platforms"].as_array().expect("platforms");
    assert!(!platforms.is_empty());
    for platform in platforms {
        assert_eq!(platform["bin"], "kubectl-ksa", "{platform}");
        let files: Vec<&str> = platform["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter_map(|f| f["from"].as_str())
            .collect();
        for binary in ["kubectl-ksa", "kubectl_complete-ksa"] {
            assert!(files.contains(&binary), "{binary} not shipped: {platform}");
            assert!(built.contains(&binary.to_owned()), "{binary} is not built");
        }
        let labels = &platform["selector"]["matchLabels"];
        assert!(
            matches!(labels["os"].as_str(), Some("linux" | "darwin")),
            "{labels}"
        );
        assert!(
            matches!(labels["arch"].as_str(), Some("amd64" | "arm64")),
            "{labels}"
        );
        let sha256 = platform["sha256"].as_str().expect("sha256");
        assert!(
            sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sha256}"
        );
        let uri = platform["uri"].as_str().expect("uri");
        assert!(
            uri.starts_with("https://") && uri.contains(spec["version"].as_str().expect("version")),
            "{uri}"
        );
    }
}
