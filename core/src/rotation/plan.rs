//! The step function: [`step`] turns a state and an observation into a
//! [`Plan`] of [`Effect`]s.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::waiting::{self, Wait, Waiting, elapsed_since};
use super::{BoundTokenRefresh, CutOff, InvariantViolation, Observed, Policy, RotationState, Step};
use crate::KeyVersion;
use crate::issuer::Issuer;
use crate::key::KeySpec;

/// Something to do to the world. Applying an effect twice is the same as
/// applying it once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "effect")]
pub enum Effect {
    /// Hold the cluster operation lock (a no-op when already held).
    HoldOperationLock,
    /// Create key pair `version` in the key store unless it exists.
    GenerateKey { version: KeyVersion, spec: KeySpec },
    /// Make every verifier accept exactly `public` (API servers, JWKS, sinks),
    /// signing still with `signing`; with `issuers`, every API server
    /// accepts exactly those issuers and signs with the first (its
    /// `--service-account-issuer` flags, in order).
    PublishPublicKeys {
        public: Vec<KeyVersion>,
        signing: KeyVersion,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        issuers: Option<Vec<Issuer>>,
    },
    /// Make every API server sign with `signing`, accepting `public`, and
    /// with `issuers`, sign with the first of them and accept them all.
    SwitchSigner {
        signing: KeyVersion,
        public: Vec<KeyVersion>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        issuers: Option<Vec<Issuer>>,
    },
    /// Re-mint every legacy Secret token not yet signed with `version`.
    RefreshLegacyTokens { version: KeyVersion },
    /// Refresh bound tokens by the policy, towards `version`: every
    /// holder of a token issued before `since` (when RefreshTokens began),
    /// a restarted workload annotated with `marker`
    /// ([`RotationState::refresh_marker`]).
    RefreshBoundTokens {
        version: KeyVersion,
        policy: BoundTokenRefresh,
        since: Timestamp,
        marker: String,
    },
    /// Publish, at every location outside verifiers read (the controller's
    /// endpoint, a bucket, a directory), the JWKS of `public` and a
    /// discovery document for each of `issuers` (`None`: the issuer the
    /// cluster signs with). Issued at every step and once completed, after
    /// the API servers' effect; [`RotationState::published_keys`] says
    /// which keys.
    PublishOutside {
        public: Vec<KeyVersion>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        issuers: Option<Vec<Issuer>>,
        /// Issuers whose documents are removed: the old one, from Retire
        /// on, when the API servers no longer accept it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        withdrawn: Vec<Issuer>,
    },
    /// Delete key pair `version` from the key store (issued once no API
    /// server accepts it any more).
    RetireKey { version: KeyVersion },
    /// Release the cluster operation lock (a no-op when not held).
    ReleaseOperationLock,
}

/// The result of one [`step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub next: RotationState,
    pub effects: Vec<Effect>,
    /// When to call [`step`] again; `None` once completed.
    pub requeue_after: Option<Duration>,
    /// What the step still waits for, by the same tests that decide whether
    /// it advances: empty when it advanced (and when completed), never empty
    /// when a rotation step stays put. Its `Display` is the status's
    /// "waiting for" text.
    pub waiting: Waiting,
    /// On the pass that ends RefreshTokens: the legacy token Secrets still
    /// stale, whose holders Retire cuts off (given up by the operator, or
    /// left at the deadline). Empty otherwise.
    pub cut_off: CutOff,
    /// On the pass that ends RefreshTokens of the `wait` policy with its
    /// refreshes observed, when the window closed before every pod was seen
    /// refreshing: those pods (audit events can be dropped, so they may well
    /// have refreshed). `None` otherwise.
    pub refresh_not_observed: Option<super::refresh::KubeletRefreshes>,
}

/// Why a plan was refused. Only a bug can cause this; the caller must stop
/// and change nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[error("step {from} to {to} would break an invariant: {violation}")]
pub struct StepError {
    pub from: Step,
    pub to: Step,
    pub violation: InvariantViolation,
}

/// How often RefreshTokens of the `wait` policy looks again while its
/// kubelets' refreshes are observed (each look lists the pods).
pub const OBSERVED_REFRESH_POLL: Duration = Duration::from_secs(10);

/// Advances a rotation by at most one step and says what to do next.
///
/// The step advances exactly when nothing is left to wait for: each step's
/// conditions are tested once, into [`Plan::waiting`], which is also what
/// the status reports while the step stays put.
///
/// Architecture invariant: this is the only function that moves a
/// [`RotationState`] forward, and it checks every transition against
/// [`KeyVersions::check_transition`](super::KeyVersions::check_transition).
pub fn step(
    state: &RotationState,
    observed: &Observed,
    now: Timestamp,
    policy: &Policy,
) -> Result<Plan, StepError> {
    let old = state.previous_version();
    let waiting::Assessment {
        waiting,
        trust_confirmed_at,
    } = waiting::assess(state, observed, now, policy);

    let mut next = state.clone();
    let mut wait = policy.poll_interval;
    // Trust's lead time runs from when every API server was first seen to
    // accept both keys; that moment is kept across calls.
    if trust_confirmed_at.is_some() {
        next.confirmed_at = trust_confirmed_at;
    } else if state.step == Step::Trust {
        // Something is unconfirmed again (a location lost the new key, an
        // instance restarted with the old set): the hold starts over once
        // it is back.
        next.confirmed_at = None;
    }
    if waiting.is_empty() && !state.is_completed() {
        next = next.enter(state.step.next(), now);
    } else if let Some(confirmed_at) = trust_confirmed_at {
        // Every API server and location serves both keys; only outside
        // caches and the lead time are left.
        // Look again when the hold ends, and at least once a minute
        // meanwhile: an instance that hangs or goes back to the old key set
        // restarts the hold, and the status names it.
        let elapsed = elapsed_since(Some(confirmed_at), now).unwrap_or_default();
        wait = waiting::trust_hold(policy, observed)
            .saturating_sub(elapsed)
            .min(Duration::from_secs(60))
            .max(policy.poll_interval);
    } else if state.step == Step::RefreshTokens
        && let Some(longest) = observed.longest_bound_token_seconds
        && let Some(window) = policy
            .bound_token_refresh
            .wait_window(longest, policy.clock_skew)
    {
        let elapsed = elapsed_since(state.step_started_at, now).unwrap_or_default();
        if elapsed < window {
            // Look again when the window closes, at least once a minute;
            // with the refreshes observed, every few seconds, to end soon
            // after the last is seen.
            let every = if observed.kubelet_refreshes.is_some() {
                OBSERVED_REFRESH_POLL
            } else {
                Duration::from_secs(60)
            };
            wait = (window - elapsed).min(every).max(policy.poll_interval);
        }
    }

    // Only Secrets ksa cannot re-mint are left: look again at most once a
    // minute (each look lists every Secret), and when the deadline passes.
    if next.step == state.step
        && state.step == Step::RefreshTokens
        && !waiting.is_empty()
        && waiting
            .iter()
            .all(|wait| matches!(wait, Wait::LegacyTokensBlocked { .. }))
    {
        let elapsed = elapsed_since(state.step_started_at, now).unwrap_or_default();
        wait = policy
            .legacy_deadline()
            .saturating_sub(elapsed)
            .min(Duration::from_secs(60))
            .max(policy.poll_interval);
    }

    let refuse = |violation| StepError {
        from: state.step,
        to: next.step,
        violation,
    };
    state
        .versions()
        .check_transition(&next.versions())
        .map_err(refuse)?;
    if let (Some(before), Some(after), Some(change)) =
        (state.issuers(), next.issuers(), state.issuer.as_ref())
    {
        before
            .check_transition(&after, &change.from, &change.to)
            .map_err(|violation| refuse(violation.into()))?;
    }

    // Legacy tokens left stale when RefreshTokens ends: the step advanced
    // without them (given up, or past the deadline).
    let cut_off =
        if state.step == Step::RefreshTokens && next.step != state.step && state.changes_key {
            CutOff {
                given_up: observed.given_up_legacy_tokens.clone(),
                blocked: observed.blocked_legacy_tokens.clone(),
                stale: observed.stale_legacy_tokens.unwrap_or(0),
            }
        } else {
            CutOff::default()
        };

    let refresh_not_observed = observed
        .kubelet_refreshes
        .as_ref()
        .filter(|refreshes| {
            state.step == Step::RefreshTokens
                && next.step != state.step
                && policy.bound_token_refresh.waits()
                && !refreshes.all_seen()
        })
        .cloned();

    let mut effects = effects_of(&next, policy, now);
    let old_dropped = next.step == Step::Retire
        && state.step == Step::Retire
        && state.changes_key
        && waiting::old_key_dropped(&waiting);
    // Completed too: a rotation resource publishes from the start, and a
    // location added later is filled.
    effects.push(Effect::PublishOutside {
        public: next.published_keys(old_dropped),
        issuers: next.issuer_flags(),
        withdrawn: next.withdrawn_issuers(),
    });
    // The old key is deleted once no location serves it any more either:
    // outsiders know a key by its kid, learnt from the key store, so the
    // withdrawal is confirmed while the key is still there.
    if old_dropped && !waiting::old_key_published(&waiting) {
        effects.push(Effect::RetireKey { version: old });
    }
    let requeue_after = if next.is_completed() {
        None
    } else if next.step != state.step {
        Some(Duration::ZERO)
    } else {
        Some(wait)
    };
    Ok(Plan {
        next,
        effects,
        requeue_after,
        waiting,
        cut_off,
        refresh_not_observed,
    })
}

/// The effects that drive `state`'s step towards confirmation. They are
/// issued again on every call until it is confirmed; each is idempotent.
fn effects_of(state: &RotationState, policy: &Policy, now: Timestamp) -> Vec<Effect> {
    let (old, new) = (state.previous_version(), state.key_version);
    // Both keys while they overlap; one when the rotation keeps the key.
    let mut both = vec![old, new];
    both.dedup();
    let issuers = state.issuer_flags();
    let mut effects = vec![Effect::HoldOperationLock];
    match state.step {
        Step::Generate => effects.push(Effect::GenerateKey {
            version: new,
            spec: policy.key_spec,
        }),
        Step::Trust => effects.push(Effect::PublishPublicKeys {
            public: both,
            signing: old,
            issuers,
        }),
        Step::Sign => effects.push(Effect::SwitchSigner {
            signing: new,
            public: both,
            issuers,
        }),
        Step::RefreshTokens => {
            // Legacy tokens carry no issuer of ours: only a new key
            // needs them re-minted.
            if state.changes_key {
                effects.push(Effect::RefreshLegacyTokens { version: new });
            }
            if !policy.bound_token_refresh.waits() {
                effects.push(Effect::RefreshBoundTokens {
                    version: new,
                    policy: policy.bound_token_refresh,
                    since: state.step_started_at.unwrap_or(now),
                    marker: state.refresh_marker(),
                });
            }
        }
        // RetireKey follows once every API server has dropped the old key
        // (see `step`).
        Step::Retire => effects.push(Effect::PublishPublicKeys {
            public: vec![new],
            signing: new,
            issuers,
        }),
        Step::Completed => return vec![Effect::ReleaseOperationLock],
    }
    effects
}
