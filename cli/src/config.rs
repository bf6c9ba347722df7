//! The user cluster config (`--config`): a gkectl user cluster config file,
//! read as it is, plus an optional `ksaSigningKeyRotation` section for what
//! gkectl does not say.
//!
//! The file is read into typed structs ([`RawConfig`] and the sections
//! under it) by `serde-saphyr`, whose budget refuses alias bombs. Fields
//! outside the section are gkectl's and are ignored (logged at debug
//! level); an unknown key inside the section is an error that names the
//! nearest known key, so that a typo never silently becomes a default.
//! Each leaf is read as [`Written`], what the file says, so that every bad
//! value is an error that names the field path, the value and what is
//! allowed.

use std::collections::BTreeMap;
use std::path::Path;

use ksa_kube::api::{
    DirectorySink, KeyKind, PublishSpec, RefreshObserver, RolloutKind, S3Sink, TokenRefreshPolicy,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

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
    /// `ksaSigningKeyRotation.issuer`: the issuer to rotate to (the CRD's
    /// `spec.issuer`); `--issuer` wins over it.
    pub issuer: Option<String>,
    /// `ksaSigningKeyRotation.key`: `RSA-2048` (default), `RSA-3072`,
    /// `RSA-4096` or `ECDSA-P256`.
    pub key: KeyKind,
    /// `ksaSigningKeyRotation.tokenRefresh.policy`: `restart-pods`
    /// (default), `recreate-nodes` or `wait`.
    pub token_refresh: TokenRefreshPolicy,
    pub max_token_seconds: u64,
    /// `ksaSigningKeyRotation.tokenRefresh.observe`: `AuditWebhook` (with
    /// `wait`) observes the kubelets' refreshes (the CRD's
    /// `spec.tokenRefresh.observe`).
    pub observe: Option<RefreshObserver>,
    pub trust_lead_time_seconds: u64,
    /// `ksaSigningKeyRotation.kubeconfigSecret`: the Secret in the admin
    /// cluster holding the user cluster's kubeconfig.
    pub kubeconfig_secret: Option<String>,
    /// `ksaSigningKeyRotation.kubeconfigSecretKey`: its data key
    /// (default `value`).
    pub kubeconfig_secret_key: String,
    /// `ksaSigningKeyRotation.keySecret`.
    pub key_secret: Option<String>,
    /// `ksaSigningKeyRotation.rollout`: `hosted-control-plane` (default) or
    /// `external-signer`.
    pub rollout: RolloutKind,
    /// `ksaSigningKeyRotation.apiServerWorkload`: the workload running the
    /// API servers (restarted on a key change, its container's issuer
    /// arguments changed by an issuer rotation).
    pub api_server_workload: Option<ApiServerWorkload>,
    /// `ksaSigningKeyRotation.publish`: where outside verifiers read the
    /// keys (the CRD's `spec.publish`).
    pub publish: PublishSpec,
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
    #[error(
        "{field}: unknown key{}; known keys here: {}",
        .suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default(),
        .known.join(", ")
    )]
    UnknownKey {
        field: String,
        /// The known key nearest to the one written, when one is near.
        suggestion: Option<&'static str>,
        known: &'static [&'static str],
    },
    /// A key ksa once read and no longer does, refused so that it never
    /// seems to take effect.
    #[error("{field}: not supported: {why}")]
    Unsupported { field: String, why: &'static str },
    #[error("the config is {len} bytes; a user cluster config is at most {max}")]
    TooLarge { len: usize, max: u64 },
}

/// The file as written: the fields `ksa` reads, typed; gkectl's other
/// fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    name: Option<Written>,
    enable_advanced_cluster: Option<Written>,
    ksa_signing_key_rotation: Option<Shaped<RawSection>>,
    /// gkectl's fields (and a mapping is required: a flattened struct
    /// is read only from one).
    #[serde(flatten)]
    gkectl: BTreeMap<String, IgnoredAny>,
}

/// `ksaSigningKeyRotation`: one key for each knob of the CRD's spec.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSection {
    namespace: Option<Written>,
    issuers: Option<Written>,
    issuer: Option<Written>,
    key: Option<Written>,
    token_refresh: Option<Shaped<RawTokenRefresh>>,
    trust_lead_time_seconds: Option<Written>,
    kubeconfig_secret: Option<Written>,
    kubeconfig_secret_key: Option<Written>,
    key_secret: Option<Written>,
    rollout: Option<Written>,
    api_server_workload: Option<Shaped<RawWorkload>>,
    publish: Option<Shaped<RawPublish>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

/// `ksaSigningKeyRotation.publish`: the CRD's `spec.publish`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublish {
    s3: Option<Shaped<RawSink>>,
    directory: Option<Shaped<RawSink>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

const PUBLISH_KEYS: &[&str] = &["s3", "directory"];

/// A sink of `publish`: every field is text. Its keys are the CRD's own
/// (`publicUrl`, not `publicURL`): the section is `spec.publish` as the
/// cluster stores it, so a key copied from either place means the same,
/// and the old spelling `publicURL` is refused as an unknown key that
/// names `publicUrl` (a warning would go unseen: the CLI logs errors only).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct RawSink(BTreeMap<String, Written>);

const S3_KEYS: &[&str] = &[
    "endpoint",
    "region",
    "bucket",
    "prefix",
    "publicUrl",
    "credentialsSecret",
    "caBundle",
];
const DIRECTORY_KEYS: &[&str] = &["path", "publicUrl"];

/// Why `ksaSigningKeyRotation.issuers` is refused.
const ISSUERS_UNSUPPORTED: &str = "ksa sets no list of accepted issuers (the API servers' \
     --service-account-issuer flags are that list, and ksa changes them only during an issuer \
     rotation). To move tokens to a new issuer, set ksaSigningKeyRotation.issuer: URL (or pass \
     --issuer URL): the rotation accepts the old and the new issuer while tokens are refreshed, \
     then only the new one. Remove issuers";

const SECTION_KEYS: &[&str] = &[
    "namespace",
    "issuer",
    "key",
    "tokenRefresh",
    "trustLeadTimeSeconds",
    "kubeconfigSecret",
    "kubeconfigSecretKey",
    "keySecret",
    "rollout",
    "apiServerWorkload",
    "publish",
];

/// `ksaSigningKeyRotation.tokenRefresh`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTokenRefresh {
    policy: Option<Written>,
    max_token_seconds: Option<Written>,
    observe: Option<Written>,
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

const TOKEN_REFRESH_KEYS: &[&str] = &["policy", "maxTokenSeconds", "observe"];

/// `ksaSigningKeyRotation.apiServerWorkload`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawWorkload {
    kind: Option<Written>,
    name: Option<Written>,
    container: Option<Written>,
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

const WORKLOAD_KEYS: &[&str] = &["kind", "name", "container"];

/// A section: a mapping as expected, or whatever else was written there
/// (named in the error).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Shaped<T> {
    Mapping(T),
    Other(Written),
}

/// A leaf as the file writes it, so that an error can show it.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    Null,
    Bool(bool),
    Integer(i128),
    Float(f64),
    Text(String),
    List(Vec<Written>),
    Mapping,
}

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Written, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Written;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Written, E> {
                Ok(Written::Null)
            }
            fn visit_none<E>(self) -> Result<Written, E> {
                Ok(Written::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Written, D::Error> {
                Written::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Written, E> {
                Ok(Written::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Written, E> {
                Ok(Written::Integer(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Written, E> {
                Ok(Written::Integer(n.into()))
            }
            fn visit_i128<E>(self, n: i128) -> Result<Written, E> {
                Ok(Written::Integer(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Written, E> {
                Ok(Written::Float(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Written, E> {
                Ok(Written::Text(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Written, E> {
                Ok(Written::Text(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Written, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Written::List(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Written, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Written::Mapping)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Written {
    fn kind(&self) -> &'static str {
        match self {
            Written::Null => "null",
            Written::Bool(_) => "a boolean",
            Written::Integer(_) | Written::Float(_) => "a number",
            Written::Text(_) => "a string",
            Written::List(_) => "a list",
            Written::Mapping => "a mapping",
        }
    }

    /// The value, as an error shows it.
    fn shown(&self) -> String {
        match self {
            Written::Text(s) => format!("{s:?}"),
            Written::Bool(b) => b.to_string(),
            Written::Integer(n) => n.to_string(),
            Written::Float(n) => n.to_string(),
            other => other.kind().to_owned(),
        }
    }
}

/// The values of each choice, as written and as read.
const KEYS: [(&str, KeyKind); 4] = [
    ("RSA-2048", KeyKind::Rsa2048),
    ("RSA-3072", KeyKind::Rsa3072),
    ("RSA-4096", KeyKind::Rsa4096),
    ("ECDSA-P256", KeyKind::EcdsaP256),
];
const POLICIES: [(&str, TokenRefreshPolicy); 3] = [
    ("restart-pods", TokenRefreshPolicy::RestartPods),
    ("recreate-nodes", TokenRefreshPolicy::RecreateNodes),
    ("wait", TokenRefreshPolicy::Wait),
];
const ROLLOUTS: [(&str, RolloutKind); 2] = [
    ("hosted-control-plane", RolloutKind::HostedControlPlane),
    ("external-signer", RolloutKind::ExternalSigner),
];
const WORKLOAD_KINDS: [(&str, &str); 3] = [
    ("Deployment", "Deployment"),
    ("StatefulSet", "StatefulSet"),
    ("DaemonSet", "DaemonSet"),
];
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
        let not_a_mapping = |value: &str| ConfigError::Invalid {
            field: "(document)".into(),
            value: value.into(),
            allowed: "a user cluster config is a YAML mapping",
        };
        // An empty file (or one of comments only) is no document at all.
        let empty = text
            .lines()
            .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'));
        if empty {
            return Err(not_a_mapping("an empty document"));
        }
        let document: Shaped<RawConfig> =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                path: "the config".into(),
                detail: e.to_string(),
            })?;
        let root = match document {
            Shaped::Mapping(root) => root,
            Shaped::Other(other) => return Err(not_a_mapping(other.kind())),
        };
        for key in root.gkectl.keys() {
            tracing::debug!(field = %crate::output::shown(key), "ignoring user cluster config field");
        }
        let name = string(root.name.as_ref(), "name")?.ok_or(ConfigError::Missing {
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
        let advanced_cluster = match &root.enable_advanced_cluster {
            None | Some(Written::Null) => false,
            Some(Written::Bool(b)) => *b,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: "enableAdvancedCluster".into(),
                    value: other.shown(),
                    allowed: "true or false",
                });
            }
        };
        const S: &str = "ksaSigningKeyRotation";
        let section = mapping(root.ksa_signing_key_rotation, S, "a mapping")?;
        let section = section.unwrap_or_default();
        known_keys(&section.unknown, S, SECTION_KEYS)?;
        let field = |key: &str| format!("{S}.{key}");
        let namespace = string(section.namespace.as_ref(), &field("namespace"))?
            .unwrap_or_else(|| name.clone());
        if !is_dns_label(&namespace) {
            return Err(ConfigError::Invalid {
                field: field("namespace"),
                value: format!("{namespace:?}"),
                allowed: "a DNS-1123 label",
            });
        }
        // Read once and then ignored; refused, whatever it holds, rather
        // than seem to take effect.
        if section.issuers.is_some() {
            return Err(ConfigError::Unsupported {
                field: field("issuers"),
                why: ISSUERS_UNSUPPORTED,
            });
        }
        let issuer = string(section.issuer.as_ref(), &field("issuer"))?;
        if let Some(url) = &issuer
            && !url.starts_with("https://")
        {
            return Err(ConfigError::Invalid {
                field: field("issuer"),
                value: format!("{url:?}"),
                allowed: "an https:// URL with a host and no query or fragment",
            });
        }
        let key = one_of(
            section.key.as_ref(),
            &field("key"),
            &KEYS,
            "RSA-2048 (default), RSA-3072, RSA-4096 or ECDSA-P256",
        )?
        .unwrap_or_default();
        let refresh = mapping(
            section.token_refresh,
            &field("tokenRefresh"),
            "a mapping with policy, maxTokenSeconds and observe",
        )?;
        if let Some(refresh) = &refresh {
            known_keys(&refresh.unknown, &field("tokenRefresh"), TOKEN_REFRESH_KEYS)?;
        }
        let token_refresh = one_of(
            refresh.as_ref().and_then(|r| r.policy.as_ref()),
            &field("tokenRefresh.policy"),
            &POLICIES,
            "restart-pods (default), recreate-nodes or wait",
        )?
        .unwrap_or_default();
        let max_token_seconds = number(
            refresh.as_ref().and_then(|r| r.max_token_seconds.as_ref()),
            &field("tokenRefresh.maxTokenSeconds"),
            600,
            "a whole number of seconds, at least 600",
        )?
        .unwrap_or(0);
        let observe = one_of(
            refresh.as_ref().and_then(|r| r.observe.as_ref()),
            &field("tokenRefresh.observe"),
            &[("AuditWebhook", RefreshObserver::AuditWebhook)],
            "AuditWebhook (with policy wait), or leave it out",
        )?;
        if observe.is_some() && token_refresh != TokenRefreshPolicy::Wait {
            return Err(ConfigError::Invalid {
                field: field("tokenRefresh.observe"),
                value: format!("AuditWebhook with policy {token_refresh}"),
                allowed: "only with policy wait (the other policies refresh pods themselves)",
            });
        }
        let trust_lead_time_seconds = number(
            section.trust_lead_time_seconds.as_ref(),
            &field("trustLeadTimeSeconds"),
            0,
            "a whole number of seconds",
        )?
        .unwrap_or(0);
        let kubeconfig_secret = string(
            section.kubeconfig_secret.as_ref(),
            &field("kubeconfigSecret"),
        )?;
        let kubeconfig_secret_key = string(
            section.kubeconfig_secret_key.as_ref(),
            &field("kubeconfigSecretKey"),
        )?
        .unwrap_or_else(|| "value".into());
        let key_secret = string(section.key_secret.as_ref(), &field("keySecret"))?;
        let rollout = one_of(
            section.rollout.as_ref(),
            &field("rollout"),
            &ROLLOUTS,
            "hosted-control-plane (default) or external-signer",
        )?
        .unwrap_or_default();
        let workload = mapping(
            section.api_server_workload,
            &field("apiServerWorkload"),
            "a mapping with kind, name and container",
        )?;
        let api_server_workload = match workload {
            None => None,
            Some(workload) => {
                let field = |key: &str| format!("{S}.apiServerWorkload.{key}");
                known_keys(
                    &workload.unknown,
                    &format!("{S}.apiServerWorkload"),
                    WORKLOAD_KEYS,
                )?;
                let kind = one_of(
                    workload.kind.as_ref(),
                    &field("kind"),
                    &WORKLOAD_KINDS,
                    "Deployment, StatefulSet or DaemonSet",
                )?
                .map(str::to_owned)
                .ok_or(ConfigError::Missing {
                    field: field("kind"),
                    allowed: "Deployment, StatefulSet or DaemonSet",
                })?;
                let name = string(workload.name.as_ref(), &field("name"))?.ok_or(
                    ConfigError::Missing {
                        field: field("name"),
                        allowed: "the name of the workload running the API servers",
                    },
                )?;
                let container = string(workload.container.as_ref(), &field("container"))?;
                Some(ApiServerWorkload {
                    kind,
                    name,
                    container,
                })
            }
        };
        let publish = publish_spec(section.publish)?;
        Ok(UserClusterConfig {
            publish,
            name,
            namespace,
            advanced_cluster,
            issuer,
            key,
            token_refresh,
            max_token_seconds,
            observe,
            trust_lead_time_seconds,
            kubeconfig_secret,
            kubeconfig_secret_key,
            key_secret,
            rollout,
            api_server_workload,
        })
    }
}

/// `ksaSigningKeyRotation.publish`, as the CRD's `spec.publish`: each sink's
/// keys checked, each value text, the required ones present.
fn publish_spec(raw: Option<Shaped<RawPublish>>) -> Result<PublishSpec, ConfigError> {
    const P: &str = "ksaSigningKeyRotation.publish";
    let Some(raw) = mapping(raw, P, "a mapping with s3 and directory")? else {
        return Ok(PublishSpec::default());
    };
    known_keys(&raw.unknown, P, PUBLISH_KEYS)?;
    // Each sink's fields, as text, after its keys are checked.
    let fields = |sink: Option<Shaped<RawSink>>,
                  name: &str,
                  keys: &'static [&'static str]|
     -> Result<Option<BTreeMap<String, Option<String>>>, ConfigError> {
        let path = format!("{P}.{name}");
        let Some(RawSink(sink)) = mapping(sink, &path, "a mapping")? else {
            return Ok(None);
        };
        let unknown: BTreeMap<String, IgnoredAny> = sink
            .keys()
            .filter(|k| !keys.contains(&k.as_str()))
            .map(|k| (k.clone(), IgnoredAny))
            .collect();
        known_keys(&unknown, &path, keys)?;
        let mut values = BTreeMap::new();
        for (key, value) in &sink {
            values.insert(key.clone(), string(Some(value), &format!("{path}.{key}"))?);
        }
        Ok(Some(values))
    };
    let required = |values: &BTreeMap<String, Option<String>>, sink: &str, key: &str| {
        values
            .get(key)
            .cloned()
            .flatten()
            .ok_or_else(|| ConfigError::Missing {
                field: format!("{P}.{sink}.{key}"),
                allowed: "text (see README, Outside verifiers)",
            })
    };
    let optional =
        |values: &BTreeMap<String, Option<String>>, key: &str| values.get(key).cloned().flatten();
    let s3 = match fields(raw.s3, "s3", S3_KEYS)? {
        None => None,
        Some(v) => Some(S3Sink {
            endpoint: required(&v, "s3", "endpoint")?,
            region: optional(&v, "region").unwrap_or_else(|| "us-east-1".into()),
            bucket: required(&v, "s3", "bucket")?,
            prefix: optional(&v, "prefix"),
            public_url: optional(&v, "publicUrl"),
            credentials_secret: required(&v, "s3", "credentialsSecret")?,
            ca_bundle: optional(&v, "caBundle"),
        }),
    };
    let directory = match fields(raw.directory, "directory", DIRECTORY_KEYS)? {
        None => None,
        Some(v) => Some(DirectorySink {
            path: required(&v, "directory", "path")?,
            public_url: optional(&v, "publicUrl"),
        }),
    };
    Ok(PublishSpec { s3, directory })
}

/// A section that must be a mapping when present.
fn mapping<T>(
    value: Option<Shaped<T>>,
    field: &str,
    allowed: &'static str,
) -> Result<Option<T>, ConfigError> {
    match value {
        None | Some(Shaped::Other(Written::Null)) => Ok(None),
        Some(Shaped::Mapping(section)) => Ok(Some(section)),
        Some(Shaped::Other(other)) => Err(ConfigError::Invalid {
            field: field.to_owned(),
            value: other.shown(),
            allowed,
        }),
    }
}

/// Refuses the first key of `section` that is not one of `known`, naming
/// the nearest known key. The key is the file's, so it is shown escaped
/// (an ESC or a newline in it never reaches the terminal as such).
fn known_keys(
    unknown: &BTreeMap<String, IgnoredAny>,
    section: &str,
    known: &'static [&'static str],
) -> Result<(), ConfigError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(key) => Err(ConfigError::UnknownKey {
            field: format!("{section}.{}", crate::output::shown(key)),
            suggestion: nearest(key, known),
            known,
        }),
    }
}

/// The known key most like `key` (as clap suggests subcommands), when one
/// is alike enough to be what was meant.
fn nearest(key: &str, known: &'static [&'static str]) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|candidate| {
            (
                strsim::jaro_winkler(&key, &candidate.to_ascii_lowercase()),
                *candidate,
            )
        })
        .filter(|(similarity, _)| *similarity > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

fn string(value: Option<&Written>, field: &str) -> Result<Option<String>, ConfigError> {
    match value {
        None | Some(Written::Null) => Ok(None),
        Some(Written::Text(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ConfigError::Invalid {
            field: field.to_owned(),
            value: other.shown(),
            allowed: "a string",
        }),
    }
}

/// The value `value` names in `choices` (as written, as read), or an
/// error naming what is allowed; never a default for a value not listed.
fn one_of<T: Copy>(
    value: Option<&Written>,
    field: &str,
    choices: &[(&str, T)],
    allowed: &'static str,
) -> Result<Option<T>, ConfigError> {
    match string(value, field) {
        Ok(Some(v)) => match choices.iter().find(|(written, _)| *written == v) {
            Some((_, read)) => Ok(Some(*read)),
            None => Err(ConfigError::Invalid {
                field: field.to_owned(),
                value: format!("{v:?}"),
                allowed,
            }),
        },
        // Not a string: say what is allowed, not only "a string".
        Err(ConfigError::Invalid { field, value, .. }) => Err(ConfigError::Invalid {
            field,
            value,
            allowed,
        }),
        Ok(None) => Ok(None),
        Err(other) => Err(other),
    }
}

fn number(
    value: Option<&Written>,
    field: &str,
    min: u64,
    allowed: &'static str,
) -> Result<Option<u64>, ConfigError> {
    match value {
        None | Some(Written::Null) => Ok(None),
        Some(Written::Integer(n)) if u64::try_from(*n).is_ok_and(|n| n >= min) => {
            Ok(u64::try_from(*n).ok())
        }
        Some(other) => Err(ConfigError::Invalid {
            field: field.to_owned(),
            value: other.shown(),
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
        assert_eq!(config.key, KeyKind::Rsa2048);
        assert_eq!(config.token_refresh, TokenRefreshPolicy::RestartPods);
    }

    #[test]
    fn every_knob_of_the_crd_can_be_set_from_the_section() {
        let text = "\
name: c1
gkeOnPremVersion: 1.16.0
vCenter: {datacenter: dc}
ksaSigningKeyRotation:
  namespace: ns1
  issuer: https://b.example
  key: ECDSA-P256
  tokenRefresh: {policy: wait, maxTokenSeconds: 3600, observe: AuditWebhook}
  trustLeadTimeSeconds: 300
  kubeconfigSecret: c1-kubeconfig
  kubeconfigSecretKey: admin.conf
  keySecret: c1-apiserver-keys
  rollout: external-signer
  apiServerWorkload: {kind: StatefulSet, name: kube-apiserver, container: apiserver}
  publish: {directory: {path: c1}}
";
        let config = UserClusterConfig::parse(text).expect("parses");
        assert_eq!(
            config,
            UserClusterConfig {
                name: "c1".into(),
                namespace: "ns1".into(),
                advanced_cluster: false,
                issuer: Some("https://b.example".into()),
                key: KeyKind::EcdsaP256,
                token_refresh: TokenRefreshPolicy::Wait,
                max_token_seconds: 3600,
                observe: Some(RefreshObserver::AuditWebhook),
                trust_lead_time_seconds: 300,
                kubeconfig_secret: Some("c1-kubeconfig".into()),
                kubeconfig_secret_key: "admin.conf".into(),
                key_secret: Some("c1-apiserver-keys".into()),
                rollout: RolloutKind::ExternalSigner,
                api_server_workload: Some(ApiServerWorkload {
                    kind: "StatefulSet".into(),
                    name: "kube-apiserver".into(),
                    container: Some("apiserver".into()),
                }),
                publish: PublishSpec {
                    s3: None,
                    directory: Some(DirectorySink {
                        path: "c1".into(),
                        public_url: None,
                    }),
                },
            }
        );
        // Each key the section lists is one it reads.
        for key in SECTION_KEYS {
            assert!(
                text.contains(&format!("  {key}:")),
                "{key} is not set above"
            );
        }
    }

    #[test]
    fn an_unknown_key_in_the_section_is_refused_with_the_nearest_known_key() {
        let cases = [
            (
                "name: a\nksaSigningKeyRotation:\n  trustLeadTimeSecond: 60\n",
                "ksaSigningKeyRotation.trustLeadTimeSecond",
                Some("trustLeadTimeSeconds"),
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  tokenRefresh:\n    maxTokenSecs: 3600\n",
                "ksaSigningKeyRotation.tokenRefresh.maxTokenSecs",
                Some("maxTokenSeconds"),
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  apiServerWorkload: {kind: Deployment, name: x, contianer: y}\n",
                "ksaSigningKeyRotation.apiServerWorkload.contianer",
                Some("container"),
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  publish:\n    s3: {endpoint: https://s3.example, bucket: b, credentialSecret: c}\n",
                "ksaSigningKeyRotation.publish.s3.credentialSecret",
                Some("credentialsSecret"),
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  publish:\n    directroy: {path: p}\n",
                "ksaSigningKeyRotation.publish.directroy",
                Some("directory"),
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  Namespace: x\n",
                "ksaSigningKeyRotation.Namespace",
                Some("namespace"),
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  colour: blue\n",
                "ksaSigningKeyRotation.colour",
                None,
            ),
        ];
        for (text, path, suggestion) in cases {
            match UserClusterConfig::parse(text) {
                Err(ConfigError::UnknownKey {
                    field,
                    suggestion: got,
                    ..
                }) => {
                    assert_eq!(field, path, "{text}");
                    assert_eq!(got, suggestion, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let message = UserClusterConfig::parse(cases[0].0)
            .expect_err("refused")
            .to_string();
        assert_eq!(
            message,
            "ksaSigningKeyRotation.trustLeadTimeSecond: unknown key (did you mean \
             trustLeadTimeSeconds?); known keys here: namespace, issuer, key, \
             tokenRefresh, trustLeadTimeSeconds, kubeconfigSecret, kubeconfigSecretKey, \
             keySecret, rollout, apiServerWorkload, publish"
        );
    }

    #[test]
    fn the_publish_section_is_the_crds_spec_publish() {
        let config = UserClusterConfig::parse(
            "name: a\nksaSigningKeyRotation:\n  publish:\n    s3:\n      endpoint: https://s3.example\n      \
             bucket: oidc\n      prefix: prod\n      credentialsSecret: s3-writer\n    directory: {path: prod}\n",
        )
        .expect("parses");
        let s3 = config.publish.s3.expect("an s3 sink");
        assert_eq!(
            (s3.endpoint.as_str(), s3.region.as_str(), s3.bucket.as_str()),
            ("https://s3.example", "us-east-1", "oidc")
        );
        assert_eq!(s3.prefix.as_deref(), Some("prod"));
        assert_eq!(s3.credentials_secret, "s3-writer");
        assert_eq!(config.publish.directory.expect("a directory").path, "prod");
        let missing = UserClusterConfig::parse(
            "name: a\nksaSigningKeyRotation:\n  publish:\n    s3: {endpoint: https://s3.example}\n",
        )
        .expect_err("no bucket");
        assert!(
            missing
                .to_string()
                .contains("ksaSigningKeyRotation.publish.s3.bucket"),
            "{missing}"
        );
    }

    #[test]
    fn unknown_keys_outside_the_section_stay_accepted() {
        let text = "name: a\nsomethingGkectlAddsLater: {x: [1, 2]}\nksaSigningKeyRotation: {}\n";
        assert_eq!(UserClusterConfig::parse(text).expect("parses").name, "a");
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
                "name: a\nksaSigningKeyRotation:\n  tokenRefresh:\n    policy: wait\n    observe: Audit\n",
                "ksaSigningKeyRotation.tokenRefresh.observe: \"Audit\" is not allowed; AuditWebhook",
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  tokenRefresh:\n    observe: AuditWebhook\n",
                "ksaSigningKeyRotation.tokenRefresh.observe: AuditWebhook with policy restart-pods is not allowed; only with policy wait",
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  issuers: [https://a.example]\n",
                "ksaSigningKeyRotation.issuers: not supported: ksa sets no list of accepted issuers",
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  issuers: []\n",
                "ksaSigningKeyRotation.issuers: not supported",
            ),
            (
                "name: a\nksaSigningKeyRotation:\n  issuer: http://x\n",
                "ksaSigningKeyRotation.issuer: \"http://x\" is not allowed",
            ),
            ("gkeOnPremVersion: 1.16\n", "name: missing"),
        ];
        for (text, expected) in cases {
            let error = UserClusterConfig::parse(text).expect_err(text).to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }
}
