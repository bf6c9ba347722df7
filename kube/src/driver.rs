//! The one rotation driver: observe the world, let the core [`step`], save
//! the next state, then apply its effects.
//!
//! Both shells drive a rotation through [`pass`]: the controller once per
//! reconcile (the controller runtime requeues it), the kubeadm command in
//! its loop until the rotation completes or must wait for another run. What
//! differs between them is where the state is kept ([`StateStore`]: the
//! rotation resource's status; the kubeadm state file) and the ports of
//! the one [`World`] both run in, [`crate::world::ClusterWorld`] (key
//! Secrets and the roll-out; key files and static pod manifests).
//!
//! Architecture invariant: the next state is saved before any of its
//! effects is applied, here and nowhere else. After a crash between the two,
//! the stored state is never behind the world, and every effect is
//! idempotent, so the next pass applies them again.
//!
//! [`step`]: ksa_core::rotation::step

use std::future::Future;

use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::rotation::{self, Effect, Observed, Plan, Policy, RotationState, StepError};

/// Where a rotation's state is kept.
pub trait StateStore {
    type Error;

    /// Records `plan.next`, what it waits for and what the world was found
    /// to hold, `before` being the state the plan was made from. Returns
    /// once the record is durable: effects are applied only after it.
    fn save(
        &mut self,
        before: &RotationState,
        plan: &Plan,
        findings: &Findings,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What the world was found to hold once the step was decided, recorded
/// with the next state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// On entering RefreshTokens of a key rotation: the legacy token
    /// Secrets used lately that no pod mounts, whose holders outside the
    /// cluster the re-mint cuts off. `None` on any other pass (what was
    /// recorded stays).
    pub outside_legacy_tokens: Option<Vec<String>>,
}

/// The cluster a rotation changes, and the keys it stores. Implemented
/// once, by [`crate::world::ClusterWorld`].
pub trait World {
    type Error;

    /// What the world looks like for a rotation in `state`: the stored key
    /// versions and what each API server does.
    fn observe(
        &mut self,
        state: &RotationState,
    ) -> impl Future<Output = Result<Observed, Self::Error>> + Send;

    /// What the state store records with `plan`, made from `before`.
    fn findings(
        &mut self,
        before: &RotationState,
        plan: &Plan,
    ) -> impl Future<Output = Result<Findings, Self::Error>> + Send;

    /// Applies one effect of a plan whose next state is `state`. Applying an
    /// effect twice must be the same as applying it once.
    fn apply(
        &mut self,
        state: &RotationState,
        effect: &Effect,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What one pass did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    /// The state the pass started from.
    pub before: RotationState,
    /// The core's plan: its next state was saved and its effects applied.
    pub plan: Plan,
    /// What was recorded with it.
    pub findings: Findings,
}

impl Pass {
    /// Whether the pass moved the rotation to another step.
    pub fn advanced(&self) -> bool {
        self.plan.next.step() != self.before.step()
    }
}

/// Why a pass stopped. Where it stopped says what was changed: nothing
/// before [`PassError::Save`] succeeded, the saved state and some effects
/// after.
#[derive(Debug, thiserror::Error)]
pub enum PassError<E> {
    #[error("observing the cluster: {0}")]
    Observe(#[source] E),
    /// A key the step needs is not in the key store (deleted, or the store
    /// restored from an older backup). Nothing was changed.
    #[error("key version {0} is not in the key store")]
    MissingKey(KeyVersion),
    /// The core refused the transition (a bug). Nothing was changed.
    #[error(transparent)]
    Step(StepError),
    #[error("saving the rotation state: {0}")]
    Save(#[source] E),
    /// The state was saved; `effect` and the ones after it were not applied.
    #[error("applying {effect:?}: {error}")]
    Apply {
        effect: Effect,
        #[source]
        error: E,
    },
}

/// One pass of a rotation in `state`: observe, [`rotation::step`], save the
/// next state with what the world was found to hold, apply its effects in
/// order.
pub async fn pass<S, W, E>(
    store: &mut S,
    world: &mut W,
    state: &RotationState,
    policy: &Policy,
    now: Timestamp,
) -> Result<Pass, PassError<E>>
where
    S: StateStore<Error = E>,
    W: World<Error = E>,
{
    let observed = world.observe(state).await.map_err(PassError::Observe)?;
    if !state.is_completed()
        && let Some(missing) = state
            .required_keys()
            .into_iter()
            .find(|version| !observed.stored_keys.contains(version))
    {
        return Err(PassError::MissingKey(missing));
    }
    let plan = rotation::step(state, &observed, now, policy).map_err(PassError::Step)?;
    let findings = world
        .findings(state, &plan)
        .await
        .map_err(PassError::Observe)?;
    store
        .save(state, &plan, &findings)
        .await
        .map_err(PassError::Save)?;
    for effect in &plan.effects {
        world
            .apply(&plan.next, effect)
            .await
            .map_err(|error| PassError::Apply {
                effect: effect.clone(),
                error,
            })?;
    }
    Ok(Pass {
        before: state.clone(),
        plan,
        findings,
    })
}

#[cfg(test)]
mod tests {
    //! The driver and the one world's dispatch ([`ClusterWorld`]) over
    //! in-memory ports: a store that can fail to save, and a model cluster
    //! of three API servers that take a new key set and issuer list one
    //! instance per observation (a roll-out), whose every write can fail. A
    //! failure is a crash: the next pass starts from what the store holds.
    //! Key rotations, issuer rotations and both at once are driven through
    //! every crash point.

    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    use super::*;
    use crate::world::{ApiServers, ClusterWorld, KeyStorage, Lock, Outside, RollOut, UserCluster};
    use ksa_core::crypto::{AwsLc, SigningBackend as _, SigningKey};
    use ksa_core::issuer::Issuer;
    use ksa_core::key::{KeyError, KeySpec, PrivateKey, PublicKey};
    use ksa_core::rotation::{
        ApiServerView, BoundTokenRefresh, IssuerChange, PublicationView, StartRequest, Step,
    };

    #[derive(Debug, PartialEq)]
    struct Crash;

    // The model's ports fail only with `Crash`; anything else is a bug of
    // the test.
    impl From<crate::Error> for Crash {
        fn from(error: crate::Error) -> Crash {
            panic!("unexpected error: {error}")
        }
    }

    impl From<KeyError> for Crash {
        fn from(error: KeyError) -> Crash {
            panic!("unexpected key error: {error}")
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Server {
        accepts: BTreeSet<KeyVersion>,
        signs: KeyVersion,
        /// `--service-account-issuer`, the first signing.
        issuers: Vec<Issuer>,
    }

    /// A token in circulation: the key that signed it and its `iss`.
    type Token = (KeyVersion, Issuer);

    fn issuer(text: &str) -> Issuer {
        Issuer::new(text).expect("an issuer")
    }

    fn a() -> Issuer {
        issuer("https://a.example")
    }

    fn b() -> Issuer {
        issuer("https://b.example")
    }

    fn new_key() -> PrivateKey {
        AwsLc::new().generate(KeySpec::EcP256).expect("a key")
    }

    /// The model cluster every port of the test reads and writes.
    struct Model {
        keys: BTreeMap<KeyVersion, PrivateKey>,
        servers: Vec<Server>,
        desired: Server,
        tokens: BTreeSet<Token>,
        /// What tokens are refreshed to, once asked.
        refresh_to: Option<Token>,
        next_to_roll: usize,
        /// Whether this pass saved its state (set by the store, cleared by
        /// each observation): no write may come before.
        saved: bool,
        /// Fail the write with this index.
        fail_at: Option<usize>,
        writes: usize,
        /// The states saved, in order.
        stored: Vec<RotationState>,
        /// Fail the save with this index.
        fail_save_at: Option<usize>,
        saves: usize,
    }

    impl Model {
        fn new(servers: usize) -> Model {
            let one = KeyVersion::FIRST;
            let server = Server {
                accepts: [one].into(),
                signs: one,
                issuers: vec![a()],
            };
            Model {
                keys: [(one, new_key())].into(),
                servers: vec![server.clone(); servers],
                desired: server,
                tokens: [(one, a())].into(),
                refresh_to: None,
                next_to_roll: 0,
                saved: false,
                fail_at: None,
                writes: 0,
                stored: Vec::new(),
                fail_save_at: None,
                saves: 0,
            }
        }

        /// One write to the world: fails when it is the one to, and never
        /// comes before the state of its pass was saved.
        fn write(&mut self) -> Result<(), Crash> {
            assert!(self.saved, "a write before the state was saved");
            self.writes += 1;
            if self.fail_at == Some(self.writes - 1) {
                return Err(Crash);
            }
            Ok(())
        }

        /// Every token in circulation verifies on every server.
        fn check_nobody_logged_out(&self) {
            for (key, iss) in &self.tokens {
                for (i, server) in self.servers.iter().enumerate() {
                    assert!(
                        server.accepts.contains(key) && server.issuers.contains(iss),
                        "server {i} rejects a token of key {key} and issuer {iss}: {:?}",
                        self.servers
                    );
                }
            }
        }
    }

    #[derive(Clone)]
    struct Shared(Arc<Mutex<Model>>);

    impl Shared {
        fn new(model: Model) -> Shared {
            Shared(Arc::new(Mutex::new(model)))
        }

        fn get(&self) -> MutexGuard<'_, Model> {
            self.0.lock().expect("the model")
        }
    }

    impl StateStore for Shared {
        type Error = Crash;

        async fn save(
            &mut self,
            _before: &RotationState,
            plan: &Plan,
            _findings: &Findings,
        ) -> Result<(), Crash> {
            let mut model = self.get();
            model.saves += 1;
            if model.fail_save_at == Some(model.saves - 1) {
                return Err(Crash);
            }
            model.stored.push(plan.next.clone());
            model.saved = true;
            Ok(())
        }
    }

    impl KeyStorage<Crash> for Shared {
        async fn public_keys(&self) -> Result<BTreeMap<KeyVersion, PublicKey>, Crash> {
            Ok(self
                .get()
                .keys
                .iter()
                .map(|(version, key)| (*version, key.public_key().clone()))
                .collect())
        }

        async fn private_key(&self, version: KeyVersion) -> Result<PrivateKey, Crash> {
            Ok(self.get().keys.get(&version).expect("a stored key").clone())
        }

        async fn contains(&self, version: KeyVersion) -> Result<bool, Crash> {
            Ok(self.get().keys.contains_key(&version))
        }

        async fn create(&mut self, version: KeyVersion, key: &PrivateKey) -> Result<(), Crash> {
            let mut model = self.get();
            model.write()?;
            model.keys.insert(version, key.clone());
            Ok(())
        }

        async fn retire(&mut self, version: KeyVersion, current: KeyVersion) -> Result<(), Crash> {
            let mut model = self.get();
            model.write()?;
            assert!(
                model.keys.contains_key(&current),
                "retired without {current}"
            );
            model.keys.remove(&version);
            Ok(())
        }
    }

    impl ApiServers<Crash> for Shared {
        async fn roll_out(&mut self, to: RollOut<'_>) -> Result<(), Crash> {
            let mut model = self.get();
            model.write()?;
            model.desired = Server {
                accepts: to.public.iter().copied().collect(),
                signs: to.signing,
                issuers: to
                    .issuers
                    .map_or_else(|| model.desired.issuers.clone(), <[Issuer]>::to_vec),
            };
            Ok(())
        }
    }

    /// Outside verifiers: written to, never read (the model's outsiders
    /// refetch nothing).
    impl Outside<Crash> for Shared {
        async fn observe(
            &mut self,
            _keys: &BTreeMap<KeyVersion, PublicKey>,
            _issuers: Option<Vec<Issuer>>,
        ) -> Result<Vec<PublicationView>, Crash> {
            Ok(Vec::new())
        }

        async fn publish(
            &mut self,
            _keys: &[PublicKey],
            _issuers: Option<Vec<Issuer>>,
            _withdrawn: &[Issuer],
        ) -> Result<(), Crash> {
            self.get().write()
        }
    }

    impl Lock<Crash> for Shared {
        async fn hold(&mut self) -> Result<(), Crash> {
            self.get().write()
        }

        async fn release(&mut self) -> Result<(), Crash> {
            self.get().write()
        }
    }

    impl UserCluster<Crash> for Shared {
        async fn observe(
            &self,
            keys: &BTreeMap<KeyVersion, PublicKey>,
            state: &RotationState,
            _policy: &Policy,
            _signer: Option<&dyn SigningKey>,
        ) -> Result<Observed, Crash> {
            let mut model = self.get();
            model.saved = false;
            // One instance restarts with the desired flags per look.
            let index = model.next_to_roll % model.servers.len();
            model.servers[index] = model.desired.clone();
            model.next_to_roll += 1;
            // Every server hands out tokens; a refresh replaces them.
            let handed: Vec<Token> = model
                .servers
                .iter()
                .map(|s| (s.signs, s.issuers[0].clone()))
                .collect();
            model.tokens.extend(handed);
            if let Some(to) = model.refresh_to.clone() {
                model.tokens.retain(|token| *token == to);
            }
            model.check_nobody_logged_out();
            let target = model.refresh_to.clone();
            let reviewed = state.observation().issuers_reviewed;
            let stored: BTreeSet<KeyVersion> = keys.keys().copied().collect();
            Ok(Observed {
                api_servers: model
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| ApiServerView {
                        name: format!("apiserver-{i}"),
                        accepts: s.accepts.intersection(&stored).copied().collect(),
                        signs_with: Some(s.signs),
                        issuer_reviews: reviewed
                            .iter()
                            .map(|iss| (iss.clone(), s.issuers.contains(iss)))
                            .collect(),
                        issues: Some(s.issuers[0].clone()),
                        discovery_issuer: Some(s.issuers[0].clone()),
                        unanswered: None,
                    })
                    .collect(),
                stale_legacy_tokens: Some(0),
                stale_bound_tokens: Some(
                    model
                        .tokens
                        .iter()
                        .filter(|token| Some(*token) != target.as_ref())
                        .count() as u64,
                ),
                ..Observed::default()
            })
        }

        async fn refresh_legacy_tokens(
            &self,
            _signer: Arc<dyn SigningKey>,
        ) -> Result<usize, Crash> {
            self.get().write()?;
            Ok(0)
        }

        async fn refresh_bound_tokens(
            &self,
            _marker: &str,
            _policy: &BoundTokenRefresh,
            _since: Timestamp,
        ) -> Result<(), Crash> {
            let mut model = self.get();
            model.write()?;
            // Every holder gets a token of what the servers sign with now.
            let desired = &model.desired;
            model.refresh_to = Some((desired.signs, desired.issuers[0].clone()));
            Ok(())
        }

        async fn legacy_tokens_held_outside(&self) -> Result<Vec<String>, Crash> {
            Ok(Vec::new())
        }

        async fn kubelet_refreshes(
            &self,
            _marker: &str,
            since: Timestamp,
            _skew: Duration,
            requests: &BTreeMap<String, Timestamp>,
        ) -> Result<ksa_core::rotation::refresh::KubeletRefreshes, Crash> {
            // One pod from before the step, uid `pod-uid`: seen once the
            // feed shows a request for it since the step began.
            let seen = requests.get("pod-uid").is_some_and(|at| *at >= since);
            Ok(ksa_core::rotation::refresh::KubeletRefreshes {
                pods: 1,
                seen: u64::from(seen),
                unseen: if seen {
                    Vec::new()
                } else {
                    vec!["apps/pod".to_owned()]
                },
            })
        }
    }

    fn policy() -> Policy {
        Policy {
            trust_lead_time: Duration::ZERO,
            key_spec: KeySpec::EcP256,
            ..Policy::default()
        }
    }

    /// One pass over the model, through the production world.
    async fn pass_on(
        model: &Shared,
        state: &RotationState,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<Pass, PassError<Crash>> {
        let mut world = ClusterWorld::new(
            model,
            policy,
            model.clone(),
            model.clone(),
            Some(model.clone()),
            model.clone(),
        );
        pass(&mut model.clone(), &mut world, state, policy, now).await
    }

    /// What a rotation changes.
    #[derive(Clone, Copy, Debug)]
    enum Change {
        Key,
        Issuer,
        Both,
    }

    const CHANGES: [Change; 3] = [Change::Key, Change::Issuer, Change::Both];

    fn started_with(change: Change) -> RotationState {
        let (target, issuer) = match change {
            Change::Key => (2, None),
            Change::Issuer => (1, Some(b())),
            Change::Both => (2, Some(b())),
        };
        let request = StartRequest {
            target: KeyVersion::new(target),
            issuer: issuer.map(|to| IssuerChange { from: a(), to }),
            advanced_cluster: false,
            lock: rotation::OperationLock::Free,
        };
        rotation::start(
            &RotationState::settled(KeyVersion::FIRST),
            &request,
            Timestamp::UNIX_EPOCH,
        )
        .expect("a settled cluster starts")
    }

    fn started() -> RotationState {
        started_with(Change::Key)
    }

    /// Drives passes until completed, restarting from the stored state
    /// after every failure. Returns the number of failures met.
    async fn drive(model: &Shared, change: Change) -> usize {
        let policy = policy();
        let mut crashes = 0;
        let mut now = Timestamp::UNIX_EPOCH;
        for _ in 0..200 {
            let stored = model.get().stored.last().cloned();
            let state = stored.unwrap_or_else(|| started_with(change));
            if state.is_completed() {
                return crashes;
            }
            now += Duration::from_secs(1);
            match pass_on(model, &state, &policy, now).await {
                Ok(_) => {}
                Err(PassError::Save(Crash) | PassError::Apply { error: Crash, .. }) => {
                    crashes += 1;
                }
                Err(other) => panic!("unexpected: {other:?}"),
            }
        }
        panic!(
            "the rotation did not complete: {:?}",
            model.get().stored.last()
        );
    }

    /// The audit stream's records, as the controller's feed gives them.
    struct Heard(std::sync::Mutex<BTreeMap<String, Timestamp>>);

    impl crate::world::RefreshFeed for Heard {
        fn token_requests(&self) -> BTreeMap<String, Timestamp> {
            self.0.lock().expect("not poisoned").clone()
        }
    }

    #[tokio::test]
    async fn with_a_refresh_feed_the_wait_policy_ends_refresh_tokens_on_the_observation() {
        let policy = Policy {
            bound_token_refresh: BoundTokenRefresh::Wait {
                max_token_seconds: 0,
            },
            ..policy()
        };
        let model = Shared::new(Model::new(1));
        let feed = Heard(std::sync::Mutex::new(BTreeMap::new()));
        let mut now = Timestamp::UNIX_EPOCH;
        let mut refresh_passes = 0;
        for _ in 0..100 {
            let state = model.get().stored.last().cloned().unwrap_or_else(started);
            if state.is_completed() {
                break;
            }
            now += Duration::from_secs(1);
            if state.step() == Step::RefreshTokens {
                refresh_passes += 1;
                // Nothing heard for a few passes: it waits (the window, of
                // unknown lifetimes, never closes here); then the
                // kubelet's request arrives.
                if refresh_passes == 5 {
                    // The kubelet refreshes its pod's token (what the
                    // model's holders hold), and the API server's audit
                    // stream says so.
                    {
                        let mut kubelet = model.get();
                        let desired = kubelet.desired.clone();
                        kubelet.refresh_to = Some((desired.signs, desired.issuers[0].clone()));
                    }
                    feed.0
                        .lock()
                        .expect("not poisoned")
                        .insert("pod-uid".into(), now);
                }
            }
            let mut world = ClusterWorld::new(
                &model,
                &policy,
                model.clone(),
                model.clone(),
                Some(model.clone()),
                model.clone(),
            )
            .with_refresh_feed(&feed);
            pass(&mut model.clone(), &mut world, &state, &policy, now)
                .await
                .expect("a pass");
        }
        let stored = model.get().stored.clone();
        assert_eq!(
            stored.last().map(RotationState::step),
            Some(Step::Completed)
        );
        assert_eq!(refresh_passes, 5, "ended on the pass after it was heard");

        // Without the feed it never ends on its own within as many passes.
        let model = Shared::new(Model::new(1));
        let mut now = Timestamp::UNIX_EPOCH;
        for _ in 0..100 {
            let state = model.get().stored.last().cloned().unwrap_or_else(started);
            now += Duration::from_secs(1);
            pass_on(&model, &state, &policy, now).await.expect("a pass");
        }
        assert_eq!(
            model.get().stored.last().map(RotationState::step),
            Some(Step::RefreshTokens)
        );
    }

    #[tokio::test]
    async fn a_rotation_completes_on_three_servers_rolled_one_at_a_time() {
        let model = Shared::new(Model::new(3));
        assert_eq!(drive(&model, Change::Key).await, 0);
        let model = model.get();
        let mut visited: Vec<Step> = model.stored.iter().map(RotationState::step).collect();
        visited.dedup();
        assert_eq!(
            visited,
            [
                Step::Generate,
                Step::Trust,
                Step::Sign,
                Step::RefreshTokens,
                Step::Retire,
                Step::Completed
            ]
        );
        assert_eq!(
            model.keys.keys().copied().collect::<Vec<_>>(),
            [KeyVersion::new(2)]
        );
        model.check_nobody_logged_out();
    }

    #[tokio::test]
    async fn a_crash_between_save_and_apply_is_resumed_from_the_saved_state() {
        // Every possible crash point: each write of a clean run, and each
        // save, of a key, an issuer and a combined rotation. The rotation
        // still completes, the stored steps never go backwards, and no
        // token is rejected on the way.
        for change in CHANGES {
            let clean = Shared::new(Model::new(3));
            drive(&clean, change).await;
            let (writes, saves) = {
                let clean = clean.get();
                (clean.writes, clean.saves)
            };
            for fail_at in 0..writes {
                let model = Shared::new(Model {
                    fail_at: Some(fail_at),
                    ..Model::new(3)
                });
                let crashes = drive(&model, change).await;
                assert_eq!(crashes, 1, "{change:?}: write {fail_at}");
                let model = model.get();
                assert_monotone(&model.stored);
                model.check_nobody_logged_out();
            }
            for fail_at in 0..saves {
                let model = Shared::new(Model {
                    fail_save_at: Some(fail_at),
                    ..Model::new(3)
                });
                let crashes = drive(&model, change).await;
                assert_eq!(crashes, 1, "{change:?}: save {fail_at}");
                assert_monotone(&model.get().stored);
            }
        }
    }

    #[tokio::test]
    async fn an_issuer_rotation_ends_with_every_server_on_the_new_issuer_alone() {
        for change in [Change::Issuer, Change::Both] {
            let model = Shared::new(Model::new(3));
            assert_eq!(drive(&model, change).await, 0);
            let model = model.get();
            let mut visited: Vec<Step> = model.stored.iter().map(RotationState::step).collect();
            visited.dedup();
            let mut expected = vec![Step::Trust, Step::Sign, Step::RefreshTokens, Step::Retire];
            if let Change::Both = change {
                expected.insert(0, Step::Generate);
            }
            expected.push(Step::Completed);
            assert_eq!(visited, expected, "{change:?}");
            for server in &model.servers {
                assert_eq!(server.issuers, [b()], "{change:?}");
            }
            // One refresh: every token carries the new issuer.
            assert!(model.tokens.iter().all(|(_, iss)| *iss == b()));
        }
    }

    #[tokio::test]
    async fn a_failed_save_applies_nothing() {
        let model = Shared::new(Model {
            fail_save_at: Some(0),
            ..Model::new(1)
        });
        let result = pass_on(&model, &started(), &policy(), Timestamp::UNIX_EPOCH).await;
        assert!(matches!(result, Err(PassError::Save(Crash))));
        let model = model.get();
        assert_eq!(model.writes, 0, "an effect was applied before the save");
        assert!(model.stored.is_empty());
    }

    #[tokio::test]
    async fn a_missing_key_stops_the_pass_before_anything_changes() {
        let model = Shared::new(Model::new(1));
        // At Trust the new key must be stored; here it is not.
        let trust = RotationState::at(KeyVersion::new(2), Step::Trust).expect("a state");
        let result = pass_on(&model, &trust, &policy(), Timestamp::UNIX_EPOCH).await;
        assert!(matches!(result, Err(PassError::MissingKey(v)) if v == KeyVersion::new(2)));
        let model = model.get();
        assert_eq!(model.saves, 0);
        assert_eq!(model.writes, 0);
    }

    fn assert_monotone(saved: &[RotationState]) {
        for pair in saved.windows(2) {
            assert!(
                pair[0].step() <= pair[1].step(),
                "the stored step went back: {pair:?}"
            );
        }
    }
}
