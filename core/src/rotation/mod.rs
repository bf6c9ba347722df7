//! The rotation of SPEC section 2 as a pure step function.
//!
//! [`step`] takes the stored [`RotationState`], what the caller [`Observed`]
//! of the world, the time and the [`Policy`], and returns a [`Plan`]: the next
//! state, the [`Effect`]s to apply (each idempotent) and when to look again.
//! The controller and the CLI's file-store mode both drive it; neither
//! decides anything about the rotation itself.
//!
//! The three numbers of the status line describe what is *confirmed*: a step
//! changes them only once `observed` shows its effect took hold. So they are a
//! function of the target version and the step, and every invariant of SPEC
//! section 2 holds by construction ([`KeyVersions`]) and is re-checked on
//! every transition ([`step`] refuses to return a plan that breaks one).

mod holders;
mod versions;
mod waiting;

pub use holders::{
    HolderCategory, HolderReason, Holders, MAX_NAME_BYTES, MAX_NAMED, NamedHolder, WorkloadKind,
};
pub use versions::{InvariantViolation, KeyVersions};
pub use waiting::{Wait, Waiting};

use waiting::elapsed_since;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::KeyVersion;
use crate::key::KeySpec;
use crate::status::{StatusLine, StatusReason};

/// Where a rotation stands. The five steps run in this order; `Completed`
/// is the resting state between rotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum Step {
    /// Generate key pair N+1 and store it.
    Generate,
    /// Publish public keys [N, N+1]; wait until every API server accepts N+1.
    Trust,
    /// Sign with N+1; wait until every API server signs with it.
    Sign,
    /// Re-mint legacy tokens and refresh bound tokens with N+1.
    RefreshTokens,
    /// Publish [N+1] only and delete key N.
    Retire,
    /// No rotation in progress.
    Completed,
}

impl Step {
    /// The steps in order, for progress displays.
    pub const ROTATION: [Step; 5] = [
        Step::Generate,
        Step::Trust,
        Step::Sign,
        Step::RefreshTokens,
        Step::Retire,
    ];

    /// 1 to 5 for the rotation steps, 6 once completed.
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    fn next(self) -> Step {
        match self {
            Step::Generate => Step::Trust,
            Step::Trust => Step::Sign,
            Step::Sign => Step::RefreshTokens,
            Step::RefreshTokens => Step::Retire,
            Step::Retire | Step::Completed => Step::Completed,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Step::Generate => "Generate",
            Step::Trust => "Trust",
            Step::Sign => "Sign",
            Step::RefreshTokens => "RefreshTokens",
            Step::Retire => "Retire",
            Step::Completed => "Completed",
        };
        f.write_str(name)
    }
}

/// The stored state of a cluster's signing key. Its serialized form is
/// stable: the controller keeps it in the custom resource's status, the CLI
/// in a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawState", rename_all = "camelCase")]
pub struct RotationState {
    key_version: KeyVersion,
    step: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step_started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at: Option<Timestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawState {
    key_version: KeyVersion,
    step: Step,
    #[serde(default)]
    started_at: Option<Timestamp>,
    #[serde(default)]
    step_started_at: Option<Timestamp>,
    #[serde(default)]
    confirmed_at: Option<Timestamp>,
    #[serde(default)]
    completed_at: Option<Timestamp>,
}

impl TryFrom<RawState> for RotationState {
    type Error = InvariantViolation;

    fn try_from(raw: RawState) -> Result<Self, Self::Error> {
        let minimum = if raw.step == Step::Completed { 1 } else { 2 };
        if raw.key_version.get() < minimum {
            return Err(InvariantViolation::VersionZero);
        }
        Ok(RotationState {
            key_version: raw.key_version,
            step: raw.step,
            started_at: raw.started_at,
            step_started_at: raw.step_started_at,
            confirmed_at: raw.confirmed_at,
            completed_at: raw.completed_at,
        })
    }
}

impl RotationState {
    /// A cluster at rest on one key, with no rotation behind it.
    pub fn settled(version: KeyVersion) -> RotationState {
        RotationState {
            key_version: version,
            step: Step::Completed,
            started_at: None,
            step_started_at: None,
            confirmed_at: None,
            completed_at: None,
        }
    }

    /// The state at `step` of a rotation to `key_version`, with no
    /// timestamps; `None` where no such state exists (version 1 mid-rotation).
    pub fn at(key_version: KeyVersion, step: Step) -> Option<RotationState> {
        let minimum = if step == Step::Completed { 1 } else { 2 };
        (key_version.get() >= minimum).then_some(RotationState {
            step,
            ..RotationState::settled(key_version)
        })
    }

    /// The steps of a rotation to `key_version` whose confirmed numbers are
    /// `versions`: one step, or `Generate` and `Trust` together, which
    /// confirm the same numbers.
    pub fn steps_confirming(key_version: KeyVersion, versions: &KeyVersions) -> Vec<Step> {
        Step::ROTATION
            .into_iter()
            .chain([Step::Completed])
            .filter(|step| {
                RotationState::at(key_version, *step).is_some_and(|s| s.versions() == *versions)
            })
            .collect()
    }

    /// The version being rotated to, or the current one when completed.
    pub fn key_version(&self) -> KeyVersion {
        self.key_version
    }

    pub fn step(&self) -> Step {
        self.step
    }

    pub fn is_completed(&self) -> bool {
        self.step == Step::Completed
    }

    pub fn started_at(&self) -> Option<Timestamp> {
        self.started_at
    }

    pub fn step_started_at(&self) -> Option<Timestamp> {
        self.step_started_at
    }

    pub fn completed_at(&self) -> Option<Timestamp> {
        self.completed_at
    }

    /// The version being rotated away from (the current one when completed).
    pub fn previous_version(&self) -> KeyVersion {
        if self.is_completed() {
            self.key_version
        } else {
            // Non-completed states have key_version >= 2 (checked on
            // construction and deserialization).
            KeyVersion::new(self.key_version.get() - 1)
        }
    }

    /// The confirmed numbers: what every verifier, signer and token is known
    /// to be at.
    pub fn versions(&self) -> KeyVersions {
        let (old, new) = (self.previous_version(), self.key_version);
        let (token, private, public) = match self.step {
            Step::Generate | Step::Trust => (old, old, vec![old]),
            Step::Sign => (old, old, vec![old, new]),
            Step::RefreshTokens => (old, new, vec![old, new]),
            Step::Retire => (new, new, vec![old, new]),
            Step::Completed => (new, new, vec![new]),
        };
        // The table above satisfies every invariant for old < new; the
        // constructor re-checks it.
        KeyVersions::new(token, private, public).unwrap_or_else(|_| KeyVersions::settled(new))
    }

    /// The status line of this state (SPEC section 2).
    pub fn status_line(&self) -> StatusLine {
        StatusLine {
            key_version: self.key_version,
            reason: if self.is_completed() {
                StatusReason::Completed
            } else {
                StatusReason::Processed
            },
            versions: self.versions(),
        }
    }

    fn enter(&self, step: Step, now: Timestamp) -> RotationState {
        RotationState {
            step,
            step_started_at: Some(now),
            confirmed_at: None,
            completed_at: (step == Step::Completed).then_some(now),
            ..self.clone()
        }
    }
}

/// Whether the cluster's operation lock is free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "holder")]
pub enum OperationLock {
    Free,
    /// Held by this rotation (a resumed or repeated start).
    HeldByRotation,
    /// Held by another operation (a CA rotation, a cluster update), named.
    HeldBy(String),
}

/// What a caller asks for when starting a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRequest {
    /// The version to rotate to; must be the current version plus one.
    pub target: KeyVersion,
    /// `enableAdvancedCluster: true` in the user cluster config.
    pub advanced_cluster: bool,
    pub lock: OperationLock,
}

/// Why a rotation was not started. Nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum Refusal {
    #[error(
        "a key rotation to version {key_version} is already in progress (step {step}); wait for it with `status --watch`"
    )]
    RotationInProgress { key_version: KeyVersion, step: Step },
    /// A rotation to `key_version` was requested (the stored target moved)
    /// but has not started yet: the state still says completed.
    #[error(
        "a key rotation to version {key_version} is already in progress (requested, not started yet); wait for it with `status --watch`"
    )]
    RotationRequested { key_version: KeyVersion },
    #[error(
        "the cluster operation lock is held by {holder}; wait for that operation to finish and try again"
    )]
    OperationLocked { holder: String },
    #[error(
        "the user cluster config sets enableAdvancedCluster: true; key rotation is not supported on advanced clusters"
    )]
    AdvancedCluster,
    #[error("the cluster is already at key version {current}; nothing to rotate")]
    AlreadyAtVersion { current: KeyVersion },
    #[error(
        "key version {requested} cannot follow {current}: versions never decrease and a rotation moves one version at a time (next is {current}+1)"
    )]
    NotNextVersion {
        current: KeyVersion,
        requested: KeyVersion,
    },
}

impl Refusal {
    /// Whether the refusal is because another operation is under way (the
    /// CLI's exit code 3), rather than a bad request.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            Refusal::RotationInProgress { .. }
                | Refusal::RotationRequested { .. }
                | Refusal::OperationLocked { .. }
        )
    }
}

/// Starts a rotation from a completed state, or refuses with no change.
pub fn start(
    state: &RotationState,
    request: &StartRequest,
    now: Timestamp,
) -> Result<RotationState, Refusal> {
    if request.advanced_cluster {
        return Err(Refusal::AdvancedCluster);
    }
    if !state.is_completed() {
        return Err(Refusal::RotationInProgress {
            key_version: state.key_version,
            step: state.step,
        });
    }
    if let OperationLock::HeldBy(holder) = &request.lock {
        return Err(Refusal::OperationLocked {
            holder: holder.clone(),
        });
    }
    let current = state.key_version;
    if request.target == current {
        return Err(Refusal::AlreadyAtVersion { current });
    }
    if current.next() != Some(request.target) {
        return Err(Refusal::NotNextVersion {
            current,
            requested: request.target,
        });
    }
    Ok(RotationState {
        key_version: request.target,
        step: Step::Generate,
        started_at: Some(now),
        step_started_at: Some(now),
        confirmed_at: None,
        completed_at: None,
    })
}

/// Starts a rotation for a new request (the CLI's `rotate`), or refuses
/// with no change. `requested` is the target already stored where rotations
/// are requested (the resource's `spec.keyVersion`), `None` when nothing is
/// stored yet.
///
/// A stored target other than a completed state's version is a rotation
/// requested but not started yet (the controller has not picked it up, so
/// the state still says completed): that is a rotation in progress, and
/// refused before anything else, as [`Refusal::RotationRequested`]. Then the
/// request goes through [`start`]. The controller, which acts on the stored
/// target itself, calls [`start`].
pub fn start_new(
    state: &RotationState,
    requested: Option<KeyVersion>,
    request: &StartRequest,
    now: Timestamp,
) -> Result<RotationState, Refusal> {
    if let Some(requested) = requested
        && state.is_completed()
        && requested != state.key_version
    {
        return Err(Refusal::RotationRequested {
            key_version: requested,
        });
    }
    start(state, request, now)
}

/// What one API server instance was seen doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerView {
    /// A name for messages (address or pod name).
    pub name: String,
    /// The key versions this instance accepts (its `/openid/v1/jwks`).
    pub accepts: BTreeSet<KeyVersion>,
    /// The key version that signed a fresh TokenRequest from this instance,
    /// when one was requested.
    pub signs_with: Option<KeyVersion>,
}

/// What the caller saw of the world before calling [`step`]. Never trusted
/// beyond what it says: a step advances only when this confirms its effect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Key versions whose key pair is in the key store.
    pub stored_keys: BTreeSet<KeyVersion>,
    /// Every API server instance. Empty means none could be reached, which
    /// confirms nothing.
    pub api_servers: Vec<ApiServerView>,
    /// Legacy Secret tokens not yet signed with the new key; `None` when not
    /// counted.
    pub stale_legacy_tokens: Option<u64>,
    /// Workloads, pods or nodes whose bound tokens the refresh policy has not
    /// refreshed yet; `None` when not counted. Unused by [`BoundTokenRefresh::Wait`].
    pub stale_bound_tokens: Option<u64>,
    /// Who those are: counts by reason and the first few by name. Only
    /// shown, never decided on: [`step`] goes by `stale_bound_tokens`.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub bound_token_holders: Holders,
}

/// How bound (projected) tokens are refreshed in the RefreshTokens step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum BoundTokenRefresh {
    /// Rollout-restart Deployments, StatefulSets and DaemonSets; evict bare
    /// pods through the Eviction API (honouring PodDisruptionBudgets).
    RestartPods,
    /// Cordon, drain and delete nodes for the infrastructure to replace.
    RecreateNodes,
    /// Wait for kubelets to refresh: 80% of the longest token lifetime, at
    /// most 24 h, plus clock skew.
    Wait {
        #[serde(rename = "maxTokenSeconds")]
        max_token_seconds: u64,
    },
}

/// The longest a kubelet waits before refreshing a projected token.
pub const KUBELET_MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);

impl BoundTokenRefresh {
    /// For `Wait`: how long after Sign every kubelet has refreshed its tokens.
    pub fn wait_window(self, skew: Duration) -> Option<Duration> {
        match self {
            BoundTokenRefresh::Wait { max_token_seconds } => {
                let refresh = Duration::from_secs(max_token_seconds.saturating_mul(8) / 10);
                Some(refresh.min(KUBELET_MAX_REFRESH) + skew)
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
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            key_spec: KeySpec::Rsa2048,
            trust_lead_time: Duration::ZERO,
            bound_token_refresh: BoundTokenRefresh::RestartPods,
            clock_skew: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
        }
    }
}

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
    /// signing still with `signing`.
    PublishPublicKeys {
        public: Vec<KeyVersion>,
        signing: KeyVersion,
    },
    /// Make every API server sign with `signing`, accepting `public`.
    SwitchSigner {
        signing: KeyVersion,
        public: Vec<KeyVersion>,
    },
    /// Re-mint every legacy Secret token not yet signed with `version`.
    RefreshLegacyTokens { version: KeyVersion },
    /// Refresh bound tokens by the policy, towards `version`.
    RefreshBoundTokens {
        version: KeyVersion,
        policy: BoundTokenRefresh,
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

/// Advances a rotation by at most one step and says what to do next.
///
/// The step advances exactly when nothing is left to wait for: each step's
/// conditions are tested once, into [`Plan::waiting`], which is also what
/// the status reports while the step stays put.
///
/// Architecture invariant: this is the only function that moves a
/// [`RotationState`] forward, and it checks every transition against
/// [`KeyVersions::check_transition`].
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
    }
    if waiting.is_empty() && !state.is_completed() {
        next = next.enter(state.step.next(), now);
    } else if let Some(confirmed_at) = trust_confirmed_at {
        // Every API server accepts both keys; only the lead time is left.
        let elapsed = elapsed_since(Some(confirmed_at), now).unwrap_or_default();
        wait = policy.trust_lead_time.saturating_sub(elapsed);
    } else if state.step == Step::RefreshTokens
        && let Some(window) = policy.bound_token_refresh.wait_window(policy.clock_skew)
    {
        let elapsed = elapsed_since(state.step_started_at, now).unwrap_or_default();
        if elapsed < window {
            // Look again when the window closes, at least once a minute.
            wait = (window - elapsed)
                .min(Duration::from_secs(60))
                .max(policy.poll_interval);
        }
    }

    state
        .versions()
        .check_transition(&next.versions())
        .map_err(|violation| StepError {
            from: state.step,
            to: next.step,
            violation,
        })?;

    let mut effects = effects_of(&next, policy);
    if next.step == Step::Retire && state.step == Step::Retire && waiting::old_key_dropped(&waiting)
    {
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
    })
}

/// The effects that drive `state`'s step towards confirmation. They are
/// issued again on every call until it is confirmed; each is idempotent.
fn effects_of(state: &RotationState, policy: &Policy) -> Vec<Effect> {
    let (old, new) = (state.previous_version(), state.key_version);
    let mut effects = vec![Effect::HoldOperationLock];
    match state.step {
        Step::Generate => effects.push(Effect::GenerateKey {
            version: new,
            spec: policy.key_spec,
        }),
        Step::Trust => effects.push(Effect::PublishPublicKeys {
            public: vec![old, new],
            signing: old,
        }),
        Step::Sign => effects.push(Effect::SwitchSigner {
            signing: new,
            public: vec![old, new],
        }),
        Step::RefreshTokens => {
            effects.push(Effect::RefreshLegacyTokens { version: new });
            if policy
                .bound_token_refresh
                .wait_window(Duration::ZERO)
                .is_none()
            {
                effects.push(Effect::RefreshBoundTokens {
                    version: new,
                    policy: policy.bound_token_refresh,
                });
            }
        }
        // RetireKey follows once every API server has dropped the old key
        // (see `step`).
        Step::Retire => effects.push(Effect::PublishPublicKeys {
            public: vec![new],
            signing: new,
        }),
        Step::Completed => return vec![Effect::ReleaseOperationLock],
    }
    effects
}
