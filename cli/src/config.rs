//! The user cluster config (`--config`): a gkectl user cluster config file,
//! read as it is, plus an optional `ksaSigningKeyRotation` section for what
//! gkectl does not say.
//!
//! Unknown fields are ignored (logged at debug level). Every bad value is an
//! error that names the field path, the value and what is allowed.

use std::path::Path;

use serde_yaml::{Mapping, Value};

/// What `ksa` takes from a user cluster config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClusterConfig {
    /// `name`: the user cluster, and the rotation resource's name.
    pub name: String,
    /// The namespace of the cluster in the admin cluster
    /// (`ksaSigningKeyRotation.namespace`, default: the cluster name).
    pub namespace: String,
    /// `enableAdvancedCluster`: rotation is refused when true.
    pub advanced_cluster: bool,
    /// Accepted issuers (`ksaSigningKeyRotation.issuers`).
    pub issuers: Vec<String>,
    /// `ksaSigningKeyRotation.key`: `RSA-2048` (default), `RSA-3072`,
    /// `RSA-4096` or `ECDSA-P256`.
    pub key: String,
    /// `ksaSigningKeyRotation.tokenRefresh.policy`.
    pub token_refresh: String,
    pub max_token_seconds: u64,
    pub trust_lead_time_seconds: u64,
    /// `ksaSigningKeyRotation.kubeconfigSecret`: the Secret in the admin
    /// cluster holding the user cluster's kubeconfig.
    pub kubeconfig_secret: Option<String>,
    /// `ksaSigningKeyRotation.keySecret`.
    pub key_secret: Option<String>,
    /// `ksaSigningKeyRotation.rollout`: `hosted-control-plane` (default) or
    /// `external-signer`.
    pub rollout: String,
    /// `ksaSigningKeyRotation.apiServerWorkload`: the workload running the
    /// API servers (restarted on a key change, its container's issuer
    /// arguments changed by an issuer rotation).
    pub api_server_workload: Option<ApiServerWorkload>,
}

/// `ksaSigningKeyRotation.apiServerWorkload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerWorkload {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    pub name: String,
    /// The API server container; `kube-apiserver` when unset.
    pub container: Option<String>,
}

/// A bad user cluster config: which field, what it was, what is allowed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{path} is not YAML: {detail}")]
    Yaml { path: String, detail: String },
    #[error("{field}: missing; {allowed}")]
    Missing {
        field: String,
        allowed: &'static str,
    },
    #[error("{field}: {value} is not allowed; {allowed}")]
    Invalid {
        field: String,
        value: String,
        allowed: &'static str,
    },
    #[error("the config is {len} bytes; a user cluster config is at most {max}")]
    TooLarge { len: usize, max: u64 },
}

const KEYS: [&str; 4] = ["RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-P256"];
const POLICIES: [&str; 3] = ["restart-pods", "recreate-nodes", "wait"];
const ROLLOUTS: [&str; 2] = ["hosted-control-plane", "external-signer"];
const WORKLOAD_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];
/// Largest config accepted; real ones are a few KiB.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl UserClusterConfig {
    pub fn read(path: &Path) -> Result<UserClusterConfig, ConfigError> {
        let read_error = |detail: String| ConfigError::Read {
            path: path.display().to_string(),
            detail,
        };
        let bytes = crate::input::read_limited(path, MAX_CONFIG_BYTES).map_err(|e| match e {
            crate::input::InputError::Read { source, .. } => read_error(source.to_string()),
            too_large @ crate::input::InputError::TooLarge { .. } => {
                read_error(too_large.to_string())
            }
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| read_error("not UTF-8 text; a user cluster config is YAML".into()))?;
        UserClusterConfig::parse(&text).map_err(|e| match e {
            ConfigError::Yaml { detail, .. } => ConfigError::Yaml {
                path: path.display().to_string(),
                detail,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<UserClusterConfig, ConfigError> {
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                len: text.len(),
                max: MAX_CONFIG_BYTES,
            });
        }
        let document: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
            path: "the config".into(),
            detail: e.to_string(),
        })?;
        let root = document.as_mapping().ok_or_else(|| ConfigError::Invalid {
            field: "(document)".into(),
            value: kind_of(&document).into(),
            allowed: "a user cluster config is a YAML mapping",
        })?;
        for key in root.keys().filter_map(Value::as_str) {
            if !matches!(
                key,
                "name" | "enableAdvancedCluster" | "ksaSigningKeyRotation"
            ) {
                tracing::debug!(field = key, "ignoring user cluster config field");
            }
        }
        let name = string(root, "name", "name")?.ok_or(ConfigError::Missing {
            field: "name".into(),
            allowed: "the user cluster's name, a DNS-1123 label",
        })?;
        if !is_dns_label(&name) {
            return Err(ConfigError::Invalid {
                field: "name".into(),
                value: format!("{name:?}"),
                allowed: "a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters",
            });
        }
        let advanced_cluster = match root.get("enableAdvancedCluster") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: "enableAdvancedCluster".into(),
                    value: describe(other),
                    allowed: "true or false",
                });
            }
        };
        let empty = Mapping::new();
        let section = match root.get("ksaSigningKeyRotation") {
            None | Some(Value::Null) => &empty,
            Some(Value::Mapping(m)) => m,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: "ksaSigningKeyRotation".into(),
                    value: describe(other),
                    allowed: "a mapping",
                });
            }
        };
        const S: &str = "ksaSigningKeyRotation";
        let namespace = string(section, "namespace", &format!("{S}.namespace"))?
            .unwrap_or_else(|| name.clone());
        if !is_dns_label(&namespace) {
            return Err(ConfigError::Invalid {
                field: format!("{S}.namespace"),
                value: format!("{namespace:?}"),
                allowed: "a DNS-1123 label",
            });
        }
        let issuers = match section.get("issuers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item.as_str() {
                    Some(url)
                        if url.starts_with("https://") || url == "kubernetes/serviceaccount" =>
                    {
                        Ok(url.to_owned())
                    }
                    _ => Err(ConfigError::Invalid {
                        field: format!("{S}.issuers[{i}]"),
                        value: describe(item),
                        allowed: "an https:// URL (or kubernetes/serviceaccount for legacy tokens)",
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: format!("{S}.issuers"),
                    value: describe(other),
                    allowed: "a list of issuer URLs",
                });
            }
        };
        let key = one_of(
            section,
            "key",
            &format!("{S}.key"),
            &KEYS,
            "RSA-2048 (default), RSA-3072, RSA-4096 or ECDSA-P256",
        )?
        .unwrap_or_else(|| "RSA-2048".into());
        let refresh = match section.get("tokenRefresh") {
            None | Some(Value::Null) => &empty,
            Some(Value::Mapping(m)) => m,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: format!("{S}.tokenRefresh"),
                    value: describe(other),
                    allowed: "a mapping with policy and maxTokenSeconds",
                });
            }
        };
        let token_refresh = one_of(
            refresh,
            "policy",
            &format!("{S}.tokenRefresh.policy"),
            &POLICIES,
            "restart-pods (default), recreate-nodes or wait",
        )?
        .unwrap_or_else(|| "restart-pods".into());
        let max_token_seconds = number(
            refresh,
            "maxTokenSeconds",
            &format!("{S}.tokenRefresh.maxTokenSeconds"),
            600,
            "a whole number of seconds, at least 600",
        )?
        .unwrap_or(0);
        let trust_lead_time_seconds = number(
            section,
            "trustLeadTimeSeconds",
            &format!("{S}.trustLeadTimeSeconds"),
            0,
            "a whole number of seconds",
        )?
        .unwrap_or(0);
        let kubeconfig_secret = string(
            section,
            "kubeconfigSecret",
            &format!("{S}.kubeconfigSecret"),
        )?;
        let key_secret = string(section, "keySecret", &format!("{S}.keySecret"))?;
        let rollout = one_of(
            section,
            "rollout",
            &format!("{S}.rollout"),
            &ROLLOUTS,
            "hosted-control-plane (default) or external-signer",
        )?
        .unwrap_or_else(|| "hosted-control-plane".into());
        let api_server_workload = match section.get("apiServerWorkload") {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(workload)) => {
                let field = |key: &str| format!("{S}.apiServerWorkload.{key}");
                let kind = one_of(
                    workload,
                    "kind",
                    &field("kind"),
                    &WORKLOAD_KINDS,
                    "Deployment, StatefulSet or DaemonSet",
                )?
                .ok_or(ConfigError::Missing {
                    field: field("kind"),
                    allowed: "Deployment, StatefulSet or DaemonSet",
                })?;
                let name =
                    string(workload, "name", &field("name"))?.ok_or(ConfigError::Missing {
                        field: field("name"),
                        allowed: "the name of the workload running the API servers",
                    })?;
                let container = string(workload, "container", &field("container"))?;
                Some(ApiServerWorkload {
                    kind,
                    name,
                    container,
                })
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: format!("{S}.apiServerWorkload"),
                    value: describe(other),
                    allowed: "a mapping with kind, name and container",
                });
            }
        };
        Ok(UserClusterConfig {
            name,
            namespace,
            advanced_cluster,
            issuers,
            key,
            token_refresh,
            max_token_seconds,
            trust_lead_time_seconds,
            kubeconfig_secret,
            key_secret,
            rollout,
            api_server_workload,
        })
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => kind_of(other).to_owned(),
    }
}

fn string(map: &Mapping, key: &str, field: &str) -> Result<Option<String>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ConfigError::Invalid {
            field: field.to_owned(),
            value: describe(other),
            allowed: "a string",
        }),
    }
}

fn one_of(
    map: &Mapping,
    key: &str,
    field: &str,
    allowed_values: &[&str],
    allowed: &'static str,
) -> Result<Option<String>, ConfigError> {
    let value = string(map, key, field)?;
    match value {
        Some(v) if !allowed_values.contains(&v.as_str()) => Err(ConfigError::Invalid {
            field: field.to_owned(),
            value: format!("{v:?}"),
            allowed,
        }),
        other => Ok(other),
    }
}

fn number(
    map: &Mapping,
    key: &str,
    field: &str,
    min: u64,
    allowed: &'static str,
) -> Result<Option<u64>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= min) => Ok(n.as_u64()),
        Some(other) => Err(ConfigError::Invalid {
            field: field.to_owned(),
            value: describe(other),
            allowed,
        }),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_gkectl_config_is_accepted_as_it_is() {
        let text = include_str!("../test_data/user-cluster.yaml");
        let config = UserClusterConfig::parse(text).expect("parses");
        assert_eq!(config.name, "user-cluster-1");
        assert_eq!(config.namespace, "user-cluster-1");
        assert!(!config.advanced_cluster);
        assert_eq!(config.key, "RSA-2048");
        assert_eq!(config.token_refresh, "restart-pods");
    }

    #[test]
    fn bad_values_name_field_value_and_what_is_allowed() {
        let cases = [
            (
                "name: UPPER\n",
                "name: \"UPPER\" is not allowed; a DNS-1123 label",
            ),
            (
                "name: a\nenableAdvancedCluster: yes-please\n",
                "enableAdvancedCluster: \"yes-please\" is not allowed; true or false",
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  key: DSA\n",
                "ksaSigningKeyRotation.key: \"DSA\" is not allowed; RSA-2048 (default)",
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  tokenRefresh:\n    policy: reboot\n",
                "ksaSigningKeyRotation.tokenRefresh.policy: \"reboot\" is not allowed",
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  tokenRefresh:\n    maxTokenSeconds: 10\n",
                "ksaSigningKeyRotation.tokenRefresh.maxTokenSeconds: 10 is not allowed; a whole number of seconds, at least 600",
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  issuers: [http://x]\n",
                "ksaSigningKeyRotation.issuers[0]: \"http://x\" is not allowed",
            ),
            ("gkeOnPremVersion: 1.16\n", "name: missing"),
        ];
        for (text, expected) in cases {
            let error = UserClusterConfig::parse(text).expect_err(text).to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }
}
