//! `ksa-controller`: carries `KSASigningKeyRotation` resources through the
//! five rotation steps by driving `ksa-core`'s step function, with the
//! Kubernetes I/O it shares with the CLI in `ksa-kube` (the custom resource,
//! key store, lock, API server observation and token refresh).
//!
//! - [`reconcile`]: observe, step, write status, apply effects.
//! - [`rollout`]: how API servers pick up a key set, and only through
//!   objects labelled for the rotation.
//! - [`grants`]: whether the roles a rotation's policy needs are bound.
//! - [`run`]: leader election and the controller loop (`ksa-controller run`).
//! - [`shard`]: a shard's namespaces (`--namespace-selector`) and its claim
//!   on each rotation, so that two shards never act on one.
//! - [`logging`]: `KSA_LOG`, `KSA_LOG_FORMAT` and the JSON lines.
//! - [`serve`]: health, Prometheus metrics, the JWKS and discovery document.
//! - [`liveness`]: whether the watch and the reconcile loop make progress
//!   (`/livez`).
//! - [`manifests`]: the `deploy/` files, generated.
//! - [`admission`]: the admission policies that hold the controller's writes
//!   to what a rotation needs.
//! - [`signer`]: the KEP-740 external signer (`ksa-controller signer`).
//! - [`error`]: `ksa_kube::Error` and the reconciler's own refusals.

pub mod admission;
pub mod audit;
pub mod error;
pub mod grants;
pub mod liveness;
pub mod logging;
pub mod manifests;
pub mod publish;
pub mod reconcile;
pub mod rollout;
pub mod run;
pub mod serve;
pub mod shard;
pub mod signer;

pub use error::{Error, Result};
