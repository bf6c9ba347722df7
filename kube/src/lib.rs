//! `ksa-kube`: the Kubernetes I/O both shells of ksa share. The controller
//! (`ksa-controller`) and the CLI (`ksa`) each drive `ksa-core`'s step
//! function; what they read from and write to a cluster is here, once.
//!
//! No command-line parsing, HTTP server, gRPC or metrics: building the CLI
//! compiles none of the controller's (checked by `tests/dependencies.rs`).
//!
//! - [`api`]: the `KSASigningKeyRotation` custom resource, the contract
//!   between the CLI (which sets `spec.keyVersion` and reads status) and the
//!   controller (which writes status).
//! - [`driver`]: the one rotation driver (observe, step, save, apply) over
//!   the shells' state store and the world.
//! - [`world`]: the one world: observation and the dispatch of every
//!   effect, over the ports each shell supplies.
//! - [`cluster`]: the user cluster and what its API servers do (`observe`).
//! - [`flags`]: kube-apiserver's issuer flags, as an issuer rotation edits them.
//! - [`plan`]: a rotation's plan before it starts (`rotate --dry-run`).
//! - [`probe`]: what one API server instance is asked to confirm a step.
//! - [`kubeconfig`]: the user cluster's kubeconfig, inline fields only.
//! - [`keystore`]: key Secrets, the API server key Secret, the JWKS ConfigMap.
//! - [`lock`]: the cluster operation lock.
//! - [`refresh`]: legacy and bound token refresh.
//! - [`provenance`]: the seal on every object ksa writes and later trusts.
//! - [`names`]: object names checked before they go into an API path.
//! - [`error`]: the one error enum of all of these.

pub mod api;
pub mod cluster;
pub mod driver;
pub mod error;
pub mod flags;
pub mod keystore;
pub mod kubeconfig;
pub mod lock;
pub mod names;
pub mod plan;
pub mod probe;
pub mod provenance;
pub mod refresh;
pub mod world;

pub use error::{Error, Result};
