//! The controller's errors: one enum, matched by tests.

use ksa_core::KeyVersion;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("key: {0}")]
    Key(#[from] ksa_core::key::KeyError),
    #[error("signing: {0}")]
    Sign(#[from] ksa_core::crypto::SignError),
    #[error(transparent)]
    BadStatus(#[from] crate::api::BadStatus),
    #[error(transparent)]
    Step(#[from] ksa_core::rotation::StepError),
    #[error(
        "key version {version} is not in the key store (Secret {secret}); import the cluster's current key first"
    )]
    MissingKey { version: KeyVersion, secret: String },
    #[error("the user cluster kubeconfig in Secret {secret} is unusable: {detail}")]
    Kubeconfig { secret: String, detail: String },
    #[error("the cluster operation lock is held by {holder}")]
    Locked { holder: String },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
