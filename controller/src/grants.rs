//! Whether the controller holds the grants a rotation will need, asked of
//! the target cluster's authorizer before the rotation starts.
//!
//! Each token refresh policy has its own ClusterRole, bound only where a
//! rotation uses it ([`crate::manifests`]). A rotation that started without
//! it would stop at RefreshTokens, after Sign, with a 403 an operator has
//! to dig out; asking first (SelfSubjectAccessReview, which every
//! authenticated user may do) refuses the rotation before anything changes
//! and names the role to bind.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use ksa_core::rotation::BoundTokenRefresh;
use kube::api::{Api, PostParams};

use crate::error::Result;
use crate::manifests::{LEGACY_TOKENS_ROLE, RECREATE_NODES_ROLE, RESTART_PODS_ROLE};

/// A ClusterRole the controller lacks, and how to bind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingGrant {
    pub role: &'static str,
    pub manifest: &'static str,
}

impl std::fmt::Display for MissingGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClusterRole {} is not bound to the controller (kubectl apply -f deploy/{})",
            self.role, self.manifest
        )
    }
}

/// One request that stands for a role: (verb, group, resource).
type Probe = (&'static str, &'static str, &'static str);

/// The roles a rotation with this bound-token policy needs beyond the
/// controller's own, each with requests that only it grants.
fn needed(policy: &BoundTokenRefresh) -> Vec<(MissingGrant, &'static [Probe])> {
    let legacy = (
        MissingGrant {
            role: LEGACY_TOKENS_ROLE,
            manifest: "controller.yaml",
        },
        &[("list", "", "secrets"), ("patch", "", "secrets")][..],
    );
    match policy {
        BoundTokenRefresh::RestartPods => vec![
            legacy,
            (
                MissingGrant {
                    role: RESTART_PODS_ROLE,
                    manifest: "refresh-restart-pods.yaml",
                },
                &[
                    ("create", "", "pods/eviction"),
                    ("patch", "apps", "deployments"),
                    ("patch", "apps", "statefulsets"),
                    ("patch", "apps", "daemonsets"),
                    ("list", "apps", "replicasets"),
                    ("list", "policy", "poddisruptionbudgets"),
                ],
            ),
        ],
        BoundTokenRefresh::RecreateNodes => vec![
            legacy,
            (
                MissingGrant {
                    role: RECREATE_NODES_ROLE,
                    manifest: "refresh-recreate-nodes.yaml",
                },
                &[
                    ("list", "", "nodes"),
                    ("patch", "", "nodes"),
                    ("delete", "", "nodes"),
                    ("create", "", "pods/eviction"),
                    ("list", "policy", "poddisruptionbudgets"),
                ],
            ),
        ],
        BoundTokenRefresh::Wait { .. } => vec![legacy],
    }
}

/// The roles this rotation needs that the client's user lacks in the
/// target cluster.
pub async fn missing(
    client: &kube::Client,
    policy: &BoundTokenRefresh,
) -> Result<Vec<MissingGrant>> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for (grant, probes) in needed(policy) {
        for (verb, group, resource) in probes {
            let (resource, subresource) = match resource.split_once('/') {
                Some((resource, sub)) => (resource, Some(sub.to_owned())),
                None => (*resource, None),
            };
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some((*verb).to_owned()),
                        group: Some((*group).to_owned()),
                        resource: Some(resource.to_owned()),
                        subresource,
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            let answer = api.create(&PostParams::default(), &review).await?;
            if !answer.status.is_some_and(|s| s.allowed) {
                missing.push(grant.clone());
                break;
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_needs_legacy_re_mint_and_its_own_role_only() {
        let roles = |policy| {
            needed(&policy)
                .into_iter()
                .map(|(grant, _)| grant.role)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            roles(BoundTokenRefresh::RestartPods),
            [LEGACY_TOKENS_ROLE, RESTART_PODS_ROLE]
        );
        assert_eq!(
            roles(BoundTokenRefresh::RecreateNodes),
            [LEGACY_TOKENS_ROLE, RECREATE_NODES_ROLE]
        );
        assert_eq!(
            roles(BoundTokenRefresh::Wait {
                max_token_seconds: 3600
            }),
            [LEGACY_TOKENS_ROLE]
        );
    }

    #[test]
    fn a_missing_grant_says_what_to_apply() {
        let grant = MissingGrant {
            role: RESTART_PODS_ROLE,
            manifest: "refresh-restart-pods.yaml",
        };
        assert_eq!(
            grant.to_string(),
            "ClusterRole ksa-controller-restart-pods is not bound to the controller \
             (kubectl apply -f deploy/refresh-restart-pods.yaml)"
        );
    }
}
