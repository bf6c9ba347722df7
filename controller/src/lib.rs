//! `ksa-controller`: carries `KSASigningKeyRotation` resources through the
//! five rotation steps by driving `ksa-core`'s step function.
//!
//! - [`api`]: the custom resource.
//! - [`reconcile`]: observe, step, write status, apply effects.
//! - [`keystore`]: key Secrets, the API server key Secret, the JWKS ConfigMap.
//! - [`cluster`]: the user cluster and what its API servers do.
//! - [`kubeconfig`]: the user cluster's kubeconfig, inline fields only.
//! - [`names`]: object names checked before they go into an API path.
//! - [`rollout`]: how API servers pick up a key set, and only through
//!   objects labelled for the rotation.
//! - [`refresh`]: legacy and bound token refresh.
//! - [`lock`]: the cluster operation lock.
//! - [`admission`]: the admission policies that hold the controller's writes
//!   to what a rotation needs.
//! - [`signer`]: the KEP-740 external signer (`ksa-controller signer`).

pub mod admission;
pub mod api;
pub mod cluster;
pub mod error;
pub mod grants;
pub mod keystore;
pub mod kubeconfig;
pub mod lock;
pub mod reconcile;
pub mod refresh;

pub use error::{Error, Result};
pub mod manifests;
pub mod names;
pub mod rollout;
pub mod run;
pub mod serve;
pub mod signer;
