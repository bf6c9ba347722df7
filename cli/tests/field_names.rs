//! Field names as a reader meets them: every field the docs show under
//! a rotation's `spec` is one the CRD has (a client that drops unknown
//! fields would silently lose a misspelt one), the user cluster config's
//! `publish` section takes the CRD's own names, and a key the config does
//! not know is shown escaped, never as raw terminal bytes.

use ksa_cli::config::{ConfigError, UserClusterConfig};
use ksa_kube::api::KSASigningKeyRotation;
use kube::CustomResourceExt as _;
use serde_json::Value;

/// README.md and every page of docs/, one after the other.
fn readme() -> String {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
        .iter()
        .map(|page| std::fs::read_to_string(page).expect("a page of the docs is readable"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The schema of `spec`, generated from the CRD's Rust types.
fn spec_schema() -> Value {
    let crd = serde_json::to_value(KSASigningKeyRotation::crd()).expect("serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// The schema of the field `name` of an object schema, looking through
/// lists and `anyOf`/`allOf`/`oneOf`.
fn field<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(found) = schema["properties"].get(name) {
        return Some(found);
    }
    if let Some(found) = schema.get("items").and_then(|items| field(items, name)) {
        return Some(found);
    }
    ["anyOf", "allOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| field(branch, name))
}

/// Every key of `value` (a YAML document read as JSON) below `path`,
/// checked against `schema`; the ones missing are pushed as full paths.
fn check(schema: &Value, value: &Value, path: &str, missing: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let here = format!("{path}.{key}");
                match field(schema, key) {
                    Some(sub) => check(sub, inner, &here, missing),
                    None => missing.push(here),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                check(schema.get("items").unwrap_or(schema), item, path, missing);
            }
        }
        _ => {}
    }
}

/// The README's YAML blocks that hold a `spec:` line, each cut from that
/// line on and dedented, and its inline code spans that start with
/// `spec.` (`spec.a.b` or `spec.a.b: {flow}`), as `(where, YAML)` pairs
/// whose YAML starts at `spec`.
fn spec_snippets(readme: &str) -> Vec<(String, String)> {
    let mut snippets = Vec::new();
    let mut prose = String::new();
    let mut block: Option<Vec<&str>> = None;
    for (number, line) in readme.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut block, fence) {
            (None, true) => block = Some(Vec::new()),
            (Some(lines), true) => {
                if let Some(start) = lines.iter().position(|l| l.trim_end().ends_with("spec:")) {
                    let indent = lines[start].len() - lines[start].trim_start().len();
                    let text: Vec<&str> = lines[start..]
                        .iter()
                        .map(|l| l.get(indent..).unwrap_or(""))
                        .collect();
                    snippets.push((
                        format!("the block ending on line {}", number + 1),
                        text.join("\n"),
                    ));
                }
                block = None;
            }
            (Some(lines), false) => lines.push(line),
            (None, false) => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    // Code spans are the odd pieces between backticks.
    for span in prose.split('`').skip(1).step_by(2) {
        let span = span.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some(rest) = span.strip_prefix("spec.") else {
            continue;
        };
        let (dotted, value) = match rest.split_once(": ") {
            Some((dotted, value)) => (dotted, value.to_owned()),
            None => (rest, "null".to_owned()),
        };
        if !dotted
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            continue;
        }
        // `spec.a.b: V` as nested YAML: {spec: {a: {b: V}}}.
        let yaml = std::iter::once("spec")
            .chain(dotted.split('.'))
            .rev()
            .fold(value, |inner, key| format!("{{{key}: {inner}}}"));
        snippets.push((format!("`{span}`"), yaml));
    }
    snippets
}

#[test]
fn every_field_the_readme_shows_under_spec_is_the_crds() {
    let schema = spec_schema();
    let snippets = spec_snippets(&readme());
    assert!(
        snippets.len() >= 5,
        "the README's spec examples were not found: {snippets:?}"
    );
    let mut missing = Vec::new();
    for (place, yaml) in &snippets {
        let document: Value = serde_saphyr::from_str(yaml)
            .unwrap_or_else(|e| panic!("{place} is not YAML ({e}):\n{yaml}"));
        let mut here = Vec::new();
        check(&schema, &document["spec"], "spec", &mut here);
        missing.extend(here.into_iter().map(|path| format!("{path} ({place})")));
    }
    assert!(
        missing.is_empty(),
        "the README shows fields the CRD does not have:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checker_sees_a_misspelt_field() {
    let mut missing = Vec::new();
    let document: Value =
        serde_saphyr::from_str("spec: {publish: {directory: {path: p, publicURL: x}}}")
            .expect("YAML");
    check(&spec_schema(), &document["spec"], "spec", &mut missing);
    assert_eq!(missing, ["spec.publish.directory.publicURL"]);
}

#[test]
fn the_publish_section_takes_the_crds_field_names() {
    let config = UserClusterConfig::parse(
        "name: a\nksaSigningKeyRotation:\n  publish:\n    s3: {endpoint: https://s3.example, \
         bucket: oidc, credentialsSecret: w, publicUrl: https://oidc.example/p}\n    \
         directory: {path: p, publicUrl: https://static.example/p}\n",
    )
    .expect("parses");
    assert_eq!(
        config.publish.s3.and_then(|s| s.public_url).as_deref(),
        Some("https://oidc.example/p")
    );
    assert_eq!(
        config
            .publish
            .directory
            .and_then(|d| d.public_url)
            .as_deref(),
        Some("https://static.example/p")
    );
    // The old spelling is refused, naming the key to write instead.
    let old = UserClusterConfig::parse(
        "name: a\nksaSigningKeyRotation:\n  publish:\n    directory: {path: p, publicURL: https://static.example/p}\n",
    )
    .expect_err("publicURL is not the CRD's name");
    assert!(
        matches!(
            &old,
            ConfigError::UnknownKey { field, suggestion: Some("publicUrl"), .. }
                if field == "ksaSigningKeyRotation.publish.directory.publicURL"
        ),
        "{old:?}"
    );
}

#[test]
fn an_unknown_key_is_shown_escaped() {
    let cases = [
        // An ESC sequence and a newline in a quoted key.
        (
            "name: a\nksaSigningKeyRotation:\n  \"\\e[2Jx\\nforged: line\": 1\n",
            r#"ksaSigningKeyRotation."\u{1b}[2Jx\nforged: line": unknown key"#,
        ),
        (
            "name: a\nksaSigningKeyRotation:\n  publish:\n    s3: {\"k\\r\\u202e\": x}\n",
            r#"ksaSigningKeyRotation.publish.s3."k\r\u{202e}": unknown key"#,
        ),
    ];
    for (text, expected) in cases {
        let message = UserClusterConfig::parse(text)
            .expect_err("an unknown key")
            .to_string();
        assert!(message.starts_with(expected), "{text:?}: {message}");
        assert!(
            !message.chars().any(char::is_control) && !message.contains('\u{202e}'),
            "{message:?}"
        );
    }
}
