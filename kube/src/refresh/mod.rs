//! Token refresh in the RefreshTokens step: legacy Secret tokens re-minted
//! with the new key, and bound tokens refreshed by the configured policy.
//!
//! Each is observed (what is still stale, and who: [`BoundTokens`]) and
//! worked on (one pass of idempotent changes) separately, so a crash
//! mid-way resumes where it was: re-minted Secrets are recognised by their
//! token's kid, restarted templates by their annotation, refreshed pods by
//! their age.
//!
//! - [`ksa_core::rotation::refresh`] (the rules): which pods hold a stale
//!   bound token and how each is refreshed, decided on plain values (pure,
//!   unit-tested in the core).
//! - `legacy`: legacy Secret tokens.
//! - `pods`: `restart-pods`: reads pods, their workloads and
//!   PodDisruptionBudgets into the rules' values; restarts templates and
//!   evicts pods as the verdicts say.
//! - `nodes`: `recreate-nodes`: cordons, drains and deletes the nodes that
//!   predate the step, one at a time.
//!
//! Every list is streamed a page ([`PAGE`]) at a time; what is kept across
//! pages is one small entry per workload, PodDisruptionBudget, or owner of
//! evicted pods (at most [`MAX_TRACKED`]), never the objects.

mod legacy;
mod nodes;
pub mod plan;
mod pods;

use futures::{Stream, StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use ksa_core::rotation::refresh as rules;
use ksa_core::rotation::{BoundTokenRefresh, Holders, Policy};
use kube::api::{Api, EvictParams, ListParams};
use serde::de::DeserializeOwned;

pub use legacy::{legacy_secret, observe_legacy_tokens, refresh_legacy_tokens, token_kid};

use crate::error::Result;

/// How many objects a list asks for at a time.
const PAGE: u32 = 500;
/// How many objects the refresh changes at a time.
pub const CONCURRENCY: usize = 16;
/// The pod-template annotation that restarts a workload for a key version,
/// as `kubectl rollout restart` does with `restartedAt`.
pub const RESTART_ANNOTATION: &str = "ksa.dev/restarted-for-key-version";
/// The annotation that marks a static pod's mirror.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The most owners of evicted pods (and bare pods) one pass keeps track of;
/// the rest wait for a later pass.
pub const MAX_TRACKED: usize = 10_000;

/// The bound-token holders a refresh policy has still to refresh: how many
/// (what the step decides on), and who, for the status; for `wait`, the
/// longest lifetime of a token only a kubelet will refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundTokens {
    pub stale: u64,
    pub holders: Holders,
    pub longest_stale_token_seconds: u64,
}

/// Every object of a kind that `params` selects, a page at a time: memory
/// holds one page, not the cluster's objects, and the next page is asked
/// for only when the work on this one needs more.
fn pages<K>(api: Api<K>, params: ListParams) -> impl Stream<Item = Result<Vec<K>>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    futures::stream::try_unfold(Some(String::new()), move |next| {
        let (api, params) = (api.clone(), params.clone());
        async move {
            let Some(token) = next else {
                return Ok(None);
            };
            let mut params = params.limit(PAGE);
            if !token.is_empty() {
                params = params.continue_token(&token);
            }
            let page = api.list(&params).await?;
            let next = page.metadata.continue_.filter(|c| !c.is_empty());
            Ok(Some((page.items, next)))
        }
    })
}

/// The metadata of every object of a kind, a page at a time (a fraction of
/// the objects' size, for kinds of which only owners are needed).
fn metadata_pages<K>(
    api: Api<K>,
) -> impl Stream<Item = Result<Vec<kube::core::PartialObjectMeta<K>>>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    futures::stream::try_unfold(Some(String::new()), move |next| {
        let api = api.clone();
        async move {
            let Some(token) = next else {
                return Ok(None);
            };
            let mut params = ListParams::default().limit(PAGE);
            if !token.is_empty() {
                params = params.continue_token(&token);
            }
            let page = api.list_metadata(&params).await?;
            let next = page.metadata.continue_.filter(|c| !c.is_empty());
            Ok(Some((page.items, next)))
        }
    })
}

/// The objects of `pages`, one at a time.
fn each<K>(pages: impl Stream<Item = Result<Vec<K>>>) -> impl Stream<Item = Result<K>> {
    pages
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
}

/// Evicts a pod through the Eviction API, which honours its
/// PodDisruptionBudget. Gone (404), refused by a budget (429) or changed
/// meanwhile (409) is left to the next pass.
async fn evict(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api.evict(name, &EvictParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 429) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Evicts each of `pods` (namespace, name), [`CONCURRENCY`] at a time. One
/// pod's failure does not stop the others: the first failure is returned
/// once all were tried.
async fn evict_all(client: &kube::Client, pods: Vec<(String, String)>) -> Result<usize> {
    let results: Vec<Result<()>> = futures::stream::iter(pods)
        .map(|(namespace, name)| async move { evict(client, &namespace, &name).await })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let tried = results.len();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(tried)
}

/// Bound-token holders still to refresh under `policy`, and who they are;
/// for `Wait`, which waits out the kubelet refresh window instead, only the
/// longest lifetime of a token held from before the step.
/// `since` is when RefreshTokens began, `skew` the clock skew allowed
/// between this process and the kubelets.
pub async fn observe_bound_tokens(
    client: &kube::Client,
    marker: &str,
    policy: &BoundTokenRefresh,
    since: Timestamp,
    skew: std::time::Duration,
) -> Result<BoundTokens> {
    let horizon = rules::Horizon {
        since,
        now: Timestamp::now(),
        skew,
        version: marker,
    };
    Ok(match policy {
        BoundTokenRefresh::RestartPods => pods::observe(client, &horizon).await?,
        BoundTokenRefresh::RecreateNodes => nodes::observe(client, &horizon).await?,
        BoundTokenRefresh::Wait { .. } => BoundTokens {
            longest_stale_token_seconds: pods::longest_stale_token(client, &horizon).await?,
            ..BoundTokens::default()
        },
    })
}

/// For the `wait` policy with its refreshes observed: the pods holding a
/// bound token from before RefreshTokens began (`since`), and which of
/// them a TokenRequest in `requests` (pod uid: the latest received, from
/// the API servers' audit stream) shows refreshed with the new key.
pub async fn observe_kubelet_refreshes(
    client: &kube::Client,
    marker: &str,
    since: Timestamp,
    skew: std::time::Duration,
    requests: &std::collections::BTreeMap<String, Timestamp>,
) -> Result<rules::KubeletRefreshes> {
    let horizon = rules::Horizon {
        since,
        now: Timestamp::now(),
        skew,
        version: marker,
    };
    pods::kubelet_refreshes(client, &horizon, requests).await
}

/// One pass of bound-token refresh under `policy`, with the default clock
/// skew ([`Policy::default`], which is what every rotation runs with).
pub async fn refresh_bound_tokens(
    client: &kube::Client,
    marker: &str,
    policy: &BoundTokenRefresh,
    since: Timestamp,
) -> Result<()> {
    let horizon = rules::Horizon {
        since,
        now: Timestamp::now(),
        skew: Policy::default().clock_skew,
        version: marker,
    };
    match policy {
        BoundTokenRefresh::RestartPods => pods::refresh(client, &horizon).await,
        BoundTokenRefresh::RecreateNodes => nodes::refresh(client, &horizon).await,
        BoundTokenRefresh::Wait { .. } => Ok(()),
    }
}
