//! What a driver observes of the world for one [`super::step`]: what to
//! look at ([`Observation`]) and what it saw ([`Observed`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Holders;
use crate::KeyVersion;
use crate::issuer::Issuer;

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
    /// Why this instance could not be asked (it did not answer, or it
    /// announces itself with no address), in words for the status; `None`
    /// when it answered. One that was not asked confirms nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<String>,
}

/// What to observe for one [`step`](super::step) ([`RotationState::observation`](super::RotationState::observation)).
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

/// What the caller saw of the world before calling [`step`](super::step). Never trusted
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
    /// re-mints (neither blocked nor given up: [`legacy::assess`](super::legacy::assess)); `None`
    /// when not counted.
    pub stale_legacy_tokens: Option<u64>,
    /// Stale legacy token Secrets ksa cannot re-mint (immutable, or their
    /// token replaced after the re-mint): counted, the first few named.
    /// Waited for until [`Policy::legacy_token_deadline`](super::Policy::legacy_token_deadline), then cut off.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub blocked_legacy_tokens: Holders,
    /// Stale legacy token Secrets the operator gave up on
    /// ([`Policy::given_up_legacy_tokens`](super::Policy::given_up_legacy_tokens)): never waited for.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub given_up_legacy_tokens: Holders,
    /// Workloads, pods or nodes whose bound tokens the refresh policy has not
    /// refreshed yet; `None` when not counted. Unused by [`BoundTokenRefresh::Wait`](super::BoundTokenRefresh::Wait).
    pub stale_bound_tokens: Option<u64>,
    /// Who those are: counts by reason and the first few by name. Only
    /// shown, never decided on: [`step`](super::step) goes by `stale_bound_tokens`.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub bound_token_holders: Holders,
    /// The longest projected token lifetime, in seconds, held by a pod
    /// that predates RefreshTokens (0: none holds one); `None` when not
    /// observed. What [`BoundTokenRefresh::Wait`](super::BoundTokenRefresh::Wait) waits out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_bound_token_seconds: Option<u64>,
    /// For [`BoundTokenRefresh::Wait`](super::BoundTokenRefresh::Wait) with
    /// its refreshes observed (an audit webhook): the pods from before
    /// RefreshTokens and how many of them their kubelet was seen refreshing
    /// ([`refresh::tally`](super::refresh::tally)). The step ends once all
    /// were seen, or when the window passes. `None`: not observed, the
    /// window alone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_refreshes: Option<super::refresh::KubeletRefreshes>,
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
