//! Malformed user cluster configs, each with the typed error it must get
//! and the field its message must name; and no input makes the parser
//! panic. The other parsers' corpus is in `core/tests/malformed.rs`.

use ksa_cli::config::{ConfigError, UserClusterConfig};
use proptest::prelude::*;

const GOOD: &str = "\
apiVersion: v1
kind: UserCluster
name: user-cluster-1
enableAdvancedCluster: false
ksaSigningKeyRotation:
  namespace: user-cluster-1
  key: RSA-2048
  issuer: https://kubernetes.default.svc.cluster.local
  tokenRefresh:
    policy: restart-pods
    maxTokenSeconds: 3600
  rollout: hosted-control-plane
";

/// Billion laughs: nine levels of aliases, each repeating the one above ten
/// times.
fn alias_bomb() -> String {
    let mut text = String::from("a0: &a0 [lol]\n");
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 10].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    text + "name: *a9\n"
}

#[test]
fn malformed_configs_get_typed_errors_naming_the_field() {
    type Expected = fn(&ConfigError) -> bool;
    let cases: Vec<(&str, String, Expected, &str)> = vec![
        (
            "empty",
            String::new(),
            |e| matches!(e, ConfigError::Invalid { .. } | ConfigError::Missing { .. }),
            "(document)",
        ),
        (
            "not YAML",
            "name: [unclosed\n".into(),
            |e| matches!(e, ConfigError::Yaml { .. }),
            "not YAML",
        ),
        (
            "a list",
            "- name: a\n".into(),
            |e| matches!(e, ConfigError::Invalid { .. }),
            "YAML mapping",
        ),
        (
            "no name",
            "kind: UserCluster\n".into(),
            |e| matches!(e, ConfigError::Missing { field, .. } if field == "name"),
            "name: missing",
        ),
        (
            "name not a DNS label",
            "name: User_Cluster\n".into(),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "name"),
            "DNS-1123",
        ),
        (
            "name a number",
            "name: 12\n".into(),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "name"),
            "name",
        ),
        (
            "advanced cluster a string",
            "name: a\nenableAdvancedCluster: \"yes\"\n".into(),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "enableAdvancedCluster"),
            "true or false",
        ),
        (
            "section a list",
            "name: a\nksaSigningKeyRotation: [1]\n".into(),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "ksaSigningKeyRotation"),
            "a mapping",
        ),
        (
            "unknown key type",
            GOOD.replace("RSA-2048", "RSA-1024"),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "ksaSigningKeyRotation.key"),
            "RSA-1024",
        ),
        (
            "http issuer",
            GOOD.replace("https://kubernetes", "http://kubernetes"),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "ksaSigningKeyRotation.issuer"),
            "https://",
        ),
        (
            "a list of accepted issuers, which ksa would not use",
            GOOD.replace(
                "issuer: https://kubernetes.default.svc.cluster.local",
                "issuers: [https://kubernetes.default.svc.cluster.local]",
            ),
            |e| matches!(e, ConfigError::Unsupported { field, .. } if field == "ksaSigningKeyRotation.issuers"),
            "ksaSigningKeyRotation.issuer: URL",
        ),
        (
            "unknown policy",
            GOOD.replace("restart-pods", "reboot"),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "ksaSigningKeyRotation.tokenRefresh.policy"),
            "reboot",
        ),
        (
            "token lifetime too short",
            GOOD.replace("3600", "10"),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "ksaSigningKeyRotation.tokenRefresh.maxTokenSeconds"),
            "at least 600",
        ),
        (
            "token lifetime negative",
            GOOD.replace("3600", "-3600"),
            |e| matches!(e, ConfigError::Invalid { .. }),
            "maxTokenSeconds",
        ),
        (
            "unknown roll-out",
            GOOD.replace("hosted-control-plane", "ssh"),
            |e| matches!(e, ConfigError::Invalid { field, .. } if field == "ksaSigningKeyRotation.rollout"),
            "external-signer",
        ),
        (
            "alias bomb",
            alias_bomb(),
            |e| matches!(e, ConfigError::Yaml { .. } | ConfigError::Invalid { .. }),
            "",
        ),
        (
            "over the size cap",
            format!("name: a\n# {}\n", "x".repeat(1024 * 1024)),
            |e| matches!(e, ConfigError::TooLarge { .. }),
            "at most 1048576",
        ),
    ];
    UserClusterConfig::parse(GOOD).expect("the unaltered config parses");
    let mut wrong = Vec::new();
    for (name, text, expected, says) in &cases {
        match UserClusterConfig::parse(text) {
            Ok(config) => wrong.push(format!("{name}: accepted as {config:?}")),
            Err(e) if !expected(&e) || !e.to_string().contains(says) => {
                wrong.push(format!("{name}: {e:?} ({e})"));
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(cases.len() >= 15);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn configs_never_panic(
        text in "\\PC{0,300}",
        at in any::<prop::sample::Index>(),
        insert in "[-:\\[\\]{}&*!|>'\"%@` \n\t#a-z0-9]{1,12}",
    ) {
        let _ = UserClusterConfig::parse(&text);
        // YAML punctuation spliced into a valid config.
        let mut changed = GOOD.to_owned();
        let mut i = at.index(changed.len());
        while !changed.is_char_boundary(i) {
            i -= 1;
        }
        changed.insert_str(i, &insert);
        let _ = UserClusterConfig::parse(&changed);
    }
}
