//! How API servers pick up a new key set: the one place the reconciler asks
//! for "serve signing key S and public keys P".
//!
//! A hosted control plane, whose API server pods mount a Secret (`sa.key`,
//! `sa.pub`) and are restarted by their workload's pod template; or the
//! KEP-740 external signer, which follows the same Secret and needs no
//! restart. Either way, whether a step took hold is never assumed here but
//! observed on the API servers themselves.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use ksa_core::KeyVersion;
use kube::api::{Api, Patch, PatchParams};

use crate::api::{KSASigningKeyRotation, RolloutKind};
use crate::error::Result;
use crate::keystore::{KeyStore, key_set_id};

/// A rotation's way of rolling key sets out.
#[derive(Debug, Clone)]
pub enum Rollout {
    HostedControlPlane {
        /// The Secret the API server pods mount.
        key_secret: String,
        /// The workload restarted when the key set changes; none when
        /// whoever mounts the Secret restarts on change.
        workload: Option<crate::api::WorkloadRef>,
    },
    /// `ksa-controller signer` reads `sa.key` and `sa.pub` from this Secret
    /// and serves them to kube-apiserver as they change.
    ExternalSigner { key_secret: String },
}

impl Rollout {
    pub fn of(resource: &KSASigningKeyRotation, name: &str) -> Rollout {
        let spec = &resource.spec.rollout;
        let key_secret = spec
            .key_secret
            .clone()
            .unwrap_or_else(|| format!("{name}-apiserver-keys"));
        match spec.kind {
            RolloutKind::HostedControlPlane => Rollout::HostedControlPlane {
                key_secret,
                workload: spec.workload.clone(),
            },
            RolloutKind::ExternalSigner => Rollout::ExternalSigner { key_secret },
        }
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
                let params = PatchParams::default();
                if workload.kind == "StatefulSet" {
                    Api::<StatefulSet>::namespaced(admin.clone(), namespace)
                        .patch(&workload.name, &params, &Patch::Merge(&patch))
                        .await?;
                } else {
                    Api::<Deployment>::namespaced(admin.clone(), namespace)
                        .patch(&workload.name, &params, &Patch::Merge(&patch))
                        .await?;
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
