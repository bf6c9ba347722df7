//! Property tests of the rotation step function against a model of a cluster.
//!
//! The model has a key store, several API servers that pick up new key sets
//! one at a time (a roll-out), and tokens in circulation. Random event
//! sequences interleave reconciles, partial roll-outs, token issuance, partial
//! refreshes, crashes (state reloaded from its serialized form, some effects
//! lost), stale observations and concurrent start attempts. After every event:
//! - the stored numbers satisfy SPEC section 2 and never go backwards;
//! - every token in circulation verifies on every API server (nobody is
//!   logged out), but legacy tokens in Secrets a tenant made immutable,
//!   which the rotation waits for until its deadline (or the operator gives
//!   up on them) and names as cut off when it goes on without them;
//! - at most one rotation is in progress.
//!
//! And once the world is left to converge, every rotation completes.
//!
//! Rotations change the key, the issuer (SPEC section 10) or both: the model's
//! API servers also carry their `--service-account-issuer` list (the first
//! signs), and bound tokens their `iss`, which every server must accept too.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::issuer::Issuer;
use ksa_core::key::KeySpec;
use ksa_core::rotation::legacy::{self, LegacySecret, LegacyTokens};
use ksa_core::rotation::{
    self, ApiServerView, BoundTokenRefresh, Effect, HolderReason, Holders, IssuerChange,
    NamedHolder, Observed, OperationLock, Plan, Policy, PublicationView, Refusal, Requested,
    RotationState, StartRequest, Step, Wait,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Server {
    accepts: BTreeSet<KeyVersion>,
    signs: KeyVersion,
    /// `--service-account-issuer`, in order: the first signs, all are
    /// accepted.
    issuers: Vec<Issuer>,
}

/// The issuer the model cluster starts with, and the `n`th one after it.
fn issuer(n: u64) -> Issuer {
    Issuer::target(format!("https://issuer-{n}.example")).expect("an issuer")
}

/// A bound token: the key that signed it, when it was issued, its `iss`,
/// its lifetime in seconds (the kubelet refreshes it at 80%, at most 24 h).
type BoundToken = (KeyVersion, i64, Issuer, i64);

#[derive(Clone, Debug)]
struct World {
    store: BTreeSet<KeyVersion>,
    servers: Vec<Server>,
    /// The key set the servers are being rolled to: (public, signing,
    /// issuers).
    desired: (BTreeSet<KeyVersion>, KeyVersion, Vec<Issuer>),
    legacy_tokens: Vec<KeyVersion>,
    /// The first `frozen_legacy` legacy tokens are in immutable Secrets:
    /// no re-mint ever lands.
    frozen_legacy: usize,
    /// Legacy tokens a plan named cut off when RefreshTokens ended: their
    /// holders may be rejected from then on.
    cut_off: BTreeSet<usize>,
    bound_tokens: Vec<BoundToken>,
    /// Lifetimes of projected tokens, given in turn to the tokens pods get
    /// (600 s to 24 h): kubelets refresh each at 80% of its own, at most
    /// 24 h after it was issued.
    lifetimes: Vec<i64>,
    issued: usize,
    /// Versions the last effects asked tokens to be refreshed to.
    legacy_refresh_to: Option<KeyVersion>,
    bound_refresh_to: Option<KeyVersion>,
    lock_held: bool,
    /// Whether an outside verifier reads the keys from a location ksa
    /// publishes to (the property test; the walks keep time still).
    outside: bool,
    /// The keys the one outside location serves (`PublishOutside`).
    published: BTreeSet<KeyVersion>,
    /// What an outside verifier that honours caching holds: the keys it
    /// read and when; it reads again only once [`OUTSIDE_MAX_AGE`] is over.
    outside_cache: (BTreeSet<KeyVersion>, i64),
}

/// The `max-age` the outside location serves, in seconds.
const OUTSIDE_MAX_AGE: i64 = 60;
const OUTSIDE_URL: &str = "https://oidc.example/.well-known/openid-configuration";

/// The kid the model's key `version` has.
fn kid(version: KeyVersion) -> String {
    format!("kid-{version}")
}

impl World {
    fn new(servers: usize, lifetimes: Vec<i64>, now: i64) -> World {
        let one = KeyVersion::FIRST;
        World {
            store: [one].into(),
            servers: vec![
                Server {
                    accepts: [one].into(),
                    signs: one,
                    issuers: vec![issuer(0)],
                };
                servers
            ],
            desired: ([one].into(), one, vec![issuer(0)]),
            legacy_tokens: vec![one; 3],
            frozen_legacy: 0,
            cut_off: BTreeSet::new(),
            bound_tokens: (0..3)
                .map(|i| (one, now, issuer(0), lifetimes[i % lifetimes.len()]))
                .collect(),
            issued: 3,
            lifetimes,
            legacy_refresh_to: None,
            bound_refresh_to: None,
            lock_held: false,
            outside: false,
            published: [one].into(),
            outside_cache: ([one].into(), now),
        }
    }

    /// The outside verifier reads the location again if its cache expired.
    fn outside_catch_up(&mut self, now: i64) {
        if now >= self.outside_cache.1 + OUTSIDE_MAX_AGE {
            self.outside_cache = (self.published.clone(), now);
        }
    }

    /// Everything an observer could see of the world for a rotation in
    /// `state` (the harness masks what the step did not ask for).
    fn observe(&self, state: &RotationState, policy: &Policy) -> Observed {
        let target = state.key_version();
        let mut legacy = LegacyTokens::default();
        for (i, version) in self.legacy_tokens.iter().enumerate() {
            let secret = self.legacy_secret(i, *version);
            let verdict = legacy::assess(&secret, &kid(target), state.step_started_at(), policy);
            legacy.record(&secret, verdict);
        }
        let target_issuer = state.issuer().map_or_else(|| issuer(0), |c| c.to.clone());
        let reviewed: Vec<Issuer> = state
            .issuer()
            .map(|c| vec![c.from.clone(), c.to.clone()])
            .unwrap_or_default();
        Observed {
            stored_keys: self.store.clone(),
            api_servers: self
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| ApiServerView {
                    name: format!("apiserver-{i}"),
                    // Observers know a served key by its kid, and learn kids
                    // from the key store: a deleted key is unrecognisable.
                    accepts: s.accepts.intersection(&self.store).copied().collect(),
                    signs_with: Some(s.signs),
                    issuer_reviews: reviewed
                        .iter()
                        .map(|i| (i.clone(), s.issuers.contains(i)))
                        .collect(),
                    issues: Some(s.issuers[0].clone()),
                    discovery_issuer: Some(s.issuers[0].clone()),
                })
                .collect(),
            stale_legacy_tokens: Some(legacy.stale),
            blocked_legacy_tokens: legacy.blocked,
            given_up_legacy_tokens: legacy.given_up,
            stale_bound_tokens: Some(
                self.bound_tokens
                    .iter()
                    .filter(|(v, _, iss, _)| *v != target || *iss != target_issuer)
                    .count() as u64,
            ),
            longest_bound_token_seconds: self
                .bound_tokens
                .iter()
                .map(|(_, _, _, lifetime)| *lifetime as u64)
                .max()
                .or(Some(0)),
            publications: self
                .outside
                .then(|| PublicationView {
                    url: OUTSIDE_URL.to_owned(),
                    serves: Some(self.published.intersection(&self.store).copied().collect()),
                    max_age_seconds: OUTSIDE_MAX_AGE as u64,
                })
                .into_iter()
                .collect(),
            ..Observed::default()
        }
    }

    /// Legacy token `i`'s Secret as an observer sees it.
    fn legacy_secret(&self, i: usize, version: KeyVersion) -> LegacySecret {
        LegacySecret {
            namespace: "tenant".into(),
            name: format!("legacy-{i}"),
            token_kid: Some(kid(version)),
            immutable: i < self.frozen_legacy,
            token_written: None,
        }
    }

    fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::HoldOperationLock => self.lock_held = true,
            Effect::ReleaseOperationLock => self.lock_held = false,
            Effect::GenerateKey { version, .. } => {
                self.store.insert(*version);
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
                let issuers = issuers.clone().unwrap_or_else(|| self.desired.2.clone());
                self.desired = (public.iter().copied().collect(), *signing, issuers);
            }
            Effect::RefreshLegacyTokens { version } => self.legacy_refresh_to = Some(*version),
            Effect::RefreshBoundTokens { version, .. } => self.bound_refresh_to = Some(*version),
            Effect::RetireKey { version } => {
                self.store.remove(version);
            }
            Effect::PublishOutside { public, .. } => {
                self.published = public.iter().copied().collect();
            }
        }
    }

    /// One API server restarts with the desired key set.
    fn roll_out(&mut self, index: usize) {
        let server = index % self.servers.len();
        self.servers[server] = Server {
            accepts: self.desired.0.clone(),
            signs: self.desired.1,
            issuers: self.desired.2.clone(),
        };
    }

    /// A pod gets a fresh bound token from some API server.
    fn issue(&mut self, index: usize, now: i64) {
        let server = &self.servers[index % self.servers.len()];
        let lifetime = self.lifetimes[self.issued % self.lifetimes.len()];
        self.issued += 1;
        self.bound_tokens
            .push((server.signs, now, server.issuers[0].clone(), lifetime));
    }

    /// Kubelets refresh every projected token at 80% of its lifetime, from
    /// some API server.
    fn kubelets_refresh(&mut self, now: i64) {
        let (signs, iss) = (self.servers[0].signs, self.servers[0].issuers[0].clone());
        for token in &mut self.bound_tokens {
            let due = (token.3 * 8 / 10).min(24 * 3600);
            if now >= token.1 + due {
                *token = (signs, now, iss.clone(), token.3);
            }
        }
    }

    /// Part of the refresh work happens: one legacy token re-minted, one
    /// workload restarted (its new token comes from some API server).
    fn refresh_some(&mut self, index: usize) {
        let frozen = self.frozen_legacy;
        if let Some(to) = self.legacy_refresh_to
            && let Some((_, token)) = self
                .legacy_tokens
                .iter_mut()
                .enumerate()
                .find(|(i, v)| *i >= frozen && **v != to)
        {
            *token = to;
        }
        if self.bound_refresh_to.is_some() {
            let server = &self.servers[index % self.servers.len()];
            let (signs, iss) = (server.signs, &server.issuers[0]);
            if let Some(token) = self
                .bound_tokens
                .iter_mut()
                .find(|(v, _, i, _)| *v != signs || i != iss)
            {
                token.0 = signs;
                token.2 = iss.clone();
            }
        }
    }

    fn check_nobody_logged_out(&self) -> Result<(), String> {
        for (_, _, iss, _) in &self.bound_tokens {
            for (i, server) in self.servers.iter().enumerate() {
                if !server.issuers.contains(iss) {
                    return Err(format!(
                        "apiserver-{i} rejects a token of issuer {iss}: {self:?}"
                    ));
                }
            }
        }
        // Outside verifiers see only bound tokens (legacy ones carry no
        // issuer they federate with).
        for (key, _, _, _) in self.bound_tokens.iter().filter(|_| self.outside) {
            if !self.outside_cache.0.contains(key) {
                return Err(format!(
                    "the outside verifier rejects a token of key {key}: {self:?}"
                ));
            }
        }
        let bound = self.bound_tokens.iter().map(|(v, _, _, _)| v);
        let legacy = self
            .legacy_tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.cut_off.contains(i))
            .map(|(_, v)| v);
        for token in legacy.chain(bound) {
            for (i, server) in self.servers.iter().enumerate() {
                if !server.accepts.contains(token) {
                    return Err(format!(
                        "apiserver-{i} rejects a token of key {token}: {self:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Event {
    Reconcile {
        stale: usize,
    },
    RollOut(usize),
    Issue(usize),
    RefreshSome(usize),
    /// The process dies after persisting the plan but having applied only
    /// `applied` of its effects; the state is reloaded from JSON.
    CrashMidEffects {
        applied: usize,
    },
    /// A start of a rotation of this kind (see [`Harness::start`]).
    StartAttempt(u8),
    Tick(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..3usize).prop_map(|stale| Event::Reconcile { stale }),
        3 => (0..8usize).prop_map(Event::RollOut),
        1 => (0..8usize).prop_map(Event::Issue),
        2 => (0..8usize).prop_map(Event::RefreshSome),
        1 => (0..4usize).prop_map(|applied| Event::CrashMidEffects { applied }),
        1 => (0..3u8).prop_map(Event::StartAttempt),
        1 => (1..400u64).prop_map(Event::Tick),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(BoundTokenRefresh::RestartPods),
            Just(BoundTokenRefresh::RecreateNodes),
            prop_oneof![Just(0u64), 600..7200u64].prop_map(|s| BoundTokenRefresh::Wait {
                max_token_seconds: s
            }),
        ],
        0..120u64,
        // 0 and 60 s are raised to the shortest deadline (1 h).
        prop_oneof![
            Just(0u64),
            Just(60),
            Just(3600),
            Just(7200),
            Just(86_400),
            3600..108_000u64
        ],
        prop::collection::btree_set((0..3usize).prop_map(|i| format!("tenant/legacy-{i}")), 0..3),
    )
        .prop_map(|(bound_token_refresh, lead, deadline, given_up)| Policy {
            key_spec: KeySpec::EcP256,
            trust_lead_time: Duration::from_secs(lead),
            bound_token_refresh,
            clock_skew: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
            legacy_token_deadline: Duration::from_secs(deadline),
            given_up_legacy_tokens: given_up,
        })
}

/// `observed` with only what `state.observation()` asks for.
fn only_what_is_needed(state: &RotationState, observed: &Observed) -> Observed {
    let needed = state.observation();
    let api_servers = observed
        .api_servers
        .iter()
        .map(|server| ApiServerView {
            signs_with: server.signs_with.filter(|_| needed.signing),
            issuer_reviews: server
                .issuer_reviews
                .iter()
                .filter(|(issuer, _)| needed.issuers_reviewed.contains(issuer))
                .map(|(issuer, accepted)| (issuer.clone(), *accepted))
                .collect(),
            issues: server.issues.clone().filter(|_| needed.issuer_signing),
            discovery_issuer: server
                .discovery_issuer
                .clone()
                .filter(|_| needed.issuer_signing),
            ..server.clone()
        })
        .filter(|_| needed.api_servers)
        .collect();
    Observed {
        stored_keys: observed.stored_keys.clone(),
        api_servers,
        stale_legacy_tokens: observed.stale_legacy_tokens.filter(|_| needed.tokens),
        stale_bound_tokens: observed.stale_bound_tokens.filter(|_| needed.tokens),
        bound_token_holders: if needed.tokens {
            observed.bound_token_holders.clone()
        } else {
            Holders::default()
        },
        blocked_legacy_tokens: if needed.tokens {
            observed.blocked_legacy_tokens.clone()
        } else {
            Holders::default()
        },
        given_up_legacy_tokens: if needed.tokens {
            observed.given_up_legacy_tokens.clone()
        } else {
            Holders::default()
        },
        longest_bound_token_seconds: observed
            .longest_bound_token_seconds
            .filter(|_| needed.tokens),
        publications: if needed.publications {
            observed.publications.clone()
        } else {
            Vec::new()
        },
    }
}

struct Harness {
    world: World,
    /// Issuers rotated to so far: the next is `issuer(issuers_made + 1)`.
    issuers_made: u64,
    stored: String,
    history: Vec<Observed>,
    now: Timestamp,
    policy: Policy,
}

impl Harness {
    fn state(&self) -> RotationState {
        serde_json::from_str(&self.stored).expect("the stored state always reloads")
    }

    fn persist(&mut self, next: &RotationState) -> Result<(), TestCaseError> {
        let before = self.state();
        before
            .versions()
            .check_transition(&next.versions())
            .map_err(|v| TestCaseError::fail(format!("{v}")))?;
        // Steps move forward; only a start leaves Completed (to Generate, or
        // to Trust for an issuer rotation that keeps the key).
        prop_assert!(
            next.step() >= before.step() || (before.is_completed() && next.step() <= Step::Trust)
        );
        if next.is_completed() && !before.is_completed() {
            // Completed means retired everywhere, not just believed so.
            for server in &self.world.servers {
                prop_assert_eq!(
                    &server.accepts,
                    &[next.key_version()].into(),
                    "completed while an API server still accepts a retired key"
                );
                if let Some(change) = next.issuer() {
                    prop_assert_eq!(
                        &server.issuers,
                        &vec![change.to.clone()],
                        "completed while an API server still accepts a retired issuer"
                    );
                }
            }
        }
        // The issuers the status line reports are confirmed: every server
        // accepts each of them.
        if let Some(issuers) = next.issuers()
            && next.issuer().is_some_and(|c| c.from != c.to)
        {
            for server in &self.world.servers {
                for accepted in [issuers.token_issuer(), issuers.signing_issuer()] {
                    prop_assert!(
                        server.issuers.contains(accepted),
                        "issuer {} reported but not accepted by {:?}",
                        accepted,
                        server
                    );
                }
            }
        }
        self.stored = serde_json::to_string(next).expect("serializes");
        Ok(())
    }

    /// Reconcile: observe (possibly a snapshot some events old), step,
    /// persist the plan, then apply `applied` of its effects.
    fn reconcile(&mut self, stale: usize, applied: usize) -> Result<(), TestCaseError> {
        let state = self.state();
        self.history.push(self.world.observe(&state, &self.policy));
        let index = self.history.len().saturating_sub(1 + stale);
        let observed = self.history[index].clone();
        let plan = rotation::step(&state, &observed, self.now, &self.policy)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_account(&state, &observed, self.now, &plan)?;
        // The core looks at no more than it asks the drivers to observe.
        let needed = only_what_is_needed(&state, &observed);
        let plan_from_needed = rotation::step(&state, &needed, self.now, &self.policy)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            &plan_from_needed,
            &plan,
            "step read what it did not ask for"
        );
        if plan.next.step() != state.step() {
            // Observations from before the new step are not about it.
            self.history.clear();
        }
        if !plan.cut_off.is_empty() {
            // Every legacy token still stale is counted as cut off, and
            // only then may its holder be rejected; the Secrets ksa could
            // not re-mint are named.
            let target = plan.next.key_version();
            let stale: Vec<usize> = (0..self.world.legacy_tokens.len())
                .filter(|i| self.world.legacy_tokens[*i] != target)
                .collect();
            prop_assert!(
                stale.len() as u64 <= plan.cut_off.total(),
                "{} legacy tokens stale, {} counted cut off",
                stale.len(),
                plan.cut_off.total()
            );
            for i in stale.iter().filter(|i| **i < self.world.frozen_legacy) {
                let name = format!("legacy-{i}");
                prop_assert!(
                    plan.cut_off.named().any(|h| h.name == name),
                    "{} is cut off but not named: {}",
                    name,
                    plan.cut_off
                );
            }
            self.world.cut_off.extend(stale);
        } else if plan.next.step() != state.step() && state.step() == Step::RefreshTokens {
            let target = plan.next.key_version();
            prop_assert!(
                !state.changes_key() || self.world.legacy_tokens.iter().all(|v| *v == target),
                "RefreshTokens ended with stale legacy tokens and cut none off"
            );
        }
        self.persist(&plan.next)?;
        for effect in plan.effects.iter().take(applied) {
            self.world.apply(effect);
        }
        Ok(())
    }

    /// Starts a rotation of the key (`kind` 0), the issuer (1) or both (2).
    fn start(&mut self, kind: u8) -> Result<bool, TestCaseError> {
        let state = self.state();
        let (changes_key, changes_issuer) = (kind != 1, kind != 0);
        let current_issuer = state.issuer().map_or_else(|| issuer(0), |c| c.to.clone());
        let request = StartRequest {
            target: if changes_key {
                KeyVersion::new(state.key_version().get() + 1)
            } else {
                state.key_version()
            },
            issuer: changes_issuer.then(|| IssuerChange {
                from: current_issuer,
                to: issuer(self.issuers_made + 1),
            }),
            advanced_cluster: false,
            lock: if self.world.lock_held {
                OperationLock::HeldByRotation
            } else {
                OperationLock::Free
            },
        };
        match rotation::start(&state, &request, self.now) {
            Ok(next) => {
                self.issuers_made += u64::from(changes_issuer);
                self.persist(&next)?;
                self.history.clear();
                Ok(true)
            }
            Err(Refusal::RotationInProgress { .. }) => {
                prop_assert!(!state.is_completed());
                Ok(false)
            }
            Err(other) => Err(TestCaseError::fail(format!("unexpected refusal {other}"))),
        }
    }

    /// Lets the world converge: every server rolls out, refreshes complete,
    /// time passes. The rotation must complete within a bounded number of
    /// rounds.
    fn converge(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..40 {
            if self.state().is_completed() {
                return Ok(());
            }
            self.reconcile(0, usize::MAX)?;
            for i in 0..self.world.servers.len() {
                self.world.roll_out(i);
            }
            for i in 0..16 {
                self.world.refresh_some(i);
            }
            self.world.outside_catch_up(self.now.as_second());
            self.world
                .check_nobody_logged_out()
                .map_err(TestCaseError::fail)?;
            // An hour a round: the longest kubelet window (24 h) closes
            // well within the rounds.
            self.now += jiff::SignedDuration::from_secs(3600);
            self.world.kubelets_refresh(self.now.as_second());
        }
        Err(TestCaseError::fail(format!(
            "did not complete: {:?}",
            self.state()
        )))
    }
}

/// What `step` says it waits for is exactly why it did not advance: empty
/// when it advanced (or there is no rotation), and otherwise a non-empty list
/// whose every entry is true of the input and not yet satisfied.
fn check_account(
    state: &RotationState,
    observed: &Observed,
    now: Timestamp,
    plan: &Plan,
) -> Result<(), TestCaseError> {
    let waiting = &plan.waiting;
    if state.is_completed() || plan.next.step() != state.step() {
        prop_assert!(
            waiting.is_empty(),
            "{} -> {} but still waiting for {}",
            state.step(),
            plan.next.step(),
            waiting
        );
        return Ok(());
    }
    prop_assert!(
        !waiting.is_empty(),
        "{} stayed put with nothing to wait for",
        state.step()
    );
    prop_assert!(!waiting.to_string().is_empty());
    let (old, new) = (state.previous_version(), state.key_version());
    let servers = &observed.api_servers;
    let total = servers.len();
    let count = |f: &dyn Fn(&ApiServerView) -> bool| servers.iter().filter(|s| f(s)).count();
    for wait in waiting {
        let pending = match *wait {
            Wait::KeyStored { version } => {
                version == new && !observed.stored_keys.contains(&version)
            }
            Wait::ApiServersObserved => servers.is_empty(),
            Wait::ApiServersAccepting {
                version,
                accepting,
                total: t,
            } => {
                version == new
                    && t == total
                    && accepting == count(&|s| s.accepts.contains(&version))
                    && accepting < t
            }
            Wait::ApiServersStillAccepting {
                version,
                accepting,
                total: t,
            } => {
                version == old
                    && t == total
                    && accepting == count(&|s| s.accepts.contains(&version))
                    && accepting < t
            }
            Wait::ApiServersSigning {
                version,
                signing,
                total: t,
            } => {
                version == new
                    && t == total
                    && signing == count(&|s| s.signs_with == Some(version))
                    && signing < t
            }
            Wait::ApiServersDroppingOld {
                version,
                dropped,
                total: t,
            } => {
                version == old
                    && t == total
                    && dropped == count(&|s| !s.accepts.contains(&version))
                    && dropped < t
            }
            Wait::OldKeyDeleted { version } => {
                version == old && observed.stored_keys.contains(&version)
            }
            Wait::TrustLeadTime { until } | Wait::OutsideCaches { until } => until > now,
            Wait::Published { ref url, version } => {
                version == new
                    && observed
                        .publications
                        .iter()
                        .any(|p| p.url == *url && !p.serves(version))
            }
            Wait::Unpublished { ref url, version } => {
                version == old
                    && observed.publications.iter().any(|p| {
                        p.url == *url && p.serves.as_ref().is_none_or(|k| k.contains(&version))
                    })
            }
            Wait::LegacyTokens { stale } => {
                stale == observed.stale_legacy_tokens && stale != Some(0)
            }
            Wait::LegacyTokensBlocked { ref blocked, until } => {
                *blocked == observed.blocked_legacy_tokens
                    && blocked.total() > 0
                    && until.is_some_and(|until| until > now)
                    || until.is_none() && state.step_started_at().is_none()
            }
            Wait::BoundTokenHolders { stale, .. } => {
                stale == observed.stale_bound_tokens && stale != Some(0)
            }
            Wait::RefreshWindow { until } => {
                observed.longest_bound_token_seconds.is_some()
                    && until.is_none_or(|until| until > now)
            }
            Wait::TokenLifetimesObserved => observed.longest_bound_token_seconds.is_none(),
            Wait::IssuerAccepted {
                ref issuer,
                accepting,
                total: t,
            } => {
                t == total
                    && accepting == count(&|s| s.issuer_reviews.get(issuer) == Some(&true))
                    && accepting < t
            }
            Wait::IssuerSigning {
                ref issuer,
                issuing,
                total: t,
            } => {
                let issues = |s: &ApiServerView| {
                    s.issues.as_ref() == Some(issuer) && s.discovery_issuer.as_ref() == Some(issuer)
                };
                t == total && issuing == count(&issues) && issuing < t
            }
            Wait::IssuerRejected {
                ref issuer,
                rejecting,
                total: t,
            } => {
                t == total
                    && rejecting == count(&|s| s.issuer_reviews.get(issuer) == Some(&false))
                    && rejecting < t
            }
            ref other => return Err(TestCaseError::fail(format!("unknown wait {other:?}"))),
        };
        prop_assert!(
            pending,
            "{} waits for {:?}, which is not pending: {:?} at {}",
            state.step(),
            wait,
            observed,
            now
        );
    }
    Ok(())
}

/// Any state of a rotation to version 2 to 4, with or without its
/// timestamps, sub-second ones included.
fn any_state() -> impl Strategy<Value = RotationState> {
    let time = prop::option::of((-5000..5000i64, 0..1_000_000_000i32));
    (
        2..5u64,
        prop::sample::select(vec![
            Step::Generate,
            Step::Trust,
            Step::Sign,
            Step::RefreshTokens,
            Step::Retire,
            Step::Completed,
        ]),
        time.clone(),
        time,
        0..3u8,
    )
        .prop_map(|(version, step, step_started, confirmed, kind)| {
            let at = |t: Option<(i64, i32)>| {
                t.map(|(s, n)| Timestamp::new(1_800_000_000 + s, n).expect("time"))
            };
            let mut json = serde_json::json!({"keyVersion": version, "step": step});
            // A key rotation (0), an issuer rotation that keeps the key
            // (1, which has no Generate step), or both (2).
            if kind != 0 {
                json["issuer"] = serde_json::json!({"from": issuer(0), "to": issuer(1)});
            }
            if kind == 1 {
                json["changesKey"] = false.into();
                if step == Step::Generate {
                    json["step"] = serde_json::json!(Step::Trust);
                }
            }
            if let Some(t) = at(step_started) {
                json["stepStartedAt"] = serde_json::json!(t);
            }
            if let Some(t) = at(confirmed) {
                json["confirmedAt"] = serde_json::json!(t);
            }
            serde_json::from_value(json).expect("a valid state")
        })
}

/// Any observation of keys `old - 1` to `new + 1`, from zero to three API
/// servers.
fn any_observed(new: u64) -> impl Strategy<Value = Observed> {
    let version = move || (new - 2..new + 2).prop_map(KeyVersion::new);
    let versions = move || prop::collection::btree_set(version(), 0..4);
    let an_issuer = || prop::option::of((0..2u64).prop_map(issuer));
    let reviews = prop::collection::btree_map((0..2u64).prop_map(issuer), any::<bool>(), 0..3);
    let server = (
        versions(),
        prop::option::of(version()),
        reviews,
        an_issuer(),
        an_issuer(),
    )
        .prop_map(
            |(accepts, signs_with, issuer_reviews, issues, discovery_issuer)| ApiServerView {
                name: "apiserver".into(),
                accepts,
                signs_with,
                issuer_reviews,
                issues,
                discovery_issuer,
            },
        );
    (
        versions(),
        prop::collection::vec(server, 0..4),
        (prop::option::of(0..3u64), 0..3usize),
        prop::option::of(0..3u64),
        prop::option::of(prop_oneof![Just(0u64), 600..90_000u64]),
        prop::collection::vec(
            (prop::option::of(versions()), 0..120u64).prop_map(|(serves, max_age_seconds)| {
                PublicationView {
                    url: OUTSIDE_URL.to_owned(),
                    serves,
                    max_age_seconds,
                }
            }),
            0..3,
        ),
    )
        .prop_map(
            |(stored_keys, api_servers, (legacy, frozen), bound, longest, publications)| Observed {
                stored_keys,
                api_servers,
                longest_bound_token_seconds: longest,
                stale_legacy_tokens: legacy,
                blocked_legacy_tokens: {
                    let mut blocked = Holders::default();
                    for i in 0..frozen {
                        blocked.record(NamedHolder::new(
                            "tenant",
                            &format!("legacy-{i}"),
                            HolderReason::LegacyTokenImmutable,
                        ));
                    }
                    blocked
                },
                stale_bound_tokens: bound,
                publications,
                ..Observed::default()
            },
        )
}

fn any_policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(BoundTokenRefresh::RestartPods),
            Just(BoundTokenRefresh::RecreateNodes),
            (0..7200u64).prop_map(|s| BoundTokenRefresh::Wait {
                max_token_seconds: s
            }),
        ],
        prop_oneof![Just(0u64), 0..10_000u64],
        0..2_000u64,
        prop_oneof![Just(0u64), 3000..12_000u64],
    )
        .prop_map(|(bound_token_refresh, lead_ms, skew_ms, deadline)| Policy {
            key_spec: KeySpec::EcP256,
            trust_lead_time: Duration::from_millis(lead_ms),
            bound_token_refresh,
            clock_skew: Duration::from_millis(skew_ms),
            poll_interval: Duration::from_secs(2),
            legacy_token_deadline: Duration::from_secs(deadline),
            ..Policy::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn rotations_keep_every_invariant_and_complete(
        policy in policy(),
        servers in 1..4usize,
        lifetimes in prop::collection::vec(prop_oneof![Just(600i64), Just(3607), Just(7200), Just(86_400), 600..86_400i64], 1..4),
        rotations in prop::collection::vec((0..3u8, prop::collection::vec(event(), 0..60)), 1..4),
        frozen_legacy in 0..3usize,
    ) {
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let mut h = Harness {
            world: World {
                outside: true,
                frozen_legacy,
                ..World::new(servers, lifetimes, now.as_second())
            },
            issuers_made: 0,
            stored: serde_json::to_string(&RotationState::settled(KeyVersion::FIRST)).expect("json"),
            history: Vec::new(),
            now,
            policy,
        };
        for (round, (kind, events)) in rotations.iter().enumerate() {
            let before = h.state().key_version();
            prop_assert!(h.start(*kind)?, "a completed cluster accepts a new rotation (round {})", round);
            let step = u64::from(*kind != 1);
            prop_assert_eq!(h.state().key_version(), KeyVersion::new(before.get() + step));
            for event in events {
                match event {
                    Event::Reconcile { stale } => h.reconcile(*stale, usize::MAX)?,
                    Event::RollOut(i) => h.world.roll_out(*i),
                    Event::Issue(i) => h.world.issue(*i, h.now.as_second()),
                    Event::RefreshSome(i) => h.world.refresh_some(*i),
                    Event::CrashMidEffects { applied } => h.reconcile(0, *applied)?,
                    Event::StartAttempt(kind) => {
                        let was = h.state();
                        if h.start(*kind)? {
                            // Only possible once the previous rotation completed.
                            prop_assert!(was.is_completed());
                        }
                    }
                    Event::Tick(seconds) => {
                        h.now += jiff::SignedDuration::from_secs(*seconds as i64);
                        h.world.kubelets_refresh(h.now.as_second());
                    }
                }
                h.world.outside_catch_up(h.now.as_second());
                h.world.check_nobody_logged_out().map_err(TestCaseError::fail)?;
            }
            h.converge()?;
            let done = h.state();
            prop_assert_eq!(done.step(), Step::Completed);
            let versions = done.versions();
            prop_assert_eq!(versions.public_key_versions(), [done.key_version()]);
            prop_assert_eq!(&h.world.store, &[done.key_version()].into());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn a_step_stays_put_exactly_while_it_waits_for_something(
        (state, observed) in any_state().prop_flat_map(|state| {
            let new = state.key_version().get();
            (Just(state), any_observed(new))
        }),
        policy in any_policy(),
        offset in (-5000..15_000i64, 0..1_000_000_000i32),
    ) {
        let now = Timestamp::new(1_800_000_000 + offset.0, offset.1).expect("time");
        let plan = rotation::step(&state, &observed, now, &policy)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_account(&state, &observed, now, &plan)?;
    }
}

#[test]
fn a_rotation_walks_the_spec_triples_in_order() {
    let policy = Policy::default();
    let now = Timestamp::from_second(1_800_000_000).expect("time");
    let state = rotation::start(
        &RotationState::settled(KeyVersion::FIRST),
        &StartRequest {
            target: KeyVersion::new(2),
            issuer: None,
            advanced_cluster: false,
            lock: OperationLock::Free,
        },
        now,
    )
    .expect("starts");
    let mut world = World::new(2, vec![3600], now.as_second());
    let mut state = state;
    let mut lines = vec![state.status_line().to_string()];
    while !state.is_completed() {
        let plan =
            rotation::step(&state, &world.observe(&state, &policy), now, &policy).expect("steps");
        for effect in &plan.effects {
            world.apply(effect);
        }
        for i in 0..2 {
            world.roll_out(i);
        }
        for i in 0..8 {
            world.refresh_some(i);
        }
        state = plan.next;
        let line = state.status_line().to_string();
        if lines.last() != Some(&line) {
            lines.push(line);
        }
    }
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once("message:").expect("message").1)
        .collect();
    assert_eq!(
        messages,
        [
            r#"{"tokenVersion":1,"privateKeyVersion":1,"publicKeyVersions":[1]}"#,
            r#"{"tokenVersion":1,"privateKeyVersion":1,"publicKeyVersions":[1,2]}"#,
            r#"{"tokenVersion":1,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#,
            r#"{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#,
            r#"{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#,
        ]
    );
    assert!(
        lines
            .last()
            .expect("a line")
            .contains("status: True, reason: KSASigningKeyRotationCompleted")
    );
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.contains("status: False, reason: KSASigningKeyRotationProcessedReason"))
    );
}

#[test]
fn refusals_change_nothing_and_are_typed() {
    let now = Timestamp::from_second(1_800_000_000).expect("time");
    let settled = RotationState::settled(KeyVersion::new(3));
    let request = |target, advanced, lock| StartRequest {
        issuer: None,
        target: KeyVersion::new(target),
        advanced_cluster: advanced,
        lock,
    };
    assert_eq!(
        rotation::start(&settled, &request(4, true, OperationLock::Free), now),
        Err(Refusal::AdvancedCluster)
    );
    assert_eq!(
        rotation::start(
            &settled,
            &request(4, false, OperationLock::HeldBy("CA rotation".into())),
            now
        ),
        Err(Refusal::OperationLocked {
            holder: "CA rotation".into()
        })
    );
    assert!(matches!(
        rotation::start(&settled, &request(3, false, OperationLock::Free), now),
        Err(Refusal::AlreadyAtVersion { .. })
    ));
    assert!(matches!(
        rotation::start(&settled, &request(2, false, OperationLock::Free), now),
        Err(Refusal::NotNextVersion { .. })
    ));
    assert!(matches!(
        rotation::start(&settled, &request(6, false, OperationLock::Free), now),
        Err(Refusal::NotNextVersion { .. })
    ));
    let running =
        rotation::start(&settled, &request(4, false, OperationLock::Free), now).expect("starts");
    let refusal = rotation::start(
        &running,
        &request(5, false, OperationLock::HeldByRotation),
        now,
    )
    .expect_err("refused");
    assert!(refusal.is_busy());
}

#[test]
fn stored_states_that_break_invariants_do_not_load() {
    for bad in [
        r#"{"keyVersion":0,"step":"Completed"}"#,
        r#"{"keyVersion":1,"step":"Trust"}"#,
        r#"{"keyVersion":2,"step":"Paused"}"#,
        r#"{"keyVersion":2,"step":"Trust","extra":1}"#,
    ] {
        assert!(serde_json::from_str::<RotationState>(bad).is_err(), "{bad}");
    }
    let good: RotationState = serde_json::from_str(
        r#"{"keyVersion":2,"step":"Sign","startedAt":"2026-11-22T07:00:00Z"}"#,
    )
    .expect("loads");
    assert_eq!(good.versions().private_key_version(), KeyVersion::new(1));
}

fn state_at(version: u64, step: Step, step_started_at: &str) -> RotationState {
    serde_json::from_value(serde_json::json!({
        "keyVersion": version,
        "step": step,
        "stepStartedAt": step_started_at,
    }))
    .expect("a valid state")
}

fn server(accepts: &[u64], signs_with: u64) -> ApiServerView {
    ApiServerView {
        name: format!("apiserver-{accepts:?}"),
        accepts: accepts.iter().copied().map(KeyVersion::new).collect(),
        signs_with: Some(KeyVersion::new(signs_with)),
        ..ApiServerView::default()
    }
}

fn observed(stored: &[u64], servers: Vec<ApiServerView>) -> Observed {
    Observed {
        stored_keys: stored.iter().copied().map(KeyVersion::new).collect(),
        api_servers: servers,
        stale_legacy_tokens: None,
        stale_bound_tokens: None,
        ..Observed::default()
    }
}

const NOW: &str = "2026-11-30T00:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("time")
}

#[test]
fn trust_waits_for_every_server_to_still_accept_the_old_key() {
    let state = state_at(2, Step::Trust, NOW);
    let seen = observed(&[1, 2], vec![server(&[1, 2], 1), server(&[2], 1)]);
    let plan = rotation::step(&state, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(plan.next.step(), Step::Trust);
    assert_eq!(
        plan.waiting.0,
        [Wait::ApiServersStillAccepting {
            version: KeyVersion::new(1),
            accepting: 1,
            total: 2
        }]
    );
    assert_eq!(
        plan.waiting.to_string(),
        "API servers still accepting key 1: 1/2"
    );
}

#[test]
fn retire_waits_for_the_old_key_to_be_deleted() {
    let state = state_at(2, Step::Retire, NOW);
    let seen = observed(&[1, 2], vec![server(&[2], 2)]);
    let plan = rotation::step(&state, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);
    assert_eq!(
        plan.waiting.0,
        [Wait::OldKeyDeleted {
            version: KeyVersion::new(1)
        }]
    );
    assert_eq!(plan.waiting.to_string(), "old key 1 still to be deleted");
    assert!(plan.effects.contains(&Effect::RetireKey {
        version: KeyVersion::new(1)
    }));

    // Once deleted, it completes with nothing left to wait for.
    let seen = observed(&[2], vec![server(&[2], 2)]);
    let plan = rotation::step(&state, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(plan.next.step(), Step::Completed);
    assert!(plan.waiting.is_empty());
}

#[test]
fn retire_reports_servers_still_accepting_the_old_key_and_the_key_itself() {
    let state = state_at(2, Step::Retire, NOW);
    let seen = observed(&[1, 2], vec![server(&[2], 2), server(&[1, 2], 2)]);
    let plan = rotation::step(&state, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(
        plan.waiting.to_string(),
        "API servers no longer accepting key 1: 1/2; old key 1 still to be deleted"
    );
    assert!(!plan.effects.contains(&Effect::RetireKey {
        version: KeyVersion::new(1)
    }));
}

#[test]
fn waiting_reads_as_the_status_always_did() {
    let policy = Policy::default();
    let text = |state: &RotationState, seen: &Observed| {
        rotation::step(state, seen, now(), &policy)
            .expect("steps")
            .waiting
            .to_string()
    };
    assert_eq!(
        text(&state_at(2, Step::Generate, NOW), &observed(&[1], vec![])),
        "key version 2 to be stored"
    );
    let trust = state_at(2, Step::Trust, NOW);
    assert_eq!(
        text(&trust, &observed(&[1, 2], vec![server(&[1], 1)])),
        "API servers accepting key 2: 0/1"
    );
    assert_eq!(
        text(&trust, &observed(&[1, 2], vec![])),
        "API servers observed: none"
    );
    assert_eq!(
        text(
            &state_at(2, Step::Sign, NOW),
            &observed(&[1, 2], vec![server(&[1, 2], 2), server(&[1, 2], 1)])
        ),
        "API servers signing with key 2: 1/2"
    );
    let refresh = state_at(2, Step::RefreshTokens, NOW);
    let mut seen = observed(&[1, 2], vec![]);
    seen.stale_legacy_tokens = Some(2);
    seen.stale_bound_tokens = Some(3);
    assert_eq!(
        text(&refresh, &seen),
        "legacy tokens to re-mint: 2; bound-token holders to refresh: 3"
    );
    // Who they are, named after the count; the step still goes by counts.
    seen.stale_legacy_tokens = Some(0);
    seen.bound_token_holders.record(NamedHolder::new(
        "apps",
        "guarded-x",
        HolderReason::DisruptionBudget {
            budget: "web-pdb".into(),
            allowed: 0,
        },
    ));
    let plan = rotation::step(&refresh, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(
        plan.waiting.to_string(),
        "bound-token holders to refresh: 3 (1 blocked: apps/guarded-x (PDB web-pdb allows 0 disruptions))"
    );
    assert_eq!(plan.waiting.blocked_holders().count(), 1);
    seen.stale_bound_tokens = Some(0);
    let plan = rotation::step(&refresh, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire, "names never hold a step");
    seen.bound_token_holders = Holders::default();
    seen.stale_legacy_tokens = None;
    assert_eq!(text(&refresh, &seen), "legacy tokens to re-mint: ?");

    let waiting = Policy {
        bound_token_refresh: BoundTokenRefresh::Wait {
            max_token_seconds: 3600,
        },
        ..Policy::default()
    };
    seen.stale_legacy_tokens = Some(0);
    let plan = rotation::step(&refresh, &seen, now(), &waiting).expect("steps");
    assert_eq!(
        plan.waiting.to_string(),
        "bound-token holders to refresh: (the projected token lifetimes pods hold, which size the kubelet refresh window, not observed yet)"
    );
    // Pods hold tokens of at most 30 minutes: the configured hour wins,
    // 80% of it plus the kubelet's two minutes of slack and a minute of
    // skew.
    seen.longest_bound_token_seconds = Some(1800);
    let plan = rotation::step(&refresh, &seen, now(), &waiting).expect("steps");
    assert_eq!(
        plan.waiting.to_string(),
        "bound-token holders to refresh: (waiting out the kubelet refresh window, until 2026-11-30T00:51:00Z)"
    );
    // A pod holds a 7200-second token (OpenShift's documented example):
    // 96 minutes plus slack and skew, whatever was configured.
    seen.longest_bound_token_seconds = Some(7200);
    let plan = rotation::step(&refresh, &seen, now(), &waiting).expect("steps");
    assert_eq!(
        plan.waiting.to_string(),
        "bound-token holders to refresh: (waiting out the kubelet refresh window, until 2026-11-30T01:39:00Z)"
    );
}

#[test]
fn trust_reports_its_lead_time_once_every_server_accepts_both_keys() {
    let policy = Policy {
        trust_lead_time: Duration::from_millis(90_500),
        ..Policy::default()
    };
    let state = state_at(2, Step::Trust, NOW);
    let seen = observed(&[1, 2], vec![server(&[1, 2], 1)]);
    let plan = rotation::step(&state, &seen, now(), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::Trust);
    let until: Timestamp = "2026-11-30T00:01:31Z".parse().expect("time");
    assert_eq!(plan.waiting.0, [Wait::TrustLeadTime { until }]);
    assert_eq!(
        plan.waiting.to_string(),
        "trust lead time until 2026-11-30T00:01:31Z"
    );
    let later = rotation::step(&plan.next, &seen, until, &policy).expect("steps");
    assert_eq!(later.next.step(), Step::Sign);
    assert!(later.waiting.is_empty());
}

fn publication(url: &str, serves: Option<&[u64]>, max_age_seconds: u64) -> PublicationView {
    PublicationView {
        url: url.to_owned(),
        serves: serves.map(|keys| keys.iter().copied().map(KeyVersion::new).collect()),
        max_age_seconds,
    }
}

fn published_keys(plan: &Plan) -> Vec<u64> {
    plan.effects
        .iter()
        .find_map(|effect| match effect {
            Effect::PublishOutside { public, .. } => Some(public.iter().map(|v| v.get()).collect()),
            _ => None,
        })
        .expect("every step publishes outside")
}

#[test]
fn trust_waits_for_every_location_then_for_outside_caches_then_the_lead_time() {
    let policy = Policy {
        trust_lead_time: Duration::from_secs(30),
        ..Policy::default()
    };
    let state = state_at(2, Step::Trust, NOW);
    assert!(
        state.observation().publications,
        "Trust reads what outsiders see"
    );
    let bucket = "https://oidc.example/.well-known/openid-configuration";
    let endpoint = "https://ksa.example/ns/r/.well-known/openid-configuration";
    let mut seen = observed(&[1, 2], vec![server(&[1, 2], 1)]);
    seen.publications = vec![
        publication(bucket, Some(&[1]), 60),
        publication(endpoint, None, 0),
    ];
    let plan = rotation::step(&state, &seen, now(), &policy).expect("steps");
    assert_eq!(published_keys(&plan), [1, 2]);
    assert_eq!(
        plan.waiting.to_string(),
        format!(
            "outside verifiers seeing key 2 at {bucket}: not yet; outside verifiers seeing key 2 at {endpoint}: not yet"
        )
    );
    // Both serve key 2: the bucket's 60 s max-age, then the lead time.
    seen.publications = vec![
        publication(bucket, Some(&[1, 2]), 60),
        publication(endpoint, Some(&[1, 2]), 10),
    ];
    let plan = rotation::step(&plan.next, &seen, now(), &policy).expect("steps");
    assert_eq!(
        plan.waiting.to_string(),
        "outside verifiers' caches to expire: until 2026-11-30T00:01:00Z"
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(90)));
    let minute: Timestamp = "2026-11-30T00:01:00Z".parse().expect("time");
    let plan = rotation::step(&plan.next, &seen, minute, &policy).expect("steps");
    assert_eq!(
        plan.waiting.to_string(),
        "trust lead time until 2026-11-30T00:01:30Z"
    );
    // A location that loses the key meanwhile starts the hold over.
    let flapped = seen.clone();
    seen.publications[1] = publication(endpoint, Some(&[1]), 10);
    let lost = rotation::step(&plan.next, &seen, minute, &policy).expect("steps");
    assert_eq!(lost.next.step(), Step::Trust);
    let back = rotation::step(&lost.next, &flapped, minute, &policy).expect("steps");
    assert_eq!(
        back.waiting.to_string(),
        "outside verifiers' caches to expire: until 2026-11-30T00:02:00Z"
    );
    seen = flapped;
    let end: Timestamp = "2026-11-30T00:01:30Z".parse().expect("time");
    let plan = rotation::step(&plan.next, &seen, end, &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::Sign);
}

#[test]
fn retire_withdraws_the_old_key_outside_only_after_every_server_dropped_it() {
    let state = state_at(2, Step::Retire, NOW);
    let url = "https://oidc.example/.well-known/openid-configuration";
    let mut seen = observed(&[1, 2], vec![server(&[1, 2], 2), server(&[2], 2)]);
    seen.publications = vec![publication(url, Some(&[1, 2]), 60)];
    let plan = rotation::step(&state, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(
        published_keys(&plan),
        [1, 2],
        "one server still accepts key 1"
    );
    // Every server dropped key 1: publish key 2 alone, and keep key 1 (by
    // whose kid outsiders are read) until no location serves it.
    seen.api_servers = vec![server(&[2], 2), server(&[2], 2)];
    let plan = rotation::step(&plan.next, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(published_keys(&plan), [2]);
    let retire = Effect::RetireKey {
        version: KeyVersion::new(1),
    };
    assert!(!plan.effects.contains(&retire), "{:?}", plan.effects);
    assert_eq!(
        plan.waiting.to_string(),
        format!("key 1 withdrawn from {url}: not yet; old key 1 still to be deleted")
    );
    // An unreadable location confirms nothing either.
    seen.publications = vec![publication(url, None, 60)];
    let plan = rotation::step(&plan.next, &seen, now(), &Policy::default()).expect("steps");
    assert!(!plan.effects.contains(&retire));
    seen.publications = vec![publication(url, Some(&[2]), 60)];
    let plan = rotation::step(&plan.next, &seen, now(), &Policy::default()).expect("steps");
    assert!(
        plan.effects.contains(&retire),
        "withdrawn outside: delete it"
    );
    seen.stored_keys = [KeyVersion::new(2)].into();
    let plan = rotation::step(&plan.next, &seen, now(), &Policy::default()).expect("steps");
    assert!(plan.next.is_completed(), "{}", plan.waiting);
}

#[test]
fn a_requested_rotation_not_started_yet_is_refused() {
    let settled = RotationState::settled(KeyVersion::new(3));
    let request = StartRequest {
        issuer: None,
        target: KeyVersion::new(4),
        advanced_cluster: false,
        lock: OperationLock::Free,
    };
    let refusal = rotation::start_new(
        &settled,
        &Requested::key(Some(KeyVersion::new(4))),
        &request,
        now(),
    )
    .expect_err("refused");
    assert_eq!(
        refusal,
        Refusal::RotationRequested {
            key_version: KeyVersion::new(4)
        }
    );
    assert!(refusal.is_busy());
    // Before any other refusal, as the CLI has always checked it.
    let advanced = StartRequest {
        advanced_cluster: true,
        ..request.clone()
    };
    assert_eq!(
        rotation::start_new(
            &settled,
            &Requested::key(Some(KeyVersion::new(4))),
            &advanced,
            now()
        ),
        Err(Refusal::RotationRequested {
            key_version: KeyVersion::new(4)
        })
    );
    // A stored target the state is at, or none stored: as `start`.
    for requested in [Some(KeyVersion::new(3)), None] {
        assert_eq!(
            rotation::start_new(&settled, &Requested::key(requested), &request, now()),
            rotation::start(&settled, &request, now())
        );
    }
    assert_eq!(
        rotation::start_new(&settled, &Requested::default(), &advanced, now()),
        Err(Refusal::AdvancedCluster)
    );
}

#[test]
fn a_requested_issuer_rotation_not_started_yet_is_refused() {
    let a = Issuer::new("https://a.example").expect("issuer");
    let b = Issuer::target("https://b.example").expect("issuer");
    let settled = RotationState::settled(KeyVersion::new(3));
    let request = StartRequest {
        issuer: None,
        target: KeyVersion::new(4),
        advanced_cluster: false,
        lock: OperationLock::Free,
    };
    // spec.issuer says b, the cluster still signs with a.
    let pending = Requested {
        key_version: Some(KeyVersion::new(3)),
        issuer: Some(b.clone()),
        signing_issuer: Some(a.clone()),
    };
    let refusal = rotation::start_new(&settled, &pending, &request, now()).expect_err("refused");
    assert_eq!(
        refusal,
        Refusal::IssuerRotationRequested { issuer: b.clone() }
    );
    assert!(refusal.is_busy());
    // Once the cluster signs with b (or when its issuer is not known), b
    // is no longer pending.
    for signing in [Some(b.clone()), None] {
        let done = Requested {
            signing_issuer: signing,
            ..pending.clone()
        };
        assert_eq!(
            rotation::start_new(&settled, &done, &request, now()),
            rotation::start(&settled, &request, now())
        );
    }
}

#[test]
fn an_issuer_rotation_walks_the_spec_lines_in_order_and_keeps_the_key() {
    let policy = Policy::default();
    let now = Timestamp::from_second(1_800_000_000).expect("time");
    let a = Issuer::new("https://a.example").expect("issuer");
    let b = Issuer::target("https://b.example").expect("issuer");
    let mut state = rotation::start(
        &RotationState::settled(KeyVersion::new(3)),
        &StartRequest {
            target: KeyVersion::new(3),
            issuer: Some(IssuerChange {
                from: a.clone(),
                to: b.clone(),
            }),
            advanced_cluster: false,
            lock: OperationLock::Free,
        },
        now,
    )
    .expect("starts");
    assert_eq!(state.step(), Step::Trust, "no key to generate");
    let mut world = World::new(3, vec![3600], now.as_second());
    for server in &mut world.servers {
        server.issuers = vec![a.clone()];
        server.accepts = [KeyVersion::new(3)].into();
        server.signs = KeyVersion::new(3);
    }
    world.store = [KeyVersion::new(3)].into();
    world.desired = (
        [KeyVersion::new(3)].into(),
        KeyVersion::new(3),
        vec![a.clone()],
    );
    world.bound_tokens = vec![(KeyVersion::new(3), now.as_second(), a.clone(), 3600); 3];
    world.legacy_tokens = vec![KeyVersion::new(3); 3];
    let mut lines = Vec::new();
    let mut steps = vec![state.step()];
    while !state.is_completed() {
        let line = state
            .issuer_status_line()
            .expect("an issuer line")
            .to_string();
        if lines.last() != Some(&line) {
            lines.push(line);
        }
        let plan =
            rotation::step(&state, &world.observe(&state, &policy), now, &policy).expect("steps");
        for effect in &plan.effects {
            assert!(
                !matches!(
                    effect,
                    Effect::GenerateKey { .. }
                        | Effect::RetireKey { .. }
                        | Effect::RefreshLegacyTokens { .. }
                ),
                "an issuer rotation touched the key: {effect:?}"
            );
            world.apply(effect);
        }
        // Instances roll one at a time; tokens keep verifying throughout.
        for i in 0..3 {
            world.roll_out(i);
            world.check_nobody_logged_out().expect("nobody logged out");
        }
        for i in 0..8 {
            world.refresh_some(i);
        }
        // The key line stays "completed at 3" all along.
        assert!(
            plan.next.status_line().to_string().contains(
                r#"status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":3,"privateKeyVersion":3,"publicKeyVersions":[3]}"#
            ),
            "{}",
            plan.next.status_line()
        );
        state = plan.next;
        if steps.last() != Some(&state.step()) {
            steps.push(state.step());
        }
    }
    lines.push(
        state
            .issuer_status_line()
            .expect("an issuer line")
            .to_string(),
    );
    assert_eq!(
        steps,
        [
            Step::Trust,
            Step::Sign,
            Step::RefreshTokens,
            Step::Retire,
            Step::Completed
        ]
    );
    // SPEC section 10, byte for byte: the RefreshTokens line and the
    // completed one are its examples.
    let prefix = "State of KSAIssuerRotation with KSAIssuer https://b.example is - ";
    let processed = "status: False, reason: KSAIssuerRotationProcessedReason, message:";
    assert_eq!(
        lines,
        [
            format!(r#"{prefix}{processed}{{"tokenIssuer":"https://a.example","signingIssuer":"https://a.example","acceptedIssuers":["https://a.example"]}}"#),
            format!(r#"{prefix}{processed}{{"tokenIssuer":"https://a.example","signingIssuer":"https://a.example","acceptedIssuers":["https://a.example","https://b.example"]}}"#),
            r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: False, reason: KSAIssuerRotationProcessedReason, message:{"tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}"#.to_owned(),
            format!(r#"{prefix}{processed}{{"tokenIssuer":"https://b.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}}"#),
            r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: True, reason: KSAIssuerRotationCompleted, message:{"tokenIssuer":"https://b.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example"]}"#.to_owned(),
        ]
    );
    for server in &world.servers {
        assert_eq!(server.issuers, std::slice::from_ref(&b));
    }
}

#[test]
fn an_issuer_already_signing_or_a_rotation_that_changes_nothing_is_refused() {
    let now = Timestamp::from_second(1_800_000_000).expect("time");
    let a = Issuer::new("https://a.example").expect("issuer");
    let settled = RotationState::settled(KeyVersion::new(2));
    let same = StartRequest {
        target: KeyVersion::new(2),
        issuer: Some(IssuerChange {
            from: a.clone(),
            to: a.clone(),
        }),
        advanced_cluster: false,
        lock: OperationLock::Free,
    };
    assert_eq!(
        rotation::start(&settled, &same, now),
        Err(Refusal::AlreadyIssuer { issuer: a })
    );
    // A stored issuer rotation that changes nothing does not load.
    let nothing = serde_json::json!({
        "keyVersion": 2, "step": "Sign", "changesKey": false,
        "issuer": {"from": "https://a.example", "to": "https://a.example"},
    });
    assert!(serde_json::from_value::<RotationState>(nothing).is_err());
    let generate = serde_json::json!({
        "keyVersion": 2, "step": "Generate", "changesKey": false,
        "issuer": {"from": "https://a.example", "to": "https://b.example"},
    });
    assert!(serde_json::from_value::<RotationState>(generate).is_err());
}

#[test]
fn a_blocked_legacy_token_delays_refresh_tokens_until_the_deadline_then_is_cut_off() {
    let policy = Policy {
        legacy_token_deadline: Duration::from_secs(3 * 3600),
        ..Policy::default()
    };
    let refresh = state_at(2, Step::RefreshTokens, NOW);
    let frozen = LegacySecret {
        namespace: "tenant".into(),
        name: "frozen".into(),
        token_kid: Some("kid-1".into()),
        immutable: true,
        token_written: None,
    };
    let mut account = LegacyTokens::default();
    account.record(
        &frozen,
        legacy::assess(&frozen, "kid-2", refresh.step_started_at(), &policy),
    );
    let mut seen = observed(&[1, 2], vec![]);
    seen.stale_legacy_tokens = Some(account.stale);
    seen.blocked_legacy_tokens = account.blocked.clone();
    seen.stale_bound_tokens = Some(0);
    let at = |seconds: i64| now() + jiff::SignedDuration::from_secs(seconds);

    // Before the deadline: it waits, says on what, and names the Secret
    // as blocked; it looks again at most a minute later.
    let plan = rotation::step(&refresh, &seen, at(60), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);
    assert_eq!(
        plan.waiting.to_string(),
        "legacy tokens ksa cannot re-mint: 1 blocked: tenant/frozen (legacy token Secret is immutable: ksa cannot re-mint it) (waited for until 2026-11-30T03:00:00Z, then cut off at Retire)"
    );
    assert_eq!(
        plan.waiting
            .blocked_holders()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["tenant/frozen (legacy token Secret is immutable: ksa cannot re-mint it)"]
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(60)));
    assert!(plan.cut_off.is_empty());

    // At the deadline: it goes on and names what it cut off.
    let plan = rotation::step(&refresh, &seen, at(3 * 3600), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);
    assert!(plan.waiting.is_empty());
    assert_eq!(plan.cut_off.blocked, account.blocked);
    assert_eq!(plan.cut_off.total(), 1);

    // A deadline below an hour is an hour.
    let hasty = Policy {
        legacy_token_deadline: Duration::ZERO,
        ..policy.clone()
    };
    let plan = rotation::step(&refresh, &seen, at(3599), &hasty).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);

    // The operator gives up on it: not waited for, cut off, named as given up.
    let given_up = Policy {
        given_up_legacy_tokens: ["tenant/frozen".to_owned()].into(),
        ..policy.clone()
    };
    let mut account = LegacyTokens::default();
    account.record(
        &frozen,
        legacy::assess(&frozen, "kid-2", refresh.step_started_at(), &given_up),
    );
    seen.blocked_legacy_tokens = account.blocked.clone();
    seen.given_up_legacy_tokens = account.given_up.clone();
    let plan = rotation::step(&refresh, &seen, at(60), &given_up).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);
    assert_eq!(
        plan.cut_off.to_string(),
        "given up by the operator: 1 blocked: tenant/frozen (legacy token Secret is immutable: ksa cannot re-mint it)"
    );

    // Stale Secrets ksa still re-mints are waited for until the deadline
    // too, then counted as cut off; uncounted ones are always waited for.
    seen.given_up_legacy_tokens = Holders::default();
    seen.stale_legacy_tokens = Some(4);
    let plan = rotation::step(&refresh, &seen, at(60), &policy).expect("steps");
    assert_eq!(plan.waiting.to_string(), "legacy tokens to re-mint: 4");
    assert_eq!(plan.requeue_after, Some(policy.poll_interval));
    let plan = rotation::step(&refresh, &seen, at(3 * 3600), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);
    assert_eq!(plan.cut_off.stale, 4);
    seen.stale_legacy_tokens = None;
    let plan = rotation::step(&refresh, &seen, at(3 * 3600), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);
}

/// Provenance decisions (`ksa_kube::provenance`): which unsealed import a
/// state takes in, and which state is an old status put back.
#[test]
fn only_a_settled_cluster_takes_in_an_import_and_a_state_older_than_a_key_is_refused() {
    let (one, two) = (KeyVersion::FIRST, KeyVersion::new(2));
    let settled = RotationState::settled(one);
    assert!(settled.adopts_import(one));
    assert!(!settled.adopts_import(two), "a planted next key");
    let now = Timestamp::from_second(1_800_000_000).expect("time");
    let generating = rotation::start(
        &settled,
        &StartRequest {
            target: two,
            issuer: None,
            advanced_cluster: false,
            lock: OperationLock::Free,
        },
        now,
    )
    .expect("starts");
    assert!(!generating.adopts_import(one), "only before a rotation");
    assert!(!generating.adopts_import(two));
    assert_eq!(settled.predates([one]), None);
    assert_eq!(settled.predates([one, two]), Some(two), "put back");
    assert_eq!(generating.predates([one, two]), None);
}
