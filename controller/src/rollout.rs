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
use ksa_core::issuer::{Issuer, IssuerError};
use ksa_core::rotation::WorkloadKind;
use ksa_kube::api::{DEFAULT_CONTAINER, KSASigningKeyRotation, RolloutKind};
use ksa_kube::flags::{self, FlagsError};
use ksa_kube::keystore::{KeyStore, LABEL_KEY_VERSION, LABEL_ROTATION, key_set_id};
use ksa_kube::names::{is_dns1123_label, is_dns1123_subdomain};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::de::DeserializeOwned;

use crate::error::Result;

/// The kind `spec.rollout.workload.kind` names, or a refusal.
fn workload_kind(kind: &str) -> Result<WorkloadKind, Refusal> {
    WorkloadKind::parse(kind).ok_or_else(|| Refusal::UnknownWorkloadKind {
        // The spec's text, shortened: it goes into status and Events.
        kind: kind.chars().take(63).collect(),
    })
}

/// The workload running the API server pods, restarted when the key set
/// changes, and whose API server container's arguments carry the issuer
/// flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    /// The API server container.
    pub container: String,
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
    #[error(
        "spec.rollout.workload.container {name:?} is not a container name (a DNS-1123 label of \
         at most 63 characters)"
    )]
    BadContainerName { name: String },
    #[error(
        "spec.issuer needs spec.rollout.workload: the API server workload whose container \
         arguments carry --service-account-issuer, which ksa changes step by step"
    )]
    IssuerNeedsWorkload,
    #[error("spec.issuer is refused: {problem}")]
    BadIssuer { problem: IssuerError },
    #[error(
        "the issuer of the user cluster is unknown: its API server's discovery document names \
         none (is --service-account-issuer set?)"
    )]
    IssuerUnknown,
    #[error(
        "{kind} {namespace}/{name} has no container {container:?}; name the API server container in spec.rollout.workload.container"
    )]
    ContainerMissing {
        kind: WorkloadKind,
        namespace: String,
        name: String,
        container: String,
    },
    #[error("the arguments of container {container:?} of {kind} {namespace}/{name}: {problem}")]
    IssuerArguments {
        kind: WorkloadKind,
        namespace: String,
        name: String,
        container: String,
        problem: FlagsError,
    },
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
    #[error(
        "the key imported into Secret {secret} (kid {kid}) is not the key the cluster signs with          and accepts on every API server instance (not on: {instances}); ksa uses an imported          key only then. Import the key kube-apiserver signs with (its          --service-account-signing-key-file), or wait for the instances named to be reachable"
    )]
    ImportNotInUse {
        secret: String,
        kid: String,
        instances: String,
    },
    #[error(
        "the key imported into Secret {secret} (kid {kid}) is not a key pair: its private part \
         does not sign what its public key verifies; ksa never uses it. Find out who created \
         the Secret, delete it, and import the key kube-apiserver signs with"
    )]
    ImportNotAKeyPair { secret: String, kid: String },
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
            Refusal::BadContainerName { .. } => "BadContainerName",
            Refusal::IssuerNeedsWorkload => "IssuerNeedsWorkload",
            Refusal::BadIssuer { .. } => "BadIssuer",
            Refusal::IssuerUnknown => "IssuerUnknown",
            Refusal::ContainerMissing { .. } => "ContainerMissing",
            Refusal::IssuerArguments { .. } => "IssuerArguments",
            Refusal::ImportNotInUse { .. } => "ImportNotInUse",
            Refusal::ImportNotAKeyPair { .. } => "ImportNotAKeyPair",
        }
    }
}

pub use ksa_kube::keystore::default_key_secret;

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

/// A rotation's way of rolling key sets and issuers out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub kind: RolloutKind,
    /// The Secret the API server pods mount (hosted), or that
    /// `ksa-controller signer` reads `sa.key` and `sa.pub` from and serves
    /// to kube-apiserver as they change (external signer).
    pub key_secret: String,
    /// The API server workload. Hosted: restarted when the key set
    /// changes (none: whoever mounts the Secret restarts on change).
    /// Either kind: its container's issuer arguments are changed by an
    /// issuer rotation, which needs it.
    pub workload: Option<Workload>,
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
        let workload = match &spec.workload {
            Some(workload) => {
                let kind = workload_kind(&workload.kind)?;
                if !is_dns1123_subdomain(&workload.name) {
                    return Err(Refusal::BadWorkloadName {
                        name: workload.name.chars().take(63).collect(),
                    });
                }
                let container = workload
                    .container
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CONTAINER.to_owned());
                if !is_dns1123_label(&container) {
                    return Err(Refusal::BadContainerName {
                        name: container.chars().take(63).collect(),
                    });
                }
                Some(Workload {
                    kind,
                    name: workload.name.clone(),
                    container,
                })
            }
            None => None,
        };
        if resource.spec.issuer.is_some() && workload.is_none() {
            return Err(Refusal::IssuerNeedsWorkload);
        }
        Ok(Rollout {
            kind: spec.kind,
            key_secret,
            workload,
        })
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
        let key_secret = &self.key_secret;
        if *key_secret != default_key_secret(rotation) {
            let secret = Api::<Secret>::namespaced(admin.clone(), namespace)
                .get_opt(key_secret)
                .await?;
            let labels = secret.map(|s| s.metadata.labels.unwrap_or_default());
            may_write_key_secret(namespace, rotation, key_secret, labels.as_ref())?;
        }
        if let Some(workload) = &self.workload {
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

    /// Makes the API servers sign with `signing` and accept `public` (and,
    /// with `issuers`, sign with the first issuer and accept them all), and
    /// publishes the JWKS. Idempotent: nothing restarts when all of it is
    /// already in place.
    pub async fn apply(
        &self,
        admin: &kube::Client,
        namespace: &str,
        keystore: &KeyStore,
        signing: KeyVersion,
        public: &[KeyVersion],
        issuers: Option<&[Issuer]>,
    ) -> Result<()> {
        let keys_changed = keystore.publish(&self.key_secret, signing, public).await?;
        let Some(workload) = &self.workload else {
            return Ok(());
        };
        let args = match issuers {
            Some(issuers) => workload.issuer_args(admin, namespace, issuers).await?,
            None => None,
        };
        // Hosted: the pods mount the Secret and restart with the workload.
        // External signer: the signer follows the Secret, kube-apiserver
        // fetches the keys again; only new issuer flags restart it.
        let restart = keys_changed && self.kind == RolloutKind::HostedControlPlane;
        if !restart && args.is_none() {
            return Ok(());
        }
        let mut template = serde_json::json!({});
        if restart {
            template["metadata"] = serde_json::json!({"annotations": {"ksa.dev/key-set": key_set_id(signing, public)}});
        }
        if let Some((args, resource_version)) = args {
            template["spec"] =
                serde_json::json!({"containers": [{"name": workload.container, "args": args}]});
            // Conditional on the arguments read: an edit meanwhile makes
            // this fail and the next pass read them again.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": resource_version},
                "spec": {"template": template},
            });
            return workload
                .patch(admin, namespace, &Patch::Strategic(patch))
                .await;
        }
        let patch = serde_json::json!({"spec": {"template": template}});
        workload.patch(admin, namespace, &Patch::Merge(patch)).await
    }
}

impl Workload {
    /// The container's arguments with `issuers` as its issuer flags
    /// ([`ksa_kube::flags`]) and the workload's resourceVersion, or `None`
    /// when they already are.
    async fn issuer_args(
        &self,
        admin: &kube::Client,
        namespace: &str,
        issuers: &[Issuer],
    ) -> Result<Option<(Vec<String>, String)>> {
        let template = match self.kind {
            WorkloadKind::Deployment => find::<Deployment>(admin, namespace, &self.name)
                .await?
                .and_then(|w| Some((w.spec?.template, w.metadata.resource_version?))),
            WorkloadKind::StatefulSet => find::<StatefulSet>(admin, namespace, &self.name)
                .await?
                .and_then(|w| Some((w.spec?.template, w.metadata.resource_version?))),
            WorkloadKind::DaemonSet => find::<DaemonSet>(admin, namespace, &self.name)
                .await?
                .and_then(|w| Some((w.spec?.template, w.metadata.resource_version?))),
        };
        let Some((template, resource_version)) = template else {
            return Err(Refusal::WorkloadMissing {
                kind: self.kind,
                namespace: namespace.to_owned(),
                name: self.name.clone(),
            }
            .into());
        };
        let container = template
            .spec
            .into_iter()
            .flat_map(|spec| spec.containers)
            .find(|c| c.name == self.container)
            .ok_or_else(|| Refusal::ContainerMissing {
                kind: self.kind,
                namespace: namespace.to_owned(),
                name: self.name.clone(),
                container: self.container.clone(),
            })?;
        let args = container.args.unwrap_or_default();
        let edited =
            flags::with_issuers(&args, issuers).map_err(|problem| Refusal::IssuerArguments {
                kind: self.kind,
                namespace: namespace.to_owned(),
                name: self.name.clone(),
                container: self.container.clone(),
                problem,
            })?;
        Ok(edited.map(|args| (args, resource_version)))
    }

    async fn patch(
        &self,
        admin: &kube::Client,
        namespace: &str,
        patch: &Patch<serde_json::Value>,
    ) -> Result<()> {
        let params = PatchParams::default();
        let name = &self.name;
        match self.kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(admin.clone(), namespace)
                    .patch(name, &params, patch)
                    .await?;
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(admin.clone(), namespace)
                    .patch(name, &params, patch)
                    .await?;
            }
            WorkloadKind::DaemonSet => {
                Api::<DaemonSet>::namespaced(admin.clone(), namespace)
                    .patch(name, &params, patch)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The object `name`, by a list with a field selector: the controller
/// lists and patches workloads, and needs no `get` for this.
async fn find<K>(admin: &kube::Client, namespace: &str, name: &str) -> Result<Option<K>>
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
        .find(|w| w.meta().name.as_deref() == Some(name)))
}

/// The labels of the workload `name` (`None`: there is none).
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
    Ok(find::<K>(admin, namespace, name)
        .await?
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
            assert_eq!(workload_kind(kind).expect("parses").as_str(), kind);
        }
        for kind in ["CronJob", "deployment", "", "Pod", "ReplicaSet"] {
            assert_eq!(
                workload_kind(kind).expect_err("refused"),
                Refusal::UnknownWorkloadKind { kind: kind.into() }
            );
        }
    }

    #[test]
    fn the_spec_is_parsed_into_a_rollout_or_refused() {
        assert_eq!(
            Rollout::of(&rotation(serde_json::json!({})), "r").expect("parses"),
            Rollout {
                kind: RolloutKind::HostedControlPlane,
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
            Rollout {
                kind: RolloutKind::HostedControlPlane,
                key_secret: "r-apiserver-keys".into(),
                workload: Some(Workload {
                    kind: WorkloadKind::StatefulSet,
                    name: "kas".into(),
                    container: "kube-apiserver".into(),
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
            Rollout {
                kind: RolloutKind::ExternalSigner,
                key_secret: "k".into(),
                workload: None,
            }
        );
        assert_eq!(
            Rollout::of(
                &rotation(serde_json::json!({"workload": {"kind": "Deployment", "name": "kas", "container": "a b"}})),
                "r"
            )
            .expect_err("refused")
            .reason(),
            "BadContainerName"
        );
        let mut issuer_only = rotation(serde_json::json!({}));
        issuer_only.spec.issuer = Some("https://b.example".into());
        assert_eq!(
            Rollout::of(&issuer_only, "r").expect_err("refused"),
            Refusal::IssuerNeedsWorkload
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
            container: "kube-apiserver".into(),
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
