//! The cluster operation lock: a Lease named `<cluster>-operation-lock` in
//! the rotation's namespace. Whoever holds it (a key rotation, a CA rotation,
//! a cluster update) writes its name as the holder; others refuse to start.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use ksa_core::rotation::OperationLock;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// The holder identity a key rotation writes.
pub fn holder(rotation: &str) -> String {
    format!("ksa-signing-key-rotation/{rotation}")
}

pub fn lease_name(rotation: &str) -> String {
    format!("{rotation}-operation-lock")
}

/// Reads the lock as the core sees it.
pub async fn observe(
    client: &kube::Client,
    namespace: &str,
    rotation: &str,
) -> Result<OperationLock> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = api.get_opt(&lease_name(rotation)).await?;
    let current = lease
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty());
    Ok(match current {
        None => OperationLock::Free,
        Some(h) if h == holder(rotation) => OperationLock::HeldByRotation,
        Some(other) => OperationLock::HeldBy(other),
    })
}

/// Takes the lock for this rotation; fine when already held by it.
pub async fn hold(client: &kube::Client, namespace: &str, rotation: &str) -> Result<()> {
    match observe(client, namespace, rotation).await? {
        OperationLock::HeldByRotation => Ok(()),
        OperationLock::HeldBy(holder) => Err(Error::Locked { holder }),
        OperationLock::Free => {
            let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(lease_name(rotation)),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(holder(rotation)),
                    ..LeaseSpec::default()
                }),
            };
            // Creation is the compare-and-swap: of two racing creators,
            // exactly one succeeds.
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    match observe(client, namespace, rotation).await? {
                        OperationLock::HeldByRotation => Ok(()),
                        OperationLock::HeldBy(holder) => Err(Error::Locked { holder }),
                        OperationLock::Free => Err(Error::LockRaced),
                    }
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Releases the lock if this rotation holds it.
pub async fn release(client: &kube::Client, namespace: &str, rotation: &str) -> Result<()> {
    if observe(client, namespace, rotation).await? != OperationLock::HeldByRotation {
        return Ok(());
    }
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    match api
        .delete(&lease_name(rotation), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
