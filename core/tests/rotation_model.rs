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
//!
//! The model itself is `common/world.rs`; examples of single steps are in
//! `rotation_examples.rs`, issuer rotations in `rotation_issuer.rs`.

mod common;

use std::time::Duration;

use common::world::{OUTSIDE_URL, World, issuer};
use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::key::KeySpec;
use ksa_core::rotation::{
    self, ApiServerView, BoundTokenRefresh, HolderReason, Holders, IssuerChange, NamedHolder,
    Observed, OperationLock, Plan, Policy, PublicationView, Refusal, RotationState, StartRequest,
    Step, Wait,
};
use proptest::prelude::*;

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
        kubelet_refreshes: observed.kubelet_refreshes.clone().filter(|_| needed.tokens),
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
            Wait::ApiServersUnanswered { ref instances } => {
                !instances.is_empty() && instances.len() == count(&|s| s.unanswered.is_some())
            }
            // An answering instance that lost what an earlier step
            // confirmed: the new key (from Sign on), signing with it (from
            // RefreshTokens on).
            Wait::ApiServersRegressed { ref instances } => {
                let after_sign = matches!(state.step(), Step::RefreshTokens | Step::Retire);
                let after_trust = after_sign || state.step() == Step::Sign;
                let key = state.changes_key();
                let to = state
                    .issuer()
                    .filter(|_| state.changes_issuer())
                    .map(|c| &c.to);
                let lost = count(&|s| {
                    s.unanswered.is_none()
                        && (key && after_trust && !s.accepts.contains(&new)
                            || key && after_sign && s.signs_with.is_some_and(|v| v != new)
                            || after_sign
                                && to.is_some_and(|to| s.issues.as_ref().is_some_and(|i| i != to)))
                });
                !instances.is_empty() && instances.len() == lost
            }
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
            Wait::KubeletRefreshes {
                seen, pods, until, ..
            } => {
                observed
                    .kubelet_refreshes
                    .as_ref()
                    .is_some_and(|r| r.seen == seen && r.pods == pods && !r.all_seen())
                    && until.is_none_or(|until| until > now)
            }
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
        prop::option::of(Just("did not answer".to_owned())),
    )
        .prop_map(
            |(accepts, signs_with, issuer_reviews, issues, discovery_issuer, unanswered)| {
                ApiServerView {
                    name: "apiserver".into(),
                    accepts,
                    signs_with,
                    issuer_reviews,
                    issues,
                    discovery_issuer,
                    unanswered,
                }
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
