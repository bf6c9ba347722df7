//! The key rotation's step function, one situation at a time: the status
//! lines of a whole rotation, what each step waits for and says, what a
//! start refuses, and the states that do not load. The property tests
//! over random event sequences are in `rotation_model.rs`; issuer
//! rotations in `rotation_issuer.rs`.

mod common;

use std::time::Duration;

use common::world::World;
use common::{NOW, now, observed, server, state_at};
use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::rotation::legacy::{self, LegacySecret, LegacyTokens};
use ksa_core::rotation::{
    self, ApiServerView, BoundTokenRefresh, Effect, HolderReason, Holders, NamedHolder, Observed,
    OperationLock, Plan, Policy, PublicationView, Refusal, Requested, RotationState, StartRequest,
    Step, Wait,
};

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
    let mut seen = observed(&[1, 2], vec![server(&[1, 2], 2)]);
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
    // It looks again at least once a minute while it holds (the hold
    // itself ends in 90 s).
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(60)));
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
    let mut seen = observed(&[1, 2], vec![server(&[1, 2], 2)]);
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

/// An instance that could not be asked (hung, cut off, or announced with
/// no address) holds the step by name, with why, beside the count.
#[test]
fn an_instance_that_does_not_answer_holds_the_step_by_name() {
    let state = state_at(2, Step::Sign, NOW);
    let hung = ApiServerView {
        name: "https://198.18.0.3:6443 (on kube-apiserver-2)".to_owned(),
        unanswered: Some("operation timed out".to_owned()),
        ..ApiServerView::default()
    };
    let seen = observed(&[1, 2], vec![server(&[1, 2], 2), server(&[1, 2], 2), hung]);
    let plan = rotation::step(&state, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(plan.next.step(), Step::Sign);
    assert_eq!(
        plan.waiting.to_string(),
        "API servers not answering: https://198.18.0.3:6443 (on kube-apiserver-2) (operation \
         timed out); API servers signing with key 2: 2/3; API servers accepting key 2: 2/3"
    );
}

/// An instance back on an older configuration after Sign (signing with the
/// old key again) holds RefreshTokens by name: its tokens would fail once
/// Retire drops the old key. Rolled forward, the step goes on by itself.
#[test]
fn an_instance_back_on_an_older_configuration_holds_the_rotation_by_name() {
    let refresh = state_at(2, Step::RefreshTokens, NOW);
    let mut back = server(&[1, 2], 1);
    back.name = "https://198.18.0.4:6443".to_owned();
    let mut seen = observed(&[1, 2], vec![server(&[1, 2], 2), back]);
    seen.stale_legacy_tokens = Some(0);
    seen.stale_bound_tokens = Some(0);
    let plan = rotation::step(&refresh, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);
    assert_eq!(
        plan.waiting.to_string(),
        "API servers back on an older configuration: https://198.18.0.4:6443 signs with key 1 \
         again; API servers signing with key 2: 1/2"
    );
    // A pre-rotation configuration: it no longer accepts the new key either.
    seen.api_servers[1] = server(&[1], 1);
    let plan = rotation::step(&refresh, &seen, now(), &Policy::default()).expect("steps");
    assert!(
        plan.waiting
            .to_string()
            .contains("apiserver-[1] no longer accepts key 2 and signs with key 1 again"),
        "{}",
        plan.waiting
    );
    // Rolled forward: nothing holds the step.
    seen.api_servers[1] = server(&[1, 2], 2);
    let plan = rotation::step(&refresh, &seen, now(), &Policy::default()).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);
}

/// A rotation the resource asks for and the controller has not started
/// (not taken up yet, or refused) is never reported completed.
#[test]
fn a_requested_rotation_not_started_is_not_completed() {
    let settled = RotationState::settled(KeyVersion::new(1));
    let line = settled.status_line_for(KeyVersion::new(2), false);
    assert_eq!(
        line.to_string(),
        r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationRequestedReason, message:{"tokenVersion":1,"privateKeyVersion":1,"publicKeyVersions":[1]}"#
    );
    assert!(!line.status());
    // It parses back, as every line ksa prints does.
    assert_eq!(ksa_core::status::parse(&line.to_string()), Ok(line.clone()));
    let refused = settled.status_line_for(KeyVersion::new(2), true);
    assert!(
        refused
            .to_string()
            .contains("status: False, reason: KSASigningKeyRotationRefusedReason")
    );
    // Asked for nothing new: the state's own line.
    assert_eq!(
        settled.status_line_for(KeyVersion::new(1), false),
        settled.status_line()
    );
}

/// The `wait` policy with its kubelets' refreshes observed (an audit
/// webhook): RefreshTokens ends once every pod from before it was seen
/// refreshing, before the window; the window still bounds it when a
/// refresh goes unseen, and then the pods are named.
#[test]
fn observed_refreshes_end_refresh_tokens_before_the_window_which_still_bounds_it() {
    use ksa_core::rotation::refresh::KubeletRefreshes;
    let policy = Policy {
        bound_token_refresh: BoundTokenRefresh::Wait {
            max_token_seconds: 0,
        },
        ..Policy::default()
    };
    let refresh = state_at(2, Step::RefreshTokens, NOW);
    let mut seen = observed(&[1, 2], vec![server(&[1, 2], 2)]);
    seen.stale_legacy_tokens = Some(0);
    // A 600 s token: the window is 480 s + 120 s slack + 60 s skew.
    seen.longest_bound_token_seconds = Some(600);
    let at = |seconds: i64| now() + jiff::SignedDuration::from_secs(seconds);

    // Not observed: the window alone decides, as before.
    let plan = rotation::step(&refresh, &seen, at(300), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(60)));
    let plan = rotation::step(&refresh, &seen, at(660), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);
    assert_eq!(plan.refresh_not_observed, None);

    // Observed, one of two pods seen: it waits, says so, looks again soon.
    seen.kubelet_refreshes = Some(KubeletRefreshes {
        pods: 2,
        seen: 1,
        unseen: vec!["apps/reader-x".into()],
    });
    let plan = rotation::step(&refresh, &seen, at(300), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);
    assert_eq!(
        plan.waiting.to_string(),
        "bound-token holders to refresh: 1 of 2 pods seen refreshing their token (not seen: apps/reader-x), observed; the kubelet refresh window closes at 2026-11-30T00:11:00Z"
    );
    assert_eq!(
        plan.requeue_after,
        Some(rotation::OBSERVED_REFRESH_POLL),
        "looks again every few seconds, not once a minute"
    );

    // Both seen: it ends at once, long before the window.
    seen.kubelet_refreshes = Some(KubeletRefreshes {
        pods: 2,
        seen: 2,
        unseen: Vec::new(),
    });
    let plan = rotation::step(&refresh, &seen, at(300), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);
    assert_eq!(plan.refresh_not_observed, None);
    // No pod from before the step at all: nothing to wait for.
    seen.kubelet_refreshes = Some(KubeletRefreshes::default());
    let plan = rotation::step(&refresh, &seen, at(1), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);

    // One never seen (a dropped audit event): the window ends the step,
    // and the plan names the pod for the RefreshNotObserved warning.
    let unseen = KubeletRefreshes {
        pods: 2,
        seen: 1,
        unseen: vec!["apps/reader-x".into()],
    };
    seen.kubelet_refreshes = Some(unseen.clone());
    let plan = rotation::step(&refresh, &seen, at(659), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);
    assert_eq!(plan.refresh_not_observed, None);
    let plan = rotation::step(&refresh, &seen, at(660), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::Retire);
    assert_eq!(plan.refresh_not_observed, Some(unseen));

    // Still, legacy tokens hold it: an observation ends only the bound
    // tokens' wait.
    seen.kubelet_refreshes = Some(KubeletRefreshes {
        pods: 1,
        seen: 1,
        unseen: Vec::new(),
    });
    seen.stale_legacy_tokens = Some(3);
    let plan = rotation::step(&refresh, &seen, at(300), &policy).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);
    assert_eq!(plan.waiting.to_string(), "legacy tokens to re-mint: 3");

    // Under restart-pods the observation changes nothing.
    seen.stale_legacy_tokens = Some(0);
    seen.stale_bound_tokens = Some(2);
    let plan = rotation::step(&refresh, &seen, at(300), &Policy::default()).expect("steps");
    assert_eq!(plan.next.step(), Step::RefreshTokens);
}
