//! Issuer rotations (SPEC section 10) through the step function: the
//! status lines of a whole rotation on the model cluster, which keeps its
//! key, and what a start refuses.

mod common;

use common::now;
use common::world::World;
use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::issuer::Issuer;
use ksa_core::rotation::{
    self, Effect, IssuerChange, OperationLock, Policy, Refusal, Requested, RotationState,
    StartRequest, Step,
};

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
