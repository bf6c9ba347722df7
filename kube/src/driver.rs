//! The one rotation driver: observe the world, let the core [`step`], save
//! the next state, then apply its effects.
//!
//! Both shells drive a rotation through [`pass`]: the controller once per
//! reconcile (the controller runtime requeues it), the kubeadm command in
//! its loop until the rotation completes or must wait for another run. What
//! differs between them is behind two small traits: where the state is kept
//! ([`StateStore`]: the rotation resource's status; the kubeadm state file)
//! and how the world is seen and changed ([`World`]: key Secrets and the
//! roll-out; key files and static pod manifests).
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

    /// Records `plan.next` and what it waits for, `before` being the state
    /// the plan was made from. Returns once the record is durable: effects
    /// are applied only after it.
    fn save(
        &mut self,
        before: &RotationState,
        plan: &Plan,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The cluster a rotation changes, and the keys it stores.
pub trait World {
    type Error;

    /// What the world looks like for a rotation in `state`: the stored key
    /// versions and what each API server does.
    fn observe(
        &mut self,
        state: &RotationState,
    ) -> impl Future<Output = Result<Observed, Self::Error>> + Send;

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
/// next state, apply its effects in order.
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
    store.save(state, &plan).await.map_err(PassError::Save)?;
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
    })
}

#[cfg(test)]
mod tests {
    //! The driver over in-memory implementations of its traits: a store that
    //! can fail to save, and a model cluster of three API servers that take a
    //! new key set and issuer list one instance per observation (a
    //! roll-out), whose applies can fail. A failure is a crash: the next pass
    //! starts from what the store holds. Key rotations, issuer rotations and
    //! both at once are driven through every crash point.

    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use ksa_core::issuer::Issuer;
    use ksa_core::rotation::{ApiServerView, IssuerChange, StartRequest, Step};

    #[derive(Debug, PartialEq)]
    struct Crash;

    #[derive(Default)]
    struct MemoryStore {
        saved: Vec<RotationState>,
        /// Fail the save with this index.
        fail_at: Option<usize>,
        calls: usize,
    }

    impl StateStore for MemoryStore {
        type Error = Crash;

        async fn save(&mut self, _before: &RotationState, plan: &Plan) -> Result<(), Crash> {
            self.calls += 1;
            if self.fail_at == Some(self.calls - 1) {
                return Err(Crash);
            }
            // The driver saves before it applies: no effect of this plan
            // may be in the world yet (checked by the world).
            self.saved.push(plan.next.clone());
            Ok(())
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

    struct ModelWorld {
        keys: BTreeSet<KeyVersion>,
        servers: Vec<Server>,
        desired: Server,
        tokens: BTreeSet<Token>,
        /// What tokens are refreshed to, once asked.
        refresh_to: Option<Token>,
        next_to_roll: usize,
        /// Fail the apply with this index.
        fail_at: Option<usize>,
        calls: usize,
        /// States seen by `apply`, to check they had been saved first.
        applied_in: Vec<RotationState>,
    }

    impl ModelWorld {
        fn new(servers: usize) -> ModelWorld {
            let one = KeyVersion::FIRST;
            let server = Server {
                accepts: [one].into(),
                signs: one,
                issuers: vec![a()],
            };
            ModelWorld {
                keys: [one].into(),
                servers: vec![server.clone(); servers],
                desired: server,
                tokens: [(one, a())].into(),
                refresh_to: None,
                next_to_roll: 0,
                fail_at: None,
                calls: 0,
                applied_in: Vec::new(),
            }
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

    impl World for ModelWorld {
        type Error = Crash;

        async fn observe(&mut self, state: &RotationState) -> Result<Observed, Crash> {
            // One instance restarts with the desired flags per look.
            let index = self.next_to_roll % self.servers.len();
            self.servers[index] = self.desired.clone();
            self.next_to_roll += 1;
            // Every server hands out tokens; a refresh replaces them.
            self.tokens
                .extend(self.servers.iter().map(|s| (s.signs, s.issuers[0].clone())));
            if let Some(to) = &self.refresh_to {
                self.tokens.retain(|token| token == to);
            }
            self.check_nobody_logged_out();
            let target = self.refresh_to.clone();
            let reviewed = state.observation().issuers_reviewed;
            Ok(Observed {
                stored_keys: self.keys.clone(),
                api_servers: self
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| ApiServerView {
                        name: format!("apiserver-{i}"),
                        accepts: s.accepts.intersection(&self.keys).copied().collect(),
                        signs_with: Some(s.signs),
                        issuer_reviews: reviewed
                            .iter()
                            .map(|iss| (iss.clone(), s.issuers.contains(iss)))
                            .collect(),
                        issues: Some(s.issuers[0].clone()),
                        discovery_issuer: Some(s.issuers[0].clone()),
                    })
                    .collect(),
                stale_legacy_tokens: Some(0),
                stale_bound_tokens: Some(
                    self.tokens
                        .iter()
                        .filter(|token| Some(*token) != target.as_ref())
                        .count() as u64,
                ),
                ..Observed::default()
            })
        }

        async fn apply(&mut self, state: &RotationState, effect: &Effect) -> Result<(), Crash> {
            self.calls += 1;
            if self.fail_at == Some(self.calls - 1) {
                return Err(Crash);
            }
            self.applied_in.push(state.clone());
            match effect {
                Effect::HoldOperationLock | Effect::ReleaseOperationLock => {}
                Effect::GenerateKey { version, .. } => {
                    self.keys.insert(*version);
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
                    self.desired = Server {
                        accepts: public.iter().copied().collect(),
                        signs: *signing,
                        issuers: issuers
                            .clone()
                            .unwrap_or_else(|| self.desired.issuers.clone()),
                    };
                }
                Effect::RefreshLegacyTokens { .. } => {}
                Effect::RefreshBoundTokens { version, .. } => {
                    let iss = state.issuer().map_or_else(a, |change| change.to.clone());
                    self.refresh_to = Some((*version, iss));
                }
                Effect::RetireKey { version } => {
                    self.keys.remove(version);
                }
                Effect::PublishOutside { .. } => {}
            }
            Ok(())
        }
    }

    fn policy() -> Policy {
        Policy {
            trust_lead_time: Duration::ZERO,
            ..Policy::default()
        }
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
    async fn drive(store: &mut MemoryStore, world: &mut ModelWorld) -> usize {
        drive_change(store, world, Change::Key).await
    }

    async fn drive_change(
        store: &mut MemoryStore,
        world: &mut ModelWorld,
        change: Change,
    ) -> usize {
        let policy = policy();
        let mut crashes = 0;
        let mut now = Timestamp::UNIX_EPOCH;
        for _ in 0..200 {
            let state = store
                .saved
                .last()
                .cloned()
                .unwrap_or_else(|| started_with(change));
            if state.is_completed() {
                return crashes;
            }
            now += Duration::from_secs(1);
            match pass(store, world, &state, &policy, now).await {
                Ok(_) => {}
                Err(PassError::Save(Crash) | PassError::Apply { error: Crash, .. }) => {
                    crashes += 1;
                }
                Err(other) => panic!("unexpected: {other:?}"),
            }
        }
        panic!("the rotation did not complete: {:?}", store.saved.last());
    }

    #[tokio::test]
    async fn a_rotation_completes_on_three_servers_rolled_one_at_a_time() {
        let mut store = MemoryStore::default();
        let mut world = ModelWorld::new(3);
        assert_eq!(drive(&mut store, &mut world).await, 0);
        let steps: Vec<Step> = store.saved.iter().map(RotationState::step).collect();
        let mut visited = steps.clone();
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
        // Effects are applied only in states the store had saved.
        for state in &world.applied_in {
            assert!(store.saved.contains(state), "applied in unsaved {state:?}");
        }
        assert_eq!(world.keys, [KeyVersion::new(2)].into());
        world.check_nobody_logged_out();
    }

    #[tokio::test]
    async fn a_crash_between_save_and_apply_is_resumed_from_the_saved_state() {
        // Every possible crash point: each apply of a clean run, and each
        // save, of a key, an issuer and a combined rotation. The rotation
        // still completes, the stored steps never go backwards, and no
        // token is rejected on the way.
        for change in CHANGES {
            let mut clean = (MemoryStore::default(), ModelWorld::new(3));
            drive_change(&mut clean.0, &mut clean.1, change).await;
            let (applies, saves) = (clean.1.calls, clean.0.calls);
            for fail_at in 0..applies {
                let mut store = MemoryStore::default();
                let mut world = ModelWorld::new(3);
                world.fail_at = Some(fail_at);
                let crashes = drive_change(&mut store, &mut world, change).await;
                assert_eq!(crashes, 1, "{change:?}: apply {fail_at}");
                assert_monotone(&store.saved);
                world.check_nobody_logged_out();
            }
            for fail_at in 0..saves {
                let mut store = MemoryStore {
                    fail_at: Some(fail_at),
                    ..MemoryStore::default()
                };
                let mut world = ModelWorld::new(3);
                let crashes = drive_change(&mut store, &mut world, change).await;
                assert_eq!(crashes, 1, "{change:?}: save {fail_at}");
                assert_monotone(&store.saved);
                for state in &world.applied_in {
                    assert!(store.saved.contains(state), "applied in unsaved {state:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn an_issuer_rotation_ends_with_every_server_on_the_new_issuer_alone() {
        for change in [Change::Issuer, Change::Both] {
            let mut store = MemoryStore::default();
            let mut world = ModelWorld::new(3);
            assert_eq!(drive_change(&mut store, &mut world, change).await, 0);
            let mut visited: Vec<Step> = store.saved.iter().map(RotationState::step).collect();
            visited.dedup();
            let mut expected = vec![Step::Trust, Step::Sign, Step::RefreshTokens, Step::Retire];
            if let Change::Both = change {
                expected.insert(0, Step::Generate);
            }
            expected.push(Step::Completed);
            assert_eq!(visited, expected, "{change:?}");
            for server in &world.servers {
                assert_eq!(server.issuers, [b()], "{change:?}");
            }
            // One refresh: every token carries the new issuer.
            assert!(world.tokens.iter().all(|(_, iss)| *iss == b()));
        }
    }

    #[tokio::test]
    async fn a_failed_save_applies_nothing() {
        let mut store = MemoryStore {
            fail_at: Some(0),
            ..MemoryStore::default()
        };
        let mut world = ModelWorld::new(1);
        let result = pass(
            &mut store,
            &mut world,
            &started(),
            &policy(),
            Timestamp::UNIX_EPOCH,
        )
        .await;
        assert!(matches!(result, Err(PassError::Save(Crash))));
        assert_eq!(world.calls, 0, "an effect was applied before the save");
        assert!(store.saved.is_empty());
    }

    #[tokio::test]
    async fn a_missing_key_stops_the_pass_before_anything_changes() {
        let mut store = MemoryStore::default();
        let mut world = ModelWorld::new(1);
        // At Trust the new key must be stored; here it is not.
        let trust = RotationState::at(KeyVersion::new(2), Step::Trust).expect("a state");
        let result = pass(
            &mut store,
            &mut world,
            &trust,
            &policy(),
            Timestamp::UNIX_EPOCH,
        )
        .await;
        assert!(matches!(result, Err(PassError::MissingKey(v)) if v == KeyVersion::new(2)));
        assert_eq!(store.calls, 0);
        assert_eq!(world.calls, 0);
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
