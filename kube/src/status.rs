//! What a rotation's status says a step that did not advance waits for.
//!
//! Shared by the controller (`status.waitingFor`) and the CLI's kubeadm
//! mode (its "waiting for" line), so both word it alike.

use ksa_core::rotation::{Observed, RotationState, Step};

/// What the current step waits for, in words.
/// What a step that did not advance waits for, with counts, for status and logs.
pub fn waiting_for(state: &RotationState, observed: &Observed) -> String {
    let (old, new) = (state.previous_version(), state.key_version());
    let servers = &observed.api_servers;
    let count = |f: &dyn Fn(&ksa_core::rotation::ApiServerView) -> bool| {
        format!(
            "{}/{}",
            servers.iter().filter(|s| f(s)).count(),
            servers.len()
        )
    };
    match state.step() {
        Step::Generate => format!("key version {new} to be stored"),
        Step::Trust => format!(
            "API servers accepting key {new}: {}",
            count(&|s| s.accepts.contains(&new))
        ),
        Step::Sign => format!(
            "API servers signing with key {new}: {}",
            count(&|s| s.signs_with == Some(new))
        ),
        Step::RefreshTokens => format!(
            "legacy tokens to re-mint: {}; bound-token holders to refresh: {}",
            observed
                .stale_legacy_tokens
                .map_or("?".into(), |n| n.to_string()),
            observed
                .stale_bound_tokens
                .map_or("(waiting out the kubelet refresh window)".into(), |n| n
                    .to_string()),
        ),
        Step::Retire => format!(
            "API servers no longer accepting key {old}: {}",
            count(&|s| !s.accepts.contains(&old))
        ),
        Step::Completed => String::new(),
    }
}
