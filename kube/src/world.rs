//! The one world a rotation is driven in: how it is observed and how each
//! effect of a plan is carried out, written once for both shells.
//!
//! What differs between the shells sits behind narrow ports, each a small
//! trait the shell implements (or takes from here):
//!
//! | port | the controller | kubeadm (`rotate --pki-dir`) |
//! |---|---|---|
//! | [`KeyStorage`] | key Secrets | `sa-vN.key` files |
//! | [`ApiServers`] | the API server key Secret and roll-out | static pod manifests |
//! | [`Outside`] | the locations outside verifiers read | none ([`Nowhere`]) |
//! | [`Lock`] | the operation lock Lease ([`Lease`]) | the lock file of the run ([`AlreadyHeld`]) |
//! | [`UserCluster`] | [`TargetCluster`] | [`TargetCluster`] |
//! | [`RefreshFeed`] (optional) | the audit webhook's records, when the rotation asks | none |
//!
//! The state store is the driver's ([`driver::StateStore`]). The driver's
//! crash tests drive this world over in-memory ports, so what they test is
//! this dispatch.
//!
//! Architecture invariant: every effect is dispatched here and nowhere
//! else, and each port call is idempotent, so an effect applied twice is
//! the same as once.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::crypto::{AwsLc, SigningBackend as _, SigningKey};
use ksa_core::issuer::Issuer;
use ksa_core::key::{KeyError, PrivateKey, PublicKey};
use ksa_core::rotation::refresh::KubeletRefreshes;
use ksa_core::rotation::{
    BoundTokenRefresh, Effect, Observed, Plan, Policy, PublicationView, RotationState, Step,
};

use crate::cluster::TargetCluster;
use crate::driver::{self, Findings};
use crate::error::Error;
use crate::{lock, refresh};

/// Where a rotation's key pairs are kept.
pub trait KeyStorage<E> {
    /// The public key of every stored version.
    fn public_keys(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<KeyVersion, PublicKey>, E>> + Send;

    /// Key pair `version`; an error when it is not stored.
    fn private_key(
        &self,
        version: KeyVersion,
    ) -> impl Future<Output = Result<PrivateKey, E>> + Send;

    /// Whether key pair `version` is stored. An error when something stands
    /// there that the store refuses (it is never adopted).
    fn contains(&self, version: KeyVersion) -> impl Future<Output = Result<bool, E>> + Send;

    /// Stores `key` as version `version`.
    fn create(
        &mut self,
        version: KeyVersion,
        key: &PrivateKey,
    ) -> impl Future<Output = Result<(), E>> + Send;

    /// Deletes key pair `version`, which `current` has replaced everywhere;
    /// nothing to do when it is gone already.
    fn retire(
        &mut self,
        version: KeyVersion,
        current: KeyVersion,
    ) -> impl Future<Output = Result<(), E>> + Send;
}

/// What every API server is made to do by
/// [`Effect::PublishPublicKeys`] and [`Effect::SwitchSigner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollOut<'a> {
    /// The key version it signs with.
    pub signing: KeyVersion,
    /// The key versions it accepts.
    pub public: &'a [KeyVersion],
    /// With an issuer rotation, the issuers it accepts, the first signing.
    pub issuers: Option<&'a [Issuer]>,
    /// Whether the rotation changes the key (an issuer rotation that keeps
    /// it leaves the key settings alone where writing them restarts
    /// something).
    pub changes_key: bool,
}

/// How the API servers are given a key set and issuer list.
pub trait ApiServers<E> {
    /// Makes every API server do what `to` says. Nothing restarts when all
    /// of it is in place already.
    fn roll_out(&mut self, to: RollOut<'_>) -> impl Future<Output = Result<(), E>> + Send;
}

/// Where outside verifiers read the keys and discovery documents.
pub trait Outside<E> {
    /// What an outsider reads at each location, for `issuers` (`None`: the
    /// issuer the cluster signs with), in versions of `keys`.
    fn observe(
        &mut self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        issuers: Option<Vec<Issuer>>,
    ) -> impl Future<Output = Result<Vec<PublicationView>, E>> + Send;

    /// Publishes the JWKS of `keys` and a discovery document for each of
    /// `issuers` (`None`: the issuer the cluster signs with) at every
    /// location, and removes the documents of `withdrawn` issuers.
    fn publish(
        &mut self,
        keys: &[PublicKey],
        issuers: Option<Vec<Issuer>>,
        withdrawn: &[Issuer],
    ) -> impl Future<Output = Result<(), E>> + Send;
}

/// No location outside: kubeadm mode publishes nowhere but the API
/// servers' own discovery endpoint (there is no rotation resource to name
/// a sink). A shell without one passes `None::<Nowhere>`.
#[derive(Debug)]
pub enum Nowhere {}

impl<E> Outside<E> for Nowhere {
    async fn observe(
        &mut self,
        _keys: &BTreeMap<KeyVersion, PublicKey>,
        _issuers: Option<Vec<Issuer>>,
    ) -> Result<Vec<PublicationView>, E> {
        match *self {}
    }

    async fn publish(
        &mut self,
        _keys: &[PublicKey],
        _issuers: Option<Vec<Issuer>>,
        _withdrawn: &[Issuer],
    ) -> Result<(), E> {
        match *self {}
    }
}

/// The cluster operation lock, held while a rotation is in progress.
pub trait Lock<E> {
    /// Takes the lock; nothing to do when this rotation holds it.
    fn hold(&mut self) -> impl Future<Output = Result<(), E>> + Send;
    /// Releases the lock; nothing to do when it is not held.
    fn release(&mut self) -> impl Future<Output = Result<(), E>> + Send;
}

/// A lock its caller holds for the whole run (kubeadm's lock file): taking
/// and releasing it is nothing to do.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlreadyHeld;

impl<E> Lock<E> for AlreadyHeld {
    async fn hold(&mut self) -> Result<(), E> {
        Ok(())
    }

    async fn release(&mut self) -> Result<(), E> {
        Ok(())
    }
}

/// The operation lock Lease of `rotation` in `namespace` ([`lock`]).
#[derive(Clone)]
#[allow(missing_debug_implementations, reason = "kube::Client has no Debug")]
pub struct Lease<'a> {
    pub client: &'a kube::Client,
    pub namespace: &'a str,
    pub rotation: &'a str,
}

impl<E: From<Error>> Lock<E> for Lease<'_> {
    async fn hold(&mut self) -> Result<(), E> {
        Ok(lock::hold(self.client, self.namespace, self.rotation).await?)
    }

    async fn release(&mut self) -> Result<(), E> {
        Ok(lock::release(self.client, self.namespace, self.rotation).await?)
    }
}

/// What the user cluster's API servers' audit stream showed of the
/// kubelets' token refreshes (`TokenRequest`s by `system:node:*` bound to
/// a pod): for the `wait` policy to end RefreshTokens once every pod from
/// before it is seen refreshing, instead of by the window alone.
pub trait RefreshFeed: Send + Sync {
    /// The latest TokenRequest received (the API server's
    /// `requestReceivedTimestamp`) for each pod uid it was bound to.
    fn token_requests(&self) -> BTreeMap<String, Timestamp>;
}

/// The user cluster: its API servers and the tokens in circulation.
pub trait UserCluster<E> {
    /// What the API servers do and how many tokens are stale, as `state`
    /// asks ([`TargetCluster::observe`]).
    fn observe(
        &self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        state: &RotationState,
        policy: &Policy,
        signer: Option<&dyn SigningKey>,
    ) -> impl Future<Output = Result<Observed, E>> + Send;

    /// Re-mints every legacy token not signed by `signer`; returns how many.
    fn refresh_legacy_tokens(
        &self,
        signer: Arc<dyn SigningKey>,
    ) -> impl Future<Output = Result<usize, E>> + Send;

    /// One pass of bound-token refresh under `policy`.
    fn refresh_bound_tokens(
        &self,
        marker: &str,
        policy: &BoundTokenRefresh,
        since: Timestamp,
    ) -> impl Future<Output = Result<(), E>> + Send;

    /// The legacy token Secrets used lately that no pod mounts: held
    /// outside the cluster.
    fn legacy_tokens_held_outside(&self) -> impl Future<Output = Result<Vec<String>, E>> + Send;

    /// The pods holding a bound token from before RefreshTokens began
    /// (`since`) and which of them `requests` (pod uid: latest TokenRequest
    /// received) shows refreshed ([`ksa_core::rotation::refresh::tally`]).
    fn kubelet_refreshes(
        &self,
        marker: &str,
        since: Timestamp,
        skew: std::time::Duration,
        requests: &BTreeMap<String, Timestamp>,
    ) -> impl Future<Output = Result<KubeletRefreshes, E>> + Send;
}

impl<E: From<Error>> UserCluster<E> for TargetCluster {
    async fn observe(
        &self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        state: &RotationState,
        policy: &Policy,
        signer: Option<&dyn SigningKey>,
    ) -> Result<Observed, E> {
        Ok(TargetCluster::observe(self, keys, state, policy, signer).await?)
    }

    async fn refresh_legacy_tokens(&self, signer: Arc<dyn SigningKey>) -> Result<usize, E> {
        Ok(refresh::refresh_legacy_tokens(&self.client, signer).await?)
    }

    async fn refresh_bound_tokens(
        &self,
        marker: &str,
        policy: &BoundTokenRefresh,
        since: Timestamp,
    ) -> Result<(), E> {
        Ok(refresh::refresh_bound_tokens(&self.client, marker, policy, since).await?)
    }

    async fn legacy_tokens_held_outside(&self) -> Result<Vec<String>, E> {
        let found = refresh::plan::legacy_tokens(&self.client, Timestamp::now()).await?;
        Ok(found.held_outside.iter().map(ToString::to_string).collect())
    }

    async fn kubelet_refreshes(
        &self,
        marker: &str,
        since: Timestamp,
        skew: std::time::Duration,
        requests: &BTreeMap<String, Timestamp>,
    ) -> Result<KubeletRefreshes, E> {
        Ok(refresh::observe_kubelet_refreshes(&self.client, marker, since, skew, requests).await?)
    }
}

/// The world of one rotation, over a shell's ports whose errors are `E`:
/// the driver's [`driver::World`].
#[allow(missing_debug_implementations, reason = "the ports need not be Debug")]
pub struct ClusterWorld<'a, E, C, K, A, O, L> {
    cluster: &'a C,
    policy: &'a Policy,
    keys: K,
    api_servers: A,
    outside: Option<O>,
    lock: L,
    refresh_feed: Option<&'a dyn RefreshFeed>,
    backend: AwsLc,
    reminted: usize,
    error: PhantomData<fn() -> E>,
}

impl<'a, E, C, K, A, O, L> ClusterWorld<'a, E, C, K, A, O, L> {
    /// The world of a rotation run with `policy` on `cluster`; `outside`
    /// is `None` where there is nowhere to publish.
    pub fn new(
        cluster: &'a C,
        policy: &'a Policy,
        keys: K,
        api_servers: A,
        outside: Option<O>,
        lock: L,
    ) -> Self {
        ClusterWorld {
            cluster,
            policy,
            keys,
            api_servers,
            outside,
            lock,
            refresh_feed: None,
            backend: AwsLc::new(),
            reminted: 0,
            error: PhantomData,
        }
    }

    /// Observes the kubelets' token refreshes through `feed` in
    /// RefreshTokens of the `wait` policy ([`Observed::kubelet_refreshes`]).
    pub fn with_refresh_feed(mut self, feed: &'a dyn RefreshFeed) -> Self {
        self.refresh_feed = Some(feed);
        self
    }

    /// The legacy token Secrets re-minted so far, for logs and metrics.
    pub fn reminted(&self) -> usize {
        self.reminted
    }
}

impl<E, C, K, A, O, L> driver::World for ClusterWorld<'_, E, C, K, A, O, L>
where
    E: From<Error> + From<KeyError> + Send,
    C: UserCluster<E> + Sync,
    K: KeyStorage<E> + Send,
    A: ApiServers<E> + Send,
    O: Outside<E> + Send,
    L: Lock<E> + Send,
{
    type Error = E;

    async fn observe(&mut self, state: &RotationState) -> Result<Observed, E> {
        let keys = self.keys.public_keys().await?;
        // Issuer reviews: tokens signed with the key the cluster signs with.
        let signer = if state.observation().issuers_reviewed.is_empty() {
            None
        } else {
            let version = state.versions().private_key_version();
            let key = self.keys.private_key(version).await?;
            Some(self.backend.signing_key(&key)?)
        };
        let mut observed = self
            .cluster
            .observe(&keys, state, self.policy, signer.as_deref())
            .await?;
        observed.stored_keys = keys.keys().copied().collect();
        // The wait policy's refreshes, as the audit stream showed them.
        if let Some(feed) = self.refresh_feed
            && state.step() == Step::RefreshTokens
            && self.policy.bound_token_refresh.waits()
            && let Some(since) = state.step_started_at()
        {
            let requests = feed.token_requests();
            let refreshes = self
                .cluster
                .kubelet_refreshes(
                    &state.refresh_marker(),
                    since,
                    self.policy.clock_skew,
                    &requests,
                )
                .await?;
            observed.kubelet_refreshes = Some(refreshes);
        }
        if state.observation().publications
            && let Some(outside) = &mut self.outside
        {
            observed.publications = outside.observe(&keys, state.issuer_flags()).await?;
        }
        Ok(observed)
    }

    async fn findings(&mut self, before: &RotationState, plan: &Plan) -> Result<Findings, E> {
        // Entering RefreshTokens of a key rotation: who holds a legacy
        // token outside the cluster, which the re-mint will cut off.
        let entering = plan.next.step() == Step::RefreshTokens
            && before.step() != Step::RefreshTokens
            && plan.next.changes_key();
        let outside_legacy_tokens = if entering {
            Some(self.cluster.legacy_tokens_held_outside().await?)
        } else {
            None
        };
        Ok(Findings {
            outside_legacy_tokens,
        })
    }

    async fn apply(&mut self, state: &RotationState, effect: &Effect) -> Result<(), E> {
        match effect {
            Effect::HoldOperationLock => self.lock.hold().await,
            Effect::ReleaseOperationLock => self.lock.release().await,
            Effect::GenerateKey { version, spec } => {
                if !self.keys.contains(*version).await? {
                    let key = self.backend.generate(*spec)?;
                    self.keys.create(*version, &key).await?;
                }
                Ok(())
            }
            Effect::PublishPublicKeys {
                public,
                signing,
                issuers,
            }
            | Effect::SwitchSigner {
                signing,
                public,
                issuers,
            } => {
                let to = RollOut {
                    signing: *signing,
                    public,
                    issuers: issuers.as_deref(),
                    changes_key: state.changes_key(),
                };
                self.api_servers.roll_out(to).await
            }
            Effect::RefreshLegacyTokens { version } => {
                let key = self.keys.private_key(*version).await?;
                let signer = self.backend.signing_key(&key)?;
                self.reminted += self.cluster.refresh_legacy_tokens(signer.into()).await?;
                Ok(())
            }
            Effect::RefreshBoundTokens {
                policy,
                since,
                marker,
                ..
            } => {
                self.cluster
                    .refresh_bound_tokens(marker, policy, *since)
                    .await
            }
            Effect::PublishOutside {
                public,
                issuers,
                withdrawn,
            } => {
                let Some(outside) = &mut self.outside else {
                    return Ok(());
                };
                let stored = self.keys.public_keys().await?;
                let keys: Vec<PublicKey> = public
                    .iter()
                    .filter_map(|version| stored.get(version).cloned())
                    .collect();
                outside.publish(&keys, issuers.clone(), withdrawn).await
            }
            Effect::RetireKey { version } => self.keys.retire(*version, state.key_version()).await,
        }
    }
}
