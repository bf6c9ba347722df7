//! Token refresh in the RefreshTokens step: legacy Secret tokens re-minted
//! with the new key, and bound tokens refreshed by the configured policy.
//!
//! Both are counted (what is still stale) and worked on (one pass of
//! idempotent changes) separately, so a crash mid-way resumes where it was:
//! already-refreshed Secrets are recognised by their token's kid.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec, Secret};
use ksa_core::crypto::SigningKey;
use ksa_core::rotation::BoundTokenRefresh;
use ksa_core::token::{self, Claims, ObjectRef};
use ksa_core::{KeyId, KeyVersion};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, ObjectMeta, Patch, PatchParams};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

const TOKEN_SECRET_TYPE: &str = "type=kubernetes.io/service-account-token";
const PAGE: u32 = 500;
/// How many objects the refresh changes at a time.
pub const CONCURRENCY: usize = 16;
/// The pod-template annotation that restarts a workload for a key version,
/// as `kubectl rollout restart` does with `restartedAt`.
pub const RESTART_ANNOTATION: &str = "ksa.dev/restarted-for-key-version";

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

/// The objects of `pages`, one at a time.
fn each<K>(pages: impl Stream<Item = Result<Vec<K>>>) -> impl Stream<Item = Result<K>> {
    pages
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
}

/// The kid of the token in a legacy token Secret, if it holds one.
pub fn token_kid(secret: &Secret) -> Option<String> {
    let token = secret.data.as_ref()?.get("token")?;
    let token = std::str::from_utf8(&token.0).ok()?;
    token::decode(token).ok()?.header.kid
}

/// Every legacy token Secret, a page at a time.
fn legacy_secret_pages(client: &kube::Client) -> impl Stream<Item = Result<Vec<Secret>>> + use<> {
    pages(
        Api::all(client.clone()),
        ListParams::default().fields(TOKEN_SECRET_TYPE),
    )
}

/// How many legacy token Secrets hold a token not signed by `kid`.
pub async fn count_stale_legacy_secrets(client: &kube::Client, kid: &KeyId) -> Result<u64> {
    legacy_secret_pages(client)
        .try_fold(0, |count, page| async move {
            let stale = page
                .iter()
                .filter(|s| token_kid(s).as_deref() != Some(kid.as_str()))
                .count();
            Ok(count + stale as u64)
        })
        .await
}

/// Re-mints every stale legacy token with `signer`, a bounded number at a
/// time, each on its own task (signing runs in parallel with the writes).
/// Each write is conditional on the Secret's resourceVersion, so a
/// concurrent change makes the write fail and the next pass retries it.
/// Returns how many were re-minted.
pub async fn refresh_legacy_tokens(
    client: &kube::Client,
    signer: Arc<dyn SigningKey>,
) -> Result<usize> {
    let kid = signer.kid().as_str().to_owned();
    let results: Vec<Result<()>> = each(legacy_secret_pages(client))
        .try_filter(|secret| std::future::ready(token_kid(secret).as_deref() != Some(kid.as_str())))
        .map(|secret| {
            let (client, signer) = (client.clone(), signer.clone());
            async move {
                tokio::spawn(remint(client, secret?, signer))
                    .await
                    .map_err(|e| Error::Other(format!("re-minting task failed: {e}")))?
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut done = 0;
    for result in results {
        match result {
            Ok(()) => done += 1,
            Err(Error::Kube(kube::Error::Api(s))) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

async fn remint(client: kube::Client, secret: Secret, signer: Arc<dyn SigningKey>) -> Result<()> {
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let account = ObjectRef {
        name: annotations
            .get("kubernetes.io/service-account.name")
            .cloned()
            .unwrap_or_default(),
        uid: annotations
            .get("kubernetes.io/service-account.uid")
            .cloned()
            .unwrap_or_default(),
    };
    if account.name.is_empty() {
        return Err(Error::Other(format!(
            "Secret {namespace}/{name} names no service account"
        )));
    }
    let claims = Claims::legacy(&namespace, &account, &name);
    let jwt = token::mint(&claims, signer.as_ref())?;
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": secret.metadata.resource_version},
        "data": {"token": STANDARD.encode(jwt)},
    });
    Api::<Secret>::namespaced(client, &namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Whether an object may predate `since`. Creation times have one-second
/// precision, so an object created in the same second counts as older.
fn created_before(meta: &ObjectMeta, since: Timestamp) -> bool {
    meta.creation_timestamp
        .as_ref()
        .is_some_and(|t| t.0.as_second() <= since.as_second())
}

/// Whether a pod holds a service-account token the kubelet projected.
fn holds_token(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let projected = spec.volumes.iter().flatten().any(|v| {
        v.projected.as_ref().is_some_and(|p| {
            p.sources
                .iter()
                .flatten()
                .any(|s| s.service_account_token.is_some())
        })
    });
    !mirror && (projected || spec.automount_service_account_token != Some(false))
}

/// A pod whose bound token may predate the RefreshTokens step: what
/// refreshing it needs to know.
#[derive(Debug)]
struct StalePod {
    namespace: String,
    name: String,
    node: String,
    /// Whether a workload controller owns it (and so replaces it when its
    /// template restarts); a bare pod is evicted instead.
    owned: bool,
}

/// Pods whose bound tokens may predate `since` (the start of
/// RefreshTokens): created before it, and not from a pod template restarted
/// for `version` (those are new by construction). Streamed a page at a
/// time.
fn stale_pods(
    client: &kube::Client,
    version: u64,
    since: Timestamp,
) -> impl Stream<Item = Result<StalePod>> + use<> {
    let version = version.to_string();
    each(pages(
        Api::<Pod>::all(client.clone()),
        ListParams::default(),
    ))
    .try_filter_map(move |pod| {
        let stale = created_before(&pod.metadata, since)
            && holds_token(&pod)
            && pod.metadata.deletion_timestamp.is_none()
            && pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RESTART_ANNOTATION))
                != Some(&version);
        let stale = stale.then(|| StalePod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            owned: pod
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| o.iter().any(|r| r.controller == Some(true))),
        });
        std::future::ready(Ok(stale))
    })
}

async fn count_stale_pods(client: &kube::Client, version: u64, since: Timestamp) -> Result<u64> {
    stale_pods(client, version, since)
        .try_fold(0, |count, _| std::future::ready(Ok(count + 1)))
        .await
}

/// The restart-pods policy, one pass: rollout-restart every Deployment,
/// StatefulSet and DaemonSet not yet restarted for `version`, and evict bare
/// pods (PodDisruptionBudgets are honoured by the Eviction API; a refused
/// eviction is retried on the next pass).
pub async fn restart_pods(client: &kube::Client, version: u64, since: Timestamp) -> Result<()> {
    let value = version.to_string();
    restart_workloads::<Deployment>(client, &value).await?;
    restart_workloads::<StatefulSet>(client, &value).await?;
    restart_workloads::<DaemonSet>(client, &value).await?;
    stale_pods(client, version, since)
        .try_filter(|pod| std::future::ready(!pod.owned))
        .map(|pod| async move { evict(client, &pod?).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

/// A workload that runs pods from a template.
trait Workload:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
    fn template(&self) -> Option<&PodTemplateSpec>;
}

impl Workload for Deployment {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

impl Workload for StatefulSet {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

impl Workload for DaemonSet {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

/// Sets the restart annotation to `version` on the pod template of every
/// workload of kind `K` that does not have it yet, page by page.
async fn restart_workloads<K>(client: &kube::Client, version: &str) -> Result<()>
where
    K: Workload,
    K::DynamicType: Default,
{
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: version}}}}});
    each(pages(Api::<K>::all(client.clone()), ListParams::default()))
        .try_filter(|workload| {
            let current = workload
                .template()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(RESTART_ANNOTATION));
            std::future::ready(current.map(String::as_str) != Some(version))
        })
        .map(|workload| {
            let patch = &patch;
            async move {
                let workload = workload?;
                let namespace = workload.meta().namespace.clone().unwrap_or_default();
                let name = workload.meta().name.clone().unwrap_or_default();
                Api::<K>::namespaced(client.clone(), &namespace)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

async fn evict(client: &kube::Client, pod: &StalePod) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    match api.evict(&pod.name, &EvictParams::default()).await {
        Ok(_) => Ok(()),
        // 429: a PodDisruptionBudget says not now; 404: already gone.
        Err(kube::Error::Api(s)) if s.code == 429 || s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Nodes created before `since`, a page at a time.
fn old_nodes(client: &kube::Client, since: Timestamp) -> impl Stream<Item = Result<Node>> + use<> {
    each(pages(
        Api::<Node>::all(client.clone()),
        ListParams::default(),
    ))
    .try_filter(move |node| std::future::ready(created_before(&node.metadata, since)))
}

/// Nodes older than `since` and pods whose tokens predate it: what the
/// recreate-nodes policy still has to replace.
pub async fn recreate_nodes_pending(
    client: &kube::Client,
    version: u64,
    since: Timestamp,
) -> Result<u64> {
    let nodes = old_nodes(client, since)
        .try_fold(0, |count, _| std::future::ready(Ok(count + 1)))
        .await?;
    Ok(nodes + count_stale_pods(client, version, since).await?)
}

/// The recreate-nodes policy, one pass: cordon every node older than
/// `since`, evict its pods, and delete it for the infrastructure to replace.
pub async fn recreate_nodes(client: &kube::Client, version: u64, since: Timestamp) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let old: Vec<String> = old_nodes(client, since)
        .map_ok(|n| n.metadata.name.unwrap_or_default())
        .try_collect()
        .await?;
    let mut pods_by_node: BTreeMap<String, Vec<StalePod>> = BTreeMap::new();
    let mut pods = std::pin::pin!(stale_pods(client, version, since));
    while let Some(pod) = pods.try_next().await? {
        pods_by_node.entry(pod.node.clone()).or_default().push(pod);
    }
    for name in &old {
        let cordon = serde_json::json!({"spec": {"unschedulable": true}});
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&cordon))
            .await?;
        let on_node = pods_by_node
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for pod in on_node {
            evict(client, pod).await?;
        }
        if on_node.is_empty() {
            match nodes.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Bound-token holders still to refresh under `policy` (none to count for
/// `Wait`, which waits out the kubelet refresh window instead).
pub async fn stale_bound_tokens(
    client: &kube::Client,
    version: KeyVersion,
    policy: &BoundTokenRefresh,
    since: Timestamp,
) -> Result<Option<u64>> {
    Ok(match policy {
        BoundTokenRefresh::RestartPods => {
            Some(count_stale_pods(client, version.get(), since).await?)
        }
        BoundTokenRefresh::RecreateNodes => {
            Some(recreate_nodes_pending(client, version.get(), since).await?)
        }
        BoundTokenRefresh::Wait { .. } => None,
    })
}

/// One pass of bound-token refresh under `policy`.
pub async fn refresh_bound_tokens(
    client: &kube::Client,
    version: KeyVersion,
    policy: &BoundTokenRefresh,
    since: Timestamp,
) -> Result<()> {
    match policy {
        BoundTokenRefresh::RestartPods => restart_pods(client, version.get(), since).await,
        BoundTokenRefresh::RecreateNodes => recreate_nodes(client, version.get(), since).await,
        BoundTokenRefresh::Wait { .. } => Ok(()),
    }
}
