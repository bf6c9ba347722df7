//! The end-to-end harness: a real control plane (etcd, one kube-apiserver
//! or three behind the `kubernetes` EndpointSlice and, when a test needs
//! them, kube-controller-manager, and kube-scheduler with nodes simulated
//! by kwok) started on loopback, or in a network namespace of the test's
//! own, from the binaries `cargo xtask control-plane` builds.
//!
//! Outside verifiers that federate with the cluster (issue #21): a real
//! S3 server ([`s3`], SeaweedFS) holding the published discovery document
//! and JWKS, a second kube-apiserver playing a cloud IAM that trusts them
//! ([`outside`]), a verifier reading the bucket itself
//! ([`bucket_verifier`]), and a prober putting the user cluster's tokens
//! to both ([`outside_prober`]).
//!
//! Real nodes ([`node`], issue 31): containerd, runc, the CNI bridge, the
//! kubelet and kube-proxy beside the control plane, so that pods run in
//! real containers with real projected tokens.
//!
//! Tests find the binaries through `KSA_CONTROL_PLANE_DIR`, `KSA_KWOK_DIR`
//! and `KSA_SEAWEEDFS_DIR`, which `cargo xtask e2e` and `cargo xtask ci`
//! set. A test
//! that cannot find them fails and says how to get them; it is never
//! skipped.

pub mod bench;
pub mod browser;
pub mod bucket_verifier;
pub mod cluster;
mod control_plane;
pub mod fleet;
pub mod hosted;
pub mod install;
pub mod issuer;
pub mod kubeadm;
pub mod kubelet;
pub mod netns;
pub mod node;
pub mod outside;
pub mod outside_prober;
mod pki;
mod prober;
pub mod readme;
pub mod roll;
pub mod s3;
pub mod scenario;
pub mod signer;
pub mod wait;
pub mod workload;
pub mod zoo;

pub use control_plane::{
    ApiServerKeys, ControlPlane, HA_INSTANCES, ISSUER, InstanceClient, InstanceSpec, IssuerFlags,
    Signing, binaries as control_plane_binaries, write_private,
};
pub use hosted::{ApiServerWorkload, HostedApiServer};
pub use install::{FIRST_REPLICA, Installation, ksa_binary, loopback_addr};
pub use pki::Pki;
pub use prober::{ProbeStats, ProbeTarget, Prober, RotationSource};
pub use wait::{OBSERVED_WITHIN, eventually};
