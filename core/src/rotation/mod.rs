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
pub mod legacy;
mod versions;
mod waiting;

pub use holders::{
    HolderCategory, HolderReason, Holders, MAX_NAME_BYTES, MAX_NAMED, NamedHolder, WorkloadKind,
};
pub use legacy::{CutOff, LegacyTokens};
pub use versions::{InvariantViolation, KeyVersions};
pub use waiting::{Wait, Waiting};

use waiting::elapsed_since;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::KeyVersion;
use crate::issuer::{Issuer, IssuerState, IssuerStatusLine};
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
    /// The issuer change this rotation carries (SPEC section 10); once
    /// completed, `to` is the cluster's issuer. `None` when ksa never
    /// changed the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<IssuerChange>,
    /// `false` for an issuer rotation that keeps key `key_version`.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    changes_key: bool,
}

fn yes() -> bool {
    true
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_yes(value: &bool) -> bool {
    *value
}

/// An issuer rotation from `from` to `to`. When `from == to` the issuer
/// does not change (a key rotation after an issuer rotation remembers the
/// issuer this way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerChange {
    pub from: Issuer,
    pub to: Issuer,
}

impl IssuerChange {
    pub fn changes(&self) -> bool {
        self.from != self.to
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawState {
    key_version: KeyVersion,
    step: Step,
    #[serde(default)]
    issuer: Option<IssuerChange>,
    #[serde(default = "yes")]
    changes_key: bool,
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
        let minimum = if raw.step == Step::Completed || !raw.changes_key {
            1
        } else {
            2
        };
        if raw.key_version.get() < minimum {
            return Err(InvariantViolation::VersionZero);
        }
        if !raw.changes_key
            && raw.step != Step::Completed
            && (raw.step == Step::Generate
                || !raw.issuer.as_ref().is_some_and(IssuerChange::changes))
        {
            return Err(InvariantViolation::NothingToRotate);
        }
        Ok(RotationState {
            issuer: raw.issuer,
            changes_key: raw.changes_key,
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
            issuer: None,
            changes_key: true,
        }
    }

    /// The state at `step` of a rotation to `key_version`, with no
    /// timestamps; `None` where no such state exists (version 1 mid-rotation).
    pub fn at(key_version: KeyVersion, step: Step) -> Option<RotationState> {
        // A key rotation: version 1 is never rotated to.
        let minimum = if step == Step::Completed { 1 } else { 2 };
        (key_version.get() >= minimum).then_some(RotationState {
            step,
            ..RotationState::settled(key_version)
        })
    }

    /// This rotation (the same key version, issuer change and key change)
    /// at `step`, with no timestamps; `None` where no such state exists (an
    /// issuer rotation that keeps the key has no Generate step).
    pub fn at_step(&self, step: Step) -> Option<RotationState> {
        RotationState::try_from(RawState {
            key_version: self.key_version,
            step,
            issuer: self.issuer.clone(),
            changes_key: self.changes_key,
            started_at: None,
            step_started_at: None,
            confirmed_at: None,
            completed_at: None,
        })
        .ok()
    }

    /// Whether `other` is a state of the same rotation as this one: the
    /// same key version, key change and issuer change (a remembered issuer
    /// that does not change is no change).
    pub fn same_rotation(&self, other: &RotationState) -> bool {
        let change = |state: &RotationState| state.issuer.clone().filter(IssuerChange::changes);
        self.key_version == other.key_version
            && self.changes_key == other.changes_key
            && change(self) == change(other)
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

    /// When every API server was first seen to accept both keys at Trust
    /// (the lead time runs from here).
    pub fn confirmed_at(&self) -> Option<Timestamp> {
        self.confirmed_at
    }

    /// The version being rotated away from (the current one when completed,
    /// or when the rotation keeps the key).
    pub fn previous_version(&self) -> KeyVersion {
        if self.is_completed() || !self.changes_key {
            self.key_version
        } else {
            // Non-completed states have key_version >= 2 (checked on
            // construction and deserialization).
            KeyVersion::new(self.key_version.get() - 1)
        }
    }

    /// The key versions whose key pairs the key store must hold at this
    /// step: the old key until Retire deletes it, and the new one from
    /// Trust on (Generate creates it). A store without one of them was
    /// tampered with or restored from an older backup; the drivers refuse
    /// to go on rather than publish or sign with a key that is not there.
    pub fn required_keys(&self) -> Vec<KeyVersion> {
        let (old, new) = (self.previous_version(), self.key_version);
        match self.step {
            Step::Generate => vec![old],
            Step::Trust | Step::Sign | Step::RefreshTokens => vec![old, new],
            Step::Retire | Step::Completed => vec![new],
        }
    }

    /// Whether an operator's import of key `version`, not yet sealed by ksa,
    /// may be taken in (once the API servers confirm it): only the key a
    /// settled cluster signs with. Any other unsealed key is refused.
    pub fn adopts_import(&self, version: KeyVersion) -> bool {
        self.is_completed() && version == self.versions().private_key_version()
    }

    /// A stored key newer than this state's version, if there is one: then
    /// this state was written before that key was made, and is an old
    /// status put back, never acted on.
    pub fn predates(&self, stored: impl IntoIterator<Item = KeyVersion>) -> Option<KeyVersion> {
        stored
            .into_iter()
            .find(|version| *version > self.key_version)
    }

    /// What [`step`] needs observed of the world in this state: the drivers
    /// look at nothing else.
    pub fn observation(&self) -> Observation {
        let issuer = self
            .issuer
            .as_ref()
            .filter(|_| self.changes_issuer())
            .map(|change| vec![change.to.clone(), change.from.clone()]);
        match self.step {
            Step::Trust | Step::Retire => Observation {
                api_servers: true,
                issuers_reviewed: issuer.unwrap_or_default(),
                publications: true,
                ..Observation::default()
            },
            Step::Sign => Observation {
                api_servers: true,
                signing: self.changes_key,
                issuer_signing: issuer.is_some(),
                ..Observation::default()
            },
            Step::RefreshTokens => Observation {
                tokens: true,
                ..Observation::default()
            },
            Step::Generate | Step::Completed => Observation::default(),
        }
    }

    /// The confirmed numbers: what every verifier, signer and token is known
    /// to be at.
    pub fn versions(&self) -> KeyVersions {
        if !self.changes_key {
            return KeyVersions::settled(self.key_version);
        }
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

    /// Whether this rotation changes the signing key (an issuer rotation
    /// may keep it).
    pub fn changes_key(&self) -> bool {
        self.changes_key
    }

    /// The issuer change this rotation carries, or the cluster's issuer
    /// once completed; `None` when ksa never changed the issuer.
    pub fn issuer(&self) -> Option<&IssuerChange> {
        self.issuer.as_ref()
    }

    /// What the restart annotation (`ksa.dev/restarted-for-key-version`)
    /// of a workload restarted in this rotation's RefreshTokens says: the
    /// key version, new with every key rotation; for an issuer rotation
    /// that keeps the key, the version and when the rotation started, so
    /// a workload restarted for an earlier rotation of the same key is
    /// restarted again.
    pub fn refresh_marker(&self) -> String {
        match self.started_at.filter(|_| !self.changes_key) {
            Some(started) => format!("{}@{started}", self.key_version.get()),
            None => self.key_version.get().to_string(),
        }
    }

    /// Whether this rotation changes the issuer.
    pub fn changes_issuer(&self) -> bool {
        !self.is_completed() && self.issuer.as_ref().is_some_and(IssuerChange::changes)
    }

    /// The confirmed issuers (SPEC section 10), a function of the change
    /// and the step as the key numbers are; `None` when ksa never changed
    /// the issuer.
    pub fn issuers(&self) -> Option<IssuerState> {
        let IssuerChange { from: a, to: b } = self.issuer.as_ref()?;
        if a == b || self.is_completed() {
            return Some(IssuerState::settled(b.clone()));
        }
        let (token, signing, accepted) = match self.step {
            Step::Generate | Step::Trust => (a, a, vec![a.clone()]),
            Step::Sign => (a, a, vec![a.clone(), b.clone()]),
            Step::RefreshTokens => (a, b, vec![b.clone(), a.clone()]),
            Step::Retire | Step::Completed => (b, b, vec![b.clone(), a.clone()]),
        };
        // The table above satisfies every invariant for a != b; the
        // constructor re-checks it.
        IssuerState::new(token.clone(), signing.clone(), accepted).ok()
    }

    /// The keys published to outside verifiers at this step: the old key
    /// until the new one is trusted, both while they overlap, and in Retire
    /// the old one until every API server has dropped it (`old_dropped`):
    /// an outside verifier never rejects a token the cluster accepts.
    pub fn published_keys(&self, old_dropped: bool) -> Vec<KeyVersion> {
        let (old, new) = (self.previous_version(), self.key_version);
        let mut keys = match self.step {
            Step::Generate => vec![old],
            Step::Trust | Step::Sign | Step::RefreshTokens => vec![old, new],
            Step::Retire if !old_dropped => vec![old, new],
            Step::Retire | Step::Completed => vec![new],
        };
        keys.dedup();
        keys
    }

    /// The issuers no longer published outside at this step: the old one
    /// from Retire on, when the API servers are asked to drop it.
    pub fn withdrawn_issuers(&self) -> Vec<Issuer> {
        match &self.issuer {
            Some(change) if self.changes_issuer() && self.step >= Step::Retire => {
                vec![change.from.clone()]
            }
            _ => Vec::new(),
        }
    }

    /// The issuers the API servers are asked to accept while in this
    /// step, the signing issuer first (the `--service-account-issuer`
    /// flags); `None` when the rotation leaves the flags alone.
    pub fn issuer_flags(&self) -> Option<Vec<Issuer>> {
        let IssuerChange { from: a, to: b } = self.issuer.as_ref()?;
        if !self.changes_issuer() {
            return None;
        }
        Some(match self.step {
            Step::Generate => return None,
            Step::Trust => vec![a.clone(), b.clone()],
            Step::Sign | Step::RefreshTokens => vec![b.clone(), a.clone()],
            Step::Retire | Step::Completed => vec![b.clone()],
        })
    }

    /// The issuer status line of this state (SPEC section 10), when ksa
    /// has changed the issuer.
    pub fn issuer_status_line(&self) -> Option<IssuerStatusLine> {
        let change = self.issuer.as_ref()?;
        Some(IssuerStatusLine {
            issuer: change.to.clone(),
            completed: !self.changes_issuer(),
            issuers: self.issuers()?,
        })
    }

    /// The status line of this state (SPEC section 2).
    pub fn status_line(&self) -> StatusLine {
        StatusLine {
            key_version: self.key_version,
            reason: if self.is_completed() || !self.changes_key {
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
    /// The version to rotate to: the current version plus one, or the
    /// current version for an issuer rotation that keeps the key.
    pub target: KeyVersion,
    /// The issuer to rotate to, `from` being the issuer the cluster signs
    /// with now; `None` leaves the issuer as it is.
    pub issuer: Option<IssuerChange>,
    /// `enableAdvancedCluster: true` in the user cluster config.
    pub advanced_cluster: bool,
    pub lock: OperationLock,
}

/// Why a rotation was not started. Nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum Refusal {
    #[error(
        "a rotation is already in progress (key version {key_version}, step {step}); wait for it with `status --watch`"
    )]
    RotationInProgress { key_version: KeyVersion, step: Step },
    /// A rotation to `key_version` was requested (the stored target moved)
    /// but has not started yet: the state still says completed.
    #[error(
        "a key rotation to version {key_version} is already in progress (requested, not started yet); wait for it with `status --watch`"
    )]
    RotationRequested { key_version: KeyVersion },
    /// An issuer rotation to `issuer` was requested but has not started
    /// yet.
    #[error(
        "an issuer rotation to {issuer} is already in progress (requested, not started yet); wait for it with `status --watch`"
    )]
    IssuerRotationRequested { issuer: Issuer },
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
    #[error("the cluster already signs with issuer {issuer}; nothing to rotate")]
    AlreadyIssuer { issuer: Issuer },
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
                | Refusal::IssuerRotationRequested { .. }
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
    if let Some(change) = &request.issuer
        && !change.changes()
    {
        return Err(Refusal::AlreadyIssuer {
            issuer: change.to.clone(),
        });
    }
    let started = RotationState {
        key_version: request.target,
        step: Step::Generate,
        started_at: Some(now),
        step_started_at: Some(now),
        confirmed_at: None,
        completed_at: None,
        // A key rotation remembers the issuer an earlier one left.
        issuer: request.issuer.clone().or_else(|| {
            state.issuer.as_ref().map(|done| IssuerChange {
                from: done.to.clone(),
                to: done.to.clone(),
            })
        }),
        changes_key: true,
    };
    if request.target == current {
        return match request.issuer {
            // An issuer rotation that keeps the key: nothing to generate.
            Some(_) => Ok(RotationState {
                key_version: current,
                step: Step::Trust,
                changes_key: false,
                ..started
            }),
            None => Err(Refusal::AlreadyAtVersion { current }),
        };
    }
    if current.next() != Some(request.target) {
        return Err(Refusal::NotNextVersion {
            current,
            requested: request.target,
        });
    }
    Ok(started)
}

/// What is already stored where rotations are requested (the resource's
/// `spec.keyVersion` and `spec.issuer`), for [`start_new`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// The stored target key version; `None` when nothing is stored yet.
    pub key_version: Option<KeyVersion>,
    /// The stored target issuer, if any.
    pub issuer: Option<Issuer>,
    /// The issuer the cluster signs with, when the caller knows it (the
    /// state's, or before any issuer rotation, the API servers').
    pub signing_issuer: Option<Issuer>,
}

impl Requested {
    /// Only a stored target key version.
    pub fn key(key_version: Option<KeyVersion>) -> Requested {
        Requested {
            key_version,
            ..Requested::default()
        }
    }
}

/// Starts a rotation for a new request (the CLI's `rotate`), or refuses
/// with no change. `requested` is what is already stored.
///
/// A stored target other than a completed state's version, or a stored
/// issuer other than the one the cluster signs with, is a rotation
/// requested but not started yet (the controller has not picked it up, so
/// the state still says completed): that is a rotation in progress, and
/// refused before anything else, as [`Refusal::RotationRequested`] or
/// [`Refusal::IssuerRotationRequested`]. Then the request goes through
/// [`start`]. The controller, which acts on the stored target itself,
/// calls [`start`].
pub fn start_new(
    state: &RotationState,
    requested: &Requested,
    request: &StartRequest,
    now: Timestamp,
) -> Result<RotationState, Refusal> {
    if state.is_completed() {
        if let Some(version) = requested.key_version
            && version != state.key_version
        {
            return Err(Refusal::RotationRequested {
                key_version: version,
            });
        }
        let signing = state
            .issuer
            .as_ref()
            .map(|done| &done.to)
            .or(requested.signing_issuer.as_ref());
        if let (Some(issuer), Some(signing)) = (&requested.issuer, signing)
            && issuer != signing
        {
            return Err(Refusal::IssuerRotationRequested {
                issuer: issuer.clone(),
            });
        }
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
    /// Whether this instance's TokenReview accepted a token carrying each
    /// issuer (minted with the current signing key), for the issuers the
    /// step asked about ([`Observation::issuers_reviewed`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub issuer_reviews: BTreeMap<Issuer, bool>,
    /// The `iss` of a fresh TokenRequest answered by this instance, when
    /// asked ([`Observation::issuer_signing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issues: Option<Issuer>,
    /// The issuer this instance's `/.well-known/openid-configuration`
    /// names, when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_issuer: Option<Issuer>,
}

/// What to observe for one [`step`] ([`RotationState::observation`]).
/// The stored key versions are always observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// What keys every API server instance accepts (its JWKS).
    pub api_servers: bool,
    /// Also which key signs a fresh TokenRequest on each instance.
    pub signing: bool,
    /// How many legacy and bound tokens are not yet signed with the new key.
    pub tokens: bool,
    /// Whether each instance accepts a token carrying each of these
    /// issuers ([`ApiServerView::issuer_reviews`]).
    pub issuers_reviewed: Vec<Issuer>,
    /// Which issuer a fresh TokenRequest on each instance carries, and
    /// which its discovery document names.
    pub issuer_signing: bool,
    /// What outsiders read at each published discovery document
    /// ([`Observed::publications`]).
    pub publications: bool,
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
    /// Legacy Secret tokens not yet signed with the new key that ksa
    /// re-mints (neither blocked nor given up: [`legacy::assess`]); `None`
    /// when not counted.
    pub stale_legacy_tokens: Option<u64>,
    /// Stale legacy token Secrets ksa cannot re-mint (immutable, or their
    /// token replaced after the re-mint): counted, the first few named.
    /// Waited for until [`Policy::legacy_token_deadline`], then cut off.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub blocked_legacy_tokens: Holders,
    /// Stale legacy token Secrets the operator gave up on
    /// ([`Policy::given_up_legacy_tokens`]): never waited for.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub given_up_legacy_tokens: Holders,
    /// Workloads, pods or nodes whose bound tokens the refresh policy has not
    /// refreshed yet; `None` when not counted. Unused by [`BoundTokenRefresh::Wait`].
    pub stale_bound_tokens: Option<u64>,
    /// Who those are: counts by reason and the first few by name. Only
    /// shown, never decided on: [`step`] goes by `stale_bound_tokens`.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub bound_token_holders: Holders,
    /// The longest projected token lifetime, in seconds, held by a pod
    /// that predates RefreshTokens (0: none holds one); `None` when not
    /// observed. What [`BoundTokenRefresh::Wait`] waits out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_bound_token_seconds: Option<u64>,
    /// What an outsider reads at each discovery document ksa publishes
    /// (Trust and Retire, [`Observation::publications`]); empty when none is
    /// configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<PublicationView>,
}

impl Observed {
    /// The longest `max-age` any location served: how long a verifier that
    /// honours caching may keep what it read before.
    pub fn longest_max_age(&self) -> Duration {
        let seconds = self
            .publications
            .iter()
            .map(|p| p.max_age_seconds)
            .max()
            .unwrap_or(0);
        Duration::from_secs(seconds)
    }
}

/// One published OIDC discovery document as an outside verifier reads it:
/// no credentials, its public URL, the JWKS its `jwks_uri` names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicationView {
    /// The discovery document's public URL (what the status names).
    pub url: String,
    /// The key versions its JWKS serves (by kid, among the stored keys)
    /// when the document names the issuer it is published for and its JWKS
    /// was read; `None` when not.
    pub serves: Option<BTreeSet<KeyVersion>>,
    /// The longest `Cache-Control: max-age` of the two answers, in seconds
    /// (0 when none).
    pub max_age_seconds: u64,
}

impl PublicationView {
    /// Whether an outsider reading it now sees key `version`.
    pub fn serves(&self, version: KeyVersion) -> bool {
        self.serves
            .as_ref()
            .is_some_and(|keys| keys.contains(&version))
    }
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
    /// Wait for kubelets to refresh: 80% of the longest projected token
    /// lifetime that pods from before RefreshTokens hold (observed,
    /// [`Observed::longest_bound_token_seconds`]), at most 24 h, plus clock
    /// skew. `max_token_seconds` can only lengthen it (0: what the pods
    /// hold alone).
    Wait {
        #[serde(rename = "maxTokenSeconds")]
        max_token_seconds: u64,
    },
}

/// The longest a kubelet waits before refreshing a projected token.
pub const KUBELET_MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// What the kubelet may take beyond 80% of a token's lifetime to have a
/// refreshed token in the pod: its jitter (up to 10 s) and the period in
/// which it remounts a pod's volumes (about a minute), with room to spare.
pub const KUBELET_SLACK: Duration = Duration::from_secs(120);

impl BoundTokenRefresh {
    /// Whether this policy waits for the kubelets instead of refreshing.
    pub fn waits(self) -> bool {
        matches!(self, BoundTokenRefresh::Wait { .. })
    }

    /// For `Wait`: how long after RefreshTokens began every kubelet has
    /// refreshed the tokens of pods from before it, when the longest
    /// lifetime such a pod holds is `longest` seconds. A kubelet refreshes
    /// a token at 80% of its lifetime, at most 24 h after it was issued
    /// (plus [`KUBELET_SLACK`]), and each was issued before RefreshTokens
    /// began. `None` for the other policies.
    pub fn wait_window(self, longest: u64, skew: Duration) -> Option<Duration> {
        match self {
            BoundTokenRefresh::Wait { max_token_seconds } => {
                let lifetime = longest.max(max_token_seconds);
                let refresh = Duration::from_secs(lifetime.saturating_mul(8) / 10);
                Some(refresh.min(KUBELET_MAX_REFRESH) + KUBELET_SLACK + skew)
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

impl Policy {
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
    /// Refresh bound tokens by the policy, towards `version`.
    RefreshBoundTokens {
        version: KeyVersion,
        policy: BoundTokenRefresh,
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
        let elapsed = elapsed_since(Some(confirmed_at), now).unwrap_or_default();
        wait = waiting::trust_hold(policy, observed).saturating_sub(elapsed);
    } else if state.step == Step::RefreshTokens
        && let Some(longest) = observed.longest_bound_token_seconds
        && let Some(window) = policy
            .bound_token_refresh
            .wait_window(longest, policy.clock_skew)
    {
        let elapsed = elapsed_since(state.step_started_at, now).unwrap_or_default();
        if elapsed < window {
            // Look again when the window closes, at least once a minute.
            wait = (window - elapsed)
                .min(Duration::from_secs(60))
                .max(policy.poll_interval);
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

    let mut effects = effects_of(&next, policy);
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
    })
}

/// The effects that drive `state`'s step towards confirmation. They are
/// issued again on every call until it is confirmed; each is idempotent.
fn effects_of(state: &RotationState, policy: &Policy) -> Vec<Effect> {
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
