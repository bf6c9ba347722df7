//! The end-to-end harness: a real control plane (etcd, one kube-apiserver
//! or three behind the `kubernetes` EndpointSlice and, when a test needs
//! them, kube-controller-manager, and kube-scheduler with nodes simulated
//! by kwok) started on loopback, or in a network namespace of the test's
//! own, from the binaries `cargo xtask control-plane` builds.
//!
//! Tests find the binaries through `KSA_CONTROL_PLANE_DIR` and
//! `KSA_KWOK_DIR`, which `cargo xtask e2e` and `cargo xtask ci` set. A test
//! that cannot find them fails and says how to get them; it is never
//! skipped.

pub mod bench;
pub mod browser;
pub mod cluster;
mod control_plane;
pub mod hosted;
pub mod install;
pub mod issuer;
pub mod kubelet;
pub mod netns;
mod pki;
mod prober;
pub mod roll;
pub mod scenario;
pub mod signer;
pub mod workload;
pub mod zoo;

pub use control_plane::{
    ApiServerKeys, ControlPlane, HA_INSTANCES, ISSUER, InstanceClient, InstanceSpec, IssuerFlags,
    Signing, write_private,
};
pub use hosted::{ApiServerWorkload, HostedApiServer};
pub use install::{FIRST_REPLICA, Installation, ksa_binary, loopback_addr};
pub use pki::Pki;
pub use prober::{ProbeStats, ProbeTarget, Prober, RotationSource};
