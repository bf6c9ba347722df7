//! `recreate-nodes`: every node that predates the step is cordoned,
//! drained through the Eviction API ([`rules::drain`]) and deleted for the
//! infrastructure to replace, one node at a time (a rolling replacement,
//! so the cluster loses at most one node's capacity to the rotation). The
//! step waits until no node predates it.

use futures::TryStreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use ksa_core::rotation::{HolderReason, NamedHolder};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};

use super::pods::{Budgets, facts, owner_only};
use super::{BoundTokens, each, evict_all, pages};
use crate::error::Result;
use ksa_core::rotation::refresh::{self as rules, Drain, Horizon};

/// A node that predates the step: its name, and whether it is cordoned.
#[derive(Debug)]
struct OldNode {
    name: String,
    cordoned: bool,
}

/// Whether an object may predate `since`. Creation times have one-second
/// precision, so an object created in the same second counts as older; one
/// without a creation time is never deleted.
fn created_before(meta: &ObjectMeta, since: Timestamp) -> bool {
    meta.creation_timestamp
        .as_ref()
        .is_some_and(|t| t.0.as_second() <= since.as_second())
}

/// The nodes that predate `since`, in list order (by name).
async fn old_nodes(client: &kube::Client, since: Timestamp) -> Result<Vec<OldNode>> {
    each(pages(
        Api::<Node>::all(client.clone()),
        ListParams::default(),
    ))
    .try_filter_map(|node| {
        let old = created_before(&node.metadata, since).then(|| OldNode {
            name: node.metadata.name.clone().unwrap_or_default(),
            cordoned: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
        });
        std::future::ready(Ok(old))
    })
    .try_collect()
    .await
}

/// The node being recreated: the first cordoned old node (one the rotation
/// cordoned on an earlier pass, or an operator did), else the first old
/// node.
fn in_progress(old: &[OldNode]) -> Option<&OldNode> {
    old.iter().find(|n| n.cordoned).or_else(|| old.first())
}

/// What draining `node` does with each of its pods: (namespace, name,
/// decision), one small entry per pod of the node, never the pods.
async fn drain_plan(
    client: &kube::Client,
    node: &str,
    horizon: &Horizon<'_>,
) -> Result<Vec<(String, String, Drain)>> {
    let budgets = Budgets::list(client).await?;
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    each(pages(Api::<Pod>::all(client.clone()), params))
        .map_ok(|pod| {
            let facts = facts(&pod, owner_only(&pod));
            let decision = rules::drain(&facts, budgets.of(facts.namespace), horizon);
            (facts.namespace.to_owned(), facts.name.to_owned(), decision)
        })
        .try_collect()
        .await
}

/// How many nodes predate the step (what it decides on), and who: the node
/// being recreated with what its drain waits for, then the others.
pub(super) async fn observe(client: &kube::Client, horizon: &Horizon<'_>) -> Result<BoundTokens> {
    let old = old_nodes(client, horizon.since).await?;
    let mut observed = BoundTokens {
        stale: old.len() as u64,
        ..BoundTokens::default()
    };
    let current = in_progress(&old).map(|n| n.name.as_str());
    for node in &old {
        if Some(node.name.as_str()) != current {
            observed.holders.record(NamedHolder::new(
                "",
                &node.name,
                HolderReason::NodeToRecreate,
            ));
            continue;
        }
        let plan = drain_plan(client, &node.name, horizon).await?;
        let left = plan.iter().filter(|(_, _, d)| *d != Drain::Leave).count();
        let reason = if node.cordoned {
            HolderReason::NodeDraining { pods: left as u64 }
        } else {
            HolderReason::NodeToRecreate
        };
        observed
            .holders
            .record(NamedHolder::new("", &node.name, reason));
        for (namespace, name, decision) in plan {
            if let Drain::Wait(reason) = decision {
                observed
                    .holders
                    .record(NamedHolder::new(&namespace, &name, reason));
            }
        }
    }
    Ok(observed)
}

/// One pass: cordon the node being recreated, evict its pods as the drain
/// rules say, and delete it once nothing on it is left to evict or wait
/// for.
pub(super) async fn refresh(client: &kube::Client, horizon: &Horizon<'_>) -> Result<()> {
    let old = old_nodes(client, horizon.since).await?;
    let Some(node) = in_progress(&old) else {
        return Ok(());
    };
    let nodes: Api<Node> = Api::all(client.clone());
    if !node.cordoned {
        let cordon = serde_json::json!({"spec": {"unschedulable": true}});
        nodes
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&cordon))
            .await?;
    }
    let plan = drain_plan(client, &node.name, horizon).await?;
    let pending = plan.iter().any(|(_, _, d)| *d != Drain::Leave);
    let evictions: Vec<(String, String)> = plan
        .into_iter()
        .filter(|(_, _, d)| *d == Drain::Evict)
        .map(|(namespace, name, _)| (namespace, name))
        .collect();
    evict_all(client, evictions).await?;
    if !pending {
        match nodes.delete(&node.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
