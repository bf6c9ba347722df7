//! The knobs of a rotation ([`Policy`]) and how bound tokens are refreshed
//! ([`BoundTokenRefresh`]).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::legacy;
use super::refresh::kubelet_refresh_window;
use crate::key::KeySpec;

/// How bound (projected) tokens are refreshed in the RefreshTokens step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum BoundTokenRefresh {
    /// Rollout-restart Deployments, StatefulSets and DaemonSets; evict bare
    /// pods through the Eviction API (honouring PodDisruptionBudgets).
    RestartPods,
    /// Cordon, drain and delete nodes for the infrastructure to replace.
    RecreateNodes,
    /// Wait for kubelets to refresh: 80% of the longest projected token
    /// lifetime that pods from before RefreshTokens hold (observed,
    /// [`Observed::longest_bound_token_seconds`](super::Observed::longest_bound_token_seconds)), at most 24 h, plus clock
    /// skew. `max_token_seconds` can only lengthen it (0: what the pods
    /// hold alone).
    Wait {
        #[serde(rename = "maxTokenSeconds")]
        max_token_seconds: u64,
    },
}

// The names of the bound-token refresh policies, as the resource's
// `spec.tokenRefresh.policy`, the CLI's config and the dry-run plan write
// them. (No doc comments on it or its variants: the CRD's schema would
// carry them as descriptions.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum TokenRefreshPolicy {
    #[default]
    RestartPods,
    RecreateNodes,
    Wait,
}

impl TokenRefreshPolicy {
    /// Every policy, the default first.
    pub const ALL: [TokenRefreshPolicy; 3] = [
        TokenRefreshPolicy::RestartPods,
        TokenRefreshPolicy::RecreateNodes,
        TokenRefreshPolicy::Wait,
    ];

    /// The policy's name: `restart-pods`, `recreate-nodes` or `wait`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRefreshPolicy::RestartPods => "restart-pods",
            TokenRefreshPolicy::RecreateNodes => "recreate-nodes",
            TokenRefreshPolicy::Wait => "wait",
        }
    }

    /// The policy the rotation runs: for `wait`, waiting out at least
    /// tokens of `max_token_seconds` (0: what the pods hold alone).
    pub fn with_max_token_seconds(self, max_token_seconds: u64) -> BoundTokenRefresh {
        match self {
            TokenRefreshPolicy::RestartPods => BoundTokenRefresh::RestartPods,
            TokenRefreshPolicy::RecreateNodes => BoundTokenRefresh::RecreateNodes,
            TokenRefreshPolicy::Wait => BoundTokenRefresh::Wait { max_token_seconds },
        }
    }
}

impl fmt::Display for TokenRefreshPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token refresh policy name ksa does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a token refresh policy; use restart-pods, recreate-nodes or wait")]
pub struct UnknownTokenRefreshPolicy(pub String);

impl FromStr for TokenRefreshPolicy {
    type Err = UnknownTokenRefreshPolicy;

    /// Exactly one of the names [`TokenRefreshPolicy::as_str`] gives.
    fn from_str(name: &str) -> Result<TokenRefreshPolicy, UnknownTokenRefreshPolicy> {
        TokenRefreshPolicy::ALL
            .into_iter()
            .find(|policy| policy.as_str() == name)
            .ok_or_else(|| UnknownTokenRefreshPolicy(name.chars().take(63).collect()))
    }
}

impl BoundTokenRefresh {
    /// The policy's name.
    pub fn name(self) -> TokenRefreshPolicy {
        match self {
            BoundTokenRefresh::RestartPods => TokenRefreshPolicy::RestartPods,
            BoundTokenRefresh::RecreateNodes => TokenRefreshPolicy::RecreateNodes,
            BoundTokenRefresh::Wait { .. } => TokenRefreshPolicy::Wait,
        }
    }

    /// Whether this policy waits for the kubelets instead of refreshing.
    pub fn waits(self) -> bool {
        matches!(self, BoundTokenRefresh::Wait { .. })
    }

    /// For `Wait`: how long after RefreshTokens began every kubelet has
    /// refreshed the tokens of pods from before it, when the longest
    /// lifetime such a pod holds is `longest` seconds. A kubelet refreshes
    /// a token at 80% of its lifetime, at most 24 h after it was issued
    /// (plus [`KUBELET_SLACK`](super::KUBELET_SLACK)), and each was issued before RefreshTokens
    /// began. `None` for the other policies.
    pub fn wait_window(self, longest: u64, skew: Duration) -> Option<Duration> {
        match self {
            BoundTokenRefresh::Wait { max_token_seconds } => {
                let lifetime = longest.max(max_token_seconds);
                Some(kubelet_refresh_window(lifetime, skew))
            }
            _ => None,
        }
    }
}

/// The knobs of a rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub key_spec: KeySpec,
    /// Time between every API server accepting N+1 and signing with it, for
    /// outside verifiers that cache the JWKS to catch up.
    pub trust_lead_time: Duration,
    pub bound_token_refresh: BoundTokenRefresh,
    /// Clock skew allowed between this process and the kubelets.
    pub clock_skew: Duration,
    /// How soon to look again while waiting on an observation.
    pub poll_interval: Duration,
    /// How long after RefreshTokens began it waits for legacy token
    /// Secrets still stale (blocked or not); then it goes on, and the Retire
    /// step cuts their holders off. At least
    /// [`legacy::MIN_LEGACY_TOKEN_DEADLINE`] ([`Policy::legacy_deadline`]).
    #[serde(default = "default_legacy_deadline")]
    pub legacy_token_deadline: Duration,
    /// Legacy token Secrets (`namespace/name`) the operator gave up on:
    /// RefreshTokens does not wait for them, and the Retire step cuts their
    /// holders off unless a re-mint lands first.
    #[serde(default)]
    pub given_up_legacy_tokens: BTreeSet<String>,
}

fn default_legacy_deadline() -> Duration {
    legacy::DEFAULT_LEGACY_TOKEN_DEADLINE
}

/// How long one roll-out of the API servers (Trust, Sign, Retire each make
/// one) is allowed in [`Policy::longest_rotation`].
pub const ROLL_OUT_ALLOWANCE: Duration = Duration::from_secs(20 * 60);

impl Policy {
    /// The longest a rotation under this policy takes when nothing holds
    /// it: three roll-outs, the trust lead time, and RefreshTokens at its
    /// longest (the kubelet window of a token the kubelet refreshes at most
    /// once a day, or the legacy token deadline, whichever is longer). What
    /// `rotate --wait` waits for by default: never shorter than a refresh
    /// window the plan can print.
    pub fn longest_rotation(&self) -> Duration {
        let refresh = super::refresh::kubelet_refresh_window(u64::MAX, self.clock_skew)
            .max(self.legacy_deadline());
        self.trust_lead_time
            .saturating_add(refresh)
            .saturating_add(ROLL_OUT_ALLOWANCE.saturating_mul(3))
    }

    /// How long RefreshTokens waits for stale legacy tokens: the
    /// configured deadline, never less than
    /// [`legacy::MIN_LEGACY_TOKEN_DEADLINE`].
    pub fn legacy_deadline(&self) -> Duration {
        self.legacy_token_deadline
            .max(legacy::MIN_LEGACY_TOKEN_DEADLINE)
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            key_spec: KeySpec::Rsa2048,
            trust_lead_time: Duration::ZERO,
            bound_token_refresh: BoundTokenRefresh::RestartPods,
            clock_skew: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            legacy_token_deadline: legacy::DEFAULT_LEGACY_TOKEN_DEADLINE,
            given_up_legacy_tokens: BTreeSet::new(),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_longest_rotation_covers_every_refresh_window_the_plan_can_print() {
        let policy = Policy::default();
        let longest = policy.longest_rotation();
        for token_seconds in [600, 3600, 86_400, 7 * 86_400, u64::MAX] {
            let window =
                super::super::refresh::kubelet_refresh_window(token_seconds, policy.clock_skew);
            assert!(longest > window, "{token_seconds} s tokens: {window:?}");
        }
        assert!(longest > policy.legacy_deadline());
        let lead = Policy {
            trust_lead_time: Duration::from_secs(3600),
            ..Policy::default()
        };
        assert_eq!(lead.longest_rotation(), longest + Duration::from_secs(3600));
        let forever = Policy {
            trust_lead_time: Duration::MAX,
            ..Policy::default()
        };
        assert_eq!(forever.longest_rotation(), Duration::MAX);
    }

    use super::*;

    #[test]
    fn each_policy_name_reads_back_and_names_its_policy() {
        for name in TokenRefreshPolicy::ALL {
            assert_eq!(name.as_str().parse(), Ok(name));
            assert_eq!(name.with_max_token_seconds(600).name(), name);
            assert_eq!(
                serde_json::to_value(name).expect("serializes"),
                serde_json::json!(name.as_str())
            );
        }
        assert_eq!(
            TokenRefreshPolicy::default(),
            TokenRefreshPolicy::RestartPods
        );
        for typo in ["", "Wait", "restart_pods", "reboot"] {
            assert_eq!(
                typo.parse::<TokenRefreshPolicy>(),
                Err(UnknownTokenRefreshPolicy(typo.into()))
            );
        }
    }
}
