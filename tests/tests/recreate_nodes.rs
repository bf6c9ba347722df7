//! The `recreate-nodes` token refresh policy end to end, on the workload
//! zoo: every node that predates RefreshTokens is cordoned, drained
//! through the Eviction API and deleted, one at a time, while the harness
//! plays the machine controller that replaces a deleted node with a new
//! one, and the operator who relaxes the PodDisruptionBudget the status
//! names.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Node;
use ksa_tests::scenario::{CLUSTER, NAMESPACE, Scenario};
use ksa_tests::zoo::{KWOK_NODES, Zoo, replace_deleted_nodes};
use kube::api::{Api, ListParams};

/// Every node by name, with its UID.
async fn nodes(client: &kube::Client) -> Result<BTreeMap<String, String>> {
    Ok(Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                n.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreate_nodes_replaces_every_node_and_completes_on_the_zoo() -> Result<()> {
    let scenario = Scenario::start().await?;
    ksa_tests::install::grant_recreate_nodes(&scenario.client).await?;
    let mut zoo = Zoo::create(&scenario.plane, &scenario.client).await?;
    zoo.operate(NAMESPACE, CLUSTER);
    let _machines = replace_deleted_nodes(scenario.client.clone());
    let before = nodes(&scenario.client).await?;
    assert_eq!(before.len(), KWOK_NODES, "{before:?}");

    let config = scenario.config_with(
        "recreate-nodes.yaml",
        &format!(
            "name: {CLUSTER}\nksaSigningKeyRotation:\n  tokenRefresh:\n    policy: recreate-nodes\n"
        ),
    )?;
    let rotate = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--wait",
        "--timeout",
        "10m",
        "--config",
        config.to_str().context("path")?,
    ])?;
    assert_eq!(
        rotate.status.code(),
        Some(0),
        "rotate failed: {}\n{}",
        String::from_utf8_lossy(&rotate.stderr),
        scenario.installation.controller_log()
    );

    // Every node that predates the rotation is gone; the machine controller
    // replaced each simulated one (the last a moment after its deletion,
    // perhaps after the rotation completed).
    let after = ksa_tests::eventually(
        "the machine controller replacing every deleted node",
        ksa_tests::OBSERVED_WITHIN,
        || async {
            let after = nodes(&scenario.client).await?;
            ensure!(
                after.len() == KWOK_NODES,
                "{} nodes, not {KWOK_NODES}: {after:?}",
                after.len()
            );
            Ok(after)
        },
    )
    .await?;
    let left: Vec<&String> = before
        .iter()
        .filter(|(name, uid)| after.get(*name) == Some(uid))
        .map(|(name, _)| name)
        .collect();
    assert!(left.is_empty(), "nodes not recreated: {left:?}");
    assert_eq!(after.len(), KWOK_NODES, "{after:?}");
    // No Job failed but the one made to fail; the status named the pod
    // the budget blocked until it was relaxed, and the running Job's pod,
    // whose node waited for it to finish.
    zoo.check_named(2)
        .await
        .with_context(|| scenario.installation.controller_log())?;
    eprintln!(
        "waiting for, as the status said it: {:#?}",
        zoo.seen().waiting
    );
    let stats = scenario.prober.stats().await;
    assert!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {:?}",
        stats.wrongly_rejected
    );
    Ok(())
}
