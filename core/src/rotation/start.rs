//! Starting a rotation: [`start`] from a completed state, [`start_new`] for
//! a new request, or a [`Refusal`] with no change.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{IssuerChange, RotationState, Step};
use crate::KeyVersion;
use crate::issuer::Issuer;

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
    /// The issuer the cluster signs with, when the caller knows it
    /// ([`crate::signing_issuer::signing_issuer`]).
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
        if let (Some(issuer), Some(signing)) = (&requested.issuer, &requested.signing_issuer)
            && issuer != signing
        {
            return Err(Refusal::IssuerRotationRequested {
                issuer: issuer.clone(),
            });
        }
    }
    start(state, request, now)
}
