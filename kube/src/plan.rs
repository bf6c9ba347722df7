//! The plan of a rotation, found in the live cluster before it starts and
//! changing nothing (`rotate --dry-run`, and the prompt of `rotate`): what
//! every API server instance serves now, what RefreshTokens would do to
//! bound and legacy tokens, who holds a legacy token outside the cluster,
//! the refresh window of the `wait` policy, and what each step waits for.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ServiceAccount;
use ksa_core::jwk::parse_jwks;
use ksa_core::rotation::{BoundTokenRefresh, Policy, RotationState, Step};
use kube::api::Api;
use serde::Serialize;

use crate::cluster::TargetCluster;
use crate::error::Result;
use crate::probe;
use crate::refresh::plan::{self as tokens, BoundTokenPlan, LegacyTokenPlan};
use ksa_core::rotation::refresh::{Horizon, kubelet_refresh_window};

/// What one API server instance serves now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerNow {
    pub name: String,
    /// It answered.
    pub answered: bool,
    /// The kids of its `/openid/v1/jwks`.
    pub accepts: Vec<String>,
    /// The kid of a fresh token it issued (none when the probe account does
    /// not exist yet: a dry run creates nothing).
    pub signs_with: Option<String>,
    /// The `iss` of that token.
    pub issuer: Option<String>,
    /// The issuer its discovery document names.
    pub discovery_issuer: Option<String>,
}

/// One step of the rotation and what it waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepPlan {
    pub step: Step,
    pub waits_for: String,
    /// The longest it can take, when that is known in advance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_most_seconds: Option<u64>,
}

/// The plan of the rotation `started` would begin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationPlan {
    /// The key version rotated to, when the key changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u64>,
    /// The issuer change, when the issuer changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_to: Option<String>,
    pub api_servers: Vec<ApiServerNow>,
    /// Re-minted at RefreshTokens when the key changes (an issuer change
    /// leaves them alone: they carry `kubernetes/serviceaccount`).
    pub legacy_tokens: LegacyTokenPlan,
    pub bound_tokens: BoundTokenPlan,
    /// `restart-pods`, `recreate-nodes` or `wait`.
    pub token_refresh_policy: &'static str,
    /// The window the `wait` policy would wait out if RefreshTokens began
    /// now; under the other policies, the longest a pod blocked by an
    /// operator can hold the step before its kubelet refreshes its token.
    pub refresh_window_seconds: u64,
    pub steps: Vec<StepPlan>,
}

impl RotationPlan {
    /// Legacy tokens the rotation would cut off from a holder outside the
    /// cluster (only a key rotation re-mints them).
    pub fn outside_legacy_tokens(&self) -> &[tokens::OutsideLegacyToken] {
        if self.key_version.is_some() {
            &self.legacy_tokens.held_outside
        } else {
            &[]
        }
    }
}

/// The plan of the rotation `started` (as `rotation::start` returned it,
/// not saved anywhere) on `cluster`, under `policy`. Reads only: no object
/// is created or changed.
pub async fn plan(
    cluster: &TargetCluster,
    started: &RotationState,
    policy: &Policy,
    now: Timestamp,
) -> Result<RotationPlan> {
    let api_servers = api_servers_now(cluster).await?;
    let marker = started.refresh_marker();
    let horizon = Horizon {
        since: now,
        now,
        skew: policy.clock_skew,
        version: &marker,
    };
    let bound_tokens = tokens::bound_tokens(&cluster.client, &horizon).await?;
    let legacy_tokens = tokens::legacy_tokens(&cluster.client, now).await?;
    let refresh = policy.bound_token_refresh;
    // The `wait` policy's hold; for the others, the kubelet window of
    // the longest token a pod holds (what a pod left to its kubelet takes).
    let window = refresh
        .wait_window(bound_tokens.longest_token_seconds, policy.clock_skew)
        .unwrap_or_else(|| {
            kubelet_refresh_window(bound_tokens.longest_token_seconds, policy.clock_skew)
        });
    let issuer = started.issuer().filter(|_| started.changes_issuer());
    let steps = steps(started, policy, api_servers.len(), &bound_tokens, window);
    Ok(RotationPlan {
        key_version: started.changes_key().then(|| started.key_version().get()),
        issuer_from: issuer.map(|c| c.from.as_str().to_owned()),
        issuer_to: issuer.map(|c| c.to.as_str().to_owned()),
        api_servers,
        legacy_tokens,
        bound_tokens,
        token_refresh_policy: refresh.name().as_str(),
        refresh_window_seconds: window.as_secs(),
        steps,
    })
}

/// What every instance serves now. The probe account is not created: a
/// dry run changes nothing, so without it no fresh token is asked for.
async fn api_servers_now(cluster: &TargetCluster) -> Result<Vec<ApiServerNow>> {
    let probe_exists =
        Api::<ServiceAccount>::namespaced(cluster.client.clone(), probe::PROBE_NAMESPACE)
            .get_opt(probe::PROBE_ACCOUNT)
            .await?
            .is_some();
    let mut servers = Vec::new();
    for (name, client) in cluster.instance_clients().await? {
        let mut server = ApiServerNow {
            name,
            ..ApiServerNow::default()
        };
        // One that cannot be asked has not answered.
        let Some(client) = client else {
            servers.push(server);
            continue;
        };
        let request = http::Request::get("/openid/v1/jwks").body(Vec::new())?;
        if let Ok(text) = client.request_text(request).await {
            server.answered = true;
            if let Ok(keys) = parse_jwks(&text) {
                server.accepts = keys.iter().map(|k| k.kid.as_str().to_owned()).collect();
            }
        }
        if probe_exists && let Ok(fresh) = probe::fresh_token(&client).await {
            server.signs_with = fresh.kid.map(|kid| kid.as_str().to_owned());
            server.issuer = fresh.iss.map(|iss| iss.as_str().to_owned());
        }
        server.discovery_issuer = probe::discovery_issuer(&client)
            .await
            .ok()
            .flatten()
            .map(|iss| iss.as_str().to_owned());
        servers.push(server);
    }
    Ok(servers)
}

/// What each step of `started` waits for, and the longest RefreshTokens can
/// take.
fn steps(
    started: &RotationState,
    policy: &Policy,
    instances: usize,
    bound: &BoundTokenPlan,
    window: Duration,
) -> Vec<StepPlan> {
    let roll_out = format!("one roll-out of the {instances} API server instance(s)");
    let lead = policy.trust_lead_time.as_secs();
    let issuer = started.issuer().filter(|_| started.changes_issuer());
    let mut steps = Vec::new();
    if started.changes_key() {
        steps.push(StepPlan {
            step: Step::Generate,
            waits_for: "the new key pair, stored".to_owned(),
            at_most_seconds: None,
        });
    }
    let mut trust = roll_out.clone();
    if lead > 0 {
        trust.push_str(&format!(", then the trust lead time ({lead} s)"));
    }
    steps.push(StepPlan {
        step: Step::Trust,
        waits_for: trust,
        at_most_seconds: None,
    });
    let mut sign = roll_out.clone();
    if let Some(change) = issuer {
        sign.push_str(&format!(
            "; outside verifiers must trust {} before it",
            change.to
        ));
    }
    steps.push(StepPlan {
        step: Step::Sign,
        waits_for: sign,
        at_most_seconds: None,
    });
    let blocked = bound.pods.iter().filter(|p| p.blocked).count();
    let refresh = match policy.bound_token_refresh {
        BoundTokenRefresh::Wait { .. } => format!(
            "the kubelet refresh window: {} s (80% of the longest projected token a pod holds, {} s, plus slack and skew)",
            window.as_secs(),
            bound.longest_token_seconds
        ),
        BoundTokenRefresh::RestartPods => format!(
            "{} pod(s) holding bound tokens: {} workload(s) to restart, {} pod(s) to evict, {} blocked until an operator lets them (or their kubelet refreshes, within {} s)",
            bound.holders,
            bound.workloads_to_restart.len(),
            bound.pods.iter().filter(|p| p.action == "evict").count(),
            blocked,
            window.as_secs()
        ),
        BoundTokenRefresh::RecreateNodes => format!(
            "every node with pods holding bound tokens recreated, one at a time ({} pod(s) hold them)",
            bound.holders
        ),
    };
    steps.push(StepPlan {
        step: Step::RefreshTokens,
        waits_for: refresh,
        at_most_seconds: Some(window.as_secs()),
    });
    steps.push(StepPlan {
        step: Step::Retire,
        waits_for: roll_out,
        at_most_seconds: None,
    });
    steps
}
