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
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use ksa_core::crypto::SigningKey;
use ksa_core::rotation::BoundTokenRefresh;
use ksa_core::token::{self, Claims, ObjectRef};
use ksa_core::{KeyId, KeyVersion};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, ObjectMeta, Patch, PatchParams};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

const TOKEN_SECRET_TYPE: &str = "type=kubernetes.io/service-account-token";
const PAGE: u32 = 500;
const CONCURRENCY: usize = 16;
/// The pod-template annotation that restarts a workload for a key version,
/// as `kubectl rollout restart` does with `restartedAt`.
pub const RESTART_ANNOTATION: &str = "ksa.dev/restarted-for-key-version";

/// Lists every object of a kind in pages.
async fn list_all<K>(api: &Api<K>, params: ListParams) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = params.limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        items.extend(page.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

/// The kid of the token in a legacy token Secret, if it holds one.
pub fn token_kid(secret: &Secret) -> Option<String> {
    let token = secret.data.as_ref()?.get("token")?;
    let token = std::str::from_utf8(&token.0).ok()?;
    token::decode(token).ok()?.header.kid
}

/// Every legacy token Secret, a page at a time: memory holds one page,
/// not the cluster's Secrets, and the next page is asked for only when the
/// work on this one needs more.
fn legacy_secret_pages(client: &kube::Client) -> impl Stream<Item = Result<Vec<Secret>>> + use<> {
    let api: Api<Secret> = Api::all(client.clone());
    futures::stream::try_unfold(Some(String::new()), move |next| {
        let api = api.clone();
        async move {
            let Some(token) = next else {
                return Ok(None);
            };
            let mut params = ListParams::default().fields(TOKEN_SECRET_TYPE).limit(PAGE);
            if !token.is_empty() {
                params = params.continue_token(&token);
            }
            let page = api.list(&params).await?;
            let next = page.metadata.continue_.filter(|c| !c.is_empty());
            Ok(Some((page.items, next)))
        }
    })
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
    let results: Vec<Result<()>> = legacy_secret_pages(client)
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok::<_, Error>)))
        .try_flatten()
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

/// Pods whose bound tokens may predate `since` (the start of
/// RefreshTokens): created before it, and not from a pod template restarted
/// for `version` (those are new by construction).
pub async fn stale_pods(client: &kube::Client, version: u64, since: Timestamp) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::all(client.clone());
    let pods = list_all(&api, ListParams::default()).await?;
    let version = version.to_string();
    Ok(pods
        .into_iter()
        .filter(|p| created_before(&p.metadata, since) && holds_token(p))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RESTART_ANNOTATION))
                != Some(&version)
        })
        .collect())
}

/// The restart-pods policy, one pass: rollout-restart every Deployment,
/// StatefulSet and DaemonSet not yet restarted for `version`, and evict bare
/// pods (PodDisruptionBudgets are honoured by the Eviction API; a refused
/// eviction is retried on the next pass). Returns what is still stale.
pub async fn restart_pods(client: &kube::Client, version: u64, since: Timestamp) -> Result<u64> {
    let value = version.to_string();
    restart_workloads::<Deployment>(client, &value).await?;
    restart_workloads::<StatefulSet>(client, &value).await?;
    restart_workloads::<DaemonSet>(client, &value).await?;
    for pod in stale_pods(client, version, since).await? {
        let owned = pod
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.controller == Some(true)));
        if !owned {
            evict(client, &pod).await?;
        }
    }
    Ok(stale_pods(client, version, since).await?.len() as u64)
}

async fn restart_workloads<K>(client: &kube::Client, version: &str) -> Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    let workloads = list_all(&api, ListParams::default()).await?;
    let restarts = workloads.into_iter().filter_map(|w| {
        let value = serde_json::to_value(&w).ok()?;
        let current =
            value["spec"]["template"]["metadata"]["annotations"][RESTART_ANNOTATION].as_str();
        (current != Some(version)).then(|| {
            (
                w.meta().namespace.clone().unwrap_or_default(),
                w.meta().name.clone().unwrap_or_default(),
            )
        })
    });
    futures::stream::iter(restarts)
        .map(|(namespace, name)| {
            let api: Api<K> = Api::namespaced(client.clone(), &namespace);
            let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: version}}}}});
            async move { api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn evict(client: &kube::Client, pod: &Pod) -> Result<()> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match api.evict(&name, &EvictParams::default()).await {
        Ok(_) => Ok(()),
        // 429: a PodDisruptionBudget says not now; 404: already gone.
        Err(kube::Error::Api(s)) if s.code == 429 || s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Nodes older than `since` and pods whose tokens predate it: what the
/// recreate-nodes policy still has to replace.
pub async fn recreate_nodes_pending(
    client: &kube::Client,
    version: u64,
    since: Timestamp,
) -> Result<u64> {
    let nodes: Api<Node> = Api::all(client.clone());
    let old = list_all(&nodes, ListParams::default())
        .await?
        .into_iter()
        .filter(|n| created_before(&n.metadata, since))
        .count();
    Ok(old as u64 + stale_pods(client, version, since).await?.len() as u64)
}

/// The recreate-nodes policy, one pass: cordon every node older than
/// `since`, evict its pods, and delete it for the infrastructure to replace.
/// Returns how many nodes and pods are still stale.
pub async fn recreate_nodes(client: &kube::Client, version: u64, since: Timestamp) -> Result<u64> {
    let nodes: Api<Node> = Api::all(client.clone());
    let old: Vec<Node> = list_all(&nodes, ListParams::default())
        .await?
        .into_iter()
        .filter(|n| created_before(&n.metadata, since))
        .collect();
    let pods = stale_pods(client, version, since).await?;
    let mut pods_by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in &pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        pods_by_node.entry(node).or_default().push(pod);
    }
    for node in &old {
        let name = node.metadata.name.clone().unwrap_or_default();
        let cordon = serde_json::json!({"spec": {"unschedulable": true}});
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&cordon))
            .await?;
        let on_node = pods_by_node
            .get(&name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for pod in on_node {
            evict(client, pod).await?;
        }
        if on_node.is_empty() {
            match nodes.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(old.len() as u64 + pods.len() as u64)
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
            Some(stale_pods(client, version.get(), since).await?.len() as u64)
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
        BoundTokenRefresh::RestartPods => {
            restart_pods(client, version.get(), since).await?;
        }
        BoundTokenRefresh::RecreateNodes => {
            recreate_nodes(client, version.get(), since).await?;
        }
        BoundTokenRefresh::Wait { .. } => {}
    }
    Ok(())
}
