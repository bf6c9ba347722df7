//! The stored state of a rotation: its [`Step`], the key version and issuer
//! change it carries, and what follows from them (the confirmed numbers, the
//! keys and issuers to publish, the status line).

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{InvariantViolation, KeyVersions, Observation};
use crate::KeyVersion;
use crate::issuer::{Issuer, IssuerState, IssuerStatusLine};
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

    pub(super) fn next(self) -> Step {
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
    pub(super) key_version: KeyVersion,
    pub(super) step: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) step_started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) confirmed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) completed_at: Option<Timestamp>,
    /// The issuer change this rotation carries (SPEC section 10); once
    /// completed, `to` is the cluster's issuer. `None` when ksa never
    /// changed the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) issuer: Option<IssuerChange>,
    /// `false` for an issuer rotation that keeps key `key_version`.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub(super) changes_key: bool,
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

    /// What [`step`](super::step) needs observed of the world in this state: the drivers
    /// look at nothing else.
    pub fn observation(&self) -> Observation {
        let issuer = self
            .issuer
            .as_ref()
            .filter(|_| self.changes_issuer())
            .map(|change| vec![change.to.clone(), change.from.clone()]);
        match self.step {
            Step::Trust => Observation {
                api_servers: true,
                issuers_reviewed: issuer.unwrap_or_default(),
                publications: true,
                ..Observation::default()
            },
            // Retire also checks that every instance still signs with the
            // new key (and issuer): one back on an older configuration
            // would sign tokens that the retired key set rejects.
            Step::Retire => Observation {
                api_servers: true,
                signing: self.changes_key,
                issuer_signing: issuer.is_some(),
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
            // What Sign confirmed must still hold while tokens are
            // refreshed: every instance signs with the new key (and issuer).
            Step::RefreshTokens => Observation {
                tokens: true,
                api_servers: true,
                signing: self.changes_key,
                issuer_signing: issuer.is_some(),
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

    /// The status line of a resource whose spec asks for key version
    /// `requested`: this state's, unless the state is completed at an
    /// earlier version, so that the rotation asked for has not started
    /// (not taken up yet, or `refused` by the controller). Then the line
    /// names the requested version, not completed, with the numbers as
    /// they stand: a script polling for `status: True` is never told that
    /// a rotation it asked for is done.
    pub fn status_line_for(&self, requested: KeyVersion, refused: bool) -> StatusLine {
        if !self.is_completed() || requested <= self.key_version {
            return self.status_line();
        }
        let reason = if refused {
            crate::status::REFUSED
        } else {
            crate::status::REQUESTED
        };
        StatusLine {
            key_version: requested,
            reason: StatusReason::Other(reason.to_owned()),
            versions: self.versions(),
        }
    }

    pub(super) fn enter(&self, step: Step, now: Timestamp) -> RotationState {
        RotationState {
            step,
            step_started_at: Some(now),
            confirmed_at: None,
            completed_at: (step == Step::Completed).then_some(now),
            ..self.clone()
        }
    }
}
