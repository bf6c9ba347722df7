//! Every API server instance, listed or not: a rotation on three
//! kube-apiserver instances, each on a host of its own with its identity
//! Lease, while the test (not ksa) hangs one during Trust, puts one back on
//! the previous key set during RefreshTokens, and hangs another during
//! Retire. Each holds the step, named in the status with its host and
//! identity Lease, and the rotation goes on by itself once the instance is
//! back; no valid token is rejected meanwhile.
//!
//! The steps are held where the test needs them by what a cluster would
//! hold them with: a long Trust lead time, a pod whose PodDisruptionBudget
//! allows no eviction, and the hosted roll-out (the harness's player)
//! kept waiting on the control plane.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use ksa_core::rotation::Step;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{APPS, CLUSTER, NAMESPACE, Scenario};
use ksa_tests::wait::eventually;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

/// How long the controller may take to see an instance hang: the instance
/// leaves the EndpointSlice when its endpoint lease expires (15 s), and
/// asking it directly times out after 20 s.
const NOTICED_WITHIN: Duration = Duration::from_secs(180);

async fn status(api: &Api<KSASigningKeyRotation>) -> Result<(Step, String)> {
    let rotation = api.get(CLUSTER).await?;
    let status = rotation.status.context("no status yet")?;
    Ok((status.step, status.waiting_for.unwrap_or_default()))
}

/// Waits until the rotation is at `step` and its status says `text`.
async fn until_status(
    api: &Api<KSASigningKeyRotation>,
    what: &str,
    within: Duration,
    check: impl Fn(Step, &str) -> bool,
) -> Result<String> {
    eventually(what, within, || async {
        let (step, waiting) = status(api).await?;
        if check(step, &waiting) {
            Ok(waiting)
        } else {
            bail!("at {step:?}, waiting for: {waiting}")
        }
    })
    .await
}

async fn set_lead_time(api: &Api<KSASigningKeyRotation>, seconds: u64) -> Result<()> {
    api.patch(
        CLUSTER,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"trustLeadTimeSeconds": seconds}})),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_hung_or_back_on_old_keys_holds_the_step_by_name() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let scenario = Scenario::start_ha().await?;
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(scenario.client.clone(), NAMESPACE);
    // Each instance announces itself with a Lease of its own.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(scenario.client.clone(), "kube-system");
    eventually("three identity Leases", NOTICED_WITHIN, || async {
        let found = leases
            .list(&kube::api::ListParams::default().labels(ksa_kube::cluster::IDENTITY_LABEL))
            .await?
            .items
            .len();
        ensure!(found == 3, "{found} identity Leases");
        Ok(())
    })
    .await?;

    // A pod whose budget allows no eviction holds RefreshTokens until the
    // test lets it go.
    scenario.plane.lock().await.simulate_nodes(1, &[]).await?;
    let pods: Api<Pod> = Api::namespaced(scenario.client.clone(), APPS);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "guarded", "labels": {"app": "guarded"}},
            "spec": {
                "nodeName": "kwok-node-0",
                "serviceAccountName": "app",
                "containers": [{"name": "app", "image": "registry.example/app:1"}],
            },
        }))?,
    )
    .await?;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(scenario.client.clone(), APPS);
    budgets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "guarded"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
            }))?,
        )
        .await?;

    // Trust holds for its lead time (an hour) until the test shortens it.
    let config = scenario.config_with(
        "lead-time.yaml",
        &format!(
            "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\ngkeOnPremVersion: 1.16.0-gke.669\n\
             enableAdvancedCluster: false\nksaSigningKeyRotation:\n  trustLeadTimeSeconds: 3600\n"
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let started = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--config",
        &config,
    ])?;
    ensure!(
        started.status.success(),
        "rotate: {}",
        String::from_utf8_lossy(&started.stderr)
    );

    // Trust: every instance accepts both keys; the lead time holds it.
    until_status(
        &rotations,
        "Trust confirmed, in its lead time",
        NOTICED_WITHIN,
        |step, w| step == Step::Trust && w.contains("trust lead time"),
    )
    .await?;
    let trust_spec = scenario.plane.lock().await.spec().clone();
    scenario.plane.lock().await.freeze(1)?;
    let named = until_status(
        &rotations,
        "the hung instance named",
        NOTICED_WITHIN,
        |step, w| {
            step == Step::Trust
                && w.contains("API servers not answering")
                && w.contains("kube-apiserver-1")
        },
    )
    .await?;
    eprintln!("Trust, instance 1 hung: {named}");
    ensure!(
        named.contains("identity Lease kube-system/apiserver-"),
        "named by its identity Lease: {named}"
    );
    // And a Warning Event says so.
    eventually("an ApiServersHoldStep Event", NOTICED_WITHIN, || async {
        let notes: Vec<String> = Api::<k8s_openapi::api::core::v1::Event>::namespaced(
            scenario.client.clone(),
            NAMESPACE,
        )
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ApiServersHoldStep"))
        .filter_map(|e| e.message)
        .collect();
        ensure!(
            notes.iter().any(|n| n.contains("kube-apiserver-1")),
            "{notes:?}"
        );
        Ok(())
    })
    .await?;
    scenario.plane.lock().await.thaw(1)?;
    until_status(&rotations, "the instance back", NOTICED_WITHIN, |_, w| {
        !w.contains("not answering")
    })
    .await?;
    set_lead_time(&rotations, 0).await?;

    // RefreshTokens, held by the budget: an instance comes back with the
    // key set of Trust, signing with the old key again.
    let held = until_status(
        &rotations,
        "RefreshTokens held by the budget",
        NOTICED_WITHIN,
        |step, w| step == Step::RefreshTokens && w.contains("guarded"),
    )
    .await?;
    eprintln!("RefreshTokens: {held}");
    {
        // The player rolls an instance forward as soon as it can: it waits
        // on the control plane while the test holds it.
        let mut plane = scenario.plane.lock().await;
        plane.restart_instance_with(1, &trust_spec).await?;
        let caught = until_status(
            &rotations,
            "the regression caught",
            NOTICED_WITHIN,
            |step, w| {
                step == Step::RefreshTokens
                    && w.contains("API servers back on an older configuration")
                    && w.contains("signs with key 1 again")
            },
        )
        .await?;
        eprintln!("RefreshTokens, instance 1 on the old key set: {caught}");
    }
    until_status(&rotations, "rolled forward", NOTICED_WITHIN, |_, w| {
        !w.contains("older configuration")
    })
    .await?;

    // Retire: the roll-out waits on the control plane while instance 2
    // hangs.
    {
        let mut plane = scenario.plane.lock().await;
        budgets.delete("guarded", &DeleteParams::default()).await?;
        until_status(&rotations, "Retire", NOTICED_WITHIN, |step, _| {
            step == Step::Retire
        })
        .await?;
        plane.freeze(2)?;
        let named = until_status(
            &rotations,
            "the hung instance named at Retire",
            NOTICED_WITHIN,
            |step, w| {
                step == Step::Retire
                    && w.contains("API servers not answering")
                    && w.contains("kube-apiserver-2")
            },
        )
        .await?;
        eprintln!("Retire, instance 2 hung: {named}");
        plane.thaw(2)?;
    }
    until_status(&rotations, "completed", NOTICED_WITHIN, |step, _| {
        step == Step::Completed
    })
    .await?;

    let stats = scenario.prober.stats().await;
    eprintln!("prober: {stats:?}");
    ensure!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {:?}",
        stats.wrongly_rejected
    );
    ensure!(
        stats.reviews > 20,
        "the prober reviewed too little: {stats:?}"
    );
    Ok(())
}
