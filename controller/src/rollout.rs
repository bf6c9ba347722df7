//! How API servers pick up a new key set: the one place the reconciler asks
//! for "serve signing key S and public keys P".
//!
//! A hosted control plane, whose API server pods mount a Secret (`sa.key`,
//! `sa.pub`) and are restarted by their workload's pod template; or the
//! KEP-740 external signer, which follows the same Secret and needs no
//! restart. Either way, whether a step took hold is never assumed here but
//! observed on the API servers themselves.
//!
//! The Secret and the workload are named by the rotation's spec, which
//! whoever may write rotations writes. The private signing key goes only
//! into a Secret ksa owns, and only a workload labelled for the rotation
//! is restarted: [`Rollout::check_owned`] refuses anything else, before
//! the rotation changes anything.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use ksa_core::KeyVersion;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::api::RolloutKind;
use ksa_kube::keystore::{KeyStore, LABEL_KEY_VERSION, LABEL_ROTATION, key_set_id};
use ksa_kube::names::is_dns1123_subdomain;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::de::DeserializeOwned;

use crate::error::Result;

/// The workload kinds ksa restarts, by an annotation on their pod
/// template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    /// The kind `spec.rollout.workload.kind` names, or a refusal.
    pub fn parse(kind: &str) -> Result<WorkloadKind, Refusal> {
        match kind {
            "Deployment" => Ok(WorkloadKind::Deployment),
            "StatefulSet" => Ok(WorkloadKind::StatefulSet),
            "DaemonSet" => Ok(WorkloadKind::DaemonSet),
            other => Err(Refusal::UnknownWorkloadKind {
                // The spec's text, shortened: it goes into status and Events.
                kind: other.chars().take(63).collect(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// The resource, as `kubectl` spells it.
    fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The workload running the API server pods, restarted when the key set
/// changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
}

/// Why a rotation's roll-out is refused. Names the object and the label
/// that would make it acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error(
        "spec.rollout.keySecret {name:?} is not a Secret name (a DNS-1123 subdomain of at most \
         253 characters)"
    )]
    BadKeySecretName { name: String },
    #[error(
        "spec.rollout.keySecret names Secret {namespace}/{name}, which does not exist; ksa writes \
         the API server key only into its own Secret {default} or into an existing Secret \
         labelled {LABEL_ROTATION}={rotation}: create it with that label, or leave keySecret unset"
    )]
    KeySecretMissing {
        namespace: String,
        name: String,
        default: String,
        rotation: String,
    },
    #[error(
        "spec.rollout.keySecret names Secret {namespace}/{name}, which is not labelled \
         {LABEL_ROTATION}={rotation}; ksa writes the private signing key only into a Secret \
         labelled for the rotation: `kubectl label secret -n {namespace} {name} \
         {LABEL_ROTATION}={rotation}`, or leave keySecret unset"
    )]
    KeySecretNotLabelled {
        namespace: String,
        name: String,
        rotation: String,
    },
    #[error(
        "spec.rollout.keySecret names Secret {namespace}/{name}, a per-version Secret of the key \
         store; name the Secret the API servers mount"
    )]
    KeySecretIsKeyStore { namespace: String, name: String },
    #[error(
        "spec.rollout.workload.kind {kind:?} is not one ksa restarts; use Deployment, \
         StatefulSet or DaemonSet"
    )]
    UnknownWorkloadKind { kind: String },
    #[error(
        "spec.rollout.workload.name {name:?} is not a workload name (a DNS-1123 subdomain of at \
         most 253 characters)"
    )]
    BadWorkloadName { name: String },
    #[error("spec.rollout.workload names {kind} {namespace}/{name}, which does not exist")]
    WorkloadMissing {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    #[error(
        "spec.rollout.workload names {kind} {namespace}/{name}, which is not labelled \
         {LABEL_ROTATION}={rotation}; ksa restarts only the API server's workload, labelled for \
         the rotation: `kubectl label {} -n {namespace} {name} {LABEL_ROTATION}={rotation}`",
        kind.resource()
    )]
    WorkloadNotLabelled {
        kind: WorkloadKind,
        namespace: String,
        name: String,
        rotation: String,
    },
}

impl Refusal {
    /// The Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadKeySecretName { .. } => "BadKeySecretName",
            Refusal::KeySecretMissing { .. } => "KeySecretMissing",
            Refusal::KeySecretNotLabelled { .. } => "KeySecretNotLabelled",
            Refusal::KeySecretIsKeyStore { .. } => "KeySecretIsKeyStore",
            Refusal::UnknownWorkloadKind { .. } => "UnknownWorkloadKind",
            Refusal::BadWorkloadName { .. } => "BadWorkloadName",
            Refusal::WorkloadMissing { .. } => "WorkloadMissing",
            Refusal::WorkloadNotLabelled { .. } => "WorkloadNotLabelled",
        }
    }
}

/// The API server key Secret of a rotation that names none.
pub fn default_key_secret(rotation: &str) -> String {
    format!("{rotation}-apiserver-keys")
}

/// Whether the rotation may write the key Secret `name`, whose labels
/// are `labels` (`None`: it does not exist). Its default Secret is its
/// own; any other must exist and be labelled for the rotation, and not be
/// one of the key store's.
pub fn may_write_key_secret(
    namespace: &str,
    rotation: &str,
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), Refusal> {
    if name == default_key_secret(rotation) {
        return Ok(());
    }
    let Some(labels) = labels else {
        return Err(Refusal::KeySecretMissing {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            default: default_key_secret(rotation),
            rotation: rotation.to_owned(),
        });
    };
    if labels.contains_key(LABEL_KEY_VERSION) {
        return Err(Refusal::KeySecretIsKeyStore {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    if labels.get(LABEL_ROTATION).map(String::as_str) != Some(rotation) {
        return Err(Refusal::KeySecretNotLabelled {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            rotation: rotation.to_owned(),
        });
    }
    Ok(())
}

/// Whether the rotation may restart `workload`, whose labels are
/// `labels` (`None`: it does not exist): only when labelled for it.
pub fn may_restart_workload(
    namespace: &str,
    rotation: &str,
    workload: &Workload,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), Refusal> {
    let Some(labels) = labels else {
        return Err(Refusal::WorkloadMissing {
            kind: workload.kind,
            namespace: namespace.to_owned(),
            name: workload.name.clone(),
        });
    };
    if labels.get(LABEL_ROTATION).map(String::as_str) != Some(rotation) {
        return Err(Refusal::WorkloadNotLabelled {
            kind: workload.kind,
            namespace: namespace.to_owned(),
            name: workload.name.clone(),
            rotation: rotation.to_owned(),
        });
    }
    Ok(())
}

/// A rotation's way of rolling key sets out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    HostedControlPlane {
        /// The Secret the API server pods mount.
        key_secret: String,
        /// The workload restarted when the key set changes; none when
        /// whoever mounts the Secret restarts on change.
        workload: Option<Workload>,
    },
    /// `ksa-controller signer` reads `sa.key` and `sa.pub` from this Secret
    /// and serves them to kube-apiserver as they change.
    ExternalSigner { key_secret: String },
}

impl Rollout {
    /// The roll-out a rotation's spec asks for, or a refusal of a name or
    /// kind that cannot be one. Whether ksa owns the objects it names is
    /// [`Rollout::check_owned`]'s.
    pub fn of(resource: &KSASigningKeyRotation, name: &str) -> Result<Rollout, Refusal> {
        let spec = &resource.spec.rollout;
        let key_secret = match &spec.key_secret {
            Some(secret) if !is_dns1123_subdomain(secret) => {
                return Err(Refusal::BadKeySecretName {
                    name: secret.chars().take(63).collect(),
                });
            }
            Some(secret) => secret.clone(),
            None => default_key_secret(name),
        };
        match spec.kind {
            RolloutKind::HostedControlPlane => {
                let workload = match &spec.workload {
                    Some(workload) => {
                        let kind = WorkloadKind::parse(&workload.kind)?;
                        if !is_dns1123_subdomain(&workload.name) {
                            return Err(Refusal::BadWorkloadName {
                                name: workload.name.chars().take(63).collect(),
                            });
                        }
                        Some(Workload {
                            kind,
                            name: workload.name.clone(),
                        })
                    }
                    None => None,
                };
                Ok(Rollout::HostedControlPlane {
                    key_secret,
                    workload,
                })
            }
            RolloutKind::ExternalSigner => Ok(Rollout::ExternalSigner { key_secret }),
        }
    }

    fn key_secret(&self) -> &str {
        match self {
            Rollout::HostedControlPlane { key_secret, .. }
            | Rollout::ExternalSigner { key_secret } => key_secret,
        }
    }

    /// Refuses a key Secret or a workload that is not labelled for the
    /// rotation `rotation`. Reads the key Secret (unless it is the
    /// rotation's default) and lists the workload by name; writes nothing.
    pub async fn check_owned(
        &self,
        admin: &kube::Client,
        namespace: &str,
        rotation: &str,
    ) -> Result<()> {
        let key_secret = self.key_secret();
        if key_secret != default_key_secret(rotation) {
            let secret = Api::<Secret>::namespaced(admin.clone(), namespace)
                .get_opt(key_secret)
                .await?;
            let labels = secret.map(|s| s.metadata.labels.unwrap_or_default());
            may_write_key_secret(namespace, rotation, key_secret, labels.as_ref())?;
        }
        if let Rollout::HostedControlPlane {
            workload: Some(workload),
            ..
        } = self
        {
            let labels = match workload.kind {
                WorkloadKind::Deployment => {
                    labels_of::<Deployment>(admin, namespace, &workload.name).await?
                }
                WorkloadKind::StatefulSet => {
                    labels_of::<StatefulSet>(admin, namespace, &workload.name).await?
                }
                WorkloadKind::DaemonSet => {
                    labels_of::<DaemonSet>(admin, namespace, &workload.name).await?
                }
            };
            may_restart_workload(namespace, rotation, workload, labels.as_ref())?;
        }
        Ok(())
    }

    /// Makes the API servers sign with `signing` and accept `public`, and
    /// publishes the JWKS. Idempotent: nothing restarts when the key set is
    /// already in place.
    pub async fn apply(
        &self,
        admin: &kube::Client,
        namespace: &str,
        keystore: &KeyStore,
        signing: KeyVersion,
        public: &[KeyVersion],
        issuer: Option<&str>,
    ) -> Result<()> {
        match self {
            Rollout::HostedControlPlane {
                key_secret,
                workload,
            } => {
                let changed = keystore
                    .publish(key_secret, signing, public, issuer)
                    .await?;
                let Some(workload) = workload.as_ref().filter(|_| changed) else {
                    return Ok(());
                };
                let id = key_set_id(signing, public);
                let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"ksa.dev/key-set": id}}}}});
                let patch = Patch::Merge(&patch);
                let params = PatchParams::default();
                let name = &workload.name;
                match workload.kind {
                    WorkloadKind::Deployment => {
                        Api::<Deployment>::namespaced(admin.clone(), namespace)
                            .patch(name, &params, &patch)
                            .await?;
                    }
                    WorkloadKind::StatefulSet => {
                        Api::<StatefulSet>::namespaced(admin.clone(), namespace)
                            .patch(name, &params, &patch)
                            .await?;
                    }
                    WorkloadKind::DaemonSet => {
                        Api::<DaemonSet>::namespaced(admin.clone(), namespace)
                            .patch(name, &params, &patch)
                            .await?;
                    }
                }
                Ok(())
            }
            Rollout::ExternalSigner { key_secret } => {
                // The signer follows the Secret; kube-apiserver fetches the
                // keys again within the signer's refresh hint.
                keystore
                    .publish(key_secret, signing, public, issuer)
                    .await?;
                Ok(())
            }
        }
    }
}

/// The labels of the workload `name` (`None`: there is none), by a list
/// with a field selector: the controller lists and patches workloads, and
/// needs no `get` for this.
async fn labels_of<K>(
    admin: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let list = Api::<K>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .find(|w| w.meta().name.as_deref() == Some(name))
        .map(|w| w.meta().labels.clone().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(rollout: serde_json::Value) -> KSASigningKeyRotation {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ksa.dev/v1alpha1",
            "kind": "KSASigningKeyRotation",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"keyVersion": 2, "rollout": rollout},
        }))
        .expect("parses")
    }

    fn labelled(rotation: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_ROTATION.to_owned(), rotation.to_owned())])
    }

    #[test]
    fn workload_kinds_are_the_three_ksa_restarts() {
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            assert_eq!(WorkloadKind::parse(kind).expect("parses").as_str(), kind);
        }
        for kind in ["CronJob", "deployment", "", "Pod", "ReplicaSet"] {
            assert_eq!(
                WorkloadKind::parse(kind).expect_err("refused"),
                Refusal::UnknownWorkloadKind { kind: kind.into() }
            );
        }
    }

    #[test]
    fn the_spec_is_parsed_into_a_rollout_or_refused() {
        assert_eq!(
            Rollout::of(&rotation(serde_json::json!({})), "r").expect("parses"),
            Rollout::HostedControlPlane {
                key_secret: "r-apiserver-keys".into(),
                workload: None
            }
        );
        assert_eq!(
            Rollout::of(
                &rotation(serde_json::json!({"workload": {"kind": "StatefulSet", "name": "kas"}})),
                "r"
            )
            .expect("parses"),
            Rollout::HostedControlPlane {
                key_secret: "r-apiserver-keys".into(),
                workload: Some(Workload {
                    kind: WorkloadKind::StatefulSet,
                    name: "kas".into()
                })
            }
        );
        assert_eq!(
            Rollout::of(
                &rotation(serde_json::json!({"workload": {"kind": "Job", "name": "kas"}})),
                "r"
            )
            .expect_err("refused")
            .reason(),
            "UnknownWorkloadKind"
        );
        assert_eq!(
            Rollout::of(
                &rotation(serde_json::json!({"workload": {"kind": "Deployment", "name": "../x"}})),
                "r"
            )
            .expect_err("refused")
            .reason(),
            "BadWorkloadName"
        );
        assert_eq!(
            Rollout::of(
                &rotation(serde_json::json!({"keySecret": "a/../../configmaps/b"})),
                "r"
            )
            .expect_err("refused")
            .reason(),
            "BadKeySecretName"
        );
        assert_eq!(
            Rollout::of(
                &rotation(serde_json::json!({"kind": "ExternalSigner", "keySecret": "k"})),
                "r"
            )
            .expect("parses"),
            Rollout::ExternalSigner {
                key_secret: "k".into()
            }
        );
    }

    #[test]
    fn the_key_goes_only_into_the_default_secret_or_one_labelled_for_the_rotation() {
        assert_eq!(
            may_write_key_secret("ns", "r", "r-apiserver-keys", None),
            Ok(())
        );
        assert_eq!(
            may_write_key_secret("ns", "r", "mine", Some(&labelled("r"))),
            Ok(())
        );
        assert_eq!(
            may_write_key_secret("ns", "r", "victim", Some(&BTreeMap::new())),
            Err(Refusal::KeySecretNotLabelled {
                namespace: "ns".into(),
                name: "victim".into(),
                rotation: "r".into()
            })
        );
        assert_eq!(
            may_write_key_secret("ns", "r", "other", Some(&labelled("other-rotation")))
                .expect_err("refused")
                .reason(),
            "KeySecretNotLabelled"
        );
        assert_eq!(
            may_write_key_secret("ns", "r", "absent", None)
                .expect_err("refused")
                .reason(),
            "KeySecretMissing"
        );
        let mut key_store = labelled("r");
        key_store.insert(LABEL_KEY_VERSION.into(), "1".into());
        assert_eq!(
            may_write_key_secret("ns", "r", "r-signing-key-v1", Some(&key_store))
                .expect_err("refused")
                .reason(),
            "KeySecretIsKeyStore"
        );
    }

    #[test]
    fn only_a_workload_labelled_for_the_rotation_is_restarted() {
        let workload = Workload {
            kind: WorkloadKind::Deployment,
            name: "kube-apiserver".into(),
        };
        assert_eq!(
            may_restart_workload("ns", "r", &workload, Some(&labelled("r"))),
            Ok(())
        );
        let refusal = may_restart_workload("ns", "r", &workload, Some(&BTreeMap::new()))
            .expect_err("refused");
        assert_eq!(refusal.reason(), "WorkloadNotLabelled");
        assert!(
            refusal
                .to_string()
                .contains("`kubectl label deployment -n ns kube-apiserver ksa.dev/rotation=r`"),
            "{refusal}"
        );
        assert_eq!(
            may_restart_workload("ns", "r", &workload, Some(&labelled("s")))
                .expect_err("refused")
                .reason(),
            "WorkloadNotLabelled"
        );
        assert_eq!(
            may_restart_workload("ns", "r", &workload, None)
                .expect_err("refused")
                .reason(),
            "WorkloadMissing"
        );
    }
}
