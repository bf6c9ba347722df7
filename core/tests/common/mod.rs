//! What the rotation tests share: the model cluster ([`world`]) and small
//! fixtures of states and observations.
#![allow(
    dead_code,
    reason = "each test binary of core/tests uses a part of what is shared"
)]

pub mod world;

use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::rotation::{ApiServerView, Observed, RotationState, Step};

/// A stored state of a rotation to `version` at `step`, entered at
/// `step_started_at`.
pub fn state_at(version: u64, step: Step, step_started_at: &str) -> RotationState {
    serde_json::from_value(serde_json::json!({
        "keyVersion": version,
        "step": step,
        "stepStartedAt": step_started_at,
    }))
    .expect("a valid state")
}

/// An API server that accepts keys `accepts` and signs with `signs_with`.
pub fn server(accepts: &[u64], signs_with: u64) -> ApiServerView {
    ApiServerView {
        name: format!("apiserver-{accepts:?}"),
        accepts: accepts.iter().copied().map(KeyVersion::new).collect(),
        signs_with: Some(KeyVersion::new(signs_with)),
        ..ApiServerView::default()
    }
}

/// An observation of keys `stored` in the key store and of `servers`,
/// with no token counted.
pub fn observed(stored: &[u64], servers: Vec<ApiServerView>) -> Observed {
    Observed {
        stored_keys: stored.iter().copied().map(KeyVersion::new).collect(),
        api_servers: servers,
        stale_legacy_tokens: None,
        stale_bound_tokens: None,
        ..Observed::default()
    }
}

/// The time of the fixtures' states.
pub const NOW: &str = "2026-11-30T00:00:00Z";

pub fn now() -> Timestamp {
    NOW.parse().expect("time")
}
